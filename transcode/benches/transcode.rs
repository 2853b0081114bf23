//! The audio transcoders' cost per stream: one second of audio (50 Opus packets, or 43
//! AAC frames at 44.1 kHz) through each, so the time per iteration is the share of one
//! core a stream takes (1 ms per second of audio = 0.1 % of a core).
//!
//! `cargo bench -p zenlive-transcode --bench transcode`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use fdk_aac::enc::{AudioObjectType, BitRate, ChannelMode, Encoder, EncoderParams, Transport};
use opus_pure::{Application, OpusEncoder};
use zenlive_media::{Codec, CodecConfig, MediaFrame, MediaTime};
use zenlive_transcode::{AacToOpus, AacToOpusSettings, OpusToAac, OpusToAacSettings};

/// `seconds` of a stereo signal at `rate`: two tones and a little noise, roughly the
/// density of music (a pure tone would flatter the encoders).
fn signal(rate: u32, seconds: usize) -> Vec<f32> {
    let mut seed = 1u32;
    (0..rate as usize * seconds)
        .flat_map(|i| {
            let t = i as f32 / rate as f32;
            seed = seed.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (seed >> 9) as f32 / (1 << 23) as f32 - 0.5;
            let tau = std::f32::consts::TAU;
            let l = 0.3 * (tau * (220.0 + 200.0 * t) * t).sin() + 0.05 * noise;
            let r = 0.3 * (tau * 523.0 * t).sin() + 0.05 * noise;
            [l, r]
        })
        .collect()
}

fn opus_frames(seconds: usize) -> Vec<MediaFrame> {
    let mut encoder = OpusEncoder::new(48_000, 2, Application::Audio).expect("encoder");
    encoder.bitrate_bps = 64_000;
    let mut packet = vec![0u8; 4000];
    signal(48_000, seconds)
        .chunks_exact(1920)
        .enumerate()
        .map(|(i, chunk)| {
            let n = encoder.encode(chunk, 960, &mut packet).expect("encode");
            let at = MediaTime::from_millis(1_000 + 20 * i as i64);
            MediaFrame::audio(Codec::Opus, at, Bytes::copy_from_slice(&packet[..n]), None)
        })
        .collect()
}

fn aac_frames(rate: u32, seconds: usize) -> Vec<MediaFrame> {
    let encoder = Encoder::new(EncoderParams {
        bit_rate: BitRate::Cbr(128_000),
        sample_rate: rate,
        transport: Transport::Raw,
        channels: ChannelMode::Stereo,
        audio_object_type: AudioObjectType::Mpeg4LowComplexity,
    })
    .expect("encoder");
    let info = encoder.info().expect("info");
    let config = CodecConfig::new(
        Codec::Aac,
        Bytes::copy_from_slice(&info.confBuf[..info.confSize as usize]),
        MediaTime::ZERO,
    );
    let pcm: Vec<i16> = signal(rate, seconds).iter().map(|&s| (s * 32767.0) as i16).collect();
    let mut out = vec![0u8; 8192];
    pcm.chunks_exact(2048)
        .enumerate()
        .map(|(n, chunk)| {
            let size = encoder.encode(chunk, &mut out).expect("encode").output_size;
            let at = MediaTime::from_millis(1_000 + n as i64 * 1024 * 1000 / i64::from(rate));
            let payload = Bytes::copy_from_slice(&out[..size]);
            MediaFrame::audio(Codec::Aac, at, payload, Some(config.clone()))
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    // Warm transcoders (past the first second), then one second of audio per iteration.
    let opus = opus_frames(3);
    c.bench_function("opus_to_aac/1s_48k_stereo", |b| {
        b.iter_batched(
            || {
                let mut transcoder = OpusToAac::new(OpusToAacSettings::default()).expect("start");
                let mut out = Vec::new();
                for frame in &opus[..100] {
                    transcoder.push(frame, &mut out);
                }
                transcoder
            },
            |mut transcoder| {
                let mut out = Vec::with_capacity(64);
                for frame in &opus[100..150] {
                    transcoder.push(black_box(frame), &mut out);
                }
                out
            },
            BatchSize::LargeInput,
        )
    });
    for (rate, name) in
        [(44_100, "aac_to_opus/1s_44.1k_stereo"), (48_000, "aac_to_opus/1s_48k_stereo")]
    {
        let aac = aac_frames(rate, 3);
        let per_second = rate as usize / 1024;
        for complexity in [5, 10] {
            let settings = AacToOpusSettings { complexity, ..AacToOpusSettings::default() };
            c.bench_function(&format!("{name}/complexity_{complexity}"), |b| {
                b.iter_batched(
                    || {
                        let mut transcoder = AacToOpus::new(settings).expect("start");
                        for frame in &aac[..per_second] {
                            transcoder.push(frame);
                        }
                        transcoder
                    },
                    |mut transcoder| {
                        let mut n = 0;
                        for frame in &aac[per_second..2 * per_second] {
                            n += transcoder.push(black_box(frame)).len();
                        }
                        n
                    },
                    BatchSize::LargeInput,
                )
            });
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
