//! An MPEG-TS muxer for one H.264 and one AAC (ADTS) elementary stream, sans-IO.
//!
//! PES packing, PCR and stuffing are ours by necessity (`mpeg2ts` leaves PES/PCR to the
//! caller and allocates per packet); the tests read our output back with `mpeg2ts`'s
//! reader as an independent check.

use bytes::BufMut;

/// PID of the program map table.
pub const PMT_PID: u16 = 0x1000;
/// PID of the H.264 stream.
pub const VIDEO_PID: u16 = 0x100;
/// PID of the AAC stream.
pub const AUDIO_PID: u16 = 0x101;
/// Bytes in a TS packet.
pub const PACKET: usize = 188;

const STREAM_TYPE_H264: u8 = 0x1b;
const STREAM_TYPE_ADTS_AAC: u8 = 0x0f;
const PTS_MASK: u64 = (1 << 33) - 1;

/// The most bytes one PES packet of a `payload`-byte access unit takes as TS packets
/// (header, adaptation field with PCR, stuffing): what to have room for before a write.
pub fn pes_size_bound(payload: usize) -> usize {
    (payload.saturating_add(19) / 184 + 2).saturating_mul(PACKET)
}

/// Which elementary streams the program has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracks {
    /// An H.264 stream on [`VIDEO_PID`].
    pub video: bool,
    /// An AAC stream on [`AUDIO_PID`].
    pub audio: bool,
}

/// Writes TS packets; keeps the continuity counters. See the module docs.
#[derive(Debug, Clone)]
pub struct TsMuxer {
    tracks: Tracks,
    cc_pat: u8,
    cc_pmt: u8,
    cc_video: u8,
    cc_audio: u8,
}

/// MPEG-2 CRC-32 (polynomial 0x04C11DB7, no reflection): four tables per segment do not
/// justify a table or a crate.
fn crc32_mpeg2(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for &byte in data {
        crc ^= u32::from(byte) << 24;
        for _ in 0..8 {
            crc = if crc & 0x8000_0000 != 0 { (crc << 1) ^ 0x04c1_1db7 } else { crc << 1 };
        }
    }
    crc
}

fn next_cc(cc: &mut u8) -> u8 {
    let value = *cc;
    *cc = (*cc + 1) & 0x0f;
    value
}

/// Five PTS/DTS bytes with the 4-bit `prefix`.
fn timestamp_bytes(prefix: u8, ts: u64) -> [u8; 5] {
    let ts = ts & PTS_MASK;
    [
        (prefix << 4) | (((ts >> 30) as u8 & 0x07) << 1) | 1,
        (ts >> 22) as u8,
        (((ts >> 15) as u8 & 0x7f) << 1) | 1,
        (ts >> 7) as u8,
        ((ts as u8 & 0x7f) << 1) | 1,
    ]
}

impl TsMuxer {
    /// A muxer for `tracks`.
    pub fn new(tracks: Tracks) -> Self {
        Self { tracks, cc_pat: 0, cc_pmt: 0, cc_video: 0, cc_audio: 0 }
    }

    /// The tracks this muxer writes.
    pub fn tracks(&self) -> Tracks {
        self.tracks
    }

    fn pcr_pid(&self) -> u16 {
        if self.tracks.video || !self.tracks.audio {
            VIDEO_PID
        } else {
            AUDIO_PID
        }
    }

    /// Writes a PSI section (pointer field, section, CRC) as one packet.
    fn write_section(out: &mut impl BufMut, pid: u16, cc: u8, section: &[u8]) {
        out.put_slice(&[0x47, 0x40 | (pid >> 8) as u8, pid as u8, 0x10 | cc, 0x00]);
        out.put_slice(section);
        out.put_slice(&crc32_mpeg2(section).to_be_bytes());
        out.put_bytes(0xff, PACKET.saturating_sub(5 + section.len() + 4));
    }

    /// Writes the PAT and PMT; call at the start of every segment.
    pub fn write_tables(&mut self, out: &mut impl BufMut) {
        let pat = [
            0x00,
            0xb0,
            13,
            0x00,
            0x01,
            0xc1,
            0x00,
            0x00,
            0x00,
            0x01,
            0xe0 | (PMT_PID >> 8) as u8,
            PMT_PID as u8,
        ];
        let cc = next_cc(&mut self.cc_pat);
        Self::write_section(out, 0, cc, &pat);

        let mut streams = Vec::with_capacity(10);
        if self.tracks.video {
            streams.extend_from_slice(&[
                STREAM_TYPE_H264,
                0xe0 | (VIDEO_PID >> 8) as u8,
                VIDEO_PID as u8,
                0xf0,
                0,
            ]);
        }
        if self.tracks.audio {
            streams.extend_from_slice(&[
                STREAM_TYPE_ADTS_AAC,
                0xe0 | (AUDIO_PID >> 8) as u8,
                AUDIO_PID as u8,
                0xf0,
                0,
            ]);
        }
        let section_length = (9 + streams.len() + 4) as u8;
        let pcr = self.pcr_pid();
        let mut pmt = vec![0x02, 0xb0, section_length, 0x00, 0x01, 0xc1, 0x00, 0x00];
        pmt.extend_from_slice(&[0xe0 | (pcr >> 8) as u8, pcr as u8, 0xf0, 0x00]);
        pmt.extend_from_slice(&streams);
        let cc = next_cc(&mut self.cc_pmt);
        Self::write_section(out, PMT_PID, cc, &pmt);
    }

    /// Writes one H.264 access unit (Annex B) as a PES packet.
    pub fn write_video(
        &mut self,
        out: &mut impl BufMut,
        pts_90k: u64,
        dts_90k: u64,
        keyframe: bool,
        annexb: &[u8],
    ) {
        let mut header = [0u8; 19];
        header[..4].copy_from_slice(&[0, 0, 1, 0xe0]);
        // PES_packet_length 0: unbounded, allowed for video in TS.
        header[6] = 0x80;
        let header_len = if pts_90k == dts_90k {
            header[7] = 0x80;
            header[8] = 5;
            header[9..14].copy_from_slice(&timestamp_bytes(0x2, pts_90k));
            14
        } else {
            header[7] = 0xc0;
            header[8] = 10;
            header[9..14].copy_from_slice(&timestamp_bytes(0x3, pts_90k));
            header[14..19].copy_from_slice(&timestamp_bytes(0x1, dts_90k));
            19
        };
        let pcr = (self.pcr_pid() == VIDEO_PID).then_some(dts_90k);
        let mut cc = self.cc_video;
        write_pes(out, VIDEO_PID, &mut cc, &header[..header_len], annexb, pcr, keyframe);
        self.cc_video = cc;
    }

    /// Writes one or more ADTS frames as a PES packet with presentation time `pts_90k`.
    pub fn write_audio(&mut self, out: &mut impl BufMut, pts_90k: u64, adts: &[u8]) {
        let mut header = [0u8; 14];
        header[..4].copy_from_slice(&[0, 0, 1, 0xc0]);
        let pes_len = 8 + adts.len();
        let pes_len = if pes_len > 0xffff { 0 } else { pes_len as u16 };
        header[4..6].copy_from_slice(&pes_len.to_be_bytes());
        header[6] = 0x80;
        header[7] = 0x80;
        header[8] = 5;
        header[9..14].copy_from_slice(&timestamp_bytes(0x2, pts_90k));
        let pcr = (self.pcr_pid() == AUDIO_PID).then_some(pts_90k);
        let mut cc = self.cc_audio;
        write_pes(out, AUDIO_PID, &mut cc, &header, adts, pcr, pcr.is_some());
        self.cc_audio = cc;
    }
}

/// Splits `header ++ data` into TS packets on `pid`; the first carries PUSI and, when
/// asked, a PCR and the random access indicator; the last is padded by stuffing.
fn write_pes(
    out: &mut impl BufMut,
    pid: u16,
    cc: &mut u8,
    header: &[u8],
    data: &[u8],
    pcr: Option<u64>,
    random_access: bool,
) {
    let total = header.len() + data.len();
    let mut written = 0;
    let mut first = true;
    while written < total {
        let flags_needed = first && (pcr.is_some() || random_access);
        let min_af = if flags_needed { 2 + if pcr.is_some() { 6 } else { 0 } } else { 0 };
        let payload = (total - written).min(184 - min_af);
        let af = 184 - payload;
        let control = if af > 0 { 0x30 } else { 0x10 };
        out.put_slice(&[
            0x47,
            (if first { 0x40 } else { 0 }) | ((pid >> 8) as u8 & 0x1f),
            pid as u8,
            control | next_cc(cc),
        ]);
        if af > 0 {
            out.put_u8((af - 1) as u8);
            if af > 1 {
                let mut flag_byte = 0u8;
                if flags_needed && random_access {
                    flag_byte |= 0x40;
                }
                let pcr = pcr.filter(|_| flags_needed);
                if pcr.is_some() {
                    flag_byte |= 0x10;
                }
                out.put_u8(flag_byte);
                let mut used = 2;
                if let Some(base) = pcr {
                    let base = base & PTS_MASK;
                    out.put_slice(&[
                        (base >> 25) as u8,
                        (base >> 17) as u8,
                        (base >> 9) as u8,
                        (base >> 1) as u8,
                        ((base as u8 & 1) << 7) | 0x7e,
                        0,
                    ]);
                    used += 6;
                }
                out.put_bytes(0xff, af - used);
            }
        }
        // Copy this packet's share of header, then data.
        let mut left = payload;
        if written < header.len() {
            let n = (header.len() - written).min(left);
            out.put_slice(&header[written..written + n]);
            written += n;
            left -= n;
        }
        if left > 0 {
            let at = written - header.len();
            out.put_slice(&data[at..at + left]);
            written += left;
        }
        first = false;
    }
}

#[cfg(test)]
mod tests {
    use mpeg2ts::ts::{ReadTsPacket, TsPacketReader, TsPayload};

    use super::*;

    fn read_packets(bytes: &[u8]) -> Vec<mpeg2ts::ts::TsPacket> {
        let mut reader = TsPacketReader::new(bytes);
        let mut packets = Vec::new();
        while let Some(packet) = reader.read_ts_packet().expect("valid TS") {
            packets.push(packet);
        }
        packets
    }

    #[test]
    fn crc_matches_the_standard_check_value() {
        assert_eq!(crc32_mpeg2(b"123456789"), 0x0376_e6e7);
    }

    #[test]
    fn tables_and_pes_read_back_with_mpeg2ts() {
        let mut mux = TsMuxer::new(Tracks { video: true, audio: true });
        let mut out = Vec::new();
        mux.write_tables(&mut out);
        let frame: Vec<u8> =
            [0, 0, 0, 1, 0x09, 0xf0].iter().copied().chain((0..1000).map(|i| i as u8)).collect();
        mux.write_video(&mut out, 183_000, 180_000, true, &frame);
        mux.write_audio(&mut out, 181_000, &[0xff, 0xf1, 0x50, 0x80, 0x01, 0x1f, 0xfc, 1, 2]);
        assert_eq!(out.len() % PACKET, 0);

        let packets = read_packets(&out);
        assert!(matches!(packets[0].payload, Some(TsPayload::Pat(_))));
        assert!(matches!(packets[1].payload, Some(TsPayload::Pmt(_))));
        let Some(TsPayload::PesStart(pes)) = &packets[2].payload else { panic!("video PES start") };
        assert_eq!(pes.header.pts.map(|t| t.as_u64()), Some(183_000));
        assert_eq!(pes.header.dts.map(|t| t.as_u64()), Some(180_000));
        let af = packets[2].adaptation_field.as_ref().expect("adaptation field");
        assert!(af.random_access_indicator);
        assert_eq!(af.pcr.map(|p| p.as_u64() / 300), Some(180_000));
        let audio =
            packets.iter().find(|p| p.header.pid.as_u16() == AUDIO_PID).expect("audio packet");
        let Some(TsPayload::PesStart(pes)) = &audio.payload else { panic!("audio PES") };
        assert_eq!(pes.header.pts.map(|t| t.as_u64()), Some(181_000));
        assert_eq!(pes.header.dts, None);
    }

    #[test]
    fn continuity_counters_advance_per_pid() {
        let mut mux = TsMuxer::new(Tracks { video: true, audio: false });
        let mut out = Vec::new();
        mux.write_tables(&mut out);
        for i in 0..20u64 {
            mux.write_video(&mut out, i * 3000, i * 3000, i == 0, &[0u8; 400]);
        }
        let ccs: Vec<u8> = read_packets(&out)
            .iter()
            .filter(|p| p.header.pid.as_u16() == VIDEO_PID)
            .map(|p| p.header.continuity_counter.as_u8())
            .collect();
        assert!(ccs.len() > 40);
        for pair in ccs.windows(2) {
            assert_eq!(pair[1], (pair[0] + 1) % 16);
        }
    }

    #[test]
    fn every_payload_size_fills_whole_packets() {
        let mut mux = TsMuxer::new(Tracks { video: true, audio: true });
        for len in 0..600 {
            let mut out = Vec::new();
            mux.write_tables(&mut out);
            mux.write_video(&mut out, 9000, 9000, len % 7 == 0, &vec![0xaa; len]);
            mux.write_audio(&mut out, 9000, &vec![0xbb; len]);
            assert_eq!(out.len() % PACKET, 0, "len {len}");
            read_packets(&out);
        }
    }

    #[test]
    fn pes_size_bound_covers_every_write() {
        let mut mux = TsMuxer::new(Tracks { video: true, audio: true });
        for len in (0..2000).chain([65_535, 65_536, 200_000]) {
            for (pts, dts, keyframe) in [(9000, 9000, false), (12_000, 9000, true)] {
                let mut out = Vec::new();
                mux.write_video(&mut out, pts, dts, keyframe, &vec![0xaa; len]);
                assert!(out.len() <= pes_size_bound(len), "video {len}: {}", out.len());
            }
            let mut out = Vec::new();
            mux.write_audio(&mut out, 9000, &vec![0xbb; len]);
            assert!(out.len() <= pes_size_bound(len), "audio {len}: {}", out.len());
        }
    }
}
