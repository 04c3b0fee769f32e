//! Collectives grouped by (kind, message size, participants), matched across ranks by sequence
//! number: how long they take, the bandwidth that implies, and how far apart the ranks arrive.

use crate::stats::percentile;
use crate::timeline::{TimedSpan, Timeline};
use pinch_traces::{CollectiveKind, Rank};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One group of like collectives, over every rank that took part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectiveReport {
    pub kind: CollectiveKind,
    pub message_bytes: u64,
    pub participants: u32,
    /// Distinct sequence numbers: how many times the collective ran.
    pub count: u64,
    /// Spans over all ranks (about `count` × `participants` when nothing was lost).
    pub span_count: u64,
    pub ranks: Vec<u32>,
    /// Nearest-rank median and 90th percentile of the span durations over all ranks.
    pub median_ns: u64,
    pub p90_ns: u64,
    /// Sum of the span durations over all ranks.
    pub total_ns: u64,
    /// `message_bytes / median_ns`, in GB/s (1e9 bytes per second); `None` when the median is 0.
    pub algbw_gbps: Option<f64>,
    /// `algbw_gbps × bus factor(participants)` (nccl-tests): the rate each link carried.
    pub busbw_gbps: Option<f64>,
    /// Mean over sequence numbers seen on two ranks or more of (latest start − earliest start).
    pub mean_skew_ns: Option<f64>,
    /// The rank that most often started last (the one the others waited for).
    pub last_arrival_rank: Option<u32>,
}

type GroupKey = (CollectiveKind, u64, u32);

/// Every collective group of the timeline, by total time, longest first.
pub fn collective_reports(timeline: &Timeline) -> Vec<CollectiveReport> {
    let mut groups: BTreeMap<GroupKey, Vec<&TimedSpan>> = BTreeMap::new();
    for span in &timeline.spans {
        if let Some(c) = span.attrs.collective {
            let key = (c.kind, c.message_bytes, c.participants);
            groups.entry(key).or_default().push(span);
        }
    }
    let mut reports: Vec<CollectiveReport> = groups
        .into_iter()
        .filter_map(|(key, spans)| group_report(key, &spans))
        .collect();
    reports.sort_by_key(|r| std::cmp::Reverse(r.total_ns));
    reports
}

fn group_report(key: GroupKey, spans: &[&TimedSpan]) -> Option<CollectiveReport> {
    let (kind, message_bytes, participants) = key;
    let mut durations: Vec<u64> = spans.iter().map(|s| s.duration_ns).collect();
    durations.sort_unstable();
    let median_ns = percentile(&durations, 50.0)?;
    let arrivals = arrivals_by_seq(spans);
    let mut ranks: Vec<u32> = spans.iter().map(|s| s.rank.0).collect();
    ranks.sort_unstable();
    ranks.dedup();
    let algbw_gbps = (median_ns > 0).then(|| message_bytes as f64 / median_ns as f64);
    Some(CollectiveReport {
        kind,
        message_bytes,
        participants,
        count: arrivals.len() as u64,
        span_count: spans.len() as u64,
        ranks,
        median_ns,
        p90_ns: percentile(&durations, 90.0)?,
        total_ns: durations.iter().sum(),
        algbw_gbps,
        busbw_gbps: algbw_gbps.map(|bw| bw * kind.bus_factor(participants)),
        mean_skew_ns: mean_skew_ns(&arrivals),
        last_arrival_rank: last_arrival_rank(&arrivals),
    })
}

/// Per sequence number, each rank's earliest start.
fn arrivals_by_seq(spans: &[&TimedSpan]) -> BTreeMap<u64, BTreeMap<Rank, i64>> {
    let mut arrivals: BTreeMap<u64, BTreeMap<Rank, i64>> = BTreeMap::new();
    for s in spans {
        if let Some(c) = s.attrs.collective {
            let start = arrivals.entry(c.seq).or_default().entry(s.rank);
            let start = start.or_insert(s.start_ns);
            *start = (*start).min(s.start_ns);
        }
    }
    arrivals
}

fn mean_skew_ns(arrivals: &BTreeMap<u64, BTreeMap<Rank, i64>>) -> Option<f64> {
    let skews: Vec<u64> = arrivals
        .values()
        .filter(|starts| starts.len() >= 2)
        .filter_map(|starts| {
            let first = starts.values().min()?;
            let last = starts.values().max()?;
            Some(last.abs_diff(*first))
        })
        .collect();
    (!skews.is_empty()).then(|| skews.iter().sum::<u64>() as f64 / skews.len() as f64)
}

/// The rank that started last most often, among sequence numbers where someone waited
/// (ties go to the lower rank).
fn last_arrival_rank(arrivals: &BTreeMap<u64, BTreeMap<Rank, i64>>) -> Option<u32> {
    let mut lasts: BTreeMap<Rank, u64> = BTreeMap::new();
    for starts in arrivals.values().filter(|s| s.len() >= 2) {
        let first = starts.values().min().copied();
        let last = starts
            .iter()
            .max_by_key(|(rank, start)| (**start, -i64::from(rank.0)));
        if let (Some(first), Some((rank, start))) = (first, last) {
            if *start > first {
                *lasts.entry(*rank).or_default() += 1;
            }
        }
    }
    let most = lasts.values().max()?;
    lasts.iter().find(|(_, n)| *n == most).map(|(r, _)| r.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{collective, timeline};

    #[test]
    fn groups_report_bandwidth_and_skew() {
        // Two all-reduces of 1 MB on two ranks; rank 1 arrives 300 ns late each time.
        let spans = vec![
            collective(0, 1, 0, 1_000, 1_000_000),
            collective(1, 1, 300, 700, 1_000_000),
            collective(0, 2, 5_000, 1_000, 1_000_000),
            collective(1, 2, 5_300, 700, 1_000_000),
            collective(0, 3, 9_000, 100, 4_096),
        ];
        let reports = collective_reports(&timeline(spans));
        assert_eq!(reports.len(), 2);
        let big = &reports[0];
        assert_eq!(
            (big.message_bytes, big.count, big.span_count),
            (1_000_000, 2, 4)
        );
        assert_eq!(big.ranks, vec![0, 1]);
        assert_eq!(
            (big.median_ns, big.p90_ns, big.total_ns),
            (700, 1_000, 3_400)
        );
        let algbw = 1_000_000.0 / 700.0;
        assert_eq!(big.algbw_gbps, Some(algbw));
        assert_eq!(big.busbw_gbps, Some(algbw * 1.0));
        assert_eq!(big.mean_skew_ns, Some(300.0));
        assert_eq!(big.last_arrival_rank, Some(1));
        let small = &reports[1];
        assert_eq!(
            (small.count, small.mean_skew_ns, small.last_arrival_rank),
            (1, None, None)
        );
    }

    #[test]
    fn collective_kinds_serialize_in_snake_case() {
        let json = serde_json::to_string(&CollectiveKind::ReduceScatter);
        assert_eq!(json.ok().as_deref(), Some("\"reduce_scatter\""));
    }
}
