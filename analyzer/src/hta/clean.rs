//! HTA's clean-up of a job's traces, giving each rank the kernels its analyses measure.
//!
//! - Time: HTA rounds a start up and an end down to whole microseconds (`TimeBase::HtaMicros`),
//!   or times stay as the trace gives them (`TimeBase::Exact`).
//! - Last step: when the job's traces name two or more `ProfilerStep`s, HTA keeps the host
//!   events that start before the last step of each rank and the device events launched by
//!   them (matched by correlation); the last step is usually cut short by the profiler.
//! - Kernels: every device event on a stream, with its type and the start of the runtime call
//!   that launched it.

use super::kernel_type::{KernelType, kernel_type};
use pinch_traces::Rank;
use pinch_traces::kineto::{DeviceEventKind, HostEvent, KinetoRun, KinetoTrace, NameId};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;

/// How event times are read.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeBase {
    /// HTA's: starts rounded up and ends rounded down to whole microseconds.
    #[default]
    HtaMicros,
    /// To the nanosecond, as the trace gives them.
    Exact,
}

impl TimeBase {
    /// An event's `[start, end)` in nanoseconds under this time base.
    pub fn interval(self, start_ns: i64, duration_ns: u64) -> (i64, i64) {
        match self {
            Self::Exact => (start_ns, start_ns.saturating_add_unsigned(duration_ns)),
            Self::HtaMicros => {
                let start_us = hta_float(start_ns);
                let end_us = start_us + hta_float(i64::try_from(duration_ns).unwrap_or(i64::MAX));
                (
                    whole_us_to_ns(start_us.ceil()),
                    whole_us_to_ns(end_us.floor()),
                )
            }
        }
    }

    fn start(self, event: &HostEvent) -> i64 {
        self.interval(event.start_ns, event.duration_ns).0
    }
}

/// A time as HTA holds it: the f64 nearest the trace's microseconds. Near today's Unix-epoch
/// microseconds (~1.7e15) an f64 keeps quarter microseconds, so this is not `ns / 1000`: a start
/// less than 125 ns past a whole microsecond rounds down to it, and HTA does not round it up.
/// (The whole part is exact below 2^53 us; adding the fraction rounds once, correctly.)
fn hta_float(ns: i64) -> f64 {
    ns.div_euclid(1000) as f64 + ns.rem_euclid(1000) as f64 / 1000.0
}

/// Whole microseconds (an f64 from `ceil` or `floor`) in nanoseconds.
fn whole_us_to_ns(us: f64) -> i64 {
    (us as i64).saturating_mul(1000)
}

/// One device event on a stream, as HTA's analyses see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Kernel {
    pub stream: u32,
    pub kernel_type: KernelType,
    /// Kernels, copies and fills: what HTA's idle-time breakdown looks at (not synchronizations).
    pub is_work: bool,
    pub start_ns: i64,
    pub end_ns: i64,
    /// The start of the runtime call that launched it, when the trace holds that call.
    pub launch_ns: Option<i64>,
}

impl Kernel {
    /// A work kernel on stream 7 with no launch time, for tests.
    #[cfg(test)]
    pub(crate) fn on_stream_7(kernel_type: KernelType, start_ns: i64, end_ns: i64) -> Kernel {
        Kernel {
            stream: 7,
            kernel_type,
            is_work: true,
            start_ns,
            end_ns,
            launch_ns: None,
        }
    }
}

/// One rank's kernels after the clean-up, sorted by start.
#[derive(Clone, Debug)]
pub struct CleanRank {
    pub rank: Rank,
    pub kernels: Vec<Kernel>,
    /// Streams in the order their first kernel appears.
    pub streams: Vec<u32>,
    /// Device events the last-step filter dropped.
    pub dropped: usize,
}

/// What the clean-up did to the whole job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cleanup {
    /// Distinct `ProfilerStep#N` names in the job's traces.
    pub profiler_steps: usize,
    /// Whether events from the last step on were dropped (two or more steps).
    pub last_step_dropped: bool,
    /// Ranks that name no step although others do: kept whole (HTA would drop every event).
    pub ranks_without_steps: Vec<u32>,
}

/// Cleans every rank of the job.
pub fn clean(run: &KinetoRun, time_base: TimeBase) -> (Vec<CleanRank>, Cleanup) {
    let profiler_steps = profiler_step_names(run);
    let filter = profiler_steps >= 2;
    let mut ranks_without_steps = Vec::new();
    let ranks = run
        .ranks
        .iter()
        .map(|r| {
            let last_step = if filter {
                last_step_start(&r.trace, time_base)
            } else {
                None
            };
            if filter && last_step.is_none() {
                ranks_without_steps.push(r.rank.0);
            }
            clean_rank(r.rank, &r.trace, time_base, last_step)
        })
        .collect();
    let cleanup = Cleanup {
        profiler_steps,
        last_step_dropped: filter,
        ranks_without_steps,
    };
    (ranks, cleanup)
}

fn is_step(name: &str) -> bool {
    name.contains("ProfilerStep")
}

/// Distinct names holding `ProfilerStep` over all ranks, as HTA counts them in its symbol table.
fn profiler_step_names(run: &KinetoRun) -> usize {
    let mut names: HashSet<&str> = HashSet::new();
    for r in &run.ranks {
        let t = &r.trace;
        let steps = StepNames::of(t);
        let host = t.host_events().map(|e| e.name);
        let device = t.device_events().map(|(_, e)| e.name);
        names.extend(
            host.chain(device)
                .filter(|n| steps.contains(n))
                .map(|n| t.names.get(n)),
        );
    }
    names.len()
}

/// Which of a trace's names hold `ProfilerStep`, by id: each name is searched once, not once
/// per event that bears it.
struct StepNames(Vec<bool>);

impl StepNames {
    fn of(trace: &KinetoTrace) -> Self {
        Self(trace.names.iter().map(is_step).collect())
    }

    fn contains(&self, name: &NameId) -> bool {
        self.0.get(name.0 as usize).copied().unwrap_or(false)
    }
}

/// The start of the rank's last `ProfilerStep` on the host.
fn last_step_start(trace: &KinetoTrace, time_base: TimeBase) -> Option<i64> {
    let steps = StepNames::of(trace);
    trace
        .host_events()
        .filter(|e| steps.contains(&e.name))
        .map(|e| time_base.start(e))
        .max()
}

fn clean_rank(
    rank: Rank,
    trace: &KinetoTrace,
    time_base: TimeBase,
    last_step: Option<i64>,
) -> CleanRank {
    let before_last = |start: i64| last_step.is_none_or(|last| start < last);
    let kept_links: Option<FxHashSet<u64>> = last_step.map(|_| {
        trace
            .host_events()
            .filter(|e| before_last(time_base.start(e)))
            .filter_map(|e| e.correlation)
            .collect()
    });
    let launches: FxHashMap<u64, i64> = trace
        .host_events()
        .filter_map(|e| e.correlation.map(|c| (c, time_base.start(e))))
        .collect();
    let mut kernels = Vec::with_capacity(trace.device_event_count());
    let mut streams = Vec::new();
    let mut dropped = 0;
    for s in &trace.streams {
        let Some(stream) = s.stream else { continue };
        for e in &s.events {
            let (start_ns, end_ns) = time_base.interval(e.start_ns, e.duration_ns);
            let kept = match (&kept_links, e.correlation) {
                (None, _) => true,
                (Some(links), Some(c)) => links.contains(&c),
                // HTA takes a device event without a launch for a host event.
                (Some(_), None) => before_last(start_ns),
            };
            if !kept {
                dropped += 1;
                continue;
            }
            let collective = e.collective.map(|c| trace.names.get(c));
            kernels.push(Kernel {
                stream,
                kernel_type: kernel_type(trace.names.get(e.name), collective),
                is_work: !matches!(e.kind, DeviceEventKind::Sync | DeviceEventKind::Other),
                start_ns,
                end_ns,
                launch_ns: e.correlation.and_then(|c| launches.get(&c).copied()),
            });
        }
        if kernels.last().is_some_and(|k| k.stream == stream) && !streams.contains(&stream) {
            streams.push(stream);
        }
    }
    kernels.sort_by_key(|k| k.start_ns);
    CleanRank {
        rank,
        kernels,
        streams,
        dropped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinch_traces::kineto::{assemble, parse_trace};
    use std::path::PathBuf;

    pub(crate) fn run_of(texts: &[&str]) -> KinetoRun {
        let traces = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let trace = parse_trace(t.as_bytes()).expect("test trace parses");
                (PathBuf::from(format!("rank{i}.json")), trace)
            })
            .collect();
        assemble(traces).expect("test traces agree")
    }

    #[test]
    fn hta_rounds_starts_up_and_ends_down() {
        let hta = TimeBase::HtaMicros;
        assert_eq!(hta.interval(1_500, 2_000), (2_000, 3_000));
        assert_eq!(hta.interval(2_000, 1_000), (2_000, 3_000));
        assert_eq!(
            hta.interval(1_300, 400),
            (2_000, 1_000),
            "inverted, as in HTA"
        );
        assert_eq!(hta.interval(-1_500, 0), (-1_000, -2_000));
        assert_eq!(TimeBase::Exact.interval(1_300, 400), (1_300, 1_700));
        // At Unix-epoch microseconds HTA's floats keep quarter microseconds.
        let epoch_us: i64 = 1_712_195_495_505_583;
        let (start, _) = hta.interval(epoch_us * 1000 + 100, 0);
        assert_eq!(start, epoch_us * 1000, "100 ns past is lost in the float");
        let (start, _) = hta.interval(epoch_us * 1000 + 200, 0);
        assert_eq!(start, (epoch_us + 1) * 1000);
    }

    const TWO_STEPS: &str = r#"{"traceEvents": [
      {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#1", "ts": 0, "dur": 100},
      {"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#2", "ts": 100, "dur": 100},
      {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 10, "dur": 5, "args": {"correlation": 1}},
      {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "ts": 110, "dur": 5, "args": {"correlation": 2}},
      {"ph": "X", "cat": "kernel", "name": "gemm", "ts": 20, "dur": 90, "args": {"stream": 7, "correlation": 1}},
      {"ph": "X", "cat": "kernel", "name": "gemm", "ts": 120, "dur": 50, "args": {"stream": 7, "correlation": 2}},
      {"ph": "X", "cat": "cuda_sync", "name": "Stream Sync", "ts": 170, "dur": 5, "args": {"stream": 9, "correlation": 3}}
    ]}"#;

    #[test]
    fn the_last_step_and_what_it_launched_are_dropped() {
        let (ranks, cleanup) = clean(&run_of(&[TWO_STEPS]), TimeBase::HtaMicros);
        assert_eq!(cleanup.profiler_steps, 2);
        assert!(cleanup.last_step_dropped);
        let r = &ranks[0];
        assert_eq!(r.kernels.len(), 1);
        assert_eq!(
            (r.kernels[0].start_ns, r.kernels[0].end_ns),
            (20_000, 110_000)
        );
        assert_eq!(r.kernels[0].launch_ns, Some(10_000));
        assert_eq!(r.dropped, 2);
        assert_eq!(r.streams, [7]);
    }

    #[test]
    fn with_one_step_everything_is_kept() {
        let one = TWO_STEPS.replace("ProfilerStep#2", "other");
        let (ranks, cleanup) = clean(&run_of(&[&one]), TimeBase::HtaMicros);
        assert!(!cleanup.last_step_dropped);
        let r = &ranks[0];
        assert_eq!(r.kernels.len(), 3);
        assert_eq!(r.streams, [7, 9]);
        assert!(!r.kernels[2].is_work, "a sync is no work");
        assert_eq!(r.kernels[2].kernel_type, KernelType::Other);
    }

    #[test]
    fn a_rank_without_steps_is_kept_whole_and_named() {
        let bare = r#"{"traceEvents": [
          {"ph": "X", "cat": "kernel", "name": "k", "ts": 1, "dur": 2, "args": {"stream": 7, "correlation": 5}}]}"#;
        let (ranks, cleanup) = clean(&run_of(&[TWO_STEPS, bare]), TimeBase::Exact);
        assert_eq!(cleanup.ranks_without_steps, [1]);
        assert_eq!(ranks[1].kernels.len(), 1);
    }
}
