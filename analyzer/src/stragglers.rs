//! Stragglers, collective by collective: for each (communicator, sequence number), who arrived
//! last, by how much, and what that cost the others; then per rank, how often it was last and
//! what its lateness cost its peers in all.
//!
//! Only kinds whose participants all wait for the last arrival count (all-reduce, all-gather,
//! reduce-scatter, all-to-all): at a broadcast or a pipeline send the receivers wait for data, not
//! for a late peer. The cost of one collective's last arrival is the waiting it alone caused:
//! had it arrived with the rank before it, each other participant would have waited its
//! lateness less.

use crate::collectives::{arrivals_by_seq, releases_together};
use crate::timeline::{TimedSpan, Timeline};
use pinch_traces::{CollectiveKind, Rank};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How many of the costliest collectives `StragglerReport` keeps.
pub const COSTLIEST_KEPT: usize = 10;

/// One collective's last arrival.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SeqLateness {
    pub kind: CollectiveKind,
    pub group: u32,
    pub seq: u64,
    /// The ranks seen taking part, in order.
    pub ranks: Vec<u32>,
    /// The rank that arrived after every other; `None` when the last two arrived together.
    pub last_rank: Option<u32>,
    /// How much later than the rank before it the last rank arrived (0 when they tied).
    pub lateness_ns: u64,
    /// The others' waiting it caused: (ranks − 1) × `lateness_ns`.
    pub cost_ns: u64,
    /// When the last rank arrived (timeline ns); the others waited the `lateness_ns` before.
    #[serde(default)]
    pub last_arrival_ns: i64,
}

/// How one rank arrived at the collectives it took part in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankLateness {
    pub rank: u32,
    /// Collectives it took part in that were seen on two ranks or more.
    pub collectives: u64,
    /// Of those, how many it arrived at after every other rank.
    pub times_last: u64,
    /// `times_last` over `collectives`, in percent; `None` without collectives.
    pub last_pct: Option<f64>,
    /// The share it would arrive last at if every participant were as likely to: the mean of
    /// 100 / participants over its collectives; `None` without collectives.
    pub fair_last_pct: Option<f64>,
    /// Its lateness when last, on average; `None` when it never was.
    pub mean_lateness_ns: Option<f64>,
    pub total_lateness_ns: u64,
    /// The others' waiting its lateness caused, summed over the collectives it was last at.
    pub cost_to_others_ns: u64,
    /// The waiting the other ranks' lateness caused it.
    pub waited_ns: u64,
}

/// Who the others waited for, over the whole run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StragglerReport {
    /// Collectives of the waiting kinds seen on two ranks or more.
    pub collectives: u64,
    /// Every rank that took part in one, in order.
    pub ranks: Vec<RankLateness>,
    /// The collectives whose last arrival cost the others most, costliest first (at most
    /// `COSTLIEST_KEPT`).
    pub costliest: Vec<SeqLateness>,
}

/// Every collective of the waiting kinds seen on two ranks or more, by (group, seq).
pub fn lateness_by_seq(timeline: &Timeline) -> Vec<SeqLateness> {
    let spans: Vec<&TimedSpan> = timeline
        .spans
        .iter()
        .filter(|s| {
            s.attrs
                .collective
                .is_some_and(|c| releases_together(c.kind))
        })
        .collect();
    let kinds = kinds_by_seq(&spans);
    arrivals_by_seq(&spans)
        .into_iter()
        .filter(|(_, starts)| starts.len() >= 2)
        .filter_map(|(key, starts)| Some(seq_lateness(*kinds.get(&key)?, key, &starts)))
        .collect()
}

/// Per (group, seq), the kind its last span in timeline order names.
fn kinds_by_seq(spans: &[&TimedSpan]) -> BTreeMap<(u32, u64), CollectiveKind> {
    let mut keyed: Vec<((u32, u64), usize, CollectiveKind)> = spans
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.attrs.collective.map(|c| ((c.group, c.seq), i, c.kind)))
        .collect();
    keyed.par_sort_unstable_by_key(|(key, i, _)| (*key, *i));
    keyed
        .chunk_by(|a, b| a.0 == b.0)
        .filter_map(|seq| seq.last().map(|(key, _, kind)| (*key, *kind)))
        .collect()
}

fn seq_lateness(
    kind: CollectiveKind,
    key: (u32, u64),
    starts: &BTreeMap<Rank, i64>,
) -> SeqLateness {
    let mut order: Vec<(i64, Rank)> = starts.iter().map(|(r, s)| (*s, *r)).collect();
    order.sort_unstable();
    let (last_start, last) = order[order.len() - 1];
    let before = order[order.len() - 2].0;
    let lateness_ns = last_start.abs_diff(before);
    SeqLateness {
        kind,
        group: key.0,
        seq: key.1,
        ranks: starts.keys().map(|r| r.0).collect(),
        last_rank: (lateness_ns > 0).then_some(last.0),
        lateness_ns,
        cost_ns: lateness_ns * (order.len() as u64 - 1),
        last_arrival_ns: last_start,
    }
}

/// Per rank, how it arrived; and the costliest collectives.
pub fn straggler_report(timeline: &Timeline) -> StragglerReport {
    let seqs = lateness_by_seq(timeline);
    let mut ranks: BTreeMap<u32, RankLateness> = BTreeMap::new();
    // Per rank, the sum over its collectives of its chance to be last, 1 / participants.
    let mut fair: BTreeMap<u32, f64> = BTreeMap::new();
    for seq in &seqs {
        for &rank in &seq.ranks {
            let r = ranks.entry(rank).or_insert_with(|| RankLateness::new(rank));
            r.collectives += 1;
            *fair.entry(rank).or_default() += 1.0 / seq.ranks.len() as f64;
            if seq.last_rank == Some(rank) {
                r.times_last += 1;
                r.total_lateness_ns += seq.lateness_ns;
                r.cost_to_others_ns += seq.cost_ns;
            } else {
                r.waited_ns += seq.lateness_ns;
            }
        }
    }
    let mut costliest: Vec<SeqLateness> = seqs.iter().filter(|s| s.cost_ns > 0).cloned().collect();
    costliest.sort_by_key(|s| (std::cmp::Reverse(s.cost_ns), s.group, s.seq));
    costliest.truncate(COSTLIEST_KEPT);
    StragglerReport {
        collectives: seqs.len() as u64,
        ranks: ranks
            .into_values()
            .map(|r| {
                let chances = fair.get(&r.rank).copied().unwrap_or(0.0);
                r.with_ratios(chances)
            })
            .collect(),
        costliest,
    }
}

impl RankLateness {
    fn new(rank: u32) -> RankLateness {
        RankLateness {
            rank,
            collectives: 0,
            times_last: 0,
            last_pct: None,
            fair_last_pct: None,
            mean_lateness_ns: None,
            total_lateness_ns: 0,
            cost_to_others_ns: 0,
            waited_ns: 0,
        }
    }

    /// Fills in the shares, given the sum of its chances to be last over its collectives.
    fn with_ratios(mut self, chances: f64) -> RankLateness {
        self.last_pct = crate::stats::pct(self.times_last as f64, self.collectives as f64);
        self.fair_last_pct = crate::stats::pct(chances, self.collectives as f64);
        self.mean_lateness_ns =
            (self.times_last > 0).then(|| self.total_lateness_ns as f64 / self.times_last as f64);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{collective, timeline};

    /// Three ranks at three all-reduces: rank 2 arrives 300 ns after rank 1 twice; all tie once.
    fn three_ranks() -> Timeline {
        let mut spans = Vec::new();
        for (seq, starts) in [
            (1, [0, 100, 400]),
            (2, [1_000, 1_000, 1_300]),
            (3, [2_000; 3]),
        ] {
            for (rank, start) in starts.into_iter().enumerate() {
                let mut s = collective(rank as u32, seq, start, 2_500 - start as u64 % 1_000, 64);
                if let Some(c) = s.attrs.collective.as_mut() {
                    c.participants = 3;
                }
                spans.push(s);
            }
        }
        timeline(spans)
    }

    #[test]
    fn each_collective_names_its_last_arrival_and_what_it_cost() {
        let seqs = lateness_by_seq(&three_ranks());
        let summary: Vec<(u64, Option<u32>, u64, u64)> = seqs
            .iter()
            .map(|s| (s.seq, s.last_rank, s.lateness_ns, s.cost_ns))
            .collect();
        assert_eq!(
            summary,
            vec![
                (1, Some(2), 300, 600),
                (2, Some(2), 300, 600),
                (3, None, 0, 0)
            ]
        );
        assert_eq!(seqs[0].ranks, vec![0, 1, 2]);
    }

    #[test]
    fn ranks_add_up_their_lateness_and_its_cost() {
        let report = straggler_report(&three_ranks());
        assert_eq!(report.collectives, 3);
        let late = &report.ranks[2];
        assert_eq!((late.collectives, late.times_last), (3, 2));
        assert!((late.last_pct.unwrap_or(0.0) - 200.0 / 3.0).abs() < 1e-9);
        assert!((late.fair_last_pct.unwrap_or(0.0) - 100.0 / 3.0).abs() < 1e-9);
        assert_eq!(late.mean_lateness_ns, Some(300.0));
        assert_eq!(
            (late.total_lateness_ns, late.cost_to_others_ns),
            (600, 1_200)
        );
        assert_eq!(late.waited_ns, 0);
        let early = &report.ranks[0];
        assert_eq!((early.times_last, early.last_pct), (0, Some(0.0)));
        assert_eq!((early.mean_lateness_ns, early.waited_ns), (None, 600));
        let costliest: Vec<u64> = report.costliest.iter().map(|s| s.seq).collect();
        assert_eq!(costliest, vec![1, 2]);
    }

    #[test]
    fn broadcasts_and_lone_collectives_are_left_out() {
        let mut spans = vec![
            collective(0, 1, 0, 100, 64),
            collective(1, 1, 50, 50, 64),
            collective(0, 2, 500, 100, 64),
        ];
        if let Some(c) = spans[0].attrs.collective.as_mut() {
            c.kind = CollectiveKind::Broadcast;
        }
        if let Some(c) = spans[1].attrs.collective.as_mut() {
            c.kind = CollectiveKind::Broadcast;
        }
        let report = straggler_report(&timeline(spans));
        assert_eq!(report, StragglerReport::default());
    }
}
