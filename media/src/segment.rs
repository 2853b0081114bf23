//! Recording segments, sans-IO: one self-contained, playable file per segment, in fragmented
//! MP4 ([`crate::fmp4`]), MPEG-TS ([`crate::ts`]) or FLV ([`crate::flv`]).
//!
//! A [`SegmentWriter`] takes the frames of one segment and hands out the file's bytes in
//! [`Chunk`]s of about a fragment's worth of media each (the first one starts with the
//! file's header), so its caller writes each chunk with one (vectored) write. fMP4 and FLV
//! chunks hold the frames' own payloads, not copies. A file torn by a crash ends on
//! a chunk boundary at worst, and every complete chunk before it plays. Whether a segment
//! starts on a keyframe, and when to cut, is the caller's decision; a writer only checks
//! that each frame fits the file (its track and configuration exist, its time does not go
//! back) and says so otherwise.

use bytes::{BufMut, Bytes, BytesMut};

use crate::aac::{adts_header, AudioSpecificConfig};
use crate::avc::{to_annexb, AvcDecoderConfig};
use crate::chunk::Chunk;
use crate::flv::flv_file_header;
use crate::flv_frames::{write_config_tag, write_frame_tag_head};
use crate::fmp4::{Fmp4Error, Fmp4Writer};
use crate::frame::{Codec, CodecConfig, FrameKind, MediaFrame};
use crate::time::MediaTime;
use crate::ts::{Tracks, TsMuxer};

/// Bytes reserved at a time for FLV tag headers (about a second of them).
const FLV_HEADS_BLOCK: usize = 4096;

/// A segment's container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentFormat {
    /// Fragmented MP4 (`.mp4`).
    Fmp4,
    /// MPEG-TS (`.ts`).
    Ts,
    /// FLV (`.flv`).
    Flv,
}

impl SegmentFormat {
    /// The file extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Fmp4 => "mp4",
            Self::Ts => "ts",
            Self::Flv => "flv",
        }
    }

    /// Whether this container holds `codec`: fMP4 and FLV (Enhanced RTMP) take H.264, HEVC,
    /// AV1 and VP9 video; MPEG-TS here takes H.264 only; all take AAC.
    pub fn carries(self, codec: Codec) -> bool {
        match self {
            Self::Fmp4 => crate::fmp4::carries(codec),
            Self::Ts => matches!(codec, Codec::H264 | Codec::Aac),
            Self::Flv => crate::flv_frames::carries(codec) && codec != Codec::Amf0,
        }
    }
}

/// Why a segment could not be started or a frame not written to it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SegmentError {
    /// Neither an H.264 nor an AAC configuration: nothing to record.
    #[error("no track to write (no H.264 or AAC configuration)")]
    NoTracks,
    /// A configuration does not parse.
    #[error("bad {0} configuration: {1}")]
    BadConfig(&'static str, String),
    /// The frame's track is not in this segment, or its configuration is not the
    /// segment's: it belongs in a new segment.
    #[error("the segment has no {0} track with this frame's configuration")]
    TrackMismatch(&'static str),
    /// The frame's decode time goes back: it belongs in a new segment.
    #[error("{0} time went backwards")]
    Backwards(&'static str),
    /// A frame this container cannot carry.
    #[error("bad frame: {0}")]
    BadFrame(String),
}

impl From<Fmp4Error> for SegmentError {
    fn from(e: Fmp4Error) -> Self {
        match e {
            Fmp4Error::NoTracks => Self::NoTracks,
            Fmp4Error::BadConfig(what, why) => Self::BadConfig(what, why),
            Fmp4Error::NoTrack(kind) => Self::TrackMismatch(kind),
            Fmp4Error::Backwards { kind, .. } => Self::Backwards(kind),
            Fmp4Error::Encode(why) => Self::BadFrame(why),
            Fmp4Error::TooLarge => Self::BadFrame(Fmp4Error::TooLarge.to_string()),
        }
    }
}

/// The container-specific part of a writer.
#[derive(Debug)]
enum Container {
    Fmp4(Fmp4Writer),
    Ts { muxer: TsMuxer, avc: Option<AvcDecoderConfig>, aac: Option<AudioSpecificConfig> },
    Flv,
}

/// Writes one segment file. See the module docs.
#[derive(Debug)]
pub struct SegmentWriter {
    container: Container,
    video: Option<CodecConfig>,
    audio: Option<CodecConfig>,
    /// Bytes the muxer writes itself (TS packets; FLV tag headers), not yet in `gathered`.
    muxed: BytesMut,
    /// The chunk being gathered (TS and FLV; fMP4 gathers samples itself).
    gathered: Chunk,
    /// The file's header, until it goes out with the first chunk.
    header: Option<Bytes>,
    fragment: MediaTime,
    chunk_start: Option<MediaTime>,
    last: [Option<MediaTime>; 2],
    first: Option<MediaTime>,
    end: MediaTime,
    scratch: Vec<u8>,
}

fn track_index(kind: FrameKind) -> usize {
    usize::from(kind == FrameKind::Audio)
}

impl SegmentWriter {
    /// A segment in `format` with the tracks whose configurations are given (the video
    /// codecs [`SegmentFormat::carries`], AAC audio; others are left out), handing out
    /// chunks of about `fragment` of media.
    pub fn new(
        format: SegmentFormat,
        video: Option<&CodecConfig>,
        audio: Option<&CodecConfig>,
        fragment: MediaTime,
    ) -> Result<Self, SegmentError> {
        let video =
            video.filter(|c| c.codec().kind() == FrameKind::Video && format.carries(c.codec()));
        let video = video.cloned();
        let audio = audio.filter(|c| c.codec() == Codec::Aac).cloned();
        if video.is_none() && audio.is_none() {
            return Err(SegmentError::NoTracks);
        }
        let (container, header) = match format {
            SegmentFormat::Fmp4 => {
                let writer = Fmp4Writer::new(video.as_ref(), audio.as_ref(), fragment)?;
                let init = writer.init();
                (Container::Fmp4(writer), Some(init))
            }
            SegmentFormat::Ts => {
                let avc = video
                    .as_ref()
                    .map(|c| AvcDecoderConfig::parse(c.record()))
                    .transpose()
                    .map_err(|e| SegmentError::BadConfig("H.264", e.to_string()))?;
                let aac = audio
                    .as_ref()
                    .map(|c| AudioSpecificConfig::parse(c.record()))
                    .transpose()
                    .map_err(|e| SegmentError::BadConfig("AAC", e.to_string()))?;
                let mut muxer = TsMuxer::new(Tracks { video: avc.is_some(), audio: aac.is_some() });
                let mut tables = Vec::new();
                muxer.write_tables(&mut tables);
                (Container::Ts { muxer, avc, aac }, Some(Bytes::from(tables)))
            }
            // FLV's header carries the configurations as tags stamped with the first
            // frame's time, so it is written when that frame comes.
            SegmentFormat::Flv => (Container::Flv, None),
        };
        Ok(Self {
            container,
            video,
            audio,
            muxed: BytesMut::new(),
            gathered: Chunk::new(),
            header,
            fragment,
            chunk_start: None,
            last: [None, None],
            first: None,
            end: MediaTime::ZERO,
            scratch: Vec::new(),
        })
    }

    /// The segment's video configuration, if it has a video track.
    pub fn video(&self) -> Option<&CodecConfig> {
        self.video.as_ref()
    }

    /// The segment's audio configuration, if it has an audio track.
    pub fn audio(&self) -> Option<&CodecConfig> {
        self.audio.as_ref()
    }

    /// Whether `frame` can go into this segment: its track exists with the frame's
    /// configuration, and its time does not go back.
    pub fn accepts(&self, frame: &MediaFrame) -> Result<(), SegmentError> {
        let kind = frame.kind();
        let mine = match kind {
            FrameKind::Video => self.video.as_ref(),
            FrameKind::Audio => self.audio.as_ref(),
            FrameKind::Data => return Ok(()),
        };
        match (mine, frame.config()) {
            (Some(mine), Some(theirs)) if mine == theirs => {}
            _ => return Err(SegmentError::TrackMismatch(kind.as_str())),
        }
        let last = self.last[track_index(kind)];
        let backwards = match kind {
            FrameKind::Video => last.is_some_and(|l| frame.dts() <= l),
            _ => last.is_some_and(|l| frame.dts() < l),
        };
        if backwards || frame.dts() < MediaTime::ZERO {
            return Err(SegmentError::Backwards(kind.as_str()));
        }
        Ok(())
    }

    /// Adds `frame` (script data is left out); answers a chunk to write when one is
    /// complete. On an error nothing was written and the frame belongs in another segment.
    pub fn push(&mut self, frame: &MediaFrame) -> Result<Option<Chunk>, SegmentError> {
        if frame.kind() == FrameKind::Data {
            return Ok(None);
        }
        self.accepts(frame)?;
        let dts = frame.dts();
        let chunk = match &mut self.container {
            Container::Fmp4(writer) => writer.push(frame)?,
            Container::Ts { muxer, avc, aac } => {
                write_ts(
                    muxer,
                    avc.as_ref(),
                    aac.as_ref(),
                    frame,
                    &mut self.muxed,
                    &mut self.scratch,
                )?;
                None
            }
            Container::Flv => {
                if self.first.is_none() {
                    self.muxed.extend_from_slice(&flv_file_header(
                        self.audio.is_some(),
                        self.video.is_some(),
                    ));
                    for config in self.video.iter().chain(&self.audio) {
                        let stamped =
                            CodecConfig::new(config.codec(), config.record().clone(), dts);
                        write_config_tag(&mut self.muxed, &stamped);
                    }
                }
                // Tag headers are small: room for many at once, so they do not each
                // allocate.
                if self.muxed.capacity() - self.muxed.len() < 64 {
                    self.muxed.reserve(FLV_HEADS_BLOCK);
                }
                if let Some(previous) = write_frame_tag_head(&mut self.muxed, frame) {
                    self.gathered.push(self.muxed.split().freeze());
                    self.gathered.push(frame.payload().clone());
                    self.muxed.put_u32(previous);
                }
                None
            }
        };
        self.last[track_index(frame.kind())] = Some(dts);
        self.first.get_or_insert(dts);
        self.end = self.end.max(dts);
        let chunk = match chunk {
            Some(fragment) => Some(fragment),
            None => self.chunk_due(dts),
        };
        Ok(chunk.map(|c| self.with_header(c)))
    }

    /// The gathered chunk (TS, FLV) when it spans a fragment's worth of media.
    fn chunk_due(&mut self, dts: MediaTime) -> Option<Chunk> {
        if matches!(self.container, Container::Fmp4(_)) {
            return None;
        }
        let start = *self.chunk_start.get_or_insert(dts);
        if dts - start < self.fragment || (self.muxed.is_empty() && self.gathered.is_empty()) {
            return None;
        }
        self.chunk_start = Some(dts);
        Some(self.take_gathered())
    }

    /// Everything gathered so far, as one chunk.
    fn take_gathered(&mut self) -> Chunk {
        let mut chunk = self.gathered.take();
        chunk.push(self.muxed.split().freeze());
        chunk
    }

    fn with_header(&mut self, mut chunk: Chunk) -> Chunk {
        if let Some(header) = self.header.take() {
            chunk.prepend(header);
        }
        chunk
    }

    /// Ends the segment; answers its last chunk, if any. `next_video` is the decode time
    /// of the frame that starts the next segment, when there is one: the last video
    /// frame lasts until then.
    pub fn finish(&mut self, next_video: Option<MediaTime>) -> Result<Option<Chunk>, SegmentError> {
        if let Some(next) = next_video {
            self.end = self.end.max(next);
        }
        let last = match &mut self.container {
            Container::Fmp4(writer) => {
                let last = writer.finish(next_video)?;
                self.end = self.end.max(self.first.unwrap_or(MediaTime::ZERO) + writer.duration());
                last
            }
            _ if self.muxed.is_empty() && self.gathered.is_empty() => None,
            _ => Some(self.take_gathered()),
        };
        Ok(last.map(|c| self.with_header(c)))
    }

    /// The first frame's decode time, once there is one.
    pub fn start(&self) -> Option<MediaTime> {
        self.first
    }

    /// The media time from the first frame to the end known so far (the last frame's
    /// decode time; after [`SegmentWriter::finish`], the segment's end).
    pub fn duration(&self) -> MediaTime {
        self.first.map_or(MediaTime::ZERO, |first| self.end - first)
    }
}

/// One frame as TS packets into `out`.
fn write_ts(
    muxer: &mut TsMuxer,
    avc: Option<&AvcDecoderConfig>,
    aac: Option<&AudioSpecificConfig>,
    frame: &MediaFrame,
    out: &mut BytesMut,
    scratch: &mut Vec<u8>,
) -> Result<(), SegmentError> {
    const MASK: i64 = (1 << 33) - 1;
    let ticks = |t: MediaTime| (t.as_ticks(90_000) & MASK) as u64;
    scratch.clear();
    match frame.kind() {
        FrameKind::Video => {
            let avc = avc.ok_or(SegmentError::TrackMismatch("video"))?;
            to_annexb(avc, frame.payload(), frame.keyframe(), scratch)
                .map_err(|e| SegmentError::BadFrame(e.to_string()))?;
            out.reserve(crate::ts::pes_size_bound(scratch.len()));
            muxer.write_video(
                out,
                ticks(frame.pts()),
                ticks(frame.dts()),
                frame.keyframe(),
                scratch,
            );
        }
        FrameKind::Audio => {
            let aac = aac.ok_or(SegmentError::TrackMismatch("audio"))?;
            let header = adts_header(aac, frame.payload().len())
                .map_err(|e| SegmentError::BadFrame(e.to_string()))?;
            scratch.extend_from_slice(&header);
            scratch.extend_from_slice(frame.payload());
            out.reserve(crate::ts::pes_size_bound(scratch.len()));
            muxer.write_audio(out, ticks(frame.pts()), scratch);
        }
        FrameKind::Data => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use mpeg2ts::ts::{ReadTsPacket, TsPacketReader, TsPayload};

    use super::*;
    use crate::flv::{FlvDemuxer, TagType};
    use crate::testdata::{aac_config, audio, av, avc_config, video};

    const SECOND: MediaTime = MediaTime::from_millis(1000);

    fn write(format: SegmentFormat, frames: &[MediaFrame]) -> (SegmentWriter, Vec<Bytes>) {
        let (v, a) = (avc_config(), aac_config());
        let mut writer = SegmentWriter::new(format, Some(&v), Some(&a), SECOND).expect("writer");
        let mut chunks = Vec::new();
        for frame in frames {
            chunks.extend(writer.push(frame).expect("push").map(|c| c.to_bytes()));
        }
        chunks.extend(writer.finish(None).expect("finish").map(|c| c.to_bytes()));
        (writer, chunks)
    }

    #[test]
    fn every_format_hands_out_about_a_chunk_per_second_header_first() {
        let frames = av(&avc_config(), &aac_config(), 2000, 3);
        for format in [SegmentFormat::Fmp4, SegmentFormat::Ts, SegmentFormat::Flv] {
            let (writer, chunks) = write(format, &frames);
            assert!((3..=4).contains(&chunks.len()), "{format:?}: {} chunks", chunks.len());
            let head = &chunks[0][..];
            match format {
                SegmentFormat::Fmp4 => assert_eq!(&head[4..8], b"ftyp"),
                SegmentFormat::Ts => assert_eq!(head[0], 0x47),
                SegmentFormat::Flv => assert_eq!(&head[..3], b"FLV"),
            }
            assert_eq!(writer.start(), Some(MediaTime::from_millis(2000)));
            assert!(writer.duration() >= MediaTime::from_millis(2960), "{format:?}");
        }
    }

    #[test]
    fn fmp4_and_flv_chunks_hold_the_frames_own_payloads_not_copies() {
        let frames = av(&avc_config(), &aac_config(), 0, 3);
        for format in [SegmentFormat::Fmp4, SegmentFormat::Flv] {
            let (v, a) = (avc_config(), aac_config());
            let mut writer =
                SegmentWriter::new(format, Some(&v), Some(&a), SECOND).expect("writer");
            let mut parts = Vec::new();
            for frame in &frames {
                if let Some(chunk) = writer.push(frame).expect("push") {
                    parts.extend(chunk.parts().iter().map(|p| p.as_ptr()));
                }
            }
            let last = writer.finish(None).expect("finish").expect("a last chunk");
            parts.extend(last.parts().iter().map(|p| p.as_ptr()));
            for frame in &frames {
                assert!(
                    parts.contains(&frame.payload().as_ptr()),
                    "{format:?}: a frame's payload was copied"
                );
            }
        }
    }

    #[test]
    fn ts_reads_back_with_the_streams_clock() {
        let frames = av(&avc_config(), &aac_config(), 7000, 2);
        let (_, chunks) = write(SegmentFormat::Ts, &frames);
        let bytes: Vec<u8> = chunks.concat();
        let mut reader = TsPacketReader::new(&bytes[..]);
        let mut first_video_pts = None;
        while let Some(packet) = reader.read_ts_packet().expect("valid TS") {
            if let Some(TsPayload::PesStart(pes)) = &packet.payload {
                if packet.header.pid.as_u16() == crate::ts::VIDEO_PID {
                    first_video_pts.get_or_insert(pes.header.pts.map(|t| t.as_u64()));
                }
            }
        }
        assert_eq!(first_video_pts, Some(Some(7000 * 90)));
    }

    #[test]
    fn flv_starts_with_configurations_stamped_at_the_first_frame() {
        let frames = av(&avc_config(), &aac_config(), 4000, 2);
        let (_, chunks) = write(SegmentFormat::Flv, &frames);
        let mut demuxer = FlvDemuxer::new();
        demuxer.push(&chunks.concat());
        let tags: Vec<_> =
            std::iter::from_fn(|| demuxer.next_tag()).map(|t| t.expect("tag")).collect();
        assert_eq!((tags[0].tag_type, tags[0].body[1]), (TagType::Video, 0), "AVC sequence header");
        assert_eq!((tags[1].tag_type, tags[1].body[1]), (TagType::Audio, 0), "AAC sequence header");
        assert!(tags[..3].iter().all(|t| t.timestamp_ms == 4000));
        assert_eq!(tags.len(), 2 + frames.len());
    }

    #[test]
    fn odd_input_is_refused_without_writing() {
        let (v, a) = (avc_config(), aac_config());
        assert_eq!(
            SegmentWriter::new(SegmentFormat::Ts, None, None, SECOND).expect_err("nothing"),
            SegmentError::NoTracks
        );
        for format in [SegmentFormat::Fmp4, SegmentFormat::Ts, SegmentFormat::Flv] {
            let mut writer =
                SegmentWriter::new(format, Some(&v), None, SECOND).expect("video only");
            writer.push(&video(&v, 1000, 0, true)).expect("key");
            // Audio the segment has no track for, a new configuration, time going back,
            // a frame without configuration.
            let refused = [
                audio(&a, MediaTime::from_millis(1010)),
                video(&avc_config(), 1040, 0, false),
                video(&v, 960, 0, false),
                MediaFrame::video(
                    Codec::H264,
                    SECOND + SECOND,
                    SECOND + SECOND,
                    false,
                    Bytes::new(),
                    None,
                ),
            ];
            assert_eq!(
                writer.push(&refused[0]),
                Err(SegmentError::TrackMismatch("audio")),
                "{format:?}"
            );
            // Equal configuration bytes are the same configuration.
            writer.push(&refused[1]).expect("an equal configuration is no change");
            assert_eq!(
                writer.push(&refused[2]),
                Err(SegmentError::Backwards("video")),
                "{format:?}"
            );
            assert_eq!(
                writer.push(&refused[3]),
                Err(SegmentError::TrackMismatch("video")),
                "{format:?}"
            );
            let changed = CodecConfig::new(
                Codec::H264,
                Bytes::from_static(&[1, 0x4d, 0, 0x1f, 0xff, 0xe0, 0]),
                MediaTime::ZERO,
            );
            let new_config = video(&changed, 2000, 0, true);
            assert_eq!(writer.push(&new_config), Err(SegmentError::TrackMismatch("video")));
            writer.finish(None).expect("finish");
        }
    }
}
