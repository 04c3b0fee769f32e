//! The host-bound finding cites the run's phases: in which phase (startup, prefill, decode,
//! mixed, steps, idle) its ranks' host time lies, the host share of their time there, and the
//! CPU utilization of their nodes over it. The phases are built after the detectors run (they
//! need the run's requests, not only the timeline), so this adds to the finding afterwards.
//!
//! Host time is counted as the breakdown counts it: time a host span covers while no compute,
//! communication or memory span does. Spans are sorted by start, so each union is one pass.

use super::{Finding, FindingKind, keep_longest};
use crate::intervals::{Interval, overlap_ns};
use crate::phases::{PhaseKind, PhaseReport};
use crate::timeline::{TimedSpan, Timeline};
use pinch_traces::{Category, Rank};
use rayon::prelude::*;
use std::collections::BTreeSet;

/// The counter and device names CPU utilization is read from (as the phases read them).
const CPU_COUNTER: &str = "cpu.utilization";
const CPU_DEVICE_PREFIX: &str = "cpu";

/// What to do when the host time is mostly startup: it is no part of serving.
const STARTUP_SUGGESTION: &str = "most of the host time is startup (loading or generating the \
    weights), which a longer run amortizes: measure a longer run (more requests), or load \
    weights from safetensors (--weights) rather than generating them";

/// Adds to every host-bound finding the phase its ranks' host time concentrates in, with
/// per-phase evidence; leaves the finding as it is when the run has no phases.
pub fn cite_phases(findings: &mut [Finding], timeline: &Timeline, phases: &[PhaseReport]) {
    for finding in findings
        .iter_mut()
        .filter(|f| f.kind == FindingKind::HostBound)
    {
        let split = PhaseSplit::of(timeline, &finding.location.ranks, phases);
        if let Some(top) = split.top() {
            cite(finding, timeline, &split, top);
        }
    }
}

/// The flagged ranks' host time and time in each phase.
#[derive(Debug)]
struct PhaseSplit<'p> {
    /// Per phase: the phase, the ranks' host time in it and their time in it, summed.
    phases: Vec<(&'p PhaseReport, u64, u64)>,
}

impl<'p> PhaseSplit<'p> {
    fn of(timeline: &Timeline, ranks: &[u32], phases: &'p [PhaseReport]) -> PhaseSplit<'p> {
        let stretches: Vec<Vec<Interval>> = phases.iter().map(stretches_of).collect();
        // Ranks are independent: each is one pass over its own spans, on its own thread.
        let per_rank: Vec<Vec<(u64, u64)>> = ranks
            .par_iter()
            .map(|&rank| rank_split(timeline.spans_of(Rank(rank)), &stretches))
            .collect();
        let mut split: Vec<(&PhaseReport, u64, u64)> = phases.iter().map(|p| (p, 0, 0)).collect();
        for rank in &per_rank {
            for ((_, host_ns, rank_ns), (host, time)) in split.iter_mut().zip(rank) {
                *host_ns += host;
                *rank_ns += time;
            }
        }
        PhaseSplit { phases: split }
    }

    fn host_ns(&self) -> u64 {
        self.phases.iter().map(|p| p.1).sum()
    }

    /// The phase holding the most host time; `None` when there is none.
    fn top(&self) -> Option<(&'p PhaseReport, u64, u64)> {
        let top = self.phases.iter().max_by_key(|p| p.1).copied()?;
        (top.1 > 0).then_some(top)
    }
}

/// One rank's host time and time in each phase (all zero for a rank without spans).
fn rank_split(spans: &[TimedSpan], stretches: &[Vec<Interval>]) -> Vec<(u64, u64)> {
    let Some(extent) = extent(spans) else {
        return vec![(0, 0); stretches.len()];
    };
    let host = exclusive_host(spans);
    stretches
        .iter()
        .map(|own| (overlap_ns(&host, own), overlap_ns(&[extent], own)))
        .collect()
}

fn stretches_of(phase: &PhaseReport) -> Vec<Interval> {
    let ends = |s: &crate::phases::Stretch| {
        let duration = i64::try_from(s.duration_ns).unwrap_or(i64::MAX);
        (s.start_ns, s.start_ns.saturating_add(duration))
    };
    phase.stretches.iter().map(ends).collect()
}

/// A rank's first span start and last span end.
fn extent(spans: &[TimedSpan]) -> Option<Interval> {
    let start = spans.first()?.start_ns;
    let end = spans.iter().map(TimedSpan::end_ns).max()?;
    Some((start, end))
}

/// Host time no compute, communication or memory span overlaps: sorted, disjoint intervals.
fn exclusive_host(spans: &[TimedSpan]) -> Vec<Interval> {
    let host = sorted_union(spans, |c| c == Category::Host);
    let above = sorted_union(spans, |c| {
        matches!(
            c,
            Category::Compute | Category::Communication | Category::Memory
        )
    });
    minus(&host, &above)
}

/// The union of the spans of the categories `keep` selects; the spans are sorted by start.
fn sorted_union(spans: &[TimedSpan], keep: impl Fn(Category) -> bool) -> Vec<Interval> {
    let mut union: Vec<Interval> = Vec::new();
    for span in spans.iter().filter(|s| keep(s.category)) {
        let (start, end) = (span.start_ns, span.end_ns());
        match union.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ if end > start => union.push((start, end)),
            _ => {}
        }
    }
    union
}

/// `a` without the time `b` covers; both sorted and disjoint.
fn minus(a: &[Interval], b: &[Interval]) -> Vec<Interval> {
    let mut out = Vec::with_capacity(a.len());
    let mut j = 0;
    for &(start, end) in a {
        let mut from = start;
        // Intervals of `b` that end before this one starts end before every later one too.
        while b.get(j).is_some_and(|x| x.1 <= from) {
            j += 1;
        }
        for &(b_start, b_end) in b[j..].iter().take_while(|x| x.0 < end) {
            if b_start > from {
                out.push((from, b_start));
            }
            from = from.max(b_end);
        }
        if from < end {
            out.push((from, end));
        }
    }
    out
}

/// The summary's clause and the evidence: every phase's host share, the top phase's CPU.
fn cite(
    finding: &mut Finding,
    timeline: &Timeline,
    split: &PhaseSplit<'_>,
    (phase, host_ns, rank_ns): (&PhaseReport, u64, u64),
) {
    let pct = |part: u64, whole: u64| crate::stats::pct(part as f64, whole as f64);
    for (p, host, rank) in &split.phases {
        let name = p.kind.name();
        let mut put = |key: String, value: Option<f64>| {
            if let Some(v) = value {
                finding.evidence.insert(key, v);
            }
        };
        put(format!("{name}_host_pct"), pct(*host, *rank));
        put(
            format!("{name}_host_share_pct"),
            pct(*host, split.host_ns()),
        );
        put(format!("{name}_host_ns"), Some(*host as f64));
        put(
            format!("{name}_cpu_utilization_pct"),
            cpu_pct(p, &finding.location.nodes),
        );
    }
    finding.stretches = keep_longest(phase.stretches.clone());
    let cores = cpu_cores(timeline, &finding.location.nodes);
    if let Some(cores) = cores {
        finding.evidence.insert("cpu_cores".into(), cores as f64);
    }
    finding.summary += &format!(
        "; host time concentrates in {} ({:.0}% of it): host {:.0}% of rank time there",
        phase.kind.name(),
        pct(host_ns, split.host_ns()).unwrap_or(0.0),
        pct(host_ns, rank_ns).unwrap_or(0.0),
    );
    if phase.kind == PhaseKind::Startup {
        finding.suggestion = STARTUP_SUGGESTION.to_string();
    }
    if let Some(cpu) = cpu_pct(phase, &finding.location.nodes) {
        finding.summary += &format!(", CPU {cpu:.0}%");
        if let Some(cores) = cores {
            finding.summary += &format!(" of {cores} cores");
        }
    }
}

/// The mean CPU utilization over the phase of the given nodes that have one.
fn cpu_pct(phase: &PhaseReport, nodes: &[u32]) -> Option<f64> {
    let values: Vec<f64> = phase
        .nodes
        .iter()
        .filter(|n| nodes.contains(&n.node))
        .filter_map(|n| n.cpu_utilization_pct)
        .collect();
    super::mean(&values)
}

/// The most cores one of the given nodes reports utilization for.
fn cpu_cores(timeline: &Timeline, nodes: &[u32]) -> Option<usize> {
    nodes
        .iter()
        .map(|&node| {
            let cores: BTreeSet<&str> = timeline
                .series
                .iter()
                .filter(|s| s.node.0 == node && s.counter == CPU_COUNTER)
                .filter(|s| s.device.starts_with(CPU_DEVICE_PREFIX))
                .map(|s| s.device.as_str())
                .collect();
            cores.len()
        })
        .max()
        .filter(|n| *n > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::{Detector, Level, ShareDetector};
    use crate::intervals::length_ns;
    use crate::phases::{NodePhase, Stretch};
    use crate::testkit::{span, timeline};
    use crate::timeline::Series;
    use Category::*;
    use pinch_traces::{NodeId, Unit};

    fn phase(kind: PhaseKind, start_ns: i64, duration_ns: u64, cpu: Option<f64>) -> PhaseReport {
        PhaseReport {
            kind,
            duration_ns,
            share_pct: None,
            steps: 0,
            stretches: vec![Stretch {
                start_ns,
                duration_ns,
            }],
            nodes: vec![NodePhase {
                node: 0,
                cpu_utilization_pct: cpu,
                gpu_utilization_pct: None,
                memory_bandwidth_pct: None,
                memory_bandwidth_missing: None,
                nic_rx_bytes_per_s: None,
                nic_tx_bytes_per_s: None,
                nic_link_pct: None,
            }],
        }
    }

    fn cpu_series(device: &str) -> Series {
        Series {
            node: NodeId(0),
            counter: CPU_COUNTER.into(),
            unit: Some(Unit::Percent),
            device: device.into(),
            times_ns: vec![0, 1_000],
            values: vec![90.0, 90.0],
        }
    }

    /// Rank 0: a prefill phase (0-1000) of compute with 100 ns of host, then a decode phase
    /// (1000-2000) with 600 ns of host, 100 of them under a compute span.
    fn host_heavy() -> Timeline {
        let mut t = timeline(vec![
            span(0, Compute, 0, 900),
            span(0, Host, 900, 100),
            span(0, Host, 1_000, 600),
            span(0, Compute, 1_500, 500),
        ]);
        t.series = vec![cpu_series("cpu0"), cpu_series("cpu1")];
        t
    }

    #[test]
    fn the_host_bound_finding_names_the_phase_its_host_time_lies_in() {
        let t = host_heavy();
        let facts = crate::facts::RunFacts::from_timeline(&t);
        let mut findings = ShareDetector::host().detect(&crate::AnalysisInput::new(&t, &facts));
        let phases = [
            phase(PhaseKind::Prefill, 0, 1_000, Some(40.0)),
            phase(PhaseKind::Decode, 1_000, 1_000, Some(98.0)),
        ];
        cite_phases(&mut findings, &t, &phases);
        let [f] = &findings[..] else {
            panic!("one host-bound finding expected: {findings:#?}")
        };
        assert_eq!(f.level, Level::Warning);
        // Host 600 of 2000 ns in all: 100 in prefill, 500 in decode (100 lies under compute).
        assert_eq!(
            f.summary,
            "host work takes 30% of wall time on rank 0; host time concentrates in decode (83% \
             of it): host 50% of rank time there, CPU 98% of 2 cores"
        );
        assert_eq!(f.evidence["decode_host_pct"], 50.0);
        assert_eq!(f.evidence["prefill_host_pct"], 10.0);
        assert_eq!(f.evidence["decode_host_ns"], 500.0);
        assert_eq!(f.evidence["decode_cpu_utilization_pct"], 98.0);
        assert_eq!(f.evidence["cpu_cores"], 2.0);
        // On the timeline: the decode phase.
        assert_eq!(f.stretches, phases[1].stretches);
    }

    #[test]
    fn host_time_in_startup_gets_its_own_suggestion() {
        let t = host_heavy();
        let facts = crate::facts::RunFacts::from_timeline(&t);
        let mut findings = ShareDetector::host().detect(&crate::AnalysisInput::new(&t, &facts));
        let phases = [phase(PhaseKind::Startup, 0, 2_000, None)];
        cite_phases(&mut findings, &t, &phases);
        assert!(
            findings[0]
                .summary
                .ends_with("concentrates in startup (100% of it): host 30% of rank time there"),
            "{}",
            findings[0].summary
        );
        assert_eq!(findings[0].suggestion, STARTUP_SUGGESTION);
    }

    #[test]
    fn without_phases_the_finding_stays_as_it_was() {
        let t = host_heavy();
        let facts = crate::facts::RunFacts::from_timeline(&t);
        let mut findings = ShareDetector::host().detect(&crate::AnalysisInput::new(&t, &facts));
        let before = findings.clone();
        cite_phases(&mut findings, &t, &[]);
        assert_eq!(findings, before);
    }

    #[test]
    fn host_time_under_higher_categories_does_not_count() {
        let spans = [
            span(0, Host, 0, 100),
            span(0, Compute, 20, 10),
            span(0, Communication, 50, 60),
            span(0, Host, 200, 10),
        ];
        assert_eq!(exclusive_host(&spans), vec![(0, 20), (30, 50), (200, 210)]);
        assert_eq!(length_ns(&exclusive_host(&spans)), 50);
        assert_eq!(minus(&[(0, 10)], &[]), vec![(0, 10)]);
        assert_eq!(
            minus(&[(0, 10), (20, 30)], &[(5, 25)]),
            vec![(0, 5), (25, 30)]
        );
    }
}
