//! The mesh: this rank's links to every other rank of the world, and how they are set up.
//!
//! Every pair of ranks shares one TCP connection: the higher rank connects to the lower, both
//! exchange a hello `[magic, rank, world, node, wants shm]`, and the lower acknowledges with its
//! own. Pairs on the same node that both want shared memory then set up a `shm::Region`: the
//! lower rank creates the file and sends its path over the connection, the higher maps it and
//! acknowledges, and the lower unlinks it. Every phase only blocks on the phases of lower ranks,
//! so the whole world connects without deadlock (connects succeed through the listen backlog).

use super::link::{Link, Pool, Shape, link_error};
use super::shm::Region;
use super::wire::{
    accept_until, connect_until, read_str, read_u32, remaining, write_str, write_u32s,
};
use super::{CommError, DEFAULT_IO_TIMEOUT, PeerInfo};
use std::io;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

/// Opens a mesh hello (the ring's hello uses another magic, so the two never mix).
const MESH_MAGIC: u32 = 0x4853_454d; // "MESH"
/// How long `Mesh::loopback` gives its ranks to connect.
const LOOPBACK_TIMEOUT: Duration = Duration::from_secs(30);

/// How a mesh connects its ranks.
#[derive(Clone, Debug)]
pub struct MeshOptions {
    /// Use shared memory between ranks whose `PeerInfo.node` is equal (else TCP).
    pub shm: bool,
    /// Software link shaping (fault injection); each entry applies to traffic in both
    /// directions between its two ranks, on either transport. A link may be named only once.
    pub shaping: Vec<LinkShaping>,
    /// How long a rank waits on a peer inside an operation before calling it hung.
    pub io_timeout: Duration,
}

impl Default for MeshOptions {
    fn default() -> Self {
        MeshOptions {
            shm: true,
            shaping: Vec::new(),
            io_timeout: DEFAULT_IO_TIMEOUT,
        }
    }
}

/// Extra latency and a rate cap on the link between ranks `a` and `b`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkShaping {
    pub a: usize,
    pub b: usize,
    /// Added to every message's latency (queued messages are delayed together, not one after
    /// another).
    pub delay: Duration,
    /// Token-bucket cap on the bytes sent each way; `None` for no cap.
    pub rate_bytes_per_s: Option<u64>,
}

/// The pieces of a mesh the operations share: the links and the frame buffers.
#[derive(Debug)]
pub(super) struct Net {
    /// Indexed by rank; `None` for this rank itself.
    pub links: Vec<Option<Link>>,
    pub pool: Pool,
}

/// Scratch buffers that only grow, so the hot path stops allocating.
#[derive(Debug, Default)]
pub(super) struct Scratch {
    pub own: Vec<f32>,
    pub incoming: Vec<f32>,
}

/// This rank's links to every other rank of the world.
#[derive(Debug)]
pub struct Mesh {
    pub(super) rank: usize,
    pub(super) world: usize,
    pub(super) net: Net,
    pub(super) scratch: Scratch,
    /// Set by a failed operation: the links are now out of step with the peers.
    pub(super) broken: bool,
}

impl Mesh {
    /// Connects rank `rank` to every other rank of `peers` (indexed by rank), accepting the
    /// higher ranks on `listener`, all within `timeout`.
    pub fn connect(
        rank: usize,
        peers: &[PeerInfo],
        listener: TcpListener,
        options: &MeshOptions,
        timeout: Duration,
    ) -> Result<Mesh, CommError> {
        check_peers(rank, peers)?;
        let shapes = shapes_for(rank, peers.len(), &options.shaping)?;
        let deadline = Instant::now() + timeout;
        let (mut streams, wants_shm) = handshake(rank, peers, &listener, options.shm, deadline)?;
        let use_shm: Vec<bool> = (0..peers.len())
            .map(|p| options.shm && wants_shm[p] && peers[p].node == peers[rank].node)
            .collect();
        let regions = share_memory(rank, &mut streams, &use_shm, deadline)?;
        let io_timeout = options.io_timeout.max(Duration::from_millis(1));
        let links = streams
            .into_iter()
            .zip(regions)
            .enumerate()
            .map(|(peer, (stream, region))| {
                let Some(stream) = stream else {
                    return Ok(None);
                };
                let shape = shapes[peer];
                match region {
                    Some(region) => Link::shm(peer, stream, &region, shape, io_timeout),
                    None => Link::tcp(peer, stream, shape, io_timeout),
                }
                .map(Some)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Mesh::with_links(rank, links))
    }

    /// A world of one rank: every operation is a local no-op.
    pub fn solo() -> Mesh {
        Mesh::with_links(0, vec![None])
    }

    /// A whole world in this process, for tests and `pinch bench`: rank `r` is element `r`,
    /// and `nodes[r]` its node id (equal ids share memory when `options.shm`).
    pub fn loopback(nodes: &[u32], options: &MeshOptions) -> Result<Vec<Mesh>, CommError> {
        if nodes.is_empty() {
            return Err(CommError::ZeroWorld);
        }
        let bind_error = |source| CommError::Bind {
            addr: "127.0.0.1:0".to_string(),
            source,
        };
        let listeners = nodes
            .iter()
            .map(|_| TcpListener::bind("127.0.0.1:0").map_err(bind_error))
            .collect::<Result<Vec<_>, _>>()?;
        let peers = listeners
            .iter()
            .zip(nodes)
            .enumerate()
            .map(|(rank, (listener, &node))| {
                let addr = listener.local_addr().map_err(bind_error)?;
                Ok(PeerInfo { rank, node, addr })
            })
            .collect::<Result<Vec<_>, CommError>>()?;
        connect_all(listeners, &peers, options)
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// "shm", "tcp" or "self": what carries traffic to `peer` ("none" for a rank outside the
    /// world).
    pub fn transport_to(&self, peer: usize) -> &'static str {
        if peer == self.rank {
            return "self";
        }
        match self.net.links.get(peer) {
            Some(Some(link)) => link.transport().name(),
            _ => "none",
        }
    }

    fn with_links(rank: usize, links: Vec<Option<Link>>) -> Mesh {
        Mesh {
            rank,
            world: links.len(),
            net: Net {
                links,
                pool: Pool::default(),
            },
            scratch: Scratch::default(),
            broken: false,
        }
    }
}

/// Connects every rank of a loopback world, one thread each.
fn connect_all(
    listeners: Vec<TcpListener>,
    peers: &[PeerInfo],
    options: &MeshOptions,
) -> Result<Vec<Mesh>, CommError> {
    std::thread::scope(|scope| {
        let connecting: Vec<_> = listeners
            .into_iter()
            .enumerate()
            .map(|(rank, listener)| {
                scope.spawn(move || Mesh::connect(rank, peers, listener, options, LOOPBACK_TIMEOUT))
            })
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

fn check_peers(rank: usize, peers: &[PeerInfo]) -> Result<(), CommError> {
    let world = peers.len();
    if world == 0 {
        return Err(CommError::ZeroWorld);
    }
    if rank >= world {
        return Err(CommError::RankOutOfRange { rank, world });
    }
    match peers.iter().enumerate().find(|(i, p)| p.rank != *i) {
        Some((expected, p)) => Err(CommError::UnexpectedPeer {
            expected,
            got: p.rank,
        }),
        None => Ok(()),
    }
}

/// The shaping of this rank's link to each peer, after checking every entry.
fn shapes_for(rank: usize, world: usize, shaping: &[LinkShaping]) -> Result<Vec<Shape>, CommError> {
    let mut shapes = vec![Shape::default(); world];
    for (i, s) in shaping.iter().enumerate() {
        let bad = |problem| CommError::BadShaping {
            a: s.a,
            b: s.b,
            problem,
        };
        if s.a >= world || s.b >= world {
            return Err(bad("names a rank outside the world"));
        }
        if s.a == s.b {
            return Err(bad("names the same rank twice"));
        }
        if s.rate_bytes_per_s == Some(0) {
            return Err(bad("has a rate of 0 bytes per second"));
        }
        let same = |t: &LinkShaping| (t.a.min(t.b), t.a.max(t.b)) == (s.a.min(s.b), s.a.max(s.b));
        if shaping[..i].iter().any(same) {
            return Err(bad("is given twice"));
        }
        if s.a == rank || s.b == rank {
            shapes[s.a + s.b - rank] = Shape {
                delay: s.delay,
                rate_bytes_per_s: s.rate_bytes_per_s,
            };
        }
    }
    Ok(shapes)
}

/// What a peer says about itself when a connection opens.
#[derive(Clone, Copy, Debug)]
struct Hello {
    rank: usize,
    world: usize,
    wants_shm: bool,
}

fn write_hello(stream: &mut TcpStream, me: &PeerInfo, world: usize, shm: bool) -> io::Result<()> {
    let words = [
        MESH_MAGIC,
        me.rank as u32,
        world as u32,
        me.node,
        u32::from(shm),
    ];
    write_u32s(stream, &words)
}

/// The peer's hello, or `None` when it is not a mesh peer.
fn read_hello(stream: &mut TcpStream) -> io::Result<Option<Hello>> {
    if read_u32(stream)? != MESH_MAGIC {
        return Ok(None);
    }
    let rank = read_u32(stream)? as usize;
    let world = read_u32(stream)? as usize;
    let _node = read_u32(stream)?;
    let wants_shm = read_u32(stream)? == 1;
    Ok(Some(Hello {
        rank,
        world,
        wants_shm,
    }))
}

/// Opens the TCP connection to every other rank; returns them by rank and whether each peer
/// wants shared memory.
fn handshake(
    rank: usize,
    peers: &[PeerInfo],
    listener: &TcpListener,
    shm: bool,
    deadline: Instant,
) -> Result<(Vec<Option<TcpStream>>, Vec<bool>), CommError> {
    let world = peers.len();
    let budget = remaining(deadline);
    let mut streams: Vec<Option<TcpStream>> = (0..world).map(|_| None).collect();
    let mut wants_shm = vec![false; world];
    for peer in 0..rank {
        let mut stream = connect_until(peers[peer].addr, deadline)?;
        write_hello(&mut stream, &peers[rank], world, shm)
            .map_err(|e| link_error(peer, e, budget))?;
        streams[peer] = Some(stream);
    }
    for _ in rank + 1..world {
        let (hello, stream) = accept_peer(rank, peers, listener, &streams, shm, deadline)?;
        wants_shm[hello.rank] = hello.wants_shm;
        streams[hello.rank] = Some(stream);
    }
    for (peer, stream) in streams.iter_mut().enumerate().take(rank) {
        if let Some(stream) = stream {
            wants_shm[peer] = expect_ack(stream, peer, world, deadline)?;
        }
    }
    Ok((streams, wants_shm))
}

/// Accepts the next higher rank, checks its hello and acknowledges it.
fn accept_peer(
    rank: usize,
    peers: &[PeerInfo],
    listener: &TcpListener,
    streams: &[Option<TcpStream>],
    shm: bool,
    deadline: Instant,
) -> Result<(Hello, TcpStream), CommError> {
    let world = peers.len();
    let missing = (rank + 1..world)
        .find(|&p| streams[p].is_none())
        .unwrap_or(rank);
    let started = Instant::now();
    let waiting_for = || format!("rank {missing} to connect");
    let mut stream = accept_until(listener, started, deadline, &waiting_for)?;
    let budget = remaining(deadline);
    let io = |e| link_error(missing, e, budget);
    stream.set_read_timeout(Some(budget)).map_err(io)?;
    let hello = check_hello(
        read_hello(&mut stream).map_err(io)?,
        &stream,
        world,
        missing,
    )?;
    if hello.rank <= rank || streams[hello.rank].is_some() {
        return Err(CommError::UnexpectedPeer {
            expected: missing,
            got: hello.rank,
        });
    }
    write_hello(&mut stream, &peers[rank], world, shm).map_err(io)?;
    Ok((hello, stream))
}

/// Waits for lower rank `peer` to acknowledge our hello; returns whether it wants shm.
fn expect_ack(
    stream: &mut TcpStream,
    peer: usize,
    world: usize,
    deadline: Instant,
) -> Result<bool, CommError> {
    let budget = remaining(deadline);
    let io = |e| link_error(peer, e, budget);
    stream.set_read_timeout(Some(budget)).map_err(io)?;
    let hello = check_hello(read_hello(stream).map_err(io)?, stream, world, peer)?;
    if hello.rank != peer {
        return Err(CommError::UnexpectedPeer {
            expected: peer,
            got: hello.rank,
        });
    }
    Ok(hello.wants_shm)
}

fn check_hello(
    hello: Option<Hello>,
    stream: &TcpStream,
    world: usize,
    peer: usize,
) -> Result<Hello, CommError> {
    match hello {
        None => Err(CommError::NotAPeer {
            addr: stream
                .peer_addr()
                .map_err(|e| link_error(peer, e, Duration::ZERO))?,
        }),
        Some(h) if h.world != world => Err(CommError::WorldMismatch {
            peer: h.rank,
            theirs: h.world,
            ours: world,
        }),
        Some(h) if h.rank >= world => Err(CommError::RankOutOfRange {
            rank: h.rank,
            world,
        }),
        Some(h) => Ok(h),
    }
}

/// Sets up a shared-memory region with every peer in `use_shm`, over its TCP connection.
fn share_memory(
    rank: usize,
    streams: &mut [Option<TcpStream>],
    use_shm: &[bool],
    deadline: Instant,
) -> Result<Vec<Option<Region>>, CommError> {
    let world = streams.len();
    let mut regions: Vec<Option<Region>> = (0..world).map(|_| None).collect();
    let shm_peers = |range: std::ops::Range<usize>| range.filter(|&p| use_shm[p]);
    for peer in shm_peers(rank + 1..world) {
        regions[peer] = Some(offer_region(rank, peer, stream_of(streams, peer)?)?);
    }
    for peer in shm_peers(0..rank) {
        regions[peer] = Some(map_region(peer, stream_of(streams, peer)?, deadline)?);
    }
    for peer in shm_peers(rank + 1..world) {
        if let Some(region) = &mut regions[peer] {
            confirm_region(peer, stream_of(streams, peer)?, region, deadline)?;
        }
    }
    Ok(regions)
}

fn stream_of(streams: &mut [Option<TcpStream>], peer: usize) -> Result<&mut TcpStream, CommError> {
    streams[peer].as_mut().ok_or(CommError::Broken)
}

fn shm_error(peer: usize, path: &Path, source: io::Error) -> CommError {
    CommError::Shm {
        peer,
        path: path.display().to_string(),
        source,
    }
}

/// Creates the region for higher rank `peer` and tells it where the file is.
fn offer_region(rank: usize, peer: usize, stream: &mut TcpStream) -> Result<Region, CommError> {
    let prefix = format!("pinch-{}-{rank}-{peer}-", std::process::id());
    let region = Region::create(&prefix).map_err(|e| shm_error(peer, Path::new(&prefix), e))?;
    let path = region.path().display().to_string();
    write_str(stream, &path).map_err(|e| link_error(peer, e, Duration::ZERO))?;
    Ok(region)
}

/// Maps the region lower rank `peer` created and tells it whether that worked.
fn map_region(peer: usize, stream: &mut TcpStream, deadline: Instant) -> Result<Region, CommError> {
    let budget = remaining(deadline);
    let io = |e| link_error(peer, e, budget);
    stream.set_read_timeout(Some(budget)).map_err(io)?;
    let path = read_str(stream).map_err(io)?;
    let region = Region::open(Path::new(&path));
    write_u32s(stream, &[u32::from(region.is_ok())]).map_err(io)?;
    region.map_err(|e| shm_error(peer, Path::new(&path), e))
}

/// Waits until higher rank `peer` has mapped `region`, then unlinks its file.
fn confirm_region(
    peer: usize,
    stream: &mut TcpStream,
    region: &mut Region,
    deadline: Instant,
) -> Result<(), CommError> {
    let budget = remaining(deadline);
    let io = |e| link_error(peer, e, budget);
    stream.set_read_timeout(Some(budget)).map_err(io)?;
    if read_u32(stream).map_err(io)? != 1 {
        let refused = io::Error::other(format!("rank {peer} could not map it"));
        return Err(shm_error(peer, region.path(), refused));
    }
    let path = region.path().to_path_buf();
    region.unlink().map_err(|e| shm_error(peer, &path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_node_pairs_share_memory_and_others_use_tcp() {
        let meshes = Mesh::loopback(&[0, 0, 1], &MeshOptions::default()).unwrap();
        assert_eq!(meshes[0].transport_to(1), "shm");
        assert_eq!(meshes[1].transport_to(0), "shm");
        assert_eq!(meshes[0].transport_to(2), "tcp");
        assert_eq!(meshes[2].transport_to(1), "tcp");
        assert_eq!(meshes[2].transport_to(2), "self");
        assert_eq!(meshes[2].transport_to(3), "none");
        assert_eq!(
            (meshes[1].rank(), meshes[1].world()),
            (1, 3),
            "element r is rank r"
        );
    }

    #[test]
    fn without_shm_every_link_is_tcp() {
        let options = MeshOptions {
            shm: false,
            ..MeshOptions::default()
        };
        let meshes = Mesh::loopback(&[0, 0], &options).unwrap();
        assert_eq!(meshes[0].transport_to(1), "tcp");
    }

    #[test]
    fn shared_memory_files_are_unlinked_once_mapped() {
        let prefix = format!("pinch-{}-", std::process::id());
        let ours = || {
            std::fs::read_dir("/dev/shm")
                .map(|dir| {
                    dir.flatten()
                        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                        .count()
                })
                .unwrap_or(0)
        };
        let _meshes = Mesh::loopback(&[0, 0, 0, 0], &MeshOptions::default()).unwrap();
        assert_eq!(ours(), 0);
    }

    #[test]
    fn bad_shaping_is_refused_naming_the_link() {
        let shaping = |a, b, rate| MeshOptions {
            shaping: vec![LinkShaping {
                a,
                b,
                delay: Duration::ZERO,
                rate_bytes_per_s: rate,
            }],
            ..MeshOptions::default()
        };
        let err = |options: &MeshOptions| Mesh::loopback(&[0, 0], options).unwrap_err().to_string();
        assert_eq!(
            err(&shaping(0, 5, None)),
            "link shaping between ranks '0' and '5' names a rank outside the world"
        );
        assert!(err(&shaping(1, 1, None)).contains("same rank twice"));
        assert!(err(&shaping(0, 1, Some(0))).contains("rate of 0"));
        let mut twice = shaping(0, 1, None);
        twice.shaping.push(LinkShaping {
            a: 1,
            b: 0,
            ..twice.shaping[0]
        });
        assert!(err(&twice).contains("given twice"));
    }

    #[test]
    fn peers_must_be_listed_in_rank_order() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let peers = [
            PeerInfo {
                rank: 1,
                node: 0,
                addr,
            },
            PeerInfo {
                rank: 0,
                node: 0,
                addr,
            },
        ];
        let err = Mesh::connect(
            0,
            &peers,
            listener,
            &MeshOptions::default(),
            LOOPBACK_TIMEOUT,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                CommError::UnexpectedPeer {
                    expected: 0,
                    got: 1
                }
            ),
            "{err}"
        );
        assert!(matches!(
            Mesh::loopback(&[], &MeshOptions::default()),
            Err(CommError::ZeroWorld)
        ));
    }
}
