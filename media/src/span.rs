//! The stretch of the stream's clock a finished segment file covers, read back from the
//! file itself, sans-IO: bytes in, times out.
//!
//! A recorder knows each segment's start and duration as it writes it and indexes them
//! when it closes the segment. A segment cut short by a crash and finished at the next
//! start ([`crate::torn`]) lost that: [`media_span`] reads it from the media instead, the
//! way the writer ([`crate::segment`]) measured it:
//!
//! - fragmented MP4 ([`crate::fmp4_cut`]): the first sample's decode time to the end of the
//!   last sample (its decode time plus its duration), the video track's when there is one;
//! - MPEG-TS: the first to the last PES decode time (PTS when there is no DTS) of the video
//!   stream, else of every stream, on the 90 kHz clock (one 33-bit wrap is followed);
//! - FLV: the first to the last audio or video tag's timestamp.
//!
//! TS and FLV carry no frame durations, so their span ends at the last frame's decode time,
//! as the writer's own [`crate::segment::SegmentWriter::duration`] does for them.
//!
//! Hostile bytes never panic: anything that does not read as media ends the reading there,
//! and a file with no timed frame has no span (`None`).

use bytes::Bytes;
use mpeg2ts::ts::{ReadTsPacket, TsPacketReader, TsPayload};

use crate::flv::{FlvDemuxer, TagType};
use crate::fmp4_cut::Fmp4File;
use crate::segment::SegmentFormat;
use crate::time::MediaTime;

/// What part of the stream's clock a segment covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The first frame's decode time.
    pub start: MediaTime,
    /// From the first frame to the segment's end (see the module docs).
    pub duration: MediaTime,
}

/// The span of a whole segment file in `format`; `None` when it holds no timed frame.
pub fn media_span(format: SegmentFormat, file: &Bytes) -> Option<Span> {
    match format {
        SegmentFormat::Fmp4 => fmp4(file),
        SegmentFormat::Ts => ts(file),
        SegmentFormat::Flv => flv(file),
    }
}

fn fmp4(file: &Bytes) -> Option<Span> {
    let read = Fmp4File::read(file).ok()?;
    let track = read.tracks.iter().position(|t| t.video).unwrap_or(0);
    let count = read.sample_count(track);
    let (start, _, _) = read.sample(track, 0)?;
    let end = (0..count)
        .filter_map(|n| read.sample(track, n))
        .map(|(dts, duration, _)| dts + duration)
        .max()?;
    Some(Span { start, duration: end - start })
}

/// The 90 kHz clock's wrap.
const TS_WRAP: u64 = 1 << 33;

/// A stream's first 90 kHz time and how far past it the furthest went.
type Seen = (u64, u64);

fn ts(file: &Bytes) -> Option<Span> {
    let mut reader = TsPacketReader::new(&file[..]);
    // (first, furthest after it) per kind: video, and any stream.
    let (mut video, mut any): (Option<Seen>, Option<Seen>) = (None, None);
    while let Ok(Some(packet)) = reader.read_ts_packet() {
        let Some(TsPayload::PesStart(pes)) = packet.payload else { continue };
        let Some(at) = pes.header.dts.or(pes.header.pts).map(|t| t.as_u64()) else { continue };
        let note = |seen: &mut Option<Seen>| {
            let (first, furthest) = seen.get_or_insert((at, 0));
            *furthest = (*furthest).max((at + TS_WRAP - *first) % TS_WRAP);
        };
        if pes.header.stream_id.is_video() {
            note(&mut video);
        }
        note(&mut any);
    }
    let (first, furthest) = video.or(any)?;
    let ticks = |t: u64| MediaTime::from_ticks(t as i64, 90_000);
    Some(Span { start: ticks(first), duration: ticks(furthest) })
}

fn flv(file: &Bytes) -> Option<Span> {
    let mut demuxer = FlvDemuxer::new();
    demuxer.push(file);
    let (mut first, mut last): (Option<u32>, u32) = (None, 0);
    while let Some(Ok(tag)) = demuxer.next_tag() {
        if matches!(tag.tag_type, TagType::Audio | TagType::Video) {
            let first = *first.get_or_insert(tag.timestamp_ms);
            last = last.max(tag.timestamp_ms.max(first));
        }
    }
    let first = first?;
    let ms = |t: u32| MediaTime::from_millis(i64::from(t));
    Some(Span { start: ms(first), duration: ms(last - first) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::segment::SegmentWriter;
    use crate::testdata::{aac_config, av, avc_config};

    /// A whole segment of `seconds` from `start_ms`, as the recorder writes it, and the
    /// writer's own start and duration.
    fn segment(format: SegmentFormat, start_ms: i64, seconds: i64) -> (Bytes, Span) {
        let (v, a) = (avc_config(), aac_config());
        let fragment = MediaTime::from_millis(1000);
        let mut writer = SegmentWriter::new(format, Some(&v), Some(&a), fragment).expect("writer");
        let mut out = Vec::new();
        for frame in av(&v, &a, start_ms, seconds) {
            if let Some(chunk) = writer.push(&frame).expect("push") {
                out.extend_from_slice(&chunk.to_bytes());
            }
        }
        if let Some(chunk) = writer.finish(None).expect("finish") {
            out.extend_from_slice(&chunk.to_bytes());
        }
        let span = Span { start: writer.start().expect("frames"), duration: writer.duration() };
        (Bytes::from(out), span)
    }

    #[test]
    fn every_format_reads_back_the_span_its_writer_measured() {
        for format in [SegmentFormat::Fmp4, SegmentFormat::Ts, SegmentFormat::Flv] {
            let (file, written) = segment(format, 5_000, 4);
            let read = media_span(format, &file).expect("a span");
            assert_eq!(read.start, written.start, "{format:?}");
            // fMP4 knows the last frame's duration; TS and FLV end at its decode time.
            let slack = (written.duration - read.duration).as_millis().abs();
            assert!(slack <= 40, "{format:?}: read {read:?}, written {written:?}");
        }
    }

    #[test]
    fn a_torn_file_reads_up_to_what_is_whole() {
        for format in [SegmentFormat::Fmp4, SegmentFormat::Ts, SegmentFormat::Flv] {
            let (file, written) = segment(format, 0, 4);
            let kept = crate::torn::whole_prefix(format, file.len() as u64 - 100, |at, buf| {
                buf.copy_from_slice(&file[at as usize..at as usize + buf.len()]);
                Ok::<_, ()>(())
            })
            .expect("scanned");
            let read = media_span(format, &file.slice(..kept as usize)).expect("a span");
            assert_eq!(read.start, written.start, "{format:?}");
            assert!(read.duration < written.duration, "{format:?}: {read:?}");
            assert!(read.duration.as_millis() >= 2_000, "{format:?}: {read:?}");
        }
    }

    #[test]
    fn hostile_bytes_have_no_span_and_never_panic() {
        let garbage: Vec<Bytes> = vec![
            Bytes::new(),
            Bytes::from_static(b"FLV\x01\x05\0\0\0\x09\0\0\0\0\x09\xff\xff\xff"),
            Bytes::from(vec![0x47; 188 * 3]),
            Bytes::from_static(b"\0\0\0\x08ftyp\xff\xff\xff\xffmoov"),
            Bytes::from((0..4096u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<u8>>()),
        ];
        for format in [SegmentFormat::Fmp4, SegmentFormat::Ts, SegmentFormat::Flv] {
            for bytes in &garbage {
                assert_eq!(media_span(format, bytes), None, "{format:?} {bytes:?}");
            }
        }
    }
}
