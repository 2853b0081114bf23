//! Recording streams to segment files on local disk: an [`Output`] of every stream
//! ([`RecorderOutput`], named `recorder`), registered by the node when
//! `recording.enabled`.
//!
//! For each stream it selects (`recording.auto` and `recording.paths`), or is asked to
//! record (a publish decider's choice, or by name: `zenlive_actors::stream::SetOutput`),
//! and owns (a relayed replica is recorded on its owner node, not here), the output starts
//! a [`actor::RecorderActor`], which claims the name `recorder/{app}/{key}` in the
//! registry (one recording of a stream in the whole cluster) and answers by name, and opens a [`sink::RecorderSink`] on the stream's
//! session, which hands frames to a writer thread of the stream's own
//! ([`writer`]); there [`core::RecorderCore`] decides where segments start and end and the
//! media crate's `SegmentWriter` encodes them (fMP4, MPEG-TS or FLV), and
//! [`files::SegmentFiles`] writes them as `.part` files, fsync'd and renamed when complete.
//! [`storage::Storage`] hears of every finished segment: [`storage::LocalStorage`] keeps
//! it (and [`retention`] may delete it later); [`s3::S3Storage`] uploads it from the spool
//! ([`spool`]). Either tells the application ([`events`]). [`catalog::Catalog`] indexes
//! finished segments per recording (one publish of a stream) for playback, which [`vod`]
//! and `src/http/recordings.rs` serve through a [`playback::RecordingStore`]: local disk,
//! or with S3 the recordings' manifests and objects in the bucket ([`manifest`],
//! [`s3_playback`]), so any node sharing the bucket serves them.
//!
//! # Layout
//! Bottom to top; each imports only those before it:
//! - [`path`]: the `recording.path` template and the `recording.paths` patterns.
//! - [`counters`]: the Prometheus series.
//! - [`events`]: what the application hears (segment uploaded or kept, recording ended).
//! - [`retention`]: `recording.delete_after` and `recording.max_local_bytes` on local disk.
//! - [`storage`]: [`storage::Storage`], [`storage::LocalStorage`], finished segments.
//! - [`catalog`]: recordings and their segments (sidecars), what is live.
//! - [`manifest`]: a recording's manifest in the bucket, sans-IO.
//! - [`vod`]: playback decisions, sans-IO: VOD playlists, download plans, query values.
//! - [`playback`]: what the playback routes read ([`playback::RecordingStore`]), local.
//! - [`core`]: the segmenting decisions, sans-IO.
//! - [`files`]: `.part` files, fsync, rename.
//! - [`spool`]: the S3 spool on local disk: sidecars, the scan at start, the upload queue.
//! - [`s3`]: [`s3::S3Storage`] and its uploader thread (which writes the manifests).
//! - [`s3_playback`]: recordings read back from the bucket.
//! - [`writer`]: the writer thread, its queue and its claim gate.
//! - [`actor`]: the recording as a named actor (its claim, status and stop), and the
//!   node's table of recordings.
//! - [`sink`]: the session's side of the queue.
//! - this file: the output.

pub mod actor;
pub mod catalog;
pub mod core;
pub mod counters;
pub mod events;
pub mod files;
pub mod manifest;
pub mod path;
pub mod playback;
pub mod retention;
pub mod s3;
pub mod s3_playback;
pub mod sink;
pub mod spool;
pub mod storage;
pub mod vod;
pub mod writer;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use zenlive_actors::stream::SetOutput;
use zenlive_actors::{FrameKind, FrameSink, Output, OutputStream, StreamKey};
use zenlive_media::segment::SegmentFormat;
use zenlive_media::MediaTime;
use zenlive_registry::{NodeId, Registry};

use self::actor::Recordings;
use self::catalog::{Catalog, RecordingId};
use self::core::RecorderCore;
use self::counters::RecordingCounters;
use self::files::SegmentFiles;
use self::path::{PathTemplate, StreamPattern};
use self::storage::Storage;
use self::writer::{Lifecycle, WriterPool};
use crate::config::{RecordingConfig, RecordingFormat};

/// Media per chunk (an fMP4 fragment): what a crash can lose at most.
pub const FRAGMENT_DURATION: Duration = Duration::from_secs(1);

/// Where a recorder keeps its recordings and claims their names.
pub struct Claims {
    /// The node's table of recordings (which typed refs read too).
    pub recordings: Recordings,
    /// The registry the names are claimed in (the node's lease book).
    pub registry: Arc<dyn Registry>,
    /// This node.
    pub node: NodeId,
}

/// The recorder's settings, parsed from `[recording]`.
pub struct Recorder {
    format: SegmentFormat,
    min_duration: MediaTime,
    template: Arc<PathTemplate>,
    auto: bool,
    patterns: Vec<StreamPattern>,
    storage: Arc<dyn Storage>,
    counters: RecordingCounters,
    catalog: Option<Arc<Catalog>>,
    /// This node's recordings, each claiming its name in `registry` as `node`.
    recordings: Recordings,
    registry: Arc<dyn Registry>,
    node: NodeId,
    /// The writer threads every recorded stream shares.
    writers: WriterPool,
}

impl Recorder {
    /// A recorder for `config`, writing under `storage`, its recordings kept and claimed as
    /// `claims` says; an error names a bad template or pattern (`Config::validate` checks
    /// them first).
    pub fn new(
        config: &RecordingConfig,
        storage: Arc<dyn Storage>,
        counters: RecordingCounters,
        claims: Claims,
    ) -> Result<Self, String> {
        let template = PathTemplate::parse(&config.path)?;
        let patterns =
            config.paths.iter().map(|p| StreamPattern::parse(p)).collect::<Result<Vec<_>, _>>()?;
        let format = match config.format {
            RecordingFormat::Fmp4 => SegmentFormat::Fmp4,
            RecordingFormat::Ts => SegmentFormat::Ts,
            RecordingFormat::Flv => SegmentFormat::Flv,
        };
        Ok(Self {
            format,
            min_duration: MediaTime::from_duration(config.segment_duration),
            template: Arc::new(template),
            auto: config.auto,
            patterns,
            storage,
            counters,
            catalog: None,
            recordings: claims.recordings,
            registry: claims.registry,
            node: claims.node,
            writers: WriterPool::sized_for_this_machine(),
        })
    }

    /// Indexes every finished segment in `catalog` too (for playback).
    pub fn with_catalog(mut self, catalog: Arc<Catalog>) -> Self {
        self.catalog = Some(catalog);
        self
    }

    /// Whether the stream `app/key` is recorded without being asked (`recording.auto` and
    /// `recording.paths`).
    pub fn selects(&self, app: &str, key: &str) -> bool {
        self.auto && (self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(app, key)))
    }
}

/// The recorder as an output of every stream (see [`zenlive_actors::output`]).
pub struct RecorderOutput(pub Arc<Recorder>);

impl RecorderOutput {
    /// Its output name, what `SetOutput` asks for.
    pub const NAME: &'static str = "recorder";

    /// The stream message that starts (`on`) or stops recording it, at its owner.
    pub fn request(on: bool) -> SetOutput {
        SetOutput { output: Self::NAME.to_owned(), on }
    }
}

impl Output for RecorderOutput {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn open(&self, stream: &OutputStream) -> Option<Box<dyn FrameSink>> {
        let recorder = &self.0;
        let key = &stream.key;
        if stream.replica || !(stream.requested || recorder.selects(key.app(), key.name())) {
            return None;
        }
        // One recording per stream: a writer restarted after a panic continues the
        // recording (and its claim); a request to record what is recorded changes nothing.
        let publish = stream.stats.snapshot().started_at;
        let active = match recorder.recordings.get(key).filter(|a| a.publish == publish) {
            Some(active) if active.writing() || active.stop_requested() => return None,
            Some(active) => active,
            None => recorder.begin(key, publish),
        };
        if stream.restarts > 0 {
            tracing::warn!(stream = %key, restarts = stream.restarts, "recorder restarted after a crash; recording continues in a new segment");
        }
        let core = RecorderCore::new(
            recorder.format,
            recorder.min_duration,
            MediaTime::from_duration(FRAGMENT_DURATION),
        );
        let storage = match &recorder.catalog {
            // One recording per publish: named after the stream's start, which a restarted
            // recorder shares with the one it replaces.
            Some(catalog) => {
                let id = RecordingId::from_time(publish);
                Arc::new(catalog.writer(
                    key.clone(),
                    id,
                    recorder.format,
                    Arc::clone(&recorder.storage),
                )) as Arc<dyn Storage>
            }
            None => Arc::clone(&recorder.storage),
        };
        let files = SegmentFiles::new(
            key.clone(),
            recorder.format.extension(),
            Arc::clone(&recorder.template),
            storage,
        );
        let lifecycle =
            Lifecycle { gate: Arc::clone(&active.gate), on_exit: Recordings::on_exit(&active) };
        let (tx, state) = match recorder.writers.start(
            key.clone(),
            core,
            files,
            recorder.counters.clone(),
            lifecycle,
        ) {
            Ok(started) => started,
            Err(error) => {
                tracing::error!(stream = %key, %error, "recorder thread could not start; this stream is not recorded");
                active.stop();
                recorder.recordings.stream_ended(key);
                return None;
            }
        };
        active.set_writer(Arc::clone(&state));
        // The tracks the publisher declared, so the first segment has both even when its
        // first frame comes before the other track's configuration is offered.
        for kind in [FrameKind::Video, FrameKind::Audio] {
            if let Some(config) = stream.stats.config(kind) {
                // Only a writer that is gone refuses; the sink finds that out next.
                let _ = tx.send(writer::Msg::Declare(config));
            }
        }
        Some(Box::new(sink::RecorderSink::new(
            key.clone(),
            tx,
            state,
            active,
            recorder.counters.clone(),
        )))
    }

    fn ended(&self, key: &StreamKey) {
        self.0.recordings.stream_ended(key);
    }

    fn running(&self, key: &StreamKey) -> bool {
        self.0.recordings.get(key).is_some_and(|active| active.running())
    }

    fn stop(&self, key: &StreamKey) -> bool {
        self.0.recordings.get(key).is_some_and(|active| active.stop())
    }
}

impl Recorder {
    /// A new recording of `key` here, claiming its name when claims are on.
    fn begin(&self, key: &StreamKey, publish: SystemTime) -> Arc<actor::Active> {
        let format = match self.format {
            SegmentFormat::Fmp4 => "fmp4",
            SegmentFormat::Ts => "ts",
            SegmentFormat::Flv => "flv",
        };
        self.recordings.begin(key, publish, format, Arc::clone(&self.registry), self.node.clone())
    }
}
