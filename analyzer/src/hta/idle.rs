//! HTA's idle-time breakdown of one rank, per stream.
//!
//! Each gap between consecutive kernels of a stream (in start order) is idle time of one kind:
//! - host wait: the runtime call that launched the next kernel started after the previous
//!   kernel ended, so the host was not queueing work fast enough;
//! - kernel wait: otherwise, a gap shorter than the threshold (HTA's default, 30 us), the
//!   cost of launching kernels back to back;
//! - other: every other gap.
//!
//! Only kernels, copies and fills count (not synchronizations), as in HTA.

use super::clean::Kernel;
use serde::{Deserialize, Serialize};

/// HTA's default threshold between kernel wait and other idle time.
pub const KERNEL_WAIT_THRESHOLD_NS: i64 = 30_000;

/// The idle time of one kind on one stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleShare {
    /// Summed gaps; a negative gap (kernels that overlap on one stream) lowers it, as in HTA.
    pub time_ns: i64,
    pub gaps: u64,
}

/// One stream's idle time by kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamIdle {
    pub stream: u32,
    pub kernels: u64,
    pub host_wait: IdleShare,
    pub kernel_wait: IdleShare,
    pub other: IdleShare,
}

impl StreamIdle {
    pub fn total_ns(&self) -> i64 {
        self.host_wait
            .time_ns
            .saturating_add(self.kernel_wait.time_ns)
            .saturating_add(self.other.time_ns)
    }

    /// A kind's share of the stream's idle time (0 to 1); `None` when the stream never idles.
    pub fn ratio(&self, share: &IdleShare) -> Option<f64> {
        let total = self.total_ns();
        (total != 0).then(|| share.time_ns as f64 / total as f64)
    }
}

/// The breakdown of each stream, in the order given.
pub fn idle_breakdown(kernels: &[Kernel], streams: &[u32], threshold_ns: i64) -> Vec<StreamIdle> {
    streams
        .iter()
        .filter_map(|&stream| {
            let on_stream: Vec<&Kernel> = kernels
                .iter()
                .filter(|k| k.stream == stream && k.is_work)
                .collect();
            (!on_stream.is_empty()).then(|| stream_idle(stream, &on_stream, threshold_ns))
        })
        .collect()
}

/// `kernels` are one stream's, sorted by start.
fn stream_idle(stream: u32, kernels: &[&Kernel], threshold_ns: i64) -> StreamIdle {
    let mut idle = StreamIdle {
        stream,
        kernels: kernels.len() as u64,
        host_wait: IdleShare::default(),
        kernel_wait: IdleShare::default(),
        other: IdleShare::default(),
    };
    for pair in kernels.windows(2) {
        let (prev_end_ns, next) = (pair[0].end_ns, pair[1]);
        let gap_ns = next.start_ns.saturating_sub(prev_end_ns);
        let share = if next.launch_ns.is_some_and(|l| l > prev_end_ns) {
            &mut idle.host_wait
        } else if gap_ns < threshold_ns {
            &mut idle.kernel_wait
        } else {
            &mut idle.other
        };
        share.time_ns = share.time_ns.saturating_add(gap_ns);
        share.gaps += 1;
    }
    idle
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hta::kernel_type::KernelType;

    fn k(stream: u32, start_ns: i64, end_ns: i64, launch_ns: Option<i64>) -> Kernel {
        Kernel {
            stream,
            kernel_type: KernelType::Computation,
            is_work: true,
            start_ns,
            end_ns,
            launch_ns,
        }
    }

    #[test]
    fn gaps_are_host_wait_kernel_wait_or_other() {
        let kernels = [
            k(7, 0, 100, Some(0)),
            k(7, 150_000, 160_000, Some(120_000)), // launched after the previous end: host
            k(7, 170_000, 180_000, Some(100)),     // 10 us gap: kernel wait
            k(7, 280_000, 290_000, None),          // 100 us gap: other
            k(9, 0, 10, None),
        ];
        let idle = idle_breakdown(&kernels, &[7, 9], KERNEL_WAIT_THRESHOLD_NS);
        let s7 = idle[0];
        assert_eq!(
            s7.host_wait,
            IdleShare {
                time_ns: 149_900,
                gaps: 1
            }
        );
        assert_eq!(
            s7.kernel_wait,
            IdleShare {
                time_ns: 10_000,
                gaps: 1
            }
        );
        assert_eq!(
            s7.other,
            IdleShare {
                time_ns: 100_000,
                gaps: 1
            }
        );
        assert_eq!(s7.total_ns(), 259_900);
        assert_eq!(idle[1].total_ns(), 0);
        assert_eq!(idle[1].ratio(&idle[1].other), None);
    }

    #[test]
    fn synchronizations_are_not_idle_breakdown_kernels() {
        let mut sync = k(7, 50, 60, None);
        sync.is_work = false;
        let idle = idle_breakdown(&[k(7, 0, 10, None), sync], &[7], KERNEL_WAIT_THRESHOLD_NS);
        assert_eq!(idle[0].kernels, 1);
        assert!(idle_breakdown(&[sync], &[7], 1).is_empty());
    }
}
