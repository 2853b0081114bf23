//! Reading fragmented MP4 files back, and cutting a time range out of consecutive ones
//! into one fragmented MP4, sans-IO: bytes in, bytes out. This is how a recording's
//! segments ([`crate::fmp4`], each self-contained: `ftyp` + `moov`, then `moof` + `mdat`
//! fragments on the stream's clock) become one download.
//!
//! A cut starts on the last video keyframe at or before the range's start (so it decodes
//! from its first frame), takes every sample up to the range's end, and shifts both tracks
//! by the same amount so the file starts at 0 with the tracks still in sync. The init is
//! the first file's, with the total duration in `mvhd` and `mehd` (players read a
//! fragmented file's duration there). Files whose tracks differ from the first one's (a
//! codec configuration changed mid-recording) cannot join it: [`CutError::TracksChanged`].
//!
//! Hostile input never panics: boxes and sample ranges are checked against the bytes; a
//! torn tail (a box running past the end) ends the file there.

use bytes::Bytes;
use mp4_atom::{Decode, Encode, Mehd, Moof, Moov};

use crate::fmp4::{encode_fragment, Fmp4Error, Sample};
use crate::time::MediaTime;

/// Media per fragment of a cut.
pub const CUT_FRAGMENT: MediaTime = MediaTime::from_millis(1000);
/// Most samples one track run may declare (a run without per-sample fields is only a
/// count, which must not size an allocation).
const MAX_RUN_SAMPLES: usize = 1 << 20;
/// `sample_is_non_sync_sample` in a sample's flags.
const NON_SYNC: u32 = 0x0001_0000;

/// Why files could not be read or cut.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CutError {
    /// Not a fragmented MP4 this reader understands.
    #[error("not a readable fragmented MP4: {0}")]
    Malformed(String),
    /// File number `.0` (from 0) has other tracks or codec configurations than the first.
    #[error("the tracks change in segment {0} (a new codec configuration)")]
    TracksChanged(usize),
    /// No sample falls in the range.
    #[error("no media in the range")]
    Empty,
    /// The output could not be encoded.
    #[error(transparent)]
    Encode(#[from] Fmp4Error),
}

fn malformed(why: impl Into<String>) -> CutError {
    CutError::Malformed(why.into())
}

/// A top-level box: its type, where it starts and ends.
#[derive(Debug, Clone, Copy)]
struct BoxAt {
    kind: [u8; 4],
    start: usize,
    end: usize,
}

/// The box at `at`, or `None` at the end or where a box runs past the end (a torn tail).
fn box_at(bytes: &[u8], at: usize) -> Result<Option<BoxAt>, CutError> {
    let Some(head) = bytes.get(at..at.saturating_add(8)) else { return Ok(None) };
    let size = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as u64;
    let kind = [head[4], head[5], head[6], head[7]];
    let (size, body) = match size {
        0 => ((bytes.len() - at) as u64, at + 8),
        1 => {
            let Some(large) = bytes.get(at + 8..at + 16) else { return Ok(None) };
            let mut b = [0u8; 8];
            b.copy_from_slice(large);
            (u64::from_be_bytes(b), at + 16)
        }
        n => (n, at + 8),
    };
    if size < (body - at) as u64 {
        return Err(malformed(format!("a box of {size} bytes at {at}")));
    }
    let end = usize::try_from(size).ok().and_then(|s| at.checked_add(s));
    match end {
        Some(end) if end <= bytes.len() => Ok(Some(BoxAt { kind, start: at, end })),
        _ => Ok(None),
    }
}

/// The length of a file's init section (its `ftyp` and `moov`), read from its first
/// bytes (`head` needs to reach the end of the `moov` box's header only); `None` if it
/// does not start with both.
pub fn init_len(head: &[u8]) -> Option<u64> {
    let size = |at: usize| -> Option<(u64, [u8; 4])> {
        let h = head.get(at..at.checked_add(8)?)?;
        let size = u32::from_be_bytes([h[0], h[1], h[2], h[3]]) as u64;
        // A 64-bit or open-ended size is not what an init section uses.
        (size >= 8).then_some((size, [h[4], h[5], h[6], h[7]]))
    };
    let (ftyp, kind) = size(0)?;
    if &kind != b"ftyp" {
        return None;
    }
    let (moov, kind) = size(usize::try_from(ftyp).ok()?)?;
    (&kind == b"moov").then(|| ftyp + moov)
}

/// One track of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackInfo {
    /// Its track id.
    pub id: u32,
    /// Ticks per second.
    pub timescale: u32,
    /// Whether it is video (`vide` handler).
    pub video: bool,
}

/// A fragmented MP4 file read back: its init and its samples, per track in decode order.
#[derive(Debug, Clone)]
pub struct Fmp4File {
    ftyp: Bytes,
    moov: Moov,
    /// The tracks, in `moov` order.
    pub tracks: Vec<TrackInfo>,
    samples: Vec<Vec<Sample>>,
}

impl Fmp4File {
    /// Reads `bytes`: an `ftyp`, a `moov` with `mvex`, then fragments.
    pub fn read(bytes: &Bytes) -> Result<Self, CutError> {
        let mut at = 0;
        let mut ftyp = None;
        let mut moov: Option<Moov> = None;
        let mut tracks = Vec::new();
        let mut samples: Vec<Vec<Sample>> = Vec::new();
        let mut next_dts: Vec<Option<i64>> = Vec::new();
        while let Some(b) = box_at(bytes, at)? {
            at = b.end;
            match &b.kind {
                b"ftyp" => ftyp = Some(bytes.slice(b.start..b.end)),
                b"moov" => {
                    let parsed = Moov::decode(&mut &bytes[b.start..b.end])
                        .map_err(|e| malformed(format!("moov: {e}")))?;
                    tracks = parsed
                        .trak
                        .iter()
                        .map(|t| TrackInfo {
                            id: t.tkhd.track_id,
                            timescale: t.mdia.mdhd.timescale.max(1),
                            video: t.mdia.hdlr.handler == mp4_atom::FourCC::new(b"vide"),
                        })
                        .collect();
                    samples = vec![Vec::new(); tracks.len()];
                    next_dts = vec![None; tracks.len()];
                    moov = Some(parsed);
                }
                b"moof" => {
                    let Some(moov) = &moov else { return Err(malformed("moof before moov")) };
                    let moof = Moof::decode(&mut &bytes[b.start..b.end])
                        .map_err(|e| malformed(format!("moof: {e}")))?;
                    read_fragment(bytes, b, &moof, moov, &tracks, &mut samples, &mut next_dts)?;
                }
                _ => {}
            }
        }
        let (Some(ftyp), Some(moov)) = (ftyp, moov) else {
            return Err(malformed("no ftyp and moov at the start"));
        };
        Ok(Self { ftyp, moov, tracks, samples })
    }

    /// How many samples of track `index` (in [`Fmp4File::tracks`]) it holds.
    pub fn sample_count(&self, index: usize) -> usize {
        self.samples.get(index).map_or(0, Vec::len)
    }

    /// The decode time, duration and sync flag of sample `n` of track `index`.
    pub fn sample(&self, index: usize, n: usize) -> Option<(MediaTime, MediaTime, bool)> {
        let track = self.tracks.get(index)?;
        let s = self.samples.get(index)?.get(n)?;
        let at = |ticks: i64| MediaTime::from_ticks(ticks, track.timescale);
        Some((at(s.dts), at(i64::from(s.duration.unwrap_or(0))), s.sync))
    }

    /// Whether `other`'s tracks (ids, timescales, sample descriptions) are this one's.
    fn same_tracks(&self, other: &Self) -> bool {
        self.moov.trak.len() == other.moov.trak.len()
            && self.moov.trak.iter().zip(&other.moov.trak).all(|(a, b)| {
                a.tkhd.track_id == b.tkhd.track_id
                    && a.mdia.mdhd.timescale == b.mdia.mdhd.timescale
                    && a.mdia.minf.stbl.stsd == b.mdia.minf.stbl.stsd
            })
    }
}

/// Adds the samples of one `moof` (at `b`) to `samples`.
fn read_fragment(
    bytes: &Bytes,
    b: BoxAt,
    moof: &Moof,
    moov: &Moov,
    tracks: &[TrackInfo],
    samples: &mut [Vec<Sample>],
    next_dts: &mut [Option<i64>],
) -> Result<(), CutError> {
    for traf in &moof.traf {
        let id = traf.tfhd.track_id;
        let Some(index) = tracks.iter().position(|t| t.id == id) else {
            return Err(malformed(format!("a fragment of unknown track {id}")));
        };
        let trex = moov.mvex.as_ref().and_then(|m| m.trex.iter().find(|t| t.track_id == id));
        let default_duration = traf
            .tfhd
            .default_sample_duration
            .or(trex.map(|t| t.default_sample_duration))
            .unwrap_or(0);
        let default_size =
            traf.tfhd.default_sample_size.or(trex.map(|t| t.default_sample_size)).unwrap_or(0);
        let default_flags =
            traf.tfhd.default_sample_flags.or(trex.map(|t| t.default_sample_flags)).unwrap_or(0);
        let base = match traf.tfhd.base_data_offset {
            Some(offset) => usize::try_from(offset).map_err(|_| malformed("base offset"))?,
            None => b.start,
        };
        let mut dts = match &traf.tfdt {
            Some(tfdt) => i64::try_from(tfdt.base_media_decode_time)
                .map_err(|_| malformed("decode time out of range"))?,
            None => next_dts[index].unwrap_or(0),
        };
        let mut data_at = base;
        for trun in &traf.trun {
            if trun.samples.len() > MAX_RUN_SAMPLES {
                return Err(malformed("a run of too many samples"));
            }
            if let Some(offset) = trun.data_offset {
                data_at = base
                    .checked_add_signed(offset as isize)
                    .ok_or_else(|| malformed("data offset out of range"))?;
            }
            for entry in trun.samples.iter() {
                let size = entry.size.unwrap_or(default_size) as usize;
                let end = data_at.checked_add(size).filter(|&e| e <= bytes.len());
                let Some(end) = end else {
                    // A sample past the end: a torn file, or lies.
                    return Err(malformed("a sample runs past the end of the file"));
                };
                let duration = entry.duration.unwrap_or(default_duration);
                let flags = entry.flags.unwrap_or(default_flags);
                samples[index].push(Sample {
                    dts,
                    cts: entry.cts.unwrap_or(0),
                    sync: flags & NON_SYNC == 0,
                    data: bytes.slice(data_at..end),
                    duration: Some(duration),
                });
                data_at = end;
                dts = dts.saturating_add(i64::from(duration));
            }
        }
        next_dts[index] = Some(dts);
    }
    Ok(())
}

/// A cut: one fragmented MP4 file, and what it covers on the files' clock.
#[derive(Debug, Clone)]
pub struct Cut {
    /// The file.
    pub bytes: Bytes,
    /// Where it starts on the source clock (the keyframe it starts on).
    pub start: MediaTime,
    /// Its duration (the longer track).
    pub duration: MediaTime,
}

/// Cuts `[from, to)` (on the files' clock) out of `files`, consecutive fragmented MP4
/// files of one stream; see the module docs.
pub fn cut(files: &[Bytes], from: MediaTime, to: MediaTime) -> Result<Cut, CutError> {
    if to <= from {
        return Err(CutError::Empty);
    }
    let mut parsed = Vec::with_capacity(files.len());
    for (i, bytes) in files.iter().enumerate() {
        let file = Fmp4File::read(bytes)?;
        if let Some(first) = parsed.first() {
            if !Fmp4File::same_tracks(first, &file) {
                return Err(CutError::TracksChanged(i));
            }
        }
        parsed.push(file);
    }
    let Some(first) = parsed.first() else { return Err(CutError::Empty) };
    let tracks = first.tracks.clone();
    let (ftyp, mut moov) = (first.ftyp.clone(), first.moov.clone());
    // Every track's samples across the files, in order.
    let mut all: Vec<Vec<Sample>> = vec![Vec::new(); tracks.len()];
    for file in &mut parsed {
        for (track, samples) in all.iter_mut().zip(file.samples.iter_mut()) {
            track.append(samples);
        }
    }
    let at = |track: &TrackInfo, ticks: i64| MediaTime::from_ticks(ticks, track.timescale);
    // The start: the last sync sample at or before `from` of the video track (any track
    // without video), else the first one.
    let lead = tracks.iter().position(|t| t.video).unwrap_or(0);
    let lead_track = &tracks[lead];
    let syncs = all[lead].iter().filter(|s| s.sync && at(lead_track, s.dts) < to);
    let start = syncs
        .clone()
        .filter(|s| at(lead_track, s.dts) <= from)
        .last()
        .or_else(|| syncs.clone().next())
        .map(|s| at(lead_track, s.dts))
        .ok_or(CutError::Empty)?;
    let mut end = MediaTime::ZERO;
    let mut kept: Vec<Vec<Sample>> = Vec::with_capacity(tracks.len());
    for (track, samples) in tracks.iter().zip(all) {
        let shift = start.as_ticks(track.timescale);
        let mine: Vec<Sample> = samples
            .into_iter()
            .filter(|s| s.dts >= shift && at(track, s.dts) < to)
            .map(|mut s| {
                s.dts -= shift;
                s
            })
            .collect();
        if let Some(last) = mine.last() {
            end = end.max(at(track, last.dts + i64::from(last.duration.unwrap_or(0))));
        }
        kept.push(mine);
    }
    if kept.iter().all(Vec::is_empty) {
        return Err(CutError::Empty);
    }
    // The init: the first file's, with the duration.
    let scale = moov.mvhd.timescale.max(1);
    let total = u64::try_from(end.as_ticks(scale)).unwrap_or(0);
    moov.mvhd.duration = total;
    if let Some(mvex) = &mut moov.mvex {
        mvex.mehd = Some(Mehd { fragment_duration: total });
    }
    let mut out = Vec::with_capacity(files.iter().map(Bytes::len).sum::<usize>());
    out.extend_from_slice(&ftyp);
    moov.encode(&mut out).map_err(Fmp4Error::from)?;
    // Fragments of about CUT_FRAGMENT each, both tracks by time.
    let mut cursors = vec![0usize; tracks.len()];
    let mut window_end = CUT_FRAGMENT;
    let mut sequence = 0;
    while cursors.iter().zip(&kept).any(|(&c, k)| c < k.len()) {
        let mut runs = Vec::new();
        for ((track, samples), cursor) in tracks.iter().zip(&kept).zip(cursors.iter_mut()) {
            let from = *cursor;
            while *cursor < samples.len() && at(track, samples[*cursor].dts) < window_end {
                *cursor += 1;
            }
            if *cursor > from {
                runs.push((track.id, samples[from..*cursor].to_vec()));
            }
        }
        window_end = window_end + CUT_FRAGMENT;
        if runs.is_empty() {
            continue;
        }
        sequence += 1;
        for part in encode_fragment(sequence, &runs)?.parts() {
            out.extend_from_slice(part);
        }
    }
    Ok(Cut { bytes: Bytes::from(out), start, duration: end })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::fmp4::Fmp4Writer;
    use crate::frame::CodecConfig;
    use crate::testdata::{aac_config, av, avc_config};

    /// A file of `seconds` of 30 fps video (a keyframe a second) and AAC from `from_ms`,
    /// its last video frame lasting until `from_ms + seconds`.
    fn file(v: &CodecConfig, from_ms: i64, seconds: i64) -> Bytes {
        let mut writer =
            Fmp4Writer::new(Some(v), Some(&aac_config()), MediaTime::from_millis(1000))
                .expect("writer");
        let mut out = writer.init().to_vec();
        for frame in av(v, &aac_config(), from_ms, seconds) {
            if let Some(chunk) = writer.push(&frame).expect("push") {
                out.extend_from_slice(&chunk.to_bytes());
            }
        }
        let next = MediaTime::from_millis(from_ms + seconds * 1000);
        if let Some(chunk) = writer.finish(Some(next)).expect("finish") {
            out.extend_from_slice(&chunk.to_bytes());
        }
        Bytes::from(out)
    }

    fn ms(n: i64) -> MediaTime {
        MediaTime::from_millis(n)
    }

    #[test]
    fn reads_back_what_the_writer_wrote() {
        let bytes = file(&avc_config(), 2000, 3);
        let read = Fmp4File::read(&bytes).expect("read");
        assert_eq!(read.tracks.iter().map(|t| t.video).collect::<Vec<_>>(), [true, false]);
        assert_eq!(read.sample_count(0), 90);
        let (dts, duration, sync) = read.sample(0, 0).expect("first");
        assert_eq!((dts, sync), (ms(2000), true));
        assert!(duration > ms(30) && duration < ms(40));
        assert!(!read.sample(0, 1).expect("second").2);
        let init = init_len(&bytes).expect("init");
        assert_eq!(&bytes[init as usize + 4..init as usize + 8], b"moof");
    }

    #[test]
    fn a_cut_starts_on_the_keyframe_before_and_spans_files_from_zero() {
        let v = avc_config();
        let files = [file(&v, 0, 4), file(&v, 4000, 4), file(&v, 8000, 4)];
        let cut = cut(&files, ms(3500), ms(9500)).expect("cut");
        // The keyframe at or before 3.5 s is at 3 s.
        assert_eq!(cut.start, ms(3000));
        let read = Fmp4File::read(&cut.bytes).expect("the cut reads back");
        let (first, _, sync) = read.sample(0, 0).expect("first");
        assert_eq!((first, sync), (MediaTime::ZERO, true));
        // 3 s .. 9.5 s of 30 fps: frames at 3.000 .. 9.466.
        assert_eq!(read.sample_count(0), 195);
        let (last, duration, _) = read.sample(0, 194).expect("last");
        let end = last + duration;
        assert!((end - ms(6500)).as_millis().abs() <= 1, "{end:?}");
        assert!((cut.duration - ms(6500)).as_millis().abs() <= 25, "{:?}", cut.duration);
        // Timestamps continue across the files' boundaries.
        for n in 1..read.sample_count(0) {
            let (a, d, _) = read.sample(0, n - 1).expect("a");
            let (b, _, _) = read.sample(0, n).expect("b");
            assert_eq!(a + d, b, "sample {n}");
        }
        assert_eq!(init_len(&cut.bytes).map(|n| n > 0), Some(true));
    }

    #[test]
    fn a_range_outside_the_files_or_empty_is_refused() {
        let v = avc_config();
        let files = [file(&v, 0, 2)];
        assert_eq!(cut(&files, ms(5000), ms(4000)).expect_err("reversed"), CutError::Empty);
        assert_eq!(cut(&[], ms(0), ms(4000)).expect_err("no files"), CutError::Empty);
        // Before the first sample: starts on the first keyframe.
        let early = cut(&files, ms(-5000), ms(1000)).expect("cut");
        assert_eq!(early.start, MediaTime::ZERO);
    }

    #[test]
    fn changed_tracks_are_refused() {
        let other = CodecConfig::new(
            crate::frame::Codec::H264,
            Bytes::from(
                [&avc_config().record()[..3], &[0x1f], &avc_config().record()[4..]].concat(),
            ),
            MediaTime::ZERO,
        );
        let files = [file(&avc_config(), 0, 2), file(&other, 2000, 2)];
        assert_eq!(cut(&files, ms(0), ms(4000)).expect_err("changed"), CutError::TracksChanged(1));
    }

    #[test]
    fn init_len_needs_ftyp_then_moov() {
        assert_eq!(init_len(b""), None);
        assert_eq!(init_len(b"\0\0\0\x08ftyp\0\0\0\x08free"), None);
        assert_eq!(init_len(b"\0\0\0\x08ftyp\0\0\0\x10moov"), Some(24));
        assert_eq!(init_len(b"\0\0\0\x01ftyp"), None);
    }

    #[test]
    fn torn_and_garbage_files_are_errors_not_panics() {
        let bytes = file(&avc_config(), 0, 2);
        // Torn anywhere: reads what is whole, or says it cannot.
        for cut_at in (0..bytes.len()).step_by(97) {
            let _ = Fmp4File::read(&bytes.slice(..cut_at));
        }
        assert!(Fmp4File::read(&Bytes::from_static(b"\0\0\0\x04moov")).is_err());
    }

    proptest! {
        #[test]
        fn hostile_bytes_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Fmp4File::read(&Bytes::from(data.clone()));
            let _ = init_len(&data);
            let _ = cut(&[Bytes::from(data)], ms(0), ms(1000));
        }

        #[test]
        fn flipped_bytes_in_a_real_file_never_panic(at in 0usize..4000, value in any::<u8>()) {
            let mut data = file(&avc_config(), 0, 1).to_vec();
            let at = at % data.len();
            data[at] = value;
            let _ = cut(&[Bytes::from(data)], ms(0), ms(1000));
        }
    }
}
