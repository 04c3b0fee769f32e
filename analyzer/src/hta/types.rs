//! HTA's kernel-time breakdown by type: the time the computation, communication and memory
//! kernels of a rank run, each instant counted once under the set of types running then
//! ("COMPUTATION overlapping COMMUNICATION" when both are).

use super::clean::Kernel;
use super::kernel_type::KernelType;
use super::merge;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The time during which exactly these types ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypeTime {
    /// Non-empty, in HTA's order (computation, communication, memory).
    pub types: Vec<KernelType>,
    pub time_ns: i64,
}

impl TypeTime {
    /// HTA's label: `COMPUTATION`, `COMPUTATION overlapping MEMORY`, ...
    pub fn label(&self) -> String {
        let names: Vec<&str> = self.types.iter().map(|t| t.hta_name()).collect();
        names.join(" overlapping ")
    }
}

/// One rank's time per set of types running together, most time first.
pub fn type_breakdown(kernels: &[Kernel]) -> Vec<TypeTime> {
    // Events: (time, type bit, +1 at a start, -1 at an end) over each type's merged groups.
    let mut events: Vec<(i64, usize, i32)> = Vec::new();
    for (bit, ty) in KernelType::COUNTED.iter().enumerate() {
        let spans = kernels
            .iter()
            .filter(|k| k.kernel_type == *ty)
            .map(|k| (k.start_ns, k.end_ns))
            .collect();
        for (start, end) in merge::proper(&merge::merge(spans)) {
            events.push((start, bit, 1));
            events.push((end, bit, -1));
        }
    }
    events.sort_unstable();
    let mut running = [0i32; 3];
    let mut by_mask: BTreeMap<u8, i64> = BTreeMap::new();
    let mut i = 0;
    while i < events.len() {
        let now = events[i].0;
        while events.get(i).is_some_and(|e| e.0 == now) {
            running[events[i].1] += events[i].2;
            i += 1;
        }
        let mask = running
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .fold(0u8, |m, (bit, _)| m | 1 << bit);
        if let (Some(next), true) = (events.get(i), mask != 0) {
            let slot = by_mask.entry(mask).or_default();
            *slot = slot.saturating_add(next.0.saturating_sub(now));
        }
    }
    sorted(by_mask.into_iter())
}

/// One entry's share of all the kernel time in `all`, in percent; `None` when there is none.
pub fn share_pct(all: &[TypeTime], one: &TypeTime) -> Option<f64> {
    let all_ns: f64 = all.iter().map(|t| t.time_ns as f64).sum();
    (all_ns > 0.0).then(|| one.time_ns as f64 / all_ns * 100.0)
}

/// Sums the breakdowns of several ranks.
pub fn total(ranks: &[Vec<TypeTime>]) -> Vec<TypeTime> {
    let mut by_mask: BTreeMap<u8, i64> = BTreeMap::new();
    for t in ranks.iter().flatten() {
        let slot = by_mask.entry(mask_of(&t.types)).or_default();
        *slot = slot.saturating_add(t.time_ns);
    }
    sorted(by_mask.into_iter())
}

fn mask_of(types: &[KernelType]) -> u8 {
    KernelType::COUNTED
        .iter()
        .enumerate()
        .filter(|(_, t)| types.contains(t))
        .fold(0, |m, (bit, _)| m | 1 << bit)
}

fn sorted(by_mask: impl Iterator<Item = (u8, i64)>) -> Vec<TypeTime> {
    let mut out: Vec<TypeTime> = by_mask
        .filter(|(_, time_ns)| *time_ns > 0)
        .map(|(mask, time_ns)| TypeTime {
            types: KernelType::COUNTED
                .iter()
                .enumerate()
                .filter(|(bit, _)| mask & (1 << bit) != 0)
                .map(|(_, t)| *t)
                .collect(),
            time_ns,
        })
        .collect();
    out.sort_by_key(|t| std::cmp::Reverse(t.time_ns));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use KernelType::*;

    fn k(kernel_type: KernelType, start_ns: i64, end_ns: i64) -> Kernel {
        Kernel::on_stream_7(kernel_type, start_ns, end_ns)
    }

    #[test]
    fn each_instant_counts_once_under_the_types_running() {
        let kernels = [
            k(Computation, 0, 100),
            k(Computation, 50, 120),
            k(Communication, 100, 200),
            k(Memory, 150, 160),
            k(Other, 0, 1000),
        ];
        let got: Vec<(String, i64)> = type_breakdown(&kernels)
            .iter()
            .map(|t| (t.label(), t.time_ns))
            .collect();
        let want = [
            ("COMPUTATION", 100),
            ("COMMUNICATION", 70),
            ("COMPUTATION overlapping COMMUNICATION", 20),
            ("COMMUNICATION overlapping MEMORY", 10),
        ];
        let want: Vec<(String, i64)> = want.iter().map(|(l, t)| (l.to_string(), *t)).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn ranks_add_up_by_set_of_types() {
        let a = type_breakdown(&[k(Computation, 0, 10), k(Memory, 20, 50)]);
        let b = type_breakdown(&[k(Computation, 0, 40)]);
        let sum = total(&[a, b]);
        assert_eq!(sum[0].types, [Computation]);
        assert_eq!(sum[0].time_ns, 50);
        assert_eq!(sum[1].time_ns, 30);
    }
}
