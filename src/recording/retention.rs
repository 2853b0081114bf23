//! Retention of finished segments on local disk (`storage.type = "local"`):
//! `recording.delete_after` deletes segments older than that, `recording.max_local_bytes`
//! deletes the oldest until the rest fit. With S3 storage neither applies (the bucket's
//! lifecycle rules expire objects; local disk is the upload spool, and a segment not yet
//! uploaded is never deleted).
//!
//! [`RetentionIndex`] holds the decisions (sans-IO: files, their times and sizes in, what
//! to delete out). A thread of its own runs it: it scans `storage.base_path` once at start
//! (finished segments only: files with the recording's extension, never `.part`), hears of
//! every segment finished since, and checks every [`CHECK_INTERVAL`] and after each new
//! segment. Deleting blocks, so it never runs on an event loop or a writer thread.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, SystemTime};

use super::counters::RecordingCounters;

/// How often the rules are checked when no segment finishes.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(30);

/// `recording.delete_after` and `recording.max_local_bytes`; zero turns a rule off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionRules {
    /// Delete segments whose file is older than this.
    pub delete_after: Duration,
    /// Delete the oldest segments while all of them take more than this.
    pub max_bytes: u64,
}

impl RetentionRules {
    /// Whether any rule is on.
    pub fn any(&self) -> bool {
        !self.delete_after.is_zero() || self.max_bytes != 0
    }
}

/// Why a segment was deleted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// Older than `recording.delete_after`.
    Age,
    /// Over `recording.max_local_bytes`.
    Size,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Self::Age => "age",
            Self::Size => "size",
        }
    }
}

/// Finished segments, oldest first. See the module docs.
#[derive(Debug, Default)]
pub struct RetentionIndex {
    files: BTreeSet<(SystemTime, PathBuf, u64)>,
    bytes: u64,
}

impl RetentionIndex {
    /// Adds a segment finished at `at`.
    pub fn add(&mut self, path: PathBuf, at: SystemTime, bytes: u64) {
        if self.files.insert((at, path, bytes)) {
            self.bytes += bytes;
        }
    }

    /// Bytes of every segment known.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Takes the segments `rules` condemn at `now`, oldest first.
    pub fn expired(&mut self, rules: RetentionRules, now: SystemTime) -> Vec<(PathBuf, Reason)> {
        let mut out = Vec::new();
        while let Some((at, _, bytes)) = self.files.first() {
            let old = !rules.delete_after.is_zero()
                && now.duration_since(*at).is_ok_and(|age| age > rules.delete_after);
            let over = rules.max_bytes != 0 && self.bytes > rules.max_bytes;
            if !old && !over {
                break;
            }
            self.bytes -= bytes;
            if let Some((_, path, _)) = self.files.pop_first() {
                out.push((path, if old { Reason::Age } else { Reason::Size }));
            }
        }
        out
    }
}

/// The retention thread's handle: tells it of finished segments. Cloning shares it.
#[derive(Clone)]
pub struct Retention {
    tx: Sender<(PathBuf, u64)>,
}

impl Retention {
    /// Starts the retention thread over `root` for segments ending in `.{ext}`.
    pub fn start(
        root: PathBuf,
        ext: &'static str,
        rules: RetentionRules,
        counters: RecordingCounters,
    ) -> std::io::Result<Self> {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("zenlive-retention".into())
            .spawn(move || run(&root, ext, rules, &counters, rx))?;
        Ok(Self { tx })
    }

    /// A segment finished at `path` (now), `bytes` long.
    pub fn add(&self, path: PathBuf, bytes: u64) {
        // The thread ends only with the process: a send cannot fail before.
        let _ = self.tx.send((path, bytes));
    }
}

fn run(
    root: &Path,
    ext: &str,
    rules: RetentionRules,
    counters: &RecordingCounters,
    rx: Receiver<(PathBuf, u64)>,
) {
    let mut index = RetentionIndex::default();
    scan(root, ext, &mut index);
    tracing::info!(root = %root.display(), segments_bytes = index.bytes(), delete_after = ?rules.delete_after, max_bytes = rules.max_bytes, "recording retention started");
    loop {
        match rx.recv_timeout(CHECK_INTERVAL) {
            Ok((path, bytes)) => index.add(path, SystemTime::now(), bytes),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        for (path, reason) in index.expired(rules, SystemTime::now()) {
            match std::fs::remove_file(&path) {
                Ok(()) => {
                    counters.retention_deleted.with_label_values(&[reason.as_str()]).inc();
                    tracing::info!(path = %path.display(), reason = reason.as_str(), "recording segment deleted by retention");
                    remove_empty_parents(root, &path);
                }
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    tracing::error!(path = %path.display(), %error, "retention could not delete a recording segment")
                }
            }
        }
    }
}

/// Every finished segment under `root` (recursively), with its modification time.
fn scan(root: &Path, ext: &str, index: &mut RetentionIndex) {
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(meta) = entry.metadata() else { continue };
            if meta.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == ext) {
                index.add(path, meta.modified().unwrap_or(SystemTime::UNIX_EPOCH), meta.len());
            }
        }
    }
}

/// Removes `path`'s parent directories up to `root` while they are empty.
fn remove_empty_parents(root: &Path, path: &Path) {
    let mut dir = path.parent();
    while let Some(d) = dir {
        if d == root || !d.starts_with(root) || std::fs::remove_dir(d).is_err() {
            break;
        }
        dir = d.parent();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_go_first_by_age_then_by_size() {
        let t = |s: u64| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let mut index = RetentionIndex::default();
        index.add("c".into(), t(300), 10);
        index.add("a".into(), t(100), 10);
        index.add("b".into(), t(200), 10);
        let rules = RetentionRules { delete_after: Duration::from_secs(150), max_bytes: 15 };
        let gone = index.expired(rules, t(320));
        assert_eq!(gone, [(PathBuf::from("a"), Reason::Age), (PathBuf::from("b"), Reason::Size)]);
        assert_eq!(index.bytes(), 10);
        let off = RetentionRules { delete_after: Duration::ZERO, max_bytes: 0 };
        assert!(index.expired(off, t(10_000)).is_empty());
    }
}
