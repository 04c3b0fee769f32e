//! The pipeline bubble per stage, from the imbalance report's stage table: a stage whose ranks
//! wait in receives or sit idle for much of their time gets a finding naming its ranks, how the
//! bubble splits, the micro-batches it ran and, when the stages' compute times differ, which
//! stage holds too many layers and which too few.
//!
//! Some bubble is the price of pipelining: with `m` micro-batches per step over `p` stages, a
//! perfectly balanced pipeline still leaves each stage idle `(p − 1) / (m + p − 1)` of a step
//! while it fills and drains. That much is `info` (more micro-batches shrink it); a bubble well
//! beyond it (a slow stage, gaps between steps) asks for action.

use super::pipeline::{BUBBLE_WARNING_PCT, receive_waiting, receive_waits};
use super::{Finding, FindingKind, Level, Location, fmt_ns, nodes_of, severity};
use crate::analysis::AnalysisInput;
use crate::imbalance::StageBubble;
use std::collections::{BTreeMap, BTreeSet};

/// A bubble this many percentage points beyond what the micro-batch count explains is a
/// warning (a healthy pipeline on a busy 2-core host stays within a few points)...
const EXCESS_WARNING_PP: f64 = 15.0;
/// ...and this many, critical.
const EXCESS_CRITICAL_PP: f64 = 40.0;
/// Stages whose compute per rank differs by this factor are unbalanced (as the load-imbalance
/// finding judges ranks).
const UNBALANCED_RATIO: f64 = 1.2;

/// One finding per stage whose bubble reaches `BUBBLE_WARNING_PCT`; empty without stages.
pub(super) fn stage_findings(input: &AnalysisInput<'_>) -> Vec<Finding> {
    let stages = &input.imbalance.stages;
    let flagged: Vec<&StageBubble> = stages.iter().filter(|s| is_flagged(s)).collect();
    if flagged.is_empty() {
        return Vec::new();
    }
    let ops = receive_ops(input);
    let slowest = slowest_stage(stages);
    flagged
        .into_iter()
        .map(|stage| stage_finding(input, stage, slowest, &ops))
        .collect()
}

/// The ranks of the stages `stage_findings` reports: their receive waiting is the bubble's.
pub(super) fn ranks_in_stage_bubbles(input: &AnalysisInput<'_>) -> BTreeSet<u32> {
    let stages = input.imbalance.stages.iter().filter(|s| is_flagged(s));
    stages.flat_map(|s| s.ranks.iter().copied()).collect()
}

fn is_flagged(stage: &StageBubble) -> bool {
    stage.bubble_pct.is_some_and(|p| p >= BUBBLE_WARNING_PCT)
}

/// The bubble a balanced pipeline of `stages` stages running `micro_batches` per step still
/// has, percent of a step.
pub(super) fn ideal_bubble_pct(stages: usize, micro_batches_per_step: f64) -> Option<f64> {
    let fill = stages.checked_sub(1)? as f64;
    let step = micro_batches_per_step + fill;
    (step > 0.0 && micro_batches_per_step > 0.0).then(|| 100.0 * fill / step)
}

/// The stage with the most compute per rank, when stages differ by `UNBALANCED_RATIO` or
/// more: (stage, its compute per rank, how many times the least loaded stage's it is).
fn slowest_stage(stages: &[StageBubble]) -> Option<(&StageBubble, f64)> {
    let per_rank = |s: &&StageBubble| s.compute_ns_per_rank();
    let slowest = stages.iter().max_by(|a, b| {
        per_rank(a)
            .unwrap_or(0.0)
            .total_cmp(&per_rank(b).unwrap_or(0.0))
    })?;
    let fastest = stages
        .iter()
        .filter_map(|s| per_rank(&s))
        .reduce(f64::min)?;
    let ratio = per_rank(&slowest)? / fastest;
    (fastest > 0.0 && ratio >= UNBALANCED_RATIO).then_some((slowest, ratio))
}

/// Per rank, the ops of its receives.
fn receive_ops(input: &AnalysisInput<'_>) -> BTreeMap<u32, BTreeSet<String>> {
    let waiting = receive_waiting(input);
    waiting.into_iter().map(|(r, w)| (r, w.ops)).collect()
}

/// The numbers of one stage's finding.
struct StageNumbers {
    bubble_pct: f64,
    recv_wait_pct: f64,
    idle_pct: f64,
    ideal_pct: Option<f64>,
    /// How much of the bubble the micro-batch count does not explain, percentage points.
    excess_pp: f64,
}

impl StageNumbers {
    fn of(stage: &StageBubble, stages: usize) -> StageNumbers {
        let working_ns = stage.working_ns() as f64;
        let share = |ns: u64| crate::stats::pct(ns as f64, working_ns).unwrap_or(0.0);
        let bubble_pct = stage.bubble_pct.unwrap_or(0.0);
        let ideal_pct = stage
            .micro_batches_per_step()
            .and_then(|m| ideal_bubble_pct(stages, m));
        StageNumbers {
            bubble_pct,
            recv_wait_pct: share(stage.recv_wait_ns),
            idle_pct: share(stage.idle_ns),
            ideal_pct,
            excess_pp: (bubble_pct - ideal_pct.unwrap_or(0.0)).max(0.0),
        }
    }

    fn level(&self) -> Level {
        match self.excess_pp {
            e if e >= EXCESS_CRITICAL_PP => Level::Critical,
            e if e >= EXCESS_WARNING_PP => Level::Warning,
            _ => Level::Info,
        }
    }
}

fn stage_finding(
    input: &AnalysisInput<'_>,
    stage: &StageBubble,
    slowest: Option<(&StageBubble, f64)>,
    ops: &BTreeMap<u32, BTreeSet<String>>,
) -> Finding {
    let n = StageNumbers::of(stage, input.imbalance.stages.len());
    // A stage waits on a slower one; the slowest stage's own bubble is not the imbalance's.
    let waits_on = slowest.filter(|(s, _)| s.stage != stage.stage);
    let ops: BTreeSet<String> = stage
        .ranks
        .iter()
        .filter_map(|r| ops.get(r))
        .flat_map(|o| o.iter().cloned())
        .collect();
    Finding {
        kind: FindingKind::PipelineBubble,
        level: n.level(),
        severity: severity(n.bubble_pct / 100.0),
        summary: summary(stage, &n, waits_on),
        location: Location {
            nodes: nodes_of(input, &stage.ranks),
            ranks: stage.ranks.clone(),
            ops: ops.into_iter().collect(),
            ..Location::default()
        },
        evidence: evidence(stage, &n, input.imbalance.stages.len(), slowest),
        suggestion: suggestion(stage, &n, waits_on),
        stretches: receive_waits(input, &stage.ranks),
    }
}

/// "pipeline stage 0 (rank 0) has nothing to do 72% of its time: 72% waiting in receives for
/// another stage, 0% idle, over 25 micro-batches in 13 steps (a balanced pipeline would leave
/// 34%), 1.32 s in all; stage 1 computes 3.9× as long per rank as the least loaded stage"
fn summary(stage: &StageBubble, n: &StageNumbers, waits_on: Option<(&StageBubble, f64)>) -> String {
    let mut text = format!(
        "pipeline stage {} ({}) has nothing to do {:.0}% of its time: {:.0}% waiting in \
         receives for another stage, {:.0}% idle",
        stage.stage,
        ranks_list(&stage.ranks),
        n.bubble_pct,
        n.recv_wait_pct,
        n.idle_pct,
    );
    if let (Some(mb), Some(steps)) = (stage.micro_batches, stage.steps) {
        text += &format!(", over {mb} micro-batches in {steps} steps");
    }
    if let Some(ideal) = n.ideal_pct {
        text += &format!(" (a balanced pipeline would leave {ideal:.0}%)");
    }
    text += &format!(", {} in all", fmt_ns(stage.bubble_ns as f64));
    if let Some((slow, ratio)) = waits_on {
        text += &format!(
            "; stage {} computes {ratio:.1}× as long per rank as the least loaded stage",
            slow.stage
        );
    }
    text
}

/// "rank 3" or "ranks 2, 3".
fn ranks_list(ranks: &[u32]) -> String {
    let list: Vec<String> = ranks.iter().map(u32::to_string).collect();
    let noun = if ranks.len() == 1 { "rank" } else { "ranks" };
    format!("{noun} {}", list.join(", "))
}

fn evidence(
    stage: &StageBubble,
    n: &StageNumbers,
    stages: usize,
    slowest: Option<(&StageBubble, f64)>,
) -> BTreeMap<String, f64> {
    let mut evidence: BTreeMap<String, f64> = [
        ("stage", f64::from(stage.stage)),
        ("stages", stages as f64),
        ("bubble_pct", n.bubble_pct),
        ("recv_wait_pct", n.recv_wait_pct),
        ("idle_pct", n.idle_pct),
        ("bubble_ns", stage.bubble_ns as f64),
        ("recv_wait_ns", stage.recv_wait_ns as f64),
        ("idle_ns", stage.idle_ns as f64),
        ("wall_ns", stage.wall_ns as f64),
        ("startup_ns", stage.startup_ns as f64),
        ("excess_bubble_pct", n.excess_pp),
        ("threshold_pct", BUBBLE_WARNING_PCT),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut put = |key: &str, value: Option<f64>| {
        if let Some(v) = value {
            evidence.insert(key.to_string(), v);
        }
    };
    put("ideal_bubble_pct", n.ideal_pct);
    put("micro_batches", stage.micro_batches.map(|m| m as f64));
    put("steps", stage.steps.map(|s| s as f64));
    put("micro_batches_per_step", stage.micro_batches_per_step());
    put("layers", stage.layers.map(f64::from));
    put("compute_ns_per_rank", stage.compute_ns_per_rank());
    if let Some((slow, ratio)) = slowest {
        put("slowest_stage", Some(f64::from(slow.stage)));
        put("slowest_compute_ns_per_rank", slow.compute_ns_per_rank());
        put("slowest_stage_layers", slow.layers.map(f64::from));
        put("stage_compute_ratio", Some(ratio));
    }
    evidence
}

/// Rebalance the layers when the stage waits on a slower one; more micro-batches otherwise.
fn suggestion(
    stage: &StageBubble,
    n: &StageNumbers,
    waits_on: Option<(&StageBubble, f64)>,
) -> String {
    let more_micro_batches = match (stage.micro_batches_per_step(), n.ideal_pct) {
        (Some(m), Some(ideal)) => format!(
            "split each step into more micro-batches (--micro-batches; {m:.1} per step now, \
             whose fill and drain alone leave {ideal:.0}% of a step idle)"
        ),
        _ => "split each step into more micro-batches (--micro-batches)".to_string(),
    };
    let Some((slow, ratio)) = waits_on else {
        return format!("{more_micro_batches} so the stages overlap more");
    };
    let layers = |s: &StageBubble| s.layers.map_or(String::new(), |l| format!(" ({l} layers)"));
    format!(
        "rebalance the pipeline: stage {}{} has too many layers for its ranks ({ratio:.1}× the \
         least loaded stage's compute) and stage {}{} too few; move layers from stage {} to \
         stage {} (or give stage {}'s ranks faster cores), then {more_micro_batches}",
        slow.stage,
        layers(slow),
        stage.stage,
        layers(stage),
        slow.stage,
        stage.stage,
        slow.stage,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::RunFacts;
    use crate::findings::Detector;
    use crate::imbalance::{Degrees, stage_bubbles};
    use crate::testkit::{self, span, timeline};
    use crate::timeline::{TimedSpan, Timeline};
    use pinch_traces::Category;

    /// A compute span of `rank` on `layer` in micro-batch `mb` of `step`.
    fn layer_op(rank: u32, step: u32, mb: u32, layer: u32, start_ns: i64, ns: u64) -> TimedSpan {
        let mut s = span(rank, Category::Compute, start_ns, ns);
        (s.attrs.step, s.attrs.micro_batch, s.attrs.layer) = (Some(step), Some(mb), Some(layer));
        s
    }

    /// Two stages, one rank each, `steps` steps of two micro-batches. Stage 0 runs layers 0-1
    /// in `ns0` per micro-batch, stage 1 layers 2-3 in `ns1`. Stage 1 receives each micro-batch
    /// from stage 0; stage 0 receives the step's tokens back before its next step.
    fn pipeline(steps: u32, ns0: u64, ns1: u64) -> Timeline {
        let mut spans = Vec::new();
        let mut t = 0i64;
        for step in 0..steps {
            // Stage 0: mb0 at t, mb1 right after.
            let (a0, a1) = (t, t + ns0 as i64);
            // Stage 1: mb0 when stage 0 has sent it, mb1 when both it and stage 1 are free.
            let b0 = a1;
            let b1 = (b0 + ns1 as i64).max(a1 + ns0 as i64);
            let end = b1 + ns1 as i64;
            for (mb, start) in [(0, a0), (1, a1)] {
                let half = ns0 / 2;
                spans.push(layer_op(0, step, mb, 0, start, half));
                spans.push(layer_op(0, step, mb, 1, start + half as i64, ns0 - half));
            }
            for (mb, start, ready) in [(0, b0, a1), (1, b1, a1 + ns0 as i64)] {
                let recv_from = if mb == 0 { t } else { b0 + ns1 as i64 };
                let waited = ready - recv_from;
                if waited > 0 {
                    spans.push(testkit::recv(1, 0, recv_from, waited as u64, waited as u64));
                }
                let half = ns1 / 2;
                spans.push(layer_op(1, step, mb, 2, start, half));
                spans.push(layer_op(1, step, mb, 3, start + half as i64, ns1 - half));
            }
            let from = a1 + ns0 as i64;
            spans.push(testkit::recv(
                0,
                1,
                from,
                (end - from) as u64,
                (end - from) as u64,
            ));
            t = end;
        }
        timeline(spans)
    }

    fn findings_of(t: &Timeline) -> Vec<Finding> {
        let facts = RunFacts::from_timeline(t);
        let mut input = AnalysisInput::new(t, &facts);
        input.imbalance.stages = stage_bubbles(&input, Degrees { tp: 1, pp: 2 });
        super::super::PipelineBubble.detect(&input)
    }

    #[test]
    fn the_bubble_of_two_micro_batches_over_two_stages_is_a_third() {
        assert_eq!(ideal_bubble_pct(2, 2.0).map(|p| p.round()), Some(33.0));
        assert_eq!(ideal_bubble_pct(4, 4.0).map(|p| p.round()), Some(43.0));
        assert_eq!(ideal_bubble_pct(1, 2.0), Some(0.0));
        assert_eq!(ideal_bubble_pct(0, 2.0), None);
        assert_eq!(ranks_list(&[2, 3]), "ranks 2, 3");
        assert_eq!(ranks_list(&[0]), "rank 0");
    }

    #[test]
    fn a_balanced_pipeline_has_only_its_fill_and_drain_bubble_at_info() {
        // Both stages take 1 µs per micro-batch: each idles one micro-batch in three.
        let findings = findings_of(&pipeline(10, 1_000, 1_000));
        assert_eq!(findings.len(), 2, "{findings:#?}");
        for f in &findings {
            assert_eq!(f.level, Level::Info, "{f:#?}");
            assert_eq!(f.evidence["micro_batches"], 20.0);
            assert_eq!(f.evidence["micro_batches_per_step"], 2.0);
            assert!(
                (f.evidence["bubble_pct"] - 100.0 / 3.0).abs() < 1.0,
                "{f:#?}"
            );
            assert!(
                f.suggestion
                    .starts_with("split each step into more micro-batches")
            );
            assert!(!f.evidence.contains_key("slowest_stage"), "{f:#?}");
        }
        assert_eq!(findings[0].evidence["layers"], 2.0);
    }

    #[test]
    fn a_slow_stage_leaves_the_other_one_waiting_and_is_named() {
        // Stage 1 takes 4 µs per micro-batch against stage 0's 1 µs: a step lasts 9 µs, of
        // which stage 0 works 2 (the rest waiting for the tokens) and stage 1 works 8.
        let findings = findings_of(&pipeline(10, 1_000, 4_000));
        let [f] = &findings[..] else {
            panic!("only stage 0 has a bubble: {findings:#?}")
        };
        assert_eq!(f.kind, FindingKind::PipelineBubble);
        assert_eq!(f.level, Level::Critical);
        assert_eq!(f.location.ranks, vec![0]);
        let pct = 700.0 / 9.0;
        assert!((f.evidence["bubble_pct"] - pct).abs() < 1e-9, "{f:#?}");
        assert!((f.evidence["recv_wait_pct"] - pct).abs() < 1e-9, "{f:#?}");
        assert_eq!(f.evidence["idle_pct"], 0.0);
        assert_eq!(f.evidence["slowest_stage"], 1.0);
        assert_eq!(f.evidence["stage_compute_ratio"], 4.0);
        assert!((f.severity - pct / 100.0).abs() < 1e-9);
        assert!(
            f.summary.starts_with(
                "pipeline stage 0 (rank 0) has nothing to do 78% of its time: 78% waiting in \
                 receives for another stage, 0% idle, over 20 micro-batches in 10 steps"
            ),
            "{}",
            f.summary
        );
        assert!(
            f.summary.ends_with(
                "; stage 1 computes 4.0× as long per rank as the least \
             loaded stage"
            ),
            "{}",
            f.summary
        );
        assert!(
            f.suggestion
                .contains("stage 1 (2 layers) has too many layers")
                && f.suggestion.contains("move layers from stage 1 to stage 0"),
            "{}",
            f.suggestion
        );
    }

    #[test]
    fn with_stages_the_per_rank_finding_gives_way_to_the_stage_findings() {
        let t = pipeline(10, 1_000, 4_000);
        let facts = RunFacts::from_timeline(&t);
        let input = AnalysisInput::new(&t, &facts);
        // Without the layout the per-rank finding reports rank 0 alone.
        let plain = super::super::PipelineBubble.detect(&input);
        assert_eq!(plain.len(), 1, "{plain:#?}");
        assert!(plain[0].summary.starts_with("pipeline bubble: rank(s) 0 "));
        assert!(
            findings_of(&t)
                .iter()
                .all(|f| f.summary.starts_with("pipeline stage"))
        );
    }
}
