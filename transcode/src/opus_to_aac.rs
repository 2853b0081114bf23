//! [`OpusToAac`]: a WebRTC publisher's Opus (48 kHz, 20 ms packets as a rule) → AAC-LC
//! at 48 kHz stereo, 1024 samples a frame.
//!
//! Each Opus packet is decoded (to 16-bit stereo, soft-clipped as libopus does) and its
//! samples appended to one run; every 1024 samples go to the AAC encoder. AAC frame `n`
//! starts at run position `1024 n - D`, where `D` is the encoder's delay (2048 samples for
//! FDK's AAC-LC: the first two frames are its priming), and is stamped with the time of
//! that position ([`Timeline`]). Frames that would fall before the stream's time zero are
//! not emitted.
//!
//! Losses: a packet stamped later than the run has reached (more than 10 ms: RTP
//! timestamps of lost packets are missing) first gets the gap filled, by Opus's packet loss
//! concealment for up to [`MAX_CONCEALED`] and by silence beyond it, so the AAC track
//! stays continuous and in sync. A packet that does not decode is counted and skipped: its
//! time is filled when the next packet arrives. Duplicates are dropped, and a jump of more
//! than a second re-anchors the timeline (see [`crate::timeline`]).
//!
//! The [`CodecConfig`] (the encoder's `AudioSpecificConfig`, `0x11 0x90`) is emitted before
//! the first frame; every frame points at it.

use std::time::Instant;

use bytes::Bytes;
use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport};
use opus_pure::OpusDecoder;
use zenlive_media::{Codec, CodecConfig, MediaFrame, MediaTime};

use crate::timeline::{Placement, Timeline};
use crate::{guarded, Counters, TranscodeError, Transcoded, OPUS_RATE};

/// Samples per AAC frame.
pub const AAC_FRAME: usize = 1024;

/// Channels of the output (and of the decoded Opus: a mono packet plays on both).
const CHANNELS: usize = 2;

/// Most samples of a gap filled by Opus's concealment (beyond: silence).
pub const MAX_CONCEALED: u64 = 5 * 960;

/// Most samples one Opus packet decodes to (120 ms).
const MAX_PACKET_SAMPLES: usize = 5760;

/// Settings of an [`OpusToAac`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpusToAacSettings {
    /// AAC bitrate, bits per second (constant).
    pub bitrate: u32,
}

impl Default for OpusToAacSettings {
    fn default() -> Self {
        Self { bitrate: 128_000 }
    }
}

/// One stream's Opus → AAC transcoder. See the module docs.
pub struct OpusToAac {
    decoder: OpusDecoder,
    encoder: Encoder,
    /// The encoder's `AudioSpecificConfig`.
    asc: Bytes,
    /// The encoder's delay in samples.
    delay: i64,
    config: Option<CodecConfig>,
    timeline: Timeline,
    /// Decoded samples not yet encoded (fewer than one AAC frame after each push).
    pcm: Vec<i16>,
    decoded: Vec<i16>,
    encoded: Vec<u8>,
    /// AAC frames the encoder produced.
    units: i64,
    counters: Counters,
}

impl std::fmt::Debug for OpusToAac {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpusToAac").field("counters", &self.counters).finish_non_exhaustive()
    }
}

fn aac_encoder(settings: &OpusToAacSettings) -> Result<(Encoder, Bytes, i64), TranscodeError> {
    let error = |e: fdk_aac::enc::EncoderError| TranscodeError::AacEncoder(e.to_string());
    let encoder = Encoder::new(EncoderParams {
        bit_rate: BitRate::Cbr(settings.bitrate),
        sample_rate: OPUS_RATE,
        transport: Transport::Raw,
        channels: ChannelMode::Stereo,
        audio_object_type: AudioObjectType::Mpeg4LowComplexity,
    })
    .map_err(error)?;
    let info = encoder.info().map_err(error)?;
    let len = (info.confSize as usize).min(info.confBuf.len());
    let asc = Bytes::copy_from_slice(&info.confBuf[..len]);
    Ok((encoder, asc, i64::from(info.nDelay)))
}

fn opus_decoder() -> Result<OpusDecoder, TranscodeError> {
    OpusDecoder::new(OPUS_RATE as i32, CHANNELS).map_err(|e| TranscodeError::Opus(e.to_string()))
}

impl OpusToAac {
    /// A transcoder that has seen nothing yet.
    pub fn new(settings: OpusToAacSettings) -> Result<Self, TranscodeError> {
        let (encoder, asc, delay) = aac_encoder(&settings)?;
        Ok(Self {
            decoder: opus_decoder()?,
            encoder,
            asc,
            delay,
            config: None,
            timeline: Timeline::new(OPUS_RATE),
            pcm: Vec::with_capacity(AAC_FRAME * CHANNELS),
            decoded: vec![0; MAX_PACKET_SAMPLES * CHANNELS],
            encoded: vec![0; 8192],
            units: 0,
            counters: Counters::default(),
        })
    }

    /// The output's `AudioSpecificConfig`.
    pub fn audio_specific_config(&self) -> &Bytes {
        &self.asc
    }

    /// What the transcoder did so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// Takes one Opus frame, appending what it produced to `out`. Frames of other codecs
    /// are ignored.
    pub fn push(&mut self, frame: &MediaFrame, out: &mut Vec<Transcoded>) {
        if frame.codec() != Codec::Opus {
            return;
        }
        let started = Instant::now();
        self.counters.frames_in += 1;
        self.take(frame.pts(), frame.payload(), out);
        self.counters.busy += started.elapsed();
    }

    fn take(&mut self, at: MediaTime, packet: &[u8], out: &mut Vec<Transcoded>) {
        match self.timeline.place(at) {
            Placement::Late => {
                self.counters.late += 1;
                return;
            }
            Placement::Anchor => {
                if self.timeline.segments() > 0 {
                    self.counters.resyncs += 1;
                }
                self.timeline.anchor(at);
            }
            Placement::Gap(samples) => self.conceal(samples, out),
            Placement::Continue => {}
        }
        let decoder = &mut self.decoder;
        let decoded = &mut self.decoded;
        match guarded(|| decoder.decode_s16(packet, MAX_PACKET_SAMPLES, decoded)) {
            Some(Ok(samples)) => {
                let samples = samples.min(MAX_PACKET_SAMPLES);
                self.append_decoded(samples, out);
            }
            Some(Err(_)) => self.counters.errors += 1,
            None => {
                self.counters.errors += 1;
                if let Ok(decoder) = opus_decoder() {
                    self.decoder = decoder;
                }
            }
        }
    }

    /// Fills a gap of `samples`: concealment first, then silence.
    fn conceal(&mut self, samples: u64, out: &mut Vec<Transcoded>) {
        self.counters.concealed_samples += samples;
        let mut left = samples;
        while left >= 960 && samples - left < MAX_CONCEALED {
            let decoder = &mut self.decoder;
            let decoded = &mut self.decoded;
            match guarded(|| decoder.decode_s16(&[], 960, decoded)) {
                Some(Ok(n)) if n > 0 => {
                    let n = n.min(960);
                    self.append_decoded(n, out);
                    left -= n as u64;
                }
                _ => break,
            }
        }
        while left > 0 {
            let n = left.min(MAX_PACKET_SAMPLES as u64) as usize;
            self.decoded[..n * CHANNELS].fill(0);
            self.append_decoded(n, out);
            left -= n as u64;
        }
    }

    /// Appends the first `samples` of `self.decoded` to the run, encoding every full frame.
    fn append_decoded(&mut self, samples: usize, out: &mut Vec<Transcoded>) {
        let mut offset = 0;
        while offset < samples * CHANNELS {
            let room = AAC_FRAME * CHANNELS - self.pcm.len();
            let take = room.min(samples * CHANNELS - offset);
            self.pcm.extend_from_slice(&self.decoded[offset..offset + take]);
            offset += take;
            if self.pcm.len() == AAC_FRAME * CHANNELS {
                self.encode_frame(out);
            }
        }
        self.timeline.advance(samples as u64);
    }

    fn encode_frame(&mut self, out: &mut Vec<Transcoded>) {
        let result = self.encoder.encode(&self.pcm, &mut self.encoded);
        self.pcm.clear();
        let info = match result {
            Ok(info) => info,
            Err(_) => {
                self.counters.errors += 1;
                return;
            }
        };
        if info.output_size == 0 {
            return;
        }
        let position = self.units * AAC_FRAME as i64 - self.delay;
        self.units += 1;
        // The frames already encoded are behind the frame being filled; positions of the
        // next frames only grow.
        self.timeline.forget_before(position);
        let Some(at) = self.timeline.time_of(position) else { return };
        if at < MediaTime::ZERO {
            return;
        }
        let config = match &self.config {
            Some(config) => config.clone(),
            None => {
                let config = CodecConfig::new(Codec::Aac, self.asc.clone(), at);
                out.push(Transcoded::Config(config.clone()));
                self.config = Some(config.clone());
                config
            }
        };
        let payload = Bytes::copy_from_slice(&self.encoded[..info.output_size]);
        out.push(Transcoded::Frame(MediaFrame::audio(Codec::Aac, at, payload, Some(config))));
        self.counters.frames_out += 1;
    }

    /// Samples held between pushes (always fewer than one AAC frame).
    pub fn buffered_samples(&self) -> usize {
        self.pcm.len() / CHANNELS
    }
}

#[cfg(test)]
mod tests {
    use opus_pure::{Application, OpusEncoder};
    use rusty_aac::AacDecoder;
    use zenlive_media::aac::AudioSpecificConfig;

    use super::*;
    use crate::testsignal::{best_snr, tone};

    /// `count` 20 ms Opus packets of the test tone, the first one starting at `from`
    /// packets.
    fn opus_packets(from: usize, count: usize) -> Vec<Bytes> {
        let mut encoder = OpusEncoder::new(48_000, 2, Application::Audio).expect("an Opus encoder");
        encoder.bitrate_bps = 96_000;
        let pcm = tone(48_000, from * 960, count * 960);
        let mut packet = vec![0u8; 4000];
        pcm.chunks_exact(1920)
            .map(|chunk| {
                let n = encoder.encode(chunk, 960, &mut packet).expect("encode");
                Bytes::copy_from_slice(&packet[..n])
            })
            .collect()
    }

    fn opus(at: MediaTime, packet: &Bytes) -> MediaFrame {
        MediaFrame::audio(Codec::Opus, at, packet.clone(), None)
    }

    fn ms(n: i64) -> MediaTime {
        MediaTime::from_millis(n)
    }

    fn frames(out: &[Transcoded]) -> Vec<&MediaFrame> {
        out.iter()
            .filter_map(|o| match o {
                Transcoded::Frame(f) => Some(f),
                Transcoded::Config(_) => None,
            })
            .collect()
    }

    fn decode_aac(asc: &[u8], frames: &[&MediaFrame]) -> Vec<f32> {
        let mut decoder = AacDecoder::with_config_bytes(asc).expect("a decoder");
        let mut pcm = Vec::new();
        for frame in frames {
            let audio = decoder.decode(frame.payload(), None).expect("our AAC decodes");
            assert_eq!((audio.sample_rate, audio.channels), (48_000, 2));
            pcm.extend_from_slice(&audio.samples);
        }
        pcm
    }

    #[test]
    fn opus_becomes_aac_with_the_config_first_and_times_from_the_sample_count() {
        let mut transcoder = OpusToAac::new(OpusToAacSettings::default()).expect("start");
        let start = ms(1_000);
        let mut out = Vec::new();
        // 10 s of 20 ms packets: 500 packets, 480,000 samples, 468 AAC frames of 1024.
        for (i, packet) in opus_packets(0, 500).iter().enumerate() {
            transcoder.push(&opus(start + ms(20 * i as i64), packet), &mut out);
            assert!(transcoder.buffered_samples() < AAC_FRAME, "bounded");
        }
        let Transcoded::Config(config) = &out[0] else { panic!("config first: {:?}", out[0]) };
        let asc = AudioSpecificConfig::parse(config.record()).expect("an ASC");
        assert_eq!((asc.object_type, asc.sample_rate, asc.channels), (2, 48_000, 2));
        let frames = frames(&out);
        assert_eq!(frames.len(), 480_000 / 1024);
        assert!(frames.iter().all(|f| f.config().is_some_and(|c| c.same(config))));
        // Frame n starts at sample 1024 n - 2048 of the run: no drift, no rounding build-up.
        for (n, frame) in frames.iter().enumerate() {
            let expected = start + MediaTime::from_ticks(1024 * n as i64 - 2048, 48_000);
            assert_eq!(frame.pts(), expected, "frame {n}");
        }
        let counters = transcoder.counters();
        assert_eq!((counters.frames_in, counters.frames_out, counters.errors), (500, 468, 0));
        assert!(counters.busy > std::time::Duration::ZERO);

        // What came out is the tone: decoded, it matches the input, two frames late (the
        // delay the timestamps already account for).
        let pcm = decode_aac(config.record(), &frames);
        let reference = tone(48_000, 0, 48_000);
        let (snr, offset) = best_snr(&reference, &pcm[4096 * 2..], 3000);
        assert!(snr > 15.0, "SNR {snr:.1} dB at offset {offset}");
    }

    #[test]
    fn lost_packets_are_concealed_and_the_track_stays_continuous() {
        let mut transcoder = OpusToAac::new(OpusToAacSettings::default()).expect("start");
        let mut out = Vec::new();
        let packets = opus_packets(0, 200);
        for (i, packet) in packets.iter().enumerate() {
            // Lose packets 50..55 (100 ms) and 100..150 (1 s: beyond concealment).
            if (50..55).contains(&i) || (100..150).contains(&i) {
                continue;
            }
            transcoder.push(&opus(ms(500 + 20 * i as i64), packet), &mut out);
        }
        let counters = transcoder.counters();
        assert_eq!(counters.concealed_samples, 55 * 960);
        assert_eq!(counters.resyncs, 0);
        let frames = frames(&out);
        // 200 packets' worth of samples: as if nothing was lost.
        assert_eq!(frames.len(), 200 * 960 / 1024);
        for pair in frames.windows(2) {
            assert_eq!(pair[1].pts().as_ticks(48_000) - pair[0].pts().as_ticks(48_000), 1024);
        }
    }

    #[test]
    fn duplicates_are_dropped_and_jumps_re_anchor() {
        let mut transcoder = OpusToAac::new(OpusToAacSettings::default()).expect("start");
        let mut out = Vec::new();
        let packets = opus_packets(0, 300);
        for (i, packet) in packets[..100].iter().enumerate() {
            transcoder.push(&opus(ms(1_000 + 20 * i as i64), packet), &mut out);
            if i == 10 {
                // A retransmitted duplicate.
                transcoder.push(&opus(ms(1_000 + 20 * i as i64), packet), &mut out);
            }
        }
        // The publisher's clock jumps an hour ahead.
        let jump = ms(3_600_000);
        for (i, packet) in packets[100..].iter().enumerate() {
            transcoder.push(&opus(jump + ms(20 * i as i64), packet), &mut out);
        }
        let counters = transcoder.counters();
        assert_eq!((counters.late, counters.resyncs), (1, 1));
        let frames = frames(&out);
        let last = frames.last().expect("frames");
        // The last frame is placed from the new anchor.
        let run_end = 300 * 960;
        let position = (frames.len() as i64 - 1) * 1024 - 2048;
        let expected = jump + MediaTime::from_ticks(position - 100 * 960, 48_000);
        assert!(position + 1024 <= run_end);
        assert_eq!(last.pts(), expected);
    }

    #[test]
    fn garbage_packets_are_counted_and_the_stream_goes_on() {
        let mut transcoder = OpusToAac::new(OpusToAacSettings::default()).expect("start");
        let mut out = Vec::new();
        let packets = opus_packets(0, 300);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut garbage = 0;
        for (i, packet) in packets.iter().enumerate() {
            let at = ms(20 * i as i64 + 100);
            if i % 3 == 1 {
                // Random bytes of random length (0..=1500), or a valid packet with bits
                // flipped and cut short.
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let bytes: Vec<u8> = if i % 2 == 0 {
                    (0..seed % 1501).map(|k| (seed >> (k % 56)) as u8 ^ k as u8).collect()
                } else {
                    let mut p = packet.to_vec();
                    let at = (seed as usize) % p.len();
                    p[at] ^= 0x5a;
                    p.truncate(1 + (seed as usize >> 8) % p.len());
                    p
                };
                garbage += 1;
                transcoder.push(&opus(at, &Bytes::from(bytes)), &mut out);
            } else {
                transcoder.push(&opus(at, packet), &mut out);
            }
        }
        let counters = transcoder.counters();
        assert_eq!(counters.frames_in, 300);
        assert!(counters.errors <= garbage, "{counters:?}");
        // Whatever the garbage decoded to, the output covers the whole run and decodes.
        let frames = frames(&out);
        assert!(frames.len() >= 270, "{} frames", frames.len());
        let asc = transcoder.audio_specific_config().clone();
        assert_eq!(decode_aac(&asc, &frames).len(), frames.len() * 2048);
    }

    #[test]
    fn an_undecodable_packet_is_counted_and_its_time_filled() {
        let mut transcoder = OpusToAac::new(OpusToAacSettings::default()).expect("start");
        let mut out = Vec::new();
        let packets = opus_packets(0, 100);
        for (i, packet) in packets.iter().enumerate() {
            // A TOC byte promising a frame-count byte that is missing: invalid.
            let packet = if i == 40 { Bytes::from_static(&[0x03]) } else { packet.clone() };
            transcoder.push(&opus(ms(20 * i as i64), &packet), &mut out);
        }
        let counters = transcoder.counters();
        assert_eq!((counters.errors, counters.concealed_samples), (1, 960));
        assert_eq!(frames(&out).len(), 100 * 960 / 1024 - 2, "all but the priming");
    }

    #[test]
    fn other_codecs_are_ignored() {
        let mut transcoder = OpusToAac::new(OpusToAacSettings::default()).expect("start");
        let mut out = Vec::new();
        let aac = MediaFrame::audio(Codec::Aac, ms(0), Bytes::from_static(&[1, 2]), None);
        transcoder.push(&aac, &mut out);
        assert!(out.is_empty());
        assert_eq!(transcoder.counters().frames_in, 0);
    }
}
