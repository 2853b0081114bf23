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
        CatalogWriter { inner, indexer, dir, id, format, open: Mutex::new(None), _live: live }
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

    /// Indexes the segments a crash kept from being indexed: each open marker left in the
    /// catalog (see [`CatalogWriter`]) whose segment is on disk (finished, or cut short
    /// and finished by [`super::files::recover_parts`], which runs first) and not yet
    /// listed gets its sidecar, with times read from the media. Markers of segments that
    /// are gone or already listed are removed; a marker whose `.part` is still there
    /// (being written by another process, or not recoverable) is left. Answers the
    /// segments indexed. Blocks (reads the segments): call it at start.
    pub fn index_interrupted(&self) -> Vec<FinishedSegment> {
        let mut indexed = Vec::new();
        let base = self.root.join(CATALOG_DIR);
        let dirs = |dir: &Path| names(dir).unwrap_or_default();
        for app in dirs(&base) {
            for key in dirs(&base.join(&app)) {
                let Ok(stream) = StreamKey::new(&app, &key) else { continue };
                for id in dirs(&base.join(&app).join(&key)) {
                    let Some(id) = RecordingId::parse(&id) else { continue };
                    let dir = self.recording_dir(&stream, id);
                    indexed.extend(self.index_markers(&dir, &stream, id));
                }
            }
        }
        indexed
    }

    /// [`Catalog::index_interrupted`] in one recording's directory.
    fn index_markers(
        &self,
        dir: &Path,
        stream: &StreamKey,
        id: RecordingId,
    ) -> Vec<FinishedSegment> {
        let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
        let markers: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with('.') && n.ends_with(OPEN_SUFFIX))
            })
            .collect();
        if markers.is_empty() {
            return Vec::new();
        }
        let listed: Vec<String> = names(dir)
            .unwrap_or_default()
            .iter()
            .filter(|n| n.ends_with(".json"))
            .filter_map(|n| read_record(&dir.join(n)).ok())
            .map(|r| r.path)
            .collect();
        let mut indexed = Vec::new();
        for marker in markers {
            let remove = || {
                if let Err(error) = std::fs::remove_file(&marker) {
                    tracing::warn!(marker = %marker.display(), %error, "recording catalog: cannot remove an open marker");
                }
            };
            let entry = read_record(&marker).ok().and_then(|r| {
                let entry = SegmentEntry::from_record(&r)?;
                (r.stream == stream.to_string() && r.recording == id.to_string())
                    .then_some((r, entry))
            });
            let Some((record, entry)) = entry else {
                tracing::warn!(marker = %marker.display(), "recording catalog: an unreadable open marker is removed");
                remove();
                continue;
            };
            let path = self.root.join(&entry.path);
            if listed.contains(&record.path) {
                remove();
                continue;
            }
            if !path.exists() {
                if !super::files::part_name(&path).exists() {
                    remove();
                }
                continue;
            }
            match recovered_record(stream, id, entry.format, &entry.path, &path, entry.wall_start) {
                Ok(Some((segment, record))) => match write_sidecar(dir, &record) {
                    Ok(()) => {
                        tracing::warn!(segment = %path.display(), duration_ms = segment.duration.as_millis() as u64, "recording catalog: a segment a crash left unlisted is indexed");
                        remove();
                        indexed.push(segment);
                    }
                    Err(error) => {
                        tracing::error!(segment = %path.display(), %error, "recording catalog: a segment a crash left unlisted could not be indexed")
                    }
                },
                Ok(None) => remove(),
                Err(error) => {
                    tracing::error!(segment = %path.display(), %error, "recording catalog: a segment a crash left unlisted could not be read")
                }
            }
        }
        indexed
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
///
/// With local storage, a segment being written has an **open marker** in the recording's
/// catalog directory (its record without times), removed once its sidecar is written. A
/// marker left by a crash is how the next start finds the segment to index
/// ([`Catalog::index_interrupted`]). S3 storage keeps the same in its spool sidecar
/// ([`SegmentIndexer::opened_indexed`]).
pub struct CatalogWriter {
    inner: Arc<dyn Storage>,
    /// S3: takes finished segments and ends (with their records) instead of `inner`.
    indexer: Option<Arc<dyn SegmentIndexer>>,
    dir: PathBuf,
    id: RecordingId,
    format: SegmentFormat,
    /// The open segment's marker.
    open: Mutex<Option<PathBuf>>,
    _live: LiveGuard,
}

impl std::fmt::Debug for CatalogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogWriter").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// The record of `segment`, a finished segment of recording `id` in `format`.
fn record_of(
    id: RecordingId,
    format: SegmentFormat,
    segment: &FinishedSegment,
) -> io::Result<SegmentRecord> {
    let (init_bytes, init_digest) = match format {
        SegmentFormat::Fmp4 => init_of(&segment.path)?,
        _ => (None, None),
    };
    let path = segment
        .relative
        .to_str()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "a path that is not UTF-8"))?;
    Ok(SegmentRecord {
        version: RECORD_VERSION,
        stream: segment.stream.to_string(),
        recording: id.to_string(),
        path: path.replace('\\', "/"),
        format: format_name(format).to_owned(),
        wall_start_ms: unix_ms(segment.wall_start),
        media_start_us: segment.media_start.as_micros() as u64,
        duration_us: segment.duration.as_micros() as u64,
        bytes: segment.bytes,
        init_bytes,
        init_digest,
    })
}

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Writes `record` as a sidecar in `dir`: `.tmp`, fsync, rename, fsync the directory.
fn write_sidecar(dir: &Path, record: &SegmentRecord) -> io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let stem = format!("{:013}", record.wall_start_ms);
    let json = serde_json::to_vec(record).map_err(io::Error::other)?;
    for n in 0..1000u32 {
        let name = if n == 0 { format!("{stem}.json") } else { format!("{stem}-{n}.json") };
        let path = dir.join(&name);
        if path.exists() {
            continue;
        }
        write_atomically(dir, &path, &json)?;
        return Ok(());
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, "no free sidecar name"))
}

/// Writes `bytes` to `path` in `dir` through a temporary file, fsynced, renamed, and the
/// directory fsynced.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// The open marker of a segment begun at `wall_start_ms` (see [`CatalogWriter`]): a dot
/// name, so listings skip it.
fn open_marker(dir: &Path, wall_start_ms: u64) -> PathBuf {
    dir.join(format!(".{wall_start_ms:013}{OPEN_SUFFIX}"))
}

/// The open markers' suffix.
const OPEN_SUFFIX: &str = ".open";
/// Largest segment read back whole to index it after a crash.
const MAX_RECOVER_BYTES: u64 = 512 << 20;

/// The record of a segment file a crash kept from being indexed (cut short and finished
/// at start, or finished just before its record was written), with its times read from
/// the media itself ([`zenlive_media::span`]): `stream`'s recording `id`, at `path`
/// (`relative` to the storage root), begun at `wall_start`. `Ok(None)` when it holds no
/// timed frame or is too large to read.
pub(crate) fn recovered_record(
    stream: &StreamKey,
    id: RecordingId,
    format: SegmentFormat,
    relative: &Path,
    path: &Path,
    wall_start: SystemTime,
) -> io::Result<Option<(FinishedSegment, SegmentRecord)>> {
    let bytes = std::fs::metadata(path)?.len();
    if bytes > MAX_RECOVER_BYTES {
        tracing::warn!(path = %path.display(), bytes, "a recovered segment too large to read back is kept but not listed for playback");
        return Ok(None);
    }
    let file = bytes::Bytes::from(std::fs::read(path)?);
    let Some(span) = zenlive_media::span::media_span(format, &file) else {
        tracing::warn!(path = %path.display(), "a recovered segment with no timed frame is kept but not listed for playback");
        return Ok(None);
    };
    let segment = FinishedSegment {
        stream: stream.clone(),
        relative: relative.to_owned(),
        path: path.to_owned(),
        wall_start,
        media_start: span.start.to_duration(),
        duration: span.duration.to_duration(),
        bytes: file.len() as u64,
    };
    let record = record_of(id, format, &segment)?;
    Ok(Some((segment, record)))
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

impl CatalogWriter {
    /// Writes the open marker of a segment at `relative` begun at `wall` (see the type's
    /// docs).
    fn mark_open(&self, stream: &StreamKey, relative: &Path, wall: SystemTime) -> io::Result<()> {
        let path = relative.to_str().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "a path that is not UTF-8")
        })?;
        let record = SegmentRecord {
            version: RECORD_VERSION,
            stream: stream.to_string(),
            recording: self.id.to_string(),
            path: path.replace('\\', "/"),
            format: format_name(self.format).to_owned(),
            wall_start_ms: unix_ms(wall),
            media_start_us: 0,
            duration_us: 0,
            bytes: 0,
            init_bytes: None,
            init_digest: None,
        };
        std::fs::create_dir_all(&self.dir)?;
        let marker = open_marker(&self.dir, record.wall_start_ms);
        let json = serde_json::to_vec(&record).map_err(io::Error::other)?;
        write_atomically(&self.dir, &marker, &json)?;
        *self.open.lock() = Some(marker);
        Ok(())
    }

    /// Removes the open segment's marker, its sidecar written.
    fn unmark_open(&self) {
        if let Some(marker) = self.open.lock().take() {
            if let Err(error) = std::fs::remove_file(&marker) {
                tracing::warn!(marker = %marker.display(), %error, "recording catalog: an open marker could not be removed; the next start removes it");
            }
        }
    }
}

impl Storage for CatalogWriter {
    fn root(&self) -> &Path {
        self.inner.root()
    }

    fn finished(&self, segment: FinishedSegment) {
        // The segment is safe on disk whatever happens here: a missing record costs its
        // listing, not its media.
        let record = record_of(self.id, self.format, &segment);
        if let Some(indexer) = &self.indexer {
            let record = match record {
                Ok(record) => Some(record),
                Err(error) => {
                    tracing::error!(stream = %segment.stream, path = %segment.path.display(), %error, "recording catalog: the segment could not be indexed; it is uploaded but not listed for playback");
                    None
                }
            };
            indexer.finished_indexed(segment, self.id, record);
            return;
        }
        match record.and_then(|record| write_sidecar(&self.dir, &record)) {
            Ok(()) => self.unmark_open(),
            Err(error) => {
                tracing::error!(stream = %segment.stream, path = %segment.path.display(), %error, "recording catalog: the segment could not be indexed; it is on disk but not listed for playback");
            }
        }
        self.inner.finished(segment);
    }

    fn opened(&self, stream: &StreamKey, relative: &Path, path: &Path, wall: SystemTime) {
        if let Some(indexer) = &self.indexer {
            indexer.opened_indexed(stream, relative, path, wall, self.id);
            return;
        }
        if let Err(error) = self.mark_open(stream, relative, wall) {
            // Costs the segment's listing only if the node then crashes.
            tracing::warn!(%stream, path = %path.display(), %error, "recording catalog: no open marker for a segment; a crash would leave it unlisted");
        }
        self.inner.opened(stream, relative, path, wall);
    }

    // Every other call goes to the storage unchanged: the catalog only adds sidecars.
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
    /// [`Storage::opened`] for a segment of recording `id`: what it must keep so that a
    /// segment a crash cut short is still indexed after the next start.
    fn opened_indexed(
        &self,
        stream: &StreamKey,
        relative: &Path,
        path: &Path,
        wall: SystemTime,
        id: RecordingId,
    );

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
        fn opened_indexed(
            &self,
            stream: &StreamKey,
            relative: &Path,
            _path: &Path,
            _wall: SystemTime,
            id: RecordingId,
        ) {
            self.calls.lock().push(format!("opened {stream} {id} {}", relative.display()));
        }

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
        let relative = Path::new("live/cam/a.mp4");
        writer.opened(&key, relative, &dir.path().join(relative), UNIX_EPOCH);
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
                format!("opened live/cam {id} live/cam/a.mp4"),
                format!("finished live/cam {id} Some((\"live/cam/a.mp4\", Some(16)))"),
                format!("ended live/cam {id}"),
            ]
        );
        assert!(!dir.path().join(CATALOG_DIR).exists(), "no sidecar beside the spool");
    }

    /// A real fMP4 segment of `seconds` from `start_ms` (30 fps video, a keyframe a
    /// second, and audio), written at `root/relative`.
    fn media_segment(root: &Path, relative: &str, start_ms: i64, seconds: i64) -> PathBuf {
        use crate::recording::core::tests::{audio, configs, video};
        use zenlive_media::segment::SegmentWriter;
        use zenlive_media::time::MediaTime;
        let (v, a) = configs();
        let mut writer = SegmentWriter::new(
            SegmentFormat::Fmp4,
            Some(&v),
            Some(&a),
            MediaTime::from_millis(1000),
        )
        .expect("writer");
        let mut frames: Vec<_> = (0..seconds * 30)
            .map(|i| video(&v, start_ms + i * 1000 / 30, i % 30 == 0))
            .chain((0..seconds * 43).map(|i| audio(&a, start_ms + i * 1000 / 43)))
            .collect();
        frames.sort_by_key(|f| f.dts());
        let mut out = Vec::new();
        for frame in &frames {
            out.extend(writer.push(frame).expect("push").map(|c| c.to_bytes()));
        }
        out.extend(writer.finish(None).expect("finish").map(|c| c.to_bytes()));
        let path = root.join(relative);
        std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
        std::fs::write(&path, out.concat()).expect("write");
        path
    }

    #[test]
    fn segments_a_crash_left_unlisted_are_indexed_at_the_next_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let catalog = Catalog::new(dir.path());
        let key = StreamKey::new("live", "cam").expect("key");
        let id = RecordingId::from_time(UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let inner: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir.path()));
        let writer = catalog.writer(key.clone(), id, SegmentFormat::Fmp4, inner);
        let wall = |s: u64| UNIX_EPOCH + Duration::from_secs(1_700_000_000 + s);
        // a: finished and indexed; its marker goes.
        let a = Path::new("live/cam/a.mp4");
        writer.opened(&key, a, &dir.path().join(a), wall(0));
        let path = media_segment(dir.path(), "live/cam/a.mp4", 0, 4);
        let bytes = std::fs::metadata(&path).expect("stat").len();
        writer.finished(FinishedSegment {
            stream: key.clone(),
            relative: a.to_owned(),
            path,
            wall_start: wall(0),
            media_start: Duration::ZERO,
            duration: Duration::from_secs(4),
            bytes,
        });
        // b: on disk when the node died (finished by recover_parts), never indexed.
        let b = Path::new("live/cam/b.mp4");
        writer.opened(&key, b, &dir.path().join(b), wall(4));
        media_segment(dir.path(), "live/cam/b.mp4", 4_000, 3);
        drop(writer);
        // c: its .part held nothing and was deleted; d: another process still writes it.
        let c = Path::new("live/cam/c.mp4");
        let writer = catalog.writer(
            key.clone(),
            id,
            SegmentFormat::Fmp4,
            Arc::new(LocalStorage::new(dir.path())),
        );
        writer.opened(&key, c, &dir.path().join(c), wall(10));
        let d = Path::new("live/cam/d.mp4");
        let writer2 = catalog.writer(
            key.clone(),
            id,
            SegmentFormat::Fmp4,
            Arc::new(LocalStorage::new(dir.path())),
        );
        writer2.opened(&key, d, &dir.path().join(d), wall(20));
        std::fs::write(dir.path().join("live/cam/d.mp4.part"), b"").expect("write");
        drop((writer, writer2));
        let before = catalog.recording(&key, id).expect("read").expect("exists");
        assert_eq!(before.segments.len(), 1);

        let indexed = catalog.index_interrupted();
        assert_eq!(indexed.len(), 1);
        assert_eq!(indexed[0].relative, b);
        let recording = catalog.recording(&key, id).expect("read").expect("exists");
        let names: Vec<_> = recording.segments.iter().map(|s| s.path.clone()).collect();
        assert_eq!(names, [PathBuf::from(a), PathBuf::from(b)]);
        let b_entry = &recording.segments[1];
        assert_eq!(b_entry.wall_start, wall(4));
        assert_eq!(b_entry.media_start, Duration::from_secs(4));
        let ms = b_entry.duration.as_millis();
        assert!((2_900..=3_100).contains(&ms), "{ms} ms");
        assert_eq!(b_entry.init_bytes, recording.segments[0].init_bytes);
        // Only d's marker is left; a second pass changes nothing.
        let markers = |dir: &Path| -> Vec<String> {
            std::fs::read_dir(dir)
                .expect("dir")
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(OPEN_SUFFIX))
                .collect()
        };
        let rec = catalog.recording_dir(&key, id);
        assert_eq!(markers(&rec), [format!(".{:013}{OPEN_SUFFIX}", 1_700_000_020_000u64)]);
        assert!(catalog.index_interrupted().is_empty());
        // A hostile marker is removed, and nothing else happens.
        std::fs::write(rec.join(format!(".1{OPEN_SUFFIX}")), b"{not json").expect("write");
        assert!(catalog.index_interrupted().is_empty());
        assert_eq!(markers(&rec).len(), 1);
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
