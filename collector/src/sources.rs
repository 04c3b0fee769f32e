//! The node's counter sources: which of them can be read on this host, a sampler for each that
//! can, and the manifest's line for each (what it reads, what it could not and why).
//!
//! Every source is tried; one that cannot be read here (no GPU driver, no InfiniBand device) is
//! a `NotRead` status with its reason and changes nothing else.

use crate::counter_plan::{CounterPlan, SOURCE_NAMES};
use crate::ib_sampler::IbSampler;
use crate::nvml_sampler::NvmlSampler;
use crate::perf_sampler::PerfSampler;
use crate::procfs_sampler::{PROC_COUNTERS, ProcSampler};
use crate::sampler::{SampleRate, Sampler};
use pinch_traces::{CounterSourceStatus, NodeId, Rank, SourceState};

/// A source that opened, ready to be sampled on its own thread.
pub struct OpenedSource {
    pub name: &'static str,
    pub sampler: Box<dyn Sampler + Send>,
    /// The counters it reads, for the status written if it fails mid-run.
    pub counters: Vec<String>,
    /// Its reads are kernel files and syscalls that return at once, never a driver call that
    /// could hang: it may share a sampling thread.
    pub never_blocks: bool,
    pub rate: SampleRate,
}

impl std::fmt::Debug for OpenedSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenedSource")
            .field("name", &self.name)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

/// The sources that read only /proc and perf-event file descriptors. NVML calls into the GPU
/// driver, and InfiniBand's sysfs counters into the NIC's driver; either can stall.
const NEVER_BLOCKS: [&str; 2] = ["procfs", "perf"];

/// What opening one source gave: a sampler with its counters and notes, or why not.
type Opened = Result<(Box<dyn Sampler + Send>, Vec<String>, Vec<String>), String>;

/// Tries every source `plan` asks for, for the node and its rank processes (rank, pid): the
/// samplers to run, and one status per source for the node log (a source not asked for is
/// listed as not read, with that reason).
pub fn open_sources(
    node: NodeId,
    ranks: &[(Rank, u32)],
    plan: &CounterPlan,
) -> (Vec<OpenedSource>, Vec<CounterSourceStatus>) {
    let mut opened = Vec::new();
    let mut statuses = Vec::new();
    for name in SOURCE_NAMES {
        let state = match plan.rate(name) {
            None => SourceState::NotRead {
                reason: "not asked for (--counters)".to_string(),
            },
            Some(rate) => match open_source(name, ranks) {
                Ok((sampler, counters, notes)) => {
                    opened.push(OpenedSource {
                        name,
                        sampler,
                        counters: counters.clone(),
                        never_blocks: NEVER_BLOCKS.contains(&name),
                        rate,
                    });
                    SourceState::Read { counters, notes }
                }
                Err(reason) => SourceState::NotRead { reason },
            },
        };
        statuses.push(CounterSourceStatus {
            node,
            source: name.to_string(),
            state,
        });
    }
    (opened, statuses)
}

fn open_source(name: &str, ranks: &[(Rank, u32)]) -> Opened {
    match name {
        "procfs" => open_procfs(ranks),
        "perf" => boxed(
            PerfSampler::open(ranks),
            PerfSampler::read_counters,
            PerfSampler::notes,
        ),
        "nvml" => boxed(
            NvmlSampler::open(ranks),
            NvmlSampler::read_counters,
            NvmlSampler::notes,
        ),
        "infiniband" => boxed(
            IbSampler::open(ranks),
            IbSampler::read_counters,
            IbSampler::notes,
        ),
        other => Err(format!("counter source '{other}' is unknown")),
    }
}

/// A source that opened, boxed with what it reads and its notes.
fn boxed<S: Sampler + Send + 'static>(
    opened: Result<S, String>,
    counters: fn(&S) -> Vec<String>,
    notes: fn(&S) -> Vec<String>,
) -> Opened {
    let sampler = opened?;
    let (counters, notes) = (counters(&sampler), notes(&sampler));
    Ok((Box::new(sampler), counters, notes))
}

fn open_procfs(ranks: &[(Rank, u32)]) -> Opened {
    let sampler = ProcSampler::open(ranks).map_err(|e| e.to_string())?;
    let counters = PROC_COUNTERS.iter().map(|c| c.name.to_string()).collect();
    Ok((Box::new(sampler), counters, Vec::new()))
}
