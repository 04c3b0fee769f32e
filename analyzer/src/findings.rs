//! Findings: what holds the run back, each with a severity (the share of time at stake), a
//! location, the numbers behind it and a suggestion. Like tokio-console's `Warn` trait, each
//! kind of finding is a `Detector`, and a summary reads right with its numbers in it.

mod gpu_idle;
mod health;
mod host_load;
mod host_phases;
mod imbalance;
mod links;
mod pipeline;
mod ranks;
mod roofline;
mod share;
mod stages;

use crate::analysis::AnalysisInput;
use crate::phases::Stretch;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

pub use gpu_idle::GpuIdle;
pub use health::{DroppedSpans, IncompleteRun};
pub use host_phases::cite_phases;
pub use imbalance::{ExpertImbalanceDetector, ReplicaQueueing};
pub use links::SlowLink;
pub use pipeline::PipelineBubble;
pub(crate) use pipeline::receive_waiting;
pub use ranks::{HostContention, LoadImbalance, Straggler};
pub use roofline::MemoryBandwidthBound;
pub use share::ShareDetector;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    CommunicationBound,
    ComputeBound,
    MemoryBandwidthBound,
    HostBound,
    WaitBound,
    Idle,
    Straggler,
    LoadImbalance,
    PipelineBubble,
    IncompleteRun,
    DroppedSpans,
    SlowLink,
}

/// How urgent a finding is; `Info` describes the run, the others ask for action.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Info,
    Warning,
    Critical,
}

/// Where a finding applies.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    pub nodes: Vec<u32>,
    pub ranks: Vec<u32>,
    pub ops: Vec<String>,
    /// Links between two ranks, "A-B" with the lower rank first (as `--link-delay` names them).
    #[serde(default)]
    pub links: Vec<String>,
    /// Mixture-of-experts expert ids (the load-imbalance finding's hot experts).
    #[serde(default)]
    pub experts: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub level: Level,
    /// The share of wall time at stake, 0 to 1.
    pub severity: f64,
    /// One sentence with its numbers.
    pub summary: String,
    pub location: Location,
    /// Named numbers; each name ends in its unit (`_ns`, `_pct`, `_bytes`) or is a plain count.
    pub evidence: BTreeMap<String, f64>,
    /// What to do about it.
    pub suggestion: String,
    /// Where on the timeline it shows, in time order (at most `MAX_STRETCHES`, the costliest);
    /// empty when it concerns the run as a whole.
    #[serde(default)]
    pub stretches: Vec<Stretch>,
}

/// The most stretches a finding names.
pub const MAX_STRETCHES: usize = 256;

/// The longest `MAX_STRETCHES` of `stretches`, in time order.
fn keep_longest(mut stretches: Vec<Stretch>) -> Vec<Stretch> {
    stretches.sort_by_key(|s| std::cmp::Reverse(s.duration_ns));
    stretches.truncate(MAX_STRETCHES);
    stretches.sort_by_key(|s| s.start_ns);
    stretches
}

/// One kind of finding: looks at the measured run and reports what it sees, if anything.
pub trait Detector: std::fmt::Debug {
    fn kind(&self) -> FindingKind;
    fn detect(&self, input: &AnalysisInput<'_>) -> Vec<Finding>;
}

/// Every detector pinch runs.
pub fn all_detectors() -> Vec<Box<dyn Detector>> {
    vec![
        Box::new(ShareDetector::communication()),
        Box::new(ShareDetector::compute()),
        Box::new(ShareDetector::host()),
        Box::new(ShareDetector::wait()),
        Box::new(ShareDetector::idle()),
        Box::new(Straggler),
        Box::new(LoadImbalance),
        Box::new(ExpertImbalanceDetector),
        Box::new(ReplicaQueueing),
        Box::new(PipelineBubble),
        Box::new(MemoryBandwidthBound),
        Box::new(IncompleteRun),
        Box::new(DroppedSpans),
        Box::new(SlowLink),
        Box::new(HostContention),
    ]
}

/// Runs every detector; findings sorted by level, then severity, most urgent first: a critical
/// finding at a small share still outranks a description of where most time goes.
pub fn detect_all(input: &AnalysisInput<'_>) -> Vec<Finding> {
    detect_with(&all_detectors(), input)
}

/// Runs the given detectors, findings sorted as `detect_all` sorts them.
pub fn detect_with(detectors: &[Box<dyn Detector>], input: &AnalysisInput<'_>) -> Vec<Finding> {
    let mut findings: Vec<Finding> = detectors.iter().flat_map(|d| d.detect(input)).collect();
    findings.sort_by(|a, b| {
        b.level
            .cmp(&a.level)
            .then(b.severity.total_cmp(&a.severity))
            .then(a.kind.cmp(&b.kind))
    });
    findings
}

/// A severity from a share that rounding or estimates may push outside 0..=1.
fn severity(share: f64) -> f64 {
    if share.is_finite() {
        share.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// "every rank", "rank 3", or "2 of 8 ranks (1, 5)".
fn ranks_phrase(flagged: &[u32], total: usize) -> String {
    match flagged {
        [one] => format!("rank {one}"),
        _ if flagged.len() == total => "every rank".to_string(),
        _ => {
            let list: Vec<String> = flagged.iter().map(u32::to_string).collect();
            format!("{} of {total} ranks ({})", flagged.len(), list.join(", "))
        }
    }
}

/// A duration for a sentence: "340 ns", "12.5 µs", "1.2 ms", "3.40 s".
fn fmt_ns(ns: f64) -> String {
    match ns {
        n if n >= 1e9 => format!("{:.2} s", n / 1e9),
        n if n >= 1e6 => format!("{:.1} ms", n / 1e6),
        n if n >= 1e3 => format!("{:.1} µs", n / 1e3),
        n => format!("{n:.0} ns"),
    }
}

/// The nodes the given ranks ran on, in order.
fn nodes_of(input: &AnalysisInput<'_>, ranks: &[u32]) -> Vec<u32> {
    let nodes: BTreeSet<u32> = input
        .ranks
        .iter()
        .filter(|r| ranks.contains(&r.rank))
        .map(|r| r.node)
        .collect();
    nodes.into_iter().collect()
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::RunFacts;
    use crate::testkit;

    #[test]
    fn a_healthy_balanced_run_has_nothing_above_info() {
        let t = testkit::healthy_timeline(4);
        let facts = RunFacts::from_timeline(&t);
        let findings = detect_all(&AnalysisInput::new(&t, &facts));
        let loud: Vec<&Finding> = findings.iter().filter(|f| f.level > Level::Info).collect();
        assert!(loud.is_empty(), "{loud:#?}");
        assert!(findings.iter().any(|f| f.kind == FindingKind::ComputeBound));
    }

    #[test]
    fn findings_are_sorted_by_severity() {
        let t = testkit::comm_heavy_timeline(4);
        let mut facts = RunFacts::from_timeline(&t);
        facts.dropped_spans.insert(pinch_traces::Rank(0), 5);
        let findings = detect_all(&AnalysisInput::new(&t, &facts));
        assert!(findings.len() >= 2, "{findings:#?}");
        assert!(findings.windows(2).all(|w| w[0].severity >= w[1].severity));
        assert!(findings.iter().all(|f| (0.0..=1.0).contains(&f.severity)));
    }

    #[test]
    fn every_detector_names_its_own_kind() {
        let t = testkit::comm_heavy_timeline(4);
        let facts = RunFacts::from_timeline(&t);
        let input = AnalysisInput::new(&t, &facts);
        for d in all_detectors() {
            assert!(d.detect(&input).iter().all(|f| f.kind == d.kind()), "{d:?}");
        }
    }

    #[test]
    fn phrases_read_right_with_their_numbers() {
        assert_eq!(ranks_phrase(&[0, 1, 2, 3], 4), "every rank");
        assert_eq!(ranks_phrase(&[3], 4), "rank 3");
        assert_eq!(ranks_phrase(&[1, 5], 8), "2 of 8 ranks (1, 5)");
        assert_eq!(fmt_ns(340.0), "340 ns");
        assert_eq!(fmt_ns(1_234_567.0), "1.2 ms");
        assert_eq!(fmt_ns(12_500.0), "12.5 µs");
    }
}
