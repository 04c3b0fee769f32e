//! The per-node side of pinch: the span recorder the workload calls on every op, the stream that
//! carries a rank's spans to its agent, the counter samplers, and the agent that starts a node's
//! ranks and writes its node log.

pub mod recorder;

pub use recorder::Recorder;
