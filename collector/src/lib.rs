//! The per-node side of pinch: the span recorder the workload calls on every op, the stream that
//! carries a rank's spans to its agent, the counter samplers, and the agent that starts a node's
//! ranks and writes its node log.

pub mod agent;
pub mod counter_plan;
pub mod error;
pub mod exit_watch;
pub mod ib_sampler;
pub mod nvlink_fields;
pub mod nvml_sampler;
pub mod perf_sampler;
pub mod procfs_sampler;
pub mod prometheus;
pub mod recorder;
pub mod reread;
pub mod sampler;
pub mod sources;
pub mod stderr_tail;
pub mod stream;

pub use agent::{AgentConfig, AgentEvent, AgentSummary, FAILURE_GRACE, run_agent};
pub use counter_plan::{CounterPlan, CounterPlanError};
pub use error::CollectorError;
pub use ib_sampler::IbSampler;
pub use nvml_sampler::NvmlSampler;
pub use perf_sampler::PerfSampler;
pub use procfs_sampler::ProcSampler;
pub use prometheus::{MetricsError, MetricsServer};
pub use recorder::{Recorder, SpanDrain, Stamp};
pub use sampler::{CounterSpec, SampleRate, SampleRateError, SampleSink, Sampler, SamplerError};
pub use stream::RankStream;
