//! The rendezvous: how the ranks of a world learn each other's node and listening address.
//!
//! Each rank registers `(rank, world, node, listen address)`; once all `world` ranks have
//! registered, the server answers every one of them with every rank's `PeerInfo`, in rank order. A rank that
//! does not fit (out of range, wrong world size, registered twice) fails the whole rendezvous,
//! and every rank that registered is told why. Connections that do not speak the protocol are
//! dropped and otherwise ignored.

use super::CommError;
use super::wire::{
    accept_until, connect_until, is_closed, is_timeout, read_hello, read_str, read_u32, remaining,
    timeout, write_hello, write_str, write_u32s,
};
use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

const REPLY_OK: u32 = 0;
const REPLY_REJECTED: u32 = 1;

/// A bound rendezvous, ready to `serve` a group (usually from a thread of its own).
#[derive(Debug)]
pub struct RendezvousServer {
    listener: TcpListener,
    addr: SocketAddr,
}

/// Where a rank runs and listens, as the rendezvous hands it to every other rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerInfo {
    pub rank: usize,
    /// Ranks with equal node ids run on one machine (and may share memory).
    pub node: u32,
    pub addr: SocketAddr,
}

/// A registered rank, waiting for the answer.
type Registration = (TcpStream, PeerInfo);

impl RendezvousServer {
    /// Listens on `addr` (`"127.0.0.1:0"` picks a free port; see `addr()`).
    pub fn bind(addr: &str) -> Result<RendezvousServer, CommError> {
        let bind_error = |source| CommError::Bind {
            addr: addr.to_string(),
            source,
        };
        let listener = TcpListener::bind(addr).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        Ok(RendezvousServer { listener, addr })
    }

    /// The address ranks register at.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for `world` ranks to register, answers each with every rank's `PeerInfo` and
    /// returns them; fails if they do not all register within `timeout`.
    pub fn serve(self, world: usize, timeout: Duration) -> Result<Vec<PeerInfo>, CommError> {
        if world == 0 {
            return Err(CommError::ZeroWorld);
        }
        let started = Instant::now();
        let deadline = started + timeout;
        let mut slots: Vec<Option<Registration>> = (0..world).map(|_| None).collect();
        let mut registered = 0;
        while registered < world {
            let missing = world - registered;
            let waiting_for = || format!("{missing} of {world} ranks to register");
            let mut stream = accept_until(&self.listener, started, deadline, &waiting_for)?;
            let Some((theirs, peer)) = read_registration(&mut stream, deadline) else {
                continue;
            };
            let rank = peer.rank;
            if let Err(refusal) = check(rank, theirs, &slots) {
                reject(
                    slots.iter_mut().flatten().map(|(s, _)| s),
                    &mut stream,
                    &refusal,
                );
                return Err(refusal);
            }
            slots[rank] = Some((stream, peer));
            registered += 1;
        }
        Ok(answer(slots.into_iter().flatten().collect()))
    }
}

/// A rank's registration (its world size and itself), or `None` for a connection that is not
/// a pinch rank.
fn read_registration(stream: &mut TcpStream, deadline: Instant) -> Option<(usize, PeerInfo)> {
    stream.set_read_timeout(Some(remaining(deadline))).ok()?;
    let (rank, world) = read_hello(stream).ok()??;
    let node = read_u32(stream).ok()?;
    let addr = read_str(stream).ok()?.parse().ok()?;
    Some((world, PeerInfo { rank, node, addr }))
}

/// Whether rank `rank` of a `theirs`-rank world may take its slot.
fn check(rank: usize, theirs: usize, slots: &[Option<Registration>]) -> Result<(), CommError> {
    let world = slots.len();
    if theirs != world {
        return Err(CommError::WorldMismatch {
            peer: rank,
            theirs,
            ours: world,
        });
    }
    match slots.get(rank) {
        None => Err(CommError::RankOutOfRange { rank, world }),
        Some(Some(_)) => Err(CommError::DuplicateRank { rank }),
        Some(None) => Ok(()),
    }
}

/// Tells the offending rank and every registered one why the rendezvous failed.
fn reject<'a>(
    registered: impl Iterator<Item = &'a mut TcpStream>,
    offender: &'a mut TcpStream,
    refusal: &CommError,
) {
    let reason = refusal.to_string();
    for stream in registered.chain(std::iter::once(offender)) {
        // A rank that is gone cannot be told; the others still are.
        let _ = write_u32s(stream, &[REPLY_REJECTED]).and_then(|()| write_str(stream, &reason));
    }
}

/// Sends every rank the peer list; a rank that died meanwhile finds out at connect.
fn answer(registered: Vec<Registration>) -> Vec<PeerInfo> {
    let peers: Vec<PeerInfo> = registered.iter().map(|(_, peer)| *peer).collect();
    for (mut stream, _) in registered {
        let _ = write_peers(&mut stream, &peers);
    }
    peers
}

fn write_peers(stream: &mut TcpStream, peers: &[PeerInfo]) -> io::Result<()> {
    write_u32s(stream, &[REPLY_OK, peers.len() as u32])?;
    peers.iter().try_for_each(|peer| {
        write_u32s(stream, &[peer.node])?;
        write_str(stream, &peer.addr.to_string())
    })
}

/// Registers rank `rank` of `world`, running on node `node` and listening at `my_addr`, and
/// returns every rank's `PeerInfo`, indexed by rank, once all have registered.
pub fn rendezvous(
    server: SocketAddr,
    rank: usize,
    world: usize,
    node: u32,
    my_addr: SocketAddr,
    timeout: Duration,
) -> Result<Vec<PeerInfo>, CommError> {
    if world == 0 {
        return Err(CommError::ZeroWorld);
    }
    if rank >= world {
        return Err(CommError::RankOutOfRange { rank, world });
    }
    let started = Instant::now();
    let deadline = started + timeout;
    let mut stream = connect_until(server, deadline)?;
    write_hello(&mut stream, rank, world)
        .and_then(|()| write_u32s(&mut stream, &[node]))
        .and_then(|()| write_str(&mut stream, &my_addr.to_string()))
        .map_err(|source| CommError::RendezvousIo { source })?;
    stream
        .set_read_timeout(Some(remaining(deadline)))
        .map_err(|source| CommError::RendezvousIo { source })?;
    read_answer(&mut stream, world).map_err(|e| match e {
        AnswerError::Io(e) if is_closed(e.kind()) => CommError::RendezvousClosed,
        AnswerError::Io(e) if is_timeout(e.kind()) => timeout_error(started),
        AnswerError::Io(source) => CommError::RendezvousIo { source },
        AnswerError::Comm(e) => e,
    })
}

fn timeout_error(started: Instant) -> CommError {
    timeout(
        "the other ranks at the rendezvous".to_string(),
        started.elapsed(),
    )
}

enum AnswerError {
    Io(io::Error),
    Comm(CommError),
}

impl From<io::Error> for AnswerError {
    fn from(e: io::Error) -> Self {
        AnswerError::Io(e)
    }
}

fn read_answer(stream: &mut TcpStream, world: usize) -> Result<Vec<PeerInfo>, AnswerError> {
    if read_u32(stream)? == REPLY_REJECTED {
        let reason = read_str(stream)?;
        return Err(AnswerError::Comm(CommError::Rejected { reason }));
    }
    let got = read_u32(stream)? as usize;
    if got != world {
        return Err(AnswerError::Comm(CommError::AddressCount { got, world }));
    }
    (0..world)
        .map(|rank| {
            let node = read_u32(stream)?;
            let text = read_str(stream)?;
            let addr = text
                .parse()
                .map_err(|_| AnswerError::Comm(CommError::BadAddress { text }))?;
            Ok(PeerInfo { rank, node, addr })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn fake_listen_addr(rank: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 40_000 + rank as u16))
    }

    fn fake_peer(rank: usize) -> PeerInfo {
        PeerInfo {
            rank,
            node: 10 + rank as u32 / 2,
            addr: fake_listen_addr(rank),
        }
    }

    #[test]
    fn every_rank_gets_every_peer_in_rank_order() {
        let server = RendezvousServer::bind("127.0.0.1:0").unwrap();
        let at = server.addr();
        let serving = std::thread::spawn(move || server.serve(3, TIMEOUT));
        let ranks: Vec<_> = [2, 0, 1]
            .into_iter()
            .map(|r| {
                let me = fake_peer(r);
                std::thread::spawn(move || rendezvous(at, r, 3, me.node, me.addr, TIMEOUT))
            })
            .collect();
        let expected: Vec<PeerInfo> = (0..3).map(fake_peer).collect();
        for rank in ranks {
            assert_eq!(rank.join().unwrap().unwrap(), expected);
        }
        assert_eq!(serving.join().unwrap().unwrap(), expected);
    }

    #[test]
    fn a_rank_of_another_world_fails_the_rendezvous_for_everyone() {
        let server = RendezvousServer::bind("127.0.0.1:0").unwrap();
        let at = server.addr();
        let serving = std::thread::spawn(move || server.serve(2, TIMEOUT));
        let first =
            std::thread::spawn(move || rendezvous(at, 0, 2, 0, fake_listen_addr(0), TIMEOUT));
        std::thread::sleep(Duration::from_millis(50));
        let wrong = rendezvous(at, 1, 3, 0, fake_listen_addr(1), TIMEOUT).unwrap_err();
        let served = serving.join().unwrap().unwrap_err().to_string();
        assert_eq!(
            served,
            "rank 1 was started for a world of '3' ranks, this rank for 2"
        );
        assert!(matches!(wrong, CommError::Rejected { .. }), "{wrong}");
        let first = first.join().unwrap().unwrap_err().to_string();
        assert!(first.contains("world of '3'"), "{first}");
    }

    #[test]
    fn a_stray_connection_is_ignored() {
        let server = RendezvousServer::bind("127.0.0.1:0").unwrap();
        let at = server.addr();
        let serving = std::thread::spawn(move || server.serve(1, TIMEOUT));
        let mut stray = TcpStream::connect(at).unwrap();
        write_u32s(&mut stray, &[7, 7, 7]).unwrap();
        drop(stray);
        let peers = rendezvous(at, 0, 1, 10, fake_listen_addr(0), TIMEOUT).unwrap();
        assert_eq!(peers, vec![fake_peer(0)]);
        assert!(serving.join().unwrap().is_ok());
    }

    #[test]
    fn a_missing_rank_times_out_naming_how_many() {
        let server = RendezvousServer::bind("127.0.0.1:0").unwrap();
        let err = server
            .serve(2, Duration::from_millis(30))
            .unwrap_err()
            .to_string();
        assert!(err.contains("2 of 2 ranks to register"), "{err}");
    }

    #[test]
    fn bad_ranks_are_refused_before_connecting() {
        let at = fake_listen_addr(9);
        let err = rendezvous(at, 2, 2, 0, at, TIMEOUT)
            .unwrap_err()
            .to_string();
        assert_eq!(err, "rank '2' is out of range for a world of 2");
        assert!(matches!(
            rendezvous(at, 0, 0, 0, at, TIMEOUT),
            Err(CommError::ZeroWorld)
        ));
    }
}
