//! Idle time on a GPU: no kernel, copy or fill on any stream of a rank. On a device timeline
//! (PyTorch traces) a stream that idles while another runs is not idle time; a rank whose
//! streams all idle waits for its host to hand it work, which the CPU-rank wording of the
//! idle finding ("no span covers this time; add spans") would misread.

use super::share::idle_gaps;
use super::{Detector, Finding, FindingKind, Level, Location, mean, nodes_of, ranks_phrase};
use crate::analysis::AnalysisInput;
use std::collections::BTreeMap;

/// Flags ranks whose devices sit idle for at least `GPU_IDLE_WARN_PCT` of their kernel span.
#[derive(Clone, Copy, Debug)]
pub struct GpuIdle;

/// The share of the kernel span, in percent, at which device idle time is worth a warning.
pub const GPU_IDLE_WARN_PCT: f64 = 20.0;

impl Detector for GpuIdle {
    fn kind(&self) -> FindingKind {
        FindingKind::Idle
    }

    fn detect(&self, input: &AnalysisInput<'_>) -> Vec<Finding> {
        let measured: Vec<(u32, f64)> = input
            .measured_ranks()
            .map(|(r, b)| (r.rank, b.idle as f64 / b.wall_ns() as f64 * 100.0))
            .collect();
        let flagged: Vec<(u32, f64)> = measured
            .iter()
            .copied()
            .filter(|(_, pct)| *pct >= GPU_IDLE_WARN_PCT)
            .collect();
        let pcts: Vec<f64> = flagged.iter().map(|(_, p)| *p).collect();
        let Some(mean_pct) = mean(&pcts) else {
            return Vec::new();
        };
        let max_pct = pcts.iter().copied().fold(0.0, f64::max);
        let ranks: Vec<u32> = flagged.iter().map(|(r, _)| *r).collect();
        let stretches = idle_gaps(input.timeline, &ranks);
        vec![Finding {
            kind: FindingKind::Idle,
            level: Level::Warning,
            severity: super::severity(mean_pct / 100.0),
            summary: format!(
                "the GPU runs no kernel, copy or fill on any stream for {mean_pct:.0}% of the \
                 kernel span on {}",
                ranks_phrase(&ranks, measured.len())
            ),
            location: Location {
                nodes: nodes_of(input, &ranks),
                ranks,
                ..Location::default()
            },
            evidence: BTreeMap::from([
                ("idle_pct_mean".to_string(), mean_pct),
                ("idle_pct_max".to_string(), max_pct),
                ("threshold_pct".to_string(), GPU_IDLE_WARN_PCT),
                ("ranks_flagged".to_string(), flagged.len() as f64),
                ("ranks_measured".to_string(), measured.len() as f64),
            ]),
            suggestion: "the GPU waits for its host: look at what the CPU does in the gaps \
                (HTA's idle time table: host wait means the launch came late) and cut launch \
                overhead (CUDA graphs, fused or larger kernels), host synchronizations \
                (.item(), .cpu(), cudaStreamSynchronize) and data loading on the critical path"
                .to_string(),
            stretches,
        }]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::RunFacts;
    use crate::testkit::{span, timeline};
    use pinch_traces::Category::*;

    fn detect(spans: Vec<crate::timeline::TimedSpan>) -> Vec<Finding> {
        let t = timeline(spans);
        let facts = RunFacts::from_timeline(&t);
        GpuIdle.detect(&AnalysisInput::new(&t, &facts))
    }

    #[test]
    fn a_device_idle_for_half_its_span_is_flagged_with_its_share() {
        let findings = detect(vec![
            span(0, Compute, 0, 100),
            span(0, Compute, 200, 100),
            span(1, Compute, 0, 300),
        ]);
        let [f] = &findings[..] else {
            panic!("{findings:#?}");
        };
        assert_eq!(f.location.ranks, vec![0]);
        assert!((f.evidence["idle_pct_mean"] - 100.0 / 3.0).abs() < 1e-9);
        assert!(
            f.summary.contains("33% of the kernel span on rank 0"),
            "{}",
            f.summary
        );
        let gaps: Vec<(i64, u64)> = f
            .stretches
            .iter()
            .map(|s| (s.start_ns, s.duration_ns))
            .collect();
        assert_eq!(gaps, [(100, 100)]);
    }

    #[test]
    fn a_busy_device_is_not_flagged() {
        assert!(detect(vec![span(0, Compute, 0, 100), span(0, Memory, 105, 100)]).is_empty());
    }
}
