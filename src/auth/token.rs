//! Where clients put tokens: `?token=` in an RTMP app or stream name (OBS users paste
//! `mystream?token=...` into the stream key box) or in a URL's query, and `Authorization:
//! Bearer` on HTTP. The one place that extracts them.

/// Splits an RTMP app or stream name into the name and its `?query`.
pub fn split_query(name: &str) -> (&str, Option<&str>) {
    match name.split_once('?') {
        Some((name, query)) => (name, Some(query)),
        None => (name, None),
    }
}

/// The value of `token` in a query string (`a=1&token=xyz`), percent-decoded.
pub fn from_query(query: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "token")
        .map(|(_, value)| percent_decode(value))
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn from_bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Decodes `%XX` escapes; anything malformed is kept as it is (the token then fails
/// verification rather than this function guessing).
fn percent_decode(value: &str) -> String {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (b, hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(decoded)) => {
                out.push(decoded);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_tokens_where_clients_put_them() {
        assert_eq!(split_query("stream?token=abc"), ("stream", Some("token=abc")));
        assert_eq!(split_query("stream"), ("stream", None));
        assert_eq!(from_query("a=1&token=x.y.z&b=2").as_deref(), Some("x.y.z"));
        assert_eq!(from_query("tokens=1").as_deref(), None);
        assert_eq!(from_query("token=a%2Eb%zz").as_deref(), Some("a.b%zz"));
        assert_eq!(from_bearer("Bearer abc"), Some("abc"));
        assert_eq!(from_bearer("bearer  abc "), Some("abc"));
        assert_eq!(from_bearer("Basic abc"), None);
        assert_eq!(from_bearer("Bearer"), None);
    }

    #[test]
    fn hostile_queries_never_panic() {
        for q in ["%", "%4", "token=%", "token=%e2%82", "&&&=", "token=\u{1F600}%FF"] {
            let _ = from_query(q);
        }
    }
}
