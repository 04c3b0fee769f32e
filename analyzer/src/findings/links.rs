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

use super::{Detector, Finding, FindingKind, Level, Location, fmt_ns, nodes_of, severity};
use crate::analysis::AnalysisInput;
use crate::traffic::LinkTraffic;
use std::collections::BTreeMap;

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
        unexplained(candidates)
            .iter()
            .filter_map(|slow| slow_finding(input, slow))
            .collect()
    }
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
        evidence: BTreeMap::from([
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
        ]),
        suggestion: format!(
            "check the link between ranks {a} and {b}: on real hardware a degraded NIC, cable or \
             switch port, or traffic shaping (compare with `pinch calibrate`'s link figures); \
             until it is fixed, place ranks so that the ones exchanging most do not cross it"
        ),
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
