//! Where a rank's time goes: exclusive shares of its wall time by category.
//!
//! Spans of one rank overlap (lanes, nested spans, communication overlapped with compute). Each
//! instant of the rank's wall time counts once, for the highest-precedence category active then
//! (compute > communication > memory > host > wait), or as idle when no span covers it. The parts
//! therefore sum to the wall time exactly.

use crate::intervals::{self, Interval};
use crate::stats::pct;
use crate::timeline::TimedSpan;
use pinch_traces::Category;
use serde::{Deserialize, Serialize};

/// Exclusive time per category, in nanoseconds; the fields sum to the rank's wall time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BreakdownNs {
    pub compute: u64,
    pub communication: u64,
    pub memory: u64,
    pub host: u64,
    pub wait: u64,
    /// Time inside the wall time that no span covers.
    pub idle: u64,
}

/// The same breakdown as percentages of the wall time; they sum to 100.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BreakdownPct {
    pub compute: f64,
    pub communication: f64,
    pub memory: f64,
    pub host: f64,
    pub wait: f64,
    pub idle: f64,
}

impl BreakdownNs {
    pub fn wall_ns(&self) -> u64 {
        self.compute + self.communication + self.memory + self.host + self.wait + self.idle
    }

    /// The exclusive time of one category.
    pub fn of(&self, category: Category) -> u64 {
        match category {
            Category::Compute => self.compute,
            Category::Communication => self.communication,
            Category::Memory => self.memory,
            Category::Host => self.host,
            Category::Wait => self.wait,
        }
    }

    fn add(&mut self, category: Option<Category>, ns: u64) {
        let slot = match category {
            Some(Category::Compute) => &mut self.compute,
            Some(Category::Communication) => &mut self.communication,
            Some(Category::Memory) => &mut self.memory,
            Some(Category::Host) => &mut self.host,
            Some(Category::Wait) => &mut self.wait,
            None => &mut self.idle,
        };
        *slot += ns;
    }

    /// Percentages of the wall time; `None` for a rank whose wall time is zero.
    pub fn to_pct(&self) -> Option<BreakdownPct> {
        let wall = self.wall_ns() as f64;
        let share = |ns: u64| pct(ns as f64, wall);
        Some(BreakdownPct {
            compute: share(self.compute)?,
            communication: share(self.communication)?,
            memory: share(self.memory)?,
            host: share(self.host)?,
            wait: share(self.wait)?,
            idle: share(self.idle)?,
        })
    }
}

/// Exclusive time per category over one rank's spans, from its first start to its last end.
pub fn breakdown(spans: &[TimedSpan]) -> BreakdownNs {
    // Events: at each time, how many spans of each category start (+1) or end (-1).
    let mut events: Vec<(i64, usize, i32)> = Vec::with_capacity(spans.len() * 2);
    for s in spans {
        let p = precedence(s.category);
        events.push((s.start_ns, p, 1));
        events.push((s.end_ns(), p, -1));
    }
    events.sort_unstable();
    let mut active = [0i32; Category::ALL.len()];
    let mut out = BreakdownNs::default();
    let mut i = 0;
    while i < events.len() {
        let now = events[i].0;
        while i < events.len() && events[i].0 == now {
            active[events[i].1] += events[i].2;
            i += 1;
        }
        if let Some(next) = events.get(i) {
            let top = active.iter().position(|n| *n > 0).map(|p| Category::ALL[p]);
            out.add(top, next.0.abs_diff(now));
        }
    }
    out
}

/// A category's place in the order of precedence: 0 wins over 1, and so on.
fn precedence(category: Category) -> usize {
    Category::ALL
        .iter()
        .position(|c| *c == category)
        .unwrap_or(Category::ALL.len() - 1)
}

/// The union of one category's spans.
pub fn covered(spans: &[TimedSpan], category: Category) -> Vec<Interval> {
    intervals::union(
        spans
            .iter()
            .filter(|s| s.category == category)
            .map(|s| (s.start_ns, s.end_ns()))
            .collect(),
    )
}

/// HTA's communication overlap: the share of communication time during which compute also ran.
/// `None` when the rank does no communication.
pub fn comm_overlap_pct(spans: &[TimedSpan]) -> Option<f64> {
    let comm = covered(spans, Category::Communication);
    let compute = covered(spans, Category::Compute);
    pct(
        intervals::overlap_ns(&comm, &compute) as f64,
        intervals::length_ns(&comm) as f64,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::span;
    use Category::*;

    #[test]
    fn overlapping_time_counts_once_by_precedence() {
        let spans = [
            span(0, Compute, 0, 100),
            span(0, Communication, 50, 100), // 50..100 under compute: counts as compute
            span(0, Wait, 120, 20),          // under communication
            span(0, Host, 200, 50),
            span(0, Memory, 260, 40),
        ];
        let b = breakdown(&spans);
        assert_eq!(
            b,
            BreakdownNs {
                compute: 100,
                communication: 50,
                memory: 40,
                host: 50,
                wait: 0,
                idle: 50 + 10,
            }
        );
        assert_eq!(b.wall_ns(), 300);
    }

    #[test]
    fn percentages_sum_to_one_hundred() {
        let spans: Vec<TimedSpan> = (0..50)
            .map(|i| {
                let category = Category::ALL[i % 5];
                span(
                    0,
                    category,
                    (i as i64) * 40 + (i as i64 * 13) % 17,
                    5 + (i as u64 * 7) % 50,
                )
            })
            .collect();
        let p = breakdown(&spans).to_pct().unwrap_or_default();
        let sum = p.compute + p.communication + p.memory + p.host + p.wait + p.idle;
        assert!((sum - 100.0).abs() < 1e-9, "{p:?} sums to {sum}");
        assert!(p.idle > 0.0 && p.compute > 0.0);
    }

    #[test]
    fn zero_wall_time_has_no_percentages() {
        assert_eq!(breakdown(&[span(0, Compute, 5, 0)]).to_pct(), None);
        assert_eq!(breakdown(&[]).wall_ns(), 0);
    }

    #[test]
    fn comm_overlap_is_the_share_of_comm_under_compute() {
        let spans = [
            span(0, Communication, 0, 100),
            span(0, Compute, 50, 100),
            span(0, Compute, 60, 10),
        ];
        assert_eq!(comm_overlap_pct(&spans), Some(50.0));
        assert_eq!(comm_overlap_pct(&[span(0, Compute, 0, 10)]), None);
    }
}
