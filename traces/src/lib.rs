//! The shared language of pinch: the data model of a profiled run (manifest, spans, counter
//! samples, clock anchors) and the node log that carries it to disk.
//!
//! Every other crate speaks these types. The crate stays light (serde, postcard, crc32fast, and
//! flate2 for gzipped Kineto traces) so the
//! per-node agent and the rank processes can link it without pulling in the analyzer's weight.

pub mod clock;
pub mod counter;
pub mod experts;
pub mod export;
pub mod ids;
pub mod kineto;
pub mod manifest;
pub mod nodelog;
pub mod request;
pub mod span;
pub mod units;

pub use clock::{ClockAnchor, monotonic_now_ns, wall_now_ns};
pub use counter::{CounterDef, CounterSample, DeviceDef, Unit};
pub use experts::ExpertTokens;
pub use ids::{CounterId, DeviceId, Lane, NodeId, OpId, Rank};
pub use manifest::{
    CounterSourceStatus, ManifestError, NodeEntry, RunManifest, SourceState, Versions, WorkloadSpec,
};
pub use nodelog::{
    FrameReader, NODE_LOG_VERSION, NodeLog, NodeLogError, NodeLogWriter, RankExit, Record,
    Truncation, read_node_log, read_node_log_from,
};
pub use request::RequestRecord;
pub use span::{Category, CollectiveAttrs, CollectiveKind, Span, SpanAttrs};
