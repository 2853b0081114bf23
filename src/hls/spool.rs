//! `hls.storage = "files"`: finished segments as files in a spool directory, so the
//! kernel's page cache holds them and the node's heap does not ([`Spool`]).
//!
//! Layout: each running node owns `{spool_dir}/{name}/` and holds an exclusive lock on
//! `{spool_dir}/{name}.lock` for its lifetime (`{name}` is the node's id, the process id
//! and a counter, so two nodes on one machine, or in one process, never share one). A
//! segment is written to `{n}.tmp` and renamed to `{n}.ts` (an LL-HLS one to `{n}.m4s`)
//! before anyone can read it, so a
//! published file is complete and never changes; it is deleted when the packager and every
//! response are done with it ([`SpoolFile`]'s drop). At start, a node removes every
//! `{name}/` whose lock no process holds (what a crash left) and leaves the others alone;
//! files in the spool directory that are not a lock and its directory are never touched.
//!
//! Writes are plain buffered writes (no fsync): a segment lives for a minute or two, and a
//! crash throws it away anyway. Put the spool on a tmpfs (`/dev/shm/...`) to keep segments
//! off the disk entirely.
//!
//! A segment that cannot be written (disk full, directory gone or not writable) stays in
//! memory like `hls.storage = "memory"` would keep it, counted in
//! `zenlive_hls_spool_fallbacks_total` and logged once when writes start failing and once
//! when they work again: the stream and its other outputs go on, and memory stays bounded
//! by the playlist window and its grace as in memory mode.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use prometheus::core::Collector;
use prometheus::{IntCounter, IntGauge};
use zenlive_actors::StreamKey;
use zenlive_media::hls::SegmentBytes;

use super::store::{MemoryWriter, SegmentStore, SegmentWriter, StoredSegment};

const LOCK_SUFFIX: &str = ".lock";

/// The spool's Prometheus series. Cloning shares them.
#[derive(Clone)]
pub struct SpoolCounters {
    /// Segment files in the spool now.
    pub files: IntGauge,
    /// Bytes of segment files in the spool now.
    pub bytes: IntGauge,
    /// Segments kept in memory because the spool could not take them.
    pub fallbacks: IntCounter,
}

impl Default for SpoolCounters {
    fn default() -> Self {
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).expect("a valid metric");
        Self {
            files: gauge("zenlive_hls_spool_files", "HLS segment files in the spool now (hls.storage = \"files\")."),
            bytes: gauge("zenlive_hls_spool_bytes", "Bytes of HLS segment files in the spool now."),
            fallbacks: IntCounter::new(
                "zenlive_hls_spool_fallbacks_total",
                "HLS segments kept in memory because the spool could not take them (disk full, directory not writable).",
            )
            .expect("a valid metric"),
        }
    }
}

impl SpoolCounters {
    /// The series, for the node's registry.
    pub fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.files.clone()),
            Box::new(self.bytes.clone()),
            Box::new(self.fallbacks.clone()),
        ]
    }
}

/// This node's directory in the spool, held (locked) while it lives; removed on drop.
struct NodeDir {
    dir: PathBuf,
    lock_path: PathBuf,
    _lock: File,
}

impl Drop for NodeDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(&self.lock_path);
    }
}

/// The files store (see the module docs). Cloning shares it.
#[derive(Clone)]
pub struct Spool(Arc<Shared>);

struct Shared {
    /// This node's directory, or why there is none (every segment then stays in memory).
    dir: Result<Arc<NodeDir>, String>,
    next: AtomicU64,
    failing: AtomicBool,
    counters: SpoolCounters,
}

impl Spool {
    /// Takes a directory of its own under `root` for the node `node_id`, after removing
    /// what crashed nodes left there. When that fails, says why (an error line) and keeps
    /// every segment in memory, counted, rather than keeping the node from starting.
    pub fn open(root: &Path, node_id: &str, counters: SpoolCounters) -> Self {
        let dir = take_dir(root, node_id).map(Arc::new).map_err(|error| {
            let error = format!("{}: {error}", root.display());
            tracing::error!(
                %error,
                "hls: the segment spool (hls.spool_dir) cannot be used; HLS segments are kept in memory"
            );
            error
        });
        if let Ok(dir) = &dir {
            tracing::debug!(dir = %dir.dir.display(), "hls: segments are spooled to files");
        }
        let failing = AtomicBool::new(dir.is_err());
        Self(Arc::new(Shared { dir, next: AtomicU64::new(0), failing, counters }))
    }

    /// This node's directory, if it has one.
    pub fn dir(&self) -> Option<&Path> {
        self.0.dir.as_ref().ok().map(|d| d.dir.as_path())
    }

    /// A new temporary file in the node's directory, and the number it is named by.
    fn create(&self) -> std::io::Result<(File, PathBuf, u64)> {
        let node = self.0.dir.as_ref().map_err(|e| std::io::Error::other(e.clone()))?;
        let n = self.0.next.fetch_add(1, Ordering::Relaxed);
        let tmp = node.dir.join(format!("{n}.tmp"));
        let file =
            OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&tmp)?;
        Ok((file, tmp, n))
    }

    /// A segment that could not be written: counted, and logged when writes start failing.
    fn failed(&self, key: &StreamKey, sequence: u64, error: &std::io::Error) {
        self.0.counters.fallbacks.inc();
        if !self.0.failing.swap(true, Ordering::Relaxed) {
            tracing::error!(
                stream = %key,
                sequence,
                %error,
                "hls: a segment cannot be written to the spool (hls.spool_dir); segments are kept in memory until it can (zenlive_hls_spool_fallbacks_total)"
            );
        }
    }
}

impl Spool {
    /// A writer whose file is published as `{n}.{extension}`.
    fn begin_as(&self, key: &StreamKey, sequence: u64, extension: &'static str) -> SpoolWriter {
        let state = match self.create() {
            Ok((file, tmp, n)) => Writing::File { file, tmp, n, len: 0 },
            Err(error) => Writing::Memory { chunks: Vec::new(), error },
        };
        SpoolWriter { spool: self.clone(), key: key.clone(), sequence, extension, state }
    }
}

impl SegmentStore for Spool {
    fn begin(&self, key: &StreamKey, sequence: u64) -> Box<dyn SegmentWriter> {
        Box::new(self.begin_as(key, sequence, "ts"))
    }

    fn put_fmp4(
        &self,
        key: &StreamKey,
        sequence: u64,
        data: SegmentBytes,
    ) -> Option<StoredSegment> {
        Box::new(self.begin_as(key, sequence, "m4s")).finish(data)
    }

    fn streams(&self) -> bool {
        true
    }
}

/// Where a [`SpoolWriter`]'s segment is going.
enum Writing {
    /// Into its temporary file (`len` bytes so far).
    File { file: File, tmp: PathBuf, n: u64, len: u64 },
    /// Into memory, since the spool failed with `error`.
    Memory { chunks: Vec<Bytes>, error: std::io::Error },
    /// Nowhere: what was written could not be read back.
    Lost,
}

/// One segment being written into the spool.
struct SpoolWriter {
    spool: Spool,
    key: StreamKey,
    sequence: u64,
    /// The published file's extension.
    extension: &'static str,
    state: Writing,
}

impl SpoolWriter {
    /// Writing to `tmp` (open as `file`, `len` bytes written) failed with `error`: what it
    /// holds comes back into memory (it is in the page cache), with `more` after it, and
    /// the file goes.
    fn fall_back(
        &mut self,
        (file, tmp, len): (&File, &Path, u64),
        error: std::io::Error,
        more: &[Bytes],
    ) {
        let mut written = vec![0; usize::try_from(len).unwrap_or(usize::MAX)];
        let read = file.read_exact_at(&mut written, 0).map(|()| written);
        let _ = std::fs::remove_file(tmp);
        self.state = match read {
            Ok(written) => {
                let mut chunks = vec![Bytes::from(written)];
                chunks.extend_from_slice(more);
                Writing::Memory { chunks, error }
            }
            Err(read_error) => {
                self.lose(&error, &read_error);
                Writing::Lost
            }
        };
    }

    /// The segment's bytes are gone: the spool failed with `error`, and giving back what it
    /// had failed with `then`.
    fn lose(&mut self, error: &std::io::Error, then: &std::io::Error) {
        self.spool.0.counters.fallbacks.inc();
        tracing::error!(
            stream = %self.key,
            sequence = self.sequence,
            %error,
            %then,
            "hls: a segment was lost: the spool can neither take nor give back its bytes"
        );
        self.state = Writing::Lost;
    }
}

impl SegmentWriter for SpoolWriter {
    fn append(&mut self, chunks: &[Bytes]) {
        match &mut self.state {
            Writing::File { file, len, tmp, .. } => match write_chunks(file, chunks) {
                Ok(written) => *len += written,
                Err(error) => {
                    let (file, tmp, len) = (file.try_clone(), tmp.clone(), *len);
                    match file {
                        Ok(file) => self.fall_back((&file, &tmp, len), error, chunks),
                        Err(clone_error) => self.lose(&error, &clone_error),
                    }
                }
            },
            Writing::Memory { chunks: held, .. } => held.extend_from_slice(chunks),
            Writing::Lost => {}
        }
    }

    fn finish(mut self: Box<Self>, rest: SegmentBytes) -> Option<StoredSegment> {
        self.append(rest.chunks());
        match std::mem::replace(&mut self.state, Writing::Lost) {
            Writing::File { file, tmp, n, len } => {
                let path = tmp.with_file_name(format!("{n}.{}", self.extension));
                if let Err(error) = std::fs::rename(&tmp, &path) {
                    self.fall_back((&file, &tmp, len), error, &[]);
                    return self.finish(SegmentBytes::default());
                }
                drop(file);
                let shared = &self.spool.0;
                let Ok(dir) = &shared.dir else { return None };
                if shared.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(stream = %self.key, "hls: the segment spool takes segments again");
                }
                shared.counters.files.inc();
                shared.counters.bytes.add(len as i64);
                Some(StoredSegment::File(Arc::new(SpoolFile {
                    path,
                    len,
                    mapped: OnceLock::new(),
                    counters: shared.counters.clone(),
                    _dir: Arc::clone(dir),
                })))
            }
            Writing::Memory { chunks, error } => {
                self.spool.failed(&self.key, self.sequence, &error);
                Box::new(MemoryWriter(chunks)).finish(SegmentBytes::default())
            }
            Writing::Lost => None,
        }
    }
}

impl Drop for SpoolWriter {
    fn drop(&mut self) {
        if let Writing::File { tmp, .. } = &self.state {
            let _ = std::fs::remove_file(tmp);
        }
    }
}

/// Writes `chunks` to `file`; how many bytes that was.
fn write_chunks(file: &mut File, chunks: &[Bytes]) -> std::io::Result<u64> {
    let mut written = 0;
    for chunk in chunks {
        file.write_all(chunk)?;
        written += chunk.len() as u64;
    }
    Ok(written)
}

/// A published segment file: complete, never written again, deleted on drop.
pub struct SpoolFile {
    path: PathBuf,
    len: u64,
    mapped: OnceLock<Bytes>,
    counters: SpoolCounters,
    /// The directory outlives its files.
    _dir: Arc<NodeDir>,
}

impl SpoolFile {
    /// Its size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its bytes, mapped from the page cache on first use and shared by every later
    /// response (a segment nobody asks for is never mapped, so never in the node's
    /// resident memory).
    pub fn bytes(&self) -> std::io::Result<Bytes> {
        if let Some(bytes) = self.mapped.get() {
            return Ok(bytes.clone());
        }
        let file = File::open(&self.path)?;
        let bytes = if self.len == 0 {
            Bytes::new()
        } else {
            // SAFETY: the file was created by this node (mode 0600, in a 0700 directory it
            // locked) and renamed into place complete; nothing writes or truncates it
            // afterwards, and unlinking it (on drop, or by a crashed node's successor)
            // leaves the mapping intact. Only a process of this user that truncated it on
            // purpose could make a read of the mapping fault.
            let map = unsafe { memmap2::MmapOptions::new().populate().map(&file)? };
            Bytes::from_owner(map)
        };
        Ok(self.mapped.get_or_init(|| bytes).clone())
    }
}

impl Drop for SpoolFile {
    fn drop(&mut self) {
        if let Err(error) = std::fs::remove_file(&self.path) {
            if error.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), %error, "hls: a spooled segment cannot be deleted");
            }
        }
        self.counters.files.dec();
        self.counters.bytes.sub(self.len as i64);
    }
}

/// Removes what crashed nodes left in `root`, then creates and locks a directory of this
/// node's own there.
fn take_dir(root: &Path, node_id: &str) -> std::io::Result<NodeDir> {
    static TAKEN: AtomicU64 = AtomicU64::new(0);
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(root)?;
    clean_leftovers(root)?;
    let id: String = node_id
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '_' })
        .take(64)
        .collect();
    // Another node's start-up sweep may hold (and delete) a lock file between our create
    // and our lock: then try the next name.
    for _ in 0..8 {
        let n = TAKEN.fetch_add(1, Ordering::Relaxed);
        let name = format!("{id}-{}-{n}", std::process::id());
        let lock_path = root.join(format!("{name}{LOCK_SUFFIX}"));
        let lock = OpenOptions::new().write(true).create(true).truncate(false).open(&lock_path)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => continue,
            Err(TryLockError::Error(error)) => return Err(error),
        }
        let still_ours = std::fs::metadata(&lock_path)
            .is_ok_and(|m| lock.metadata().is_ok_and(|l| l.ino() == m.ino() && l.dev() == m.dev()));
        if !still_ours {
            continue;
        }
        let dir = root.join(&name);
        // A directory of this name can only be a dead process's (same pid, same counter).
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        return Ok(NodeDir { dir, lock_path, _lock: lock });
    }
    Err(std::io::Error::other("no spool directory name could be locked"))
}

/// Removes every `{name}/` with a `{name}.lock` that no running process holds, and that
/// lock file.
fn clean_leftovers(root: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(root)? {
        let Ok(entry) = entry else { continue };
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str().and_then(|n| n.strip_suffix(LOCK_SUFFIX)) else {
            continue;
        };
        if name.is_empty() || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let Ok(lock) = OpenOptions::new().write(true).open(entry.path()) else { continue };
        if lock.try_lock().is_err() {
            continue; // a running node's
        }
        let dir = root.join(name);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "hls: removed a spool a stopped node left")
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(dir = %dir.display(), %error, "hls: a stale spool cannot be removed");
                continue;
            }
        }
        let _ = std::fs::remove_file(entry.path());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> StreamKey {
        StreamKey::new("live", "s").expect("key")
    }

    #[test]
    fn a_segment_is_a_file_until_its_last_holder_drops_it() {
        let root = tempfile::tempdir().expect("tempdir");
        let counters = SpoolCounters::default();
        let spool = Spool::open(root.path(), "node-1", counters.clone());
        let dir = spool.dir().expect("a directory").to_owned();
        let data =
            SegmentBytes::from_chunks(vec![Bytes::from_static(b"c"), Bytes::from_static(b"de")]);
        let mut writer = spool.begin(&key(), 7);
        writer.append(&[Bytes::from_static(b"ab")]);
        let tmp: Vec<_> =
            std::fs::read_dir(&dir).expect("dir").flatten().map(|e| e.path()).collect();
        assert!(tmp.len() == 1 && tmp[0].extension().is_some_and(|e| e == "tmp"), "{tmp:?}");
        let Some(StoredSegment::File(file)) = writer.finish(data) else { panic!("a file") };
        assert_eq!(std::fs::read(file.path()).expect("read"), b"abcde");
        assert_eq!(file.bytes().expect("mapped"), Bytes::from_static(b"abcde"));
        assert_eq!((counters.files.get(), counters.bytes.get()), (1, 5));
        let path = file.path().to_owned();
        let held = Arc::clone(&file);
        drop(file);
        assert!(path.exists(), "a response still holds it");
        drop(held);
        assert!(!path.exists());
        assert_eq!((counters.files.get(), counters.bytes.get()), (0, 0));
        assert!(std::fs::read_dir(&dir).expect("dir").next().is_none(), "no temp file left");
        drop(spool);
        assert!(!dir.exists(), "a node that stops removes its directory");
    }

    #[test]
    fn a_start_removes_what_dead_nodes_left_and_spares_running_ones() {
        let root = tempfile::tempdir().expect("tempdir");
        let leftover = root.path().join("dead-1-0");
        std::fs::create_dir(&leftover).expect("mkdir");
        std::fs::write(leftover.join("3.ts"), b"x").expect("write");
        std::fs::write(root.path().join("dead-1-0.lock"), b"").expect("write");
        let running = root.path().join("alive-2-0");
        std::fs::create_dir(&running).expect("mkdir");
        std::fs::write(running.join("4.ts"), b"x").expect("write");
        let lock = File::create(root.path().join("alive-2-0.lock")).expect("lock file");
        lock.lock().expect("held by a running node");
        let unrelated = root.path().join("not-ours");
        std::fs::create_dir(&unrelated).expect("mkdir");

        let spool = Spool::open(root.path(), "n", SpoolCounters::default());
        assert!(spool.dir().is_some());
        assert!(!leftover.exists() && !root.path().join("dead-1-0.lock").exists());
        assert!(running.join("4.ts").exists(), "a running node's segments stay");
        assert!(unrelated.exists(), "what is not a spool stays");
    }

    #[test]
    fn an_unusable_spool_keeps_segments_in_memory_and_counts_them() {
        let root = tempfile::tempdir().expect("tempdir");
        let file = root.path().join("a-file");
        std::fs::write(&file, b"").expect("write");
        let counters = SpoolCounters::default();
        let spool = Spool::open(&file.join("spool"), "n", counters.clone());
        assert!(spool.dir().is_none());
        let data = SegmentBytes::from_chunks(vec![Bytes::from_static(b"abc")]);
        let stored = spool.put(&key(), 1, data);
        assert!(matches!(stored, Some(StoredSegment::Memory(ref s)) if s.to_vec() == b"abc"));
        assert_eq!(counters.fallbacks.get(), 1);
    }

    #[test]
    fn a_segment_whose_file_cannot_be_published_comes_back_into_memory_whole() {
        let root = tempfile::tempdir().expect("tempdir");
        let counters = SpoolCounters::default();
        let spool = Spool::open(root.path(), "n", counters.clone());
        let mut writer = spool.begin(&key(), 1);
        writer.append(&[Bytes::from_static(b"ab")]);
        // The directory goes while the segment is being built: the rename fails.
        std::fs::remove_dir_all(spool.dir().expect("dir")).expect("rm");
        let rest = SegmentBytes::from_chunks(vec![Bytes::from_static(b"cd")]);
        let stored = writer.finish(rest);
        assert!(matches!(stored, Some(StoredSegment::Memory(ref s)) if s.to_vec() == b"abcd"));
        assert_eq!((counters.fallbacks.get(), counters.files.get()), (1, 0));
    }

    #[test]
    fn a_spool_whose_directory_vanished_falls_back_to_memory() {
        let root = tempfile::tempdir().expect("tempdir");
        let counters = SpoolCounters::default();
        let spool = Spool::open(root.path(), "n", counters.clone());
        std::fs::remove_dir_all(spool.dir().expect("dir")).expect("rm");
        let data = SegmentBytes::from_chunks(vec![Bytes::from_static(b"abc")]);
        assert!(matches!(spool.put(&key(), 1, data), Some(StoredSegment::Memory(_))));
        assert_eq!((counters.fallbacks.get(), counters.files.get()), (1, 0));
    }
}
