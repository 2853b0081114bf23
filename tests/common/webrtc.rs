//! The scripted WebRTC clients of `tests/webrtc/` (aiortc, from PyPI): a WHIP publisher and
//! a WHEP player that report what happened on stdout, one line each.

use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

use super::StdoutLines;

/// Panics with what to do when aiortc is missing.
pub fn require_aiortc() {
    let found = std::process::Command::new("python3")
        .args(["-c", "import aiortc"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        found.is_ok_and(|s| s.success()),
        "aiortc is required for this test: run scripts/test, which installs it"
    );
}

/// The aiortc script `script` of `tests/webrtc/` on `url` with `args` (killed on drop),
/// and its report lines.
pub fn aiortc(script: &str, url: &str, args: &[&str]) -> (Child, StdoutLines) {
    require_aiortc();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webrtc").join(script);
    let mut child = Command::new("python3")
        .arg(script)
        .arg(url)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn an aiortc script");
    let lines = tokio::io::BufReader::new(child.stdout.take().expect("stdout")).lines();
    (child, lines)
}

/// `FRAMES <n> ERRORS <m>` (a WHEP player's report, without its word) → (n, m).
pub fn frames_and_errors(line: &str) -> (u64, u64) {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words[..] {
        [n, "ERRORS", m] => (n.parse().expect("a count"), m.parse().expect("a count")),
        _ => panic!("unexpected report {line:?}"),
    }
}
