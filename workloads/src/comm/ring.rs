//! A ring of TCP links and the ring all-reduce over it.
//!
//! Rank `r` sends to rank `r+1` and receives from rank `r-1` (mod world). An all-reduce is a
//! reduce-scatter then an all-gather over `world` chunks, `2·(world−1)` steps in all; in each
//! step every rank sends one chunk and receives another. Every rank sends before it receives, so
//! sends go through a persistent writer thread per link: when chunks outgrow the socket buffers
//! nobody blocks in a send waiting for a peer that is itself blocked in a send. A chunk travels
//! in a frame `[seq u64][elements u32][f32 × elements]`, little-endian, and the receiver checks
//! the header, so ranks that issue different collectives fail instead of mixing data.
//!
//! The hot path allocates nothing once the two frame buffers have grown to the largest chunk.

use super::CommError;
use super::wire::{
    accept_until, connect_until, is_closed, is_timeout, read_hello, remaining, timeout, write_hello,
};
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a rank waits on a peer inside a collective before calling it hung.
pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a dropped ring lets a frame in flight reach its peer.
const DROP_GRACE: Duration = Duration::from_secs(1);
/// Bytes of a frame header: the collective's sequence number and the chunk's element count.
const HEADER_BYTES: usize = 12;

/// This rank's place in a ring of `world` ranks and its links to its two neighbours.
#[derive(Debug)]
pub struct Ring {
    rank: usize,
    world: usize,
    /// Collectives issued so far: the sequence number of the next one.
    seq: u64,
    /// `None` for a ring of one.
    links: Option<Links>,
    /// Set by a failed collective: the peers are now out of step with this rank.
    broken: bool,
}

#[derive(Debug)]
struct Links {
    prev: usize,
    incoming: TcpStream,
    sender: LinkSender,
    /// The last received frame's payload.
    received: Vec<u8>,
    io_timeout: Duration,
}

impl Ring {
    /// A ring of one rank: collectives are no-ops (but still counted).
    pub fn solo() -> Ring {
        Ring {
            rank: 0,
            world: 1,
            seq: 0,
            links: None,
            broken: false,
        }
    }

    /// Connects rank `rank` into the ring: connects to rank+1's address in `addrs`, accepts
    /// rank−1 on `listener`, and checks both handshakes, all within `timeout`.
    pub fn connect(
        rank: usize,
        world: usize,
        listener: TcpListener,
        addrs: &[SocketAddr],
        timeout: Duration,
    ) -> Result<Ring, CommError> {
        check_membership(rank, world, addrs.len())?;
        if world == 1 {
            return Ok(Ring::solo());
        }
        let started = Instant::now();
        let deadline = started + timeout;
        let (next, prev) = ((rank + 1) % world, (rank + world - 1) % world);
        let mut outgoing = connect_until(addrs[next], deadline)?;
        write_hello(&mut outgoing, rank, world).map_err(|e| link_error(next, e, timeout))?;
        let incoming = accept_peer(&listener, rank, world, prev, started, deadline)?;
        expect_ack(&mut outgoing, world, next, started, deadline)?;
        let links = Links::new(prev, incoming, next, outgoing, DEFAULT_IO_TIMEOUT)?;
        Ok(Ring {
            rank,
            world,
            seq: 0,
            links: Some(links),
            broken: false,
        })
    }

    /// A whole ring of `world` ranks in this process, over loopback, for tests and
    /// single-process runs: element `r` is rank `r`'s end.
    pub fn loopback_group(world: usize, timeout: Duration) -> Result<Vec<Ring>, CommError> {
        if world == 0 {
            return Err(CommError::ZeroWorld);
        }
        let bind = |_| {
            TcpListener::bind("127.0.0.1:0").map_err(|source| CommError::Bind {
                addr: "127.0.0.1:0".to_string(),
                source,
            })
        };
        let listeners = (0..world).map(bind).collect::<Result<Vec<_>, _>>()?;
        let addrs = listeners
            .iter()
            .map(|l| {
                l.local_addr()
                    .map_err(|source| CommError::Accept { source })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let addrs = &addrs;
        std::thread::scope(|scope| {
            let connecting: Vec<_> = listeners
                .into_iter()
                .enumerate()
                .map(|(r, l)| scope.spawn(move || Ring::connect(r, world, l, addrs, timeout)))
                .collect();
            connecting
                .into_iter()
                .map(|c| {
                    c.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        })
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// The sequence number the next collective will carry (the count issued so far).
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// How long to wait on a peer inside a collective before failing with a timeout.
    pub fn set_io_timeout(&mut self, io_timeout: Duration) -> Result<(), CommError> {
        match &mut self.links {
            Some(links) => links.set_io_timeout(io_timeout),
            None => Ok(()),
        }
    }

    /// Sums `data` elementwise across the ring: afterwards every rank holds the same sums,
    /// bit for bit (each chunk is reduced on one rank and copied to the others).
    pub fn all_reduce_sum(&mut self, data: &mut [f32]) -> Result<(), CommError> {
        if self.broken {
            return Err(CommError::Broken);
        }
        let seq = self.seq;
        self.seq += 1;
        let Some(links) = &mut self.links else {
            return Ok(());
        };
        let outcome = links.all_reduce(data, seq, self.rank, self.world);
        self.broken = outcome.is_err();
        outcome
    }
}

fn check_membership(rank: usize, world: usize, addrs: usize) -> Result<(), CommError> {
    if world == 0 {
        return Err(CommError::ZeroWorld);
    }
    if rank >= world {
        return Err(CommError::RankOutOfRange { rank, world });
    }
    if addrs != world {
        return Err(CommError::AddressCount { got: addrs, world });
    }
    Ok(())
}

/// Accepts the link from rank `prev`, checks its hello and acknowledges it.
fn accept_peer(
    listener: &TcpListener,
    rank: usize,
    world: usize,
    prev: usize,
    started: Instant,
    deadline: Instant,
) -> Result<TcpStream, CommError> {
    let waiting_for = || format!("rank {prev} to connect");
    let mut incoming = accept_until(listener, started, deadline, &waiting_for)?;
    let budget = deadline - started;
    incoming
        .set_read_timeout(Some(remaining(deadline)))
        .map_err(|e| link_error(prev, e, budget))?;
    let hello = read_hello(&mut incoming).map_err(|e| link_error(prev, e, budget))?;
    check_hello(hello, &incoming, world, prev)?;
    write_hello(&mut incoming, rank, world).map_err(|e| link_error(prev, e, budget))?;
    Ok(incoming)
}

/// Waits for rank `next` to acknowledge our hello.
fn expect_ack(
    outgoing: &mut TcpStream,
    world: usize,
    next: usize,
    started: Instant,
    deadline: Instant,
) -> Result<(), CommError> {
    let budget = deadline - started;
    outgoing
        .set_read_timeout(Some(remaining(deadline)))
        .map_err(|e| link_error(next, e, budget))?;
    let ack = read_hello(outgoing).map_err(|e| link_error(next, e, budget))?;
    check_hello(ack, outgoing, world, next)
}

fn check_hello(
    hello: Option<(usize, usize)>,
    stream: &TcpStream,
    world: usize,
    expected: usize,
) -> Result<(), CommError> {
    match hello {
        None => Err(CommError::NotAPeer {
            addr: stream
                .peer_addr()
                .map_err(|e| link_error(expected, e, Duration::ZERO))?,
        }),
        Some((got, theirs)) if theirs != world => Err(CommError::WorldMismatch {
            peer: got,
            theirs,
            ours: world,
        }),
        Some((got, _)) if got != expected => Err(CommError::UnexpectedPeer { expected, got }),
        Some(_) => Ok(()),
    }
}

/// What an I/O error on the link to `peer` means: it left, it hung, or something else.
fn link_error(peer: usize, e: io::Error, waited: Duration) -> CommError {
    if is_closed(e.kind()) {
        CommError::PeerClosed { peer }
    } else if is_timeout(e.kind()) {
        timeout(format!("rank {peer}"), waited)
    } else {
        CommError::Io { peer, source: e }
    }
}

impl Links {
    fn new(
        prev: usize,
        incoming: TcpStream,
        next: usize,
        outgoing: TcpStream,
        io_timeout: Duration,
    ) -> Result<Links, CommError> {
        for (peer, stream) in [(prev, &incoming), (next, &outgoing)] {
            stream
                .set_nodelay(true)
                .map_err(|e| link_error(peer, e, io_timeout))?;
        }
        let mut links = Links {
            prev,
            incoming,
            sender: LinkSender::spawn(next, outgoing, io_timeout)?,
            received: Vec::new(),
            io_timeout,
        };
        links.set_io_timeout(io_timeout)?;
        Ok(links)
    }

    fn set_io_timeout(&mut self, io_timeout: Duration) -> Result<(), CommError> {
        let io_timeout = io_timeout.max(Duration::from_millis(1));
        self.io_timeout = io_timeout;
        self.incoming
            .set_read_timeout(Some(io_timeout))
            .map_err(|e| link_error(self.prev, e, io_timeout))?;
        self.sender.set_io_timeout(io_timeout)
    }

    /// Reduce-scatter (after it, rank r holds the full sum of chunk r+1), then all-gather.
    fn all_reduce(
        &mut self,
        data: &mut [f32],
        seq: u64,
        rank: usize,
        world: usize,
    ) -> Result<(), CommError> {
        let chunk = data.len().div_ceil(world);
        let n = data.len();
        let bounds = |c: usize| (c * chunk).min(n)..((c + 1) * chunk).min(n);
        for step in 0..world - 1 {
            let send = bounds((rank + world - step) % world);
            let recv = bounds((rank + 2 * world - step - 1) % world);
            let got = self.exchange(seq, &data[send], recv.len())?;
            for (x, bytes) in data[recv].iter_mut().zip(got.chunks_exact(4)) {
                *x += decode(bytes);
            }
        }
        for step in 0..world - 1 {
            let send = bounds((rank + 1 + world - step) % world);
            let recv = bounds((rank + world - step) % world);
            let got = self.exchange(seq, &data[send], recv.len())?;
            for (x, bytes) in data[recv].iter_mut().zip(got.chunks_exact(4)) {
                *x = decode(bytes);
            }
        }
        Ok(())
    }

    /// Sends `send` to the next rank while receiving `recv_elems` elements from the previous.
    fn exchange(&mut self, seq: u64, send: &[f32], recv_elems: usize) -> Result<&[u8], CommError> {
        self.sender.start(seq, send)?;
        // On failure the send may still be in flight; the ring is broken and Drop stops it.
        self.receive(seq, recv_elems)?;
        self.sender.finish()?;
        Ok(&self.received)
    }

    fn receive(&mut self, seq: u64, elems: usize) -> Result<(), CommError> {
        let (prev, waited) = (self.prev, self.io_timeout);
        let mut header = [0u8; HEADER_BYTES];
        self.incoming
            .read_exact(&mut header)
            .map_err(|e| link_error(prev, e, waited))?;
        let (got_seq, got_elems) = parse_header(&header);
        if (got_seq, got_elems) != (seq, elems) {
            return Err(CommError::Mismatch {
                peer: prev,
                seq,
                elems,
                got_seq,
                got_elems,
            });
        }
        self.received.resize(4 * elems, 0);
        self.incoming
            .read_exact(&mut self.received)
            .map_err(|e| link_error(prev, e, waited))
    }
}

fn parse_header(header: &[u8; HEADER_BYTES]) -> (u64, usize) {
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&header[..8]);
    let mut elems = [0u8; 4];
    elems.copy_from_slice(&header[8..]);
    (u64::from_le_bytes(seq), u32::from_le_bytes(elems) as usize)
}

fn decode(bytes: &[u8]) -> f32 {
    f32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
}

/// What the writer thread hands back: the frame buffer, for reuse, and how the write went.
type Sent = (Vec<u8>, io::Result<()>);

/// The sending half of the link to the next rank, driven by a persistent writer thread.
#[derive(Debug)]
struct LinkSender {
    next: usize,
    stream: TcpStream,
    frames: Option<SyncSender<Vec<u8>>>,
    sent: Receiver<Sent>,
    /// The frame buffer while no send is in flight.
    spare: Option<Vec<u8>>,
    writer: Option<JoinHandle<()>>,
    io_timeout: Duration,
}

impl LinkSender {
    fn spawn(
        next: usize,
        stream: TcpStream,
        io_timeout: Duration,
    ) -> Result<LinkSender, CommError> {
        let to_thread = stream
            .try_clone()
            .map_err(|e| link_error(next, e, io_timeout))?;
        let (frames, frames_rx) = sync_channel(1);
        let (sent_tx, sent) = sync_channel(1);
        let writer = std::thread::Builder::new()
            .name(format!("pinch-ring-send-{next}"))
            .spawn(move || write_frames(to_thread, frames_rx, sent_tx))
            .map_err(|e| link_error(next, e, io_timeout))?;
        Ok(LinkSender {
            next,
            stream,
            frames: Some(frames),
            sent,
            spare: Some(Vec::new()),
            writer: Some(writer),
            io_timeout,
        })
    }

    fn set_io_timeout(&mut self, io_timeout: Duration) -> Result<(), CommError> {
        self.io_timeout = io_timeout;
        self.stream
            .set_write_timeout(Some(io_timeout))
            .map_err(|e| link_error(self.next, e, io_timeout))
    }

    /// Encodes `payload` into the frame buffer and hands it to the writer thread.
    fn start(&mut self, seq: u64, payload: &[f32]) -> Result<(), CommError> {
        let mut frame = self.spare.take().ok_or(CommError::Broken)?;
        frame.clear();
        frame.extend_from_slice(&seq.to_le_bytes());
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend(payload.iter().flat_map(|x| x.to_le_bytes()));
        let frames = self.frames.as_ref().ok_or(CommError::Broken)?;
        frames.send(frame).map_err(|_| CommError::Broken)
    }

    /// Waits until the frame handed over by `start` is written.
    fn finish(&mut self) -> Result<(), CommError> {
        let (frame, written) = self.sent.recv().map_err(|_| CommError::Broken)?;
        self.spare = Some(frame);
        written.map_err(|e| link_error(self.next, e, self.io_timeout))
    }
}

impl Drop for LinkSender {
    fn drop(&mut self) {
        // Closing the channel ends an idle writer; the shutdown ends one stuck in a write.
        self.frames = None;
        if self.spare.is_none() {
            // A collective failed with a frame in flight: let it reach the peer, so the peer
            // fails on what went wrong rather than on an abrupt close, unless the peer hangs.
            let _ = self.sent.recv_timeout(DROP_GRACE);
        }
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

/// The writer thread: writes each frame it is given and hands the buffer back.
fn write_frames(mut stream: TcpStream, frames: Receiver<Vec<u8>>, sent: SyncSender<Sent>) {
    while let Ok(frame) = frames.recv() {
        let written = stream.write_all(&frame);
        if sent.send((frame, written)).is_err() {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::wire::write_u32s;

    const TIMEOUT: Duration = Duration::from_secs(10);

    /// Runs `body(ring)` for every rank of a loopback ring of `world`, one thread each.
    fn on_every_rank<T: Send>(world: usize, body: impl Fn(Ring) -> T + Sync) -> Vec<T> {
        let rings = Ring::loopback_group(world, TIMEOUT).unwrap();
        let body = &body;
        std::thread::scope(|scope| {
            let ranks: Vec<_> = rings
                .into_iter()
                .map(|ring| scope.spawn(move || body(ring)))
                .collect();
            ranks.into_iter().map(|r| r.join().unwrap()).collect()
        })
    }

    /// Small integers, so every summation order gives the exact same float.
    fn contribution(rank: usize, i: usize) -> f32 {
        ((i * 7 + rank * 13) % 1024) as f32
    }

    #[test]
    fn all_reduce_gives_exact_sums_for_one_two_and_three_ranks() {
        for world in 1..=3 {
            let checked = on_every_rank(world, |mut ring| {
                for n in [1, 7, 1000, 1 << 20] {
                    let rank = ring.rank();
                    let mut data: Vec<f32> = (0..n).map(|i| contribution(rank, i)).collect();
                    ring.all_reduce_sum(&mut data).unwrap();
                    let expected = |i| (0..world).map(|r| contribution(r, i)).sum::<f32>();
                    let wrong = (0..n).find(|&i| data[i] != expected(i));
                    assert_eq!(wrong, None, "world {world}, {n} elements, rank {rank}");
                }
                ring.seq()
            });
            assert_eq!(
                checked,
                vec![4; world],
                "every rank counted four collectives"
            );
        }
    }

    #[test]
    fn an_empty_buffer_is_a_valid_collective() {
        let seqs = on_every_rank(2, |mut ring| {
            ring.all_reduce_sum(&mut []).unwrap();
            let mut one = [ring.rank() as f32 + 1.0];
            ring.all_reduce_sum(&mut one).unwrap();
            (ring.seq(), one[0])
        });
        assert_eq!(seqs, vec![(2, 3.0), (2, 3.0)]);
    }

    #[test]
    fn a_peer_that_leaves_between_collectives_is_named() {
        let outcomes = on_every_rank(2, |mut ring| {
            let mut data = vec![1.0f32; 64];
            ring.all_reduce_sum(&mut data).unwrap();
            if ring.rank() == 1 {
                return None;
            }
            Some(ring.all_reduce_sum(&mut data))
        });
        let err = outcomes[0].as_ref().unwrap().as_ref().unwrap_err();
        assert!(matches!(err, CommError::PeerClosed { peer: 1 }), "{err}");
        assert_eq!(
            err.to_string(),
            "rank 1 closed its connection (it may have crashed)"
        );
    }

    #[test]
    fn a_peer_that_dies_mid_collective_fails_the_others_fast() {
        let started = Instant::now();
        let outcomes = on_every_rank(3, |mut ring| {
            if ring.rank() == 2 {
                return None;
            }
            let mut data = vec![1.0f32; 1 << 20];
            let outcome = ring.all_reduce_sum(&mut data);
            let again = ring.all_reduce_sum(&mut data);
            assert!(matches!(again, Err(CommError::Broken)), "{again:?}");
            Some(outcome)
        });
        let zero = outcomes[0].as_ref().unwrap().as_ref().unwrap_err();
        assert!(matches!(zero, CommError::PeerClosed { peer: 2 }), "{zero}");
        let one = outcomes[1].as_ref().unwrap().as_ref().unwrap_err();
        assert!(matches!(one, CommError::PeerClosed { .. }), "{one}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no waiting on timeouts"
        );
    }

    #[test]
    fn a_hung_peer_becomes_a_timeout() {
        let rank0_done = std::sync::Barrier::new(2);
        let outcomes = on_every_rank(2, |mut ring| {
            if ring.rank() == 1 {
                rank0_done.wait();
                return None;
            }
            ring.set_io_timeout(Duration::from_millis(50)).unwrap();
            let outcome = ring.all_reduce_sum(&mut [1.0, 2.0]);
            rank0_done.wait();
            Some(outcome)
        });
        let err = outcomes[0]
            .as_ref()
            .unwrap()
            .as_ref()
            .unwrap_err()
            .to_string();
        assert_eq!(err, "timed out after 50 ms waiting for rank 1");
    }

    #[test]
    fn ranks_issuing_different_collectives_fail_instead_of_mixing_data() {
        let outcomes = on_every_rank(2, |mut ring| {
            let mut data = vec![1.0f32; 7 + 2 * ring.rank()];
            ring.all_reduce_sum(&mut data)
        });
        let err = outcomes[0].as_ref().unwrap_err();
        assert!(
            matches!(
                err,
                CommError::Mismatch {
                    peer: 1,
                    seq: 0,
                    elems: 3,
                    got_elems: 4,
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_stranger_on_the_ring_port_is_refused() {
        let ours = TcpListener::bind("127.0.0.1:0").unwrap();
        let fake = TcpListener::bind("127.0.0.1:0").unwrap();
        let addrs = [ours.local_addr().unwrap(), fake.local_addr().unwrap()];
        let stranger = std::thread::spawn(move || {
            let _accepted = fake.accept().unwrap();
            let mut to_rank0 = TcpStream::connect(addrs[0]).unwrap();
            write_u32s(&mut to_rank0, &[1, 2, 3]).unwrap();
            std::thread::sleep(Duration::from_millis(200));
        });
        let err = Ring::connect(0, 2, ours, &addrs, TIMEOUT).unwrap_err();
        assert!(matches!(err, CommError::NotAPeer { .. }), "{err}");
        stranger.join().unwrap();
    }

    #[test]
    fn membership_errors_name_the_value() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let err = Ring::connect(0, 2, listener, &[addr], TIMEOUT).unwrap_err();
        assert_eq!(
            err.to_string(),
            "a world of 2 ranks needs 2 addresses, got '1'"
        );
        assert!(matches!(
            Ring::loopback_group(0, TIMEOUT),
            Err(CommError::ZeroWorld)
        ));
    }
}
