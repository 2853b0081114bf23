//! What an operator installs beside the binary: the systemd unit in `deploy/` is valid for
//! `systemd-analyze verify` (run against a copy whose `ExecStart` names the binary this
//! build made), and the binary it starts accepts its command line.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn the_systemd_unit_verifies() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let unit = std::fs::read_to_string(root.join("deploy/zenlive.service")).expect("the unit");
    assert!(
        unit.contains("ExecStart=/usr/local/bin/zenlive --config /etc/zenlive/zenlive.toml"),
        "the documented install path"
    );
    for option in ["NoNewPrivileges=yes", "ProtectSystem=strict", "ExecReload=/bin/kill -HUP"] {
        assert!(unit.contains(option), "the unit sets {option}");
    }
    let binary = env!("CARGO_BIN_EXE_zenlive");
    let dir = tempfile::tempdir().expect("tempdir");
    let copy = dir.path().join("zenlive.service");
    std::fs::write(&copy, unit.replace("/usr/local/bin/zenlive", binary)).expect("write");
    let verify = Command::new("systemd-analyze").arg("verify").arg(&copy).output();
    let verify = verify.expect("systemd-analyze is required: run scripts/test, which installs it");
    let stderr = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && stderr.trim().is_empty(), "systemd-analyze: {stderr}");

    // The command line it runs parses: `check` with the example configuration.
    let check = Command::new(binary)
        .args(["check", "--config"])
        .arg(root.join("zenlive.example.toml"))
        .output()
        .expect("run zenlive");
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
}
