//! Hot paths of the media crate: demuxing FLV tags and muxing H.264 + AAC into MPEG-TS HLS
//! segments. One iteration is one second of a 30 fps, ~2.5 Mbit/s stream.
//! Run: `cargo bench -p zenlive-media --bench mux`.

use std::hint::black_box;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use zenlive_media::flv::{flv_file_header, write_tag, FlvDemuxer, TagType};
use zenlive_media::hls::{HlsConfig, Segmenter};
use zenlive_media::ts::Tracks;

const VIDEO_FRAME: usize = 10_000;
const AUDIO_FRAME: usize = 370;
const AUDIO_FRAMES_PER_SECOND: u32 = 43;

/// One second of FLV tags: 30 video (the first a keyframe) and 43 audio.
fn one_second_of_flv() -> BytesMut {
    let mut out = BytesMut::new();
    out.extend_from_slice(&flv_file_header(true, true));
    for i in 0..30u32 {
        let mut body = vec![if i == 0 { 0x17 } else { 0x27 }, 1, 0, 0, 0];
        body.resize(5 + VIDEO_FRAME, 0x55);
        write_tag(&mut out, TagType::Video, i * 33, &body);
    }
    for i in 0..AUDIO_FRAMES_PER_SECOND {
        let mut body = vec![0xaf, 1];
        body.resize(2 + AUDIO_FRAME, 0x21);
        write_tag(&mut out, TagType::Audio, i * 23, &body);
    }
    out
}

fn flv_demux(c: &mut Criterion) {
    let flv = one_second_of_flv();
    let mut group = c.benchmark_group("flv");
    group.throughput(Throughput::Bytes(flv.len() as u64));
    group.bench_function("demux 1 s of tags", |b| {
        b.iter(|| {
            let mut demuxer = FlvDemuxer::new();
            demuxer.push(&flv);
            let mut tags = 0;
            while let Some(tag) = demuxer.next_tag() {
                black_box(tag.expect("valid tags"));
                tags += 1;
            }
            assert_eq!(tags, 73);
            tags
        })
    });
    group.finish();
}

fn ts_mux(c: &mut Criterion) {
    // Annex B access units: AUD-less IDR with SPS/PPS in front, then P-frames.
    let mut keyframe =
        vec![0, 0, 0, 1, 0x67, 0x64, 0, 0x1f, 0, 0, 0, 1, 0x68, 0xeb, 0, 0, 0, 1, 0x65];
    keyframe.resize(VIDEO_FRAME, 0x88);
    let mut inter = vec![0, 0, 0, 1, 0x41];
    inter.resize(VIDEO_FRAME, 0x9a);
    let mut adts = vec![0xff, 0xf1, 0x50, 0x80, 0, 0, 0xfc];
    adts.resize(7 + AUDIO_FRAME, 0x21);
    let config = HlsConfig { target_duration: Duration::from_secs(2), ..HlsConfig::default() };
    let bytes = 30 * VIDEO_FRAME + AUDIO_FRAMES_PER_SECOND as usize * adts.len();
    let mut group = c.benchmark_group("ts");
    group.throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("mux 1 s of H.264 + AAC into segments", |b| {
        b.iter_batched(
            || Segmenter::new(config.clone(), Tracks { video: true, audio: true }),
            |mut segmenter| {
                let now = SystemTime::now();
                let mut audio = 0;
                for i in 0..30u32 {
                    let frame = if i == 0 { &keyframe } else { &inter };
                    segmenter.push_video(i * 33, 0, i == 0, frame, now);
                    while audio * 1000 / AUDIO_FRAMES_PER_SECOND <= i * 33 {
                        segmenter.push_audio(audio * 1000 / AUDIO_FRAMES_PER_SECOND, &adts, now);
                        audio += 1;
                    }
                }
                segmenter
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(benches, flv_demux, ts_mux);
criterion_main!(benches);
