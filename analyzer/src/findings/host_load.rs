//! How busy each node's host was while the ranks ran, from the procfs counters: the mean
//! utilization of its cores ("cpu.utilization", one series per core) and the CPU time each rank
//! process used ("process.cpu_time", cumulative, device "rankN").
//!
//! The straggler detector reads these to tell a rank that is late because it has more to do
//! from one that is late because the host did not run it: on saturated cores, a rank with more
//! work uses more CPU than its peers, while a starved one uses no more (waiting ranks spin only
//! briefly before they nap). Without the counters (not read, or an imported trace) nothing here
//! has an answer, and the detectors fall back on the spans alone.

use crate::phases::counters;
use crate::timeline::Timeline;
use pinch_traces::{NodeId, Rank};

/// The counter of a core's busy share, in percent.
const CPU_COUNTER: &str = "cpu.utilization";
/// Per-core series are named after /proc/stat's labels ("cpu3").
const CORE_PREFIX: &str = "cpu";
/// A rank process's CPU time so far, in nanoseconds.
const RANK_CPU_TIME_COUNTER: &str = "process.cpu_time";

/// A node whose cores are at least this busy on average, over the ranks' time, is saturated: a
/// runnable thread there may wait for a core. (A quiet 2-core host running two ranks, their
/// agents and the coordinator stays well below it; busy loops on both cores put it near 100%.)
pub(super) const SATURATED_PCT: f64 = 90.0;

/// The mean utilization of the node's cores from the first span's start to the last span's end;
/// `None` when no core sample covers that time.
pub(super) fn node_cpu_pct(timeline: &Timeline, node: NodeId) -> Option<f64> {
    let (start_ns, end_ns) = ranks_window(timeline)?;
    let cores = timeline
        .series
        .iter()
        .filter(|s| s.node == node && s.counter == CPU_COUNTER)
        .filter(|s| s.device.starts_with(CORE_PREFIX));
    counters::mean_of_means(cores, &[(start_ns, end_ns)])
}

/// From the earliest first span of a rank to the latest end of a rank's last-starting span: the
/// ranks' time, found a rank at a time (spans are sorted by rank, then start) rather than span
/// by span, as detectors call this on runs of tens of millions of spans.
fn ranks_window(timeline: &Timeline) -> Option<(i64, i64)> {
    let spans = &timeline.spans;
    let mut window: Option<(i64, i64)> = None;
    let mut from = 0;
    while let Some(first) = spans.get(from) {
        let to = spans.partition_point(|s| s.rank <= first.rank);
        let end_ns = spans[from..to]
            .last()
            .map_or(first.end_ns(), |s| s.end_ns());
        window = Some(window.map_or((first.start_ns, end_ns), |(a, b)| {
            (a.min(first.start_ns), b.max(end_ns))
        }));
        from = to;
    }
    window
}

/// The mean core utilization of the nodes, when every one of them was saturated
/// (`SATURATED_PCT`); `None` when one was not, or was not measured.
pub(super) fn all_saturated_pct(timeline: &Timeline, nodes: &[u32]) -> Option<f64> {
    let pcts: Vec<f64> = nodes
        .iter()
        .map(|&n| node_cpu_pct(timeline, NodeId(n)).filter(|pct| *pct >= SATURATED_PCT))
        .collect::<Option<_>>()?;
    super::mean(&pcts)
}

/// The CPU time the rank's process used, by its last reading; `None` when it was not read.
pub(super) fn rank_cpu_ns(timeline: &Timeline, rank: Rank) -> Option<f64> {
    let device = format!("rank{}", rank.0);
    timeline
        .series
        .iter()
        .filter(|s| s.counter == RANK_CPU_TIME_COUNTER && s.device == device)
        .flat_map(|s| s.values.iter().copied())
        .filter(|v| v.is_finite())
        .reduce(f64::max)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testkit::{span, timeline};
    use crate::timeline::Series;
    use pinch_traces::{Category, Unit};

    /// A counter series on node 0 with one sample every 100 ns from 100 ns on.
    pub(crate) fn series(counter: &str, device: &str, values: &[f64]) -> Series {
        Series {
            node: NodeId(0),
            counter: counter.into(),
            unit: Some(Unit::Percent),
            device: device.into(),
            times_ns: (1..=values.len() as i64).map(|i| i * 100).collect(),
            values: values.to_vec(),
        }
    }

    #[test]
    fn cores_average_over_the_ranks_time_and_cpu_time_is_the_last_reading() {
        let mut t = timeline(vec![span(0, Category::Compute, 0, 400)]);
        t.series = vec![
            series(CPU_COUNTER, "cpu0", &[100.0, 100.0, 100.0, 100.0]),
            series(CPU_COUNTER, "cpu1", &[80.0, 80.0, 80.0, 80.0]),
            series(RANK_CPU_TIME_COUNTER, "rank0", &[10.0, 250.0, 300.0]),
        ];
        assert_eq!(node_cpu_pct(&t, NodeId(0)), Some(90.0));
        assert_eq!(node_cpu_pct(&t, NodeId(1)), None);
        assert_eq!(rank_cpu_ns(&t, Rank(0)), Some(300.0));
        assert_eq!(rank_cpu_ns(&t, Rank(1)), None);
    }
}
