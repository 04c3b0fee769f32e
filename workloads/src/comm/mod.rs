//! Communication between the ranks of a tensor-parallel group, over TCP on loopback.
//!
//! Ranks first meet at a rendezvous (`rendezvous.rs`) that tells each the listening address of
//! every other; then each connects a ring (`ring.rs`) to its neighbours and all-reduces over it.
//! A peer that disappears turns into `CommError::PeerClosed` naming it, and a peer that hangs into
//! `CommError::Timeout`, so one crashed rank makes the others fail fast and say why.

mod rendezvous;
mod ring;
mod wire;

pub use rendezvous::{RendezvousServer, rendezvous};
pub use ring::{DEFAULT_IO_TIMEOUT, Ring};

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

    #[error(
        "rank {peer} sent collective #{got_seq} of {got_elems} elements where #{seq} of \
         {elems} elements was expected (the ranks issue different collectives)"
    )]
    Mismatch {
        peer: usize,
        seq: u64,
        elems: usize,
        got_seq: u64,
        got_elems: usize,
    },

    #[error("the ring is unusable after an earlier error")]
    Broken,

    #[error("the rendezvous refused this rank: {reason}")]
    Rejected { reason: String },

    #[error("the rendezvous closed its connection before every rank registered")]
    RendezvousClosed,

    #[error("i/o error with the rendezvous: {source}")]
    RendezvousIo { source: io::Error },

    #[error("the rendezvous sent an address that does not parse: '{text}'")]
    BadAddress { text: String },
}
