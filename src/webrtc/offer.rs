//! The first look at a WHIP offer, before it reaches the WebRTC stack or admission: size,
//! text, and at least one media section this node can ingest (H.264, VP8, VP9 or AV1
//! video, or Opus audio).
//! Sans-IO and cheap, so a hostile or useless offer is refused with a reason before any
//! stream name is claimed or any key is generated.

/// Largest SDP offer accepted (browsers send 5-10 KB; simulcast with many codecs ~20 KB).
pub const MAX_OFFER_BYTES: usize = 64 * 1024;

/// Most media sections in one offer.
pub const MAX_MEDIA_SECTIONS: usize = 16;

/// Why an offer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// Over [`MAX_OFFER_BYTES`].
    #[error("the offer is over {MAX_OFFER_BYTES} bytes")]
    TooLarge,
    /// Not UTF-8 text, or not an SDP (`v=0` first).
    #[error("the body is not an SDP offer")]
    NotSdp,
    /// No `m=audio` or `m=video` section.
    #[error("the offer has no audio or video section")]
    NoMedia,
    /// Over [`MAX_MEDIA_SECTIONS`].
    #[error("the offer has more than {MAX_MEDIA_SECTIONS} media sections")]
    TooManySections,
    /// Media, but none in a codec the node ingests.
    #[error(
        "no offered codec is supported: send H.264 (packetization-mode=1), VP8, VP9 or AV1 video, or Opus audio"
    )]
    NoSupportedCodec,
}

impl OfferError {
    /// A short machine-readable code for the JSON refusal and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge => "offer_too_large",
            Self::NotSdp => "invalid_sdp",
            Self::NoMedia => "no_media",
            Self::TooManySections => "too_many_media_sections",
            Self::NoSupportedCodec => "unsupported_codecs",
        }
    }
}

/// What an acceptable offer holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OfferSummary {
    /// It offers H.264 video.
    pub h264: bool,
    /// It offers VP8 video.
    pub vp8: bool,
    /// It offers VP9 video.
    pub vp9: bool,
    /// It offers AV1 video.
    pub av1: bool,
    /// It offers Opus audio.
    pub opus: bool,
}

impl OfferSummary {
    /// The video codec to receive from a publisher, the first offered of H.264 (every
    /// output carries it), VP9 and AV1 (fMP4 HLS, recordings and Enhanced RTMP carry
    /// them; MPEG-TS HLS does not), and VP8 (WebRTC viewers only); H.264 when it offers
    /// none (audio only).
    pub fn publish_video(&self) -> zenlive_media::Codec {
        use zenlive_media::Codec;
        [Codec::H264, Codec::Vp9, Codec::Av1, Codec::Vp8]
            .into_iter()
            .find(|codec| self.offers_video(*codec))
            .unwrap_or(Codec::H264)
    }

    /// Whether it offers `codec` (video).
    pub fn offers_video(&self, codec: zenlive_media::Codec) -> bool {
        match codec {
            zenlive_media::Codec::H264 => self.h264,
            zenlive_media::Codec::Vp8 => self.vp8,
            zenlive_media::Codec::Vp9 => self.vp9,
            zenlive_media::Codec::Av1 => self.av1,
            _ => false,
        }
    }

    /// Whether it offers any video codec the node sends or receives.
    pub fn any_video(&self) -> bool {
        self.h264 || self.vp8 || self.vp9 || self.av1
    }
}

/// Checks an offer's body. See the module docs.
pub fn check(body: &[u8]) -> Result<(String, OfferSummary), OfferError> {
    if body.len() > MAX_OFFER_BYTES {
        return Err(OfferError::TooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|_| OfferError::NotSdp)?;
    if !text.trim_start().starts_with("v=0") {
        return Err(OfferError::NotSdp);
    }
    let mut sections = 0;
    let mut kind = "";
    let mut summary = OfferSummary::default();
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(media) = line.strip_prefix("m=") {
            sections += 1;
            if sections > MAX_MEDIA_SECTIONS {
                return Err(OfferError::TooManySections);
            }
            kind = media.split(' ').next().unwrap_or("");
        } else if let Some(rtpmap) = line.strip_prefix("a=rtpmap:") {
            let codec = rtpmap.split([' ', '/']).nth(1).unwrap_or("");
            match kind {
                "video" if codec.eq_ignore_ascii_case("H264") => summary.h264 = true,
                "video" if codec.eq_ignore_ascii_case("VP8") => summary.vp8 = true,
                "video" if codec.eq_ignore_ascii_case("VP9") => summary.vp9 = true,
                "video" if codec.eq_ignore_ascii_case("AV1") => summary.av1 = true,
                "audio" if codec.eq_ignore_ascii_case("opus") => summary.opus = true,
                _ => {}
            }
        }
    }
    let has_media = text.lines().any(|l| l.starts_with("m=audio") || l.starts_with("m=video"));
    if !has_media {
        return Err(OfferError::NoMedia);
    }
    if !summary.any_video() && !summary.opus {
        return Err(OfferError::NoSupportedCodec);
    }
    Ok((text.to_owned(), summary))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=rtpmap:111 opus/48000/2\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 102 96\r\na=rtpmap:102 H264/90000\r\na=rtpmap:96 VP8/90000\r\n";

    #[test]
    fn a_browser_like_offer_passes() {
        let (_, summary) = check(OFFER.as_bytes()).expect("valid");
        assert_eq!(
            summary,
            OfferSummary { h264: true, vp8: true, opus: true, ..Default::default() }
        );
        assert_eq!(summary.publish_video(), zenlive_media::Codec::H264, "H.264 preferred");
        let (_, vp8) = check(OFFER.replace("H264", "X").as_bytes()).expect("valid");
        assert_eq!(vp8.publish_video(), zenlive_media::Codec::Vp8);
        // VP9 and AV1 reach more outputs than VP8; H.264 still comes first.
        let (_, vp9) = check(OFFER.replace("H264", "VP9").as_bytes()).expect("valid");
        assert_eq!(vp9.publish_video(), zenlive_media::Codec::Vp9);
        let (_, av1) = check(OFFER.replace("H264", "AV1").as_bytes()).expect("valid");
        assert_eq!(av1.publish_video(), zenlive_media::Codec::Av1);
        let all = OFFER.replace("VP8/90000", "VP8/90000\r\na=rtpmap:98 VP9/90000");
        let (_, all) = check(all.as_bytes()).expect("valid");
        assert_eq!((all.vp9, all.publish_video()), (true, zenlive_media::Codec::H264));
    }

    #[test]
    fn useless_offers_are_refused_with_a_reason() {
        let unknown = OFFER.replace("H264", "AV2").replace("VP8", "VP7").replace("opus", "PCMU");
        let cases: [(&[u8], OfferError); 5] = [
            (&[0xff, 0xfe, 0x00], OfferError::NotSdp),
            (b"hello", OfferError::NotSdp),
            (b"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\n", OfferError::NoMedia),
            (unknown.as_bytes(), OfferError::NoSupportedCodec),
            (&[b'v'; MAX_OFFER_BYTES + 1], OfferError::TooLarge),
        ];
        for (body, expected) in cases {
            assert_eq!(check(body).map(|(_, s)| s), Err(expected));
        }
        let many = format!("v=0\r\n{}", "m=video 9 UDP/TLS/RTP/SAVPF 96\r\n".repeat(17));
        assert_eq!(check(many.as_bytes()).map(|(_, s)| s), Err(OfferError::TooManySections));
    }

    #[test]
    fn codecs_count_only_in_their_kind_of_section() {
        let swapped = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n";
        assert_eq!(check(swapped.as_bytes()).map(|(_, s)| s), Err(OfferError::NoSupportedCodec));
    }

    proptest! {
        #[test]
        fn any_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = check(&body);
        }
    }
}
