//! Communication between the ranks of a world: a mesh of links, process groups, and the
//! collectives and point-to-point operations over them.
//!
//! Ranks first meet at a rendezvous (`rendezvous.rs`) that tells each every rank's node and
//! listening address. `Mesh::connect` then links every pair of ranks (`mesh.rs`): over shared
//! memory when both run on one node (`shm.rs`), else over TCP (`link.rs`). A `Group` is an ordered
//! subset of the world on which the operations run (`collectives.rs`, `p2p.rs`; the ring
//! all-reduce, which sends each step's chunk in pipelined pieces, in `ring_pipeline.rs`);
//! `bench.rs` measures them.
//!
//! Every frame opens with a header (`frame.rs`: group, operation, part, step, sequence number,
//! sizes) that the receiver checks, so ranks that issue different operations get
//! `CommError::OpMismatch` instead of mixed data. A peer that disappears turns into
//! `CommError::PeerClosed` naming it, a peer that hangs into `CommError::Timeout`; after either
//! the mesh is broken (its links hold half an operation) and every later operation fails with
//! `CommError::Broken`. Sends go through one writer thread per link, so ranks exchanging more
//! than any buffer holds never deadlock; receives run in the caller's thread.
//!
//! # Wait versus transfer
//!
//! `Outcome::total_ns` runs from entering an operation until this rank's results are in place
//! and everything it sent has been written to the transport. `Outcome::wait_ns` is the part
//! spent until every peer the operation depends on had *arrived*, i.e. entered the same
//! operation. Each rank, on entering, sends every peer it depends on a first frame at once (its
//! data where the algorithm sends that peer data first, else a header-only arrival), and
//! `wait_ns` ends when the last of those first frames' headers has been read. A header is sent
//! before its payload is even copied, so a large payload does not count as waiting; but
//! `wait_ns` does include one link latency even when nobody is late (for the smallest messages
//! that latency is most of the operation). Per operation:
//! - all-reduce (ring and one-shot), all-gather, reduce-scatter, all-to-all: until every other
//!   member arrived (the result depends on all of them; the ring sends header-only arrivals to
//!   the members other than its next, which overlap with the ring's first step).
//! - broadcast: on the root, until every other member arrived; elsewhere, until the root did.
//! - send: 0 for an eager message (under `EAGER_MAX_BYTES`: it never waits, and its `total_ns`
//!   is only the hand-off); for a larger one, until the receiver's clear-to-send came back
//!   (the receiver entered `recv`).
//! - recv: until the sender's first frame (its data, or its ready-to-send) came.
//!
//! # Ordering
//!
//! Every member of a group issues the same sequence of operations on it. Groups are
//! independent: frames between two ranks share one ordered stream, but a receiver sets aside
//! frames of other groups until their own operation asks (`link.rs`), so an eager send on one
//! group and a barrier on another may be issued in either order. Two *blocking* operations of
//! different groups issued in opposite orders by two ranks still wait on each other, as with
//! any communication library, until `MeshOptions::io_timeout` ends it as a timeout.

mod collectives;
mod frame;
mod group;
mod link;
mod mesh;
mod p2p;
mod rendezvous;
mod ring_pipeline;
mod shm;
mod wire;

#[cfg(test)]
mod tests;

pub mod bench;

pub use collectives::ONE_SHOT_MAX_BYTES;
pub use group::{AllReduceAlgo, Group, Outcome};
pub use mesh::{LinkShaping, Mesh, MeshOptions};
pub use p2p::EAGER_MAX_BYTES;
pub use rendezvous::{PeerInfo, RendezvousServer, rendezvous};

/// How long a rank waits on a peer inside a collective before calling it hung.
pub const DEFAULT_IO_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

use std::io;
use std::net::SocketAddr;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CommError {
    #[error("world size '0' must be at least 1")]
    ZeroWorld,

    #[error("rank '{rank}' is out of range for a world of {world}")]
    RankOutOfRange { rank: usize, world: usize },

    #[error("a world of {world} ranks needs {world} addresses, got '{got}'")]
    AddressCount { got: usize, world: usize },

    #[error("could not listen on '{addr}': {source}")]
    Bind { addr: String, source: io::Error },

    #[error("could not accept a connection: {source}")]
    Accept { source: io::Error },

    #[error("could not connect to '{addr}': {source}")]
    Connect { addr: SocketAddr, source: io::Error },

    #[error("timed out after {after_ms} ms waiting for {waiting_for}")]
    Timeout { waiting_for: String, after_ms: u64 },

    #[error("rank {peer} closed its connection (it may have crashed)")]
    PeerClosed { peer: usize },

    #[error("i/o error with rank {peer}: {source}")]
    Io { peer: usize, source: io::Error },

    #[error("'{addr}' does not speak pinch's ring protocol")]
    NotAPeer { addr: SocketAddr },

    #[error("expected rank {expected} on this link but rank '{got}' connected")]
    UnexpectedPeer { expected: usize, got: usize },

    #[error("rank {peer} was started for a world of '{theirs}' ranks, this rank for {ours}")]
    WorldMismatch {
        peer: usize,
        theirs: usize,
        ours: usize,
    },

    #[error("rank '{rank}' registered twice at the rendezvous")]
    DuplicateRank { rank: usize },

    #[error("the links are unusable after an earlier error")]
    Broken,

    #[error("the rendezvous refused this rank: {reason}")]
    Rejected { reason: String },

    #[error("the rendezvous closed its connection before every rank registered")]
    RendezvousClosed,

    #[error("i/o error with the rendezvous: {source}")]
    RendezvousIo { source: io::Error },

    #[error("the rendezvous sent an address that does not parse: '{text}'")]
    BadAddress { text: String },

    #[error(
        "rank {peer} sent {got} where this rank expected {expected} (the ranks issue different operations)"
    )]
    OpMismatch {
        peer: usize,
        expected: String,
        got: String,
    },

    #[error("shared memory with rank {peer} at '{path}' failed: {source}")]
    Shm {
        peer: usize,
        path: String,
        source: io::Error,
    },

    #[error("link shaping between ranks '{a}' and '{b}' {problem}")]
    BadShaping {
        a: usize,
        b: usize,
        problem: &'static str,
    },

    #[error("rank '{rank}' is not a member of group {group} ({members})")]
    NotAMember {
        group: u32,
        rank: usize,
        members: String,
    },

    #[error("rank '{rank}' is listed twice in group {group}")]
    DuplicateMember { group: u32, rank: usize },

    #[error("group {group} names rank '{member}', outside a world of {world}")]
    MemberOutOfRange {
        group: u32,
        member: usize,
        world: usize,
    },

    #[error("group {group} was built for rank '{group_rank}' but this mesh is rank {rank}")]
    GroupNotForThisRank {
        group: u32,
        group_rank: usize,
        rank: usize,
    },

    #[error("{what} holds '{got}' elements where {expected} were expected")]
    BufferSize {
        what: &'static str,
        got: usize,
        expected: usize,
    },

    #[error("{what} '{index}' is out of range for a group of {size}")]
    MemberIndex {
        what: &'static str,
        index: usize,
        size: usize,
    },

    #[error("member '{index}' is this rank itself: send and recv need another member")]
    SelfMessage { index: usize },
}
