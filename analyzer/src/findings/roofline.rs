//! Memory-bandwidth-bound: ops left of the roofline's ridge (too few flops per byte to keep the
//! cores busy) take a large share of a rank's time. Needs the host's calibration; without it
//! no op has a roofline class and this detector stays silent.

use super::{
    Detector, Finding, FindingKind, Level, Location, mean, nodes_of, ranks_phrase, severity,
};
use crate::analysis::AnalysisInput;
use crate::roofline::RooflineClass;
use std::collections::BTreeMap;

/// Memory-bound ops taking at least this share of a rank's wall time make a finding.
const MEMORY_BOUND_PCT: f64 = 30.0;

#[derive(Clone, Copy, Debug)]
pub struct MemoryBandwidthBound;

/// One rank's memory-bound ops: their share of its wall time and how close they come to the
/// bandwidth roof (weighted by time).
struct Bound {
    rank: u32,
    share_pct: f64,
    roof_pct: f64,
}

impl Detector for MemoryBandwidthBound {
    fn kind(&self) -> FindingKind {
        FindingKind::MemoryBandwidthBound
    }

    fn detect(&self, input: &AnalysisInput<'_>) -> Vec<Finding> {
        let bound: Vec<Bound> = input.ranks.iter().filter_map(memory_bound).collect();
        let flagged: Vec<&Bound> = bound
            .iter()
            .filter(|b| b.share_pct >= MEMORY_BOUND_PCT)
            .collect();
        let Some(share_mean) = mean(&flagged.iter().map(|b| b.share_pct).collect::<Vec<_>>())
        else {
            return Vec::new();
        };
        let roof_mean =
            mean(&flagged.iter().map(|b| b.roof_pct).collect::<Vec<_>>()).unwrap_or(0.0);
        let ranks: Vec<u32> = flagged.iter().map(|b| b.rank).collect();
        let ops = memory_bound_ops(input, &ranks);
        let evidence = [
            ("memory_bound_pct_mean", share_mean),
            ("roof_pct_mean", roof_mean),
            ("ranks_flagged", ranks.len() as f64),
            ("ranks_measured", input.ranks.len() as f64),
            ("threshold_pct", MEMORY_BOUND_PCT),
        ];
        vec![Finding {
            kind: FindingKind::MemoryBandwidthBound,
            level: Level::Info,
            severity: severity(share_mean / 100.0),
            summary: format!(
                "memory-bound ops take {share_mean:.0}% of wall time on {}, at {roof_mean:.0}% \
                 of the bandwidth roof",
                ranks_phrase(&ranks, input.ranks.len())
            ),
            location: Location {
                nodes: nodes_of(input, &ranks),
                ranks,
                ops,
                ..Location::default()
            },
            evidence: evidence
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
            suggestion: "move fewer bytes per token: store weights in bf16 or smaller, batch more \
                         tokens per step so each weight read serves more of them (more flops per \
                         byte), and fuse ops that read the same activations again"
                .to_string(),
            stretches: Vec::new(),
        }]
    }
}

/// A rank's memory-bound ops, when it has any.
fn memory_bound(rank: &crate::analysis::RankReport) -> Option<Bound> {
    let ops: Vec<(f64, f64)> = rank
        .top_ops
        .iter()
        .filter_map(|op| {
            let roofline = op.roofline?;
            (roofline.class == RooflineClass::MemoryBound)
                .then_some((op.share_pct, roofline.roof_pct))
        })
        .collect();
    let share_pct: f64 = ops.iter().map(|(share, _)| share).sum();
    (share_pct > 0.0).then(|| Bound {
        rank: rank.rank,
        share_pct,
        roof_pct: ops.iter().map(|(share, roof)| share * roof).sum::<f64>() / share_pct,
    })
}

/// The memory-bound ops of the given ranks, by total share, largest first.
fn memory_bound_ops(input: &AnalysisInput<'_>, ranks: &[u32]) -> Vec<String> {
    let mut shares: BTreeMap<&str, f64> = BTreeMap::new();
    for rank in input.ranks.iter().filter(|r| ranks.contains(&r.rank)) {
        for op in &rank.top_ops {
            if op
                .roofline
                .is_some_and(|r| r.class == RooflineClass::MemoryBound)
            {
                *shares.entry(op.name.as_str()).or_default() += op.share_pct;
            }
        }
    }
    let mut ops: Vec<(&str, f64)> = shares.into_iter().collect();
    ops.sort_by(|a, b| b.1.total_cmp(&a.1));
    ops.into_iter().map(|(name, _)| name.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::RunFacts;
    use crate::roofline::OpRoofline;
    use crate::testkit;

    fn roofline(class: RooflineClass, roof_pct: f64) -> Option<OpRoofline> {
        Some(OpRoofline {
            arithmetic_intensity: 0.5,
            roof_gflops: 10.0,
            roof_pct,
            class,
        })
    }

    #[test]
    fn memory_bound_ops_over_the_threshold_make_an_info_finding() {
        let timeline = testkit::healthy_timeline(2);
        let facts = RunFacts::default();
        let mut input = AnalysisInput::new(&timeline, &facts);
        assert!(
            MemoryBandwidthBound.detect(&input).is_empty(),
            "no calibration, no finding"
        );
        let rank = &mut input.ranks[0];
        rank.top_ops[0].share_pct = 40.0;
        rank.top_ops[0].roofline = roofline(RooflineClass::MemoryBound, 80.0);
        let [finding] = &MemoryBandwidthBound.detect(&input)[..] else {
            panic!("one finding expected")
        };
        assert_eq!(
            (finding.level, finding.location.ranks.clone()),
            (Level::Info, vec![0])
        );
        assert_eq!(finding.evidence["memory_bound_pct_mean"], 40.0);
        assert_eq!(finding.evidence["roof_pct_mean"], 80.0);
        input.ranks[0].top_ops[0].roofline = roofline(RooflineClass::ComputeBound, 80.0);
        assert!(MemoryBandwidthBound.detect(&input).is_empty());
    }
}
