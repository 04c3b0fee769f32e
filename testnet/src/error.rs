//! What can go wrong while building, shaping or entering a test network.

use std::io;

/// An error of the test-network harness; each message quotes the value or command at fault.
#[derive(Debug, thiserror::Error)]
pub enum TestNetError {
    /// A host count the harness does not build (zero, or more than the /24 subnet holds).
    #[error("host count '{hosts}' is outside 1..={max}")]
    HostCount { hosts: usize, max: usize },
    /// A host index past the end of the net.
    #[error("host '{host}' does not exist: the net has {hosts} hosts")]
    NoSuchHost { host: usize, hosts: usize },
    /// A link rate of zero, which would stop all traffic rather than shape it.
    #[error("link rate '{rate_bits_per_s}' bit/s is not positive")]
    ZeroRate { rate_bits_per_s: u64 },
    /// A loss share that is not a percentage.
    #[error("loss '{loss_percent}%' is outside 0..=100")]
    Loss { loss_percent: f32 },
    /// The kernel lacks a queueing discipline the shape needs (e.g. `netem` for delay and loss).
    #[error("qdisc '{kind}' is missing from this kernel; it is needed for {needed}")]
    QdiscMissing { kind: &'static str, needed: String },
    /// A tool (`ip`, `tc`) could not be started.
    #[error("could not run '{program}': {source}")]
    Spawn { program: String, source: io::Error },
    /// A tool ran and failed.
    #[error("'{command}' failed: {stderr}")]
    Command { command: String, stderr: String },
    /// A namespace could not be opened or entered.
    #[error("could not enter namespace '{namespace}': {source}")]
    Enter {
        namespace: String,
        source: io::Error,
    },
}
