//! A piece of a file to write, as the buffers it is made of: container headers the muxer
//! wrote and the frames' own payloads, in order. Writing it is one vectored write (a few
//! when it has more buffers than the OS takes at once), so media goes from the frame that
//! came over the network to the file without being copied or gathered into a fresh
//! allocation first.

use std::io::{self, IoSlice, Write};

use bytes::Bytes;

/// Most buffers handed to one `write_vectored` call (Linux's `IOV_MAX`; more is `EINVAL`).
const MAX_SLICES: usize = 1024;

/// See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chunk {
    parts: Vec<Bytes>,
    len: usize,
}

impl Chunk {
    /// An empty chunk.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `part` (an empty one is left out).
    pub fn push(&mut self, part: Bytes) {
        if !part.is_empty() {
            self.len += part.len();
            self.parts.push(part);
        }
    }

    /// Puts `part` before everything else (an empty one is left out).
    pub fn prepend(&mut self, part: Bytes) {
        if !part.is_empty() {
            self.len += part.len();
            self.parts.insert(0, part);
        }
    }

    /// Total bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds no byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its buffers, in order.
    pub fn parts(&self) -> &[Bytes] {
        &self.parts
    }

    /// Takes everything out, leaving it empty.
    pub fn take(&mut self) -> Chunk {
        std::mem::take(self)
    }

    /// Its bytes in one buffer: the buffer itself when there is one, a copy otherwise.
    pub fn to_bytes(&self) -> Bytes {
        match self.parts.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            parts => {
                let mut out = Vec::with_capacity(self.len);
                for part in parts {
                    out.extend_from_slice(part);
                }
                Bytes::from(out)
            }
        }
    }

    /// Writes all of it to `out` with vectored writes, retrying short writes and
    /// interruptions, as `write_all` does for one buffer.
    pub fn write_to<W: Write + ?Sized>(&self, out: &mut W) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = self.parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut rest = slices.as_mut_slice();
        while !rest.is_empty() {
            let batch = rest.len().min(MAX_SLICES);
            match out.write_vectored(&rest[..batch]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                // `written` is at most the batch's length, so this stays in bounds.
                Ok(written) => IoSlice::advance_slices(&mut rest, written),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl From<Bytes> for Chunk {
    fn from(part: Bytes) -> Self {
        let mut chunk = Chunk::new();
        chunk.push(part);
        chunk
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer taking at most `step` bytes a call, from one buffer only (as `Write`'s
    /// default `write_vectored` does), failing every other call with `Interrupted`.
    struct Dribble {
        out: Vec<u8>,
        step: usize,
        calls: usize,
    }

    impl Write for Dribble {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.calls += 1;
            if self.calls.is_multiple_of(2) {
                return Err(io::ErrorKind::Interrupted.into());
            }
            let n = buf.len().min(self.step);
            self.out.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn numbered(parts: usize, size: usize) -> (Chunk, Vec<u8>) {
        let mut chunk = Chunk::new();
        let mut whole = Vec::new();
        for i in 0..parts {
            let part: Vec<u8> = (0..size).map(|j| (i * 7 + j) as u8).collect();
            whole.extend_from_slice(&part);
            chunk.push(Bytes::from(part));
        }
        (chunk, whole)
    }

    #[test]
    fn short_and_interrupted_writes_still_write_everything_in_order() {
        let (chunk, whole) = numbered(5, 13);
        let mut out = Dribble { out: Vec::new(), step: 4, calls: 0 };
        chunk.write_to(&mut out).expect("write");
        assert_eq!(out.out, whole);
    }

    #[test]
    fn more_buffers_than_one_call_takes_are_written_in_batches() {
        let (chunk, whole) = numbered(MAX_SLICES * 2 + 3, 3);
        let mut out = Vec::new();
        chunk.write_to(&mut out).expect("write");
        assert_eq!(out, whole);
        assert_eq!(chunk.to_bytes(), Bytes::from(whole));
    }

    #[test]
    fn a_file_is_written_whole() {
        let (chunk, whole) = numbered(MAX_SLICES + 10, 100);
        let path = std::env::temp_dir().join(format!("zenlive-chunk-{}", std::process::id()));
        let mut file = std::fs::File::create(&path).expect("create");
        chunk.write_to(&mut file).expect("write");
        drop(file);
        let read = std::fs::read(&path).expect("read");
        let _ = std::fs::remove_file(&path);
        assert_eq!(read, whole);
    }

    #[test]
    fn a_writer_that_takes_nothing_is_an_error_not_a_loop() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Ok(0)
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (chunk, _) = numbered(2, 2);
        let error = chunk.write_to(&mut Full).expect_err("no progress");
        assert_eq!(error.kind(), io::ErrorKind::WriteZero);
    }

    #[test]
    fn empty_parts_are_left_out_and_prepend_goes_first() {
        let mut chunk = Chunk::from(Bytes::from_static(b"world"));
        chunk.push(Bytes::new());
        chunk.prepend(Bytes::from_static(b"hello "));
        assert_eq!(chunk.parts().len(), 2);
        assert_eq!(chunk.len(), 11);
        assert_eq!(chunk.to_bytes(), Bytes::from_static(b"hello world"));
        assert!(Chunk::new().write_to(&mut Vec::new()).is_ok());
    }
}
