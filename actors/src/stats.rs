//! Per-stream statistics computed from the media itself: frames per second from frame
//! timestamps, bitrate over a sliding window, resolution from the SPS.
//!
//! [`RateMeter`] and [`MediaInfo`] are plain Rust, fed by the stream actor. [`StreamStats`]
//! is what everyone else reads: shared atomics that the stream actor, its viewer sessions
//! and the HLS packager update, and that metrics, the SDK and the admin API read without
//! asking the actor. One lives as long as the stream's lineage, so its counters survive an
//! actor restart and only ever grow.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use parking_lot::RwLock;
use serde::{Deserialize, Deserializer, Serialize};
use zenlive_media::aac::AudioSpecificConfig;
use zenlive_media::av1;
use zenlive_media::avc::AvcDecoderConfig;
use zenlive_media::{Codec, CodecConfig, FrameKind, MediaFrame};

use crate::protocol::Protocol;

/// Media time the rates are computed over.
pub const RATE_WINDOW: Duration = Duration::from_secs(5);
/// Most frames the window holds, whatever the frame rate a publisher claims.
const MAX_WINDOW_FRAMES: usize = 4096;
/// A timestamp jump larger than this (either way) restarts the window: the publisher
/// reset its clock.
const MAX_TIMESTAMP_JUMP_MS: i64 = 10_000;

#[derive(Debug, Clone, Copy)]
struct Sample {
    ts: i64,
    bytes: u32,
    video: bool,
}

/// Frame rate, bitrate and keyframe interval over the last [`RATE_WINDOW`] of media time.
#[derive(Debug, Default)]
pub struct RateMeter {
    window: VecDeque<Sample>,
    window_bytes: u64,
    video_frames: usize,
    newest: Option<i64>,
    last_keyframe: Option<i64>,
    keyframe_interval_ms: Option<u64>,
    last_report: Option<i64>,
}

/// Media time between two reports of [`RateMeter::due`].
const REPORT_INTERVAL_MS: i64 = 250;

/// What a [`RateMeter`] measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Rates {
    /// Video frames per second.
    pub fps: f64,
    /// Media payload bits per second, audio and video.
    pub bitrate_bps: u64,
    /// Media time between the last two keyframes, in milliseconds.
    pub keyframe_interval_ms: Option<u64>,
}

impl RateMeter {
    /// Takes one audio or video frame (metadata is not media).
    pub fn push(&mut self, frame: &MediaFrame) {
        let video = match frame.kind() {
            FrameKind::Video => true,
            FrameKind::Audio => false,
            FrameKind::Data => return,
        };
        let ts = self.advance(frame.dts().as_millis());
        if video && frame.keyframe() {
            if let Some(last) = self.last_keyframe.filter(|&last| ts > last) {
                self.keyframe_interval_ms = Some((ts - last) as u64);
            }
            self.last_keyframe = Some(ts);
        }
        let bytes = u32::try_from(frame.payload().len()).unwrap_or(u32::MAX);
        self.window.push_back(Sample { ts, bytes, video });
        self.window_bytes += u64::from(bytes);
        self.video_frames += usize::from(video);
        let newest = self.newest.unwrap_or(ts);
        while let Some(oldest) = self.window.front() {
            let expired = newest - oldest.ts > RATE_WINDOW.as_millis() as i64;
            if !expired && self.window.len() <= MAX_WINDOW_FRAMES {
                break;
            }
            self.pop_front();
        }
    }

    /// Takes a frame's time in milliseconds; a jump from the newest one seen larger than
    /// [`MAX_TIMESTAMP_JUMP_MS`] either way resets the window.
    fn advance(&mut self, ts: i64) -> i64 {
        match self.newest {
            Some(newest) if (ts - newest).abs() > MAX_TIMESTAMP_JUMP_MS => {
                self.reset();
                self.newest = Some(ts);
            }
            Some(newest) if ts <= newest => {}
            _ => self.newest = Some(ts),
        }
        ts
    }

    fn reset(&mut self) {
        self.last_report = None;
        self.window.clear();
        self.window_bytes = 0;
        self.video_frames = 0;
        self.last_keyframe = None;
    }

    fn pop_front(&mut self) {
        if let Some(old) = self.window.pop_front() {
            self.window_bytes -= u64::from(old.bytes);
            self.video_frames -= usize::from(old.video);
        }
    }

    /// The rates, when at least 250 ms of media time passed since they were last taken:
    /// computing them walks the window, so the stream actor asks this after each frame
    /// instead of computing them per frame.
    pub fn due(&mut self) -> Option<Rates> {
        let newest = self.newest?;
        if self.last_report.is_some_and(|last| (0..REPORT_INTERVAL_MS).contains(&(newest - last))) {
            return None;
        }
        self.last_report = Some(newest);
        Some(self.rates())
    }

    /// The rates now.
    pub fn rates(&self) -> Rates {
        let mut video = self.window.iter().filter(|s| s.video).map(|s| s.ts);
        let fps = match (video.next(), video.next_back()) {
            (Some(first), Some(last)) if last > first && self.video_frames > 1 => {
                (self.video_frames - 1) as f64 * 1000.0 / (last - first) as f64
            }
            _ => 0.0,
        };
        let span = match (self.window.iter().map(|s| s.ts).min(), self.newest) {
            (Some(oldest), Some(newest)) if newest > oldest => newest - oldest,
            _ => 0,
        };
        // The oldest sample opens the window; the bytes after it arrived within `span`.
        let bytes = self.window_bytes - self.window.front().map_or(0, |s| u64::from(s.bytes));
        let bitrate_bps = if span > 0 { bytes * 8 * 1000 / span as u64 } else { 0 };
        Rates { fps, bitrate_bps, keyframe_interval_ms: self.keyframe_interval_ms }
    }
}

/// The video track, from its configuration record: H.264's SPS; AV1's `av1C` (profile,
/// level, and the sequence header's largest picture size); VP9's `vpcC` and HEVC's `hvcC`
/// (profile and level; their size reads 0, unknown); VP8 has no record, so all read 0.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VideoInfo {
    /// `h264`, `hevc`, `av1`, `vp9` or `vp8`.
    pub codec: &'static str,
    /// Pixels, after cropping.
    pub width: u32,
    /// Pixels, after cropping.
    pub height: u32,
    /// The codec's profile number: H.264's `profile_idc` (66 baseline, 77 main, 100 high),
    /// HEVC's `general_profile_idc`, AV1's `seq_profile`, VP9's profile.
    pub profile: u8,
    /// The codec's level number: H.264's `level_idc` (31 is level 3.1), HEVC's
    /// `general_level_idc` (93 is 3.1), AV1's `seq_level_idx` (8 is 4.0), VP9's (31 is 3.1).
    pub level: u8,
}

/// The audio track, from the AAC `AudioSpecificConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AudioInfo {
    /// Always `aac` today.
    pub codec: &'static str,
    /// Samples per second.
    pub sample_rate: u32,
    /// Channel configuration (1 mono, 2 stereo, ...).
    pub channels: u8,
}

/// What the sequence headers say about the stream's tracks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaInfo {
    /// The video track, once its sequence header arrived and parsed.
    pub video: Option<VideoInfo>,
    /// The audio track, once its sequence header arrived and parsed.
    pub audio: Option<AudioInfo>,
}

impl MediaInfo {
    /// Updates from a track's new configuration; answers whether anything changed.
    /// Configurations that do not parse leave the info as it was (the packager logs them).
    pub fn update(&mut self, config: &CodecConfig) -> bool {
        match config.codec().kind() {
            FrameKind::Video => {
                let video = video_info(config);
                let changed = video.is_some() && video != self.video;
                if changed {
                    self.video = video;
                }
                changed
            }
            FrameKind::Audio => {
                let audio = audio_info(config);
                let changed = audio.is_some() && audio != self.audio;
                if changed {
                    self.audio = audio;
                }
                changed
            }
            FrameKind::Data => false,
        }
    }
}

fn video_info(config: &CodecConfig) -> Option<VideoInfo> {
    let record = config.record();
    let unsized_info =
        |codec, profile, level| VideoInfo { codec, width: 0, height: 0, profile, level };
    match config.codec() {
        Codec::Vp8 => Some(unsized_info("vp8", 0, 0)),
        // vpcC body: version, flags (3), profile, level, ...
        Codec::Vp9 => Some(unsized_info("vp9", *record.get(4)?, *record.get(5)?)),
        // hvcC: version, profile space/tier/profile_idc, 4 + 6 flag bytes, level_idc.
        Codec::Hevc => Some(unsized_info("hevc", record.get(1)? & 0x1f, *record.get(12)?)),
        Codec::Av1 => {
            let info = av1::record_info(record)?;
            Some(VideoInfo {
                codec: "av1",
                width: info.width,
                height: info.height,
                profile: info.profile,
                level: info.level,
            })
        }
        Codec::H264 => {
            let sps = AvcDecoderConfig::parse(record).ok()?.sps_info().ok()?;
            Some(VideoInfo {
                codec: "h264",
                width: sps.width,
                height: sps.height,
                profile: sps.profile_idc,
                level: sps.level_idc,
            })
        }
        _ => None,
    }
}

fn audio_info(config: &CodecConfig) -> Option<AudioInfo> {
    if config.codec() != Codec::Aac {
        return None;
    }
    let asc = AudioSpecificConfig::parse(config.record()).ok()?;
    Some(AudioInfo { codec: "aac", sample_rate: asc.sample_rate(), channels: asc.channels })
}

/// A gauge or counter per viewer protocol.
#[derive(Debug, Default)]
struct PerProtocol([AtomicU64; Protocol::ALL.len()]);

impl PerProtocol {
    fn add(&self, protocol: Protocol, n: u64) {
        self.0[protocol.index()].fetch_add(n, Ordering::Relaxed);
    }

    fn sub(&self, protocol: Protocol, n: u64) {
        // Saturating: a gauge never wraps below zero, whatever order updates arrive in.
        let cell = &self.0[protocol.index()];
        let _ =
            cell.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| Some(v.saturating_sub(n)));
    }

    fn get(&self) -> Vec<(Protocol, u64)> {
        Protocol::ALL.iter().map(|&p| (p, self.0[p.index()].load(Ordering::Relaxed))).collect()
    }
}

/// One stream's live statistics, shared. See the module docs.
#[derive(Debug)]
pub struct StreamStats {
    started: Instant,
    started_at: SystemTime,
    /// Who publishes: changes when a local publisher takes over a relayed copy.
    publisher: RwLock<Publisher>,
    bytes_in: AtomicU64,
    frames_in: AtomicU64,
    keyframes: AtomicU64,
    fps_millis: AtomicU64,
    bitrate_bps: AtomicU64,
    keyframe_interval_ms: AtomicU64,
    media: RwLock<MediaInfo>,
    /// The tracks' current codec configurations (video, audio), as the publisher declared
    /// them: outputs that must know every track before the first frame (an MPEG-TS
    /// program map) read them here.
    configs: RwLock<[Option<CodecConfig>; 2]>,
    viewers: PerProtocol,
    viewers_total: PerProtocol,
    bytes_out: PerProtocol,
    frames_dropped: AtomicU64,
    viewers_dropped_slow: AtomicU64,
    hls_segments: AtomicU64,
    restarts: AtomicU64,
}

/// Who publishes a stream.
#[derive(Debug, Clone)]
struct Publisher {
    protocol: Protocol,
    user: Option<String>,
    peer: Option<SocketAddr>,
}

/// A consistent-enough copy of [`StreamStats`] (each field read once), for the SDK, the
/// admin API and metrics.
/// It also crosses nodes (`GetStats`, a remote message): `Deserialize` reads back what
/// `Serialize` writes, in JSON as in bincode.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// When the stream started (wall clock).
    #[serde(with = "unix_seconds")]
    pub started_at: SystemTime,
    /// How long it has been live.
    #[serde(
        rename = "uptime_seconds",
        serialize_with = "seconds",
        deserialize_with = "from_seconds"
    )]
    pub uptime: Duration,
    /// How the publisher connected.
    pub publisher_protocol: Protocol,
    /// Who publishes (a token's `sub`), when auth identified them.
    pub publisher_user: Option<String>,
    /// The publisher's address.
    pub publisher_peer: Option<SocketAddr>,
    /// Media payload bytes received.
    pub bytes_in: u64,
    /// Media frames received (audio, video, data).
    pub frames_in: u64,
    /// Video keyframes received.
    pub keyframes: u64,
    /// Frame rate, bitrate and keyframe interval over the last few seconds.
    pub rates: Rates,
    /// Codecs and resolution.
    pub media: MediaInfo,
    /// Viewers watching now, by protocol (protocols with none are left out).
    #[serde(serialize_with = "by_protocol", deserialize_with = "from_by_protocol")]
    pub viewers: Vec<(Protocol, u64)>,
    /// Viewers that ever joined, by protocol.
    #[serde(serialize_with = "by_protocol", deserialize_with = "from_by_protocol")]
    pub viewers_total: Vec<(Protocol, u64)>,
    /// Bytes delivered to viewers, by protocol.
    #[serde(serialize_with = "by_protocol", deserialize_with = "from_by_protocol")]
    pub bytes_out: Vec<(Protocol, u64)>,
    /// Frames not delivered to viewers that fell behind.
    pub frames_dropped: u64,
    /// Viewers disconnected for staying behind.
    pub viewers_dropped_slow: u64,
    /// HLS segments produced.
    pub hls_segments: u64,
    /// Times the stream's actor crashed and was restarted.
    pub restarts: u64,
}

impl StatsSnapshot {
    /// Viewers watching now, all protocols together.
    pub fn viewers_now(&self) -> u64 {
        self.viewers.iter().map(|(_, n)| n).sum()
    }
}

mod unix_seconds {
    use std::time::{SystemTime, UNIX_EPOCH};

    pub fn serialize<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(t.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64()))
    }

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let seconds = super::from_seconds(d)?;
        Ok(UNIX_EPOCH + seconds)
    }
}

/// Reads what [`seconds`] writes; a negative or non-finite number is zero.
fn from_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let seconds = f64::deserialize(d)?;
    Ok(Duration::try_from_secs_f64(seconds).unwrap_or_default())
}

/// Reads what [`by_protocol`] writes; unknown protocols are left out.
fn from_by_protocol<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(Protocol, u64)>, D::Error> {
    let map = std::collections::BTreeMap::<String, u64>::deserialize(d)?;
    Ok(Protocol::ALL.iter().filter_map(|&p| map.get(p.as_str()).map(|&n| (p, n))).collect())
}

/// A codec's name read back as one of the names this crate writes (`other` if unknown), so
/// [`VideoInfo`] and [`AudioInfo`] keep their `&'static str`.
fn codec_name(name: &str) -> &'static str {
    const KNOWN: [&str; 7] = ["h264", "hevc", "av1", "vp8", "vp9", "aac", "opus"];
    KNOWN.into_iter().find(|k| *k == name).unwrap_or("other")
}

/// [`VideoInfo`] as read (an owned codec name), in the same field order.
#[derive(Deserialize)]
struct VideoInfoRead {
    codec: String,
    width: u32,
    height: u32,
    profile: u8,
    level: u8,
}

impl<'de> Deserialize<'de> for VideoInfo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        VideoInfoRead::deserialize(d).map(Self::from)
    }
}

impl From<VideoInfoRead> for VideoInfo {
    fn from(v: VideoInfoRead) -> Self {
        let codec = codec_name(&v.codec);
        Self { codec, width: v.width, height: v.height, profile: v.profile, level: v.level }
    }
}

/// [`AudioInfo`] as read (an owned codec name), in the same field order.
#[derive(Deserialize)]
struct AudioInfoRead {
    codec: String,
    sample_rate: u32,
    channels: u8,
}

impl<'de> Deserialize<'de> for AudioInfo {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        AudioInfoRead::deserialize(d).map(Self::from)
    }
}

impl From<AudioInfoRead> for AudioInfo {
    fn from(a: AudioInfoRead) -> Self {
        Self { codec: codec_name(&a.codec), sample_rate: a.sample_rate, channels: a.channels }
    }
}

/// Writes `[(protocol, n)]` as `{"protocol": n}`.
fn by_protocol<S: serde::Serializer>(v: &[(Protocol, u64)], s: S) -> Result<S::Ok, S::Error> {
    s.collect_map(v.iter().map(|(p, n)| (p.as_str(), n)))
}

fn seconds<S: serde::Serializer>(d: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

impl StreamStats {
    /// Stats for a stream that starts now, published over `publisher`.
    pub fn new(publisher: Protocol) -> Self {
        Self::for_publisher(publisher, None, None)
    }

    /// Stats for a stream that `user` publishes from `peer` over `publisher`, from now.
    pub fn for_publisher(
        publisher: Protocol,
        user: Option<String>,
        peer: Option<SocketAddr>,
    ) -> Self {
        Self {
            started: Instant::now(),
            started_at: SystemTime::now(),
            publisher: RwLock::new(Publisher { protocol: publisher, user, peer }),
            bytes_in: AtomicU64::new(0),
            frames_in: AtomicU64::new(0),
            keyframes: AtomicU64::new(0),
            fps_millis: AtomicU64::new(0),
            bitrate_bps: AtomicU64::new(0),
            keyframe_interval_ms: AtomicU64::new(0),
            media: RwLock::new(MediaInfo::default()),
            configs: RwLock::new([None, None]),
            viewers: PerProtocol::default(),
            viewers_total: PerProtocol::default(),
            bytes_out: PerProtocol::default(),
            frames_dropped: AtomicU64::new(0),
            viewers_dropped_slow: AtomicU64::new(0),
            hls_segments: AtomicU64::new(0),
            restarts: AtomicU64::new(0),
        }
    }

    /// Counts one frame from the publisher.
    pub fn on_ingest(&self, frame: &MediaFrame) {
        self.bytes_in.fetch_add(frame.payload().len() as u64, Ordering::Relaxed);
        self.frames_in.fetch_add(1, Ordering::Relaxed);
        if frame.keyframe() {
            self.keyframes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Publishes the rates a [`RateMeter`] measured.
    pub fn set_rates(&self, rates: &Rates) {
        self.fps_millis.store((rates.fps * 1000.0).round() as u64, Ordering::Relaxed);
        self.bitrate_bps.store(rates.bitrate_bps, Ordering::Relaxed);
        self.keyframe_interval_ms.store(rates.keyframe_interval_ms.unwrap_or(0), Ordering::Relaxed);
    }

    /// Records a track's current codec configuration.
    pub fn set_config(&self, config: &CodecConfig) {
        let track = match config.codec().kind() {
            FrameKind::Video => 0,
            FrameKind::Audio => 1,
            FrameKind::Data => return,
        };
        self.configs.write()[track] = Some(config.clone());
    }

    /// The current codec configuration of the `kind` track, if the publisher declared one.
    pub fn config(&self, kind: FrameKind) -> Option<CodecConfig> {
        match kind {
            FrameKind::Video => self.configs.read()[0].clone(),
            FrameKind::Audio => self.configs.read()[1].clone(),
            FrameKind::Data => None,
        }
    }

    /// Records the tracks' description.
    pub fn set_media(&self, media: MediaInfo) {
        *self.media.write() = media;
    }

    /// A viewer joined.
    pub fn viewer_joined(&self, protocol: Protocol) {
        self.viewers.add(protocol, 1);
        self.viewers_total.add(protocol, 1);
    }

    /// A viewer left.
    pub fn viewer_left(&self, protocol: Protocol) {
        self.viewers.sub(protocol, 1);
    }

    /// Bytes delivered to a viewer.
    pub fn bytes_out(&self, protocol: Protocol, bytes: u64) {
        self.bytes_out.add(protocol, bytes);
    }

    /// Frames a slow viewer did not get.
    pub fn frames_dropped(&self, frames: u64) {
        self.frames_dropped.fetch_add(frames, Ordering::Relaxed);
    }

    /// A viewer was disconnected for staying behind.
    pub fn viewer_dropped_slow(&self) {
        self.viewers_dropped_slow.fetch_add(1, Ordering::Relaxed);
    }

    /// The HLS packager completed a segment.
    pub fn hls_segment(&self) {
        self.hls_segments.fetch_add(1, Ordering::Relaxed);
    }

    /// The stream's actor was restarted after a crash.
    pub fn restarted(&self) {
        self.restarts.fetch_add(1, Ordering::Relaxed);
    }

    /// A new publisher took the stream over (a local publisher replacing a relayed copy).
    pub fn set_publisher(
        &self,
        protocol: Protocol,
        user: Option<String>,
        peer: Option<SocketAddr>,
    ) {
        *self.publisher.write() = Publisher { protocol, user, peer };
    }

    /// Reads every field once.
    pub fn snapshot(&self) -> StatsSnapshot {
        let publisher = self.publisher.read().clone();
        let nonzero = |v: Vec<(Protocol, u64)>| v.into_iter().filter(|(_, n)| *n > 0).collect();
        let interval = self.keyframe_interval_ms.load(Ordering::Relaxed);
        StatsSnapshot {
            started_at: self.started_at,
            uptime: self.started.elapsed(),
            publisher_protocol: publisher.protocol,
            publisher_user: publisher.user,
            publisher_peer: publisher.peer,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            frames_in: self.frames_in.load(Ordering::Relaxed),
            keyframes: self.keyframes.load(Ordering::Relaxed),
            rates: Rates {
                fps: self.fps_millis.load(Ordering::Relaxed) as f64 / 1000.0,
                bitrate_bps: self.bitrate_bps.load(Ordering::Relaxed),
                keyframe_interval_ms: (interval > 0).then_some(interval),
            },
            media: self.media.read().clone(),
            viewers: nonzero(self.viewers.get()),
            viewers_total: nonzero(self.viewers_total.get()),
            bytes_out: nonzero(self.bytes_out.get()),
            frames_dropped: self.frames_dropped.load(Ordering::Relaxed),
            viewers_dropped_slow: self.viewers_dropped_slow.load(Ordering::Relaxed),
            hls_segments: self.hls_segments.load(Ordering::Relaxed),
            restarts: self.restarts.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::*;

    fn at(ms: i64) -> zenlive_media::MediaTime {
        zenlive_media::MediaTime::from_millis(ms)
    }

    fn video(ts: i64, key: bool, len: usize) -> MediaFrame {
        MediaFrame::video(Codec::H264, at(ts), at(ts), key, Bytes::from(vec![0; len]), None)
    }

    fn audio(ts: i64, len: usize) -> MediaFrame {
        MediaFrame::audio(Codec::Aac, at(ts), Bytes::from(vec![0; len]), None)
    }

    /// 30 fps video with a keyframe every 2 s, each frame `len` payload bytes, plus AAC at
    /// 44.1 kHz (1024 samples a frame), from `start` for `seconds`.
    fn feed(meter: &mut RateMeter, start: i64, seconds: i64, len: usize) {
        let mut frames = Vec::new();
        for i in 0..seconds * 30 {
            let ts = start + i * 1000 / 30;
            frames.push((ts, video(ts, i % 60 == 0, len)));
        }
        for i in 0..(seconds * 44_100 / 1024) {
            let ts = start + i * 1024 * 1000 / 44_100;
            frames.push((ts, audio(ts, 371)));
        }
        frames.sort_by_key(|(ts, _)| *ts);
        for (_, frame) in frames {
            meter.push(&frame);
        }
    }

    #[test]
    fn measures_frame_rate_bitrate_and_keyframe_interval_from_timestamps() {
        let mut meter = RateMeter::default();
        feed(&mut meter, 0, 12, 10_000);
        let rates = meter.rates();
        assert!((rates.fps - 30.0).abs() < 0.2, "fps {}", rates.fps);
        // Video 30 * 10,000 B plus audio ~43 * 371 B per second.
        let expected = (30.0 * 10_000.0 + 44_100.0 / 1024.0 * 371.0) * 8.0;
        let error = (rates.bitrate_bps as f64 - expected).abs() / expected;
        assert!(error < 0.02, "bitrate {} vs {expected}", rates.bitrate_bps);
        assert_eq!(rates.keyframe_interval_ms, Some(2000));
    }

    #[test]
    fn measures_past_the_32_bit_millisecond_clock() {
        let mut meter = RateMeter::default();
        feed(&mut meter, i64::from(u32::MAX) - 3_000, 8, 1000);
        let rates = meter.rates();
        assert!((rates.fps - 30.0).abs() < 0.2, "fps {}", rates.fps);
        assert_eq!(rates.keyframe_interval_ms, Some(2000));
    }

    #[test]
    fn a_timestamp_reset_restarts_the_window() {
        let mut meter = RateMeter::default();
        feed(&mut meter, 1_000_000, 6, 1000);
        feed(&mut meter, 0, 6, 1000);
        let rates = meter.rates();
        assert!((rates.fps - 30.0).abs() < 0.2, "fps {}", rates.fps);
    }

    #[test]
    fn reads_resolution_and_audio_from_configurations() {
        let mut info = MediaInfo::default();
        // A real AVCDecoderConfigurationRecord from x264 (320x240, High profile, level 1.3).
        let record = Bytes::from_static(&[
            0x01, 0x64, 0x00, 0x0d, 0xff, 0xe1, 0x00, 0x19, 0x67, 0x64, 0x00, 0x0d, 0xac, 0xd9,
            0x41, 0x41, 0xfb, 0x01, 0x10, 0x00, 0x00, 0x03, 0x00, 0x10, 0x00, 0x00, 0x03, 0x03,
            0xc0, 0xf1, 0x42, 0x99, 0x60, 0x01, 0x00, 0x06, 0x68, 0xeb, 0xe3, 0xcb, 0x22, 0xc0,
        ]);
        let config = CodecConfig::new(Codec::H264, record, at(0));
        assert!(info.update(&config));
        let video = info.video.clone().expect("video info");
        assert_eq!((video.width, video.height, video.profile, video.level), (320, 240, 100, 13));
        assert!(!info.update(&config), "the same configuration again changes nothing");

        // AAC LC, 44.1 kHz, stereo.
        let config = CodecConfig::new(Codec::Aac, Bytes::from_static(&[0x12, 0x10]), at(0));
        assert!(info.update(&config));
        assert_eq!(info.audio, Some(AudioInfo { codec: "aac", sample_rate: 44_100, channels: 2 }));

        // VP8 (a WHIP publisher's): its codec, no sequence header to read a size from.
        assert!(info.update(&CodecConfig::new(Codec::Vp8, Bytes::new(), at(0))));
        assert_eq!(info.video.as_ref().map(|v| (v.codec, v.width)), Some(("vp8", 0)));

        // VP9's vpcC: profile 0, level 2.0; AV1's av1C with libaom's 640x480 sequence header.
        let vpcc = Bytes::from_static(&[1, 0, 0, 0, 0, 20, 0x80, 2, 2, 2, 0, 0]);
        assert!(info.update(&CodecConfig::new(Codec::Vp9, vpcc, at(0))));
        let vp9 = info.video.clone().expect("vp9");
        assert_eq!((vp9.codec, vp9.profile, vp9.level), ("vp9", 0, 20));
        let header = [0x0a, 0x0b, 0x00, 0x00, 0x00, 0x24, 0xc4, 0xff, 0xdf, 0x36, 0xbe, 0x40, 0x10];
        let av1c = av1::config_record(&header).expect("av1C");
        assert!(info.update(&CodecConfig::new(Codec::Av1, av1c, at(0))));
        let av1 = info.video.clone().expect("av1");
        assert_eq!((av1.codec, av1.width, av1.height, av1.profile), ("av1", 640, 480, 0));
        // A record too short to read leaves the info as it was.
        assert!(!info.update(&CodecConfig::new(Codec::Hevc, Bytes::from_static(&[1]), at(0))));
        assert_eq!(info.video.as_ref().map(|v| v.codec), Some("av1"));
    }

    #[test]
    fn viewer_gauges_never_go_below_zero() {
        let stats = StreamStats::new(Protocol::Rtmp);
        stats.viewer_joined(Protocol::HttpFlv);
        stats.viewer_left(Protocol::HttpFlv);
        stats.viewer_left(Protocol::HttpFlv);
        let snapshot = stats.snapshot();
        assert_eq!(snapshot.viewers_now(), 0);
        assert_eq!(snapshot.viewers_total, vec![(Protocol::HttpFlv, 1)]);
    }

    proptest! {
        #[test]
        fn hostile_timestamps_and_headers_never_panic_and_stay_bounded(
            frames in proptest::collection::vec(
                (any::<i64>(), 0u8..3, any::<bool>(), proptest::collection::vec(any::<u8>(), 0..64)),
                0..600,
            )
        ) {
            let mut meter = RateMeter::default();
            let mut info = MediaInfo::default();
            for (ts, kind, header, payload) in frames {
                let codec = [Codec::H264, Codec::Aac, Codec::Amf0][usize::from(kind)];
                let payload = Bytes::from(payload);
                let t = zenlive_media::MediaTime::from_nanos(ts);
                let frame = MediaFrame::video(codec, t, t, header, payload.clone(), None);
                meter.push(&frame);
                info.update(&CodecConfig::new(codec, payload, t));
                let rates = meter.rates();
                prop_assert!(rates.fps.is_finite() && rates.fps >= 0.0);
                prop_assert!(meter.window.len() <= MAX_WINDOW_FRAMES);
            }
        }
    }
}
