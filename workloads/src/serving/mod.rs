//! The serving side of a run: a seeded stream of requests (`requests`), a vLLM-style
//! continuous-batching scheduler over paged KV blocks for each data-parallel replica
//! (`scheduler`), and the router that hands requests to the replicas over TCP (`router`).
//!
//! Every failure is a `ServingError` whose message quotes the offending value.

pub mod requests;
pub mod router;
pub mod scheduler;

pub use requests::{Arrivals, LengthDist, RequestSpec, RequestWorkload, generate};
pub use router::{
    ReplicaSummary, RoutePolicy, RouterClient, RouterEvent, RouterServer, RouterSummary,
};
pub use scheduler::{Scheduler, SchedulerConfig, SeqWork, StepPlan};

use std::io;
use std::net::SocketAddr;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ServingError {
    #[error("length distribution '{spec}' is not valid: {problem}")]
    BadLength { spec: String, problem: String },

    #[error("arrivals '{spec}' are not valid: {problem}")]
    BadArrivals { spec: String, problem: String },

    #[error("route policy '{name}' is unknown; known policies: round-robin, least-tokens")]
    UnknownPolicy { name: String },

    #[error("{what} '0' must be at least 1")]
    ZeroSetting { what: &'static str },

    #[error("poisson rate '{rate_per_s}' must be a positive number of requests per second")]
    BadRate { rate_per_s: f64 },

    #[error(
        "max batch tokens '{max_batch_tokens}' is less than max seqs {max_seqs}: \
         every running sequence must be able to decode in one step"
    )]
    BatchTooSmall {
        max_batch_tokens: usize,
        max_seqs: usize,
    },

    #[error("request {id} has an empty {what}")]
    EmptyRequest { id: u64, what: &'static str },

    #[error(
        "request {id} needs '{blocks_needed}' kv-cache blocks ({tokens} tokens) but replica \
         {replica} has only {blocks}"
    )]
    RequestTooLarge {
        id: u64,
        tokens: usize,
        blocks_needed: usize,
        blocks: usize,
        replica: u32,
    },

    #[error("request {id} was added twice")]
    DuplicateRequest { id: u64 },

    #[error("step '{got}' is not the step in flight ({expected})")]
    StaleStep { got: u64, expected: String },

    #[error("step {step} samples {expected} sequences but '{got}' tokens were sampled")]
    SampledCount {
        step: u64,
        expected: usize,
        got: usize,
    },

    #[error("step {step} names request '{id}', which is not running")]
    NotRunning { step: u64, id: u64 },

    #[error("could not listen on '{addr}': {source}")]
    Bind { addr: String, source: io::Error },

    #[error("could not accept a replica's connection: {source}")]
    Accept { source: io::Error },

    #[error("could not connect to the router at '{addr}': {source}")]
    Connect { addr: SocketAddr, source: io::Error },

    #[error("timed out after {after_ms} ms waiting for {waiting_for}")]
    Timeout { waiting_for: String, after_ms: u64 },

    #[error("i/o error with {peer}: {source}")]
    Io { peer: String, source: io::Error },

    #[error("{peer} sent a malformed message: {problem}")]
    Protocol { peer: String, problem: String },

    #[error("replica '{replica}' is out of range for {replicas} replicas")]
    ReplicaOutOfRange { replica: usize, replicas: usize },

    #[error("replica '{replica}' connected twice")]
    DuplicateReplica { replica: usize },

    #[error("replica {replica} disconnected early, with {outstanding} of its requests unfinished")]
    ReplicaClosed { replica: usize, outstanding: usize },

    #[error("replica {replica} reported request '{id}' finished, but it has no such request")]
    UnknownFinished { replica: usize, id: u64 },

    #[error("the router closed the connection before the request stream ended")]
    RouterClosed,

    #[error("the router thread panicked")]
    RouterPanicked,
}
