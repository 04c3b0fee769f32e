//! A slow link: one pair of ranks whose link moves data well below the rate of the other links
//! of the same transport, from the traffic matrix (`traffic.rs`).
//!
//! Links are compared only with links of their own transport (shared memory is orders of
//! magnitude faster than TCP), and only where a transport has at least `MIN_LINKS` measured
//! links, so that the median is set by healthy ones: with two links, which one is off cannot be
//! told.

use super::{Detector, Finding, FindingKind, Level, Location, fmt_ns, nodes_of, severity};
use crate::analysis::AnalysisInput;
use crate::traffic::LinkTraffic;
use std::collections::BTreeMap;

/// A link whose rate is below its transport's median link rate divided by this is slow. On a
/// busy 2-core host, healthy links of one run differ by up to about 2× (a receiver descheduled
/// while its data arrives looks like a slow link for a moment); a link delayed by 2 ms moves
/// small messages tens of times slower than the others.
pub const SLOW_LINK_FACTOR: f64 = 4.0;
/// Links of one transport needed to compare them.
const MIN_LINKS: usize = 3;
/// Transfers a link must have carried for its rate to count.
const MIN_TRANSFERS: u64 = 10;
/// Below this share of its ranks' time, a slow link costs too little to report.
const MIN_SEVERITY: f64 = 0.02;
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
        let mut by_transport: BTreeMap<&str, Vec<(&LinkTraffic, f64)>> = BTreeMap::new();
        for link in &input.traffic.links {
            if let (Some(transport), Some(gbps), true) = (
                link.transport.as_deref(),
                link.median_gbps,
                link.transfers >= MIN_TRANSFERS,
            ) {
                by_transport
                    .entry(transport)
                    .or_default()
                    .push((link, gbps));
            }
        }
        by_transport
            .into_iter()
            .filter(|(_, links)| links.len() >= MIN_LINKS)
            .flat_map(|(transport, links)| slow_links(input, transport, &links))
            .collect()
    }
}

/// The nearest-rank (lower) median of the links' rates.
fn median_gbps(links: &[(&LinkTraffic, f64)]) -> Option<f64> {
    let mut rates: Vec<f64> = links.iter().map(|(_, gbps)| *gbps).collect();
    rates.sort_by(f64::total_cmp);
    rates.get((rates.len().max(1) - 1) / 2).copied()
}

fn slow_links(
    input: &AnalysisInput<'_>,
    transport: &str,
    links: &[(&LinkTraffic, f64)],
) -> Vec<Finding> {
    let Some(median) = median_gbps(links).filter(|m| *m > 0.0) else {
        return Vec::new();
    };
    links
        .iter()
        .filter(|(_, gbps)| *gbps * SLOW_LINK_FACTOR < median)
        .filter_map(|&(link, gbps)| {
            let slow = Slow {
                link,
                gbps,
                median,
                transport,
                compared: links.len(),
            };
            slow_finding(input, &slow)
        })
        .collect()
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
    use crate::testkit::{collective, timeline};
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
