//! Spans: one timed piece of work on one rank, with what the analyzer needs to reason about it.
//!
//! A `Span` is `Copy` and of fixed size so the recorder can queue it without allocating.

use crate::ids::{Lane, OpId, Rank};
use serde::{Deserialize, Serialize};
use std::fmt;

/// What kind of time a span is. The analyzer's breakdown counts overlapping time once, in this
/// order of precedence: compute, communication, memory, host, wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// Arithmetic: matmuls, attention, norms, activations.
    Compute,
    /// Moving data between ranks: collectives, send and receive.
    Communication,
    /// Moving data within a rank: copies into the KV cache, gathers, layout changes.
    Memory,
    /// Host-side work that is not the model: scheduling, batching, sampling bookkeeping.
    Host,
    /// Blocked on something else: a barrier, a rendezvous, a peer that has not arrived.
    Wait,
}

impl Category {
    pub const ALL: [Category; 5] = [
        Category::Compute,
        Category::Communication,
        Category::Memory,
        Category::Host,
        Category::Wait,
    ];

    /// The category `name` writes as `text`.
    pub fn from_name(text: &str) -> Option<Category> {
        Category::ALL.into_iter().find(|c| c.name() == text)
    }

    pub fn name(self) -> &'static str {
        match self {
            Category::Compute => "compute",
            Category::Communication => "communication",
            Category::Memory => "memory",
            Category::Host => "host",
            Category::Wait => "wait",
        }
    }
}

impl fmt::Display for Category {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The collective operations pinch's workloads issue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CollectiveKind {
    AllReduce,
    AllGather,
    ReduceScatter,
    AllToAll,
    Broadcast,
    Send,
    Recv,
}

impl CollectiveKind {
    pub const ALL: [CollectiveKind; 7] = [
        CollectiveKind::AllReduce,
        CollectiveKind::AllGather,
        CollectiveKind::ReduceScatter,
        CollectiveKind::AllToAll,
        CollectiveKind::Broadcast,
        CollectiveKind::Send,
        CollectiveKind::Recv,
    ];

    /// The kind `name` writes as `text`.
    pub fn from_name(text: &str) -> Option<CollectiveKind> {
        CollectiveKind::ALL.into_iter().find(|k| k.name() == text)
    }

    pub fn name(self) -> &'static str {
        match self {
            CollectiveKind::AllReduce => "all_reduce",
            CollectiveKind::AllGather => "all_gather",
            CollectiveKind::ReduceScatter => "reduce_scatter",
            CollectiveKind::AllToAll => "all_to_all",
            CollectiveKind::Broadcast => "broadcast",
            CollectiveKind::Send => "send",
            CollectiveKind::Recv => "recv",
        }
    }

    /// nccl-tests' bus-bandwidth factor for `n` participants: busbw = algbw * factor.
    /// It turns the user-visible rate into the rate each link carried.
    pub fn bus_factor(self, n: u32) -> f64 {
        let n = f64::from(n.max(1));
        match self {
            CollectiveKind::AllReduce => 2.0 * (n - 1.0) / n,
            CollectiveKind::AllGather
            | CollectiveKind::ReduceScatter
            | CollectiveKind::AllToAll => (n - 1.0) / n,
            CollectiveKind::Broadcast | CollectiveKind::Send | CollectiveKind::Recv => 1.0,
        }
    }
}

impl fmt::Display for CollectiveKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a communication span carries so it can be matched across ranks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectiveAttrs {
    pub kind: CollectiveKind,
    /// The communicator (process group) it ran on, unique within the run.
    pub group: u32,
    /// Per communicator, the n-th collective: the same number on every participant.
    pub seq: u64,
    /// How many ranks take part.
    pub participants: u32,
    /// The other side, for point-to-point operations.
    pub peer: Option<Rank>,
    /// The size of the user's buffer (nccl-tests' "size"), not the bytes on the wire.
    pub message_bytes: u64,
    /// Of the span's duration, the time spent waiting for the last peer to arrive; the rest
    /// moved data. `None` when the transport could not tell.
    pub wait_ns: Option<u64>,
}

/// Optional attributes of a span; `None` means not known or not meaningful, never zero.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpanAttrs {
    pub flops: Option<u64>,
    /// Bytes read and written by the op (its cost model's estimate).
    pub bytes: Option<u64>,
    pub layer: Option<u32>,
    pub step: Option<u32>,
    pub request_id: Option<u64>,
    /// The pipeline micro-batch the op worked on.
    pub micro_batch: Option<u32>,
    pub collective: Option<CollectiveAttrs>,
}

/// One timed piece of work on one rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Span {
    pub rank: Rank,
    pub lane: Lane,
    pub category: Category,
    pub op: OpId,
    /// The node's monotonic clock at the start, in nanoseconds.
    pub start_ns: u64,
    pub duration_ns: u64,
    pub attrs: SpanAttrs,
}

impl Span {
    pub fn end_ns(&self) -> u64 {
        self.start_ns + self.duration_ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_read_back_as_what_they_name() {
        for c in Category::ALL {
            assert_eq!(Category::from_name(c.name()), Some(c));
        }
        for k in CollectiveKind::ALL {
            assert_eq!(CollectiveKind::from_name(k.name()), Some(k));
        }
        assert_eq!(Category::from_name("Compute"), None);
    }

    #[test]
    fn all_reduce_bus_factor_follows_nccl_tests() {
        assert_eq!(CollectiveKind::AllReduce.bus_factor(2), 1.0);
        assert_eq!(CollectiveKind::AllReduce.bus_factor(8), 1.75);
        assert_eq!(CollectiveKind::AllGather.bus_factor(4), 0.75);
        assert_eq!(CollectiveKind::Send.bus_factor(2), 1.0);
    }
}
