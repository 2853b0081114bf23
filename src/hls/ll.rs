//! The Low-Latency HLS packager: one per live stream, an output of the stream
//! ([`LlOutput`]) beside the MPEG-TS packager, feeding the sans-IO
//! [`zenlive_media::llhls::LlPlaylist`] with the stream's frames as they come (fMP4 parts
//! need no conversion: the frames' own payloads are the samples). HTTP handlers
//! ([`super::ll_serve`]) read the playlist under a short lock and wait for its changes on
//! a watch channel, so thousands of blocked playlist requests cost no thread each.
//!
//! With `hls.storage = "files"` each complete segment goes to the node's segment spool
//! (one file, written outside the playlist's lock) and its parts become ranges of that
//! file, mapped when first asked for: the heap holds only the segment being built. With
//! `"memory"`, or when the spool cannot take a segment, its parts stay in the heap. A
//! stream that ends keeps its playlist (with `EXT-X-ENDLIST`) for `hls.reconnect_grace`;
//! a publisher that comes back starts a new timeline in it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;
use zenlive_actors::{
    ArbiterPool, CodecConfig, FrameKind, FrameSink, MediaFrame, Offer, Output, OutputStream,
    StreamKey, StreamStats,
};
use zenlive_media::hls::SegmentBytes;
use zenlive_media::llhls::{KeptSegment, LlConfig, LlPlaylist};
use zenlive_media::MediaTime;

use super::spool::SpoolFile;
use super::store::{SegmentStore, StoredSegment};
use crate::config::HlsConfig;

/// One stream's LL-HLS state.
pub(crate) struct LlStream {
    playlist: Mutex<LlPlaylist>,
    /// The playlist's version after every change; blocked requests wait on it.
    changed: watch::Sender<u64>,
    /// Bumped on every start and end, so a grace timer knows whether it is stale.
    generation: AtomicU64,
    /// The last text rendered, full and delta: a change wakes every blocked request at
    /// once, and (but for the HLS session in their URIs) they all want the same text.
    rendered: Mutex<[Option<Rendered>; 2]>,
}

/// A rendered playlist and what it was rendered for.
struct Rendered {
    version: u64,
    query: String,
    text: Bytes,
}

impl super::grace::Generation for LlStream {
    fn generation(&self) -> &AtomicU64 {
        &self.generation
    }
}

impl LlStream {
    /// Runs `read` on the playlist (a short lock: no waiting inside).
    pub(crate) fn read<T>(&self, read: impl FnOnce(&LlPlaylist) -> T) -> T {
        read(&self.playlist.lock())
    }

    /// The playlist's text (a delta update with `skip`), its URIs followed by `query`,
    /// rendered once per change and shared; `None` before the first part.
    pub(crate) fn render(&self, skip: bool, query: &str) -> Option<Bytes> {
        let playlist = self.playlist.lock();
        let version = playlist.version();
        let slot = usize::from(skip);
        if let Some(cached) = &self.rendered.lock()[slot] {
            if cached.version == version && cached.query == query {
                return Some(cached.text.clone());
            }
        }
        let text = Bytes::from(playlist.render(skip, "ll/", query)?);
        drop(playlist);
        self.rendered.lock()[slot] =
            Some(Rendered { version, query: query.to_owned(), text: text.clone() });
        Some(text)
    }

    /// A receiver of the playlist's changes.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    fn changed(&self, playlist: &LlPlaylist) {
        self.changed.send_if_modified(|version| {
            let new = playlist.version();
            (*version != new).then(|| *version = new).is_some()
        });
    }
}

/// All LL-HLS streams of the node.
pub struct LlManager {
    enabled: bool,
    config: LlConfig,
    grace: Duration,
    pool: ArbiterPool,
    /// Where complete segments go, when it keeps them off the heap.
    store: Option<Arc<dyn SegmentStore>>,
    streams: RwLock<HashMap<StreamKey, Arc<LlStream>>>,
}

impl LlManager {
    /// A manager packaging with `config` (`hls.enabled` and `hls.ll`), keeping complete
    /// segments in `store` when it keeps them off the heap (the spool).
    pub fn new(config: &HlsConfig, pool: ArbiterPool, store: Arc<dyn SegmentStore>) -> Self {
        Self {
            enabled: config.enabled && config.ll,
            config: LlConfig {
                target_duration: config.ll_segment_duration,
                part_target: config.part_duration,
                window_segments: ll_window(config),
            },
            grace: config.reconnect_grace,
            pool,
            store: store.streams().then_some(store),
            streams: RwLock::new(HashMap::new()),
        }
    }

    /// Whether LL-HLS is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The target segment duration.
    pub fn target_duration(&self) -> Duration {
        self.config.target_duration
    }

    /// The part target duration.
    pub fn part_target(&self) -> Duration {
        self.config.part_target
    }

    /// The LL-HLS state of `key` (a live stream, or one in its grace).
    pub(crate) fn get(&self, key: &StreamKey) -> Option<Arc<LlStream>> {
        self.streams.read().get(key).cloned()
    }

    fn open_packager(&self, stream: &OutputStream) -> Box<dyn FrameSink> {
        let config = self.config.clone();
        let ll = Arc::clone(self.streams.write().entry(stream.key.clone()).or_insert_with(|| {
            Arc::new(LlStream {
                playlist: Mutex::new(LlPlaylist::new(config)),
                changed: watch::Sender::new(0),
                generation: AtomicU64::new(0),
                rendered: Mutex::new([None, None]),
            })
        }));
        ll.generation.fetch_add(1, Ordering::Relaxed);
        Box::new(LlSink {
            key: stream.key.clone(),
            stream: ll,
            stats: Arc::clone(&stream.stats),
            store: self.store.clone(),
            tracks: (None, None),
            held: Vec::new(),
            warned: false,
        })
    }

    /// The stream ended: its playlist stays for `hls.reconnect_grace`.
    fn schedule_expiry(self: &Arc<Self>, key: &StreamKey) {
        super::grace::expire(self, |m| &m.streams, &self.pool, key, self.grace);
    }
}

/// Segments in the LL-HLS playlist: as much time as the MPEG-TS playlist's (`hls.window`
/// segments of `hls.segment_duration`), in segments of `hls.ll_segment_duration`.
fn ll_window(config: &HlsConfig) -> usize {
    let span = config.segment_duration.as_secs_f64() * config.window as f64;
    let segments = (span / config.ll_segment_duration.as_secs_f64()).ceil() as usize;
    segments.max(config.window)
}

/// The LL-HLS packager as an output of every stream.
pub struct LlOutput(pub Arc<LlManager>);

impl Output for LlOutput {
    fn name(&self) -> &'static str {
        "llhls"
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

/// Whether two track configurations are the same (the same object, or equal bytes).
fn same(a: &Option<CodecConfig>, b: &Option<CodecConfig>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => a.same(b) || a == b,
        _ => false,
    }
}

/// How long the first frames of one track wait for the other's configuration before the
/// playlist starts with one track (the recorder's rule, [`crate::recording::core`]:
/// publishers send a little audio before their first video keyframe, and a WebRTC
/// publisher's audio comes out of its transcoder after its first video frames; an init
/// without the late track would make players start over at a discontinuity).
const ONE_TRACK_AFTER: MediaTime = MediaTime::from_millis(1000);

/// Most frames held for the other track, whatever their times say (times that do not
/// advance, from a broken or hostile publisher, would hold them for ever): 1 s of 30 fps
/// video or of 50 Opus-sized audio frames fits many times over.
const MAX_HELD: usize = 256;

/// The packager's end of its viewer session.
struct LlSink {
    key: StreamKey,
    stream: Arc<LlStream>,
    stats: Arc<StreamStats>,
    /// Where complete segments go (the spool), if anywhere.
    store: Option<Arc<dyn SegmentStore>>,
    /// The configurations the playlist's init was made of.
    tracks: (Option<CodecConfig>, Option<CodecConfig>),
    /// Before the playlist starts: frames of one track, from a sync point, waiting for the
    /// other track (at most [`ONE_TRACK_AFTER`] of them).
    held: Vec<MediaFrame>,
    warned: bool,
}

impl LlSink {
    /// The stream's tracks now, of the codecs fMP4 carries.
    fn current_tracks(&self) -> (Option<CodecConfig>, Option<CodecConfig>) {
        let carried =
            |kind| self.stats.config(kind).filter(|c| zenlive_media::fmp4::carries(c.codec()));
        (carried(FrameKind::Video), carried(FrameKind::Audio))
    }

    /// The segments `playlist` completed since the last call, when they are to leave the
    /// heap (taken under the lock the caller already holds).
    fn take_complete(&self, playlist: &mut LlPlaylist) -> Vec<(u64, Vec<Bytes>)> {
        if self.store.is_some() {
            playlist.take_complete()
        } else {
            Vec::new()
        }
    }

    /// Moves `complete` segments out of the heap, into the store (the writing happens
    /// outside the playlist's lock). A segment the store keeps in memory instead (it counts
    /// and logs that) stays in the playlist's heap.
    fn keep_complete(&self, complete: Vec<(u64, Vec<Bytes>)>) {
        let Some(store) = &self.store else { return };
        for (msn, bytes) in complete {
            let Some(StoredSegment::File(file)) =
                store.put_fmp4(&self.key, msn, SegmentBytes::from_chunks(bytes))
            else {
                continue;
            };
            self.stream.playlist.lock().keep(msn, Arc::new(KeptFile(file)));
        }
    }

    /// The frames the playlist starts with, once it can start (`tracks`: the stream's
    /// now). Audio that came before the video is dropped and the playlist starts on the
    /// video keyframe; video that came before the audio is held and starts the playlist
    /// once the audio is known; either alone starts it after [`ONE_TRACK_AFTER`] (or
    /// [`MAX_HELD`] frames).
    fn first_frames(
        &mut self,
        frame: &MediaFrame,
        tracks: &(Option<CodecConfig>, Option<CodecConfig>),
    ) -> Option<Vec<MediaFrame>> {
        let video = frame.kind() == FrameKind::Video;
        if tracks.0.is_some() && tracks.1.is_some() {
            if self.held.first().is_some_and(|f| f.kind() == FrameKind::Video) {
                let mut first = std::mem::take(&mut self.held);
                first.push(frame.clone());
                return Some(first);
            }
            self.held.clear();
            return (video && frame.keyframe()).then(|| vec![frame.clone()]);
        }
        let sync = frame.keyframe() || (!video && tracks.0.is_none());
        if self.held.is_empty() && !sync {
            return None;
        }
        self.held.push(frame.clone());
        let first = self.held.first().map_or(frame.dts(), MediaFrame::dts);
        let waited = frame.dts() - first >= ONE_TRACK_AFTER || self.held.len() >= MAX_HELD;
        waited.then(|| std::mem::take(&mut self.held))
    }

    fn warn(&mut self, what: &str, detail: impl std::fmt::Display) {
        if !self.warned {
            self.warned = true;
            tracing::warn!(stream = %self.key, %detail, "ll-hls: {what}");
        }
    }
}

impl FrameSink for LlSink {
    fn offer(&mut self, frame: &MediaFrame) -> Offer {
        let accepted = Offer::Accepted(frame.payload().len());
        if frame.kind() == FrameKind::Data || !zenlive_media::fmp4::carries(frame.codec()) {
            return accepted;
        }
        let tracks = self.current_tracks();
        let stream = Arc::clone(&self.stream);
        let mut playlist = stream.playlist.lock();
        if !playlist.started() {
            let Some(first) = self.first_frames(frame, &tracks) else { return accepted };
            if let Err(error) = playlist.start(tracks.0.as_ref(), tracks.1.as_ref()) {
                drop(playlist);
                self.warn("the stream's tracks cannot be packaged", error);
                return accepted;
            }
            self.tracks = tracks;
            let now = SystemTime::now();
            if let Some(error) = first.iter().find_map(|f| playlist.push(f, now).err()) {
                drop(playlist);
                self.warn("a frame could not be packaged", error);
                return accepted;
            }
        } else {
            // A new or changed track: a new init (and timeline), at a sync point.
            let unchanged = same(&tracks.0, &self.tracks.0) && same(&tracks.1, &self.tracks.1);
            if !unchanged {
                let sync =
                    frame.keyframe() || (frame.kind() == FrameKind::Audio && tracks.0.is_none());
                if !sync {
                    return accepted;
                }
                if let Err(error) = playlist.start(tracks.0.as_ref(), tracks.1.as_ref()) {
                    drop(playlist);
                    self.warn("the stream's tracks cannot be packaged", error);
                    return accepted;
                }
                self.tracks = tracks;
            }
            if let Err(error) = playlist.push(frame, SystemTime::now()) {
                drop(playlist);
                self.warn("a frame could not be packaged", error);
                return accepted;
            }
        }
        stream.changed(&playlist);
        let complete = self.take_complete(&mut playlist);
        drop(playlist);
        self.keep_complete(complete);
        accepted
    }

    fn finish(&mut self, _reason: &str) {
        let mut playlist = self.stream.playlist.lock();
        playlist.finish();
        self.stream.changed(&playlist);
        let complete = self.take_complete(&mut playlist);
        drop(playlist);
        self.keep_complete(complete);
    }
}

/// A complete LL-HLS segment in the spool.
struct KeptFile(Arc<SpoolFile>);

impl std::fmt::Debug for KeptFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("KeptFile").field(&self.0.path()).finish()
    }
}

impl KeptSegment for KeptFile {
    fn len(&self) -> u64 {
        self.0.len()
    }

    fn bytes(&self) -> std::io::Result<Bytes> {
        self.0.bytes()
    }
}
