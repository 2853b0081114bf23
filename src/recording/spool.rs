//! The upload spool of S3 storage: `storage.base_path` on local disk, where the recorder
//! writes every segment first, and the queue of what waits for upload.
//!
//! **What survives a restart.** A finished segment file in the spool *is* the record that
//! it waits for upload: it is deleted only once its upload is confirmed. Beside each
//! segment a small sidecar, `NAME.spool.json` ([`SegmentMeta`]), written atomically
//! (temporary file, fsync, rename) when the segment is begun and again when it is
//! finished, carries what the file name cannot: the stream, the wall-clock start, the
//! duration, and with a catalog (playback) the recording it belongs to and its
//! [`SegmentRecord`], so a segment uploaded after a restart is still indexed in its
//! recording's manifest. At start ([`scan`]) every segment in the spool is queued again, in its
//! stream's order; sidecars without a segment (the node died between the two deletes) and
//! temporary files are removed. A `.part` left by a crash is truncated to its last complete
//! fragment (MPEG-TS packet, FLV tag), renamed to its final name and uploaded
//! ([`super::files::recover_part`]); one without a complete fragment is deleted.
//!
//! **Order and retries.** [`UploadQueue`] (sans-IO: time is an input) keeps one FIFO per
//! stream. A stream's head must be uploaded before the next of its segments starts; other
//! streams go meanwhile. A failed attempt puts the stream aside for a backoff that doubles
//! from [`FIRST_BACKOFF`] up to `storage.s3.max_backoff`, and is retried until it succeeds.
//! The end of a stream's recording is queued behind its segments, so its event follows
//! theirs.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use zenlive_actors::StreamKey;

use super::catalog::{recovered_record, RecordingId, SegmentRecord};
use super::events::RecordingEvent;
use super::files::{format_of, part_name, recover_part, Recovery};

/// First wait after a failed upload.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// The sidecar's suffix, after the segment's own name.
pub const SIDECAR_SUFFIX: &str = ".spool.json";

/// What a sidecar records about its segment. Times are milliseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMeta {
    /// `app/key`.
    pub stream: String,
    /// Wall-clock time of the first frame, ms since the Unix epoch.
    pub wall_start_ms: u64,
    /// The first frame's decode time on the stream's clock (once finished).
    pub media_start_ms: Option<u64>,
    /// The media duration (once finished).
    pub duration_ms: Option<u64>,
    /// The recording it belongs to (once finished, when playback indexes it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<String>,
    /// Its catalog record, for the recording's manifest (once finished, when indexed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<SegmentRecord>,
}

/// `path`'s sidecar.
pub fn sidecar(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(SIDECAR_SUFFIX);
    path.with_file_name(name)
}

/// Writes `meta` as `path`'s sidecar, atomically.
pub fn write_sidecar(path: &Path, meta: &SegmentMeta) -> std::io::Result<()> {
    let target = sidecar(path);
    let mut tmp = target.clone().into_os_string();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let body = serde_json::to_vec(meta).map_err(std::io::Error::other)?;
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(&body)?;
    file.sync_all()?;
    std::fs::rename(&tmp, &target)
}

/// Reads `path`'s sidecar, if there is a readable one.
pub fn read_sidecar(path: &Path) -> Option<SegmentMeta> {
    let body = std::fs::read(sidecar(path)).ok()?;
    serde_json::from_slice(&body).ok()
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A segment waiting for upload.
#[derive(Debug, Clone, PartialEq)]
pub struct Pending {
    /// Its `app/key`.
    pub stream: String,
    /// Its full local path.
    pub path: PathBuf,
    /// Its path relative to the spool root, `/`-separated: the object key after the prefix.
    pub relative: String,
    /// Its size.
    pub bytes: u64,
    /// What its sidecar or the recorder said.
    pub meta: Option<SegmentMeta>,
    /// Found in the spool at start.
    pub recovered: bool,
    /// When it was queued.
    pub queued: Instant,
}

/// Something a stream's FIFO holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Job {
    /// Upload a segment.
    Upload(Pending),
    /// Announce the end of the stream's recording (after its segments); with the
    /// recording's id when its manifest is to be marked ended first.
    End {
        /// The event to announce.
        event: RecordingEvent,
        /// The recording whose manifest ends.
        recording: Option<RecordingId>,
    },
}

#[derive(Debug, Default)]
struct StreamQueue {
    jobs: VecDeque<Job>,
    busy: bool,
    retry_at: Option<Instant>,
    backoff: Duration,
}

/// Per-stream FIFOs of uploads. See the module docs.
#[derive(Debug, Default)]
pub struct UploadQueue {
    streams: HashMap<String, StreamQueue>,
    bytes: u64,
    segments: usize,
}

impl UploadQueue {
    /// Queues `job` behind `stream`'s others.
    pub fn push(&mut self, stream: &str, job: Job) {
        if let Job::Upload(pending) = &job {
            self.bytes += pending.bytes;
            self.segments += 1;
        }
        self.streams.entry(stream.to_owned()).or_default().jobs.push_back(job);
    }

    /// Bytes of the segments waiting (in flight included).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Segments waiting (in flight included).
    pub fn segments(&self) -> usize {
        self.segments
    }

    /// When the oldest waiting segment was queued.
    pub fn oldest(&self) -> Option<Instant> {
        self.streams
            .values()
            .filter_map(|q| {
                q.jobs.iter().find_map(|job| match job {
                    Job::Upload(p) => Some(p.queued),
                    Job::End { .. } => None,
                })
            })
            .min()
    }

    /// The head of a stream that is neither busy nor waiting out a backoff at `now`,
    /// marked busy until [`UploadQueue::done`] or [`UploadQueue::failed`].
    pub fn next_ready(&mut self, now: Instant) -> Option<(String, Job)> {
        let (name, queue) = self.streams.iter_mut().find(|(_, q)| {
            !q.busy && !q.jobs.is_empty() && q.retry_at.is_none_or(|at| at <= now)
        })?;
        queue.busy = true;
        let job = queue.jobs.front()?.clone();
        Some((name.clone(), job))
    }

    /// `stream`'s head is done (uploaded, or announced): the next may go.
    pub fn done(&mut self, stream: &str) {
        let Some(queue) = self.streams.get_mut(stream) else { return };
        if let Some(Job::Upload(pending)) = queue.jobs.pop_front() {
            self.bytes -= pending.bytes;
            self.segments -= 1;
        }
        (queue.busy, queue.retry_at, queue.backoff) = (false, None, Duration::ZERO);
        if queue.jobs.is_empty() {
            self.streams.remove(stream);
        }
    }

    /// `stream`'s head failed at `now`: it is retried after a backoff (returned), which
    /// doubles with each failure up to `max_backoff`.
    pub fn failed(&mut self, stream: &str, now: Instant, max_backoff: Duration) -> Duration {
        let Some(queue) = self.streams.get_mut(stream) else { return Duration::ZERO };
        queue.backoff = if queue.backoff.is_zero() {
            FIRST_BACKOFF.min(max_backoff)
        } else {
            (queue.backoff * 2).min(max_backoff)
        };
        queue.busy = false;
        queue.retry_at = Some(now + queue.backoff);
        queue.backoff
    }

    /// The earliest time a stream waiting out a backoff may go again.
    pub fn next_retry(&self) -> Option<Instant> {
        self.streams.values().filter(|q| !q.busy).filter_map(|q| q.retry_at).min()
    }
}

/// What [`scan`] found in the spool, in upload order per stream.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Segments to upload.
    pub pending: Vec<Pending>,
    /// `.part` files finished (truncated to their last complete fragment).
    pub parts: usize,
}

/// Reads the spool under `root` at start (see the module docs): finalizes `.part` files
/// of the extensions `exts` (every recording format's, should the format have changed),
/// removes stale sidecars and temporary files, and lists every segment with its sidecar's
/// metadata, oldest first within each stream.
pub fn scan(root: &Path, exts: &[&str], now: Instant) -> Recovered {
    let mut found = Recovered::default();
    let mut stack = vec![root.to_owned()];
    let mut segments = Vec::new();
    let mut sidecars = Vec::new();
    let is_segment = |name: &str| {
        name.rsplit_once('.').is_some_and(|(stem, ext)| !stem.is_empty() && exts.contains(&ext))
    };
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            } else if name.strip_suffix(".part").is_some_and(is_segment) {
                match recover_part(&path) {
                    Ok(Recovery::Finished { path: whole, bytes, cut }) => {
                        tracing::warn!(segment = %whole.display(), bytes, cut, "a segment cut by a crash: finished up to its last complete fragment, and uploaded");
                        found.parts += 1;
                        segments.push(whole);
                    }
                    Ok(Recovery::Removed { bytes }) => {
                        tracing::warn!(part = %path.display(), bytes, "a segment cut by a crash held no complete fragment: deleted");
                    }
                    Ok(Recovery::InUse) => {
                        tracing::error!(part = %path.display(), "a .part file in the spool is being written by another process (the spool must be this node's alone): left alone");
                    }
                    Err(error) => {
                        tracing::error!(%error, "cannot finish a segment cut by a crash; it stays in the spool")
                    }
                }
            } else if name.ends_with(&format!("{SIDECAR_SUFFIX}.tmp")) {
                let _ = std::fs::remove_file(&path);
            } else if name.ends_with(SIDECAR_SUFFIX) {
                sidecars.push(path);
            } else if is_segment(&name) {
                segments.push(path);
            }
        }
    }
    for side in sidecars {
        let name = side.to_string_lossy();
        let segment = PathBuf::from(&name[..name.len() - SIDECAR_SUFFIX.len()]);
        if !segment.exists() && !part_name(&segment).exists() {
            // Its segment was uploaded and deleted just before a crash.
            let _ = std::fs::remove_file(&side);
        }
    }
    let mut listed: Vec<(String, u64, Pending)> = segments
        .into_iter()
        .filter_map(|path| {
            let file = std::fs::metadata(&path).ok()?;
            let relative = path.strip_prefix(root).ok()?;
            let relative: Vec<String> = relative
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            let relative = relative.join("/");
            let meta = read_sidecar(&path);
            // Without a sidecar, the segment's directory stands for its stream.
            let stream = meta.as_ref().map_or_else(
                || relative.rsplit_once('/').map_or("", |(dir, _)| dir).to_owned(),
                |m| m.stream.clone(),
            );
            let at = meta.as_ref().map_or_else(
                || unix_ms(file.modified().unwrap_or(SystemTime::UNIX_EPOCH)),
                |m| m.wall_start_ms,
            );
            let pending = Pending {
                stream: stream.clone(),
                path,
                relative,
                bytes: file.len(),
                meta,
                recovered: true,
                queued: now,
            };
            Some((stream, at, pending))
        })
        .collect();
    listed.sort_by(|a, b| (&a.0, a.1, &a.2.relative).cmp(&(&b.0, b.1, &b.2.relative)));
    found.pending = listed.into_iter().map(|(_, _, p)| p).collect();
    for pending in &mut found.pending {
        index_interrupted(pending);
    }
    found
}

/// Gives `pending`, a segment of a recording indexed for playback whose sidecar was
/// written when it began but not when it finished (a crash came between), its record,
/// with times read from the media: the manifest then lists it once it is uploaded.
fn index_interrupted(pending: &mut Pending) {
    let Some(meta) = &mut pending.meta else { return };
    let Some(id) = meta.recording.as_deref().and_then(RecordingId::parse) else { return };
    let (None, Ok(stream), Some(format)) =
        (&meta.record, StreamKey::parse(&meta.stream), format_of(&pending.path))
    else {
        return;
    };
    let wall = SystemTime::UNIX_EPOCH + Duration::from_millis(meta.wall_start_ms);
    let relative = Path::new(&pending.relative);
    match recovered_record(&stream, id, format, relative, &pending.path, wall) {
        Ok(Some((segment, record))) => {
            meta.media_start_ms = Some(segment.media_start.as_millis() as u64);
            meta.duration_ms = Some(segment.duration.as_millis() as u64);
            meta.record = Some(record);
        }
        Ok(None) => {}
        Err(error) => {
            tracing::warn!(path = %pending.path.display(), %error, "a segment a crash left unindexed could not be read; it is uploaded but not listed for playback");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pending(stream: &str, name: &str, bytes: u64, at: Instant) -> Job {
        Job::Upload(Pending {
            stream: stream.into(),
            path: name.into(),
            relative: name.into(),
            bytes,
            meta: None,
            recovered: false,
            queued: at,
        })
    }

    #[test]
    fn a_stream_uploads_in_order_and_waits_out_its_backoff() {
        let t0 = Instant::now();
        let max = Duration::from_secs(2);
        let mut q = UploadQueue::default();
        q.push("a", pending("a", "a1", 10, t0));
        q.push("a", pending("a", "a2", 20, t0));
        q.push("b", pending("b", "b1", 5, t0));
        assert_eq!((q.bytes(), q.segments()), (35, 3));
        let mut heads = Vec::new();
        while let Some((stream, _)) = q.next_ready(t0) {
            heads.push(stream);
        }
        heads.sort();
        // One head per stream at a time.
        assert_eq!(heads, ["a", "b"]);
        q.done("b");
        assert_eq!(q.failed("a", t0, max), FIRST_BACKOFF);
        assert!(q.next_ready(t0).is_none(), "a waits out its backoff");
        assert_eq!(q.next_retry(), Some(t0 + FIRST_BACKOFF));
        let (_, job) = q.next_ready(t0 + FIRST_BACKOFF).expect("retried");
        assert!(matches!(job, Job::Upload(p) if p.relative == "a1"), "the same head again");
        assert_eq!(q.failed("a", t0, max), Duration::from_secs(1));
        assert!(q.next_ready(t0 + Duration::from_secs(1)).is_some());
        assert_eq!(q.failed("a", t0, max), max, "capped");
        let (_, _) = q.next_ready(t0 + max).expect("ready");
        q.done("a");
        let (_, job) = q.next_ready(t0 + max).expect("next in order, backoff reset");
        assert!(matches!(job, Job::Upload(p) if p.relative == "a2"));
        q.done("a");
        assert_eq!((q.bytes(), q.segments(), q.oldest()), (0, 0, None));
    }

    #[test]
    fn sidecars_keep_the_catalog_record_and_older_ones_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("a.mp4");
        let record = SegmentRecord {
            version: crate::recording::catalog::RECORD_VERSION,
            stream: "live/cam".into(),
            recording: "20231114T221320.000Z".into(),
            path: "live/cam/a.mp4".into(),
            format: "fmp4".into(),
            wall_start_ms: 1,
            media_start_us: 2,
            duration_us: 3,
            bytes: 4,
            init_bytes: Some(5),
            init_digest: None,
        };
        let meta = SegmentMeta {
            stream: "live/cam".into(),
            wall_start_ms: 1,
            media_start_ms: Some(0),
            duration_ms: Some(0),
            recording: Some(record.recording.clone()),
            record: Some(record),
        };
        write_sidecar(&path, &meta).expect("sidecar");
        assert_eq!(read_sidecar(&path), Some(meta));
        // As written before playback from S3 existed.
        std::fs::write(
            sidecar(&path),
            br#"{"stream":"live/cam","wall_start_ms":7,"media_start_ms":null,"duration_ms":null}"#,
        )
        .expect("write");
        let old = read_sidecar(&path).expect("an older sidecar reads");
        assert_eq!((old.wall_start_ms, old.recording, old.record), (7, None, None));
    }

    #[test]
    fn the_scan_finalizes_parts_pairs_sidecars_and_orders_by_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cam = dir.path().join("live/cam");
        std::fs::create_dir_all(&cam).expect("mkdir");
        let meta = |ms| SegmentMeta {
            stream: "live/cam".into(),
            wall_start_ms: ms,
            media_start_ms: None,
            duration_ms: None,
            recording: None,
            record: None,
        };
        // Named against their start order: the sidecar decides.
        std::fs::write(cam.join("b.mp4"), b"first").expect("write");
        write_sidecar(&cam.join("b.mp4"), &meta(1000)).expect("sidecar");
        let (torn, whole) = crate::recording::files::fmp4_for_tests(2, 100);
        std::fs::write(cam.join("a.mp4.part"), &torn).expect("write");
        write_sidecar(&cam.join("a.mp4"), &meta(2000)).expect("sidecar");
        // Not one fragment complete: deleted, and its sidecar with it.
        std::fs::write(cam.join("c.mp4.part"), &torn[..whole / 3]).expect("write");
        write_sidecar(&cam.join("c.mp4"), &meta(3000)).expect("sidecar");
        write_sidecar(&cam.join("gone.mp4"), &meta(500)).expect("sidecar");
        std::fs::write(cam.join("x.spool.json.tmp"), b"{").expect("write");
        let found = scan(dir.path(), &["mp4", "ts"], Instant::now());
        let names: Vec<&str> = found.pending.iter().map(|p| p.relative.as_str()).collect();
        assert_eq!(names, ["live/cam/b.mp4", "live/cam/a.mp4"]);
        assert_eq!(found.parts, 1);
        assert!(!cam.join("a.mp4.part").exists());
        assert_eq!(std::fs::metadata(cam.join("a.mp4")).map(|m| m.len()).ok(), Some(whole as u64));
        assert_eq!(found.pending[1].bytes, whole as u64, "the size after the cut");
        assert!(!cam.join("c.mp4.part").exists() && !sidecar(&cam.join("c.mp4")).exists());
        assert!(!sidecar(&cam.join("gone.mp4")).exists(), "a stale sidecar is removed");
        assert!(!cam.join("x.spool.json.tmp").exists());
        assert_eq!(found.pending[1].meta.as_ref().map(|m| m.wall_start_ms), Some(2000));
    }
}
