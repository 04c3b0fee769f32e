//! HTA's temporal breakdown and communication/computation overlap of one rank.
//!
//! Temporal: the span runs from the first kernel's start to the last kernel's end (all
//! streams); idle is the span less the time some kernel runs; compute is the time some
//! computation kernel runs; non-compute is the rest (communication, memory, other).
//! Overlap: the share of communication time during which computation also runs.

use super::clean::Kernel;
use super::kernel_type::KernelType;
use super::merge::{self, Span};
use crate::intervals;
use crate::stats::pct;
use serde::{Deserialize, Serialize};

/// Where a rank's kernel span goes, in nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TemporalBreakdown {
    pub span_ns: i64,
    pub idle_ns: i64,
    pub compute_ns: i64,
    pub non_compute_ns: i64,
}

impl TemporalBreakdown {
    pub fn idle_pct(&self) -> Option<f64> {
        self.share(self.idle_ns)
    }

    pub fn compute_pct(&self) -> Option<f64> {
        self.share(self.compute_ns)
    }

    pub fn non_compute_pct(&self) -> Option<f64> {
        self.share(self.non_compute_ns)
    }

    fn share(&self, ns: i64) -> Option<f64> {
        pct(ns as f64, self.span_ns as f64)
    }
}

/// The merged groups of the kernels of some types.
fn groups_of(kernels: &[Kernel], keep: impl Fn(KernelType) -> bool) -> Vec<Span> {
    let spans = kernels
        .iter()
        .filter(|k| keep(k.kernel_type))
        .map(|k| (k.start_ns, k.end_ns))
        .collect();
    merge::merge(spans)
}

/// The temporal breakdown; `None` for a rank without kernels.
pub fn temporal_breakdown(kernels: &[Kernel]) -> Option<TemporalBreakdown> {
    let all = groups_of(kernels, |_| true);
    let (first, last) = (all.first()?, all.last()?);
    let span_ns = last.1.saturating_sub(first.0);
    let idle_ns = span_ns.saturating_sub(merge::measure_ns(&all));
    let compute_ns = merge::measure_ns(&groups_of(kernels, |t| t == KernelType::Computation));
    Some(TemporalBreakdown {
        span_ns,
        idle_ns,
        compute_ns,
        non_compute_ns: span_ns.saturating_sub(compute_ns).saturating_sub(idle_ns),
    })
}

/// The percentage of communication time overlapped by computation; `None` without
/// communication.
pub fn comm_overlap_pct(kernels: &[Kernel]) -> Option<f64> {
    let comm = groups_of(kernels, |t| t == KernelType::Communication);
    let compute = groups_of(kernels, |t| t == KernelType::Computation);
    let shared_ns = intervals::overlap_ns(&merge::proper(&comm), &merge::proper(&compute));
    pct(shared_ns as f64, merge::measure_ns(&comm) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use KernelType::*;

    fn kernel(kernel_type: KernelType, start_ns: i64, end_ns: i64) -> Kernel {
        Kernel::on_stream_7(kernel_type, start_ns, end_ns)
    }

    #[test]
    fn the_span_splits_into_idle_compute_and_the_rest() {
        let kernels = [
            kernel(Computation, 0, 100),
            kernel(Communication, 50, 150),
            kernel(Memory, 200, 220),
            kernel(Other, 300, 400),
        ];
        let t = temporal_breakdown(&kernels).unwrap();
        assert_eq!(
            t,
            TemporalBreakdown {
                span_ns: 400,
                idle_ns: 400 - 150 - 20 - 100,
                compute_ns: 100,
                non_compute_ns: 170,
            }
        );
        assert_eq!(t.compute_pct(), Some(25.0));
        assert_eq!(temporal_breakdown(&[]), None);
    }

    #[test]
    fn overlap_is_the_share_of_communication_under_computation() {
        let kernels = [
            kernel(Communication, 0, 100),
            kernel(Computation, 50, 150),
            kernel(Computation, 60, 70),
            kernel(Memory, 0, 100),
        ];
        assert_eq!(comm_overlap_pct(&kernels), Some(50.0));
        assert_eq!(comm_overlap_pct(&kernels[1..]), None);
    }
}
