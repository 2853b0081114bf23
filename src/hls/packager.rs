//! The HLS packager: one per live stream, an output of the stream ([`HlsOutput`]). Its
//! snapshots (playlist text plus the window's segments as the node's [`SegmentStore`]
//! keeps them: files or shared `Bytes`) are what the HTTP handlers ([`super::serve`])
//! read, without touching the packager. Each finished segment's bytes move out of the
//! segmenter into the store once; the segmenter keeps only its place in the playlist.
//!
//! The packager is started and supervised by the stream's life like any [`Output`]: an
//! internal viewer whose `HlsSink` converts the codec-neutral frames to H.264 Annex B and
//! ADTS AAC and feeds the sans-IO [`Segmenter`]. After each completed segment it publishes
//! an immutable snapshot. When the publisher leaves, the segmenter is parked for
//! `hls.reconnect_grace`; a publisher that comes back within it continues the same playlist
//! after an `EXT-X-DISCONTINUITY`. A packager restarted after a crash continues from the
//! last published segment the same way.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use zenlive_actors::{
    ArbiterPool, Codec, CodecConfig, FrameKind, FrameSink, MediaFrame, Offer, Output, OutputStream,
    StreamKey, StreamStats,
};
use zenlive_media::aac::{adts_header, AudioSpecificConfig};
use zenlive_media::avc::{to_annexb, AvcDecoderConfig};
use zenlive_media::hls::{HlsConfig as SegmenterConfig, Segmenter};
use zenlive_media::ts::Tracks;

use super::store::{SegmentStore, SegmentWriter, StoredSegment};
use crate::config::HlsConfig;

/// Largest segment; a longer GOP is cut early.
const MAX_SEGMENT_BYTES: usize = 32 * 1024 * 1024;

/// What HTTP handlers read: replaced whole after every completed segment.
#[derive(Default)]
pub(crate) struct Published {
    /// The playlist, once a segment is complete.
    pub(crate) playlist: Option<Bytes>,
    /// The segments it names, and those in their grace after leaving it.
    pub(crate) segments: HashMap<u64, StoredSegment>,
}

/// One stream's HLS state.
pub(crate) struct HlsStream {
    published: RwLock<Arc<Published>>,
    /// Told after every publish, for requests waiting for the first playlist.
    fresh: tokio::sync::Notify,
    /// The segmenter between publishers (during the reconnect grace).
    parked: Mutex<Option<Segmenter>>,
    /// Bumped on every start and end, so a grace timer knows whether it is stale.
    generation: AtomicU64,
    /// What a packager restarted after a crash continues from: the finished segments and
    /// their numbering as of the last published segment (a fresh segmenter, new timeline).
    resume: Mutex<Option<Segmenter>>,
}

impl super::grace::Generation for HlsStream {
    fn generation(&self) -> &AtomicU64 {
        &self.generation
    }
}

impl HlsStream {
    /// The latest snapshot.
    pub(crate) fn published(&self) -> Arc<Published> {
        Arc::clone(&self.published.read())
    }

    /// The playlist, waiting until `deadline` for the first one.
    pub(crate) async fn playlist_by(&self, deadline: Instant) -> Option<Bytes> {
        loop {
            let fresh = self.fresh.notified();
            if let Some(playlist) = self.published.read().playlist.clone() {
                return Some(playlist);
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() || tokio::time::timeout(wait, fresh).await.is_err() {
                return self.published.read().playlist.clone();
            }
        }
    }

    /// Publishes what `segmenter` holds: segments new since the last snapshot go to
    /// `store`; those that left the segmenter (their grace is over) are let go, which
    /// deletes a file once no response reads it.
    ///
    /// A segment that `building` (the writer of the segment being built, if any) took
    /// bytes of while it was built is finished by it.
    fn publish(
        &self,
        key: &StreamKey,
        segmenter: &mut Segmenter,
        store: &dyn SegmentStore,
        building: &mut Option<Building>,
    ) {
        let playlist = segmenter.playlist().map(Bytes::from);
        let previous = self.published();
        let numbers: Vec<u64> = segmenter.segment_numbers().collect();
        let mut segments = HashMap::with_capacity(numbers.len());
        for n in numbers {
            if let Some(stored) = previous.segments.get(&n) {
                segments.insert(n, stored.clone());
                continue;
            }
            let Some(rest) = segmenter.take_segment(n) else { continue };
            let stored = match building.take_if(|b| b.sequence == n) {
                Some(building) => building.writer.finish(rest),
                None if rest.is_empty() => None,
                None => store.put(key, n, rest),
            };
            if let Some(stored) = stored {
                segments.insert(n, stored);
            }
        }
        drop(previous);
        *self.published.write() = Arc::new(Published { playlist, segments });
        self.fresh.notify_waiters();
    }
}

/// The segment being built and the writer its bytes go to as it grows.
struct Building {
    sequence: u64,
    writer: Box<dyn SegmentWriter>,
}

/// All HLS streams of the node.
pub struct HlsManager {
    enabled: bool,
    segmenter: SegmenterConfig,
    grace: Duration,
    pool: ArbiterPool,
    streams: RwLock<HashMap<StreamKey, Arc<HlsStream>>>,
    /// Where finished segments go (`hls.storage`).
    store: Arc<dyn SegmentStore>,
    /// Segments produced, node-wide.
    pub segments_produced: Arc<AtomicU64>,
}

impl HlsManager {
    /// A manager packaging with `config`, keeping finished segments in `store`.
    pub fn new(config: &HlsConfig, pool: ArbiterPool, store: Arc<dyn SegmentStore>) -> Self {
        Self {
            enabled: config.enabled,
            segmenter: SegmenterConfig {
                target_duration: config.segment_duration,
                window_segments: config.window,
                max_segment_bytes: MAX_SEGMENT_BYTES,
            },
            grace: config.reconnect_grace,
            pool,
            streams: RwLock::new(HashMap::new()),
            store,
            segments_produced: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The HLS state of `key` (a live stream, or one in its reconnect grace).
    pub(crate) fn get(&self, key: &StreamKey) -> Option<Arc<HlsStream>> {
        self.streams.read().get(key).cloned()
    }

    /// Whether packaging is on (`hls.enabled`).
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The target segment duration.
    pub fn target_duration(&self) -> Duration {
        self.segmenter.target_duration
    }

    /// The packager's sink for a stream that starts (or, after a crash, starts again):
    /// it continues the playlist the stream had, if any, after a discontinuity.
    fn open_packager(&self, stream: &OutputStream) -> Box<dyn FrameSink> {
        let key = &stream.key;
        let hls = Arc::clone(self.streams.write().entry(key.clone()).or_insert_with(|| {
            Arc::new(HlsStream {
                published: RwLock::default(),
                parked: Mutex::new(None),
                generation: AtomicU64::new(0),
                resume: Mutex::new(None),
                fresh: tokio::sync::Notify::new(),
            })
        }));
        hls.generation.fetch_add(1, Ordering::Relaxed);
        let segmenter = if stream.restarts > 0 {
            // Fresh state after a crash: the finished segments and numbering go on, the
            // segment being built is lost.
            hls.resume.lock().take()
        } else {
            hls.parked.lock().take().map(|mut s| {
                s.mark_discontinuity();
                s
            })
        };
        Box::new(HlsSink {
            key: key.clone(),
            stream: hls,
            store: Arc::clone(&self.store),
            building: None,
            segmenter,
            config: self.segmenter.clone(),
            avc: None,
            aac: None,
            annexb: Vec::new(),
            adts: Vec::new(),
            published_sequence: None,
            produced: Arc::clone(&self.segments_produced),
            stats: Arc::clone(&stream.stats),
            warned: false,
        })
    }

    /// The stream ended: its playlist and segments stay for `hls.reconnect_grace`.
    fn schedule_expiry(self: &Arc<Self>, key: &StreamKey) {
        super::grace::expire(self, |m| &m.streams, &self.pool, key, self.grace);
    }
}

/// The HLS packager as an output of every stream (see [`zenlive_actors::output`]).
pub struct HlsOutput(pub Arc<HlsManager>);

impl Output for HlsOutput {
    fn name(&self) -> &'static str {
        "hls"
    }

    fn open(&self, stream: &OutputStream) -> Option<Box<dyn FrameSink>> {
        self.0.enabled.then(|| self.0.open_packager(stream))
    }

    fn ended(&self, key: &StreamKey) {
        if self.0.enabled {
            self.0.schedule_expiry(key);
        }
    }
}

/// The packager's end of its viewer session.
struct HlsSink {
    key: StreamKey,
    stream: Arc<HlsStream>,
    store: Arc<dyn SegmentStore>,
    /// The segment being built, as far as the store has it (a file store only).
    building: Option<Building>,
    segmenter: Option<Segmenter>,
    config: SegmenterConfig,
    avc: Option<(CodecConfig, AvcDecoderConfig)>,
    aac: Option<(CodecConfig, AudioSpecificConfig)>,
    annexb: Vec<u8>,
    adts: Vec<u8>,
    published_sequence: Option<u64>,
    produced: Arc<AtomicU64>,
    stats: Arc<StreamStats>,
    warned: bool,
}

impl HlsSink {
    fn warn(&mut self, what: &str, detail: impl std::fmt::Display) {
        // Once per stream: a broken publisher would otherwise log every frame.
        if !self.warned {
            self.warned = true;
            tracing::warn!(stream = %self.key, %detail, "hls: {what}; skipping such frames");
        }
    }

    fn segmenter(&mut self) -> &mut Segmenter {
        if self.segmenter.is_none() {
            // The program map lists every track the publisher declared, including one whose
            // first frame has not come yet.
            for kind in [FrameKind::Video, FrameKind::Audio] {
                if let Some(config) = self.stats.config(kind) {
                    self.configure(Some(&config));
                }
            }
        }
        let tracks = Tracks { video: self.avc.is_some(), audio: self.aac.is_some() };
        let config = &self.config;
        self.segmenter.get_or_insert_with(|| Segmenter::new(config.clone(), tracks))
    }

    /// Takes `config` as its track's configuration unless it already is.
    fn configure(&mut self, config: Option<&CodecConfig>) {
        let Some(config) = config else { return };
        match config.codec() {
            Codec::H264 if !self.avc.as_ref().is_some_and(|(c, _)| c.same(config)) => {
                match AvcDecoderConfig::parse(config.record()) {
                    Ok(parsed) => self.avc = Some((config.clone(), parsed)),
                    Err(e) => self.warn("bad AVC configuration", e),
                }
            }
            Codec::Aac if !self.aac.as_ref().is_some_and(|(c, _)| c.same(config)) => {
                match AudioSpecificConfig::parse(config.record()) {
                    Ok(parsed) => self.aac = Some((config.clone(), parsed)),
                    Err(e) => self.warn("bad AAC configuration", e),
                }
            }
            _ => {}
        }
    }

    /// A track the segmenter was made without has a configuration now (a WHIP publisher's
    /// audio or video can start after the other): the segmenter restarts with both
    /// ([`Segmenter::restart_for`]: the segments without the track leave the playlist, so a
    /// player never starts from one and misses the track; numbering goes on after
    /// `EXT-X-DISCONTINUITY`).
    fn widen(&mut self) {
        let tracks = Tracks { video: self.avc.is_some(), audio: self.aac.is_some() };
        let Some(segmenter) = &self.segmenter else { return };
        let current = segmenter.tracks();
        if (tracks.video && !current.video) || (tracks.audio && !current.audio) {
            tracing::info!(stream = %self.key, ?tracks, "hls: a track started late; a new timeline carries it");
            self.segmenter = Some(segmenter.restart_for(tracks));
            // The new segmenter numbers its first segment as the one being built was: that
            // one's bytes are thrown away.
            self.building = None;
        }
    }

    fn video(&mut self, frame: &MediaFrame, now: SystemTime) {
        if frame.codec() != Codec::H264 {
            return self.warn("MPEG-TS HLS carries H.264 video only", frame.codec().as_str());
        }
        self.configure(frame.config());
        self.widen();
        let Some((_, config)) = &self.avc else { return };
        self.annexb.clear();
        if let Err(e) = to_annexb(config, frame.payload(), frame.keyframe(), &mut self.annexb) {
            return self.warn("bad AVC frame", e);
        }
        let annexb = std::mem::take(&mut self.annexb);
        let cts = (frame.pts() - frame.dts()).as_millis().clamp(i32::MIN.into(), i32::MAX.into());
        self.segmenter().push_video(
            frame.dts().as_rtmp_millis(),
            cts as i32,
            frame.keyframe(),
            &annexb,
            now,
        );
        self.annexb = annexb;
    }

    fn audio(&mut self, frame: &MediaFrame, now: SystemTime) {
        if frame.codec() != Codec::Aac {
            return self.warn("MPEG-TS HLS carries AAC audio only", frame.codec().as_str());
        }
        self.configure(frame.config());
        self.widen();
        let Some((_, config)) = &self.aac else { return };
        let header = match adts_header(config, frame.payload().len()) {
            Ok(h) => h,
            Err(e) => return self.warn("AAC frame cannot be carried in ADTS", e),
        };
        self.adts.clear();
        self.adts.extend_from_slice(&header);
        self.adts.extend_from_slice(frame.payload());
        let adts = std::mem::take(&mut self.adts);
        self.segmenter().push_audio(frame.pts().as_rtmp_millis(), &adts, now);
        self.adts = adts;
    }

    fn publish_if_new(&mut self) {
        let Some(segmenter) = &mut self.segmenter else { return };
        let latest = segmenter.last_sequence();
        if latest != self.published_sequence {
            if latest.is_some() {
                self.produced.fetch_add(1, Ordering::Relaxed);
                self.stats.hls_segment();
            }
            self.published_sequence = latest;
            self.stream.publish(&self.key, segmenter, self.store.as_ref(), &mut self.building);
            let tracks = Tracks { video: self.avc.is_some(), audio: self.aac.is_some() };
            *self.stream.resume.lock() = Some(segmenter.successor(tracks));
        }
    }
}

impl HlsSink {
    /// Hands the bytes of the segment being built to the store as they fill chunks, when
    /// it keeps segments out of the heap: the heap then holds one chunk per stream, not a
    /// whole segment.
    fn spool_building(&mut self) {
        if !self.store.streams() {
            return;
        }
        let Some(segmenter) = &mut self.segmenter else { return };
        let Some((sequence, chunks)) = segmenter.take_building() else { return };
        if chunks.is_empty() {
            return;
        }
        if self.building.as_ref().is_none_or(|b| b.sequence != sequence) {
            let writer = self.store.begin(&self.key, sequence);
            self.building = Some(Building { sequence, writer });
        }
        if let Some(building) = &mut self.building {
            building.writer.append(&chunks);
        }
    }
}

impl FrameSink for HlsSink {
    fn offer(&mut self, frame: &MediaFrame) -> Offer {
        if zenlive_actors::faults::fire(zenlive_actors::faults::Fault::OutputPanic) {
            panic!("fault injection: the HLS packager panics");
        }
        let now = SystemTime::now();
        match frame.kind() {
            FrameKind::Video => self.video(frame, now),
            FrameKind::Audio => self.audio(frame, now),
            FrameKind::Data => {}
        }
        self.publish_if_new();
        self.spool_building();
        Offer::Accepted(frame.payload().len())
    }

    fn finish(&mut self, _reason: &str) {
        if let Some(mut segmenter) = self.segmenter.take() {
            segmenter.finish();
            self.stream.publish(&self.key, &mut segmenter, self.store.as_ref(), &mut self.building);
            *self.stream.parked.lock() = Some(segmenter);
        }
    }
}
