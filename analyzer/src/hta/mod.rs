//! HTA's analyses of PyTorch profiler (Kineto) traces, computed as Meta's Holistic Trace
//! Analysis computes them so the numbers can be checked against it: temporal breakdown,
//! communication/computation overlap, idle time per stream, kernel time by type.
//!
//! Pure functions over `pinch_traces::kineto::KinetoRun`: `clean` applies HTA's clean-up,
//! then `temporal`, `idle` and `types` measure each rank, and `csv` writes HTA's CSV files.
//! docs/kineto.md lists HTA's definitions and where pinch departs from them.

pub mod clean;
pub mod csv;
pub mod idle;
pub mod kernel_type;
pub mod merge;
pub mod temporal;
pub mod types;

pub use clean::{CleanRank, Cleanup, Kernel, TimeBase, clean};
pub use idle::{IdleShare, KERNEL_WAIT_THRESHOLD_NS, StreamIdle};
pub use kernel_type::{KernelType, kernel_type};
pub use temporal::TemporalBreakdown;
pub use types::TypeTime;

use pinch_traces::kineto::KinetoRun;
use serde::{Deserialize, Serialize};

/// How the analyses read the traces.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HtaOptions {
    pub time_base: TimeBase,
    /// Gaps between kernels shorter than this are kernel wait (HTA's default: 30 us).
    pub kernel_wait_threshold_ns: i64,
}

impl Default for HtaOptions {
    fn default() -> Self {
        Self {
            time_base: TimeBase::default(),
            kernel_wait_threshold_ns: KERNEL_WAIT_THRESHOLD_NS,
        }
    }
}

/// The analyses of one rank.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankAnalysis {
    pub rank: u32,
    /// Device events on streams after the clean-up.
    pub kernels: usize,
    /// Device events the last-step filter dropped.
    pub dropped_kernels: usize,
    /// `None` for a rank without kernels.
    pub temporal: Option<TemporalBreakdown>,
    /// `None` for a rank without communication kernels.
    pub comm_overlap_pct: Option<f64>,
    pub idle: Vec<StreamIdle>,
    pub kernel_types: Vec<TypeTime>,
}

/// The analyses of a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HtaReport {
    pub options: HtaOptions,
    pub cleanup: Cleanup,
    pub world_size: Option<u32>,
    pub ranks: Vec<RankAnalysis>,
    /// Kernel time by type over all ranks, most time first.
    pub kernel_types: Vec<TypeTime>,
}

/// Runs every analysis on every rank.
pub fn analyze(run: &KinetoRun, options: &HtaOptions) -> HtaReport {
    let (cleaned, cleanup) = clean(run, options.time_base);
    let ranks: Vec<RankAnalysis> = cleaned.iter().map(|r| analyze_rank(r, options)).collect();
    let per_rank: Vec<Vec<TypeTime>> = ranks.iter().map(|r| r.kernel_types.clone()).collect();
    HtaReport {
        options: *options,
        cleanup,
        world_size: run.world_size,
        kernel_types: types::total(&per_rank),
        ranks,
    }
}

fn analyze_rank(rank: &CleanRank, options: &HtaOptions) -> RankAnalysis {
    let kernels = &rank.kernels;
    RankAnalysis {
        rank: rank.rank.0,
        kernels: kernels.len(),
        dropped_kernels: rank.dropped,
        temporal: temporal::temporal_breakdown(kernels),
        comm_overlap_pct: temporal::comm_overlap_pct(kernels),
        idle: idle::idle_breakdown(kernels, &rank.streams, options.kernel_wait_threshold_ns),
        kernel_types: types::type_breakdown(kernels),
    }
}
