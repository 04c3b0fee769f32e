//! Load-imbalance detectors over the imbalance report: experts that get far more tokens than
//! the others (and the expert-parallel ranks holding them), and data-parallel replicas whose
//! requests queue much longer than the others'.

use super::{Detector, Finding, FindingKind, Level, Location, fmt_ns, nodes_of, severity};
use crate::analysis::AnalysisInput;
use crate::imbalance::{ExpertImbalance, ReplicaImbalance, ReplicaLoad};
use std::collections::BTreeMap;

/// The op whose spans run the routed experts.
const EXPERTS_OP: &str = "moe.experts";
/// The hottest expert's tokens over the mean at which routing counts as imbalanced...
const EXPERT_WARNING_RATIO: f64 = 1.5;
/// ...and at which it is critical.
const EXPERT_CRITICAL_RATIO: f64 = 3.0;
/// An expert at this multiple of the mean is named as hot.
const HOT_EXPERT_RATIO: f64 = 1.5;

/// Experts (and the ranks holding them) that process far more tokens than the mean.
#[derive(Clone, Copy, Debug)]
pub struct ExpertImbalanceDetector;

impl Detector for ExpertImbalanceDetector {
    fn kind(&self) -> FindingKind {
        FindingKind::LoadImbalance
    }

    fn detect(&self, input: &AnalysisInput<'_>) -> Vec<Finding> {
        let Some(experts) = &input.imbalance.experts else {
            return Vec::new();
        };
        match experts.expert_tokens.max_to_mean {
            Some(ratio) if ratio >= EXPERT_WARNING_RATIO && experts.per_expert.len() >= 2 => {
                vec![expert_finding(input, experts, ratio)]
            }
            _ => Vec::new(),
        }
    }
}

/// The experts at `HOT_EXPERT_RATIO` × the mean or more, hottest first.
fn hot_experts(experts: &ExpertImbalance) -> Vec<(u32, u64)> {
    let floor = HOT_EXPERT_RATIO * experts.expert_tokens.mean;
    let mut hot: Vec<(u32, u64)> = experts
        .per_expert
        .iter()
        .filter(|e| e.tokens as f64 >= floor)
        .map(|e| (e.expert, e.tokens))
        .collect();
    hot.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    hot
}

/// The share of the ranks' wall time spent running experts, 0 to 1.
fn experts_time_share(input: &AnalysisInput<'_>) -> f64 {
    let Some(id) = input.timeline.names.iter().position(|n| n == EXPERTS_OP) else {
        return 0.0;
    };
    let experts_ns: u64 = input
        .timeline
        .spans
        .iter()
        .filter(|s| s.name.0 as usize == id)
        .map(|s| s.duration_ns)
        .sum();
    let wall_ns: u64 = input.measured_ranks().map(|(_, b)| b.wall_ns()).sum();
    if wall_ns == 0 {
        0.0
    } else {
        experts_ns as f64 / wall_ns as f64
    }
}

/// The ranks holding the hot experts, when experts are split over ranks (expert parallelism);
/// empty when every rank holds every expert.
fn holders(experts: &ExpertImbalance, hot: &[(u32, u64)]) -> Vec<u32> {
    if experts.per_rank.iter().all(|r| r.held >= experts.experts) {
        return Vec::new();
    }
    let mut ranks: Vec<u32> = experts
        .per_expert
        .iter()
        .filter(|e| hot.iter().any(|(h, _)| *h == e.expert))
        .flat_map(|e| e.ranks.iter().copied())
        .collect();
    ranks.sort_unstable();
    ranks.dedup();
    ranks
}

fn expert_finding(input: &AnalysisInput<'_>, experts: &ExpertImbalance, ratio: f64) -> Finding {
    let hot = hot_experts(experts);
    let ranks = holders(experts, &hot);
    let spread = experts.expert_tokens;
    let time_share = experts_time_share(input);
    // Were the tokens even, the busiest expert would run mean/max as long: the rest is at stake.
    let at_stake = time_share * (1.0 - spread.mean / spread.max);
    let names: Vec<String> = hot.iter().map(|(e, _)| e.to_string()).collect();
    let mut summary = format!(
        "expert{} {} process{} {ratio:.1}× the mean tokens of all {} experts ({:.0} against \
         {:.0} token slots)",
        if hot.len() == 1 { "" } else { "s" },
        names.join(", "),
        if hot.len() == 1 { "es" } else { "" },
        experts.per_expert.len(),
        spread.max,
        spread.mean,
    );
    if let (false, Some(rank_ratio)) = (ranks.is_empty(), experts.rank_tokens.max_to_mean) {
        summary.push_str(&format!(
            "; the busiest expert-parallel rank processes {rank_ratio:.1}× the ranks' mean"
        ));
    }
    let evidence = [
        ("expert_tokens_max", spread.max),
        ("expert_tokens_mean", spread.mean),
        ("max_to_mean_ratio", ratio),
        ("rank_tokens_max", experts.rank_tokens.max),
        ("rank_tokens_mean", experts.rank_tokens.mean),
        (
            "rank_max_to_mean_ratio",
            experts.rank_tokens.max_to_mean.unwrap_or(0.0),
        ),
        ("experts", f64::from(experts.experts)),
        ("hot_experts", hot.len() as f64),
        ("experts_time_pct", 100.0 * time_share),
        ("threshold_ratio", EXPERT_WARNING_RATIO),
    ];
    Finding {
        kind: FindingKind::LoadImbalance,
        level: if ratio >= EXPERT_CRITICAL_RATIO {
            Level::Critical
        } else {
            Level::Warning
        },
        severity: severity(at_stake),
        summary,
        location: Location {
            nodes: nodes_of(input, &ranks),
            ops: vec![EXPERTS_OP.to_string()],
            experts: hot.iter().map(|(e, _)| *e).collect(),
            ranks,
            ..Location::default()
        },
        evidence: evidence
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        suggestion: "even out the routing: train or fine-tune with a load-balancing loss or \
                     per-expert bias, cap each expert's tokens (--capacity-factor), or place \
                     copies of the hot experts on more ranks (redundant experts, as DeepSeek's \
                     EPLB does)"
            .to_string(),
        stretches: Vec::new(),
    }
}

/// A replica's requests wait this multiple of the replicas' mean queueing time...
const QUEUE_RATIO: f64 = 2.0;
/// ...the excess is at least this long (scheduling noise is far shorter)...
const QUEUE_MIN_EXCESS_NS: f64 = 1e6;
/// ...and at least this share of the replica's mean end-to-end latency.
const QUEUE_MIN_SHARE: f64 = 0.05;
/// The share of latency at which replica queueing is critical.
const QUEUE_CRITICAL_SHARE: f64 = 0.25;

/// A data-parallel replica whose requests queue much longer than the other replicas'.
#[derive(Clone, Copy, Debug)]
pub struct ReplicaQueueing;

impl Detector for ReplicaQueueing {
    fn kind(&self) -> FindingKind {
        FindingKind::LoadImbalance
    }

    fn detect(&self, input: &AnalysisInput<'_>) -> Vec<Finding> {
        let Some(replicas) = &input.imbalance.replicas else {
            return Vec::new();
        };
        queueing(replicas)
            .map(|(hot, mean_ns, share)| {
                vec![queueing_finding(input, replicas, hot, mean_ns, share)]
            })
            .unwrap_or_default()
    }
}

/// The replica that queues longest when it passes every test, with the replicas' mean
/// queueing time and the share of its latency the excess takes.
fn queueing(replicas: &ReplicaImbalance) -> Option<(&ReplicaLoad, f64, f64)> {
    let spread = replicas.queue_ns_mean?;
    let timed = replicas
        .per_replica
        .iter()
        .filter(|r| r.queue_ns_mean.is_some());
    if timed.count() < 2 || spread.max_to_mean? < QUEUE_RATIO {
        return None;
    }
    let hot = replicas
        .per_replica
        .iter()
        .filter_map(|r| Some((r, r.queue_ns_mean?)))
        .max_by(|a, b| a.1.total_cmp(&b.1))?
        .0;
    let excess_ns = spread.max - spread.mean;
    let share = excess_ns / hot.e2e_ns_mean?;
    (excess_ns >= QUEUE_MIN_EXCESS_NS && share >= QUEUE_MIN_SHARE).then_some((
        hot,
        spread.mean,
        share,
    ))
}

fn queueing_finding(
    input: &AnalysisInput<'_>,
    replicas: &ReplicaImbalance,
    hot: &ReplicaLoad,
    mean_ns: f64,
    share: f64,
) -> Finding {
    let queue_ns = hot.queue_ns_mean.unwrap_or(0.0);
    let evidence = BTreeMap::from([
        ("queue_ns_mean_max".to_string(), queue_ns),
        ("queue_ns_mean_mean".to_string(), mean_ns),
        (
            "queue_ns_max".to_string(),
            hot.queue_ns_max.unwrap_or(0) as f64,
        ),
        ("e2e_ns_mean".to_string(), hot.e2e_ns_mean.unwrap_or(0.0)),
        ("requests".to_string(), hot.requests as f64),
        ("requests_mean".to_string(), replicas.requests.mean),
        ("output_tokens".to_string(), hot.output_tokens as f64),
        (
            "output_tokens_mean".to_string(),
            replicas.output_tokens.mean,
        ),
        ("replicas".to_string(), replicas.per_replica.len() as f64),
    ]);
    Finding {
        kind: FindingKind::LoadImbalance,
        level: if share >= QUEUE_CRITICAL_SHARE {
            Level::Critical
        } else {
            Level::Warning
        },
        severity: severity(share),
        summary: format!(
            "replica {}'s requests queue {} on average before they are scheduled, against {} \
             over all {} replicas: {:.0}% of its mean latency ({} requests, mean {:.1})",
            hot.replica,
            fmt_ns(queue_ns),
            fmt_ns(mean_ns),
            replicas.per_replica.len(),
            share * 100.0,
            hot.requests,
            replicas.requests.mean,
        ),
        location: Location {
            nodes: nodes_of(input, &hot.ranks),
            ranks: hot.ranks.clone(),
            ..Location::default()
        },
        evidence,
        suggestion: "spread requests by load rather than in turn (--route least-tokens), or give \
                     this replica more capacity (KV-cache blocks, batch size); check whether its \
                     node is slower than the others"
            .to_string(),
        stretches: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::RunFacts;
    use crate::imbalance::{ExpertLoad, RankExpertLoad, Spread};
    use crate::testkit;

    /// Eight experts, two per rank over four expert-parallel ranks, with these token counts.
    fn experts(tokens: [u64; 8]) -> ExpertImbalance {
        let total: u64 = tokens.iter().sum();
        let per_rank: Vec<RankExpertLoad> = (0..4)
            .map(|r| RankExpertLoad {
                rank: r,
                first_expert: 2 * r,
                held: 2,
                tokens: tokens[2 * r as usize] + tokens[2 * r as usize + 1],
            })
            .collect();
        ExpertImbalance {
            experts: 8,
            steps: 10,
            per_expert: (0..8)
                .map(|e| ExpertLoad {
                    expert: e,
                    tokens: tokens[e as usize],
                    share_pct: 100.0 * tokens[e as usize] as f64 / total as f64,
                    ranks: vec![e / 2],
                })
                .collect(),
            expert_tokens: Spread::of(tokens.iter().map(|&t| t as f64)).unwrap(),
            rank_tokens: Spread::of(per_rank.iter().map(|r| r.tokens as f64)).unwrap(),
            per_rank,
            per_layer: Vec::new(),
        }
    }

    fn detect(d: &dyn Detector, imbalance: crate::imbalance::ImbalanceReport) -> Vec<Finding> {
        let t = testkit::healthy_timeline(4);
        let facts = RunFacts::from_timeline(&t);
        let mut input = AnalysisInput::new(&t, &facts);
        input.imbalance = imbalance;
        d.detect(&input)
    }

    fn with_experts(tokens: [u64; 8]) -> crate::imbalance::ImbalanceReport {
        crate::imbalance::ImbalanceReport {
            experts: Some(experts(tokens)),
            ..Default::default()
        }
    }

    #[test]
    fn a_hot_expert_is_named_with_the_rank_holding_it() {
        let f = detect(
            &ExpertImbalanceDetector,
            with_experts([400, 150, 100, 100, 90, 80, 40, 40]),
        );
        let [f] = &f[..] else {
            panic!("one finding expected: {f:#?}")
        };
        assert_eq!(f.kind, FindingKind::LoadImbalance);
        assert_eq!(f.location.experts, vec![0]);
        assert_eq!(f.location.ranks, vec![0]);
        // Mean 125: expert 0 at 3.2× is critical.
        assert_eq!(f.evidence["max_to_mean_ratio"], 3.2);
        assert_eq!(f.level, Level::Critical);
        assert!(
            f.summary
                .starts_with("expert 0 processes 3.2× the mean tokens of all 8 experts"),
            "{}",
            f.summary
        );
    }

    #[test]
    fn even_routing_is_no_finding() {
        let f = detect(
            &ExpertImbalanceDetector,
            with_experts([110, 95, 100, 105, 90, 100, 100, 100]),
        );
        assert!(f.is_empty(), "{f:#?}");
        let none = detect(&ExpertImbalanceDetector, Default::default());
        assert!(none.is_empty());
    }

    fn replica(replica: u32, queue_ms: f64, e2e_ms: f64) -> ReplicaLoad {
        ReplicaLoad {
            replica,
            ranks: vec![replica],
            requests: 10,
            output_tokens: 100,
            queued_requests: 10,
            queue_ns_mean: Some(queue_ms * 1e6),
            queue_ns_max: Some((2.0 * queue_ms * 1e6) as u64),
            e2e_ns_mean: Some(e2e_ms * 1e6),
        }
    }

    fn with_replicas(per_replica: Vec<ReplicaLoad>) -> crate::imbalance::ImbalanceReport {
        crate::imbalance::ImbalanceReport {
            replicas: Some(ReplicaImbalance {
                requests: Spread::of(per_replica.iter().map(|r| r.requests as f64)).unwrap(),
                output_tokens: Spread::of(per_replica.iter().map(|r| r.output_tokens as f64))
                    .unwrap(),
                queue_ns_mean: Spread::of(per_replica.iter().filter_map(|r| r.queue_ns_mean)),
                per_replica,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_replica_whose_requests_queue_longest_is_flagged() {
        // Queueing 2, 2, 2 and 26 ms: mean 8 ms, the excess 18 ms is 36% of 50 ms latency.
        let replicas = vec![
            replica(0, 2.0, 40.0),
            replica(1, 2.0, 40.0),
            replica(2, 2.0, 40.0),
            replica(3, 26.0, 50.0),
        ];
        let f = detect(&ReplicaQueueing, with_replicas(replicas));
        let [f] = &f[..] else {
            panic!("one finding expected: {f:#?}")
        };
        assert_eq!(f.location.ranks, vec![3]);
        assert_eq!(f.level, Level::Critical);
        assert!((f.severity - 0.36).abs() < 1e-9, "{}", f.severity);
        assert!(
            f.summary
                .starts_with("replica 3's requests queue 26.0 ms on average"),
            "{}",
            f.summary
        );
    }

    #[test]
    fn replicas_that_queue_alike_or_briefly_are_no_finding() {
        let even = vec![replica(0, 5.0, 40.0), replica(1, 6.0, 40.0)];
        assert!(detect(&ReplicaQueueing, with_replicas(even)).is_empty());
        // Two and a half times the mean, but only 60 µs more: noise.
        let brief = vec![
            replica(0, 0.01, 10.0),
            replica(1, 0.01, 10.0),
            replica(2, 0.1, 10.0),
        ];
        assert!(detect(&ReplicaQueueing, with_replicas(brief)).is_empty());
    }
}
