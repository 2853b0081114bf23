//! Playback of recordings, sans-IO: the VOD HLS playlist over a recording's segments
//! ([`playlist`]), the plan of a time-range download ([`plan_download`]: which segments,
//! which media times), and the parsers of the values HTTP clients send (segment names,
//! `start`, `duration`). The HTTP shell is `src/http/recordings.rs`; the catalog it reads
//! is [`super::catalog`].
//!
//! Playlists: `#EXT-X-PLAYLIST-TYPE:EVENT` without `#EXT-X-ENDLIST` while the recording is
//! live, `VOD` with it after. Segment URIs are `{n}.{ext}`, `n` the segment's index in the
//! recording, so a client names a segment only by its place in the catalog. fMP4 segments
//! are self-contained files (`ftyp` + `moov`, then fragments): the playlist maps each
//! file's own head as the init section with a byte range
//! (`#EXT-X-MAP:URI="0.mp4",BYTERANGE="len@0"`) and the rest as the media
//! (`#EXT-X-BYTERANGE`), repeating the map only when the init changes (then with a
//! discontinuity, as for a timeline break). MPEG-TS segments are listed whole. FLV cannot
//! be carried by HLS.

use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chrono::{DateTime, SecondsFormat, Utc};
use zenlive_media::segment::SegmentFormat;
use zenlive_media::MediaTime;

use super::catalog::{Recording, SegmentEntry};

/// A gap or overlap between one segment's end and the next one's start (on the stream's
/// clock) larger than this is a timeline break.
pub const MAX_TIMELINE_GAP: Duration = Duration::from_millis(500);
/// Longest `start` or `duration` value read.
const MAX_VALUE_LEN: usize = 64;
/// The last second a `start` may name (9999-12-31T23:59:59Z).
const MAX_UNIX_SECONDS: f64 = 253_402_300_799.0;

/// Why a recording cannot be played as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VodError {
    /// FLV segments: HLS carries fMP4 and MPEG-TS only.
    #[error(
        "this recording is FLV, which HLS cannot carry; record in fmp4 or ts to play it over HLS"
    )]
    NotHls,
}

/// The URI name of segment `index` in `format`.
pub fn segment_name(index: usize, format: SegmentFormat) -> String {
    format!("{index}.{}", format.extension())
}

/// The index a segment name such as `12.mp4` stands for: decimal digits (at most 9, no
/// sign, no leading zero but `0` itself) and a known extension; anything else is `None`.
pub fn parse_segment_name(name: &str) -> Option<(usize, SegmentFormat)> {
    let (digits, ext) = name.split_once('.')?;
    let format = match ext {
        "mp4" => SegmentFormat::Fmp4,
        "ts" => SegmentFormat::Ts,
        "flv" => SegmentFormat::Flv,
        _ => return None,
    };
    let canonical = !digits.is_empty()
        && digits.len() <= 9
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    canonical.then(|| digits.parse().ok()).flatten().map(|n| (n, format))
}

/// Whether `next` does not continue `previous`: a timeline break, or another init.
fn breaks(previous: &SegmentEntry, next: &SegmentEntry) -> bool {
    let end = previous.media_end();
    next.media_start.abs_diff(end) > MAX_TIMELINE_GAP || previous.init_digest != next.init_digest
}

fn rfc3339(at: SystemTime) -> String {
    let at: DateTime<Utc> = at.into();
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// The HLS playlist of `recording`; segment URIs carry `?s=session` when given. See the
/// module docs.
pub fn playlist(recording: &Recording, session: Option<&str>) -> Result<String, VodError> {
    let format = recording.segments.first().map_or(SegmentFormat::Fmp4, |s| s.format);
    if format == SegmentFormat::Flv {
        return Err(VodError::NotHls);
    }
    let fmp4 = format == SegmentFormat::Fmp4;
    // An fMP4 segment without a known init cannot be mapped; a segment in another format
    // (the configuration changed) cannot join this playlist.
    let segments: Vec<(usize, &SegmentEntry)> = recording
        .segments
        .iter()
        .enumerate()
        .filter(|(_, s)| s.format == format && (!fmp4 || s.init_bytes.is_some_and(|n| n < s.bytes)))
        .collect();
    let target = segments.iter().map(|(_, s)| s.duration.as_secs_f64().ceil() as u64).max();
    let query = session.map(|s| format!("?s={s}")).unwrap_or_default();
    let mut out = String::with_capacity(256 + segments.len() * 128);
    // `write!` to a String cannot fail.
    let _ = write!(
        out,
        "#EXTM3U\n#EXT-X-VERSION:{}\n#EXT-X-TARGETDURATION:{}\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXT-X-PLAYLIST-TYPE:{}\n#EXT-X-INDEPENDENT-SEGMENTS\n",
        if fmp4 { 7 } else { 3 },
        target.unwrap_or(1).max(1),
        if recording.live { "EVENT" } else { "VOD" },
    );
    let mut previous: Option<&SegmentEntry> = None;
    for (index, segment) in segments {
        let name = segment_name(index, format);
        let broke = previous.is_some_and(|p| breaks(p, segment));
        if broke {
            out.push_str("#EXT-X-DISCONTINUITY\n");
        }
        let init = segment.init_bytes.unwrap_or(0);
        if fmp4 && (previous.is_none() || broke) {
            let _ = writeln!(out, "#EXT-X-MAP:URI=\"{name}{query}\",BYTERANGE=\"{init}@0\"");
        }
        if previous.is_none() || broke {
            let _ = writeln!(out, "#EXT-X-PROGRAM-DATE-TIME:{}", rfc3339(segment.wall_start));
        }
        let _ = writeln!(out, "#EXTINF:{:.3},", segment.duration.as_secs_f64());
        if fmp4 {
            let _ = writeln!(out, "#EXT-X-BYTERANGE:{}@{init}", segment.bytes - init);
        }
        let _ = writeln!(out, "{name}{query}");
        previous = Some(segment);
    }
    if !recording.live {
        out.push_str("#EXT-X-ENDLIST\n");
    }
    Ok(out)
}

/// What a time-range download takes from one recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DownloadPlan {
    /// The segments, by index in the recording: consecutive, one timeline, one init.
    pub segments: Vec<usize>,
    /// Where the range starts on the stream's clock (the cut starts on the keyframe at or
    /// before it).
    pub from: MediaTime,
    /// Where it ends on the stream's clock.
    pub to: MediaTime,
    /// The bytes of the segments.
    pub bytes: u64,
}

/// `to - from` in nanoseconds, negative when `to` is earlier.
fn signed_nanos(from: SystemTime, to: SystemTime) -> i64 {
    match to.duration_since(from) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// The part of `recording` the wall-clock range `[start, start + duration)` covers: from
/// the first segment overlapping it, through the following ones that continue its
/// timeline (a break ends the plan there). `None` when no segment overlaps.
pub fn plan_download(
    recording: &Recording,
    start: SystemTime,
    duration: Duration,
) -> Option<DownloadPlan> {
    let end = start.checked_add(duration)?;
    let segments = &recording.segments;
    let first = segments.iter().position(|s| s.wall_start < end && s.wall_end() > start)?;
    let mut chosen = vec![first];
    for (i, segment) in segments.iter().enumerate().skip(first + 1) {
        let previous = &segments[i - 1];
        if segment.wall_start >= end
            || segment.format != previous.format
            || breaks(previous, segment)
        {
            break;
        }
        chosen.push(i);
    }
    let head = &segments[first];
    let last = &segments[*chosen.last()?];
    let media = |at: SystemTime| {
        MediaTime::from_duration(head.media_start)
            + MediaTime::from_nanos(signed_nanos(head.wall_start, at))
    };
    let from = media(start).max(MediaTime::from_duration(head.media_start));
    let to = media(end).min(MediaTime::from_duration(last.media_end()));
    let bytes = chosen.iter().map(|&i| segments[i].bytes).sum();
    (to > from).then_some(DownloadPlan { segments: chosen, from, to, bytes })
}

/// Parses a download's `start`: RFC 3339 (`2024-05-01T12:00:00Z`, an offset or fraction
/// allowed) or Unix seconds (`1714564800`, a fraction allowed).
pub fn parse_start(text: &str) -> Result<SystemTime, String> {
    if text.is_empty() || text.len() > MAX_VALUE_LEN {
        return Err("start must be an RFC 3339 time or Unix seconds".into());
    }
    if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let seconds: f64 = text.parse().map_err(|_| format!("start {text:?} is not a number"))?;
        if !(0.0..=MAX_UNIX_SECONDS).contains(&seconds) {
            return Err(format!("start {text:?} is out of range"));
        }
        return Ok(UNIX_EPOCH + Duration::from_secs_f64(seconds));
    }
    let at = DateTime::parse_from_rfc3339(text)
        .map_err(|e| format!("start {text:?} is not an RFC 3339 time or Unix seconds: {e}"))?;
    let nanos = at.timestamp_nanos_opt().filter(|&n| n >= 0);
    let nanos = nanos.ok_or_else(|| format!("start {text:?} is out of range"))?;
    Ok(UNIX_EPOCH + Duration::from_nanos(nanos as u64))
}

/// Parses a download's `duration`: seconds (`30`, `7.5`) or with units (`30s`, `2m`,
/// `1h30m`); more than zero.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    if text.is_empty() || text.len() > MAX_VALUE_LEN {
        return Err("duration must be seconds (30) or with a unit (30s, 2m)".into());
    }
    let duration = if text.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let seconds: f64 =
            text.parse().map_err(|_| format!("duration {text:?} is not a number"))?;
        Duration::try_from_secs_f64(seconds)
            .map_err(|_| format!("duration {text:?} is out of range"))?
    } else {
        humantime::parse_duration(text).map_err(|e| {
            format!("duration {text:?} is not seconds or a duration such as 30s: {e}")
        })?
    };
    if duration.is_zero() {
        return Err("duration must be more than zero".into());
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use zenlive_actors::StreamKey;

    use super::*;
    use crate::recording::catalog::RecordingId;

    const T0: u64 = 1_700_000_000;

    fn entry(start_s: u64, media_s: u64, seconds: u64, digest: &str) -> SegmentEntry {
        SegmentEntry {
            path: format!("live/cam/{start_s}.mp4").into(),
            format: SegmentFormat::Fmp4,
            wall_start: UNIX_EPOCH + Duration::from_secs(T0 + start_s),
            media_start: Duration::from_secs(media_s),
            duration: Duration::from_secs(seconds),
            bytes: 1000,
            init_bytes: Some(100),
            init_digest: Some(digest.into()),
        }
    }

    fn recording(live: bool, segments: Vec<SegmentEntry>) -> Recording {
        Recording {
            stream: StreamKey::new("live", "cam").expect("key"),
            id: RecordingId::from_time(UNIX_EPOCH + Duration::from_secs(T0)),
            live,
            segments,
        }
    }

    fn three() -> Vec<SegmentEntry> {
        vec![entry(0, 0, 4, "a"), entry(4, 4, 4, "a"), entry(8, 8, 4, "a")]
    }

    #[test]
    fn a_finished_fmp4_recording_is_a_vod_playlist_of_byte_ranges() {
        let text = playlist(&recording(false, three()), Some("abc")).expect("playlist");
        assert!(text.starts_with("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:4\n"), "{text}");
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:VOD\n"));
        assert!(text.ends_with("#EXT-X-ENDLIST\n"));
        assert_eq!(text.matches("#EXT-X-MAP:URI=\"0.mp4?s=abc\",BYTERANGE=\"100@0\"").count(), 1);
        assert_eq!(text.matches("#EXT-X-BYTERANGE:900@100\n").count(), 3);
        assert!(text.contains("#EXTINF:4.000,\n#EXT-X-BYTERANGE:900@100\n2.mp4?s=abc\n"));
        assert!(text.contains("#EXT-X-PROGRAM-DATE-TIME:2023-11-14T22:13:20.000Z\n"));
        assert!(!text.contains("DISCONTINUITY"));
    }

    #[test]
    fn a_live_recording_is_an_event_playlist_without_end() {
        let text = playlist(&recording(true, three()), None).expect("playlist");
        assert!(text.contains("#EXT-X-PLAYLIST-TYPE:EVENT\n") && !text.contains("ENDLIST"));
        assert!(text.contains("\n0.mp4\n"));
        let empty = playlist(&recording(true, Vec::new()), None).expect("playlist");
        assert!(empty.contains("#EXT-X-TARGETDURATION:1\n") && !empty.contains("EXTINF"));
    }

    #[test]
    fn breaks_and_new_inits_are_discontinuities_with_a_new_map() {
        let segments = vec![entry(0, 0, 4, "a"), entry(4, 100, 4, "a"), entry(8, 104, 4, "b")];
        let text = playlist(&recording(false, segments), None).expect("playlist");
        assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 2, "{text}");
        assert_eq!(text.matches("#EXT-X-MAP").count(), 3);
    }

    #[test]
    fn ts_is_listed_whole_and_flv_is_refused() {
        let ts: Vec<_> = three()
            .into_iter()
            .map(|s| SegmentEntry {
                format: SegmentFormat::Ts,
                init_bytes: None,
                init_digest: None,
                ..s
            })
            .collect();
        let text = playlist(&recording(false, ts), None).expect("playlist");
        assert!(
            text.contains("#EXT-X-VERSION:3\n")
                && !text.contains("MAP")
                && !text.contains("BYTERANGE")
        );
        assert!(text.contains("\n1.ts\n"));
        let flv = vec![SegmentEntry { format: SegmentFormat::Flv, ..entry(0, 0, 4, "a") }];
        assert_eq!(playlist(&recording(false, flv), None), Err(VodError::NotHls));
    }

    #[test]
    fn segment_names_are_strict() {
        assert_eq!(parse_segment_name("0.mp4"), Some((0, SegmentFormat::Fmp4)));
        assert_eq!(parse_segment_name("12.ts"), Some((12, SegmentFormat::Ts)));
        for bad in [
            "",
            ".mp4",
            "1",
            "1.",
            "01.mp4",
            "-1.mp4",
            "+1.mp4",
            "1.mp4.part",
            "../1.mp4",
            "1.MP4",
            "1 .mp4",
            "１.mp4",
            "9999999999.mp4",
            "1.mkv",
            "1.mp4/",
            "1.mp4\0",
        ] {
            assert_eq!(parse_segment_name(bad), None, "{bad:?}");
        }
        assert_eq!(segment_name(3, SegmentFormat::Fmp4), "3.mp4");
    }

    #[test]
    fn a_download_plan_maps_wall_time_to_media_time_across_segments() {
        let rec = recording(false, three());
        let at = |s: u64| UNIX_EPOCH + Duration::from_secs(T0 + s);
        let plan = plan_download(&rec, at(3), Duration::from_secs(6)).expect("plan");
        assert_eq!(plan.segments, [0, 1, 2]);
        assert_eq!(
            (plan.from, plan.to),
            (MediaTime::from_millis(3000), MediaTime::from_millis(9000))
        );
        assert_eq!(plan.bytes, 3000);
        let inside = plan_download(&rec, at(5), Duration::from_secs(1)).expect("plan");
        assert_eq!(inside.segments, [1]);
        // Clamped to what was recorded.
        let wide = plan_download(&rec, at(0) - Duration::from_secs(60), Duration::from_secs(600))
            .expect("plan");
        assert_eq!((wide.from, wide.to), (MediaTime::ZERO, MediaTime::from_millis(12_000)));
        assert_eq!(plan_download(&rec, at(12), Duration::from_secs(5)), None);
        assert_eq!(
            plan_download(&rec, at(0) - Duration::from_secs(10), Duration::from_secs(5)),
            None
        );
        // A break ends the plan.
        let broken = recording(false, vec![entry(0, 0, 4, "a"), entry(4, 50, 4, "a")]);
        let plan = plan_download(&broken, at(1), Duration::from_secs(6)).expect("plan");
        assert_eq!((plan.segments, plan.to), (vec![0], MediaTime::from_millis(4000)));
    }

    #[test]
    fn start_and_duration_parse_strictly() {
        assert_eq!(parse_start("1700000000"), Ok(UNIX_EPOCH + Duration::from_secs(T0)));
        assert_eq!(
            parse_start("1700000000.5"),
            Ok(UNIX_EPOCH + Duration::from_millis(T0 * 1000 + 500))
        );
        assert_eq!(parse_start("2023-11-14T22:13:20Z"), Ok(UNIX_EPOCH + Duration::from_secs(T0)));
        assert_eq!(
            parse_start("2023-11-14T23:13:20.250+01:00"),
            Ok(UNIX_EPOCH + Duration::from_millis(T0 * 1000 + 250))
        );
        for bad in [
            "",
            "-1",
            "1e9",
            "NaN",
            "inf",
            "1.2.3",
            "999999999999999999999",
            "1969-12-31T23:59:59Z",
            "2023-11-14",
            "2023-11-14T22:13:20",
            "yesterday",
            &"1".repeat(100),
            "1700000000 ",
        ] {
            assert!(parse_start(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("7.5"), Ok(Duration::from_millis(7500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        for bad in [
            "",
            "0",
            "0s",
            "-5",
            "NaN",
            "1e400",
            "99999999999999999999999",
            "5 parsecs",
            "s",
            "1..2",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
