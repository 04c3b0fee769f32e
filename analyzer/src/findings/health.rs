//! Detectors of the trace's own health: a run that did not finish everywhere, and spans the
//! recorders had to drop. Both say how far the other numbers can be trusted.

use super::{Detector, Finding, FindingKind, Level, Location, severity};
use crate::analysis::AnalysisInput;
use crate::facts::Problem;
use pinch_traces::Rank;
use std::collections::{BTreeMap, BTreeSet};

/// A rank failed or did not finish, or a node log is missing or cut.
#[derive(Clone, Copy, Debug)]
pub struct IncompleteRun;

impl Detector for IncompleteRun {
    fn kind(&self) -> FindingKind {
        FindingKind::IncompleteRun
    }

    fn detect(&self, input: &AnalysisInput<'_>) -> Vec<Finding> {
        let problems = &input.facts.problems;
        let Some(first) = problems.first() else {
            return Vec::new();
        };
        let affected = affected_ranks(input, problems);
        let total = input.ranks.len();
        let nodes: BTreeSet<u32> = problems.iter().map(|p| p.node.0).collect();
        let critical = problems.iter().any(Problem::is_critical);
        Vec::from([Finding {
            kind: FindingKind::IncompleteRun,
            level: if critical {
                Level::Critical
            } else {
                Level::Warning
            },
            severity: severity(if total == 0 {
                1.0
            } else {
                affected.len() as f64 / total as f64
            }),
            summary: summary(first, problems.len(), affected.len(), total),
            location: Location {
                nodes: nodes.into_iter().collect(),
                ranks: affected.clone(),
                ops: Vec::new(),
                ..Location::default()
            },
            evidence: BTreeMap::from([
                ("problems".to_string(), problems.len() as f64),
                ("ranks_affected".to_string(), affected.len() as f64),
                ("ranks_total".to_string(), total as f64),
            ]),
            suggestion: "the numbers cover only what was recorded before things went wrong: \
                read each cause in run.incomplete (a failed rank's exit code and message are in \
                ranks[].exit), fix it and rerun for a complete profile"
                .to_string(),
            stretches: Vec::new(),
        }])
    }
}

/// The ranks any problem touches, in order.
fn affected_ranks(input: &AnalysisInput<'_>, problems: &[Problem]) -> Vec<u32> {
    input
        .ranks
        .iter()
        .filter(|r| {
            let node = input.facts.rank_nodes.get(&Rank(r.rank)).copied();
            problems.iter().any(|p| p.affects(Rank(r.rank), node))
        })
        .map(|r| r.rank)
        .collect()
}

fn summary(first: &Problem, problems: usize, affected: usize, total: usize) -> String {
    let who = match affected {
        0 => "the run is incomplete".to_string(),
        n if n == total && n > 1 => "every rank is incomplete".to_string(),
        1 => "1 rank is incomplete".to_string(),
        n => format!("{n} of {total} ranks are incomplete"),
    };
    let more = match problems {
        1 => String::new(),
        2 => " (and 1 more problem)".to_string(),
        n => format!(" (and {} more problems)", n - 1),
    };
    format!("{who}: {first}{more}")
}

/// Spans a recorder could not queue: the timeline has gaps there.
#[derive(Clone, Copy, Debug)]
pub struct DroppedSpans;

impl Detector for DroppedSpans {
    fn kind(&self) -> FindingKind {
        FindingKind::DroppedSpans
    }

    fn detect(&self, input: &AnalysisInput<'_>) -> Vec<Finding> {
        // (rank, dropped, share of the rank's spans that were dropped)
        let lossy: Vec<(u32, u64, f64)> = input
            .ranks
            .iter()
            .filter_map(|r| {
                let dropped = r.dropped_spans.filter(|d| *d > 0)?;
                Some((
                    r.rank,
                    dropped,
                    dropped as f64 / (dropped + r.span_count) as f64,
                ))
            })
            .collect();
        if lossy.is_empty() {
            return Vec::new();
        }
        let dropped: u64 = lossy.iter().map(|l| l.1).sum();
        let max_share = lossy.iter().map(|l| l.2).fold(0.0, f64::max);
        let ranks: Vec<u32> = lossy.iter().map(|l| l.0).collect();
        Vec::from([Finding {
            kind: FindingKind::DroppedSpans,
            level: Level::Warning,
            severity: severity(max_share),
            summary: format!(
                "{} dropped {dropped} spans (up to {:.1}% of a rank's spans): the timeline has gaps",
                who_dropped(&ranks),
                max_share * 100.0
            ),
            location: Location {
                nodes: super::nodes_of(input, &ranks),
                ranks,
                ops: Vec::new(),
                ..Location::default()
            },
            evidence: BTreeMap::from([
                ("dropped_spans".to_string(), dropped as f64),
                ("dropped_pct_max".to_string(), max_share * 100.0),
                ("ranks_affected".to_string(), lossy.len() as f64),
            ]),
            suggestion: "the recorder's queue filled up: enlarge it, let the agent drain it more \
                often, or record coarser spans"
                .to_string(),
            stretches: Vec::new(),
        }])
    }
}

fn who_dropped(ranks: &[u32]) -> String {
    match ranks {
        [one] => format!("rank {one}"),
        _ => format!("{} ranks", ranks.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::{ProblemKind, RunFacts};
    use crate::testkit;
    use crate::timeline::Timeline;
    use pinch_traces::{NodeId, Truncation};

    fn detect(d: &dyn Detector, t: &Timeline, facts: &RunFacts) -> Vec<Finding> {
        d.detect(&AnalysisInput::new(t, facts))
    }

    fn two_nodes() -> (Timeline, RunFacts) {
        let t = testkit::healthy_timeline(4);
        let mut facts = RunFacts::from_timeline(&t);
        for rank in [2, 3] {
            facts.rank_nodes.insert(Rank(rank), NodeId(1));
        }
        (t, facts)
    }

    #[test]
    fn a_cut_log_is_critical_and_names_its_node_and_ranks() {
        let (t, mut facts) = two_nodes();
        facts.problems.push(Problem {
            node: NodeId(1),
            rank: None,
            kind: ProblemKind::LogCut(Truncation {
                offset: 5123,
                dropped_bytes: 37,
                reason: "the log ends inside a record".into(),
            }),
        });
        let f = detect(&IncompleteRun, &t, &facts);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].level, Level::Critical);
        assert_eq!(
            f[0].summary,
            "2 of 4 ranks are incomplete: node 1: log cut at byte 5123, 37 bytes dropped \
             (the log ends inside a record)"
        );
        assert_eq!(
            (f[0].location.nodes.clone(), f[0].location.ranks.clone()),
            (vec![1], vec![2, 3])
        );
        assert_eq!(f[0].severity, 0.5);
    }

    #[test]
    fn an_unfinished_rank_alone_is_a_warning() {
        let (t, mut facts) = two_nodes();
        facts.problems.push(Problem {
            node: NodeId(1),
            rank: Some(Rank(3)),
            kind: ProblemKind::RankNotEnded,
        });
        let f = detect(&IncompleteRun, &t, &facts);
        assert_eq!(f[0].level, Level::Warning);
        assert!(
            f[0].summary
                .starts_with("1 rank is incomplete: rank 3 (node 1): ")
        );
        assert!(detect(&IncompleteRun, &t, &RunFacts::from_timeline(&t)).is_empty());
    }

    #[test]
    fn dropped_spans_are_a_warning_with_their_share() {
        let (t, mut facts) = two_nodes();
        facts.dropped_spans.insert(Rank(0), 0);
        assert!(detect(&DroppedSpans, &t, &facts).is_empty());
        let spans = t.spans_of(Rank(1)).len() as u64;
        facts.dropped_spans.insert(Rank(1), spans);
        let f = detect(&DroppedSpans, &t, &facts);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].level, Level::Warning);
        assert_eq!(f[0].severity, 0.5);
        assert_eq!(
            f[0].summary,
            format!(
                "rank 1 dropped {spans} spans (up to 50.0% of a rank's spans): the timeline has gaps"
            )
        );
    }
}
