//! The pipeline bubble: a stage that waits for its neighbour's activations has nothing to do.
//! A receive's `wait_ns` is the time until the sender arrived, so in a pipeline-parallel run the
//! receive waiting of a rank, over its wall time, is the share of it the bubble took.
//!
//! Where the run's layout gives its stages (the imbalance report's stage table), the finding is
//! per stage instead (see `stages`): the stage bubble adds idle time and the micro-batches, and
//! the per-rank finding would report the same waiting twice, so it gives way.

use super::stages::{ranks_in_stage_bubbles, stage_findings};
use super::{
    Detector, Finding, FindingKind, Level, Location, fmt_ns, keep_longest, nodes_of, severity,
};
use crate::analysis::AnalysisInput;
use crate::phases::Stretch;
use pinch_traces::CollectiveKind;
use std::collections::{BTreeMap, BTreeSet};

/// A rank waiting on receives for more than this share of its wall time has a bubble worth a
/// warning...
pub(super) const BUBBLE_WARNING_PCT: f64 = 20.0;
/// ...and above this, a critical one.
const BUBBLE_CRITICAL_PCT: f64 = 50.0;

#[derive(Clone, Copy, Debug)]
pub struct PipelineBubble;

/// One rank's receive waiting.
#[derive(Debug, Default)]
pub(crate) struct Waiting {
    pub(crate) wait_ns: u64,
    receives: u64,
    pub(super) ops: BTreeSet<String>,
}

impl Detector for PipelineBubble {
    fn kind(&self) -> FindingKind {
        FindingKind::PipelineBubble
    }

    fn detect(&self, input: &AnalysisInput<'_>) -> Vec<Finding> {
        if !input.imbalance.stages.is_empty() {
            return stage_findings(input);
        }
        let waiting = receive_waiting(input);
        let shares = bubble_shares(input, &waiting);
        let flagged = flagged_ranks(&shares);
        if flagged.is_empty() {
            return Vec::new();
        }
        vec![bubble_finding(input, &waiting, &shares, &flagged)]
    }
}

/// Per rank, the receive waiting of the ranks this detector flags: what the pipeline-bubble
/// finding explains, so the communication finding does not count it again.
pub(super) fn waiting_in_bubbles(input: &AnalysisInput<'_>) -> BTreeMap<u32, u64> {
    let waiting = receive_waiting(input);
    let flagged: Vec<u32> = match input.imbalance.stages.is_empty() {
        true => flagged_ranks(&bubble_shares(input, &waiting)),
        false => ranks_in_stage_bubbles(input).into_iter().collect(),
    };
    waiting
        .into_iter()
        .filter(|(rank, _)| flagged.contains(rank))
        .map(|(rank, w)| (rank, w.wait_ns))
        .collect()
}

/// Per measured rank that receives, its receive waiting as a share of its wall time, percent.
fn bubble_shares(
    input: &AnalysisInput<'_>,
    waiting: &BTreeMap<u32, Waiting>,
) -> BTreeMap<u32, f64> {
    input
        .measured_ranks()
        .filter_map(|(rank, breakdown)| {
            let w = waiting.get(&rank.rank)?;
            let pct = 100.0 * w.wait_ns as f64 / breakdown.wall_ns() as f64;
            Some((rank.rank, pct))
        })
        .collect()
}

fn flagged_ranks(shares: &BTreeMap<u32, f64>) -> Vec<u32> {
    shares
        .iter()
        .filter(|(_, pct)| **pct >= BUBBLE_WARNING_PCT)
        .map(|(rank, _)| *rank)
        .collect()
}

/// Per rank, the waiting of its receives (the imbalance report's stage bubbles use it too).
pub(crate) fn receive_waiting(input: &AnalysisInput<'_>) -> BTreeMap<u32, Waiting> {
    let mut waiting: BTreeMap<u32, Waiting> = BTreeMap::new();
    for span in &input.timeline.spans {
        let Some(c) = span.attrs.collective else {
            continue;
        };
        if c.kind != CollectiveKind::Recv {
            continue;
        }
        let Some(wait_ns) = c.wait_ns else {
            continue;
        };
        let w = waiting.entry(span.rank.0).or_default();
        w.wait_ns += wait_ns.min(span.duration_ns);
        w.receives += 1;
        w.ops.insert(input.timeline.name(span.name).to_string());
    }
    waiting
}

/// Where `ranks` waited in their receives for another stage: the first part of each receive,
/// the longest first kept, in time order.
pub(super) fn receive_waits(input: &AnalysisInput<'_>, ranks: &[u32]) -> Vec<Stretch> {
    let waits = ranks.iter().flat_map(|&rank| {
        input
            .timeline
            .spans_of(pinch_traces::Rank(rank))
            .iter()
            .filter_map(|span| {
                let c = span.attrs.collective?;
                let wait_ns = c
                    .wait_ns
                    .filter(|&w| w > 0 && c.kind == CollectiveKind::Recv)?;
                Some(Stretch {
                    start_ns: span.start_ns,
                    duration_ns: wait_ns.min(span.duration_ns),
                })
            })
    });
    keep_longest(waits.collect())
}

fn bubble_finding(
    input: &AnalysisInput<'_>,
    waiting: &BTreeMap<u32, Waiting>,
    shares: &BTreeMap<u32, f64>,
    flagged: &[u32],
) -> Finding {
    let flagged_shares: Vec<f64> = flagged
        .iter()
        .filter_map(|r| shares.get(r).copied())
        .collect();
    let worst_pct = flagged_shares.iter().copied().fold(0.0, f64::max);
    let mean_pct = flagged_shares.iter().sum::<f64>() / flagged_shares.len() as f64;
    let wait_ns: u64 = flagged
        .iter()
        .filter_map(|r| waiting.get(r))
        .map(|w| w.wait_ns)
        .sum();
    let receives: u64 = flagged
        .iter()
        .filter_map(|r| waiting.get(r))
        .map(|w| w.receives)
        .sum();
    let ops: BTreeSet<String> = flagged
        .iter()
        .filter_map(|r| waiting.get(r))
        .flat_map(|w| w.ops.iter().cloned())
        .collect();
    let ranks: Vec<String> = flagged.iter().map(u32::to_string).collect();
    let level = match worst_pct >= BUBBLE_CRITICAL_PCT {
        true => Level::Critical,
        false => Level::Warning,
    };
    let evidence = [
        ("bubble_pct_max", worst_pct),
        ("bubble_pct_mean", mean_pct),
        ("receive_wait_ns", wait_ns as f64),
        ("receives", receives as f64),
        ("ranks_flagged", flagged.len() as f64),
        ("threshold_pct", BUBBLE_WARNING_PCT),
    ];
    Finding {
        kind: FindingKind::PipelineBubble,
        level,
        severity: severity(mean_pct / 100.0),
        summary: format!(
            "pipeline bubble: rank(s) {} wait for another pipeline stage {mean_pct:.0}% of their \
             time on average (up to {worst_pct:.0}%), {} over {receives} receives",
            ranks.join(", "),
            fmt_ns(wait_ns as f64),
        ),
        location: Location {
            nodes: nodes_of(input, flagged),
            ranks: flagged.to_vec(),
            ops: ops.into_iter().collect(),
            ..Location::default()
        },
        evidence: evidence
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        suggestion: "give every stage work while the others compute: split each step into more \
                     micro-batches (--micro-batches), and balance the layers over the stages so no \
                     stage waits on a slower neighbour"
            .to_string(),
        stretches: receive_waits(input, flagged),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::AnalysisInput;
    use crate::facts::RunFacts;
    use crate::testkit::{self, span, timeline};
    use crate::timeline::TimedSpan;
    use pinch_traces::Category;

    fn recv(rank: u32, start_ns: i64, duration_ns: u64, wait_ns: u64) -> TimedSpan {
        testkit::recv(rank, 1 - rank, start_ns, duration_ns, wait_ns)
    }

    fn findings(spans: Vec<TimedSpan>) -> Vec<Finding> {
        let timeline = timeline(spans);
        let facts = RunFacts::default();
        PipelineBubble.detect(&AnalysisInput::new(&timeline, &facts))
    }

    #[test]
    fn a_stage_that_waits_on_its_receives_has_a_bubble() {
        // Rank 1 (the second stage) waits 600 of its 1000 ns for rank 0's activations.
        let spans = vec![
            span(0, Category::Compute, 0, 1_000),
            span(1, Category::Compute, 0, 200),
            recv(1, 200, 700, 600),
            span(1, Category::Compute, 900, 100),
        ];
        let [finding] = &findings(spans)[..] else {
            panic!("one finding expected")
        };
        assert_eq!(finding.kind, FindingKind::PipelineBubble);
        assert_eq!(finding.level, Level::Critical);
        assert_eq!(finding.location.ranks, vec![1]);
        assert_eq!(finding.evidence["bubble_pct_max"], 60.0);
        assert!((finding.severity - 0.6).abs() < 1e-9);
        // On the timeline: the first 600 ns of the receive.
        let waits: Vec<(i64, u64)> = finding
            .stretches
            .iter()
            .map(|s| (s.start_ns, s.duration_ns))
            .collect();
        assert_eq!(waits, [(200, 600)]);
    }

    #[test]
    fn receives_that_find_their_data_waiting_are_no_bubble() {
        let spans = vec![span(1, Category::Compute, 0, 900), recv(1, 900, 100, 10)];
        assert!(findings(spans).is_empty());
    }
}
