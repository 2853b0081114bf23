//! Trickle ICE on a WHIP or WHEP session (RFC 9725 §4.3; fragments as RFC 8840 defines
//! them), sans-IO: what a `PATCH` body says, and whether its `If-Match` names the session.
//!
//! The node is ICE-lite: it never checks connectivity itself, it answers the client's
//! checks and learns the client's address from them. The candidates a client trickles
//! after its offer therefore need nothing more from the node: they are read, counted and
//! accepted (`204 No Content`). An ICE restart (a fragment with a new `ice-ufrag` and
//! `ice-pwd`, RFC 9725 §4.3.2) starts a new ICE session under the same DTLS: the session
//! answers `200 OK` with its own new credentials ([`answer_fragment`]). Each session's
//! `201` carries an `ETag` naming its ICE session ([`IceIdentity::etag`]); a `PATCH` whose
//! `If-Match` names another gets `412`.

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

    /// The identity after an ICE restart: `local_ufrag` answering the client's `remote_ufrag`.
    pub fn restarted(local_ufrag: &str, remote_ufrag: &str) -> Self {
        Self { local_ufrag: local_ufrag.to_owned(), remote_ufrag: Some(remote_ufrag.to_owned()) }
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
pub fn ice_ufrag(sdp: &str) -> Option<&str> {
    attribute(sdp, "a=ice-ufrag:")
}

/// The first `a=ice-pwd:` value of an SDP text.
pub fn ice_pwd(sdp: &str) -> Option<&str> {
    attribute(sdp, "a=ice-pwd:")
}

fn attribute<'a>(sdp: &'a str, prefix: &str) -> Option<&'a str> {
    sdp.lines()
        .find_map(|line| line.trim_end_matches('\r').strip_prefix(prefix))
        .map(str::trim)
        .filter(|value| !value.is_empty())
}

/// `sdp` with every `a=ice-ufrag:` and `a=ice-pwd:` line saying `ufrag` and `pwd`: the
/// client's offer as it stands after an ICE restart.
pub fn with_credentials(sdp: &str, ufrag: &str, pwd: &str) -> String {
    let mut out = String::with_capacity(sdp.len() + 64);
    for line in sdp.split_inclusive('\n') {
        let text = line.trim_end_matches(['\r', '\n']);
        let end = &line[text.len()..];
        if text.starts_with("a=ice-ufrag:") {
            out.push_str("a=ice-ufrag:");
            out.push_str(ufrag);
            out.push_str(end);
        } else if text.starts_with("a=ice-pwd:") {
            out.push_str("a=ice-pwd:");
            out.push_str(pwd);
            out.push_str(end);
        } else {
            out.push_str(line);
        }
    }
    out
}

/// The `200 OK` body of an ICE restart (RFC 9725 §4.3.2): the session's new credentials
/// and its candidates, read from its new `answer`.
pub fn answer_fragment(answer: &str) -> String {
    let mut out = String::from("a=ice-lite\r\n");
    let mut ufrags = 0;
    for line in answer.lines().map(|l| l.trim_end_matches('\r')) {
        if line.starts_with("a=ice-ufrag:") {
            ufrags += 1;
            if ufrags > 1 {
                break; // the first media section's are the bundle's
            }
        }
        let wanted = ["a=ice-ufrag:", "a=ice-pwd:", "a=candidate:"];
        if wanted.iter().any(|p| line.starts_with(p)) || line == "a=end-of-candidates" {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out
}

/// What a fragment asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fragment {
    /// More candidates of the running ICE session (`end` when it says it has no more).
    Trickle {
        /// `a=candidate:` lines.
        candidates: usize,
        /// Whether it holds `a=end-of-candidates`.
        end: bool,
    },
    /// A new ICE session (another `ice-ufrag`), with the client's new credentials.
    Restart {
        /// The client's new `ice-ufrag`.
        ufrag: String,
        /// The client's new `ice-pwd`.
        pwd: String,
    },
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
    /// A new `ice-ufrag` without an `ice-pwd`, or credentials of characters ICE does not
    /// allow (RFC 8839: letters, digits, `+` and `/`; 4-256 and 22-256 of them).
    #[error("an ICE restart needs a new ice-ufrag and ice-pwd of ICE characters")]
    BadRestart,
}

impl FragmentError {
    /// The machine-readable reason.
    pub fn code(&self) -> &'static str {
        match self {
            FragmentError::TooLarge => "fragment_too_large",
            FragmentError::BadRestart => "invalid_restart",
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
    let restart = ice_ufrag(text).filter(|ufrag| Some(*ufrag) != ice.remote_ufrag.as_deref());
    if let Some(ufrag) = restart {
        let pwd = ice_pwd(text).ok_or(FragmentError::BadRestart)?;
        let ice_chars = |s: &str, least: usize| {
            (least..=256).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
        };
        if !ice_chars(ufrag, 4) || !ice_chars(pwd, 22) {
            return Err(FragmentError::BadRestart);
        }
        return Ok(Fragment::Restart { ufrag: ufrag.to_owned(), pwd: pwd.to_owned() });
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
        assert_eq!(
            read(fragment.as_bytes(), &ice()),
            Ok(Fragment::Restart {
                ufrag: "ZZZZ".into(),
                pwd: "anotherpasswordanotherpass".into()
            })
        );
        for bad in [
            "a=ice-ufrag:ZZZZ\r\n",                                          // no password
            "a=ice-ufrag:ZZZZ\r\na=ice-pwd:short\r\n",                       // too short
            "a=ice-ufrag:Z\"Z;\r\na=ice-pwd:anotherpasswordanotherpass\r\n", // not ICE chars
        ] {
            assert_eq!(read(bad.as_bytes(), &ice()), Err(FragmentError::BadRestart), "{bad}");
        }
        // The restarted offer and the answer's fragment.
        let restarted = with_credentials(OFFER, "ZZZZ", "anotherpasswordanotherpass");
        assert_eq!(ice_ufrag(&restarted), Some("ZZZZ"));
        assert_eq!(ice_pwd(&restarted), Some("anotherpasswordanotherpass"));
        assert!(restarted.ends_with("a=mid:0\r\n") && restarted.contains("m=video 9"));
        let answer = "v=0\r\na=ice-lite\r\nm=video 9 UDP/TLS/RTP/SAVPF 102\r\n\
            a=ice-ufrag:NewServerUfrag16\r\na=ice-pwd:NewServerPassword0123456789ab\r\n\
            a=candidate:1 1 udp 2130706431 127.0.0.1 8189 typ host\r\na=end-of-candidates\r\n\
            m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:NewServerUfrag16\r\n";
        assert_eq!(
            answer_fragment(answer),
            "a=ice-lite\r\na=ice-ufrag:NewServerUfrag16\r\na=ice-pwd:NewServerPassword0123456789ab\r\n\
             a=candidate:1 1 udp 2130706431 127.0.0.1 8189 typ host\r\na=end-of-candidates\r\n"
        );
        let after = IceIdentity::restarted("NewServerUfrag16", "ZZZZ");
        assert_eq!(after.etag(), "\"NewServerUfrag16\"");
        let again = "a=ice-ufrag:ZZZZ\r\na=candidate:1 1 udp 1 192.0.2.1 5000 typ host\r\n";
        assert!(matches!(read(again.as_bytes(), &after), Ok(Fragment::Trickle { .. })));
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
