//! Where a segment goes: the `recording.path` template (parsed once, when the
//! configuration loads) and the `recording.paths` patterns that select streams.
//!
//! A template is text with placeholders: `{app}`, `{key}`, `{ext}`, and `{start}` or
//! `{start:FORMAT}` (the segment's first frame's wall-clock time in UTC, `FORMAT` in
//! strftime's terms, `%Y-%m-%d_%H-%M-%S` by default). Anything else in braces is refused.
//! A rendered path is always relative and never climbs (`..`), whatever the template and
//! the stream's name, so it stays under `storage.base_path`.

use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, Utc};

/// The time format of a bare `{start}`.
pub const DEFAULT_START_FORMAT: &str = "%Y-%m-%d_%H-%M-%S";

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    App,
    Key,
    Ext,
    Start(String),
}

/// A parsed `recording.path`. See the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    parts: Vec<Part>,
}

impl PathTemplate {
    /// Parses `template`; the error says what is wrong with it.
    pub fn parse(template: &str) -> Result<Self, String> {
        if template.trim().is_empty() {
            return Err("must not be empty".into());
        }
        if template.starts_with('/') || template.starts_with('\\') {
            return Err("must be relative (it is under storage.base_path)".into());
        }
        let mut parts = Vec::new();
        let mut rest = template;
        while !rest.is_empty() {
            let Some(open) = rest.find(['{', '}']) else {
                parts.push(Part::Text(rest.to_owned()));
                break;
            };
            if rest[open..].starts_with('}') {
                return Err("has a '}' without its '{'".into());
            }
            if open > 0 {
                parts.push(Part::Text(rest[..open].to_owned()));
            }
            let close = rest[open..].find('}').ok_or("has a '{' without its '}'")? + open;
            let inner = &rest[open + 1..close];
            parts.push(match inner.split_once(':') {
                None if inner == "app" => Part::App,
                None if inner == "key" => Part::Key,
                None if inner == "ext" => Part::Ext,
                None if inner == "start" => Part::Start(DEFAULT_START_FORMAT.to_owned()),
                Some(("start", format)) => {
                    check_time_format(format)?;
                    Part::Start(format.to_owned())
                }
                _ => {
                    return Err(format!(
                        "unknown placeholder {{{inner}}} (known: {{app}}, {{key}}, {{ext}}, \
                         {{start}}, {{start:FORMAT}})"
                    ))
                }
            });
            rest = &rest[close + 1..];
        }
        for part in &parts {
            if let Part::Text(text) = part {
                if text.split(['/', '\\']).any(|c| c == "..") {
                    return Err("must not climb out of storage.base_path with '..'".into());
                }
                if text.contains('\0') {
                    return Err("must not contain NUL".into());
                }
            }
        }
        let template = Self { parts };
        // Catches a template whose every rendering is empty or climbs.
        template.render("app", "key", "mp4", SystemTime::UNIX_EPOCH)?;
        Ok(template)
    }

    /// The relative path of a segment of stream `app/key` with extension `ext` whose
    /// first frame came at `start`; an error if it would not be a plain relative path.
    pub fn render(
        &self,
        app: &str,
        key: &str,
        ext: &str,
        start: SystemTime,
    ) -> Result<PathBuf, String> {
        let start: DateTime<Utc> = start.into();
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::App => out.push_str(app),
                Part::Key => out.push_str(key),
                Part::Ext => out.push_str(ext),
                Part::Start(format) => {
                    use std::fmt::Write as _;
                    // Checked at parse time, so formatting cannot fail.
                    if write!(out, "{}", start.format(format)).is_err() {
                        return Err(format!("bad time format {format:?}"));
                    }
                }
            }
        }
        let path = PathBuf::from(out);
        if !is_plain_relative(&path) {
            return Err(format!("{} is not a plain relative path", path.display()));
        }
        Ok(path)
    }
}

/// Whether every component of `path` is a normal name (no root, no `.` or `..`), and
/// there is at least one.
fn is_plain_relative(path: &Path) -> bool {
    path.components().next().is_some()
        && path.components().all(|c| matches!(c, Component::Normal(_)))
}

fn check_time_format(format: &str) -> Result<(), String> {
    if format.is_empty() {
        return Err("{start:} needs a format such as %Y-%m-%d".into());
    }
    if StrftimeItems::new(format).any(|item| matches!(item, Item::Error)) {
        return Err(format!("{format:?} is not a valid strftime format"));
    }
    Ok(())
}

/// A `recording.paths` pattern: `app/key`, where `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamPattern {
    app: String,
    key: String,
}

impl StreamPattern {
    /// Parses `pattern`; the error says what is wrong with it.
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let Some((app, key)) = pattern.split_once('/') else {
            return Err("must be app/key, such as live/* (* matches any characters)".into());
        };
        let valid = |part: &str| {
            !part.is_empty()
                && part.chars().all(|c| c.is_ascii_alphanumeric() || "._-*".contains(c))
        };
        if !valid(app) || !valid(key) {
            return Err("must be app/key made of letters, digits, '.', '_', '-' and '*'".into());
        }
        Ok(Self { app: app.to_owned(), key: key.to_owned() })
    }

    /// Whether the stream `app/key` matches.
    pub fn matches(&self, app: &str, key: &str) -> bool {
        glob(self.app.as_bytes(), app.as_bytes()) && glob(self.key.as_bytes(), key.as_bytes())
    }
}

/// `*`-only glob matching (linear in practice: names are at most 128 bytes).
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| glob(rest, &text[skip..])),
        Some((c, rest)) => text.split_first().is_some_and(|(t, tail)| t == c && glob(rest, tail)),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_default_template_names_a_file_per_start_second() {
        // The default `recording.path` (config.rs imports this file, not the other way).
        let template =
            PathTemplate::parse("{app}/{key}/{start:%Y-%m-%d_%H-%M-%S}.{ext}").expect("valid");
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let path = template.render("live", "cam1", "mp4", at).expect("renders");
        assert_eq!(path, PathBuf::from("live/cam1/2023-11-14_22-13-20.mp4"));
        let bare = PathTemplate::parse("{key}-{start}.{ext}").expect("valid");
        assert_eq!(
            bare.render("live", "x", "ts", at).expect("renders"),
            PathBuf::from("x-2023-11-14_22-13-20.ts")
        );
    }

    #[test]
    fn bad_templates_are_refused_with_a_reason() {
        for (template, says) in [
            ("", "empty"),
            ("/abs/{key}.{ext}", "relative"),
            ("{app}/{nope}.{ext}", "unknown placeholder {nope}"),
            ("{app}/{key", "without its '}'"),
            ("{app}}/x", "without its '{'"),
            ("../{key}.{ext}", "climb"),
            ("{app}/../../{key}", "climb"),
            ("{start:%Q}", "strftime"),
            ("{start:}", "needs a format"),
        ] {
            let err = PathTemplate::parse(template).expect_err(template);
            assert!(err.contains(says), "{template}: {err}");
        }
    }

    #[test]
    fn rendered_paths_never_climb() {
        let template = PathTemplate::parse("{app}/{key}.{ext}").expect("valid");
        assert!(template.render("..", "x", "mp4", SystemTime::UNIX_EPOCH).is_err());
        assert!(template.render(".", ".", "mp4", SystemTime::UNIX_EPOCH).is_err());
    }

    #[test]
    fn patterns_select_streams() {
        let live = StreamPattern::parse("live/*").expect("valid");
        assert!(live.matches("live", "anything") && !live.matches("other", "x"));
        let shows = StreamPattern::parse("*/show-*").expect("valid");
        assert!(shows.matches("a", "show-1") && !shows.matches("a", "shows"));
        let exact = StreamPattern::parse("live/main").expect("valid");
        assert!(exact.matches("live", "main") && !exact.matches("live", "main2"));
        for bad in ["live", "live/", "/x", "live/a b", "a/b/c"] {
            assert!(StreamPattern::parse(bad).is_err(), "{bad}");
        }
    }
}
