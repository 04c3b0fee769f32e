//! Collectives grouped by (kind, message size class, participants), matched across ranks by
//! (communicator, sequence number): how long they take, the bandwidth that implies, how far
//! apart the ranks arrive, and how much of the time went to waiting for the last one.
//!
//! Sizes are grouped by power-of-two class, so operations whose size varies from step to step
//! (a prefill's all-reduce, a plan broadcast, an all-to-all of routed tokens) form one row per
//! class instead of one per byte count.

use crate::stats::percentile;
use crate::timeline::{TimedSpan, Timeline};
use pinch_traces::{CollectiveKind, Rank};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One group of like collectives, over every rank that took part.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CollectiveReport {
    pub kind: CollectiveKind,
    /// The median message size of the group's spans.
    pub message_bytes: u64,
    /// The power of two the sizes were grouped under: every size is at most this (and above
    /// half of it).
    pub size_class_bytes: u64,
    /// Whether the group's spans had different sizes.
    pub sizes_vary: bool,
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
    /// Of the time in these spans, the share spent waiting for the last peer to arrive (the
    /// rest moved data), over the spans whose transport measured it; `None` when none did.
    pub wait_pct: Option<f64>,
    /// The link the ranks' data crossed and its calibrated peak; `None` without a calibration.
    pub link: Option<LinkCeiling>,
    /// `busbw_gbps` as a share of the link's peak; `None` without both.
    pub link_efficiency_pct: Option<f64>,
}

/// The slowest link a collective's data crossed, as `pinch calibrate` measured it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkCeiling {
    /// "shm" between ranks of one node, "tcp" between nodes (pinch's transports).
    pub transport: String,
    /// The highest ping-pong bandwidth of any size, GB/s.
    pub peak_gbps: f64,
}

/// The calibrated peak of `transport` in the calibration's `links` array (`transport`,
/// `peak_bandwidth_gbps`); `None` when the transport was not calibrated or its peak is not
/// positive.
pub(crate) fn link_peak_gbps(links: &[serde_json::Value], transport: &str) -> Option<f64> {
    let link = links
        .iter()
        .find(|l| l.get("transport").and_then(|t| t.as_str()) == Some(transport))?;
    link.get("peak_bandwidth_gbps")?
        .as_f64()
        .filter(|g| *g > 0.0)
}

/// Gives each collective group the slowest link its ranks' data crossed (TCP as soon as two of
/// them sit on different nodes, shared memory otherwise) and the share of that link's peak its
/// bus bandwidth reached. `links` is the calibration's `links` array; `node_of` places ranks.
pub fn rate_against_links(
    reports: &mut [CollectiveReport],
    links: &[serde_json::Value],
    node_of: impl Fn(u32) -> Option<u32>,
) {
    let peak = |transport: &str| link_peak_gbps(links, transport);
    for report in reports {
        let mut nodes: Vec<Option<u32>> = report.ranks.iter().map(|&r| node_of(r)).collect();
        nodes.sort_unstable();
        nodes.dedup();
        let transport = match nodes[..] {
            [Some(_)] => "shm",
            _ if nodes.iter().all(Option::is_some) => "tcp",
            // A rank whose node is unknown: the link cannot be told.
            _ => continue,
        };
        let Some(peak_gbps) = peak(transport) else {
            continue;
        };
        report.link_efficiency_pct = report.busbw_gbps.map(|bw| 100.0 * bw / peak_gbps);
        report.link = Some(LinkCeiling {
            transport: transport.to_string(),
            peak_gbps,
        });
    }
}

type GroupKey = (CollectiveKind, u64, u32);

/// The power-of-two class of a size (0 stays 0).
fn size_class(bytes: u64) -> u64 {
    if bytes == 0 {
        0
    } else {
        bytes.next_power_of_two()
    }
}

/// Every collective group of the timeline, by total time, longest first.
pub fn collective_reports(timeline: &Timeline) -> Vec<CollectiveReport> {
    let mut groups: BTreeMap<GroupKey, Vec<&TimedSpan>> = BTreeMap::new();
    for span in &timeline.spans {
        if let Some(c) = span.attrs.collective {
            let key = (c.kind, size_class(c.message_bytes), c.participants);
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
    let (kind, size_class_bytes, participants) = key;
    let mut durations: Vec<u64> = spans.iter().map(|s| s.duration_ns).collect();
    durations.sort_unstable();
    let mut sizes: Vec<u64> = spans
        .iter()
        .filter_map(|s| Some(s.attrs.collective?.message_bytes))
        .collect();
    sizes.sort_unstable();
    let message_bytes = percentile(&sizes, 50.0)?;
    let sizes_vary = sizes.first() != sizes.last();
    let median_ns = percentile(&durations, 50.0)?;
    let arrivals = arrivals_by_seq(spans);
    let mut ranks: Vec<u32> = spans.iter().map(|s| s.rank.0).collect();
    ranks.sort_unstable();
    ranks.dedup();
    let algbw_gbps = (median_ns > 0).then(|| message_bytes as f64 / median_ns as f64);
    Some(CollectiveReport {
        kind,
        message_bytes,
        size_class_bytes,
        sizes_vary,
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
        wait_pct: wait_pct(spans),
        link: None,
        link_efficiency_pct: None,
    })
}

/// The share of the spans' time spent waiting, over spans that measured it.
fn wait_pct(spans: &[&TimedSpan]) -> Option<f64> {
    let (wait_ns, total_ns) = spans
        .iter()
        .filter_map(|s| Some((s.attrs.collective?.wait_ns?, s.duration_ns)))
        .fold((0u64, 0u64), |(w, t), (sw, st)| (w + sw.min(st), t + st));
    crate::stats::pct(wait_ns as f64, total_ns as f64)
}

/// The kinds whose participants all wait for the last arrival and then leave together (a
/// broadcast's root may leave before its data lands; a send does not wait for its receive).
pub(crate) fn releases_together(kind: CollectiveKind) -> bool {
    matches!(
        kind,
        CollectiveKind::AllReduce
            | CollectiveKind::AllGather
            | CollectiveKind::ReduceScatter
            | CollectiveKind::AllToAll
    )
}

/// Per (communicator, sequence number), each rank's earliest start.
pub(crate) fn arrivals_by_seq(spans: &[&TimedSpan]) -> BTreeMap<(u32, u64), BTreeMap<Rank, i64>> {
    // One sort of a flat list, then maps built from sorted runs: at millions of collective
    // spans, a nested map insertion per span costs several times more.
    let mut flat: Vec<((u32, u64), Rank, i64)> = spans
        .par_iter()
        .filter_map(|s| {
            let c = s.attrs.collective?;
            Some(((c.group, c.seq), s.rank, s.start_ns))
        })
        .collect();
    flat.par_sort_unstable();
    flat.chunk_by(|a, b| a.0 == b.0)
        .map(|seq| {
            // Sorted by start within a rank: its first entry is its earliest.
            let starts = seq.chunk_by(|a, b| a.1 == b.1).map(|r| (r[0].1, r[0].2));
            (seq[0].0, starts.collect())
        })
        .collect()
}

fn mean_skew_ns(arrivals: &BTreeMap<(u32, u64), BTreeMap<Rank, i64>>) -> Option<f64> {
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
fn last_arrival_rank(arrivals: &BTreeMap<(u32, u64), BTreeMap<Rank, i64>>) -> Option<u32> {
    let mut lasts: BTreeMap<Rank, u64> = BTreeMap::new();
    for starts in arrivals.values().filter(|s| s.len() >= 2) {
        let first = starts.values().min().copied();
        let last = starts
            .iter()
            .max_by_key(|(rank, start)| (**start, -i64::from(rank.0)));
        if let (Some(first), Some((rank, start))) = (first, last)
            && *start > first
        {
            *lasts.entry(*rank).or_default() += 1;
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
    fn a_group_across_nodes_is_rated_against_tcp_and_within_one_against_shm() {
        let spans = vec![
            collective(0, 1, 0, 1_000, 1_000_000),
            collective(1, 1, 0, 1_000, 1_000_000),
        ];
        let links = vec![
            serde_json::json!({"transport": "shm", "peak_bandwidth_gbps": 20.0}),
            serde_json::json!({"transport": "tcp", "peak_bandwidth_gbps": 4.0}),
        ];
        let mut across = collective_reports(&timeline(spans.clone()));
        rate_against_links(&mut across, &links, Some);
        let link = across[0].link.clone().unwrap();
        assert_eq!((link.transport.as_str(), link.peak_gbps), ("tcp", 4.0));
        // 1 MB in 1 µs is 1000 GB/s algbw, 1000 GB/s busbw for two ranks.
        assert_eq!(across[0].link_efficiency_pct, Some(25_000.0));

        let mut within = collective_reports(&timeline(spans.clone()));
        rate_against_links(&mut within, &links, |_| Some(0));
        assert_eq!(within[0].link.clone().unwrap().transport, "shm");
        assert_eq!(within[0].link_efficiency_pct, Some(5_000.0));

        let mut unplaced = collective_reports(&timeline(spans));
        rate_against_links(&mut unplaced, &links, |r| (r == 0).then_some(0));
        assert_eq!(
            (unplaced[0].link.clone(), unplaced[0].link_efficiency_pct),
            (None, None)
        );
        rate_against_links(&mut unplaced, &links[..1], Some);
        assert_eq!(unplaced[0].link, None, "no tcp figure, no rating");
    }

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
        assert_eq!(big.wait_pct, None, "the test spans did not measure waiting");
        let small = &reports[1];
        assert_eq!(
            (small.count, small.mean_skew_ns, small.last_arrival_rank),
            (1, None, None)
        );
    }

    #[test]
    fn waiting_share_counts_only_spans_that_measured_it() {
        let mut spans = vec![
            collective(0, 1, 0, 1_000, 64),
            collective(1, 1, 0, 1_000, 64),
        ];
        if let Some(c) = spans[0].attrs.collective.as_mut() {
            c.wait_ns = Some(400);
        }
        let reports = collective_reports(&timeline(spans));
        assert_eq!(reports[0].wait_pct, Some(40.0));
    }

    #[test]
    fn the_same_sequence_number_on_two_groups_is_two_collectives() {
        let mut spans = vec![
            collective(0, 1, 0, 100, 64),
            collective(1, 1, 5_000, 100, 64),
        ];
        if let Some(c) = spans[1].attrs.collective.as_mut() {
            c.group = 1;
        }
        let report = &collective_reports(&timeline(spans))[0];
        assert_eq!((report.count, report.mean_skew_ns), (2, None));
    }

    #[test]
    fn varying_sizes_group_by_power_of_two_class() {
        let spans = vec![
            collective(0, 1, 0, 100, 5_000),
            collective(1, 1, 0, 100, 5_000),
            collective(0, 2, 1_000, 100, 7_000),
            collective(1, 2, 1_000, 100, 7_000),
            collective(0, 3, 2_000, 100, 9_000),
        ];
        let reports = collective_reports(&timeline(spans));
        assert_eq!(reports.len(), 2);
        let eight_k = reports
            .iter()
            .find(|r| r.size_class_bytes == 8_192)
            .unwrap();
        assert_eq!((eight_k.count, eight_k.sizes_vary), (2, true));
        assert_eq!(
            eight_k.message_bytes, 5_000,
            "nearest-rank median of 5000, 5000, 7000, 7000"
        );
        let sixteen_k = reports
            .iter()
            .find(|r| r.size_class_bytes == 16_384)
            .unwrap();
        assert!(!sixteen_k.sizes_vary);
    }

    #[test]
    fn collective_kinds_serialize_in_snake_case() {
        let json = serde_json::to_string(&CollectiveKind::ReduceScatter);
        assert_eq!(json.ok().as_deref(), Some("\"reduce_scatter\""));
    }
}
