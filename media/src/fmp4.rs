//! A fragmented MP4 writer for one video track (H.264 `avc1`, HEVC `hvc1`, AV1 `av01` or
//! VP9 `vp09`) and one AAC track, sans-IO: frames in, bytes out.
//!
//! A file is an init segment (`ftyp` + `moov` with `mvex`) followed by fragments (`moof` +
//! `mdat`), each handed out as one [`Chunk`] (the `moof`, then the samples' own buffers:
//! no media is copied) so that its writer does one vectored write per fragment:
//! a file torn by a crash loses at most its last fragment, and every complete fragment
//! before it plays. The boxes are `mp4-atom`'s; only their values are decided here.
//!
//! Times: video runs at 90 kHz, audio at its sample rate. Decode times are the frames' own
//! on the stream's clock (`tfdt` is not reset per file), so files cut from one stream
//! continue each other's timeline. A sample's duration is the gap to the next sample of its
//! track; the last one of a file gets the gap to the frame that starts the next file (see
//! [`Fmp4Writer::finish`]), or the track's usual frame duration.

use bytes::{BufMut, Bytes, BytesMut};
use mp4_atom::{
    Atom, Audio, Av01, Av1c, Avc1, Avcc, Dinf, Dref, Encode, Esds, Ftyp, Hdlr, Hvc1, Hvcc, Mdhd,
    Mdia, Mfhd, Minf, Moof, Moov, Mp4a, Mvex, Mvhd, Smhd, Stbl, Stco, Stsd, Tfdt, Tfhd, Tkhd, Traf,
    Trak, Trex, Trun, TrunEntry, Url, Visual, Vmhd, Vp09, VpcC,
};

use crate::aac::AudioSpecificConfig;
use crate::avc::AvcDecoderConfig;
use crate::chunk::Chunk;
use crate::frame::{Codec, CodecConfig, FrameKind, MediaFrame};
use crate::time::MediaTime;

/// The video track's timescale (ticks per second).
pub const VIDEO_TIMESCALE: u32 = 90_000;
/// Track id of the video track.
const VIDEO_TRACK: u32 = 1;
/// Track id of the audio track.
const AUDIO_TRACK: u32 = 2;
/// The duration a lone video sample gets when no frame interval is known yet (30 fps).
const DEFAULT_VIDEO_DURATION: u32 = VIDEO_TIMESCALE / 30;
/// `sample_flags` of a sync sample: depends on no other sample.
const SYNC_SAMPLE: u32 = 0x0200_0000;
/// `sample_flags` of a non-sync sample: depends on others, `sample_is_non_sync_sample`.
const NON_SYNC_SAMPLE: u32 = 0x0101_0000;
/// An `mdat` box's header: its 32-bit size and its type.
const MDAT_HEADER: usize = 8;

/// Why a file could not be started or a frame not written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fmp4Error {
    /// A track's codec configuration does not parse.
    #[error("bad {0} configuration: {1}")]
    BadConfig(&'static str, String),
    /// Neither track is configured: there is nothing to describe.
    #[error("no track to write (no H.264 or AAC configuration)")]
    NoTracks,
    /// A frame whose track this file does not have, or whose codec MP4 here cannot carry.
    #[error("the file has no {0} track for this frame")]
    NoTrack(&'static str),
    /// A frame whose decode time is before the previous one of its track, or negative.
    #[error("{kind} decode time {at} is before the track's last ({last})")]
    Backwards {
        /// `audio` or `video`.
        kind: &'static str,
        /// The frame's decode time.
        at: MediaTime,
        /// The track's last decode time.
        last: MediaTime,
    },
    /// A fragment's media does not fit the 32-bit sizes and offsets it is described with
    /// (2 GiB; a fragment is about a second).
    #[error("a fragment too large to describe")]
    TooLarge,
    /// `mp4-atom` refused to encode a box.
    #[error("mp4 encoding: {0}")]
    Encode(String),
}

impl From<mp4_atom::Error> for Fmp4Error {
    fn from(e: mp4_atom::Error) -> Self {
        Self::Encode(e.to_string())
    }
}

/// One sample waiting for its fragment (times in its track's timescale).
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) dts: i64,
    pub(crate) cts: i64,
    pub(crate) sync: bool,
    pub(crate) data: Bytes,
    /// Known once the track's next sample (or the file's end) is.
    pub(crate) duration: Option<u32>,
}

/// A track's state in one file.
#[derive(Debug)]
struct Track {
    id: u32,
    timescale: u32,
    kind: &'static str,
    samples: Vec<Sample>,
    /// The last duration computed, the guess for a last sample nobody follows.
    usual: u32,
    last_dts: Option<i64>,
    /// When its first sample was decoded, and when its last one ends (ticks).
    first_dts: Option<i64>,
    end: i64,
}

impl Track {
    fn new(id: u32, timescale: u32, kind: &'static str, usual: u32) -> Self {
        Self {
            id,
            timescale,
            kind,
            samples: Vec::new(),
            usual,
            last_dts: None,
            first_dts: None,
            end: 0,
        }
    }

    fn push(&mut self, frame: &MediaFrame) -> Result<(), Fmp4Error> {
        let dts = frame.dts().as_ticks(self.timescale);
        let last = self.last_dts.unwrap_or(0);
        // Video decode times must increase; audio's may repeat (a zero-length sample).
        let backwards = if self.kind == "video" { dts <= last } else { dts < last };
        if dts < 0 || (self.last_dts.is_some() && backwards) {
            return Err(Fmp4Error::Backwards {
                kind: self.kind,
                at: frame.dts(),
                last: MediaTime::from_ticks(last, self.timescale),
            });
        }
        if let Some(previous) = self.samples.last_mut().filter(|s| s.duration.is_none()) {
            let gap = u32::try_from(dts - previous.dts).unwrap_or(u32::MAX);
            previous.duration = Some(gap);
            if gap > 0 {
                self.usual = gap;
            }
        }
        let pts = frame.pts().as_ticks(self.timescale);
        self.samples.push(Sample {
            dts,
            cts: pts - dts,
            sync: frame.kind() == FrameKind::Audio || frame.keyframe(),
            data: frame.payload().clone(),
            duration: None,
        });
        self.first_dts.get_or_insert(dts);
        self.last_dts = Some(dts);
        Ok(())
    }

    /// Gives the last sample its duration: the gap to `next` (ticks), or the usual one.
    fn close(&mut self, next: Option<i64>) {
        let usual = self.usual;
        if let Some(last) = self.samples.last_mut().filter(|s| s.duration.is_none()) {
            let gap = next.and_then(|n| u32::try_from(n - last.dts).ok()).filter(|&g| g > 0);
            last.duration = Some(gap.unwrap_or(usual));
        }
    }

    /// The samples whose durations are known, taken out.
    fn ready(&mut self) -> Vec<Sample> {
        let known = self.samples.iter().take_while(|s| s.duration.is_some()).count();
        let ready: Vec<Sample> = self.samples.drain(..known).collect();
        if let Some(last) = ready.last() {
            self.end = last.dts + i64::from(last.duration.unwrap_or(0));
        }
        ready
    }

    fn duration(&self) -> MediaTime {
        let Some(first) = self.first_dts else { return MediaTime::ZERO };
        MediaTime::from_ticks(self.end.max(first) - first, self.timescale)
    }
}

/// Writes one fragmented MP4 file. See the module docs.
#[derive(Debug)]
pub struct Fmp4Writer {
    video: Option<Track>,
    audio: Option<Track>,
    init: Bytes,
    sequence: u32,
    fragment: MediaTime,
    fragment_start: Option<MediaTime>,
    last_fragment: Option<FragmentInfo>,
}

/// What the last fragment handed out holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragmentInfo {
    /// Its media duration (its longest track's samples).
    pub duration: MediaTime,
    /// Whether its video starts with a sync sample (true without video).
    pub independent: bool,
}

impl Fmp4Writer {
    /// A file with a track for each configuration given (H.264, HEVC, AV1 or VP9 video;
    /// AAC audio; see [`carries`]), cutting fragments of about `fragment` each.
    pub fn new(
        video: Option<&CodecConfig>,
        audio: Option<&CodecConfig>,
        fragment: MediaTime,
    ) -> Result<Self, Fmp4Error> {
        let video = video.filter(|c| carries(c.codec()));
        let audio = audio.filter(|c| c.codec() == Codec::Aac);
        let mut traks = Vec::new();
        let mut trex = Vec::new();
        let mut video_track = None;
        let mut audio_track = None;
        if let Some(config) = video {
            traks.push(video_trak(config)?);
            trex.push(trex_for(VIDEO_TRACK));
            video_track =
                Some(Track::new(VIDEO_TRACK, VIDEO_TIMESCALE, "video", DEFAULT_VIDEO_DURATION));
        }
        if let Some(config) = audio {
            let (trak, rate, samples) = audio_trak(config)?;
            traks.push(trak);
            trex.push(trex_for(AUDIO_TRACK));
            audio_track = Some(Track::new(AUDIO_TRACK, rate, "audio", samples));
        }
        if traks.is_empty() {
            return Err(Fmp4Error::NoTracks);
        }
        let ftyp = Ftyp {
            major_brand: b"iso6".into(),
            minor_version: 0,
            compatible_brands: match video.map(|c| c.codec()) {
                Some(Codec::H264) => {
                    vec![b"iso6".into(), b"isom".into(), b"avc1".into(), b"mp41".into()]
                }
                _ => vec![b"iso6".into(), b"isom".into(), b"mp41".into()],
            },
        };
        let moov = Moov {
            mvhd: Mvhd {
                timescale: 1000,
                rate: 1.into(),
                volume: 1.into(),
                next_track_id: AUDIO_TRACK + 1,
                ..Default::default()
            },
            mvex: Some(Mvex { mehd: None, trex }),
            trak: traks,
            ..Default::default()
        };
        let mut init = Vec::new();
        ftyp.encode(&mut init)?;
        moov.encode(&mut init)?;
        Ok(Self {
            video: video_track,
            audio: audio_track,
            init: Bytes::from(init),
            sequence: 0,
            fragment,
            fragment_start: None,
            last_fragment: None,
        })
    }

    /// The init segment (`ftyp` + `moov`): the file's first bytes.
    pub fn init(&self) -> Bytes {
        self.init.clone()
    }

    /// Whether the file has a video track.
    pub fn has_video(&self) -> bool {
        self.video.is_some()
    }

    /// Whether the file has an audio track.
    pub fn has_audio(&self) -> bool {
        self.audio.is_some()
    }

    /// The media time the file's samples written so far span (the longer track).
    pub fn duration(&self) -> MediaTime {
        let video = self.video.as_ref().map_or(MediaTime::ZERO, Track::duration);
        let audio = self.audio.as_ref().map_or(MediaTime::ZERO, Track::duration);
        video.max(audio)
    }

    /// Adds `frame` (whose configuration must be the file's: a new one needs a new file);
    /// answers a complete fragment when one is due (about every `fragment` of media).
    pub fn push(&mut self, frame: &MediaFrame) -> Result<Option<Chunk>, Fmp4Error> {
        let track = match frame.kind() {
            FrameKind::Video => self.video.as_mut().ok_or(Fmp4Error::NoTrack("video"))?,
            FrameKind::Audio => self.audio.as_mut().ok_or(Fmp4Error::NoTrack("audio"))?,
            FrameKind::Data => return Ok(None),
        };
        track.push(frame)?;
        let start = *self.fragment_start.get_or_insert(frame.dts());
        if frame.dts() - start < self.fragment {
            return Ok(None);
        }
        self.fragment_start = Some(frame.dts());
        self.fragment()
    }

    /// Hands out a fragment of the samples whose durations are known now, whatever its
    /// length, and starts the next at `at` (the decode time of the frame just pushed,
    /// whose duration is not known yet): how a caller cuts where it must (a segment
    /// boundary at a keyframe).
    pub fn cut(&mut self, at: MediaTime) -> Result<Option<Chunk>, Fmp4Error> {
        self.fragment_start = Some(at);
        self.fragment()
    }

    /// What the last fragment handed out holds.
    pub fn last_fragment(&self) -> Option<FragmentInfo> {
        self.last_fragment
    }

    /// Ends the file: the last samples get their durations (video: the gap to
    /// `next_video`, the decode time of the frame that starts the next file, if known)
    /// and go out in a last fragment.
    pub fn finish(&mut self, next_video: Option<MediaTime>) -> Result<Option<Chunk>, Fmp4Error> {
        if let Some(video) = &mut self.video {
            video.close(next_video.map(|t| t.as_ticks(VIDEO_TIMESCALE)));
        }
        if let Some(audio) = &mut self.audio {
            // An AAC frame is 1024 samples at the track's timescale: exact.
            audio.close(None);
        }
        self.fragment()
    }

    /// A `moof` + `mdat` of every sample whose duration is known, or `None` if there is
    /// none.
    fn fragment(&mut self) -> Result<Option<Chunk>, Fmp4Error> {
        let runs: Vec<(u32, Vec<Sample>)> = [self.video.as_mut(), self.audio.as_mut()]
            .into_iter()
            .flatten()
            .map(|t| (t.id, t.ready()))
            .filter(|(_, s)| !s.is_empty())
            .collect();
        if runs.is_empty() {
            return Ok(None);
        }
        let mut info = FragmentInfo { duration: MediaTime::ZERO, independent: true };
        for (id, samples) in &runs {
            let track = if *id == VIDEO_TRACK { self.video.as_ref() } else { self.audio.as_ref() };
            let Some(track) = track else { continue };
            let ticks: i64 = samples.iter().map(|s| i64::from(s.duration.unwrap_or(0))).sum();
            info.duration = info.duration.max(MediaTime::from_ticks(ticks, track.timescale));
            if *id == VIDEO_TRACK {
                info.independent = samples.first().is_some_and(|s| s.sync);
            }
        }
        self.last_fragment = Some(info);
        self.sequence += 1;
        encode_fragment(self.sequence, &runs).map(Some)
    }
}

/// A `moof` + `mdat` numbered `sequence` carrying `runs` (per track id, samples whose
/// durations are known): the `moof` and the `mdat`'s header in one buffer, then the
/// samples' own buffers (nothing copied). Shared with [`crate::fmp4_cut`].
pub(crate) fn encode_fragment(
    sequence: u32,
    runs: &[(u32, Vec<Sample>)],
) -> Result<Chunk, Fmp4Error> {
    let mut moof = Moof {
        mfhd: Mfhd { sequence_number: sequence },
        traf: runs.iter().map(|(id, samples)| traf(*id, samples)).collect(),
    };
    // Each run's data offset counts from the moof's first byte; the moof's size does
    // not depend on the offsets' values, so encode once to measure, then for real.
    let mut measure = Vec::new();
    moof.encode(&mut measure)?;
    let mut offset = measure.len() + MDAT_HEADER;
    for (traf, (_, samples)) in moof.traf.iter_mut().zip(runs) {
        for trun in &mut traf.trun {
            trun.data_offset = Some(i32::try_from(offset).map_err(|_| Fmp4Error::TooLarge)?);
        }
        offset += samples.iter().map(|s| s.data.len()).sum::<usize>();
    }
    let mdat_size = u32::try_from(offset - measure.len()).map_err(|_| Fmp4Error::TooLarge)?;
    let mut head = BytesMut::with_capacity(measure.len() + MDAT_HEADER);
    moof.encode(&mut head)?;
    head.put_u32(mdat_size);
    head.put_slice(b"mdat");
    let mut chunk = Chunk::new();
    chunk.push(head.freeze());
    for sample in runs.iter().flat_map(|(_, s)| s) {
        chunk.push(sample.data.clone());
    }
    Ok(chunk)
}

fn traf(track_id: u32, samples: &[Sample]) -> Traf {
    let entries = samples
        .iter()
        .map(|s| TrunEntry {
            duration: s.duration,
            size: Some(u32::try_from(s.data.len()).unwrap_or(u32::MAX)),
            flags: Some(if s.sync { SYNC_SAMPLE } else { NON_SYNC_SAMPLE }),
            cts: Some(s.cts),
        })
        .collect::<Vec<_>>();
    Traf {
        tfhd: Tfhd { track_id, default_base_is_moof: true, ..Default::default() },
        tfdt: Some(Tfdt {
            base_media_decode_time: samples
                .first()
                .map_or(0, |s| u64::try_from(s.dts).unwrap_or(0)),
        }),
        trun: vec![Trun { data_offset: Some(0), samples: entries.into() }],
        sbgp: vec![],
        sgpd: vec![],
        subs: vec![],
        saiz: vec![],
        saio: vec![],
        meta: None,
        senc: None,
        udta: None,
    }
}

fn trex_for(track_id: u32) -> Trex {
    Trex { track_id, default_sample_description_index: 1, ..Default::default() }
}

fn dinf() -> Dinf {
    Dinf { dref: Dref { entries: vec![Url { location: String::new() }.into()] } }
}

/// Whether the writer takes `codec`.
pub fn carries(codec: Codec) -> bool {
    matches!(codec, Codec::H264 | Codec::Hevc | Codec::Av1 | Codec::Vp9 | Codec::Aac)
}

/// A visual sample entry's common part.
fn visual(width: u16, height: u16) -> Visual {
    Visual {
        data_reference_index: 1,
        width,
        height,
        horizresolution: 72.into(),
        vertresolution: 72.into(),
        frame_count: 1,
        compressor: "".into(),
        depth: 24,
    }
}

/// The video sample entry of `config` (the record as the publisher sent it), and the
/// picture's size where it is read here (H.264's SPS; the others leave it to the decoder,
/// which reads it from the record or the first keyframe: 0 × 0 in `tkhd`).
fn video_entry(config: &CodecConfig) -> Result<(mp4_atom::Codec, u16, u16), Fmp4Error> {
    let mut record = &config.record()[..];
    let bad =
        |codec: &'static str| move |e: mp4_atom::Error| Fmp4Error::BadConfig(codec, e.to_string());
    match config.codec() {
        Codec::H264 => {
            let parsed = AvcDecoderConfig::parse(config.record())
                .map_err(|e| Fmp4Error::BadConfig("H.264", e.to_string()))?;
            let (width, height) = parsed
                .sps_info()
                .map(|i| {
                    (u16::try_from(i.width).unwrap_or(0), u16::try_from(i.height).unwrap_or(0))
                })
                .unwrap_or((0, 0));
            // The record as the publisher sent it (high-profile extension included).
            let avcc = Avcc::decode_body(&mut record).map_err(bad("H.264"))?;
            let avc1 = Avc1 {
                visual: visual(width, height),
                avcc,
                btrt: None,
                colr: None,
                pasp: None,
                taic: None,
                fiel: None,
                spatial: None,
            };
            Ok((avc1.into(), width, height))
        }
        Codec::Hevc => {
            let hvcc = Hvcc::decode_body(&mut record).map_err(bad("HEVC"))?;
            Ok((Hvc1 { visual: visual(0, 0), hvcc, ..Default::default() }.into(), 0, 0))
        }
        Codec::Av1 => {
            let av1c = Av1c::decode_body(&mut record).map_err(bad("AV1"))?;
            Ok((Av01 { visual: visual(0, 0), av1c, ..Default::default() }.into(), 0, 0))
        }
        Codec::Vp9 => {
            // Enhanced RTMP's VP9 record is the `vpcC` box's body: version, flags, record.
            let vpcc = VpcC::decode_body(&mut record).map_err(bad("VP9"))?;
            Ok((Vp09 { visual: visual(0, 0), vpcc, ..Default::default() }.into(), 0, 0))
        }
        other => Err(Fmp4Error::BadConfig("video", format!("{other:?} is not carried"))),
    }
}

fn video_trak(config: &CodecConfig) -> Result<Trak, Fmp4Error> {
    let (entry, width, height) = video_entry(config)?;
    Ok(Trak {
        tkhd: Tkhd {
            track_id: VIDEO_TRACK,
            enabled: true,
            in_movie: true,
            width: width.into(),
            height: height.into(),
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd { timescale: VIDEO_TIMESCALE, language: "und".into(), ..Default::default() },
            hdlr: Hdlr { handler: b"vide".into(), name: "VideoHandler".into() },
            minf: Minf {
                vmhd: Some(Vmhd::default()),
                dinf: dinf(),
                stbl: Stbl {
                    stsd: Stsd { codecs: vec![entry] },
                    stco: Some(Stco::default()),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        ..Default::default()
    })
}

/// The audio `trak`, its timescale (the sample rate) and its samples per frame.
fn audio_trak(config: &CodecConfig) -> Result<(Trak, u32, u32), Fmp4Error> {
    let parsed = AudioSpecificConfig::parse(config.record())
        .map_err(|e| Fmp4Error::BadConfig("AAC", e.to_string()))?;
    let rate = parsed.sample_rate();
    let mut esds = Esds::default();
    esds.es_desc.es_id = 2;
    esds.es_desc.dec_config.object_type_indication = 0x40; // MPEG-4 audio
    esds.es_desc.dec_config.stream_type = 5; // audio stream
    esds.es_desc.dec_config.dec_specific = Some(mp4_atom::esds::DecoderSpecific {
        profile: parsed.object_type,
        freq_index: parsed.sampling_index,
        chan_conf: parsed.channels,
        raw: config.record().to_vec(),
    });
    let mp4a = Mp4a {
        audio: Audio {
            data_reference_index: 1,
            channel_count: u16::from(parsed.channels.max(1)),
            sample_size: 16,
            // 16.16 fixed point: rates above 65535 Hz do not fit; the timescale rules.
            sample_rate: u16::try_from(rate).unwrap_or(0).into(),
        },
        esds,
        btrt: None,
        taic: None,
    };
    let trak = Trak {
        tkhd: Tkhd {
            track_id: AUDIO_TRACK,
            alternate_group: 1,
            enabled: true,
            in_movie: true,
            volume: 1.into(),
            ..Default::default()
        },
        mdia: Mdia {
            mdhd: Mdhd { timescale: rate, language: "und".into(), ..Default::default() },
            hdlr: Hdlr { handler: b"soun".into(), name: "SoundHandler".into() },
            minf: Minf {
                smhd: Some(Smhd::default()),
                dinf: dinf(),
                stbl: Stbl {
                    stsd: Stsd { codecs: vec![mp4a.into()] },
                    stco: Some(Stco::default()),
                    ..Default::default()
                },
                ..Default::default()
            },
        },
        ..Default::default()
    };
    Ok((trak, rate, parsed.samples_per_frame()))
}

#[cfg(test)]
mod tests {
    use mp4_atom::{Any, Decode};

    use super::*;
    use crate::testdata::{aac_config, audio, av, avc_config, video};

    /// The top-level boxes of `bytes`.
    fn boxes(bytes: &[u8]) -> Vec<Any> {
        let mut cursor = std::io::Cursor::new(bytes);
        let mut out = Vec::new();
        while (cursor.position() as usize) < bytes.len() {
            out.push(Any::decode(&mut cursor).expect("a whole box"));
        }
        out
    }

    /// Per track id: (tfdt, sum of durations, sample payloads) of every fragment, checking
    /// that each run's data offset points at its samples.
    fn runs(chunks: &[Bytes]) -> Vec<(u32, u64, u64, Vec<Vec<u8>>)> {
        let mut out = Vec::new();
        for chunk in chunks {
            let all = boxes(chunk);
            let mut at = 0;
            let mut i = 0;
            while i < all.len() {
                let Any::Moof(moof) = &all[i] else {
                    at += encoded_len(&all[i]);
                    i += 1;
                    continue;
                };
                let moof_start = at;
                for traf in &moof.traf {
                    let trun = &traf.trun[0];
                    let mut offset = moof_start + trun.data_offset.expect("offset") as usize;
                    let mut payloads = Vec::new();
                    let mut total = 0u64;
                    for entry in trun.samples.iter() {
                        let size = entry.size.expect("size") as usize;
                        payloads.push(chunk[offset..offset + size].to_vec());
                        offset += size;
                        total += u64::from(entry.duration.expect("duration"));
                    }
                    let tfdt = traf.tfdt.as_ref().expect("tfdt").base_media_decode_time;
                    out.push((traf.tfhd.track_id, tfdt, total, payloads));
                }
                at += encoded_len(&all[i]);
                i += 1;
            }
        }
        out
    }

    fn encoded_len(atom: &Any) -> usize {
        let mut v = Vec::new();
        atom.encode(&mut v).expect("encode");
        v.len()
    }

    fn write_all(
        writer: &mut Fmp4Writer,
        frames: &[MediaFrame],
        next: Option<MediaTime>,
    ) -> Vec<Bytes> {
        let mut chunks = vec![writer.init()];
        for frame in frames {
            chunks.extend(writer.push(frame).expect("push").map(|c| c.to_bytes()));
        }
        chunks.extend(writer.finish(next).expect("finish").map(|c| c.to_bytes()));
        chunks
    }

    #[test]
    fn init_describes_both_tracks() {
        let writer =
            Fmp4Writer::new(Some(&avc_config()), Some(&aac_config()), MediaTime::from_millis(1000))
                .expect("writer");
        let all = boxes(&writer.init());
        assert!(matches!(all[0], Any::Ftyp(_)));
        let Any::Moov(moov) = &all[1] else { panic!("moov second") };
        let scales: Vec<u32> = moov.trak.iter().map(|t| t.mdia.mdhd.timescale).collect();
        assert_eq!(scales, [90_000, 44_100]);
        assert_eq!(moov.mvex.as_ref().map(|m| m.trex.len()), Some(2));
        assert_eq!(moov.trak[0].tkhd.width.integer(), 320);
    }

    #[test]
    fn fragments_are_about_a_second_continuous_and_point_at_their_samples() {
        let (v, a) = (avc_config(), aac_config());
        let frames = av(&v, &a, 5000, 4);
        let mut writer =
            Fmp4Writer::new(Some(&v), Some(&a), MediaTime::from_millis(1000)).expect("writer");
        let chunks = write_all(&mut writer, &frames, Some(MediaTime::from_millis(9000)));
        // The init, then one chunk per second of media (the last at finish).
        assert!((4..=6).contains(&(chunks.len() - 1)), "{} fragments", chunks.len() - 1);
        let runs = runs(&chunks[1..]);
        for track in [VIDEO_TRACK, AUDIO_TRACK] {
            let mine: Vec<_> = runs.iter().filter(|r| r.0 == track).collect();
            let scale = if track == VIDEO_TRACK { 90_000 } else { 44_100 };
            assert_eq!(
                mine[0].1,
                MediaTime::from_millis(5000).as_ticks(scale) as u64,
                "tfdt on the stream clock"
            );
            for pair in mine.windows(2) {
                assert_eq!(
                    pair[0].1 + pair[0].2,
                    pair[1].1,
                    "track {track}: each fragment continues the last"
                );
            }
        }
        let video: Vec<Vec<u8>> =
            runs.iter().filter(|r| r.0 == VIDEO_TRACK).flat_map(|r| r.3.clone()).collect();
        assert_eq!(video.len(), 120);
        assert_eq!(
            video[7],
            frames.iter().filter(|f| f.kind() == FrameKind::Video).nth(7).expect("frame").payload()
                [..]
        );
        // The video track ends exactly where the next segment's first frame starts.
        let last = runs.iter().rfind(|r| r.0 == VIDEO_TRACK).expect("video run");
        assert_eq!(last.1 + last.2, 9000 * 90);
        // The longer track: audio's last frame ends within one AAC frame after the video.
        let duration = writer.duration();
        assert!(
            duration >= MediaTime::from_millis(4000) && duration < MediaTime::from_millis(4024)
        );
    }

    #[test]
    fn a_lone_last_frame_gets_the_usual_duration() {
        let v = avc_config();
        let mut writer =
            Fmp4Writer::new(Some(&v), None, MediaTime::from_millis(1000)).expect("writer");
        let frames: Vec<_> = (0..3).map(|i| video(&v, i * 40, 80, i == 0)).collect();
        let chunks = write_all(&mut writer, &frames, None);
        let runs = runs(&chunks);
        assert_eq!(runs.iter().map(|r| r.2).sum::<u64>(), 3 * 40 * 90);
        assert!(!writer.has_audio() && writer.has_video());
    }

    #[test]
    fn audio_only_files_work_and_video_frames_are_refused() {
        let a = aac_config();
        let mut writer =
            Fmp4Writer::new(None, Some(&a), MediaTime::from_millis(500)).expect("writer");
        let mut chunks = vec![writer.init()];
        for n in 0..100 {
            chunks.extend(
                writer
                    .push(&audio(&a, MediaTime::from_ticks(n * 1024, 44_100)))
                    .expect("audio")
                    .map(|c| c.to_bytes()),
            );
        }
        chunks.extend(writer.finish(None).expect("finish").map(|c| c.to_bytes()));
        let total: u64 = runs(&chunks).iter().map(|r| r.2).sum();
        assert_eq!(total, 100 * 1024, "every AAC frame lasts 1024 samples");
        let err = writer.push(&video(&avc_config(), 0, 0, true)).expect_err("no video track");
        assert_eq!(err, Fmp4Error::NoTrack("video"));
    }

    #[test]
    fn backwards_and_negative_times_and_missing_tracks_are_errors() {
        let v = avc_config();
        assert_eq!(
            Fmp4Writer::new(None, None, MediaTime::ZERO).expect_err("no tracks"),
            Fmp4Error::NoTracks
        );
        let mut writer =
            Fmp4Writer::new(Some(&v), None, MediaTime::from_millis(1000)).expect("writer");
        writer.push(&video(&v, 100, 0, true)).expect("first");
        assert!(matches!(writer.push(&video(&v, 100, 0, false)), Err(Fmp4Error::Backwards { .. })));
        assert!(matches!(writer.push(&video(&v, 60, 0, false)), Err(Fmp4Error::Backwards { .. })));
        let mut fresh =
            Fmp4Writer::new(Some(&v), None, MediaTime::from_millis(1000)).expect("writer");
        assert!(matches!(fresh.push(&video(&v, -5, 0, true)), Err(Fmp4Error::Backwards { .. })));
        let bad = CodecConfig::new(Codec::H264, Bytes::from_static(&[1, 2]), MediaTime::ZERO);
        assert!(matches!(
            Fmp4Writer::new(Some(&bad), None, MediaTime::ZERO),
            Err(Fmp4Error::BadConfig(..))
        ));
    }

    #[test]
    fn composition_offsets_are_kept_signed() {
        let v = avc_config();
        let mut writer =
            Fmp4Writer::new(Some(&v), None, MediaTime::from_millis(1000)).expect("writer");
        writer.push(&video(&v, 0, 80, true)).expect("key");
        writer.push(&video(&v, 40, -20, false)).expect("b");
        let chunk = writer.finish(None).expect("finish").expect("fragment");
        let all = boxes(&chunk.to_bytes());
        let Any::Moof(moof) = &all[0] else { panic!("moof") };
        let cts: Vec<i64> =
            moof.traf[0].trun[0].samples.iter().map(|e| e.cts.unwrap_or(0)).collect();
        assert_eq!(cts, [80 * 90, -20 * 90]);
    }
}
