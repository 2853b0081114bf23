//! The catalog of recordings: what was recorded per stream, for playback (listing API, VOD
//! playlists, time-range downloads; see [`super::vod`], [`super::playback`] and
//! `src/http/recordings.rs`).
//!
//! A **recording** is one continuous publish of a stream: every segment written from the
//! stream's start to its end (a recorder restarted after a crash continues the same
//! recording). Its id is the time the stream started, in UTC with milliseconds,
//! `20231114T221320.123Z` ([`RecordingId`]): sortable, readable, safe in a path and a URL.
//!
//! The recorder indexes every finished segment ([`CatalogWriter`], a [`Storage`] wrapper
//! per recorder, so the storage underneath, local or an uploader, is unchanged) with a
//! [`SegmentRecord`]:
//! - **local storage**: a small JSON sidecar in
//!   `{storage.base_path}/.catalog/{app}/{key}/{recording}/`, written as `.tmp`, flushed
//!   and renamed once the segment itself is complete and renamed, so a crash leaves either
//!   no entry or a whole one (the segment is then on disk but not listed). Reading the
//!   catalog ([`Catalog::recordings`]) reads those sidecars only, never the media files,
//!   whatever `recording.path` is. Stream names never start with a dot, so `.catalog`
//!   cannot clash with a rendered segment path.
//! - **S3 storage**: the record goes with the segment to the uploader
//!   ([`SegmentIndexer`]), which adds it to the recording's manifest in the bucket once the
//!   upload is confirmed ([`super::manifest`]); nothing is written beside the spool.
//!
//! A recording is **live** while a recorder of this node writes it ([`LiveRecordings`]);
//! after a node restart every recording on disk is finished (with S3, other nodes read
//! the manifest's word).

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, Utc};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zenlive_actors::StreamKey;
use zenlive_media::segment::SegmentFormat;

use super::events::RecordingEvent;
use super::storage::{FinishedSegment, Storage};

/// The catalog's directory under `storage.base_path`.
pub const CATALOG_DIR: &str = ".catalog";
/// The sidecar format's version.
pub const RECORD_VERSION: u32 = 1;
/// Largest sidecar read (they are a few hundred bytes).
const MAX_RECORD_BYTES: u64 = 64 * 1024;
/// Largest init section indexed (they are about a kilobyte).
const MAX_INIT_BYTES: u64 = 1 << 20;
/// Bytes first read from a segment's head to find its init section.
const INIT_PROBE_BYTES: u64 = 16 << 10;

/// A recording's id: its stream's start time. See the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordingId(SystemTime);

/// The id's format (chrono's strftime).
const ID_FORMAT: &str = "%Y%m%dT%H%M%S%.3fZ";

impl RecordingId {
    /// The id of a recording whose stream started at `at` (to the millisecond).
    pub fn from_time(at: SystemTime) -> Self {
        let ms = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
        Self(UNIX_EPOCH + Duration::from_millis(ms))
    }

    /// Parses an id as [`std::fmt::Display`] writes it; anything else is `None`.
    pub fn parse(text: &str) -> Option<Self> {
        // The exact shape, before chrono (which would take other spellings).
        let ok = text.len() == 20
            && text.bytes().enumerate().all(|(i, b)| match i {
                8 => b == b'T',
                15 => b == b'.',
                19 => b == b'Z',
                _ => b.is_ascii_digit(),
            });
        if !ok {
            return None;
        }
        let naive = chrono::NaiveDateTime::parse_from_str(&text[..19], "%Y%m%dT%H%M%S%.3f").ok()?;
        let ms = naive.and_utc().timestamp_millis();
        let ms = u64::try_from(ms).ok()?;
        Some(Self(UNIX_EPOCH + Duration::from_millis(ms)))
    }

    /// When the recording's stream started.
    pub fn time(self) -> SystemTime {
        self.0
    }
}

impl std::fmt::Display for RecordingId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at: DateTime<Utc> = self.0.into();
        write!(f, "{}", at.format(ID_FORMAT))
    }
}

/// A segment's sidecar: what the catalog knows of it. Times in whole units so the file
/// reads back exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRecord {
    /// [`RECORD_VERSION`].
    pub version: u32,
    /// `app/key`.
    pub stream: String,
    /// The recording's id.
    pub recording: String,
    /// The segment's path relative to `storage.base_path`.
    pub path: String,
    /// `fmp4`, `ts` or `flv`.
    pub format: String,
    /// Wall-clock time of its first frame, Unix milliseconds.
    pub wall_start_ms: u64,
    /// Its first frame's decode time on the stream's clock, microseconds.
    pub media_start_us: u64,
    /// Its media duration, microseconds.
    pub duration_us: u64,
    /// Its size.
    pub bytes: u64,
    /// fMP4: the length of its init section (`ftyp` + `moov`), which starts the file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_bytes: Option<u64>,
    /// fMP4: a digest of the init section, to tell when it changes between segments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_digest: Option<String>,
}

/// A segment of a recording, as the catalog lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentEntry {
    /// Its path relative to `storage.base_path` (plain: no root, no `..`).
    pub path: PathBuf,
    /// Its container.
    pub format: SegmentFormat,
    /// Wall-clock time of its first frame.
    pub wall_start: SystemTime,
    /// Its first frame's decode time on the stream's clock.
    pub media_start: Duration,
    /// Its media duration.
    pub duration: Duration,
    /// Its size.
    pub bytes: u64,
    /// fMP4: the length of its init section.
    pub init_bytes: Option<u64>,
    /// fMP4: a digest of its init section.
    pub init_digest: Option<String>,
}

impl SegmentEntry {
    /// Where its media ends on the stream's clock.
    pub fn media_end(&self) -> Duration {
        self.media_start + self.duration
    }

    /// Where it ends on the wall clock.
    pub fn wall_end(&self) -> SystemTime {
        self.wall_start + self.duration
    }

    /// The entry a record stands for; `None` for another version, a path that is not
    /// plain (a root, `..`), or an unknown format.
    pub(crate) fn from_record(record: &SegmentRecord) -> Option<Self> {
        let path = PathBuf::from(&record.path);
        let plain = path.components().next().is_some()
            && path.components().all(|c| matches!(c, Component::Normal(_)));
        if record.version != RECORD_VERSION || !plain {
            return None;
        }
        let format = match record.format.as_str() {
            "fmp4" => SegmentFormat::Fmp4,
            "ts" => SegmentFormat::Ts,
            "flv" => SegmentFormat::Flv,
            _ => return None,
        };
        Some(Self {
            path,
            format,
            wall_start: UNIX_EPOCH.checked_add(Duration::from_millis(record.wall_start_ms))?,
            media_start: Duration::from_micros(record.media_start_us),
            duration: Duration::from_micros(record.duration_us),
            bytes: record.bytes,
            init_bytes: record.init_bytes,
            init_digest: record.init_digest.clone(),
        })
    }
}

/// A format's name in sidecars and the API.
pub fn format_name(format: SegmentFormat) -> &'static str {
    match format {
        SegmentFormat::Fmp4 => "fmp4",
        SegmentFormat::Ts => "ts",
        SegmentFormat::Flv => "flv",
    }
}

/// One recording: a stream's publish and its finished segments, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    /// The stream.
    pub stream: StreamKey,
    /// Its id.
    pub id: RecordingId,
    /// Whether a recorder of this node is still writing it.
    pub live: bool,
    /// Its finished segments, by wall-clock start.
    pub segments: Vec<SegmentEntry>,
}

impl Recording {
    /// The wall-clock time of its first frame (its id's time when it has no segment yet).
    pub fn start(&self) -> SystemTime {
        self.segments.first().map_or(self.id.time(), |s| s.wall_start)
    }

    /// The media it holds (the sum of its segments' durations).
    pub fn duration(&self) -> Duration {
        self.segments.iter().map(|s| s.duration).sum()
    }
}

/// The recordings being written on this node, counted per recorder: a recorder restarted
/// after a crash overlaps the one it replaces for a moment. Touched when a recorder
/// starts or ends and read by playback requests; nothing waits while the lock is held.
#[derive(Debug, Default)]
pub struct LiveRecordings {
    writers: Mutex<HashMap<(StreamKey, RecordingId), usize>>,
}

impl LiveRecordings {
    /// Marks `stream`'s recording `id` live until the guard drops.
    pub fn guard(self: &Arc<Self>, stream: StreamKey, id: RecordingId) -> LiveGuard {
        *self.writers.lock().entry((stream.clone(), id)).or_default() += 1;
        LiveGuard { live: Arc::clone(self), key: (stream, id) }
    }

    /// Whether `stream`'s recording `id` is being written.
    pub fn is_live(&self, stream: &StreamKey, id: RecordingId) -> bool {
        self.writers.lock().contains_key(&(stream.clone(), id))
    }

    /// Every recording being written.
    pub fn all(&self) -> Vec<(StreamKey, RecordingId)> {
        self.writers.lock().keys().cloned().collect()
    }
}

/// Keeps a recording live; see [`LiveRecordings::guard`].
#[derive(Debug)]
pub struct LiveGuard {
    live: Arc<LiveRecordings>,
    key: (StreamKey, RecordingId),
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let mut writers = self.live.writers.lock();
        if let Some(count) = writers.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                writers.remove(&self.key);
            }
        }
    }
}

/// The catalog of the recordings under one `storage.base_path`. Reads block (small files):
/// call them off the event loop.
pub struct Catalog {
    root: PathBuf,
    live: Arc<LiveRecordings>,
    indexer: Option<Arc<dyn SegmentIndexer>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("root", &self.root)
            .field("indexed_by_storage", &self.indexer.is_some())
            .finish_non_exhaustive()
    }
}

impl Catalog {
    /// The catalog of recordings under `root` (`storage.base_path`).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into(), live: Arc::default(), indexer: None }
    }

    /// The same catalog (the same live recordings), whose writers hand each record to
    /// `indexer` instead of writing sidecars: S3 storage, which indexes in the bucket.
    pub fn indexed_by(&self, indexer: Arc<dyn SegmentIndexer>) -> Self {
        Self { root: self.root.clone(), live: Arc::clone(&self.live), indexer: Some(indexer) }
    }

    /// The recordings being written on this node.
    pub fn live(&self) -> &Arc<LiveRecordings> {
        &self.live
    }

    /// `storage.base_path`.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The storage a recorder of `stream`'s recording `id` writes through: `inner`, plus
    /// the sidecar of every finished segment; the recording is live while it exists.
    pub fn writer(
        &self,
        stream: StreamKey,
        id: RecordingId,
        format: SegmentFormat,
        inner: Arc<dyn Storage>,
    ) -> CatalogWriter {
        let dir = self.recording_dir(&stream, id);
        let live = self.live.guard(stream, id);
        let indexer = self.indexer.clone();
        CatalogWriter { inner, indexer, dir, id, format, _live: live }
    }

    fn recording_dir(&self, stream: &StreamKey, id: RecordingId) -> PathBuf {
        self.root.join(CATALOG_DIR).join(stream.app()).join(stream.name()).join(id.to_string())
    }

    /// Every recording whose stream `select` accepts, by stream then id (live ones without
    /// a finished segment yet included).
    pub fn recordings(&self, select: &dyn Fn(&StreamKey) -> bool) -> io::Result<Vec<Recording>> {
        let mut found: BTreeMap<(String, RecordingId), Recording> = BTreeMap::new();
        let base = self.root.join(CATALOG_DIR);
        for app in names(&base)? {
            for key in names(&base.join(&app))? {
                let Ok(stream) = StreamKey::new(&app, &key) else { continue };
                if !select(&stream) {
                    continue;
                }
                for id in names(&base.join(&app).join(&key))? {
                    let Some(id) = RecordingId::parse(&id) else { continue };
                    let recording = self.read_recording(&stream, id)?;
                    found.insert((stream.to_string(), id), recording);
                }
            }
        }
        for (stream, id) in self.live.all() {
            if select(&stream) {
                found.entry((stream.to_string(), id)).or_insert_with(|| Recording {
                    stream,
                    id,
                    live: true,
                    segments: Vec::new(),
                });
            }
        }
        Ok(found.into_values().collect())
    }

    /// `stream`'s recording `id`, if it exists (on disk, or live).
    pub fn recording(&self, stream: &StreamKey, id: RecordingId) -> io::Result<Option<Recording>> {
        let recording = self.read_recording(stream, id)?;
        Ok((recording.live || !recording.segments.is_empty()).then_some(recording))
    }

    fn read_recording(&self, stream: &StreamKey, id: RecordingId) -> io::Result<Recording> {
        let dir = self.recording_dir(stream, id);
        let mut segments = Vec::new();
        for name in names(&dir)? {
            if !name.ends_with(".json") {
                continue;
            }
            match read_record(&dir.join(&name)) {
                Ok(record) => match SegmentEntry::from_record(&record) {
                    Some(entry) => segments.push(entry),
                    None => {
                        tracing::warn!(file = %dir.join(&name).display(), "recording catalog: an entry of an unknown version or with a bad path is skipped")
                    }
                },
                Err(error) => {
                    tracing::warn!(file = %dir.join(&name).display(), %error, "recording catalog: an unreadable entry is skipped")
                }
            }
        }
        segments.sort_by_key(|s| (s.wall_start, s.media_start));
        let live = self.live.is_live(stream, id);
        Ok(Recording { stream: stream.clone(), id, live, segments })
    }
}

/// The names in `dir` (none if it does not exist), sorted; names that are not UTF-8 or
/// start with a dot are left out.
fn names(dir: &Path) -> io::Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .collect();
    out.sort();
    Ok(out)
}

fn read_record(path: &Path) -> io::Result<SegmentRecord> {
    let mut text = Vec::new();
    File::open(path)?.take(MAX_RECORD_BYTES).read_to_end(&mut text)?;
    serde_json::from_slice(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// A recorder's storage: the sidecar of each finished segment, then the storage it wraps.
/// See the module docs.
pub struct CatalogWriter {
    inner: Arc<dyn Storage>,
    /// S3: takes finished segments and ends (with their records) instead of `inner`.
    indexer: Option<Arc<dyn SegmentIndexer>>,
    dir: PathBuf,
    id: RecordingId,
    format: SegmentFormat,
    _live: LiveGuard,
}

impl std::fmt::Debug for CatalogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogWriter").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl CatalogWriter {
    fn record(&self, segment: &FinishedSegment) -> io::Result<SegmentRecord> {
        let (init_bytes, init_digest) = match self.format {
            SegmentFormat::Fmp4 => init_of(&segment.path)?,
            _ => (None, None),
        };
        let path = segment.relative.to_str().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "a path that is not UTF-8")
        })?;
        Ok(SegmentRecord {
            version: RECORD_VERSION,
            stream: segment.stream.to_string(),
            recording: self.id.to_string(),
            path: path.replace('\\', "/"),
            format: format_name(self.format).to_owned(),
            wall_start_ms: segment
                .wall_start
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            media_start_us: segment.media_start.as_micros() as u64,
            duration_us: segment.duration.as_micros() as u64,
            bytes: segment.bytes,
            init_bytes,
            init_digest,
        })
    }

    /// Writes the sidecar: `.tmp`, fsync, rename, fsync the directory.
    fn index(&self, segment: &FinishedSegment) -> io::Result<()> {
        let record = self.record(segment)?;
        std::fs::create_dir_all(&self.dir)?;
        let stem = format!("{:013}", record.wall_start_ms);
        let json = serde_json::to_vec(&record).map_err(io::Error::other)?;
        for n in 0..1000u32 {
            let name = if n == 0 { format!("{stem}.json") } else { format!("{stem}-{n}.json") };
            let path = self.dir.join(&name);
            if path.exists() {
                continue;
            }
            let tmp = self.dir.join(format!(".{name}.tmp"));
            let mut file = File::create(&tmp)?;
            file.write_all(&json)?;
            file.sync_all()?;
            drop(file);
            std::fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()?;
            return Ok(());
        }
        Err(io::Error::new(io::ErrorKind::AlreadyExists, "no free sidecar name"))
    }
}

/// The length and digest of an fMP4 file's init section. Reads its first
/// [`INIT_PROBE_BYTES`] and, for a larger init section, the rest of it only: a segment's
/// head is not read whole (a megabyte per segment on every writer thread was most of the
/// memory recording cost).
fn init_of(path: &Path) -> io::Result<(Option<u64>, Option<String>)> {
    let mut file = File::open(path)?;
    let mut head = Vec::with_capacity(INIT_PROBE_BYTES as usize);
    (&mut file).take(INIT_PROBE_BYTES).read_to_end(&mut head)?;
    let Some(len) = zenlive_media::fmp4_cut::init_len(&head).filter(|&n| n <= MAX_INIT_BYTES)
    else {
        return Ok((None, None));
    };
    let missing = len.saturating_sub(head.len() as u64);
    if missing > 0 {
        head.reserve_exact(missing as usize);
        file.take(missing).read_to_end(&mut head)?;
    }
    let Some(init) = usize::try_from(len).ok().and_then(|n| head.get(..n)) else {
        return Ok((None, None));
    };
    let digest = Sha256::digest(init);
    Ok((Some(len), Some(hex::encode(&digest[..12]))))
}

impl Storage for CatalogWriter {
    fn root(&self) -> &Path {
        self.inner.root()
    }

    fn finished(&self, segment: FinishedSegment) {
        // The segment is safe on disk whatever happens here: a missing record costs its
        // listing, not its media.
        if let Some(indexer) = &self.indexer {
            let record = match self.record(&segment) {
                Ok(record) => Some(record),
                Err(error) => {
                    tracing::error!(stream = %segment.stream, path = %segment.path.display(), %error, "recording catalog: the segment could not be indexed; it is uploaded but not listed for playback");
                    None
                }
            };
            indexer.finished_indexed(segment, self.id, record);
            return;
        }
        if let Err(error) = self.index(&segment) {
            tracing::error!(stream = %segment.stream, path = %segment.path.display(), %error, "recording catalog: the segment could not be indexed; it is on disk but not listed for playback");
        }
        self.inner.finished(segment);
    }

    // Every other call goes to the storage unchanged: the catalog only adds sidecars.
    fn opened(&self, stream: &StreamKey, relative: &Path, path: &Path, wall: SystemTime) {
        self.inner.opened(stream, relative, path, wall);
    }

    fn has_room(&self) -> bool {
        self.inner.has_room()
    }

    fn ended(&self, event: RecordingEvent) {
        match &self.indexer {
            Some(indexer) => indexer.ended_indexed(event, self.id),
            None => self.inner.ended(event),
        }
    }
}

/// A storage that indexes finished segments itself, where they end up: S3 storage adds
/// each record to the recording's manifest in the bucket once the segment's upload is
/// confirmed. A [`CatalogWriter`] built by a catalog [`Catalog::indexed_by`] one calls
/// these *instead of* [`Storage::finished`] and [`Storage::ended`]: each must do all its
/// plain counterpart does. No method has a default (see [`Storage`]).
pub trait SegmentIndexer: Send + Sync + 'static {
    /// [`Storage::finished`] for a segment of recording `id`, with its record (`None` when
    /// it could not be made: the segment is stored but not listed).
    fn finished_indexed(
        &self,
        segment: FinishedSegment,
        id: RecordingId,
        record: Option<SegmentRecord>,
    );

    /// [`Storage::ended`] for recording `id`: after its last segment, it is no longer live.
    fn ended_indexed(&self, event: RecordingEvent, id: RecordingId);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::storage::LocalStorage;

    #[test]
    fn an_init_section_larger_than_the_first_read_is_read_whole_and_no_more() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mp4_box = |kind: &[u8; 4], body: usize| {
            let mut b = ((8 + body) as u32).to_be_bytes().to_vec();
            b.extend_from_slice(kind);
            b.extend((0..body).map(|i| (i % 251) as u8));
            b
        };
        let moov_body = INIT_PROBE_BYTES as usize * 3;
        let init = [mp4_box(b"ftyp", 16), mp4_box(b"moov", moov_body)].concat();
        let file = dir.path().join("big-init.mp4");
        std::fs::write(&file, [init.clone(), mp4_box(b"mdat", 100)].concat()).expect("write");
        let digest = Sha256::digest(&init);
        assert_eq!(
            init_of(&file).expect("read"),
            (Some(init.len() as u64), Some(hex::encode(&digest[..12])))
        );
        // Cut inside the init section: no record of it, and no error.
        std::fs::write(&file, &init[..init.len() - 1]).expect("write");
        assert_eq!(init_of(&file).expect("read"), (None, None));
    }

    fn segment(root: &Path, key: &StreamKey, name: &str, start_s: u64) -> FinishedSegment {
        let relative = PathBuf::from(format!("{}/{}/{name}", key.app(), key.name()));
        let path = root.join(&relative);
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, b"\0\0\0\x08ftyp\0\0\0\x08moovrest").expect("write");
        FinishedSegment {
            stream: key.clone(),
            relative,
            path,
            wall_start: UNIX_EPOCH + Duration::from_secs(1_700_000_000 + start_s),
            media_start: Duration::from_secs(start_s),
            duration: Duration::from_secs(4),
            bytes: 20,
        }
    }

    #[test]
    fn ids_round_trip_and_hostile_ids_are_refused() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let id = RecordingId::from_time(at + Duration::from_micros(456));
        assert_eq!(id.to_string(), "20231114T221320.123Z");
        assert_eq!(RecordingId::parse("20231114T221320.123Z"), Some(id));
        assert_eq!(id.time(), at);
        for bad in [
            "",
            "..",
            "../../etc/passwd",
            "20231114T221320.123",
            "20231114T221320.123Z/",
            "20231114t221320.123Z",
            "20231314T221320.123Z",
            "20231114T256320.123Z",
            "+0231114T221320.123Z",
            "２0231114T221320.123Z",
            "20231114T221320.123Z\0",
        ] {
            assert_eq!(RecordingId::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn finished_segments_are_listed_per_recording_and_live_until_the_writer_ends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::new(dir.path());
        let key = StreamKey::new("live", "cam").expect("key");
        let id = RecordingId::from_time(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let inner: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir.path()));
        let writer = catalog.writer(key.clone(), id, SegmentFormat::Fmp4, inner);
        let listed = catalog.recordings(&|_| true).expect("list");
        assert_eq!(listed.len(), 1);
        assert!(listed[0].live && listed[0].segments.is_empty());
        // Out of order on purpose: listed by time.
        writer.finished(segment(dir.path(), &key, "b.mp4", 4));
        writer.finished(segment(dir.path(), &key, "a.mp4", 0));
        let recording = catalog.recording(&key, id).expect("read").expect("exists");
        assert!(recording.live);
        let names: Vec<_> = recording.segments.iter().map(|s| s.path.clone()).collect();
        assert_eq!(names, [PathBuf::from("live/cam/a.mp4"), PathBuf::from("live/cam/b.mp4")]);
        assert_eq!(recording.segments[0].init_bytes, Some(16));
        assert_eq!(recording.duration(), Duration::from_secs(8));
        drop(writer);
        let recording = catalog.recording(&key, id).expect("read").expect("exists");
        assert!(!recording.live);
        let other = StreamKey::new("live", "other").expect("key");
        assert!(catalog.recordings(&|k| k == &other).expect("list").is_empty());
        assert_eq!(catalog.recording(&other, id).expect("read"), None);
        // No temporary files left behind.
        let dir = catalog.recording_dir(&key, id);
        let left: Vec<_> = std::fs::read_dir(dir).expect("dir").flatten().collect();
        assert_eq!(left.len(), 2);
    }

    /// What an indexing storage was handed.
    #[derive(Default)]
    struct Indexed {
        calls: Mutex<Vec<String>>,
    }

    impl SegmentIndexer for Indexed {
        fn finished_indexed(
            &self,
            segment: FinishedSegment,
            id: RecordingId,
            record: Option<SegmentRecord>,
        ) {
            let record = record.map(|r| (r.path, r.init_bytes));
            self.calls.lock().push(format!("finished {} {id} {record:?}", segment.stream));
        }

        fn ended_indexed(&self, event: RecordingEvent, id: RecordingId) {
            self.calls.lock().push(format!("ended {} {id}", event.stream()));
        }
    }

    #[test]
    fn an_indexed_catalog_hands_records_to_its_indexer_and_writes_no_sidecar() {
        let dir = tempfile::tempdir().expect("tempdir");
        let indexer = Arc::new(Indexed::default());
        let catalog = Catalog::new(dir.path()).indexed_by(Arc::clone(&indexer) as _);
        let key = StreamKey::new("live", "cam").expect("key");
        let id = RecordingId::from_time(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let inner: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir.path()));
        let writer = catalog.writer(key.clone(), id, SegmentFormat::Fmp4, inner);
        assert!(catalog.live().is_live(&key, id));
        assert!(writer.has_room());
        writer.finished(segment(dir.path(), &key, "a.mp4", 0));
        writer.ended(RecordingEvent::Ended {
            stream: key.clone(),
            segments: 1,
            bytes: 20,
            duration: Duration::from_secs(4),
            start: None,
            reason: "stream ended".into(),
        });
        drop(writer);
        assert!(!catalog.live().is_live(&key, id));
        let calls = indexer.calls.lock().clone();
        assert_eq!(
            calls,
            [
                format!("finished live/cam {id} Some((\"live/cam/a.mp4\", Some(16)))"),
                format!("ended live/cam {id}"),
            ]
        );
        assert!(!dir.path().join(CATALOG_DIR).exists(), "no sidecar beside the spool");
    }

    #[test]
    fn hostile_sidecars_are_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::new(dir.path());
        let key = StreamKey::new("live", "cam").expect("key");
        let id = RecordingId::from_time(UNIX_EPOCH);
        let rec = catalog.recording_dir(&key, id);
        std::fs::create_dir_all(&rec).expect("mkdir");
        let good = SegmentRecord {
            version: RECORD_VERSION,
            stream: key.to_string(),
            recording: id.to_string(),
            path: "live/cam/x.mp4".into(),
            format: "fmp4".into(),
            wall_start_ms: 0,
            media_start_us: 0,
            duration_us: 1,
            bytes: 1,
            init_bytes: None,
            init_digest: None,
        };
        let write = |name: &str, record: &SegmentRecord| {
            std::fs::write(rec.join(name), serde_json::to_vec(record).expect("json"))
                .expect("write")
        };
        write("1.json", &good);
        write("2.json", &SegmentRecord { path: "../../etc/passwd".into(), ..good.clone() });
        write("3.json", &SegmentRecord { path: "/etc/passwd".into(), ..good.clone() });
        write("4.json", &SegmentRecord { format: "mkv".into(), ..good.clone() });
        write("5.json", &SegmentRecord { version: 99, ..good.clone() });
        std::fs::write(rec.join("6.json"), b"{not json").expect("write");
        std::fs::write(rec.join("7.json"), vec![b' '; 100_000]).expect("write");
        // A directory that is no recording id, and a bad stream name.
        std::fs::create_dir_all(rec.parent().expect("stream dir").join("not-an-id"))
            .expect("mkdir");
        std::fs::create_dir_all(dir.path().join(CATALOG_DIR).join("live").join("a b"))
            .expect("mkdir");
        let listed = catalog.recordings(&|_| true).expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].segments.len(), 1);
    }
}
