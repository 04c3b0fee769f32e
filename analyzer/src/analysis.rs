//! Per-rank measurements (wall time, breakdown, overlap, top ops) and `AnalysisInput`, the
//! measured run the detectors judge.

use crate::breakdown::{BreakdownNs, BreakdownPct, breakdown, comm_overlap_pct};
use crate::collectives::{CollectiveReport, collective_reports};
use crate::critical_path::{CriticalPathReport, critical_path_from};
use crate::exchanges::{Collectives, Messages};
use crate::facts::RunFacts;
use crate::frames::{OpStats, SpanFrame};
use crate::idle::{IdleBreakdownNs, IdleOps, idle_breakdown};
use crate::imbalance::ImbalanceReport;
use crate::roofline::{Ceilings, OpRoofline};
use crate::stats::{median, pct};
use crate::stragglers::{StragglerReport, straggler_report};
use crate::timeline::{NameId, TimedSpan, Timeline};
use crate::traffic::{CommSettings, TrafficReport, traffic_from};
use pinch_traces::{Category, NodeId, Rank, RankExit};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How many ops `RankReport::top_ops` keeps.
pub const TOP_OPS: usize = 10;

/// How a rank process ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ExitReport {
    Success,
    Failed {
        code: Option<i32>,
        signal: Option<i32>,
        message: String,
    },
}

impl From<&RankExit> for ExitReport {
    fn from(exit: &RankExit) -> ExitReport {
        match exit {
            RankExit::Success => ExitReport::Success,
            RankExit::Failed {
                code,
                signal,
                message,
            } => ExitReport::Failed {
                code: *code,
                signal: *signal,
                message: message.clone(),
            },
        }
    }
}

/// One op name's spans on one rank.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpReport {
    pub name: String,
    /// The category of the op's first span.
    pub category: Category,
    pub count: u64,
    /// Sum of the span durations (nested or overlapping spans each count).
    pub total_ns: u64,
    /// `total_ns` as a share of the rank's wall time (0 when that is 0: every span is then 0 too).
    pub share_pct: f64,
    pub median_ns: u64,
    /// Summed over the spans that carry a count; `None` when none does.
    pub flops: Option<u64>,
    pub bytes: Option<u64>,
    /// `flops` over the time of the spans that carry them, in GFLOP/s (1e9).
    pub achieved_gflops: Option<f64>,
    /// `bytes` over the time of the spans that carry them, in GB/s (1e9).
    pub achieved_gbps: Option<f64>,
    /// Where the op sits under the rank's roofs; `None` without a calibration, or for an op
    /// without flops and bytes.
    pub roofline: Option<OpRoofline>,
}

/// Everything measured about one rank.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankReport {
    pub rank: u32,
    pub node: u32,
    pub span_count: u64,
    /// First span start to last span end; `None` when the rank has no span.
    pub wall_ns: Option<u64>,
    pub breakdown_ns: Option<BreakdownNs>,
    /// `None` when the rank has no span or a wall time of zero.
    pub breakdown_pct: Option<BreakdownPct>,
    /// Share of communication time overlapped by compute; `None` without communication.
    pub comm_overlap_pct: Option<f64>,
    /// What the rank's idle time (wall time not spent moving the model forward) waited on;
    /// `None` when the rank has no span. See `idle`.
    pub idle_breakdown: Option<IdleBreakdownNs>,
    /// Up to `TOP_OPS` ops, longest total first.
    pub top_ops: Vec<OpReport>,
    /// The rank's compute and bandwidth roofs from the host's calibration; `None` when the run
    /// carries none (run `pinch calibrate` once on the host).
    pub roofs: Option<Ceilings>,
    /// `None` when the rank never reported a count.
    pub dropped_spans: Option<u64>,
    /// Whether no problem of the run touches this rank.
    pub complete: bool,
    /// `None` when the rank's end was not recorded.
    pub exit: Option<ExitReport>,
}

/// Every rank known to the facts or present in the timeline, in order, each on its node: the
/// manifest's placement, else the node whose log carried the rank's spans.
pub fn rank_reports(timeline: &Timeline, facts: &RunFacts) -> Vec<RankReport> {
    rank_reports_with(timeline, facts, SpanFrame::build(timeline).ok().as_ref())
}

fn rank_reports_with(
    timeline: &Timeline,
    facts: &RunFacts,
    frame: Option<&SpanFrame>,
) -> Vec<RankReport> {
    let mut placed: BTreeMap<Rank, NodeId> = timeline
        .ranks()
        .into_iter()
        .filter_map(|rank| Some((rank, timeline.spans_of(rank).first()?.node)))
        .collect();
    placed.extend(facts.rank_nodes.iter().map(|(&rank, &node)| (rank, node)));
    let ops = frame.and_then(ops_by_rank);
    let placed: Vec<(Rank, NodeId)> = placed.into_iter().collect();
    placed
        .into_par_iter()
        .map(|(rank, node)| {
            let top = |wall_ns: u64| match &ops {
                Some(ops) => top_ops_of(timeline, ops.get(&rank), wall_ns),
                None => top_ops(timeline, timeline.spans_of(rank), wall_ns),
            };
            rank_report(timeline, facts, rank, node, top)
        })
        .collect()
}

/// The per-op table from polars, split by rank; `None` when polars failed, and the ops are
/// then measured span by span instead.
fn ops_by_rank(frame: &SpanFrame) -> Option<BTreeMap<Rank, Vec<OpStats>>> {
    let stats = frame.op_stats().ok()?;
    let mut by_rank: BTreeMap<Rank, Vec<OpStats>> = BTreeMap::new();
    for op in stats {
        by_rank.entry(op.rank).or_default().push(op);
    }
    Some(by_rank)
}

fn rank_report(
    timeline: &Timeline,
    facts: &RunFacts,
    rank: Rank,
    node: NodeId,
    top_ops: impl Fn(u64) -> Vec<OpReport>,
) -> RankReport {
    let spans = timeline.spans_of(rank);
    let breakdown_ns = (!spans.is_empty()).then(|| breakdown(spans));
    let wall_ns = breakdown_ns.map(|b| b.wall_ns());
    RankReport {
        rank: rank.0,
        node: node.0,
        span_count: spans.len() as u64,
        wall_ns,
        breakdown_ns,
        breakdown_pct: breakdown_ns.and_then(|b| b.to_pct()),
        comm_overlap_pct: comm_overlap_pct(spans),
        idle_breakdown: idle_breakdown(spans, IdleOps::of(timeline)),
        top_ops: top_ops(wall_ns.unwrap_or(0)),
        roofs: None,
        dropped_spans: facts.dropped_spans.get(&rank).copied(),
        complete: facts.is_complete(rank),
        exit: facts.exits.get(&rank).map(ExitReport::from),
    }
}

/// The ops with the most total time, at most `TOP_OPS`, from the per-op table.
fn top_ops_of(timeline: &Timeline, ops: Option<&Vec<OpStats>>, wall_ns: u64) -> Vec<OpReport> {
    let mut ops: Vec<OpReport> = ops
        .into_iter()
        .flatten()
        .map(|op| OpReport {
            name: timeline.name(op.name).to_string(),
            category: op.category,
            count: op.count,
            total_ns: op.total_ns,
            share_pct: pct(op.total_ns as f64, wall_ns as f64).unwrap_or(0.0),
            median_ns: op.median_ns,
            flops: op.flops.map(|(sum, _)| sum),
            bytes: op.bytes.map(|(sum, _)| sum),
            achieved_gflops: op.flops.and_then(per_ns),
            achieved_gbps: op.bytes.and_then(per_ns),
            roofline: None,
        })
        .collect();
    longest_first(&mut ops);
    ops
}

fn longest_first(ops: &mut Vec<OpReport>) {
    ops.sort_by(|a, b| {
        b.total_ns
            .cmp(&a.total_ns)
            .then_with(|| a.name.cmp(&b.name))
    });
    ops.truncate(TOP_OPS);
}

/// The ops with the most total time, at most `TOP_OPS`, measured span by span.
fn top_ops(timeline: &Timeline, spans: &[TimedSpan], wall_ns: u64) -> Vec<OpReport> {
    let mut by_name: BTreeMap<NameId, Vec<&TimedSpan>> = BTreeMap::new();
    for s in spans {
        by_name.entry(s.name).or_default().push(s);
    }
    let mut ops: Vec<OpReport> = by_name
        .into_values()
        .filter_map(|spans| op_report(timeline, &spans, wall_ns))
        .collect();
    longest_first(&mut ops);
    ops
}

fn op_report(timeline: &Timeline, spans: &[&TimedSpan], wall_ns: u64) -> Option<OpReport> {
    let first = spans.first()?;
    let total_ns: u64 = spans.iter().map(|s| s.duration_ns).sum();
    let flops = sum_known(spans, |s| s.attrs.flops);
    let bytes = sum_known(spans, |s| s.attrs.bytes);
    Some(OpReport {
        name: timeline.name(first.name).to_string(),
        category: first.category,
        count: spans.len() as u64,
        total_ns,
        share_pct: pct(total_ns as f64, wall_ns as f64).unwrap_or(0.0),
        median_ns: median(spans.iter().map(|s| s.duration_ns).collect())?,
        flops: flops.map(|(sum, _)| sum),
        bytes: bytes.map(|(sum, _)| sum),
        achieved_gflops: flops.and_then(per_ns),
        achieved_gbps: bytes.and_then(per_ns),
        roofline: None,
    })
}

/// The sum of a quantity over the spans that carry it, with those spans' total time.
fn sum_known(spans: &[&TimedSpan], get: impl Fn(&TimedSpan) -> Option<u64>) -> Option<(u64, u64)> {
    spans
        .iter()
        .filter_map(|s| get(s).map(|v| (v, s.duration_ns)))
        .reduce(|(v, t), (w, u)| (v.saturating_add(w), t + u))
}

/// Per nanosecond is per 1e9 per second: GFLOP/s from flops, GB/s from bytes.
fn per_ns((amount, ns): (u64, u64)) -> Option<f64> {
    (ns > 0).then(|| amount as f64 / ns as f64)
}

/// The measured run the detectors judge.
#[derive(Clone, Debug)]
pub struct AnalysisInput<'a> {
    pub timeline: &'a Timeline,
    pub facts: &'a RunFacts,
    pub ranks: Vec<RankReport>,
    pub collectives: Vec<CollectiveReport>,
    /// Who arrived last at each collective, and what it cost the others.
    pub stragglers: StragglerReport,
    /// The rank×rank traffic matrix, with pinch's default comm settings unless
    /// `with_comm_settings` gave the run's.
    pub traffic: TrafficReport,
    /// Each step's critical path across ranks, summed over steps.
    pub critical_path: CriticalPathReport,
    /// Expert, stage and replica imbalance; empty until `report` fills it from the run.
    pub imbalance: ImbalanceReport,
}

impl<'a> AnalysisInput<'a> {
    pub fn new(timeline: &'a Timeline, facts: &'a RunFacts) -> AnalysisInput<'a> {
        Self::with_comm_settings(timeline, facts, CommSettings::default())
    }

    /// `new` for a run whose comm layer was set up as `settings` says.
    pub fn with_comm_settings(
        timeline: &'a Timeline,
        facts: &'a RunFacts,
        settings: CommSettings,
    ) -> AnalysisInput<'a> {
        let frame = SpanFrame::build(timeline).ok();
        AnalysisInput::with_frame(timeline, facts, frame.as_ref(), settings)
    }

    /// `with_comm_settings`, with the spans frame already built (`None` when polars could not
    /// build it).
    pub(crate) fn with_frame(
        timeline: &'a Timeline,
        facts: &'a RunFacts,
        frame: Option<&SpanFrame>,
        settings: CommSettings,
    ) -> AnalysisInput<'a> {
        let ((ranks, (collectives, stragglers)), (traffic, critical_path)) = rayon::join(
            || {
                rayon::join(
                    || rank_reports_with(timeline, facts, frame),
                    || {
                        rayon::join(
                            || collective_reports(timeline),
                            || straggler_report(timeline),
                        )
                    },
                )
            },
            || {
                // Matched once, for both the traffic matrix and the critical path.
                let collectives = Collectives::new(timeline);
                let messages = Messages::new(timeline);
                (
                    traffic_from(timeline, facts, settings, &collectives, &messages),
                    critical_path_from(timeline, &collectives, &messages),
                )
            },
        );
        AnalysisInput {
            timeline,
            facts,
            ranks,
            collectives,
            stragglers,
            traffic,
            critical_path,
            imbalance: ImbalanceReport::default(),
        }
    }

    /// The ranks that have a breakdown (some spans and a wall time).
    pub fn measured_ranks(&self) -> impl Iterator<Item = (&RankReport, BreakdownNs)> {
        self.ranks
            .iter()
            .filter_map(|r| r.breakdown_ns.filter(|b| b.wall_ns() > 0).map(|b| (r, b)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{collective, span, timeline};
    use Category::*;

    fn with_attrs(mut s: TimedSpan, flops: Option<u64>, bytes: Option<u64>) -> TimedSpan {
        s.attrs.flops = flops;
        s.attrs.bytes = bytes;
        s
    }

    #[test]
    fn top_ops_sum_time_and_rates_over_known_counts() {
        let t = timeline(vec![
            with_attrs(span(0, Compute, 0, 100), Some(1_000), None),
            with_attrs(span(0, Compute, 100, 300), Some(2_000), None),
            with_attrs(span(0, Compute, 400, 100), None, None),
            collective(0, 1, 500, 500, 64),
        ]);
        let facts = RunFacts::from_timeline(&t);
        let r = &rank_reports(&t, &facts)[0];
        assert_eq!(r.wall_ns, Some(1_000));
        assert_eq!(r.top_ops.len(), 2);
        let compute = &r.top_ops[1];
        assert_eq!((compute.name.as_str(), compute.count), ("compute", 3));
        assert_eq!((compute.total_ns, compute.median_ns), (500, 100));
        assert_eq!(compute.share_pct, 50.0);
        assert_eq!(compute.flops, Some(3_000));
        assert_eq!(compute.achieved_gflops, Some(3_000.0 / 400.0));
        assert_eq!((compute.bytes, compute.achieved_gbps), (None, None));
        assert_eq!(r.top_ops[0].category, Category::Communication);
        assert_eq!(r.comm_overlap_pct, Some(0.0));
    }

    #[test]
    fn the_polars_per_op_table_agrees_with_the_span_by_span_count() {
        let mut spans = Vec::new();
        for rank in 0..3u32 {
            for i in 0..40u64 {
                let category = [Compute, Memory, Host][(i % 3) as usize];
                let mut s = span(
                    rank,
                    category,
                    (i * 100) as i64,
                    10 + (i * 7 + u64::from(rank)) % 23,
                );
                s.name = NameId(((i + u64::from(rank)) % 4) as u32);
                s.attrs.flops = (i % 2 == 0).then_some(1_000 + i);
                s.attrs.bytes = (i % 5 == 0).then_some(64 * i);
                spans.push(s);
            }
        }
        let t = timeline(spans);
        let frame = SpanFrame::build(&t).unwrap();
        let ops = ops_by_rank(&frame).unwrap();
        for rank in t.ranks() {
            let wall_ns = breakdown(t.spans_of(rank)).wall_ns();
            let expected = top_ops(&t, t.spans_of(rank), wall_ns);
            assert_eq!(top_ops_of(&t, ops.get(&rank), wall_ns), expected);
            assert_eq!(expected.len(), 4);
        }
    }

    #[test]
    fn only_ten_ops_are_kept_longest_first() {
        let spans = (0..12)
            .map(|i| {
                let mut s = span(0, Compute, i * 100, 10 + i as u64);
                s.name = NameId(i as u32);
                s
            })
            .collect();
        let mut t = timeline(spans);
        t.names = (0..12).map(|i| format!("op{i}")).collect();
        let r = &rank_reports(&t, &RunFacts::from_timeline(&t))[0];
        let names: Vec<&str> = r.top_ops.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names.len(), TOP_OPS);
        assert_eq!((names[0], names[9]), ("op11", "op2"));
    }

    #[test]
    fn a_rank_without_spans_has_no_measurements() {
        let t = timeline(vec![span(0, Compute, 0, 10)]);
        let mut facts = RunFacts::from_timeline(&t);
        facts.rank_nodes.insert(Rank(1), pinch_traces::NodeId(0));
        facts.exits.insert(Rank(1), RankExit::Success);
        let r = &rank_reports(&t, &facts)[1];
        assert_eq!((r.rank, r.wall_ns, r.breakdown_pct), (1, None, None));
        assert_eq!((r.comm_overlap_pct, r.dropped_spans), (None, None));
        assert_eq!(r.exit, Some(ExitReport::Success));
    }
}
