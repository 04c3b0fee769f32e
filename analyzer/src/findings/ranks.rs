//! Detectors that compare ranks with each other: a straggler the others wait for at every
//! collective, and compute spread unevenly across ranks.

use super::{Detector, Finding, FindingKind, Level, Location, fmt_ns, mean, nodes_of, severity};
use crate::analysis::{AnalysisInput, RankReport};
use crate::stats::median;
use pinch_traces::Category;
use std::collections::{BTreeMap, BTreeSet};

/// A rank's collectives are much shorter than its peers' while arrivals are skewed: the peers
/// sit in each collective waiting for it.
#[derive(Clone, Copy, Debug)]
pub struct Straggler;

/// A rank is a straggler when its median collective time is below this share of its peers'...
const STRAGGLER_OWN_SHARE: f64 = 0.5;
/// ...and ranks arrive at collectives further apart than this share of the peers' median.
const STRAGGLER_SKEW_SHARE: f64 = 0.2;

/// What the straggler detector measured for one rank.
#[derive(Debug)]
struct Lateness {
    rank: u32,
    own_median_ns: u64,
    peers_median_ns: u64,
    collectives: usize,
}

impl Detector for Straggler {
    fn kind(&self) -> FindingKind {
        FindingKind::Straggler
    }

    fn detect(&self, input: &AnalysisInput<'_>) -> Vec<Finding> {
        let durations = collective_durations(input);
        let Some(skew_ns) = mean_skew_ns(input) else {
            return Vec::new();
        };
        durations
            .keys()
            .filter_map(|rank| lateness(&durations, *rank))
            .filter(|l| (l.own_median_ns as f64) < STRAGGLER_OWN_SHARE * l.peers_median_ns as f64)
            .filter(|l| skew_ns > STRAGGLER_SKEW_SHARE * l.peers_median_ns as f64)
            .map(|l| straggler_finding(input, &l, skew_ns))
            .collect()
    }
}

/// Per rank, the durations of its collective spans.
fn collective_durations(input: &AnalysisInput<'_>) -> BTreeMap<u32, Vec<u64>> {
    let mut durations: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for s in input.timeline.spans.iter() {
        if s.attrs.collective.is_some() {
            durations.entry(s.rank.0).or_default().push(s.duration_ns);
        }
    }
    durations
}

/// The mean arrival skew over all matched collectives of the run.
fn mean_skew_ns(input: &AnalysisInput<'_>) -> Option<f64> {
    let (sum, count) = input
        .collectives
        .iter()
        .filter_map(|c| {
            c.mean_skew_ns
                .map(|skew| (skew * c.count as f64, c.count as f64))
        })
        .fold((0.0, 0.0), |(s, n), (t, m)| (s + t, n + m));
    (count > 0.0).then(|| sum / count)
}

fn lateness(durations: &BTreeMap<u32, Vec<u64>>, rank: u32) -> Option<Lateness> {
    let own = durations.get(&rank)?;
    let peers: Vec<u64> = durations
        .iter()
        .filter(|(r, _)| **r != rank)
        .flat_map(|(_, d)| d.iter().copied())
        .collect();
    Some(Lateness {
        rank,
        own_median_ns: median(own.clone())?,
        peers_median_ns: median(peers)?,
        collectives: own.len(),
    })
}

fn straggler_finding(input: &AnalysisInput<'_>, l: &Lateness, skew_ns: f64) -> Finding {
    let waited_ns = l.peers_median_ns.saturating_sub(l.own_median_ns) as f64 * l.collectives as f64;
    let peer_walls: Vec<f64> = input
        .ranks
        .iter()
        .filter(|r| r.rank != l.rank)
        .filter_map(|r| r.wall_ns.map(|w| w as f64))
        .collect();
    let share = mean(&peer_walls).map_or(0.0, |wall| waited_ns / wall);
    Finding {
        kind: FindingKind::Straggler,
        level: if share >= 0.25 {
            Level::Critical
        } else {
            Level::Warning
        },
        severity: severity(share),
        summary: format!(
            "the other ranks wait for rank {} at collectives: theirs take a median {}, its own {}",
            l.rank,
            fmt_ns(l.peers_median_ns as f64),
            fmt_ns(l.own_median_ns as f64)
        ),
        location: Location {
            nodes: nodes_of(input, &[l.rank]),
            ranks: vec![l.rank],
            ops: collective_ops(input, l.rank),
        },
        evidence: BTreeMap::from([
            (
                "own_collective_median_ns".to_string(),
                l.own_median_ns as f64,
            ),
            (
                "peers_collective_median_ns".to_string(),
                l.peers_median_ns as f64,
            ),
            ("mean_skew_ns".to_string(), skew_ns),
            ("collectives".to_string(), l.collectives as f64),
            ("peers_wait_ns".to_string(), waited_ns),
        ]),
        suggestion: format!(
            "find what makes rank {} late before each collective: compare its compute and host \
             time with its peers', and look for other load on its node (CPU utilization, other \
             processes); then even out its work or move it",
            l.rank
        ),
    }
}

/// The names of a rank's communication ops among its top ops.
fn collective_ops(input: &AnalysisInput<'_>, rank: u32) -> Vec<String> {
    let names: BTreeSet<&str> = input
        .ranks
        .iter()
        .filter(|r| r.rank == rank)
        .flat_map(|r| &r.top_ops)
        .filter(|op| op.category == Category::Communication)
        .map(|op| op.name.as_str())
        .collect();
    names.into_iter().map(String::from).collect()
}

/// One rank computes much longer than the mean: the others wait for it at every step.
#[derive(Clone, Copy, Debug)]
pub struct LoadImbalance;

/// The max-to-mean ratio of compute time at which ranks count as imbalanced.
const IMBALANCE_RATIO: f64 = 1.2;

impl Detector for LoadImbalance {
    fn kind(&self) -> FindingKind {
        FindingKind::LoadImbalance
    }

    fn detect(&self, input: &AnalysisInput<'_>) -> Vec<Finding> {
        let compute: Vec<(&RankReport, f64, f64)> = input
            .measured_ranks()
            .map(|(r, b)| (r, b.compute as f64, b.wall_ns() as f64))
            .collect();
        let mean_ns = mean(&compute.iter().map(|c| c.1).collect::<Vec<_>>());
        let busiest = compute.iter().max_by(|a, b| a.1.total_cmp(&b.1));
        match (mean_ns, busiest) {
            (Some(mean_ns), Some(&(rank, max_ns, wall_ns)))
                if compute.len() >= 2 && mean_ns > 0.0 && max_ns / mean_ns >= IMBALANCE_RATIO =>
            {
                vec![imbalance_finding(
                    input,
                    rank,
                    max_ns,
                    mean_ns,
                    wall_ns,
                    compute.len(),
                )]
            }
            _ => Vec::new(),
        }
    }
}

fn imbalance_finding(
    input: &AnalysisInput<'_>,
    busiest: &RankReport,
    max_ns: f64,
    mean_ns: f64,
    wall_ns: f64,
    ranks: usize,
) -> Finding {
    let ratio = max_ns / mean_ns;
    let top_compute = busiest
        .top_ops
        .iter()
        .find(|op| op.category == Category::Compute)
        .map(|op| op.name.clone());
    Finding {
        kind: FindingKind::LoadImbalance,
        level: Level::Warning,
        severity: severity((max_ns - mean_ns) / wall_ns),
        summary: format!(
            "rank {} computes {ratio:.1}× the mean of all {ranks} ranks ({} against {})",
            busiest.rank,
            fmt_ns(max_ns),
            fmt_ns(mean_ns)
        ),
        location: Location {
            nodes: nodes_of(input, &[busiest.rank]),
            ranks: vec![busiest.rank],
            ops: top_compute.into_iter().collect(),
        },
        evidence: BTreeMap::from([
            ("compute_ns_max".to_string(), max_ns),
            ("compute_ns_mean".to_string(), mean_ns),
            ("max_to_mean_ratio".to_string(), ratio),
            ("ranks_measured".to_string(), ranks as f64),
        ]),
        suggestion: "even out the work: check how heads, hidden dimensions and requests are split \
            across ranks, and whether this rank's node is slower or busier than the others"
            .to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::RunFacts;
    use crate::testkit::{self, collective, span, timeline};
    use crate::timeline::{TimedSpan, Timeline};
    use pinch_traces::Category::*;

    fn detect(d: &dyn Detector, t: &Timeline) -> Vec<Finding> {
        let facts = RunFacts::from_timeline(t);
        d.detect(&AnalysisInput::new(t, &facts))
    }

    /// Four ranks, ten steps: compute then an all-reduce. Rank 2 computes `late_ns` longer, so
    /// it arrives last and the others wait in the all-reduce for it.
    fn straggling(late_ns: u64) -> Timeline {
        let mut spans: Vec<TimedSpan> = Vec::new();
        for step in 0..10u64 {
            let t0 = (step * 10_000) as i64;
            for rank in 0..4u32 {
                let compute_ns = if rank == 2 { 5_000 + late_ns } else { 5_000 };
                spans.push(span(rank, Compute, t0, compute_ns));
                let end = t0 + 5_000 + late_ns as i64 + 500;
                let start = t0 + compute_ns as i64;
                spans.push(collective(rank, step, start, (end - start) as u64, 1 << 20));
            }
        }
        timeline(spans)
    }

    #[test]
    fn the_rank_others_wait_for_is_the_straggler() {
        let f = detect(&Straggler, &straggling(2_000));
        assert_eq!(f.len(), 1, "{f:#?}");
        assert_eq!(f[0].location.ranks, vec![2]);
        assert_eq!(
            f[0].summary,
            "the other ranks wait for rank 2 at collectives: theirs take a median 2.5 µs, its own 500 ns"
        );
        assert_eq!(f[0].evidence.get("peers_wait_ns"), Some(&20_000.0));
        // Peers' wall time is 9 steps of 10 µs plus the last step's 7.5 µs.
        assert!((f[0].severity - 20_000.0 / 97_500.0).abs() < 1e-9);
    }

    #[test]
    fn ranks_that_arrive_together_have_no_straggler() {
        assert!(detect(&Straggler, &straggling(0)).is_empty());
        assert!(detect(&Straggler, &testkit::healthy_timeline(4)).is_empty());
    }

    #[test]
    fn one_rank_computing_half_again_as_long_is_imbalance() {
        let f = detect(&LoadImbalance, &straggling(5_000));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].location.ranks, vec![2]);
        // Compute per step: 10 µs on rank 2, 5 µs elsewhere: mean 6.25 µs, ratio 1.6.
        assert_eq!(
            f[0].summary,
            "rank 2 computes 1.6× the mean of all 4 ranks (100.0 µs against 62.5 µs)"
        );
        assert!(detect(&LoadImbalance, &straggling(500)).is_empty());
    }
}
