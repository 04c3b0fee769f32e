//! Detectors of where wall time goes: one `ShareDetector` per category (and idle time), flagging
//! the ranks whose exclusive share of wall time crosses a threshold. Communication spent waiting
//! for a straggler is left to the straggler finding: it says nothing about the network.

use super::host_load;
use super::pipeline::waiting_in_bubbles;
use super::ranks::waiting_for_stragglers;
use super::{
    Detector, Finding, FindingKind, Level, Location, keep_longest, mean, nodes_of, ranks_phrase,
    severity,
};
use crate::analysis::AnalysisInput;
use crate::breakdown::BreakdownNs;
use crate::phases::Stretch;
use crate::roofline::RooflineClass;
use pinch_traces::Category;
use std::collections::BTreeMap;

/// Flags ranks whose share of one part of the breakdown reaches `warn_pct`.
#[derive(Clone, Debug)]
pub struct ShareDetector {
    kind: FindingKind,
    /// The category measured; `None` for idle time.
    part: Option<Category>,
    /// The sentence's subject and verb: "communication takes".
    what: &'static str,
    /// The evidence names' stem: "comm" gives `comm_pct_mean`.
    stem: &'static str,
    warn_pct: f64,
    /// The level at `warn_pct`, and the share at which it becomes critical.
    level: Level,
    critical_pct: Option<f64>,
    suggestion: &'static str,
}

impl ShareDetector {
    pub fn communication() -> ShareDetector {
        ShareDetector {
            kind: FindingKind::CommunicationBound,
            part: Some(Category::Communication),
            what: "communication takes",
            stem: "comm",
            warn_pct: 25.0,
            level: Level::Warning,
            critical_pct: Some(50.0),
            suggestion: "cut communication per token: keep each tensor-parallel group inside one \
                node (fewer TP ranks across a node boundary), batch more tokens per step so each \
                collective amortizes its per-message latency, or overlap collectives with compute",
        }
    }

    pub fn compute() -> ShareDetector {
        ShareDetector {
            kind: FindingKind::ComputeBound,
            part: Some(Category::Compute),
            what: "compute takes",
            stem: "compute",
            warn_pct: 60.0,
            level: Level::Info,
            critical_pct: None,
            suggestion: "the run is limited by arithmetic, as a healthy one is: to go faster, \
                speed up the top op (compare its achieved GFLOP/s with the hardware's peak) or \
                spread it over more ranks",
        }
    }

    pub fn host() -> ShareDetector {
        ShareDetector {
            kind: FindingKind::HostBound,
            part: Some(Category::Host),
            what: "host work takes",
            stem: "host",
            warn_pct: 20.0,
            level: Level::Warning,
            critical_pct: None,
            suggestion: "the ranks wait on host-side bookkeeping: move scheduling and sampling \
                off the critical path, batch requests, or give each rank a core of its own",
        }
    }

    pub fn wait() -> ShareDetector {
        ShareDetector {
            kind: FindingKind::WaitBound,
            part: Some(Category::Wait),
            what: "waiting takes",
            stem: "wait",
            warn_pct: 10.0,
            level: Level::Warning,
            critical_pct: None,
            suggestion: "ranks block on barriers or peers: find whom they wait for (see the \
                straggler and load-imbalance findings) and even out the work or the placement",
        }
    }

    pub fn idle() -> ShareDetector {
        ShareDetector {
            kind: FindingKind::Idle,
            part: None,
            what: "idle time (no op running) takes",
            stem: "idle",
            warn_pct: 20.0,
            level: Level::Warning,
            critical_pct: None,
            suggestion: "no span covers this time: the rank sits between steps (launch or \
                framework overhead, data loading) or runs work that is not instrumented; add \
                spans there or close the gaps",
        }
    }

    /// The part's share of wall time, less `excused_ns` of it.
    fn share_pct(&self, b: &BreakdownNs, excused_ns: u64) -> f64 {
        let ns = self.part.map_or(b.idle, |c| b.of(c));
        ns.saturating_sub(excused_ns) as f64 / b.wall_ns() as f64 * 100.0
    }

    /// Per rank, the time of the part other findings explain, (waiting for a straggler,
    /// waiting in a pipeline bubble): communication spent waiting for a straggler or for the
    /// previous stage is their doing, not the network's.
    fn excused_ns(&self, input: &AnalysisInput<'_>) -> Excused {
        match self.part {
            Some(Category::Communication) => Excused {
                straggler: waiting_for_stragglers(input),
                bubble: waiting_in_bubbles(input),
            },
            _ => Excused::default(),
        }
    }
}

impl Detector for ShareDetector {
    fn kind(&self) -> FindingKind {
        self.kind
    }

    fn detect(&self, input: &AnalysisInput<'_>) -> Vec<Finding> {
        let excused = self.excused_ns(input);
        let excused_of = |rank: u32| excused.of(rank);
        let measured: Vec<(u32, f64)> = input
            .measured_ranks()
            .map(|(r, b)| (r.rank, self.share_pct(&b, excused_of(r.rank))))
            .collect();
        let flagged: Vec<(u32, f64)> = measured
            .iter()
            .copied()
            .filter(|(_, pct)| *pct >= self.warn_pct)
            .collect();
        let Some(mean_pct) = mean(&flagged.iter().map(|(_, p)| *p).collect::<Vec<_>>()) else {
            return Vec::new();
        };
        let max_pct = flagged.iter().map(|(_, p)| *p).fold(0.0, f64::max);
        let ranks: Vec<u32> = flagged.iter().map(|(r, _)| *r).collect();
        let ops = self.top_ops(input, &ranks);
        let mut summary = format!(
            "{} {mean_pct:.0}% of wall time on {}",
            self.what,
            ranks_phrase(&ranks, measured.len())
        );
        let mut suggestion = self.suggestion.to_string();
        if let (Some(Category::Compute), Some((name, share))) = (self.part, ops.first()) {
            summary += &format!("; the top op is '{name}' ({share:.0}% of wall time)");
            if let Some((class, advice)) = roofline_advice(input, &ranks, name) {
                summary += &format!(", {class} by the roofline");
                suggestion = advice.to_string();
            }
        }
        let excused_pct = excused_pct_mean(input, &ranks, &excused.straggler);
        if let Some(pct) = excused_pct {
            summary += &format!(", besides {pct:.0}% spent waiting for a straggler");
        }
        if let Some(pct) = excused_pct_mean(input, &ranks, &excused.bubble) {
            summary += &format!(", besides {pct:.0}% waiting in the pipeline bubble");
        }
        let nodes = nodes_of(input, &ranks);
        let mut level = self.level_at(max_pct);
        let mut evidence = self.evidence(input, &flagged, measured.len(), excused_pct);
        if let Some(cpu_pct) = self.saturated_host(input, &nodes) {
            summary += &format!(
                ", on cores {cpu_pct:.0}% busy: the ranks wait for each other because the host \
                 runs them by turns, not because of the links"
            );
            suggestion = SATURATED_SUGGESTION.to_string();
            level = Level::Info;
            evidence.insert("node_cpu_pct_mean".to_string(), cpu_pct);
        }
        Vec::from([Finding {
            kind: self.kind,
            level,
            severity: severity(mean_pct / 100.0),
            summary,
            location: Location {
                nodes,
                ranks: ranks.clone(),
                ops: ops.into_iter().map(|(name, _)| name).collect(),
                ..Location::default()
            },
            evidence,
            suggestion,
            stretches: if self.kind == FindingKind::Idle {
                idle_gaps(input.timeline, &ranks)
            } else {
                Vec::new()
            },
        }])
    }
}

/// The ranks' longest gaps with no span running (on any lane), in time order.
pub(super) fn idle_gaps(timeline: &crate::timeline::Timeline, ranks: &[u32]) -> Vec<Stretch> {
    let mut gaps: Vec<Stretch> = Vec::new();
    for &rank in ranks {
        let mut busy_until: Option<i64> = None;
        for span in timeline.spans_of(pinch_traces::Rank(rank)) {
            if let Some(end) = busy_until.filter(|&end| span.start_ns > end) {
                gaps.push(Stretch {
                    start_ns: end,
                    duration_ns: span.start_ns.abs_diff(end),
                });
            }
            busy_until = Some(busy_until.map_or(span.end_ns(), |e| e.max(span.end_ns())));
        }
    }
    keep_longest(gaps)
}

/// What to do when the ranks' waiting comes from a saturated host.
const SATURATED_SUGGESTION: &str = "give every rank a core of its own (fewer ranks per node, or \
    nothing else running beside them) and measure again: on a saturated host a rank that is not \
    running holds up every collective it takes part in, and that waiting says nothing about the \
    links";

impl ShareDetector {
    /// For communication and waiting: the mean core utilization of the flagged ranks' nodes when
    /// every one of them was saturated. Ranks of pinch's comm layer spin only briefly before they
    /// sleep, so a node whose cores stay busy while its ranks wait was running something else:
    /// the waiting is the host's doing, and the finding drops to info.
    fn saturated_host(&self, input: &AnalysisInput<'_>, nodes: &[u32]) -> Option<f64> {
        let waits = matches!(self.part, Some(Category::Communication | Category::Wait));
        if !waits {
            return None;
        }
        host_load::all_saturated_pct(input.timeline, nodes)
    }

    fn level_at(&self, max_pct: f64) -> Level {
        match self.critical_pct {
            Some(critical) if max_pct >= critical => Level::Critical,
            _ => self.level,
        }
    }

    /// Up to three ops of this category on the flagged ranks, by mean share of wall time.
    fn top_ops(&self, input: &AnalysisInput<'_>, ranks: &[u32]) -> Vec<(String, f64)> {
        let Some(category) = self.part else {
            return Vec::new();
        };
        let mut shares: BTreeMap<&str, f64> = BTreeMap::new();
        let flagged = input.ranks.iter().filter(|r| ranks.contains(&r.rank));
        for op in flagged.flat_map(|r| &r.top_ops) {
            if op.category == category {
                *shares.entry(&op.name).or_default() += op.share_pct / ranks.len() as f64;
            }
        }
        let mut ops: Vec<(String, f64)> = shares.into_iter().map(|(n, s)| (n.into(), s)).collect();
        ops.sort_by(|a, b| b.1.total_cmp(&a.1));
        ops.truncate(3);
        ops
    }

    fn evidence(
        &self,
        input: &AnalysisInput<'_>,
        flagged: &[(u32, f64)],
        total: usize,
        excused_pct: Option<f64>,
    ) -> BTreeMap<String, f64> {
        let pcts: Vec<f64> = flagged.iter().map(|(_, p)| *p).collect();
        let mut evidence = BTreeMap::from([
            (
                format!("{}_pct_mean", self.stem),
                mean(&pcts).unwrap_or(0.0),
            ),
            (
                format!("{}_pct_max", self.stem),
                pcts.iter().copied().fold(0.0, f64::max),
            ),
            ("threshold_pct".to_string(), self.warn_pct),
            ("ranks_flagged".to_string(), flagged.len() as f64),
            ("ranks_measured".to_string(), total as f64),
        ]);
        if self.part == Some(Category::Communication) {
            let overlaps: Vec<f64> = input
                .ranks
                .iter()
                .filter(|r| flagged.iter().any(|(rank, _)| *rank == r.rank))
                .filter_map(|r| r.comm_overlap_pct)
                .collect();
            if let Some(overlap) = mean(&overlaps) {
                evidence.insert("comm_overlap_pct_mean".to_string(), overlap);
            }
            if let Some(pct) = excused_pct {
                evidence.insert("straggler_wait_pct_mean".to_string(), pct);
            }
        }
        evidence
    }
}

/// When the roofline says the top compute op is not limited by arithmetic: its class and what
/// to do instead of the compute finding's usual advice.
fn roofline_advice(
    input: &AnalysisInput<'_>,
    ranks: &[u32],
    op: &str,
) -> Option<(&'static str, &'static str)> {
    let roofline = input
        .ranks
        .iter()
        .filter(|r| ranks.contains(&r.rank))
        .flat_map(|r| &r.top_ops)
        .find(|o| o.name == op)?
        .roofline?;
    match roofline.class {
        RooflineClass::ComputeBound => None,
        RooflineClass::MemoryBound => Some((
            "memory-bound",
            "the compute ops wait on memory, not arithmetic: see the memory-bandwidth-bound \
             finding (fewer bytes per token, more tokens per weight read)",
        )),
        RooflineClass::LatencyBound => Some((
            "latency-bound",
            "the top op reaches under a tenth of its roof: each call does too little work to \
             pay for its launch and synchronization; batch more tokens per step or fuse small \
             ops",
        )),
    }
}

/// Time other findings explain, per rank.
#[derive(Debug, Default)]
struct Excused {
    straggler: BTreeMap<u32, u64>,
    bubble: BTreeMap<u32, u64>,
}

impl Excused {
    fn of(&self, rank: u32) -> u64 {
        let get = |map: &BTreeMap<u32, u64>| map.get(&rank).copied().unwrap_or(0);
        get(&self.straggler) + get(&self.bubble)
    }
}

/// The mean share of wall time the flagged ranks spent in excused time; `None` when none did.
fn excused_pct_mean(
    input: &AnalysisInput<'_>,
    ranks: &[u32],
    excused: &BTreeMap<u32, u64>,
) -> Option<f64> {
    let pcts: Vec<f64> = input
        .measured_ranks()
        .filter(|(r, _)| ranks.contains(&r.rank))
        .map(|(r, b)| excused.get(&r.rank).copied().unwrap_or(0) as f64 / b.wall_ns() as f64)
        .collect();
    mean(&pcts).filter(|p| *p > 0.0).map(|p| p * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::RunFacts;
    use crate::testkit::{self, span, timeline};
    use Category::*;

    fn detect(d: &ShareDetector, t: &crate::timeline::Timeline) -> Vec<Finding> {
        let facts = RunFacts::from_timeline(t);
        d.detect(&AnalysisInput::new(t, &facts))
    }

    #[test]
    fn a_compute_finding_whose_top_op_waits_on_memory_says_so() {
        let t = testkit::healthy_timeline(2);
        let facts = RunFacts::from_timeline(&t);
        let mut input = AnalysisInput::new(&t, &facts);
        let compute = ShareDetector::compute();
        let plain = compute.detect(&input);
        let [plain] = &plain[..] else {
            panic!("the healthy timeline is compute-bound: {plain:?}")
        };
        assert!(!plain.summary.contains("roofline"), "{}", plain.summary);
        let top = plain.location.ops[0].clone();
        for rank in &mut input.ranks {
            for op in rank.top_ops.iter_mut().filter(|o| o.name == top) {
                op.roofline = Some(crate::roofline::OpRoofline {
                    arithmetic_intensity: 0.5,
                    roof_gflops: 10.0,
                    roof_pct: 70.0,
                    class: RooflineClass::MemoryBound,
                });
            }
        }
        let [found] = &compute.detect(&input)[..] else {
            panic!("one finding expected")
        };
        assert!(
            found.summary.ends_with(", memory-bound by the roofline"),
            "{}",
            found.summary
        );
        assert!(
            found.suggestion.contains("wait on memory"),
            "{}",
            found.suggestion
        );
    }

    #[test]
    fn communication_over_half_the_time_is_critical_on_every_rank() {
        let t = testkit::comm_heavy_timeline(4);
        let f = detect(&ShareDetector::communication(), &t);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].level, Level::Critical);
        assert_eq!(
            f[0].summary,
            "communication takes 60% of wall time on every rank"
        );
        assert_eq!(f[0].location.ranks, vec![0, 1, 2, 3]);
        assert_eq!(f[0].location.ops, vec!["all_reduce"]);
        assert!((f[0].severity - 0.6).abs() < 1e-9);
        assert_eq!(f[0].evidence.get("comm_overlap_pct_mean"), Some(&0.0));
    }

    /// `t` with every core of each of its nodes at `cpu_pct` over the whole run.
    fn with_cores_at(mut t: crate::timeline::Timeline, cpu_pct: f64) -> crate::timeline::Timeline {
        let end_ns = t.spans.iter().map(|s| s.end_ns()).max().unwrap_or(0);
        let nodes: std::collections::BTreeSet<_> = t.spans.iter().map(|s| s.node).collect();
        for node in nodes {
            for core in ["cpu0", "cpu1"] {
                t.series.push(crate::timeline::Series {
                    node,
                    counter: "cpu.utilization".into(),
                    unit: Some(pinch_traces::Unit::Percent),
                    device: core.into(),
                    times_ns: vec![0, end_ns / 2, end_ns],
                    values: vec![cpu_pct; 3],
                });
            }
        }
        t
    }

    #[test]
    fn waiting_on_a_saturated_host_is_the_hosts_doing_and_only_info() {
        let busy = detect(
            &ShareDetector::communication(),
            &with_cores_at(testkit::comm_heavy_timeline(4), 98.0),
        );
        assert_eq!(busy[0].level, Level::Info);
        assert!(
            busy[0].summary.ends_with("not because of the links"),
            "{}",
            busy[0].summary
        );
        assert_eq!(busy[0].evidence.get("node_cpu_pct_mean"), Some(&98.0));
        assert!(busy[0].suggestion.starts_with("give every rank a core"));
        // Cores half idle while the ranks wait: the waiting is the run's.
        let idle = detect(
            &ShareDetector::communication(),
            &with_cores_at(testkit::comm_heavy_timeline(4), 50.0),
        );
        assert_eq!(idle[0].level, Level::Critical);
        assert_eq!(idle[0].evidence.get("node_cpu_pct_mean"), None);
    }

    #[test]
    fn communication_between_the_thresholds_is_a_warning_on_the_ranks_that_cross() {
        // Rank 0: 30% communication; rank 1: 10%.
        let t = timeline(vec![
            span(0, Compute, 0, 70),
            span(0, Communication, 70, 30),
            span(1, Compute, 0, 90),
            span(1, Communication, 90, 10),
        ]);
        let f = detect(&ShareDetector::communication(), &t);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].level, Level::Warning);
        assert_eq!(
            f[0].summary,
            "communication takes 30% of wall time on rank 0"
        );
        assert_eq!(f[0].evidence.get("ranks_flagged"), Some(&1.0));
    }

    /// Two ranks, ten steps of 7 µs: rank 0 computes 1 µs and rank 1 4 µs, then an all-reduce
    /// ends for both at 6 µs (the last 2 µs of it `moving_ns` moving data, the rest waiting).
    fn waiting_for_rank_1(moving_ns: u64) -> crate::timeline::Timeline {
        let mut spans = Vec::new();
        for step in 0..10u64 {
            let t0 = (step * 7_000) as i64;
            let end = t0 + 4_000 + moving_ns as i64;
            for (rank, compute_ns) in [(0, 1_000), (1, 4_000)] {
                spans.push(span(rank, Compute, t0, compute_ns));
                let start = t0 + compute_ns as i64;
                spans.push(testkit::collective(
                    rank,
                    step,
                    start,
                    (end - start) as u64,
                    64,
                ));
            }
        }
        timeline(spans)
    }

    #[test]
    fn waiting_for_a_straggler_is_not_communication() {
        let t = waiting_for_rank_1(500);
        let facts = RunFacts::from_timeline(&t);
        let input = AnalysisInput::new(&t, &facts);
        let gross = input.measured_ranks().map(|(_, b)| b.communication).max();
        assert_eq!(
            gross,
            Some(35_000),
            "rank 0 sits 3.5 µs of each step in the all-reduce"
        );
        assert!(detect(&ShareDetector::communication(), &t).is_empty());
    }

    #[test]
    fn communication_beyond_the_waiting_is_still_reported() {
        let t = waiting_for_rank_1(2_000);
        let f = detect(&ShareDetector::communication(), &t);
        assert_eq!(f.len(), 1, "{f:#?}");
        // Of the 69 µs of each rank, rank 0 spends 50 in the all-reduce, 30 of them waiting for
        // rank 1; rank 1 spends 20.
        assert_eq!(
            f[0].summary,
            "communication takes 29% of wall time on every rank, besides 22% spent waiting for a \
             straggler"
        );
        let waited = f[0].evidence.get("straggler_wait_pct_mean").copied();
        assert!((waited.unwrap_or(0.0) - 30.0 / 69.0 * 50.0).abs() < 1e-9);
    }

    #[test]
    fn compute_bound_is_info_and_names_the_top_op() {
        let t = testkit::healthy_timeline(2);
        let f = detect(&ShareDetector::compute(), &t);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].level, Level::Info);
        assert_eq!(
            f[0].summary,
            "compute takes 80% of wall time on every rank; the top op is 'compute' (80% of wall time)"
        );
    }

    #[test]
    fn host_wait_and_idle_each_cross_their_own_threshold() {
        // 25% host, 15% wait, 30% idle, 30% compute.
        let t = timeline(vec![
            span(0, Host, 0, 25),
            span(0, Wait, 25, 15),
            span(0, Compute, 40, 30),
            span(0, Compute, 100, 0),
        ]);
        for (d, summary) in [
            (
                ShareDetector::host(),
                "host work takes 25% of wall time on rank 0",
            ),
            (
                ShareDetector::wait(),
                "waiting takes 15% of wall time on rank 0",
            ),
            (
                ShareDetector::idle(),
                "idle time (no op running) takes 30% of wall time on rank 0",
            ),
        ] {
            let f = detect(&d, &t);
            assert_eq!(f.len(), 1, "{d:?}");
            assert_eq!(f[0].summary, summary);
            assert_eq!(f[0].level, Level::Warning);
        }
        assert!(detect(&ShareDetector::compute(), &t).is_empty());
        assert!(detect(&ShareDetector::communication(), &t).is_empty());
        // Only idle time is placed on the timeline: the gap from 70 to 100 ns.
        let idle = detect(&ShareDetector::idle(), &t);
        let gaps: Vec<(i64, u64)> = idle[0]
            .stretches
            .iter()
            .map(|s| (s.start_ns, s.duration_ns))
            .collect();
        assert_eq!(gaps, [(70, 30)]);
        assert!(detect(&ShareDetector::host(), &t)[0].stretches.is_empty());
    }
}
