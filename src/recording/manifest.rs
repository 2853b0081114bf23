//! A recording's manifest in the bucket (`storage.type = "s3"`), sans-IO: what the
//! uploader writes after each confirmed segment upload and at the recording's end, and
//! what every node of a cluster reads back for playback ([`super::s3_playback`]).
//!
//! One object per recording, `{storage.s3.prefix}.catalog/{app}/{key}/{recording}.json`
//! ([`manifest_key`]), beside the segments but outside any path a `recording.path`
//! template renders (stream names never start with a dot). It holds the recording's
//! [`SegmentRecord`]s (the same records as the local catalog's sidecars), whether its
//! recorder still writes it, and when it was last written. A node lists recordings with
//! ListObjectsV2 under [`catalog_prefix`] and reads one manifest per recording, never the
//! segments themselves.
//!
//! **Live.** `live` is set while the recording node writes segments and cleared at the
//! recording's end. A node that died mid-recording never clears it: a segment of its
//! spool uploaded after its restart clears it then, and readers consider a manifest not
//! written for [`LIVE_STALE_AFTER`] ended ([`RecordingManifest::to_recording`]).
//!
//! **Size.** A manifest grows by a few hundred bytes per segment and is rewritten whole:
//! [`MAX_MANIFEST_BYTES`] bounds what is written and what is read (about a day of 4 s
//! segments); a recording longer than that keeps uploading but stops being indexed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use zenlive_actors::StreamKey;

use super::catalog::{Recording, RecordingId, SegmentEntry, SegmentRecord, CATALOG_DIR};

/// The manifest format's version.
pub const MANIFEST_VERSION: u32 = 1;
/// The largest manifest written or read.
pub const MAX_MANIFEST_BYTES: usize = 8 << 20;
/// A manifest still marked live but not written for this long is taken as ended (its
/// node died before saying so).
pub const LIVE_STALE_AFTER: Duration = Duration::from_secs(600);

/// What the bucket says of one recording. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordingManifest {
    /// [`MANIFEST_VERSION`].
    pub version: u32,
    /// `app/key`.
    pub stream: String,
    /// The recording's id.
    pub recording: String,
    /// Whether its recorder still writes it.
    pub live: bool,
    /// When it was last written, Unix milliseconds.
    pub updated_ms: u64,
    /// Its uploaded segments, by wall-clock start.
    pub segments: Vec<SegmentRecord>,
}

/// Why a manifest cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Larger than [`MAX_MANIFEST_BYTES`].
    #[error("the manifest is larger than {MAX_MANIFEST_BYTES} bytes")]
    TooLarge,
    /// Not a manifest, or of another version.
    #[error("the manifest does not parse: {0}")]
    Invalid(String),
    /// A manifest of another recording than its key says.
    #[error("the manifest names {found}, its key {expected}")]
    Misplaced {
        /// What the key says.
        expected: String,
        /// What the manifest says.
        found: String,
    },
}

impl RecordingManifest {
    /// An empty manifest of `stream`'s recording `id`.
    pub fn new(stream: &StreamKey, id: RecordingId) -> Self {
        Self {
            version: MANIFEST_VERSION,
            stream: stream.to_string(),
            recording: id.to_string(),
            live: true,
            updated_ms: 0,
            segments: Vec::new(),
        }
    }

    /// Parses the manifest of `stream`'s recording `id` from `bytes`, checking its size,
    /// version and that it is the one asked for.
    pub fn parse(bytes: &[u8], stream: &StreamKey, id: RecordingId) -> Result<Self, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge);
        }
        let manifest: Self =
            serde_json::from_slice(bytes).map_err(|e| ManifestError::Invalid(e.to_string()))?;
        if manifest.version != MANIFEST_VERSION {
            return Err(ManifestError::Invalid(format!("version {}", manifest.version)));
        }
        let expected = format!("{stream} {id}");
        let found = format!("{} {}", manifest.stream, manifest.recording);
        if expected != found {
            return Err(ManifestError::Misplaced { expected, found });
        }
        Ok(manifest)
    }

    /// The manifest as written, or [`ManifestError::TooLarge`].
    pub fn to_bytes(&self) -> Result<Vec<u8>, ManifestError> {
        let bytes = serde_json::to_vec(self).map_err(|e| ManifestError::Invalid(e.to_string()))?;
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge);
        }
        Ok(bytes)
    }

    /// Adds `record` in wall-clock order; a record of the same path replaces the one
    /// there (a segment uploaded twice when a node died between its upload and the
    /// local delete).
    pub fn insert(&mut self, record: SegmentRecord) {
        self.segments.retain(|s| s.path != record.path);
        let at = self.segments.partition_point(|s| {
            (s.wall_start_ms, s.media_start_us) <= (record.wall_start_ms, record.media_start_us)
        });
        self.segments.insert(at, record);
    }

    /// The recording this manifest describes, as of `now`: live when it says so and was
    /// written within [`LIVE_STALE_AFTER`], or when `live_here` (a recorder of this node
    /// writes it). Records that are not valid entries are left out.
    pub fn to_recording(
        &self,
        stream: StreamKey,
        id: RecordingId,
        now: SystemTime,
        live_here: bool,
    ) -> Recording {
        let updated = UNIX_EPOCH + Duration::from_millis(self.updated_ms);
        let fresh = now.duration_since(updated).map_or(true, |age| age < LIVE_STALE_AFTER);
        let segments = self.segments.iter().filter_map(SegmentEntry::from_record).collect();
        Recording { stream, id, live: live_here || (self.live && fresh), segments }
    }
}

/// Where the manifests of `stream` (or of every stream) are listed: the catalog's prefix.
pub fn catalog_prefix(prefix: &str, stream: Option<&StreamKey>) -> String {
    match stream {
        Some(stream) => format!("{prefix}{CATALOG_DIR}/{}/{}/", stream.app(), stream.name()),
        None => format!("{prefix}{CATALOG_DIR}/"),
    }
}

/// The object key of `stream`'s recording `id`'s manifest.
pub fn manifest_key(prefix: &str, stream: &StreamKey, id: RecordingId) -> String {
    format!("{}{id}.json", catalog_prefix(prefix, Some(stream)))
}

/// The stream and recording an object key listed under [`catalog_prefix`] names, when it
/// is a manifest's key exactly as [`manifest_key`] writes it; anything else is `None`.
pub fn parse_manifest_key(prefix: &str, key: &str) -> Option<(StreamKey, RecordingId)> {
    let rest = key.strip_prefix(&catalog_prefix(prefix, None))?;
    let mut parts = rest.split('/');
    let (app, name, file) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    let id = RecordingId::parse(file.strip_suffix(".json")?)?;
    let stream = StreamKey::new(app, name).ok()?;
    // The same key back: no other spelling of a name is accepted.
    (manifest_key(prefix, &stream, id) == key).then_some((stream, id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::catalog::RECORD_VERSION;

    fn record(path: &str, start_ms: u64) -> SegmentRecord {
        SegmentRecord {
            version: RECORD_VERSION,
            stream: "live/cam".into(),
            recording: "20231114T221320.000Z".into(),
            path: path.into(),
            format: "fmp4".into(),
            wall_start_ms: start_ms,
            media_start_us: start_ms * 1000,
            duration_us: 4_000_000,
            bytes: 1000,
            init_bytes: Some(100),
            init_digest: Some("ab".into()),
        }
    }

    fn key() -> (StreamKey, RecordingId) {
        let stream = StreamKey::new("live", "cam").expect("key");
        (stream, RecordingId::parse("20231114T221320.000Z").expect("id"))
    }

    #[test]
    fn keys_round_trip_and_other_keys_are_not_manifests() {
        let (stream, id) = key();
        let at = manifest_key("rec/", &stream, id);
        assert_eq!(at, "rec/.catalog/live/cam/20231114T221320.000Z.json");
        assert_eq!(parse_manifest_key("rec/", &at), Some((stream.clone(), id)));
        assert_eq!(catalog_prefix("", Some(&stream)), ".catalog/live/cam/");
        for bad in [
            "rec/live/cam/20231114T221320.000Z.json",
            "rec/.catalog/live/cam/20231114T221320.000Z",
            "rec/.catalog/live/cam/x/20231114T221320.000Z.json",
            "rec/.catalog/live/20231114T221320.000Z.json",
            "rec/.catalog/live/a b/20231114T221320.000Z.json",
            "rec/.catalog/live/../20231114T221320.000Z.json",
            "rec/.catalog/live/cam/2023.json",
            "other/.catalog/live/cam/20231114T221320.000Z.json",
        ] {
            assert_eq!(parse_manifest_key("rec/", bad), None, "{bad}");
        }
    }

    #[test]
    fn records_are_kept_in_order_once_each() {
        let (stream, id) = key();
        let mut manifest = RecordingManifest::new(&stream, id);
        manifest.insert(record("b.mp4", 4000));
        manifest.insert(record("a.mp4", 0));
        manifest.insert(record("c.mp4", 8000));
        manifest.insert(SegmentRecord { bytes: 1234, ..record("b.mp4", 4000) });
        let paths: Vec<&str> = manifest.segments.iter().map(|s| s.path.as_str()).collect();
        assert_eq!(paths, ["a.mp4", "b.mp4", "c.mp4"]);
        assert_eq!(manifest.segments[1].bytes, 1234);
        let bytes = manifest.to_bytes().expect("bytes");
        assert_eq!(RecordingManifest::parse(&bytes, &stream, id), Ok(manifest));
    }

    #[test]
    fn hostile_manifests_are_refused() {
        let (stream, id) = key();
        let other = StreamKey::new("live", "other").expect("key");
        let bytes = RecordingManifest::new(&other, id).to_bytes().expect("bytes");
        assert!(matches!(
            RecordingManifest::parse(&bytes, &stream, id),
            Err(ManifestError::Misplaced { .. })
        ));
        let huge = vec![b' '; MAX_MANIFEST_BYTES + 1];
        assert_eq!(RecordingManifest::parse(&huge, &stream, id), Err(ManifestError::TooLarge));
        assert!(matches!(
            RecordingManifest::parse(b"{\"version\":1", &stream, id),
            Err(ManifestError::Invalid(_))
        ));
        let mut manifest = RecordingManifest::new(&stream, id);
        manifest.version = 9;
        let bytes = serde_json::to_vec(&manifest).expect("json");
        assert!(matches!(
            RecordingManifest::parse(&bytes, &stream, id),
            Err(ManifestError::Invalid(_))
        ));
        // A record with a hostile path is left out of the recording.
        let mut manifest = RecordingManifest::new(&stream, id);
        manifest.insert(record("../../etc/passwd", 0));
        manifest.insert(record("live/cam/a.mp4", 1));
        let recording = manifest.to_recording(stream, id, SystemTime::now(), false);
        assert_eq!(recording.segments.len(), 1);
    }

    #[test]
    fn a_live_manifest_not_written_for_long_is_ended() {
        let (stream, id) = key();
        let mut manifest = RecordingManifest::new(&stream, id);
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        manifest.updated_ms = 1_700_000_000_000;
        assert!(manifest.to_recording(stream.clone(), id, t + Duration::from_secs(5), false).live);
        let later = t + LIVE_STALE_AFTER + Duration::from_secs(1);
        assert!(!manifest.to_recording(stream.clone(), id, later, false).live);
        assert!(manifest.to_recording(stream.clone(), id, later, true).live, "live here");
        manifest.live = false;
        assert!(!manifest.to_recording(stream, id, t, false).live);
    }
}
