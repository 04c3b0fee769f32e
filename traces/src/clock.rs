//! Clock readings: spans are stamped with the node's monotonic clock, and each node records an
//! anchor (a monotonic and a wall-clock reading taken together) so times can cross machines.

use serde::{Deserialize, Serialize};

/// A monotonic and a wall-clock reading taken back to back on one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockAnchor {
    /// CLOCK_MONOTONIC, in nanoseconds.
    pub mono_ns: u64,
    /// CLOCK_REALTIME, in nanoseconds since the Unix epoch.
    pub wall_ns: u64,
    /// How long the two reads took together: the anchor's own uncertainty.
    pub read_uncertainty_ns: u64,
}

impl ClockAnchor {
    /// Reads both clocks, keeping the tightest of a few tries.
    pub fn now() -> ClockAnchor {
        let mut best: Option<ClockAnchor> = None;
        for _ in 0..5 {
            let before = monotonic_now_ns();
            let wall_ns = wall_now_ns();
            let after = monotonic_now_ns();
            let anchor = ClockAnchor {
                mono_ns: before + (after - before) / 2,
                wall_ns,
                read_uncertainty_ns: after - before,
            };
            if best.is_none_or(|b| anchor.read_uncertainty_ns < b.read_uncertainty_ns) {
                best = Some(anchor);
            }
        }
        best.unwrap_or(ClockAnchor {
            mono_ns: monotonic_now_ns(),
            wall_ns: wall_now_ns(),
            read_uncertainty_ns: 0,
        })
    }

    /// Maps a monotonic time of this anchor's node to wall-clock nanoseconds.
    pub fn to_wall_ns(&self, mono_ns: u64) -> i128 {
        self.wall_ns as i128 + (mono_ns as i128 - self.mono_ns as i128)
    }
}

/// The monotonic clock in nanoseconds (CLOCK_MONOTONIC: shared by every process of a host).
pub fn monotonic_now_ns() -> u64 {
    read_clock(libc::CLOCK_MONOTONIC)
}

/// The wall clock in nanoseconds since the Unix epoch.
pub fn wall_now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

fn read_clock(clock_id: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes into it.
    let rc = unsafe { libc::clock_gettime(clock_id, &mut ts) };
    debug_assert_eq!(rc, 0, "clock_gettime failed");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_clock_advances() {
        let a = monotonic_now_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = monotonic_now_ns();
        assert!(b - a >= 2_000_000, "{a} then {b}");
    }

    #[test]
    fn anchor_maps_monotonic_to_wall() {
        let anchor = ClockAnchor::now();
        let later_mono = anchor.mono_ns + 1_500;
        assert_eq!(
            anchor.to_wall_ns(later_mono),
            anchor.wall_ns as i128 + 1_500
        );
        let wall = wall_now_ns() as i128;
        assert!((anchor.to_wall_ns(monotonic_now_ns()) - wall).abs() < 50_000_000);
    }
}
