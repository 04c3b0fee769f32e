//! The shared-memory transport between two ranks of one node: a file (in /dev/shm where it
//! exists) mapped by both, holding one single-producer single-consumer byte ring per direction.
//!
//! Each ring is a control block (the producer's `head` and the consumer's `tail`, monotonic byte
//! counters on separate cache lines) followed by a power-of-two data area. The producer copies
//! into `[head, tail + capacity)` and publishes with a release store of `head`; the consumer
//! copies out of `[tail, head)` and frees with a release store of `tail`. Each side only ever
//! touches bytes the other has handed over, so no lock is needed. The lower rank creates the
//! file, the higher maps it, and the creator unlinks it once both have it mapped (see `mesh.rs`).

use memmap2::{MmapOptions, MmapRaw};
use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tempfile::NamedTempFile;

/// Bytes of each ring's data area; a power of two so positions wrap with a mask.
pub const RING_BYTES: usize = 4 << 20;
/// Bytes of each ring's control block: `head` at 0 and `tail` at 128, so the two counters
/// never share a cache line (nor an adjacent-line prefetch pair).
const CONTROL_BYTES: usize = 256;
const TAIL_OFFSET: usize = 128;
const RING_SPAN: usize = CONTROL_BYTES + RING_BYTES;
/// Both rings: the creator produces into ring 0 and consumes ring 1.
const FILE_BYTES: usize = 2 * RING_SPAN;

/// A mapped region shared with one peer; the creator also holds the file until it is unlinked.
#[derive(Debug)]
pub struct Region {
    map: Arc<MmapRaw>,
    /// The creator's handle; dropping it unlinks the file.
    file: Option<NamedTempFile>,
    path: PathBuf,
    creator: bool,
}

impl Region {
    /// Creates and maps a new zeroed region file in the shared-memory directory.
    pub fn create(prefix: &str) -> io::Result<Region> {
        let file = tempfile::Builder::new()
            .prefix(prefix)
            .tempfile_in(shm_dir())?;
        file.as_file().set_len(FILE_BYTES as u64)?;
        let map = map_populated(file.as_file())?;
        Ok(Region {
            map: Arc::new(map),
            path: file.path().to_path_buf(),
            file: Some(file),
            creator: true,
        })
    }

    /// Maps the region another rank created at `path`.
    pub fn open(path: &Path) -> io::Result<Region> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        if len != FILE_BYTES as u64 {
            let message = format!("it holds {len} bytes, not {FILE_BYTES}");
            return Err(io::Error::new(io::ErrorKind::InvalidData, message));
        }
        let map = map_populated(&file)?;
        Ok(Region {
            map: Arc::new(map),
            file: None,
            path: path.to_path_buf(),
            creator: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the file's name; both mappings stay valid.
    pub fn unlink(&mut self) -> io::Result<()> {
        match self.file.take() {
            Some(file) => file.close(),
            None => Ok(()),
        }
    }

    /// This side's halves: the ring it writes and the ring it reads.
    pub fn split(&self) -> (Producer, Consumer) {
        let (ours, theirs) = if self.creator { (0, 1) } else { (1, 0) };
        let producer = Producer {
            ring: RingRef::new(&self.map, ours),
            head: 0,
        };
        let consumer = Consumer {
            ring: RingRef::new(&self.map, theirs),
            tail: 0,
        };
        (producer, consumer)
    }
}

/// Maps a region file with its pages faulted in up front: otherwise every first lap around a
/// ring pays a page fault per 4 KiB on both sides, which halves small-message bandwidth.
fn map_populated(file: &std::fs::File) -> io::Result<MmapRaw> {
    MmapOptions::new().len(FILE_BYTES).populate().map_raw(file)
}

/// Where shared-memory files go: /dev/shm (RAM-backed) where it exists.
fn shm_dir() -> PathBuf {
    let dev_shm = Path::new("/dev/shm");
    if dev_shm.is_dir() {
        dev_shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

/// One ring of a mapped region; keeps the mapping alive.
#[derive(Debug)]
struct RingRef {
    map: Arc<MmapRaw>,
    base: usize,
}

impl RingRef {
    fn new(map: &Arc<MmapRaw>, index: usize) -> RingRef {
        RingRef {
            map: Arc::clone(map),
            base: index * RING_SPAN,
        }
    }

    fn counter(&self, offset: usize) -> &AtomicU64 {
        // SAFETY: the mapping is FILE_BYTES long and page-aligned, so `base + offset` (a
        // multiple of 128 inside it) is in bounds and 8-byte aligned; the mapping outlives
        // `self` through the Arc; and both processes only access these bytes atomically.
        unsafe { AtomicU64::from_ptr(self.map.as_mut_ptr().add(self.base + offset).cast()) }
    }

    fn head(&self) -> &AtomicU64 {
        self.counter(0)
    }

    fn tail(&self) -> &AtomicU64 {
        self.counter(TAIL_OFFSET)
    }

    fn data(&self) -> *mut u8 {
        // SAFETY: in bounds of the mapping (see `counter`).
        unsafe { self.map.as_mut_ptr().add(self.base + CONTROL_BYTES) }
    }
}

/// The two pieces of `len` bytes starting at ring position `pos` (the second one after a wrap).
fn pieces(pos: u64, len: usize) -> [(usize, usize); 2] {
    let start = (pos as usize) & (RING_BYTES - 1);
    let first = len.min(RING_BYTES - start);
    [(start, first), (0, len - first)]
}

/// The writing half of a ring; used by exactly one thread at a time.
#[derive(Debug)]
pub struct Producer {
    ring: RingRef,
    /// Our own copy of `head`: only this side moves it.
    head: u64,
}

impl Producer {
    /// Copies as much of `bytes` as fits (at most `max` bytes) and publishes it; returns how
    /// many bytes were written, 0 when the ring is full.
    pub fn try_write(&mut self, bytes: &[u8], max: usize) -> usize {
        let tail = self.ring.tail().load(Ordering::Acquire);
        let free = RING_BYTES - (self.head - tail) as usize;
        let len = bytes.len().min(free).min(max);
        let mut done = 0;
        for (start, piece) in pieces(self.head, len) {
            // SAFETY: `[head, head + len)` lies within `[tail, tail + RING_BYTES)`, bytes the
            // consumer has released (acquire load of `tail` above) and will not read until we
            // publish `head`; `start + piece <= RING_BYTES`, inside the data area.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    bytes[done..].as_ptr(),
                    self.ring.data().add(start),
                    piece,
                );
            }
            done += piece;
        }
        self.head += len as u64;
        self.ring.head().store(self.head, Ordering::Release);
        len
    }
}

/// The reading half of a ring; used by exactly one thread at a time.
#[derive(Debug)]
pub struct Consumer {
    ring: RingRef,
    /// Our own copy of `tail`: only this side moves it.
    tail: u64,
}

impl Consumer {
    /// Copies out as many bytes as are available, up to `buf.len()`, and frees them; returns
    /// how many, 0 when the ring is empty.
    pub fn try_read(&mut self, buf: &mut [u8]) -> usize {
        let head = self.ring.head().load(Ordering::Acquire);
        let len = buf.len().min((head - self.tail) as usize);
        let mut done = 0;
        for (start, piece) in pieces(self.tail, len) {
            // SAFETY: `[tail, tail + len)` lies within `[tail, head)`, bytes the producer has
            // published (acquire load of `head` above) and will not touch until we release them
            // by storing `tail`; `start + piece <= RING_BYTES`.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    self.ring.data().add(start),
                    buf[done..].as_mut_ptr(),
                    piece,
                );
            }
            done += piece;
        }
        self.tail += len as u64;
        self.ring.tail().store(self.tail, Ordering::Release);
        len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_cross_in_order_and_wrap_around() {
        let mut created = Region::create("pinch-test-").unwrap();
        let opened = Region::open(created.path()).unwrap();
        let path = created.path().to_path_buf();
        created.unlink().unwrap();
        assert!(!path.exists(), "unlinked once both sides mapped it");
        let (mut to_peer, _) = created.split();
        let (_, mut from_peer) = opened.split();
        let message: Vec<u8> = (0..3 * RING_BYTES + 17).map(|i| (i % 251) as u8).collect();
        let mut received = vec![0u8; message.len()];
        let (mut sent, mut got) = (0, 0);
        while got < message.len() {
            sent += to_peer.try_write(&message[sent..], 1 << 20);
            got += from_peer.try_read(&mut received[got..(got + 1000).min(message.len())]);
        }
        assert_eq!(received, message);
    }

    #[test]
    fn a_full_ring_takes_nothing_more() {
        let created = Region::create("pinch-test-").unwrap();
        let (mut producer, _) = created.split();
        let big = vec![1u8; RING_BYTES + 5];
        assert_eq!(producer.try_write(&big, usize::MAX), RING_BYTES);
        assert_eq!(producer.try_write(&big, usize::MAX), 0);
    }

    #[test]
    fn a_region_of_the_wrong_size_is_refused() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let err = Region::open(file.path()).unwrap_err().to_string();
        assert!(err.contains("holds 0 bytes"), "{err}");
    }
}
