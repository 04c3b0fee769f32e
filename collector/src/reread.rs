//! A kernel-generated file (/proc, /sys) kept open and read again from its start on every
//! sample. The kernel regenerates such a file on each read from offset 0, so one open file
//! gives fresh values for the life of the sampler; at 1 kHz that saves an open and a close (a
//! path walk and two syscalls) per file per sample, and the buffer is reused, so a reading
//! allocates nothing once it has grown to the file's size.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

/// The first buffer size; /proc files of a small host fit, bigger ones double it once.
const INITIAL_BYTES: usize = 4096;

#[derive(Debug)]
pub struct RereadFile {
    path: PathBuf,
    file: File,
    buf: Vec<u8>,
}

impl RereadFile {
    pub fn open(path: impl AsRef<Path>) -> io::Result<RereadFile> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path)?;
        Ok(RereadFile {
            path,
            file,
            buf: vec![0; INITIAL_BYTES],
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's whole current content.
    pub fn read(&mut self) -> io::Result<&[u8]> {
        let mut filled = 0;
        loop {
            if filled == self.buf.len() {
                self.buf.resize(self.buf.len() * 2, 0);
            }
            let n = self.file.read_at(&mut self.buf[filled..], filled as u64)?;
            if n == 0 {
                return Ok(&self.buf[..filled]);
            }
            filled += n;
        }
    }

    /// The content as text (kernel files are ASCII).
    pub fn read_text(&mut self) -> io::Result<&str> {
        let bytes = self.read()?;
        std::str::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proc_file_read_again_gives_fresh_values() {
        let mut file = RereadFile::open("/proc/self/stat").unwrap();
        let utime = |text: &str| -> u64 {
            let after_name = &text[text.rfind(')').unwrap() + 2..];
            after_name.split(' ').nth(11).unwrap().parse().unwrap()
        };
        let before = utime(file.read_text().unwrap());
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < std::time::Duration::from_millis(60) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = utime(file.read_text().unwrap());
        assert!(after > before, "{before} -> {after}");
    }

    #[test]
    fn a_file_larger_than_the_buffer_is_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big");
        let text = "x".repeat(INITIAL_BYTES * 3 + 17);
        std::fs::write(&path, &text).unwrap();
        let mut file = RereadFile::open(&path).unwrap();
        assert_eq!(file.read_text().unwrap(), text);
        std::fs::write(&path, "short").unwrap();
        assert_eq!(file.read_text().unwrap(), "short");
        assert_eq!(file.path(), path);
    }
}
