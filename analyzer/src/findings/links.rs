//! A slow link: one pair of ranks whose link moves data well below the rate of the other links
//! of the same transport, from the traffic matrix (`traffic.rs`).
//!
//! Links are compared only with links of their own transport (shared memory is orders of
//! magnitude faster than TCP) whose transfers are of like size (a link carrying a pipeline's
//! activations and one carrying small plan broadcasts move data at different rates, both
//! healthy), and only where at least `MIN_LINKS` such links were measured: with two, which one
//! is off cannot be told.
//!
//! The rates come from the receiving side (see `traffic.rs`), so a slow link slows its two
//! ranks' receives from every peer. A link is thus measured slow when *both* its ranks receive
//! slowly: its own fault, or each end slowed by something else. Two rules follow. The reference
//! is the upper median of the links' rates: a slow link between ranks 0 and 1 plus a rank 3 that
//! the host starves make links 0-1, 0-3 and 1-3 slow, half of four ranks' six, yet the other
//! half is healthy. And candidates are taken slowest first, each leaving out the others that
//! share a rank with it, whose slowness it explains (0-3 and 1-3 above): so two slow links
//! sharing a rank show as one, and two disjoint ones among four ranks slow every link and show
//! as none; the matrix still shows them.
//!
//! Slow ends are not a slow link, though (issue 5): on a host with more runnable ranks than cores
//! (four ranks on two), a receiver descheduled while its data arrives is slow from every peer at
//! that collective, and two ranks that each are so at more than half of the collectives have
//! the slow medians of a slow link without one. What tells them apart is *when*: a slow link
//! slows both its ends at the same transfers, every time; ranks the host does not run are slow
//! each at its own moments (two ranks sharing a core are even slow by turns). So a candidate is
//! confirmed transfer by transfer where both directions were timed at once (each member of a
//! one-shot all-reduce, all-gather, reduce-scatter or all-to-all receives from every other):
//! such a transfer is slow only when its faster direction is below the threshold, and the link
//! is slow only when at least half its two-way transfers are. A link with too few two-way
//! transfers (pipeline sends, broadcasts) keeps the verdict of its medians.

use super::{Detector, Finding, FindingKind, Level, Location, fmt_ns, nodes_of, severity};
use crate::analysis::AnalysisInput;
use crate::exchanges::{Collectives, Member};
use crate::timeline::TimedSpan;
use crate::traffic::{AllReduceAlgorithm, LinkTraffic};
use pinch_traces::{CollectiveKind, Rank};

/// A link whose rate is below its transport's median link rate divided by this is slow. On a
/// busy 2-core host, healthy links of one run differ by up to about 2× (a receiver descheduled
/// while its data arrives looks like a slow link for a moment); a link delayed by 2 ms moves
/// small messages tens of times slower than the others.
pub const SLOW_LINK_FACTOR: f64 = 4.0;
/// Links of one transport, with transfers of like size, needed to compare them.
const MIN_LINKS: usize = 3;
/// Links compare when their mean transfer sizes are within this factor of each other: a link
/// that carries small messages moves them at a lower rate than one carrying large ones.
const SIZE_TOLERANCE: f64 = 2.0;
/// Transfers a link must have carried for its rate to count.
const MIN_TRANSFERS: u64 = 10;
/// Below this share of its ranks' time, a slow link costs too little to report: a healthy run
/// on a host busy with other work loses a few percent to receivers descheduled mid-transfer.
const MIN_SEVERITY: f64 = 0.05;
/// The share of its ranks' time at which a slow link is critical.
const CRITICAL_SEVERITY: f64 = 0.25;
/// Of a link's two-way transfers, the share at which both ends must have received slowly for
/// the slowness to be the link's (see the module doc): a link delay slows nearly all of them;
/// two ranks descheduled at random, each at 60% of the collectives, only about a third.
const BOTH_SLOW_SHARE: f64 = 0.5;

/// A link between two ranks much slower than the others of its transport.
#[derive(Clone, Copy, Debug)]
pub struct SlowLink;

impl Detector for SlowLink {
    fn kind(&self) -> FindingKind {
        FindingKind::SlowLink
    }

    fn detect(&self, input: &AnalysisInput<'_>) -> Vec<Finding> {
        let measured: Vec<Measured<'_>> = input
            .traffic
            .links
            .iter()
            .filter(|l| l.transfers >= MIN_TRANSFERS)
            .filter_map(|link| {
                Some(Measured {
                    link,
                    transport: link.transport.as_deref()?,
                    gbps: link.median_gbps?,
                    transfer_bytes: link.mean_transfer_bytes? as f64,
                })
            })
            .collect();
        let candidates = measured
            .iter()
            .filter_map(|m| below_alike(m, &measured))
            .collect();
        let mut slow = unexplained(candidates);
        confirm_two_way(input, &mut slow);
        slow.iter()
            .filter(|s| s.both_slow.is_none_or(|b| b.confirms()))
            .filter_map(|slow| slow_finding(input, slow))
            .collect()
    }
}

/// Of a link's two-way transfers, how many there were and at how many both ends were slow.
#[derive(Clone, Copy, Debug, Default)]
struct BothSlow {
    transfers: u64,
    slow: u64,
}

impl BothSlow {
    /// Whether enough two-way transfers were slow at both ends for the link to be slow.
    fn confirms(self) -> bool {
        self.slow as f64 >= BOTH_SLOW_SHARE * self.transfers as f64
    }

    fn slow_pct(self) -> f64 {
        100.0 * self.slow as f64 / self.transfers.max(1) as f64
    }
}

/// Counts, for each candidate, its two-way transfers and those slow at both ends; a candidate
/// with fewer than `MIN_TRANSFERS` of them is left unjudged (`both_slow` stays `None`). One pass
/// over the collectives, a binary search per candidate end per collective.
fn confirm_two_way(input: &AnalysisInput<'_>, candidates: &mut [Slow<'_>]) {
    if candidates.is_empty() {
        return;
    }
    let spans = &input.timeline.spans;
    let mut counts = vec![BothSlow::default(); candidates.len()];
    for members in Collectives::new(input.timeline).each() {
        let Some(bytes_per_peer) = two_way_bytes(spans, members, input.traffic.all_reduce) else {
            continue;
        };
        let last_arrival = members
            .iter()
            .map(|m| spans[m.index as usize].start_ns)
            .max()
            .unwrap_or(i64::MIN);
        for (slow, count) in candidates.iter().zip(counts.iter_mut()) {
            let [a, b] = slow
                .link
                .ranks
                .map(|r| receive_ns(spans, members, r, last_arrival));
            let (Some(a), Some(b)) = (a, b) else {
                continue;
            };
            // The faster direction's rate, GB/s: each direction's is a lower bound on the link's.
            let gbps = bytes_per_peer as f64 / a.min(b).max(1) as f64;
            count.transfers += 1;
            count.slow += u64::from(gbps * SLOW_LINK_FACTOR < slow.median);
        }
    }
    for (slow, count) in candidates.iter_mut().zip(counts) {
        slow.both_slow = (count.transfers >= MIN_TRANSFERS).then_some(count);
    }
}

/// The bytes each member of a collective receives from each other one, when every member
/// receives from every other at once (see `traffic.rs`); `None` for other collectives.
fn two_way_bytes(spans: &[TimedSpan], members: &[Member], algo: AllReduceAlgorithm) -> Option<u64> {
    let c = spans[members.first()?.index as usize].attrs.collective?;
    let n = u64::from(c.participants).max(members.len() as u64);
    match c.kind {
        CollectiveKind::AllReduce if !algo.is_ring(c.message_bytes, n) => Some(c.message_bytes),
        CollectiveKind::AllGather | CollectiveKind::ReduceScatter | CollectiveKind::AllToAll => {
            Some(c.message_bytes / n)
        }
        _ => None,
    }
    .filter(|&bytes| bytes > 0)
}

/// The time `rank` spent getting its data after the last member arrived, when it took part.
fn receive_ns(
    spans: &[TimedSpan],
    members: &[Member],
    rank: u32,
    last_arrival: i64,
) -> Option<u64> {
    let at = members.binary_search_by_key(&Rank(rank), |m| m.rank).ok()?;
    let s = &spans[members[at].index as usize];
    u64::try_from(s.end_ns().saturating_sub(last_arrival.max(s.start_ns))).ok()
}

/// A link with a typical rate, and the size of the transfers it is typical of.
#[derive(Clone, Copy, Debug)]
struct Measured<'a> {
    link: &'a LinkTraffic,
    transport: &'a str,
    gbps: f64,
    transfer_bytes: f64,
}

/// Whether two links' transfers are of like size.
fn alike(a: &Measured<'_>, b: &Measured<'_>) -> bool {
    a.transport == b.transport
        && a.transfer_bytes <= SIZE_TOLERANCE * b.transfer_bytes
        && b.transfer_bytes <= SIZE_TOLERANCE * a.transfer_bytes
}

/// The link, when it is below the threshold against the links alike to it (itself included).
fn below_alike<'a>(m: &Measured<'a>, all: &[Measured<'a>]) -> Option<Slow<'a>> {
    let mut rates: Vec<f64> = all.iter().filter(|o| alike(m, o)).map(|o| o.gbps).collect();
    if rates.len() < MIN_LINKS {
        return None;
    }
    rates.sort_by(f64::total_cmp);
    // The upper median (see the module doc).
    let median = rates[rates.len() / 2];
    (m.gbps * SLOW_LINK_FACTOR < median).then_some(Slow {
        link: m.link,
        gbps: m.gbps,
        median,
        transport: m.transport,
        compared: rates.len(),
        both_slow: None,
    })
}

/// The candidates that no slower one sharing a rank explains, slowest first.
fn unexplained(mut candidates: Vec<Slow<'_>>) -> Vec<Slow<'_>> {
    candidates.sort_by(|a, b| {
        a.gbps
            .total_cmp(&b.gbps)
            .then(a.link.ranks.cmp(&b.link.ranks))
    });
    let mut kept: Vec<Slow<'_>> = Vec::new();
    for slow in candidates {
        let shares_a_rank = |k: &Slow<'_>| k.link.ranks.iter().any(|r| slow.link.ranks.contains(r));
        if !kept.iter().any(shares_a_rank) {
            kept.push(slow);
        }
    }
    kept
}

/// A link below the threshold, with what it was compared with.
#[derive(Debug)]
struct Slow<'a> {
    link: &'a LinkTraffic,
    gbps: f64,
    median: f64,
    transport: &'a str,
    compared: usize,
    /// Its two-way transfers, and how many were slow at both ends; `None` when it had too few.
    both_slow: Option<BothSlow>,
}

impl Slow<'_> {
    /// The link's time beyond what its bytes would take at the median rate.
    fn excess_ns(&self) -> f64 {
        (self.link.time_ns as f64 - self.link.bytes as f64 / self.median).max(0.0)
    }
}

/// The finding for a slow link, when its excess time is a large enough share of its two ranks'
/// wall time.
fn slow_finding(input: &AnalysisInput<'_>, slow: &Slow<'_>) -> Option<Finding> {
    let link = slow.link;
    let walls_ns: u64 = input
        .ranks
        .iter()
        .filter(|r| link.ranks.contains(&r.rank))
        .filter_map(|r| r.wall_ns)
        .sum();
    let share = slow.excess_ns() / walls_ns as f64;
    if walls_ns == 0 || share < MIN_SEVERITY {
        return None;
    }
    let [a, b] = link.ranks;
    let times_slower = slow.median / slow.gbps.max(f64::MIN_POSITIVE);
    Some(Finding {
        kind: FindingKind::SlowLink,
        level: if share >= CRITICAL_SEVERITY {
            Level::Critical
        } else {
            Level::Warning
        },
        severity: severity(share),
        summary: format!(
            "link {} ({}) moves data at {:.3} GB/s, {times_slower:.0}× below the median {} link \
             ({:.3} GB/s): ranks {a} and {b} lose {:.0}% of their time to it ({})",
            link.link,
            slow.transport,
            slow.gbps,
            slow.transport,
            slow.median,
            share * 100.0,
            fmt_ns(slow.excess_ns()),
        ),
        location: Location {
            nodes: nodes_of(input, &link.ranks),
            ranks: link.ranks.to_vec(),
            ops: Vec::new(),
            links: vec![link.link.clone()],
            ..Location::default()
        },
        evidence: [
            ("link_gbps".to_string(), slow.gbps),
            ("median_gbps".to_string(), slow.median),
            ("times_slower".to_string(), times_slower),
            ("threshold_factor".to_string(), SLOW_LINK_FACTOR),
            ("links_compared".to_string(), slow.compared as f64),
            ("bytes".to_string(), link.bytes as f64),
            ("transfers".to_string(), link.transfers as f64),
            ("time_ns".to_string(), link.time_ns as f64),
            ("excess_ns".to_string(), slow.excess_ns()),
            ("ranks_wall_ns".to_string(), walls_ns as f64),
        ]
        .into_iter()
        .chain(slow.both_slow.into_iter().flat_map(|b| {
            [
                ("two_way_transfers".to_string(), b.transfers as f64),
                ("both_slow_pct".to_string(), b.slow_pct()),
            ]
        }))
        .collect(),
        suggestion: format!(
            "check the link between ranks {a} and {b}: on real hardware a degraded NIC, cable or \
             switch port, or traffic shaping (compare with `pinch calibrate`'s link figures); \
             until it is fixed, place ranks so that the ones exchanging most do not cross it"
        ),
        stretches: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::RunFacts;
    use crate::testkit::{collective, p2p, timeline};
    use crate::timeline::{TimedSpan, Timeline};
    use pinch_traces::CollectiveKind;

    /// Twenty one-shot all-reduces of 1 KiB over three ranks; ranks 0 and 1 take `slow_ns` to
    /// get their data (as a slow link between them makes them), rank 2 takes 200 ns.
    fn three_ranks(slow_ns: i64) -> Timeline {
        let mut spans = Vec::new();
        for seq in 0..20 {
            let t0 = seq as i64 * 10_000;
            for (rank, took) in [(0, slow_ns), (1, slow_ns), (2, 200)] {
                let mut s = collective(rank, seq, t0, took as u64, 1_024);
                if let Some(c) = s.attrs.collective.as_mut() {
                    (c.kind, c.participants) = (CollectiveKind::AllReduce, 3);
                }
                spans.push(s);
            }
        }
        timeline(spans)
    }

    fn findings(t: &Timeline) -> Vec<Finding> {
        let facts = RunFacts::from_timeline(t);
        SlowLink.detect(&AnalysisInput::new(t, &facts))
    }

    #[test]
    fn the_link_between_the_two_slow_receivers_is_named() {
        let found = findings(&three_ranks(2_000));
        assert_eq!(found.len(), 1, "{found:#?}");
        let f = &found[0];
        assert_eq!(f.location.links, vec!["0-1".to_string()]);
        assert_eq!(f.location.ranks, vec![0, 1]);
        assert_eq!(f.level, Level::Warning);
        assert!(f.severity > 0.1 && f.severity < 0.25, "{f:#?}");
        assert!(
            f.summary.starts_with("link 0-1 (shm) moves data at "),
            "{}",
            f.summary
        );
        assert_eq!(f.evidence.get("links_compared"), Some(&3.0));
    }

    #[test]
    fn a_slow_link_explains_the_slow_links_of_its_ranks_to_a_starved_one() {
        // Four ranks: 0 and 1 receive in 2 µs (their link is slow), 3 in 1 µs (starved), 2 in
        // 200 ns: links 0-1, 0-3 and 1-3 all measure slow, 0-1 slowest.
        let mut spans = Vec::new();
        for seq in 0..20 {
            let t0 = seq as i64 * 10_000;
            for (rank, took) in [(0, 2_000), (1, 2_000), (2, 200), (3, 1_000)] {
                let mut s = collective(rank, seq, t0, took, 1_024);
                if let Some(c) = s.attrs.collective.as_mut() {
                    (c.kind, c.participants) = (CollectiveKind::AllReduce, 4);
                }
                spans.push(s);
            }
        }
        let found = findings(&timeline(spans));
        let links: Vec<&[String]> = found.iter().map(|f| f.location.links.as_slice()).collect();
        assert_eq!(links, vec![["0-1".to_string()].as_slice()], "{found:#?}");
    }

    /// Twenty one-shot all-reduces of 1 KiB over four ranks that arrive together; rank `r`
    /// takes 2 µs to get its data where `slow(r, seq)`, else 200 ns.
    fn four_ranks(slow: impl Fn(u32, i64) -> bool) -> Timeline {
        let mut spans = Vec::new();
        for seq in 0..20 {
            let t0 = seq * 10_000;
            for rank in 0..4 {
                let took = if slow(rank, seq) { 2_000 } else { 200 };
                let mut s = collective(rank, seq as u64, t0, took, 1_024);
                if let Some(c) = s.attrs.collective.as_mut() {
                    (c.kind, c.participants) = (CollectiveKind::AllReduce, 4);
                }
                spans.push(s);
            }
        }
        timeline(spans)
    }

    #[test]
    fn issue_5_two_ranks_slow_at_different_collectives_are_no_slow_link() {
        // Ranks 0 and 1 each slow at 12 of 20 collectives, both at 4: their medians are a slow
        // link's, but a descheduled receiver's, not the link's.
        let t = four_ranks(|rank, seq| match rank {
            0 => seq % 5 < 3,
            1 => seq % 5 >= 2,
            _ => false,
        });
        assert!(findings(&t).is_empty(), "{:#?}", findings(&t));
        let together = four_ranks(|rank, seq| rank < 2 && seq % 5 < 3);
        let found = findings(&together);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert_eq!(found[0].location.links, vec!["0-1".to_string()]);
        assert_eq!(found[0].evidence.get("two_way_transfers"), Some(&20.0));
        assert_eq!(found[0].evidence.get("both_slow_pct"), Some(&60.0));
    }

    #[test]
    fn a_link_of_small_messages_is_not_compared_with_links_of_large_ones() {
        let mut spans = three_ranks(200).spans;
        for k in 0..20 {
            let t0 = k * 10_000 + 5_000;
            spans.push(p2p(0, CollectiveKind::Send, 3, t0, 10, 16));
            spans.push(p2p(3, CollectiveKind::Recv, 0, t0, 2_000, 16));
        }
        let t = timeline(spans);
        assert!(t.spans.iter().any(|s| s.rank.0 == 3));
        assert!(findings(&t).is_empty(), "{:#?}", findings(&t));
    }

    #[test]
    fn links_within_the_noise_or_too_few_to_compare_are_not_flagged() {
        assert!(findings(&three_ranks(200)).is_empty());
        assert!(
            findings(&three_ranks(600)).is_empty(),
            "3× is within a busy host's noise"
        );
        let two_ranks: Vec<TimedSpan> = three_ranks(2_000)
            .spans
            .into_iter()
            .filter(|s| s.rank.0 < 2)
            .collect();
        assert!(
            findings(&timeline(two_ranks)).is_empty(),
            "one link has nothing to compare with"
        );
    }
}
