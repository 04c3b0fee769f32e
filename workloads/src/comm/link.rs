//! One rank's link to one peer: a byte stream in each direction over TCP or shared memory.
//!
//! Receiving happens in the caller's thread (`next_header`, `read_payload`). Frames of a group
//! other than the one an operation waits for are set aside until that group asks for them, so
//! operations of different groups between the same two ranks need not be issued in one order.
//!
//! Sending goes through a persistent writer thread per link: a caller hands it a finished frame
//! and goes on, so two ranks that send each other more than any buffer holds never wait on each
//! other's sends (each keeps reading). Frames are `Arc`s so one buffer can go to several peers at
//! once (a broadcast, a one-shot all-reduce); every frame handed over comes back through the
//! `done` channel with its result and returns to the `Pool`, so steady-state operation allocates
//! nothing. One shortcut keeps small messages fast: when an unshaped link's writer is idle, the
//! caller writes a frame of up to `DIRECT_MAX_BYTES` itself, without blocking (a non-blocking
//! socket write, or what fits in the shared-memory ring), and hands only the rest to the writer.
//! Order is kept because the writer has nothing queued before it.
//!
//! The writer thread also applies link shaping: a frame is not written before `delay` has passed
//! since it was handed over (latency, not serialised: queued frames are delayed together), and a
//! rate cap paces the bytes with a token bucket.
//!
//! A shared-memory link still keeps its TCP connection, idle, as a liveness signal: a peer that
//! exits or crashes closes it, which a waiting side notices with a non-blocking `peek`.

use super::CommError;
use super::frame::{HEADER_BYTES, Header};
use super::shm::{Consumer, Producer, Region};
use super::wire::{is_closed, is_timeout, timeout};
use std::io::{self, ErrorKind, IoSlice, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::mpsc::{
    Receiver, RecvTimeoutError, SyncSender, TryRecvError, TrySendError, sync_channel,
};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a dropped link lets frames in flight reach its peer, so the peer fails on what went
/// wrong rather than on an abrupt close.
const DROP_GRACE: Duration = Duration::from_secs(1);
/// Frames a link queues for its writer thread before `post` blocks.
pub const QUEUE_FRAMES: usize = 64;
/// The most a shared-memory writer publishes at once, so the reader can start early.
const SHM_PUBLISH_BYTES: usize = 256 << 10;
/// Pieces a rate-capped link paces, and the burst its token bucket allows.
const PACE_BYTES: usize = 64 << 10;
/// Largest frame the caller writes itself (see the module doc); larger ones are copied once into
/// a frame that every peer's writer shares.
pub const DIRECT_MAX_BYTES: usize = 1 << 20;
/// Busy-wait rounds, then yielding rounds, before a waiting side starts to sleep.
const SPIN_ROUNDS: u32 = 64;
const YIELD_ROUNDS: u32 = 256;
const NAP: Duration = Duration::from_micros(50);

/// What carries a link's bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Shm,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Shm => "shm",
        }
    }
}

/// Software shaping of one link's sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shape {
    pub delay: Duration,
    pub rate_bytes_per_s: Option<u64>,
}

/// The link to rank `peer`.
#[derive(Debug)]
pub struct Link {
    peer: usize,
    transport: Transport,
    source: Source,
    /// Frames of other groups read while waiting for one group's, oldest first.
    stash: Vec<(Header, Vec<u8>)>,
    /// The payload (and how much of it was read) of the frame whose header came from `stash`.
    stashed: Option<(Vec<u8>, usize)>,
    writer: Writer,
    delay: Duration,
    /// Whether the link has any shaping: then every frame goes through the writer thread.
    shaped: bool,
    /// The shared-memory ring this side writes, shared with the writer thread.
    producer: Option<Arc<Mutex<Producer>>>,
    io_timeout: Duration,
}

#[derive(Debug)]
enum Source {
    Tcp(TcpStream),
    Shm { ring: Consumer, watch: TcpStream },
}

impl Link {
    /// A link whose bytes go over `stream`.
    pub fn tcp(
        peer: usize,
        stream: TcpStream,
        shape: Shape,
        io_timeout: Duration,
    ) -> Result<Link, CommError> {
        let io = |e| link_error(peer, e, Duration::ZERO);
        stream.set_nodelay(true).map_err(io)?;
        stream.set_read_timeout(Some(io_timeout)).map_err(io)?;
        stream.set_write_timeout(Some(io_timeout)).map_err(io)?;
        let sink = Sink::Tcp(stream.try_clone().map_err(io)?);
        let writer = Writer::spawn(peer, sink, shape.rate_bytes_per_s)?;
        Ok(Link {
            peer,
            transport: Transport::Tcp,
            source: Source::Tcp(stream),
            stash: Vec::new(),
            stashed: None,
            writer,
            delay: shape.delay,
            shaped: shape != Shape::default(),
            producer: None,
            io_timeout,
        })
    }

    /// A link whose bytes go through `region`, with `watch` kept open to notice a dead peer.
    pub fn shm(
        peer: usize,
        watch: TcpStream,
        region: &Region,
        shape: Shape,
        io_timeout: Duration,
    ) -> Result<Link, CommError> {
        let io = |e| link_error(peer, e, Duration::ZERO);
        // Only ever peeked at from now on: a peek must not block.
        watch.set_nonblocking(true).map_err(io)?;
        let (producer, consumer) = region.split();
        let producer = Arc::new(Mutex::new(producer));
        let sink = Sink::Shm {
            ring: Arc::clone(&producer),
            watch: watch.try_clone().map_err(io)?,
            io_timeout,
        };
        let writer = Writer::spawn(peer, sink, shape.rate_bytes_per_s)?;
        Ok(Link {
            peer,
            transport: Transport::Shm,
            source: Source::Shm {
                ring: consumer,
                watch,
            },
            stash: Vec::new(),
            stashed: None,
            writer,
            delay: shape.delay,
            shaped: shape != Shape::default(),
            producer: Some(producer),
            io_timeout,
        })
    }

    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Sends `header` then `payload` from the caller's thread if the link allows it (see the
    /// module doc); `false` when the frame must go through `post` instead.
    pub fn try_direct(
        &mut self,
        header: &[u8],
        payload: &[u8],
        pool: &mut Pool,
    ) -> Result<bool, CommError> {
        if self.shaped || header.len() + payload.len() > DIRECT_MAX_BYTES {
            return Ok(false);
        }
        self.reclaim(pool)?;
        if self.writer.in_flight > 0 {
            return Ok(false);
        }
        let written = match &self.producer {
            Some(producer) => write_shm_now(producer, header, payload),
            None => write_tcp_now(self.stream(), header, payload),
        }
        .map_err(|e| link_error(self.peer, e, Duration::ZERO))?;
        if written < header.len() + payload.len() {
            let (h, p) = (
                written.min(header.len()),
                written.saturating_sub(header.len()),
            );
            let rest = pool.bytes([&header[h..], &payload[p..]]);
            self.post(&rest, pool)?;
        }
        Ok(true)
    }

    /// Hands `frame` to the writer thread; it goes out after the link's shaping delay. Blocks
    /// only while `QUEUE_FRAMES` frames are already queued, taking finished ones back to `pool`.
    pub fn post(&mut self, frame: &Arc<Vec<u8>>, pool: &mut Pool) -> Result<(), CommError> {
        let mut outgoing = Outgoing {
            frame: Arc::clone(frame),
            not_before: Instant::now() + self.delay,
        };
        loop {
            let frames = self.writer.frames.as_ref().ok_or(CommError::Broken)?;
            match frames.try_send(outgoing) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) => {
                    outgoing = back;
                    self.take_one_back(pool)?;
                }
                Err(TrySendError::Disconnected(_)) => return Err(CommError::Broken),
            }
        }
        self.writer.in_flight += 1;
        Ok(())
    }

    /// Waits for the writer thread to finish one frame and takes its buffer back. It polls
    /// rather than blocking in `recv`, which may allocate to register the waiting thread.
    fn take_one_back(&mut self, pool: &mut Pool) -> Result<(), CommError> {
        let mut wait = Backoff::new(None);
        let (frame, written) = loop {
            match self.writer.done.try_recv() {
                Ok(done) => break done,
                Err(TryRecvError::Empty) => {
                    wait.pause()
                        .map_err(|e| link_error(self.peer, e, Duration::ZERO))?;
                }
                Err(TryRecvError::Disconnected) => return Err(CommError::Broken),
            }
        };
        self.writer.in_flight -= 1;
        pool.give_back(frame);
        written.map_err(|e| link_error(self.peer, e, self.io_timeout))
    }

    /// The next frame header of `group`; frames of other groups met on the way are set aside
    /// (with their payloads) for their own operations. `None` when the bytes are not a header.
    pub fn next_header(&mut self, group: u32) -> Result<Option<Header>, CommError> {
        self.stashed = None;
        if let Some(i) = self.stash.iter().position(|(h, _)| h.group == group) {
            let (header, payload) = self.stash.remove(i);
            self.stashed = Some((payload, 0));
            return Ok(Some(header));
        }
        loop {
            let mut bytes = [0u8; HEADER_BYTES];
            self.read_wire(&mut bytes)?;
            match Header::decode(&bytes) {
                Some(header) if header.group != group => self.set_aside(header)?,
                other => return Ok(other),
            }
        }
    }

    /// Reads a frame of another group off the wire and keeps it until its group asks.
    fn set_aside(&mut self, header: Header) -> Result<(), CommError> {
        let mut payload = vec![0u8; header.frame_bytes as usize];
        self.read_wire(&mut payload)?;
        self.stash.push((header, payload));
        Ok(())
    }

    /// Reads the next `buf.len()` bytes of the payload of the frame whose header
    /// `next_header` returned last.
    pub fn read_payload(&mut self, buf: &mut [u8]) -> Result<(), CommError> {
        let Some((payload, at)) = &mut self.stashed else {
            return self.read_wire(buf);
        };
        // A read past a frame's payload means the caller lost count: the link is unusable.
        let bytes = payload.get(*at..*at + buf.len()).ok_or(CommError::Broken)?;
        buf.copy_from_slice(bytes);
        *at += buf.len();
        Ok(())
    }

    /// Reads exactly `buf.len()` bytes from the peer.
    fn read_wire(&mut self, buf: &mut [u8]) -> Result<(), CommError> {
        let (peer, io_timeout) = (self.peer, self.io_timeout);
        match &mut self.source {
            Source::Tcp(stream) => stream
                .read_exact(buf)
                .map_err(|e| link_error(peer, e, io_timeout)),
            Source::Shm { ring, watch } => {
                read_shm(ring, watch, buf, io_timeout).map_err(|e| link_error(peer, e, io_timeout))
            }
        }
    }

    /// Waits until every frame handed over so far is written, returning buffers to `pool`.
    pub fn finish_sends(&mut self, pool: &mut Pool) -> Result<(), CommError> {
        let mut first_error = Ok(());
        while self.writer.in_flight > 0 {
            let taken = self.take_one_back(pool);
            if first_error.is_ok() {
                first_error = taken;
            }
        }
        first_error
    }

    /// Frames handed to the writer thread whose buffers have not come back, after taking back
    /// those already written.
    pub fn unwritten(&mut self, pool: &mut Pool) -> Result<usize, CommError> {
        self.reclaim(pool)?;
        Ok(self.writer.in_flight)
    }

    /// Waits until at most `frames` handed over are still unwritten.
    pub fn wait_unwritten(&mut self, frames: usize, pool: &mut Pool) -> Result<(), CommError> {
        while self.writer.in_flight > frames {
            self.take_one_back(pool)?;
        }
        Ok(())
    }

    /// Takes back the buffers of frames already written, without waiting.
    pub fn reclaim(&mut self, pool: &mut Pool) -> Result<(), CommError> {
        while let Ok((frame, written)) = self.writer.done.try_recv() {
            self.writer.in_flight -= 1;
            pool.give_back(frame);
            written.map_err(|e| link_error(self.peer, e, self.io_timeout))?;
        }
        Ok(())
    }

    fn stream(&self) -> &TcpStream {
        match &self.source {
            Source::Tcp(stream) => stream,
            Source::Shm { watch, .. } => watch,
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        // Closing the queue ends an idle writer; the shutdown ends one stuck in a write.
        self.writer.frames = None;
        let deadline = Instant::now() + DROP_GRACE;
        while self.writer.in_flight > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.writer.done.recv_timeout(left) {
                Ok(_) => self.writer.in_flight -= 1,
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        let _ = self.stream().shutdown(Shutdown::Both);
        if let Some(thread) = self.writer.thread.take() {
            let _ = thread.join();
        }
    }
}

/// What an I/O error on the link to `peer` means: it left, it hung, or something else.
pub fn link_error(peer: usize, e: io::Error, waited: Duration) -> CommError {
    if is_closed(e.kind()) {
        CommError::PeerClosed { peer }
    } else if is_timeout(e.kind()) {
        timeout(format!("rank {peer}"), waited)
    } else {
        CommError::Io { peer, source: e }
    }
}

/// Writes what fits of `header` then `payload` into a shared-memory ring; returns how much.
fn write_shm_now(producer: &Mutex<Producer>, header: &[u8], payload: &[u8]) -> io::Result<usize> {
    let mut ring = producer.lock().unwrap_or_else(PoisonError::into_inner);
    let written = ring.try_write(header, usize::MAX);
    if written < header.len() {
        return Ok(written);
    }
    Ok(written + ring.try_write(payload, usize::MAX))
}

/// Writes what the socket takes at once of `header` then `payload`; returns how much.
fn write_tcp_now(stream: &TcpStream, header: &[u8], payload: &[u8]) -> io::Result<usize> {
    // The writer thread shares this socket's flags, but it is idle while we hold the link.
    stream.set_nonblocking(true)?;
    let written = write_until_full(stream, header, payload);
    stream.set_nonblocking(false)?;
    written
}

fn write_until_full(mut stream: &TcpStream, header: &[u8], payload: &[u8]) -> io::Result<usize> {
    let mut written = 0;
    while written < header.len() + payload.len() {
        let (h, p) = (
            written.min(header.len()),
            written.saturating_sub(header.len()),
        );
        match stream.write_vectored(&[IoSlice::new(&header[h..]), IoSlice::new(&payload[p..])]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(written)
}

/// Fills `buf` from a shared-memory ring, waiting (spin, yield, nap) while it is empty.
fn read_shm(
    ring: &mut Consumer,
    watch: &TcpStream,
    buf: &mut [u8],
    io_timeout: Duration,
) -> io::Result<()> {
    let mut done = 0;
    let mut wait = Backoff::new(Some(io_timeout));
    while done < buf.len() {
        let got = ring.try_read(&mut buf[done..]);
        if got > 0 {
            done += got;
            wait = Backoff::new(Some(io_timeout));
            continue;
        }
        if wait.pause()? && peer_gone(watch) {
            // What the peer published before it went is still ours to read.
            let got = ring.try_read(&mut buf[done..]);
            if got == 0 {
                return Err(ErrorKind::UnexpectedEof.into());
            }
            done += got;
        }
    }
    Ok(())
}

/// Whether the peer closed the (otherwise idle) TCP connection of a shared-memory link.
fn peer_gone(watch: &TcpStream) -> bool {
    match watch.peek(&mut [0u8; 1]) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted),
    }
}

/// How a side waits on a shared-memory ring: spinning first for latency, then yielding, then
/// napping so that a long wait does not steal the CPU its peer needs.
struct Backoff {
    started: Instant,
    rounds: u32,
    /// `None` for a wait that cannot hang (on our own writer thread, whose writes time out).
    io_timeout: Option<Duration>,
}

impl Backoff {
    fn new(io_timeout: Option<Duration>) -> Backoff {
        Backoff {
            started: Instant::now(),
            rounds: 0,
            io_timeout,
        }
    }

    /// Waits a little; `Ok(true)` when it is time to check on the peer, an error past the
    /// timeout.
    fn pause(&mut self) -> io::Result<bool> {
        self.rounds = self.rounds.saturating_add(1);
        if self.rounds < SPIN_ROUNDS {
            std::hint::spin_loop();
            return Ok(false);
        }
        if self.rounds < SPIN_ROUNDS + YIELD_ROUNDS {
            std::thread::yield_now();
            return Ok(self.rounds.is_multiple_of(32));
        }
        if self
            .io_timeout
            .is_some_and(|limit| self.started.elapsed() > limit)
        {
            return Err(ErrorKind::TimedOut.into());
        }
        std::thread::sleep(NAP);
        Ok(true)
    }
}

/// A frame on its way to the writer thread.
#[derive(Debug)]
struct Outgoing {
    frame: Arc<Vec<u8>>,
    not_before: Instant,
}

/// A frame back from the writer thread, with how its write went.
type Done = (Arc<Vec<u8>>, io::Result<()>);

/// The handle on a link's writer thread.
#[derive(Debug)]
struct Writer {
    frames: Option<SyncSender<Outgoing>>,
    done: Receiver<Done>,
    /// Frames handed over whose `Done` has not been received.
    in_flight: usize,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    fn spawn(peer: usize, sink: Sink, rate: Option<u64>) -> Result<Writer, CommError> {
        let (frames, frames_rx) = sync_channel(QUEUE_FRAMES);
        // Bounded channels allocate nothing per message. The writer may block handing a frame
        // back, but the caller drains `done` whenever it waits on the writer (`post`, `finish`).
        let (done_tx, done) = sync_channel(QUEUE_FRAMES + 1);
        let pacer = Pacer::new(rate);
        let thread = std::thread::Builder::new()
            .name(format!("pinch-send-{peer}"))
            .spawn(move || write_frames(sink, pacer, frames_rx, done_tx))
            .map_err(|e| link_error(peer, e, Duration::ZERO))?;
        Ok(Writer {
            frames: Some(frames),
            done,
            in_flight: 0,
            thread: Some(thread),
        })
    }
}

/// The writer thread: writes each frame when its time has come and hands it back. After a
/// failed write it writes nothing more (the stream is out of step) but still answers every
/// frame, so the caller's count of frames in flight stays right.
fn write_frames(
    mut sink: Sink,
    mut pacer: Pacer,
    frames: Receiver<Outgoing>,
    done: SyncSender<Done>,
) {
    let mut failed: Option<ErrorKind> = None;
    while let Ok(outgoing) = frames.recv() {
        let written = match failed {
            Some(kind) => Err(io::Error::new(kind, "an earlier frame on this link failed")),
            None => {
                sleep_until(outgoing.not_before);
                pacer.write(&mut sink, &outgoing.frame)
            }
        };
        if let Err(e) = &written {
            failed = Some(e.kind());
        }
        if done.send((outgoing.frame, written)).is_err() {
            break;
        }
    }
}

fn sleep_until(when: Instant) {
    let left = when.saturating_duration_since(Instant::now());
    if !left.is_zero() {
        std::thread::sleep(left);
    }
}

/// Where a writer thread puts bytes.
enum Sink {
    Tcp(TcpStream),
    Shm {
        ring: Arc<Mutex<Producer>>,
        watch: TcpStream,
        io_timeout: Duration,
    },
}

impl Sink {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Tcp(stream) => stream.write_all(bytes),
            Sink::Shm {
                ring,
                watch,
                io_timeout,
            } => {
                let mut ring = ring.lock().unwrap_or_else(PoisonError::into_inner);
                write_shm(&mut ring, watch, bytes, *io_timeout)
            }
        }
    }
}

/// Copies `bytes` into a shared-memory ring, waiting while it is full.
fn write_shm(
    ring: &mut Producer,
    watch: &TcpStream,
    bytes: &[u8],
    io_timeout: Duration,
) -> io::Result<()> {
    let mut done = 0;
    let mut wait = Backoff::new(Some(io_timeout));
    while done < bytes.len() {
        let put = ring.try_write(&bytes[done..], SHM_PUBLISH_BYTES);
        if put > 0 {
            done += put;
            wait = Backoff::new(Some(io_timeout));
        } else if wait.pause()? && peer_gone(watch) {
            return Err(ErrorKind::BrokenPipe.into());
        }
    }
    Ok(())
}

/// A token bucket over a link's bytes: `next_free` is when the bucket's clock allows the next
/// byte; it may lag the wall clock by at most one burst, so an idle link can send a burst.
struct Pacer {
    rate_bytes_per_s: Option<u64>,
    next_free: Instant,
}

impl Pacer {
    fn new(rate_bytes_per_s: Option<u64>) -> Pacer {
        Pacer {
            rate_bytes_per_s,
            next_free: Instant::now(),
        }
    }

    fn write(&mut self, sink: &mut Sink, frame: &[u8]) -> io::Result<()> {
        let Some(rate) = self.rate_bytes_per_s else {
            return sink.write_all(frame);
        };
        for piece in frame.chunks(PACE_BYTES) {
            self.take(piece.len(), rate);
            sink.write_all(piece)?;
        }
        Ok(())
    }

    /// Waits until `bytes` more may go at `rate` bytes per second.
    fn take(&mut self, bytes: usize, rate: u64) {
        let per_s = rate as f64;
        let now = Instant::now();
        let burst = Duration::from_secs_f64(PACE_BYTES as f64 / per_s);
        let earliest = now.checked_sub(burst).unwrap_or(now);
        let start = self.next_free.max(earliest);
        self.next_free = start + Duration::from_secs_f64(bytes as f64 / per_s);
        sleep_until(start);
    }
}

/// Frame buffers not in use, kept so the hot path reuses them instead of allocating.
#[derive(Debug, Default)]
pub struct Pool {
    spare: Vec<Arc<Vec<u8>>>,
}

impl Pool {
    /// The two `parts` one after the other, in the smallest spare buffer that fits.
    pub fn bytes(&mut self, parts: [&[u8]; 2]) -> Arc<Vec<u8>> {
        let mut frame = self.take(parts[0].len() + parts[1].len());
        match Arc::get_mut(&mut frame) {
            Some(bytes) => {
                bytes.clear();
                bytes.extend_from_slice(parts[0]);
                bytes.extend_from_slice(parts[1]);
                frame
            }
            // Spare buffers are never shared; this only guards the invariant.
            None => Arc::new(parts.concat()),
        }
    }

    fn take(&mut self, len: usize) -> Arc<Vec<u8>> {
        let fits = |f: &Arc<Vec<u8>>| f.capacity() >= len;
        let best = (0..self.spare.len())
            .filter(|&i| fits(&self.spare[i]))
            .min_by_key(|&i| self.spare[i].capacity())
            .or_else(|| (0..self.spare.len()).max_by_key(|&i| self.spare[i].capacity()));
        match best {
            Some(i) => self.spare.swap_remove(i),
            None => Arc::new(Vec::with_capacity(len)),
        }
    }

    /// Makes sure at least `count` spare buffers hold `bytes` each, so that an operation that
    /// never has more than `count` frames of up to `bytes` unwritten takes no new buffers.
    pub fn reserve(&mut self, count: usize, bytes: usize) {
        let fit = self.spare.iter().filter(|f| f.capacity() >= bytes).count();
        for _ in fit..count {
            self.spare.push(Arc::new(Vec::with_capacity(bytes)));
        }
    }

    /// Keeps `frame` once no other link still holds it.
    fn give_back(&mut self, mut frame: Arc<Vec<u8>>) {
        if Arc::get_mut(&mut frame).is_some() {
            self.spare.push(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_reuses_the_smallest_buffer_that_fits() {
        let mut pool = Pool::default();
        pool.give_back(Arc::new(Vec::with_capacity(1000)));
        pool.give_back(Arc::new(Vec::with_capacity(100)));
        let shared = Arc::new(Vec::with_capacity(5000));
        pool.give_back(Arc::clone(&shared));
        assert_eq!(
            pool.spare.len(),
            2,
            "a frame another link holds is not kept"
        );
        assert_eq!(pool.take(50).capacity(), 100);
        assert_eq!(
            pool.take(5000).capacity(),
            1000,
            "else the largest, to grow"
        );
        assert!(pool.spare.is_empty());
    }

    #[test]
    fn a_reserve_tops_the_pool_up_to_enough_buffers_that_fit() {
        let mut pool = Pool::default();
        pool.give_back(Arc::new(Vec::with_capacity(10)));
        pool.give_back(Arc::new(Vec::with_capacity(4000)));
        pool.reserve(3, 1000);
        let fit = |pool: &Pool| pool.spare.iter().filter(|f| f.capacity() >= 1000).count();
        assert_eq!((pool.spare.len(), fit(&pool)), (4, 3));
        pool.reserve(2, 1000);
        assert_eq!(pool.spare.len(), 4, "enough already");
    }

    #[test]
    fn the_pacer_holds_a_rate() {
        let rate = 10 << 20;
        let mut pacer = Pacer::new(Some(rate));
        let started = Instant::now();
        let bytes = 2 << 20;
        for _ in 0..bytes / PACE_BYTES {
            pacer.take(PACE_BYTES, rate);
        }
        let took = started.elapsed().as_secs_f64();
        let expected = (bytes - PACE_BYTES) as f64 / rate as f64;
        assert!(
            took >= expected * 0.95,
            "{took} s for {expected} s of bytes"
        );
    }
}
