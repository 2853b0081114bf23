//! A stream's segment files on local disk: each is written as `NAME.part`, one write per
//! chunk, and when it ends flushed to the disk (fsync), renamed to `NAME` and its
//! directory flushed, so a file without `.part` is always complete. Names come from the
//! path template; a name already taken (two segments starting within one second, a
//! restarted recorder) gets `-1`, `-2`, ... before its extension.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use zenlive_actors::StreamKey;
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

    /// Appends `chunk` to the open segment (one write).
    pub fn write(&mut self, chunk: &[u8]) -> Result<u64, FileError> {
        let Some(open) = &mut self.open else { return Ok(0) };
        open.file.write_all(chunk).map_err(err("write", &open.part))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::storage::LocalStorage;

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
        files.write(b"abc").expect("write");
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
