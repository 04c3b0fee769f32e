//! Clock alignment: the offset that puts each node's anchored times on one time base.
//!
//! A node's `ClockAnchor` (a monotonic and a wall-clock reading taken together) maps its times to
//! wall-clock time, which is only as right as the nodes' wall clocks agree: exactly on one host,
//! across hosts as well as NTP keeps them (often a millisecond or worse). Collectives measure the
//! same thing independently: every participant of one (communicator, sequence number) collective
//! leaves it at nearly the same instant, since the last arrival releases them all, and nobody
//! leaves before that last arrival. So where nodes share collectives, each node's anchored times
//! get an offset that lines their completions up: per pair of nodes, the median difference of
//! their completions kept within the bounds causality sets (as NTP bounds an offset by round
//! trips), or the middle of those bounds when they are tighter than the completions agree; then
//! a least-squares fit of one offset per node over all pairs, the lowest node of each connected
//! set keeping 0.
//!
//! The offset is constant over the run: drift between clocks (parts per million, microseconds
//! over a run of seconds) is not modelled.

use crate::collectives::releases_together;
use crate::run::RunData;
use pinch_traces::{ClockAnchor, Rank};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// How a node's times were put on the run's time base.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClockMethod {
    /// Neither an anchor nor a collective shared with another node: the node's earliest span is
    /// placed at the run's start.
    Guessed,
    /// The node's clock anchor alone.
    Anchors,
    /// The anchor, then an offset that lines the node's collective completions up with the
    /// other nodes'.
    Collectives,
}

/// What `merge_with` may use to align nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Alignment {
    /// Clock anchors only (collectives are still matched, to measure how well they line up).
    AnchorsOnly,
    /// Clock anchors, refined by collective completions where nodes share collectives.
    Collectives,
}

/// How one node's clock was aligned, and how well.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeClockReport {
    pub node: u32,
    pub method: ClockMethod,
    /// Added to the node's anchored times: 0 unless `method` is `collectives`; then relative to
    /// the reference node (the lowest of the nodes that share collectives), whose offset is 0.
    pub offset_ns: i64,
    /// The anchor's own uncertainty (how long its two clock reads took); `None` without anchor.
    pub anchor_uncertainty_ns: Option<u64>,
    /// Collectives this node shared with at least one other node.
    pub collectives: u64,
    /// After alignment, the median distance between this node's completion of a shared
    /// collective and the other nodes' mean completion; `None` without shared collectives.
    pub residual_ns: Option<u64>,
    /// The largest error of the offset that causality still allows, given the other nodes'
    /// offsets; `None` without shared collectives, or when the bounds contradict each other (a
    /// clock that drifted, or a collective whose participants do not wait for each other).
    pub bound_ns: Option<u64>,
}

/// One node's part in one collective, on its anchored clock (wall-clock ns).
#[derive(Clone, Copy, Debug)]
struct Presence {
    latest_start: i128,
    earliest_end: i128,
    /// The mean completion over the node's participating ranks.
    mean_end: i128,
}

type CollectiveKey = (u32, u64);

/// One rank's span of one collective: (collective, node index, rank, start, end), times on the
/// node's monotonic clock (40 bytes: at tens of millions of spans the sort moves them all).
type RankPart = (CollectiveKey, u32, Rank, u64, u64);

/// Per collective, each participating node's presence (by index in `run.nodes`).
fn presences(
    run: &RunData,
    anchors: &[ClockAnchor],
) -> BTreeMap<CollectiveKey, BTreeMap<usize, Presence>> {
    // Sorting one flat list (nodes read in parallel) costs far less than a map insertion per
    // collective span at tens of millions of spans.
    let mut parts: Vec<RankPart> = run
        .nodes
        .par_iter()
        .enumerate()
        .flat_map_iter(|(index, node)| {
            node.spans.iter().filter_map(move |span| {
                let c = span
                    .attrs
                    .collective
                    .filter(|c| releases_together(c.kind))?;
                let end = span.start_ns.saturating_add(span.duration_ns);
                Some((
                    (c.group, c.seq),
                    index as u32,
                    span.rank,
                    span.start_ns,
                    end,
                ))
            })
        })
        .collect();
    parts.par_sort_unstable();
    let mut out: BTreeMap<CollectiveKey, BTreeMap<usize, Presence>> = BTreeMap::new();
    for same_key in parts.chunk_by(|a, b| a.0 == b.0) {
        // Sorted by node within a collective: one node alone has nothing to align.
        let (first, last) = (same_key[0].1, same_key[same_key.len() - 1].1);
        if first == last {
            continue;
        }
        let mut nodes = BTreeMap::new();
        for same_node in same_key.chunk_by(|a, b| a.1 == b.1) {
            let index = same_node[0].1 as usize;
            let anchor = anchors[index];
            // Per rank, its earliest start and latest end in this collective.
            let times: Vec<(i128, i128)> = same_node
                .chunk_by(|a, b| a.2 == b.2)
                .map(|rank| {
                    let start = rank.iter().map(|p| p.3).min().unwrap_or_default();
                    let end = rank.iter().map(|p| p.4).max().unwrap_or_default();
                    (anchor.to_wall_ns(start), anchor.to_wall_ns(end))
                })
                .collect();
            nodes.insert(index, presence(&times));
        }
        out.insert(same_key[0].0, nodes);
    }
    out
}

fn presence(times: &[(i128, i128)]) -> Presence {
    let ends: i128 = times.iter().map(|t| t.1).sum();
    Presence {
        latest_start: times.iter().map(|t| t.0).max().unwrap_or_default(),
        earliest_end: times.iter().map(|t| t.1).min().unwrap_or_default(),
        mean_end: ends / times.len().max(1) as i128,
    }
}

/// What the shared collectives of two nodes `a < b` say about `offset(a) − offset(b)`.
#[derive(Debug, Default)]
struct Pair {
    /// Per collective, b's completion minus a's: the offset difference that lines them up.
    differences: Vec<i128>,
    /// Causality: the difference is at least `low` and at most `high`.
    low: Option<i128>,
    high: Option<i128>,
}

impl Pair {
    fn add(&mut self, a: &Presence, b: &Presence) {
        self.differences.push(b.mean_end - a.mean_end);
        // a's ranks cannot leave before b's last rank arrived, nor b's before a's.
        let low = b.latest_start - a.earliest_end;
        let high = b.earliest_end - a.latest_start;
        self.low = Some(self.low.map_or(low, |l| l.max(low)));
        self.high = Some(self.high.map_or(high, |h| h.min(high)));
    }

    /// The bounds when they are consistent.
    fn bounds(&self) -> Option<(i128, i128)> {
        self.low.zip(self.high).filter(|(l, h)| l <= h)
    }

    /// The better founded of two estimates: the median difference of completions, moved inside
    /// the causality bounds; or, when the bounds are narrower than the completions' spread (ranks
    /// woken late after a collective blur its completions, never its bounds), their midpoint.
    fn estimate(&self) -> Option<f64> {
        let median = median_f64(self.differences.iter().map(|d| *d as f64).collect())?;
        let spread = median_f64(
            self.differences
                .iter()
                .map(|d| (*d as f64 - median).abs())
                .collect(),
        )?;
        Some(match self.bounds() {
            Some((l, h)) if ((h - l) as f64) / 2.0 <= spread => (l + h) as f64 / 2.0,
            Some((l, h)) => median.clamp(l as f64, h as f64),
            None => median,
        })
    }
}

/// The median, the mean of the middle two for an even count; `None` for no values.
fn median_f64(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    match values.len() {
        0 => None,
        n if n % 2 == 1 => Some(values[mid]),
        _ => Some((values[mid - 1] + values[mid]) / 2.0),
    }
}

fn pairs(
    shared: &BTreeMap<CollectiveKey, BTreeMap<usize, Presence>>,
) -> BTreeMap<(usize, usize), Pair> {
    let mut pairs: BTreeMap<(usize, usize), Pair> = BTreeMap::new();
    for nodes in shared.values() {
        for (&a, pa) in nodes {
            for (&b, pb) in nodes.range(a + 1..) {
                pairs.entry((a, b)).or_default().add(pa, pb);
            }
        }
    }
    pairs
}

/// One constraint on a node's offset from a neighbour's: `offset(node) − offset(other) ≈
/// difference`, bounded by causality, weighted by the collectives behind it.
#[derive(Clone, Copy, Debug)]
struct Edge {
    other: usize,
    difference: f64,
    bounds: Option<(i128, i128)>,
    weight: f64,
}

/// Each node's edges, both directions of every pair.
fn edges(pairs: &BTreeMap<(usize, usize), Pair>, nodes: usize) -> Vec<Vec<Edge>> {
    let mut edges = vec![Vec::new(); nodes];
    for (&(a, b), pair) in pairs {
        let Some(difference) = pair.estimate() else {
            continue;
        };
        let weight = pair.differences.len() as f64;
        let bounds = pair.bounds();
        edges[a].push(Edge {
            other: b,
            difference,
            bounds,
            weight,
        });
        edges[b].push(Edge {
            other: a,
            difference: -difference,
            bounds: bounds.map(|(l, h)| (-h, -l)),
            weight,
        });
    }
    edges
}

/// The lowest node of each connected set of nodes: the reference that keeps offset 0.
fn references(edges: &[Vec<Edge>]) -> BTreeSet<usize> {
    let mut seen = vec![false; edges.len()];
    let mut refs = BTreeSet::new();
    for start in 0..edges.len() {
        if seen[start] || edges[start].is_empty() {
            continue;
        }
        refs.insert(start);
        let mut stack = vec![start];
        while let Some(n) = stack.pop() {
            if !std::mem::replace(&mut seen[n], true) {
                stack.extend(edges[n].iter().map(|e| e.other));
            }
        }
    }
    refs
}

/// Least squares over all pairs by Gauss-Seidel sweeps: each node moves to the weighted mean of
/// what its neighbours say, until nothing moves by more than a nanosecond.
fn solve(edges: &[Vec<Edge>], refs: &BTreeSet<usize>) -> Vec<f64> {
    const SWEEPS: usize = 10_000;
    let mut offsets = vec![0.0; edges.len()];
    for _ in 0..SWEEPS {
        let mut moved: f64 = 0.0;
        for n in (0..edges.len()).filter(|n| !refs.contains(n) && !edges[*n].is_empty()) {
            let (sum, weights) = edges[n].iter().fold((0.0, 0.0), |(s, w), e| {
                (
                    s + e.weight * (offsets[e.other] + e.difference),
                    w + e.weight,
                )
            });
            let next = sum / weights;
            moved = moved.max((next - offsets[n]).abs());
            offsets[n] = next;
        }
        if moved < 1.0 {
            break;
        }
    }
    offsets
}

/// Per node of the run (in order), its alignment; `anchors` are the nodes' anchors in order.
pub(crate) fn align(
    run: &RunData,
    anchors: &[ClockAnchor],
    alignment: Alignment,
) -> Vec<NodeClockReport> {
    let shared = presences(run, anchors);
    let edges = edges(&pairs(&shared), run.nodes.len());
    let refs = references(&edges);
    let offsets = match alignment {
        Alignment::Collectives => solve(&edges, &refs)
            .iter()
            .map(|o| o.round() as i64)
            .collect(),
        Alignment::AnchorsOnly => vec![0; run.nodes.len()],
    };
    (0..run.nodes.len())
        .map(|n| NodeClockReport {
            node: run.nodes[n].node.0,
            method: method(run, n, alignment, &edges),
            offset_ns: offsets[n],
            anchor_uncertainty_ns: run.nodes[n].anchor.map(|a| a.read_uncertainty_ns),
            collectives: shared.values().filter(|p| p.contains_key(&n)).count() as u64,
            residual_ns: residual_ns(&shared, &offsets, n),
            bound_ns: bound_ns(&edges[n], &offsets, n),
        })
        .collect()
}

fn method(run: &RunData, n: usize, alignment: Alignment, edges: &[Vec<Edge>]) -> ClockMethod {
    let node = &run.nodes[n];
    let anchored = node.anchor.is_some() || node.ranks.values().any(|l| l.anchor.is_some());
    match (alignment, edges[n].is_empty(), anchored) {
        (Alignment::Collectives, false, _) => ClockMethod::Collectives,
        (_, _, true) => ClockMethod::Anchors,
        (_, _, false) => ClockMethod::Guessed,
    }
}

/// The median distance between node `n`'s aligned completions and the other nodes' mean.
fn residual_ns(
    shared: &BTreeMap<CollectiveKey, BTreeMap<usize, Presence>>,
    offsets: &[i64],
    n: usize,
) -> Option<u64> {
    let aligned = |i: usize, p: &Presence| p.mean_end + i128::from(offsets[i]);
    let distances: Vec<u64> = shared
        .values()
        .filter_map(|nodes| {
            let own = aligned(n, nodes.get(&n)?);
            let others: Vec<i128> = nodes
                .iter()
                .filter(|(i, _)| **i != n)
                .map(|(i, p)| aligned(*i, p))
                .collect();
            let mean = others.iter().sum::<i128>() / others.len().max(1) as i128;
            u64::try_from((own - mean).unsigned_abs()).ok()
        })
        .collect();
    crate::stats::median(distances)
}

/// How far the true offset of node `n` can be from the one applied: causality confines it to
/// the intersection of what each neighbour's collectives allow.
fn bound_ns(edges: &[Edge], offsets: &[i64], n: usize) -> Option<u64> {
    let mut low: Option<i128> = None;
    let mut high: Option<i128> = None;
    for e in edges {
        let (l, h) = e.bounds?;
        let base = i128::from(offsets[e.other]);
        low = Some(low.map_or(base + l, |x| x.max(base + l)));
        high = Some(high.map_or(base + h, |x| x.min(base + h)));
    }
    let (low, high) = low.zip(high).filter(|(l, h)| l <= h)?;
    let own = i128::from(offsets[n]);
    u64::try_from((own - low).abs().max((high - own).abs())).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;
    use crate::timeline::{Timeline, merge_with};

    /// The largest distance between a span's wall-clock time in `t` and in `truth`.
    fn max_error_ns(t: &Timeline, truth: &Timeline) -> u128 {
        assert_eq!(t.spans.len(), truth.spans.len());
        t.spans
            .iter()
            .zip(&truth.spans)
            .map(|(a, b)| {
                let at = t.origin_unix_ns + i128::from(a.start_ns);
                let bt = truth.origin_unix_ns + i128::from(b.start_ns);
                (at - bt).unsigned_abs()
            })
            .max()
            .unwrap_or(0)
    }

    /// Per step, the rank that arrived at the all-reduce last.
    fn last_arrivals(t: &Timeline) -> Vec<u32> {
        let starts = |rank: u32| -> Vec<i64> {
            let spans = t.spans_of(Rank(rank)).iter();
            spans
                .filter(|s| s.attrs.collective.is_some())
                .map(|s| s.start_ns)
                .collect()
        };
        let (zero, one) = (starts(0), starts(1));
        zero.iter()
            .zip(&one)
            .map(|(a, b)| u32::from(b > a))
            .collect()
    }

    #[test]
    fn a_skew_of_300_ms_is_recovered_within_100_us() {
        let truth = merge_with(&testkit::skewed_run(200, 0, 0), Alignment::AnchorsOnly).0;
        let skewed = testkit::skewed_run(200, 300_000_000, 0);
        let (aligned, clocks) = merge_with(&skewed, Alignment::Collectives);
        let error_ns = max_error_ns(&aligned, &truth);
        assert!(error_ns < 100_000, "off by {error_ns} ns");
        assert_eq!(last_arrivals(&aligned), last_arrivals(&truth));
        let lasts = last_arrivals(&truth);
        assert!(lasts.contains(&0) && lasts.contains(&1), "ranks take turns");
        assert_eq!(clocks[0].method, ClockMethod::Collectives);
        assert_eq!((clocks[0].offset_ns, clocks[1].collectives), (0, 200));
        let node1 = &clocks[1];
        assert_eq!(node1.method, ClockMethod::Collectives);
        assert!((node1.offset_ns + 300_000_000).abs() < 100_000, "{node1:?}");
        assert!(node1.residual_ns.is_some_and(|r| r < 20_000), "{node1:?}");
        assert!(node1.bound_ns.is_some_and(|b| b < 100_000), "{node1:?}");
        assert_eq!(node1.anchor_uncertainty_ns, Some(10));
    }

    #[test]
    fn late_wakeups_after_collectives_do_not_blur_the_alignment() {
        let truth = merge_with(
            &testkit::skewed_run(200, 0, 3_000_000),
            Alignment::AnchorsOnly,
        )
        .0;
        let skewed = testkit::skewed_run(200, -250_000_000, 3_000_000);
        let (aligned, clocks) = merge_with(&skewed, Alignment::Collectives);
        // Completions agree to within 65 µs only (their median difference is 74 µs off), but
        // the causality bounds hold the offset to 33 µs either side of the truth.
        let error_ns = max_error_ns(&aligned, &truth);
        assert!(error_ns < 20_000, "off by {error_ns} ns");
        assert!(
            clocks[1].residual_ns.is_some_and(|r| r > 50_000),
            "{:?}",
            clocks[1]
        );
        assert!(
            clocks[1].bound_ns.is_some_and(|b| b < 40_000),
            "{:?}",
            clocks[1]
        );
        assert_eq!(last_arrivals(&aligned), last_arrivals(&truth));
    }

    #[test]
    fn anchors_alone_keep_the_skew_and_measure_it() {
        let truth = merge_with(&testkit::skewed_run(50, 0, 0), Alignment::AnchorsOnly).0;
        let skewed = testkit::skewed_run(50, 300_000_000, 0);
        let (anchored, clocks) = merge_with(&skewed, Alignment::AnchorsOnly);
        let error_ns = max_error_ns(&anchored, &truth);
        assert!(
            error_ns.abs_diff(300_000_000) < 1_000,
            "off by {error_ns} ns"
        );
        assert_eq!(clocks[1].method, ClockMethod::Anchors);
        assert_eq!(clocks[1].offset_ns, 0);
        let residual = clocks[1].residual_ns.unwrap_or(0);
        assert!(residual.abs_diff(300_000_000) < 100_000, "{residual}");
        let bound = clocks[1].bound_ns.unwrap_or(0);
        assert!(
            bound >= 300_000_000,
            "the offset 0 may be 300 ms off: {bound}"
        );
    }

    #[test]
    fn the_aligned_timeline_does_not_depend_on_the_skew() {
        let straight = merge_with(&testkit::skewed_run(50, 0, 0), Alignment::Collectives).0;
        for skew_ns in [-2_000_000_000, -450_000_000, 7_000, 900_000_000] {
            let skewed = merge_with(&testkit::skewed_run(50, skew_ns, 0), Alignment::Collectives).0;
            assert!(max_error_ns(&skewed, &straight) <= 1, "skew {skew_ns}");
        }
    }

    #[test]
    fn nodes_without_shared_collectives_keep_their_anchors_or_a_guess() {
        let mut run = testkit::run_data(&[&[0], &[1]]);
        run.nodes[1].anchor = None;
        run.nodes[1].ranks.clear();
        let (_, clocks) = merge_with(&run, Alignment::Collectives);
        let methods: Vec<ClockMethod> = clocks.iter().map(|c| c.method).collect();
        assert_eq!(methods, vec![ClockMethod::Anchors, ClockMethod::Guessed]);
        assert!(
            clocks
                .iter()
                .all(|c| c.offset_ns == 0 && c.collectives == 0)
        );
        assert!(clocks.iter().all(|c| c.residual_ns.is_none()));
    }

    fn presence(latest_start: i128, earliest_end: i128) -> Presence {
        Presence {
            latest_start,
            earliest_end,
            mean_end: earliest_end,
        }
    }

    #[test]
    fn a_pair_estimate_stays_inside_the_causality_bounds() {
        let mut pair = Pair::default();
        // a − b ≥ b's arrival − a's departure: 100 − 110 and 200 − 205; ≤ b's departure − a's
        // arrival: 160 − 0 and 300 − 50.
        pair.add(&presence(0, 110), &presence(100, 160));
        pair.add(&presence(50, 205), &presence(200, 300));
        assert_eq!(pair.bounds(), Some((-5, 160)));
        assert_eq!(pair.estimate(), Some(72.5), "the median of 50 and 95");
        let mut agreeing = Pair::default();
        for _ in 0..3 {
            agreeing.add(&presence(0, 10), &presence(2, 60));
        }
        assert_eq!(agreeing.bounds(), Some((-8, 60)));
        assert_eq!(agreeing.estimate(), Some(50.0));
        agreeing.add(&presence(5, 100), &presence(6, 8));
        assert_eq!(agreeing.bounds(), Some((-8, 3)));
        assert_eq!(agreeing.estimate(), Some(3.0), "the median 50 moved inside");
    }

    #[test]
    fn bounds_tighter_than_the_completions_agree_give_their_middle() {
        let mut pair = Pair::default();
        pair.add(&presence(0, 110), &presence(100, 160));
        pair.add(&presence(50, 205), &presence(200, 300));
        pair.add(&presence(0, 10), &presence(2, 3));
        // Differences 50, 95, −7: median 50, spread 45; the bounds (−5, 3) are 4 either side.
        assert_eq!(pair.bounds(), Some((-5, 3)));
        assert_eq!(pair.estimate(), Some(-1.0));
    }

    #[test]
    fn offsets_chain_through_nodes_that_share_collectives() {
        let edge = |other, difference| Edge {
            other,
            difference,
            bounds: None,
            weight: 1.0,
        };
        // offset(1) − offset(0) = 40, offset(2) − offset(1) = −15; node 3 shares nothing.
        let edges = vec![
            vec![edge(1, -40.0)],
            vec![edge(0, 40.0), edge(2, 15.0)],
            vec![edge(1, -15.0)],
            vec![],
        ];
        let refs = references(&edges);
        assert_eq!(refs, BTreeSet::from([0]));
        let offsets = solve(&edges, &refs);
        assert!((offsets[1] - 40.0).abs() < 1.0 && (offsets[2] - 25.0).abs() < 1.0);
        assert_eq!(offsets[3], 0.0);
    }
}
