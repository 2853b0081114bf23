//! [`AacToOpus`]: an RTMP publisher's AAC (LC or HE-AAC, any rate, mono or stereo) → Opus
//! at 48 kHz stereo in 20 ms packets, for WebRTC (WHEP) viewers.
//!
//! ```text
//! AAC frame ─ rusty_aac ─▶ PCM (source rate) ─ rubato FFT, if not 48 kHz ─▶ 48 kHz
//!           ─ 960-sample packets ─ opus-pure ─▶ Opus frame
//! ```
//!
//! For a WHEP viewer: create one per stream (not per viewer: its output is the same for
//! all) when the stream's audio is AAC, and push every AAC frame of the stream:
//!
//! ```no_run
//! # use zenlive_transcode::{AacToOpus, AacToOpusSettings};
//! # fn frames() -> Vec<zenlive_media::MediaFrame> { Vec::new() }
//! let mut transcoder = AacToOpus::new(AacToOpusSettings::default()).expect("an Opus encoder");
//! for frame in frames() {
//!     for opus in transcoder.push(&frame) {
//!         // opus.codec() == Codec::Opus; opus.pts() on the stream's clock; 20 ms each;
//!         // opus.config() is the same OpusHead configuration every time.
//!     }
//! }
//! ```
//!
//! A frame needs its configuration (the `AudioSpecificConfig` every AAC frame from RTMP
//! points at); a frame without one is counted as an error. A new configuration rebuilds
//! the decoder and resampler and resets the encoder (a click, and a re-anchor).
//!
//! Times: the decoded samples form one run placed on the stream's clock by the AAC frames'
//! times ([`Timeline`], in the source's rate): AAC frame times from RTMP are milliseconds,
//! their jitter is ignored, gaps (more than 10 ms) are filled with silence, a jump of more
//! than a second re-anchors. Opus packet `m` holds the encoder's input from 48 kHz position
//! `960 m - L` (L: the encoder's lookahead), which is resampler output position
//! `960 m - L - R` (R: the resampler's delay); that maps back to the source's rate and is
//! stamped from the timeline. Packets before the stream's time zero are not emitted.
//!
//! More than two channels is not supported (counted as errors: no audio).

use std::time::Instant;

use bytes::Bytes;
use opus_pure::{Application, OpusEncoder};
use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use rusty_aac::AacDecoder;
use zenlive_media::{Codec, CodecConfig, MediaFrame, MediaTime};

use crate::timeline::{Placement, Timeline};
use crate::{guarded, opus_head, Counters, TranscodeError, OPUS_RATE};

/// Samples per Opus packet (20 ms at 48 kHz).
pub const OPUS_FRAME: usize = 960;

const CHANNELS: usize = 2;

/// Settings of an [`AacToOpus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AacToOpusSettings {
    /// Opus bitrate, bits per second.
    pub bitrate: i32,
    /// Opus encoder complexity, 0..=10 (CPU against quality).
    pub complexity: i32,
}

impl Default for AacToOpusSettings {
    /// 64 kbit/s stereo; complexity 5 (10 % to 20 % less time than 10; BENCHMARKS.md,
    /// "Audio transcoding").
    fn default() -> Self {
        Self { bitrate: 64_000, complexity: 5 }
    }
}

/// What one AAC configuration decodes to.
struct Source {
    /// The configuration this was built for.
    config: CodecConfig,
    decoder: AacDecoder,
    /// The decoded rate, once known (HE-AAC doubles the configuration's).
    rate: Option<u32>,
    resampler: Option<Fft<f32>>,
    /// Resampler delay, 48 kHz samples.
    resampler_delay: i64,
    timeline: Timeline,
    /// Decoded stereo samples at the source rate, waiting for the resampler's chunk.
    pending: Vec<f32>,
    /// Resampler output scratch.
    resampled: Vec<f32>,
    /// 48 kHz stereo samples waiting for a whole packet.
    ready: Vec<f32>,
    /// Opus packets encoded from this source.
    packets: i64,
}

/// One stream's AAC → Opus transcoder. See the module docs.
pub struct AacToOpus {
    settings: AacToOpusSettings,
    encoder: OpusEncoder,
    /// The encoder's lookahead, samples.
    lookahead: i64,
    head: Option<CodecConfig>,
    source: Option<Source>,
    packet: Vec<u8>,
    counters: Counters,
}

impl std::fmt::Debug for AacToOpus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AacToOpus").field("counters", &self.counters).finish_non_exhaustive()
    }
}

fn opus_encoder(settings: &AacToOpusSettings) -> Result<OpusEncoder, TranscodeError> {
    let mut encoder = OpusEncoder::new(OPUS_RATE as i32, CHANNELS, Application::Audio)
        .map_err(|e| TranscodeError::Opus(e.to_string()))?;
    encoder.bitrate_bps = settings.bitrate;
    encoder.complexity = settings.complexity.clamp(0, 10);
    Ok(encoder)
}

impl AacToOpus {
    /// A transcoder that has seen nothing yet.
    pub fn new(settings: AacToOpusSettings) -> Result<Self, TranscodeError> {
        let encoder = opus_encoder(&settings)?;
        let lookahead = encoder.lookahead() as i64;
        Ok(Self {
            settings,
            encoder,
            lookahead,
            head: None,
            source: None,
            packet: vec![0; opus_pure::MAX_PACKET_BYTES],
            counters: Counters::default(),
        })
    }

    /// What the transcoder did so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The source's decoded sample rate, once a frame decoded.
    pub fn source_rate(&self) -> Option<u32> {
        self.source.as_ref().and_then(|s| s.rate)
    }

    /// Takes one AAC frame and gives the Opus frames it completed (none, one or more), each
    /// pointing at the same `OpusHead` configuration. Frames of other codecs are ignored.
    pub fn push(&mut self, frame: &MediaFrame) -> Vec<MediaFrame> {
        let mut out = Vec::new();
        if frame.codec() != Codec::Aac {
            return out;
        }
        let started = Instant::now();
        self.counters.frames_in += 1;
        self.take(frame, &mut out);
        self.counters.busy += started.elapsed();
        out
    }

    fn take(&mut self, frame: &MediaFrame, out: &mut Vec<MediaFrame>) {
        let Some(config) = frame.config() else {
            self.counters.errors += 1;
            return;
        };
        let current = self.source.as_ref().map(|s| &s.config);
        if !current.is_some_and(|c| c.same(config) || c == config) {
            let Ok(decoder) = AacDecoder::with_config_bytes(config.record()) else {
                self.counters.errors += 1;
                return;
            };
            if self.source.is_some() {
                // A new configuration: start over (the encoder too: its state belongs to
                // the old run).
                self.counters.resyncs += 1;
                let _ = self.encoder.reset_state();
            }
            self.source = Some(Source {
                config: config.clone(),
                decoder,
                rate: None,
                resampler: None,
                resampler_delay: 0,
                timeline: Timeline::new(OPUS_RATE),
                pending: Vec::new(),
                resampled: Vec::new(),
                ready: Vec::new(),
                packets: 0,
            });
        }
        let Some(source) = self.source.as_mut() else { return };
        let decoder = &mut source.decoder;
        let decoded = match guarded(|| decoder.decode(frame.payload(), None)) {
            Some(Ok(decoded)) => decoded,
            Some(Err(_)) => {
                self.counters.errors += 1;
                return;
            }
            None => {
                // A panic in the decoder: rebuild it on the next frame.
                self.counters.errors += 1;
                self.source = None;
                return;
            }
        };
        let channels = usize::from(decoded.channels);
        if !(1..=2).contains(&channels) || decoded.sample_rate == 0 {
            self.counters.errors += 1;
            return;
        }
        if source.rate != Some(decoded.sample_rate) {
            if source.rate.is_some() {
                self.counters.resyncs += 1;
            }
            source.setup(decoded.sample_rate);
        }
        let rate = source.timeline.rate();
        match source.timeline.place(frame.pts()) {
            Placement::Late => {
                self.counters.late += 1;
                return;
            }
            Placement::Anchor => {
                if source.timeline.segments() > 0 {
                    self.counters.resyncs += 1;
                }
                source.timeline.anchor(frame.pts());
            }
            Placement::Gap(samples) => {
                self.counters.concealed_samples += samples;
                let samples = usize::try_from(samples).unwrap_or(usize::MAX).min(rate as usize);
                source.pending.resize(source.pending.len() + samples * CHANNELS, 0.0);
                source.timeline.advance(samples as u64);
            }
            Placement::Continue => {}
        }
        let frames = decoded.frames();
        if channels == 1 {
            source.pending.extend(decoded.samples.iter().flat_map(|&s| [s, s]));
        } else {
            source.pending.extend_from_slice(&decoded.samples[..frames * 2]);
        }
        source.timeline.advance(frames as u64);
        source.resample();
        self.encode(out);
    }

    fn encode(&mut self, out: &mut Vec<MediaFrame>) {
        let Some(source) = self.source.as_mut() else { return };
        let rate = i64::from(source.timeline.rate());
        let mut used = 0;
        while source.ready.len() - used >= OPUS_FRAME * CHANNELS {
            let input = &source.ready[used..used + OPUS_FRAME * CHANNELS];
            used += OPUS_FRAME * CHANNELS;
            let encoder = &mut self.encoder;
            let packet = &mut self.packet;
            let n = match guarded(|| encoder.encode(input, OPUS_FRAME, packet)) {
                Some(Ok(n)) => n,
                Some(Err(_)) => {
                    self.counters.errors += 1;
                    continue;
                }
                None => {
                    self.counters.errors += 1;
                    if let Ok(encoder) = opus_encoder(&self.settings) {
                        self.encoder = encoder;
                    }
                    continue;
                }
            };
            let position48 =
                source.packets * OPUS_FRAME as i64 - self.lookahead - source.resampler_delay;
            source.packets += 1;
            let position = (i128::from(position48) * i128::from(rate)).div_euclid(48_000);
            let position = i64::try_from(position).unwrap_or(i64::MIN);
            source.timeline.forget_before(position);
            let Some(at) = source.timeline.time_of(position) else { continue };
            if at < MediaTime::ZERO {
                continue;
            }
            let head = self
                .head
                .get_or_insert_with(|| CodecConfig::new(Codec::Opus, opus_head(), at))
                .clone();
            let payload = Bytes::copy_from_slice(&self.packet[..n.min(self.packet.len())]);
            out.push(MediaFrame::audio(Codec::Opus, at, payload, Some(head)));
            self.counters.frames_out += 1;
        }
        source.ready.drain(..used);
    }

    /// Stereo samples held between pushes (bounded: less than one resampler chunk at the
    /// source rate plus less than one Opus packet at 48 kHz, plus one resampler output).
    pub fn buffered_samples(&self) -> usize {
        self.source.as_ref().map_or(0, |s| (s.pending.len() + s.ready.len()) / CHANNELS)
    }
}

impl Source {
    /// Prepares for decoded audio at `rate`.
    fn setup(&mut self, rate: u32) {
        self.rate = Some(rate);
        self.timeline = Timeline::new(rate);
        self.pending.clear();
        self.ready.clear();
        self.packets = 0;
        self.resampler = None;
        self.resampler_delay = 0;
        if rate != OPUS_RATE {
            // 1024 source samples a chunk (one AAC frame); fails only for a rate of 0.
            if let Ok(resampler) =
                Fft::<f32>::new(rate as usize, OPUS_RATE as usize, 1024, CHANNELS, FixedSync::Input)
            {
                self.resampler_delay = resampler.output_delay() as i64;
                self.resampled = vec![0.0; resampler.output_frames_max() * CHANNELS];
                self.resampler = Some(resampler);
            }
        }
    }

    /// Moves what can be resampled (or all of it, at 48 kHz) from `pending` to `ready`.
    fn resample(&mut self) {
        let Some(resampler) = self.resampler.as_mut() else {
            self.ready.append(&mut self.pending);
            return;
        };
        let mut offset = 0;
        loop {
            let need = resampler.input_frames_next();
            let available = (self.pending.len() - offset) / CHANNELS;
            if available < need {
                break;
            }
            let capacity = self.resampled.len() / CHANNELS;
            let input = &self.pending[offset..offset + need * CHANNELS];
            let (Ok(input), Ok(mut output)) = (
                InterleavedSlice::new(input, CHANNELS, need),
                InterleavedSlice::new_mut(&mut self.resampled, CHANNELS, capacity),
            ) else {
                break;
            };
            match resampler.process_into_buffer(&input, &mut output, None) {
                Ok((read, written)) => {
                    offset += read.max(1) * CHANNELS;
                    self.ready.extend_from_slice(&self.resampled[..written * CHANNELS]);
                }
                Err(_) => {
                    // Cannot happen with the sizes above; drop the chunk rather than spin.
                    offset += need * CHANNELS;
                }
            }
        }
        self.pending.drain(..offset.min(self.pending.len()));
    }
}

#[cfg(test)]
mod tests {
    use opus_pure::OpusDecoder;

    use super::*;
    use crate::testsignal::{best_snr, tone, tone_i16};
    use crate::{OpusToAac, OpusToAacSettings, Transcoded};

    /// AAC-LC frames of the test tone at `rate` (stereo), from FDK, with their config.
    fn aac_frames(rate: u32, seconds: usize) -> (CodecConfig, Vec<Bytes>) {
        use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams};
        let encoder = Encoder::new(EncoderParams {
            bit_rate: BitRate::Cbr(128_000),
            sample_rate: rate,
            transport: fdk_aac::enc::Transport::Raw,
            channels: ChannelMode::Stereo,
            audio_object_type: AudioObjectType::Mpeg4LowComplexity,
        })
        .expect("an encoder");
        let info = encoder.info().expect("info");
        let asc = Bytes::copy_from_slice(&info.confBuf[..info.confSize as usize]);
        let pcm = tone_i16(rate, 0, rate as usize * seconds);
        let mut out = vec![0u8; 8192];
        let frames = pcm
            .chunks_exact(2048)
            .map(|chunk| {
                let info = encoder.encode(chunk, &mut out).expect("encode");
                Bytes::copy_from_slice(&out[..info.output_size])
            })
            .collect();
        (CodecConfig::new(Codec::Aac, asc, MediaTime::ZERO), frames)
    }

    /// RTMP's millisecond time of AAC frame `n` at `rate`.
    fn rtmp_time(start_ms: i64, n: usize, rate: u32) -> MediaTime {
        MediaTime::from_millis(start_ms + (n as i64 * 1024 * 1000) / i64::from(rate))
    }

    fn decode_opus(frames: &[MediaFrame]) -> Vec<f32> {
        let mut decoder = OpusDecoder::new(48_000, 2).expect("decoder");
        let mut pcm = vec![0f32; 960 * 2];
        let mut out = Vec::new();
        for frame in frames {
            let n = decoder.decode(frame.payload(), 960, &mut pcm).expect("our Opus decodes");
            out.extend_from_slice(&pcm[..n * 2]);
        }
        out
    }

    fn transcode(rate: u32, seconds: usize, start_ms: i64) -> (AacToOpus, Vec<MediaFrame>) {
        let (config, aac) = aac_frames(rate, seconds);
        let mut transcoder = AacToOpus::new(AacToOpusSettings::default()).expect("start");
        let mut out = Vec::new();
        for (n, payload) in aac.iter().enumerate() {
            let frame = MediaFrame::audio(
                Codec::Aac,
                rtmp_time(start_ms, n, rate),
                payload.clone(),
                Some(config.clone()),
            );
            out.extend(transcoder.push(&frame));
            assert!(transcoder.buffered_samples() < 4096, "bounded");
        }
        (transcoder, out)
    }

    #[test]
    fn aac_at_44_1_khz_becomes_20_ms_opus_packets_at_48_khz_without_drift() {
        let start = 2_000;
        let (transcoder, out) = transcode(44_100, 10, start);
        assert_eq!(transcoder.source_rate(), Some(44_100));
        let counters = transcoder.counters();
        assert_eq!((counters.errors, counters.late, counters.resyncs), (0, 0, 0), "{counters:?}");
        // 430 AAC frames = 440,320 samples at 44.1 kHz = 479,260 at 48 kHz: 499 packets,
        // less what the resampler still holds.
        assert!((495..=499).contains(&out.len()), "{} packets", out.len());
        let head = out[0].config().expect("OpusHead").clone();
        assert!(head.record().starts_with(b"OpusHead"));
        for (m, frame) in out.iter().enumerate() {
            assert!(frame.config().is_some_and(|c| c.same(&head)));
            if m > 0 {
                let step = frame.pts() - out[m - 1].pts();
                let step = step.as_nanos();
                assert!((19_999_000..=20_001_000).contains(&step), "packet {m}: {step} ns");
            }
        }
        // After ten seconds, still on the AAC's sample clock (no drift): the last packet is
        // within a sample of where its position puts it.
        let last = out.last().expect("packets");
        let expected_ms = start as f64 + 1000.0 * (960.0 * (out.len() - 1) as f64) / 48_000.0;
        let drift = (last.pts().as_nanos() as f64 / 1e6 - expected_ms).abs();
        assert!(drift < 15.0, "last packet {} vs {expected_ms} ms", last.pts());

        let pcm = decode_opus(&out);
        let reference = tone(48_000, 0, 48_000);
        let (snr, offset) = best_snr(&reference, &pcm[48_000 * 2..], 4_800);
        assert!(snr > 10.0, "SNR {snr:.1} dB at offset {offset}");
    }

    #[test]
    fn aac_at_48_khz_needs_no_resampler_and_lines_up_with_its_times() {
        let (transcoder, out) = transcode(48_000, 4, 1_000);
        assert_eq!(transcoder.source_rate(), Some(48_000));
        // 187 frames × 1024 = 191,488 samples: 199 packets, minus none held.
        assert_eq!(out.len(), 191_488 / 960);
        // Packet m holds position 960 m - 312: the first is stamped 6.5 ms early.
        let first = MediaTime::from_millis(1_000) - MediaTime::from_ticks(312, 48_000);
        assert_eq!(out[0].pts(), first);
        assert_eq!(out[10].pts(), first + MediaTime::from_millis(200));
    }

    #[test]
    fn the_round_trip_through_both_transcoders_keeps_the_tone() {
        // Opus → AAC (WHIP ingest) → Opus (WHEP): what a WebRTC viewer of a WebRTC
        // publisher would hear if the stream carried only the AAC.
        let mut encoder = OpusEncoder::new(48_000, 2, Application::Audio).expect("encoder");
        encoder.bitrate_bps = 96_000;
        let pcm = tone(48_000, 0, 48_000 * 3);
        let mut to_aac = OpusToAac::new(OpusToAacSettings::default()).expect("start");
        let mut to_opus = AacToOpus::new(AacToOpusSettings::default()).expect("start");
        let mut packet = vec![0u8; 4000];
        let mut aac = Vec::new();
        let mut opus = Vec::new();
        for (i, chunk) in pcm.chunks_exact(1920).enumerate() {
            let n = encoder.encode(chunk, 960, &mut packet).expect("encode");
            let at = MediaTime::from_millis(1_000 + 20 * i as i64);
            let frame =
                MediaFrame::audio(Codec::Opus, at, Bytes::copy_from_slice(&packet[..n]), None);
            aac.clear();
            to_aac.push(&frame, &mut aac);
            for t in aac.drain(..) {
                if let Transcoded::Frame(f) = t {
                    opus.extend(to_opus.push(&f));
                }
            }
        }
        let decoded = decode_opus(&opus);
        let (snr, _) = best_snr(&tone(48_000, 0, 48_000), &decoded[48_000 * 2..], 4800);
        assert!(snr > 8.0, "SNR {snr:.1} dB");
    }

    #[test]
    fn garbage_and_config_less_frames_are_counted_and_the_stream_goes_on() {
        let (config, aac) = aac_frames(44_100, 3);
        let mut transcoder = AacToOpus::new(AacToOpusSettings::default()).expect("start");
        let mut out = Vec::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut garbage = 0;
        for (n, payload) in aac.iter().enumerate() {
            let at = rtmp_time(0, n, 44_100);
            let payload = if n % 4 == 2 {
                garbage += 1;
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let mut bytes = payload.to_vec();
                let i = seed as usize % bytes.len();
                bytes[i] ^= 0xff;
                bytes.truncate(1 + (seed >> 20) as usize % bytes.len());
                Bytes::from(bytes)
            } else {
                payload.clone()
            };
            let frame = MediaFrame::audio(Codec::Aac, at, payload, Some(config.clone()));
            out.extend(transcoder.push(&frame));
        }
        transcoder.push(&MediaFrame::audio(Codec::Aac, MediaTime::ZERO, Bytes::new(), None));
        let bogus =
            CodecConfig::new(Codec::Aac, Bytes::from_static(&[0xff, 0xff]), MediaTime::ZERO);
        let at = rtmp_time(0, aac.len(), 44_100);
        transcoder.push(&MediaFrame::audio(Codec::Aac, at, Bytes::from_static(&[1]), Some(bogus)));
        let counters = transcoder.counters();
        assert!(counters.errors >= 2 && counters.errors <= garbage + 2, "{counters:?}");
        // Three seconds in, about three seconds out (what did not decode was filled).
        assert!(out.len() >= 140, "{} packets", out.len());
        assert_eq!(decode_opus(&out).len(), out.len() * 1920);
    }

    #[test]
    fn a_pause_is_filled_and_a_jump_re_anchors() {
        let (config, aac) = aac_frames(48_000, 4);
        let mut transcoder = AacToOpus::new(AacToOpusSettings::default()).expect("start");
        let mut out = Vec::new();
        for (n, payload) in aac.iter().enumerate() {
            // 0.5 s missing after frame 50; an hour's jump at frame 120.
            let mut at = MediaTime::from_ticks(1024 * n as i64, 48_000);
            if (50..55).contains(&n) {
                continue;
            }
            if n >= 120 {
                at = at + MediaTime::from_millis(3_600_000);
            }
            let frame = MediaFrame::audio(Codec::Aac, at, payload.clone(), Some(config.clone()));
            out.extend(transcoder.push(&frame));
        }
        let counters = transcoder.counters();
        assert_eq!((counters.concealed_samples, counters.resyncs), (5 * 1024, 1), "{counters:?}");
        assert!(out.last().is_some_and(|f| f.pts() > MediaTime::from_millis(3_600_000)));
    }
}
