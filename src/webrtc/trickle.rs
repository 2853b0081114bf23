//! Trickle ICE on a WHIP or WHEP session (RFC 9725 §4.3; fragments as RFC 8840 defines
//! them), sans-IO: what a `PATCH` body says, and whether its `If-Match` names the session.
//!
//! The node is ICE-lite: it never checks connectivity itself, it answers the client's
//! checks and learns the client's address from them. The candidates a client trickles
//! after its offer therefore need nothing more from the node: they are read, counted and
//! accepted (`204 No Content`). An ICE restart (a fragment with a new `ice-ufrag`) is not
//! supported (`422`): the client keeps its session as it is, or starts a new one. Each
//! session's `201` carries an `ETag` naming its ICE session ([`IceIdentity::etag`]); a
//! `PATCH` whose `If-Match` names another gets `412`.

/// The media type of a trickle or restart fragment.
pub const FRAGMENT_TYPE: &str = "application/trickle-ice-sdpfrag";

/// The most a fragment may hold: a few dozen candidates fit in a tenth of it.
pub const MAX_FRAGMENT_BYTES: usize = 16 * 1024;

/// The ICE session of a WHIP or WHEP session: its own username fragment (which names it)
/// and the one the client offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IceIdentity {
    local_ufrag: String,
    remote_ufrag: Option<String>,
}

impl IceIdentity {
    /// The identity of a session that answered with `local_ufrag` an offer with
    /// `offer` (whose `a=ice-ufrag`, when it has one, is the client's).
    pub fn new(local_ufrag: &str, offer: &str) -> Self {
        Self {
            local_ufrag: local_ufrag.to_owned(),
            remote_ufrag: ice_ufrag(offer).map(str::to_owned),
        }
    }

    /// The session's entity tag (quoted, as the `ETag` header carries it).
    pub fn etag(&self) -> String {
        format!("\"{}\"", self.local_ufrag)
    }

    /// Whether an `If-Match` value lets a request through: `*`, or a list that holds this
    /// session's tag (weak or strong).
    pub fn matches(&self, if_match: &str) -> bool {
        let etag = self.etag();
        if_match
            .split(',')
            .map(str::trim)
            .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == etag)
    }
}

/// The first `a=ice-ufrag:` value of an SDP text.
fn ice_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|line| line.trim_end_matches('\r').strip_prefix("a=ice-ufrag:"))
        .map(str::trim)
        .filter(|ufrag| !ufrag.is_empty())
}

/// What a fragment asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fragment {
    /// More candidates of the running ICE session (`end` when it says it has no more).
    Trickle {
        /// `a=candidate:` lines.
        candidates: usize,
        /// Whether it holds `a=end-of-candidates`.
        end: bool,
    },
    /// A new ICE session (another `ice-ufrag`).
    Restart,
}

/// Why a fragment was not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    /// Larger than [`MAX_FRAGMENT_BYTES`].
    #[error("the fragment is larger than {MAX_FRAGMENT_BYTES} bytes")]
    TooLarge,
    /// Not UTF-8 text.
    #[error("the fragment is not text")]
    NotText,
    /// A line that is not `<letter>=<value>`.
    #[error("line {0} of the fragment is not an SDP line")]
    NotSdp(usize),
    /// A candidate line with fewer fields than RFC 8839 requires.
    #[error("line {0} of the fragment is not a candidate")]
    BadCandidate(usize),
}

impl FragmentError {
    /// The machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            FragmentError::TooLarge => "fragment_too_large",
            _ => "invalid_fragment",
        }
    }
}

/// Reads a `PATCH` body for the session `ice`.
pub fn read(body: &[u8], ice: &IceIdentity) -> Result<Fragment, FragmentError> {
    if body.len() > MAX_FRAGMENT_BYTES {
        return Err(FragmentError::TooLarge);
    }
    let text = std::str::from_utf8(body).map_err(|_| FragmentError::NotText)?;
    let (mut candidates, mut end) = (0, false);
    for (number, line) in text.lines().enumerate().map(|(i, l)| (i + 1, l.trim_end_matches('\r'))) {
        if line.is_empty() {
            continue;
        }
        let bytes = line.as_bytes();
        if bytes.len() < 2 || !bytes[0].is_ascii_lowercase() || bytes[1] != b'=' {
            return Err(FragmentError::NotSdp(number));
        }
        if let Some(candidate) = line.strip_prefix("a=candidate:") {
            // foundation component transport priority address port "typ" type
            if candidate.split_whitespace().count() < 8 {
                return Err(FragmentError::BadCandidate(number));
            }
            candidates += 1;
        } else if line == "a=end-of-candidates" {
            end = true;
        }
    }
    let restart = ice_ufrag(text).is_some_and(|ufrag| Some(ufrag) != ice.remote_ufrag.as_deref());
    if restart {
        return Ok(Fragment::Restart);
    }
    Ok(Fragment::Trickle { candidates, end })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const OFFER: &str = "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
        a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
        m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=mid:0\r\n";

    fn ice() -> IceIdentity {
        IceIdentity::new("ServerUfrag16chr", OFFER)
    }

    #[test]
    fn a_trickle_fragment_is_counted() {
        let fragment = "a=ice-ufrag:EsAw\r\na=ice-pwd:P2uYro0UCOQ4zxjKXaWCBui1\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\n\
            a=candidate:1387637174 1 udp 2122260223 192.0.2.1 61764 typ host generation 0\r\n\
            a=candidate:3471623853 1 udp 2122194687 198.51.100.2 61765 typ host generation 0\r\n\
            a=end-of-candidates\r\n";
        assert_eq!(
            read(fragment.as_bytes(), &ice()),
            Ok(Fragment::Trickle { candidates: 2, end: true })
        );
        // Without a ufrag, the fragment is for the running session.
        let bare = "a=candidate:1 1 udp 1 192.0.2.1 5000 typ host\n";
        assert_eq!(
            read(bare.as_bytes(), &ice()),
            Ok(Fragment::Trickle { candidates: 1, end: false })
        );
    }

    #[test]
    fn a_new_ufrag_is_a_restart() {
        let fragment = "a=ice-ufrag:ZZZZ\r\na=ice-pwd:anotherpasswordanotherpass\r\n";
        assert_eq!(read(fragment.as_bytes(), &ice()), Ok(Fragment::Restart));
    }

    #[test]
    fn hostile_fragments_are_refused() {
        assert_eq!(read(&[b'a'; MAX_FRAGMENT_BYTES + 1], &ice()), Err(FragmentError::TooLarge));
        assert_eq!(read(&[0xff, 0xfe, b'a'], &ice()), Err(FragmentError::NotText));
        assert_eq!(read(b"hello\n", &ice()), Err(FragmentError::NotSdp(1)));
        assert_eq!(read(b"a=mid:0\n=x\n", &ice()), Err(FragmentError::NotSdp(2)));
        assert_eq!(read(b"a=candidate:1 1 udp\n", &ice()), Err(FragmentError::BadCandidate(1)));
        assert_eq!(FragmentError::TooLarge.code(), "fragment_too_large");
        assert_eq!(FragmentError::NotText.code(), "invalid_fragment");
    }

    #[test]
    fn if_match_names_the_session_or_anything() {
        let ice = ice();
        assert_eq!(ice.etag(), "\"ServerUfrag16chr\"");
        assert!(ice.matches("*"));
        assert!(ice.matches("\"ServerUfrag16chr\""));
        assert!(ice.matches("W/\"ServerUfrag16chr\""));
        assert!(ice.matches("\"other\", \"ServerUfrag16chr\""));
        assert!(!ice.matches("\"other\""));
        assert!(!ice.matches(""));
    }

    proptest! {
        #[test]
        fn any_bytes_are_read_or_refused_without_panicking(body in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = read(&body, &ice());
        }

        #[test]
        fn any_text_lines_are_read_or_refused(lines in proptest::collection::vec("[a-z=:0-9 .\\-]{0,40}", 0..40)) {
            let body = lines.join("\r\n");
            if let Ok(Fragment::Trickle { candidates, .. }) = read(body.as_bytes(), &ice()) {
                prop_assert!(candidates <= lines.len());
            }
        }
    }
}
