//! A stream's segment files on local disk: each is written as `NAME.part`, one write per
//! chunk, and when it ends flushed to the disk (fsync), renamed to `NAME` and its
//! directory flushed, so a file without `.part` is always complete. Names come from the
//! path template; a name already taken (two segments starting within one second, a
//! restarted recorder) gets `-1`, `-2`, ... before its extension.
//!
//! A `.part` file is locked (`flock`) while its recorder writes it. One left by a crash
//! (`kill -9`, a power cut) is finished at the next start ([`recover_part`]): truncated to
//! its last complete fragment, packet or tag (`zenlive_media::torn`), fsync'd and renamed
//! like any segment, or deleted if not one fragment of it is complete. A `.part` another
//! live process holds locked is left alone.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use zenlive_actors::StreamKey;
use zenlive_media::chunk::Chunk;
use zenlive_media::segment::SegmentFormat;
use zenlive_media::MediaTime;

use super::path::PathTemplate;
use super::storage::{FinishedSegment, Storage};

/// Most `-N` suffixes tried for a free name.
const MAX_NAME_TRIES: u32 = 1000;

/// A disk error, with the file it happened on.
#[derive(Debug, thiserror::Error)]
#[error("{what} {path}: {source}")]
pub struct FileError {
    /// What was being done (`create`, `write`, ...).
    pub what: &'static str,
    /// The file.
    pub path: PathBuf,
    /// The error.
    pub source: io::Error,
}

/// The segment being written.
struct OpenFile {
    file: File,
    part: PathBuf,
    path: PathBuf,
    relative: PathBuf,
    wall: SystemTime,
    bytes: u64,
}

/// One stream's segment files. See the module docs.
pub struct SegmentFiles {
    key: StreamKey,
    ext: &'static str,
    template: Arc<PathTemplate>,
    storage: Arc<dyn Storage>,
    open: Option<OpenFile>,
}

fn err(what: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FileError {
    let path = path.to_owned();
    move |source| FileError { what, path, source }
}

impl SegmentFiles {
    /// Files of stream `key` with extension `ext`, named by `template` under `storage`.
    pub fn new(
        key: StreamKey,
        ext: &'static str,
        template: Arc<PathTemplate>,
        storage: Arc<dyn Storage>,
    ) -> Self {
        Self { key, ext, template, storage, open: None }
    }

    /// Where the segments go.
    pub fn storage(&self) -> &Arc<dyn Storage> {
        &self.storage
    }

    /// The `.part` file being written, if any.
    pub fn current(&self) -> Option<&Path> {
        self.open.as_ref().map(|f| f.part.as_path())
    }

    /// Starts a segment whose first frame came at `wall`.
    pub fn open(&mut self, wall: SystemTime) -> Result<(), FileError> {
        let rendered = self
            .template
            .render(self.key.app(), self.key.name(), self.ext, wall)
            .map_err(|e| FileError {
                what: "name",
                path: PathBuf::from(self.key.to_string()),
                source: io::Error::new(io::ErrorKind::InvalidInput, e),
            })?;
        let root = self.storage.root();
        let full = root.join(&rendered);
        if let Some(dir) = full.parent() {
            std::fs::create_dir_all(dir).map_err(err("create directory", dir))?;
        }
        for n in 0..MAX_NAME_TRIES {
            let relative = if n == 0 { rendered.clone() } else { numbered(&rendered, n) };
            let path = root.join(&relative);
            let part = part_name(&path);
            if path.exists() {
                continue;
            }
            match OpenOptions::new().write(true).create_new(true).open(&part) {
                Ok(file) => {
                    // Tells a node starting on the same directory that this file is being
                    // written (the lock dies with the process). Not every file system
                    // supports it; recording goes on without.
                    if let Err(error) = file.try_lock() {
                        tracing::debug!(part = %part.display(), %error, "cannot lock a segment file");
                    }
                    self.storage.opened(&self.key, &relative, &path, wall);
                    self.open = Some(OpenFile { file, part, path, relative, wall, bytes: 0 });
                    return Ok(());
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(err("create", &part)(e)),
            }
        }
        Err(FileError {
            what: "create",
            path: full,
            source: io::Error::new(io::ErrorKind::AlreadyExists, "no free name"),
        })
    }

    /// Appends `chunk` to the open segment (one vectored write, a few for a chunk of
    /// many buffers).
    pub fn write(&mut self, chunk: &Chunk) -> Result<u64, FileError> {
        let Some(open) = &mut self.open else { return Ok(0) };
        chunk.write_to(&mut open.file).map_err(err("write", &open.part))?;
        open.bytes += chunk.len() as u64;
        Ok(chunk.len() as u64)
    }

    /// Ends the open segment: fsync, rename, fsync the directory; tells the storage.
    pub fn close(
        &mut self,
        start: MediaTime,
        duration: MediaTime,
    ) -> Result<Option<FinishedSegment>, FileError> {
        let Some(open) = self.open.take() else { return Ok(None) };
        open.file.sync_all().map_err(err("fsync", &open.part))?;
        drop(open.file);
        std::fs::rename(&open.part, &open.path).map_err(err("rename", &open.part))?;
        if let Some(dir) = open.path.parent() {
            // The rename is durable once the directory is: without this a power cut could
            // bring the .part name back.
            File::open(dir).and_then(|d| d.sync_all()).map_err(err("fsync directory", dir))?;
        }
        let segment = FinishedSegment {
            stream: self.key.clone(),
            relative: open.relative,
            path: open.path,
            wall_start: open.wall,
            media_start: start.to_duration(),
            duration: duration.to_duration(),
            bytes: open.bytes,
        };
        self.storage.finished(segment.clone());
        Ok(Some(segment))
    }
}

/// What [`recover_part`] did with a `.part` file a crash left.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Truncated to its whole prefix (`cut` bytes went) and renamed to `path`: a finished
    /// segment of `bytes`.
    Finished {
        /// The segment's name, without `.part`.
        path: PathBuf,
        /// Its size now.
        bytes: u64,
        /// Bytes cut from its torn tail.
        cut: u64,
    },
    /// Not one fragment (packet, tag) of it was complete: deleted.
    Removed {
        /// Its size before.
        bytes: u64,
    },
    /// Another process holds it locked (its recorder is alive): left alone.
    InUse,
}

/// The recording format a segment file's extension names.
pub fn format_of(path: &Path) -> Option<SegmentFormat> {
    match path.extension()?.to_str()? {
        "mp4" => Some(SegmentFormat::Fmp4),
        "ts" => Some(SegmentFormat::Ts),
        "flv" => Some(SegmentFormat::Flv),
        _ => None,
    }
}

/// Finishes `part`, a `.part` segment file left by a crash (see the module docs). An
/// error leaves it where it is (a segment of the same name exists, the disk failed).
pub fn recover_part(part: &Path) -> Result<Recovery, FileError> {
    use std::os::unix::fs::FileExt;
    let path = part.with_extension("");
    let Some(format) = format_of(&path) else {
        return Err(FileError {
            what: "recover",
            path: part.to_owned(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "not a recording segment"),
        });
    };
    if path.exists() {
        return Err(FileError {
            what: "recover",
            path: part.to_owned(),
            source: io::Error::new(io::ErrorKind::AlreadyExists, "a finished segment has its name"),
        });
    }
    let file = OpenOptions::new().read(true).write(true).open(part).map_err(err("open", part))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Ok(Recovery::InUse),
        // No locks on this file system: nobody else can have one either.
        Err(std::fs::TryLockError::Error(_)) => {}
    }
    let len = file.metadata().map_err(err("stat", part))?.len();
    let whole =
        zenlive_media::torn::whole_prefix(format, len, |at, buf| file.read_exact_at(buf, at))
            .map_err(err("read", part))?;
    if whole == 0 {
        drop(file);
        std::fs::remove_file(part).map_err(err("remove", part))?;
        return Ok(Recovery::Removed { bytes: len });
    }
    if whole < len {
        file.set_len(whole).map_err(err("truncate", part))?;
    }
    file.sync_all().map_err(err("fsync", part))?;
    drop(file);
    std::fs::rename(part, &path).map_err(err("rename", part))?;
    if let Some(dir) = path.parent() {
        File::open(dir).and_then(|d| d.sync_all()).map_err(err("fsync directory", dir))?;
    }
    Ok(Recovery::Finished { path, bytes: whole, cut: len - whole })
}

/// Finishes every `.part` segment file under `root` (recursively) a crash left, logging
/// what became of each; answers the segments finished, with their sizes, sorted.
pub fn recover_parts(root: &Path) -> Vec<(PathBuf, u64)> {
    let mut finished = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let part = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(part);
                continue;
            }
            let is_part = part.extension().is_some_and(|e| e == "part")
                && format_of(&part.with_extension("")).is_some();
            if !is_part {
                continue;
            }
            match recover_part(&part) {
                Ok(Recovery::Finished { path, bytes, cut }) => {
                    tracing::warn!(segment = %path.display(), bytes, cut, "a segment cut by a crash: finished up to its last complete fragment");
                    finished.push((path, bytes));
                }
                Ok(Recovery::Removed { bytes }) => {
                    tracing::warn!(part = %part.display(), bytes, "a segment cut by a crash held no complete fragment: deleted");
                }
                Ok(Recovery::InUse) => {
                    tracing::warn!(part = %part.display(), "a .part file is being written by another process: left alone");
                }
                Err(error) => {
                    tracing::error!(%error, "cannot finish a segment cut by a crash; it stays as it is");
                }
            }
        }
    }
    finished.sort();
    finished
}

/// `path` with `.part` appended to its file name.
pub fn part_name(path: &Path) -> PathBuf {
    let mut name = path.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".part");
    path.with_file_name(name)
}

/// `dir/stem.ext` as `dir/stem-n.ext`.
fn numbered(path: &Path, n: u32) -> PathBuf {
    let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let name = match path.extension() {
        Some(ext) => format!("{stem}-{n}.{}", ext.to_string_lossy()),
        None => format!("{stem}-{n}"),
    };
    path.with_file_name(name)
}

/// An fMP4 file of `fragments` fragments followed by `torn` bytes of a fragment cut
/// short; answers it and the length of its whole prefix.
#[cfg(test)]
pub(crate) fn fmp4_for_tests(fragments: usize, torn: usize) -> (Vec<u8>, usize) {
    let mp4_box = |kind: &[u8; 4], body: usize| {
        let mut b = ((8 + body) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.resize(8 + body, 0x5a);
        b
    };
    let mut file = mp4_box(b"ftyp", 16);
    file.extend(mp4_box(b"moov", 200));
    for _ in 0..fragments {
        file.extend(mp4_box(b"moof", 90));
        file.extend(mp4_box(b"mdat", 3000));
    }
    let whole = if fragments == 0 { 0 } else { file.len() };
    let mut tail = mp4_box(b"moof", 90);
    tail.extend(mp4_box(b"mdat", 3000));
    file.extend(&tail[..torn.min(tail.len() - 1)]);
    (file, whole)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::recording::storage::LocalStorage;

    #[test]
    fn a_torn_part_is_cut_to_its_last_fragment_and_renamed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cam = dir.path().join("live/cam");
        std::fs::create_dir_all(&cam).expect("mkdir");
        let (torn, whole) = fmp4_for_tests(3, 1234);
        std::fs::write(cam.join("a.mp4.part"), &torn).expect("write");
        let recovered = recover_part(&cam.join("a.mp4.part")).expect("recovered");
        let path = cam.join("a.mp4");
        let cut = (torn.len() - whole) as u64;
        assert_eq!(recovered, Recovery::Finished { path: path.clone(), bytes: whole as u64, cut });
        assert_eq!(std::fs::read(&path).expect("read"), &torn[..whole]);
        assert!(!cam.join("a.mp4.part").exists());
        // Nothing complete: deleted. A name taken: left alone.
        let (init_only, _) = fmp4_for_tests(0, 500);
        std::fs::write(cam.join("b.mp4.part"), &init_only).expect("write");
        let removed = recover_part(&cam.join("b.mp4.part")).expect("removed");
        assert_eq!(removed, Recovery::Removed { bytes: init_only.len() as u64 });
        assert!(!cam.join("b.mp4.part").exists());
        std::fs::write(cam.join("a.mp4.part"), &torn).expect("write");
        let error = recover_part(&cam.join("a.mp4.part")).expect_err("a.mp4 exists");
        assert!(error.to_string().contains("a.mp4.part"), "{error}");
        // recover_parts walks the tree and answers what it finished.
        std::fs::remove_file(&path).expect("rm");
        assert_eq!(recover_parts(dir.path()), [(path, whole as u64)]);
    }

    #[test]
    fn a_part_being_written_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir.path()));
        let template = Arc::new(PathTemplate::parse("{app}/{key}.{ext}").expect("valid"));
        let key = StreamKey::new("live", "cam").expect("valid");
        let mut files = SegmentFiles::new(key, "mp4", template, storage);
        files.open(SystemTime::UNIX_EPOCH).expect("open");
        let (bytes, _) = fmp4_for_tests(1, 10);
        files.write(&Chunk::from(Bytes::from(bytes.clone()))).expect("write");
        let part = files.current().expect("open").to_owned();
        // The writer's open file holds the lock, as another process's would.
        assert_eq!(recover_part(&part).expect("checked"), Recovery::InUse);
        assert!(recover_parts(dir.path()).is_empty());
        assert_eq!(std::fs::metadata(&part).map(|m| m.len()).ok(), Some(bytes.len() as u64));
        files.close(MediaTime::ZERO, MediaTime::ZERO).expect("close");
    }

    #[test]
    fn a_segment_is_part_until_closed_and_names_do_not_collide() {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(dir.path()));
        let template = Arc::new(PathTemplate::parse("{app}/{key}/{start}.{ext}").expect("valid"));
        let key = StreamKey::new("live", "cam").expect("valid");
        let mut files = SegmentFiles::new(key, "mp4", template, storage);
        let wall = SystemTime::UNIX_EPOCH;
        files.open(wall).expect("open");
        let part = files.current().expect("open file").to_owned();
        assert!(part.to_string_lossy().ends_with("1970-01-01_00-00-00.mp4.part"));
        files.write(&Chunk::from(Bytes::from_static(b"abc"))).expect("write");
        let done = files
            .close(MediaTime::ZERO, MediaTime::from_millis(4000))
            .expect("close")
            .expect("segment");
        assert!(!part.exists());
        assert_eq!(std::fs::read(&done.path).expect("read"), b"abc");
        assert_eq!((done.bytes, done.duration.as_secs()), (3, 4));
        // The same second again: a numbered name.
        files.open(wall).expect("open again");
        let second =
            files.close(MediaTime::ZERO, MediaTime::ZERO).expect("close").expect("segment");
        assert!(second.path.to_string_lossy().ends_with("1970-01-01_00-00-00-1.mp4"), "{second:?}");
    }

    #[test]
    fn an_unwritable_root_is_an_error_naming_the_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let blocker = dir.path().join("file");
        std::fs::write(&blocker, b"").expect("write");
        let storage: Arc<dyn Storage> = Arc::new(LocalStorage::new(&blocker));
        let template = Arc::new(PathTemplate::parse("{app}/{key}.{ext}").expect("valid"));
        let mut files =
            SegmentFiles::new(StreamKey::new("live", "x").expect("valid"), "ts", template, storage);
        let error = files.open(SystemTime::UNIX_EPOCH).expect_err("a file is in the way");
        assert!(error.to_string().contains("file/live"), "{error}");
    }
}
