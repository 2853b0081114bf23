//! [`Protocol`]: which protocol a publisher or viewer uses, for statistics, events and
//! labels. At the bottom of the crate: a name, not protocol code (that lives in `src/`).

/// The protocol a publisher or viewer uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// RTMP publish or play.
    Rtmp,
    /// HTTP-FLV play.
    HttpFlv,
    /// HLS play (and the HLS packager).
    Hls,
    /// An in-process subscriber (the SDK, tests).
    Internal,
    /// A cluster relay: on the origin, an edge node pulling the stream; on the edge, the
    /// local copy it publishes.
    Relay,
    /// WHIP (WebRTC-HTTP ingestion) publish.
    Whip,
    /// WHEP (WebRTC-HTTP egress) play.
    Whep,
}

impl Protocol {
    /// Every protocol, in [`Protocol::index`] order.
    pub const ALL: [Self; 7] =
        [Self::Rtmp, Self::HttpFlv, Self::Hls, Self::Internal, Self::Relay, Self::Whip, Self::Whep];

    /// A dense index, for per-protocol arrays.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The protocol's name for logs and labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Rtmp => "rtmp",
            Self::HttpFlv => "http-flv",
            Self::Hls => "hls",
            Self::Internal => "internal",
            Self::Relay => "relay",
            Self::Whip => "whip",
            Self::Whep => "whep",
        }
    }
}
