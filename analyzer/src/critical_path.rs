//! The critical path of each step across ranks and collectives: the chain of work that set the
//! step's length, which a rank's own timeline cannot show (HTA's critical path covers one rank).
//!
//! For each step (the spans carrying `attrs.step`), the walk starts at the end of the span that
//! ends last, on any rank, and goes back in time along that rank's spans. At a span that had to
//! wait for another rank (a collective where a peer arrived later, a receive whose send started
//! later, a rendezvous send whose receive started later), only the part after that peer's
//! arrival is on the path; the walk jumps to that peer at its arrival and goes on there, through
//! whatever kept it late. A gap between two spans of the rank on the path is idle time on the
//! path. The walk ends at the first span of the step on the rank it has reached, so the path's
//! length is the step's length as the ranks that mattered saw it.
//!
//! Who a span waited for: at an all-reduce, all-gather, reduce-scatter or all-to-all, and at a
//! broadcast's root, the member that arrived last; at a broadcast elsewhere, the root (the
//! group's first member). The report keeps the slowest step's path, segment by segment, the
//! median step length, and over all steps the time on the path per rank, per category and per
//! (rank, op) — not every step's segments, as runs have thousands of steps. Steps carry the
//! same numbers in every data-parallel replica, so a step here is one step number across them.

use crate::exchanges::{Collectives, Messages};
use crate::stats::{pct, percentile};
use crate::timeline::{NameId, TimedSpan, Timeline};
use pinch_traces::{Category, CollectiveKind, Rank};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// How many (rank, op) contributors `CriticalPathReport::by_op` keeps.
pub const TOP_CONTRIBUTORS: usize = 20;

/// What a stretch of the path was: a span's category, or idle between spans.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathCategory {
    Compute,
    Communication,
    Memory,
    Host,
    Wait,
    Idle,
}

impl PathCategory {
    pub const ALL: [PathCategory; 6] = [
        PathCategory::Compute,
        PathCategory::Communication,
        PathCategory::Memory,
        PathCategory::Host,
        PathCategory::Wait,
        PathCategory::Idle,
    ];

    pub fn name(self) -> &'static str {
        match self {
            PathCategory::Idle => "idle",
            PathCategory::Compute => "compute",
            PathCategory::Communication => "communication",
            PathCategory::Memory => "memory",
            PathCategory::Host => "host",
            PathCategory::Wait => "wait",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl From<Category> for PathCategory {
    fn from(c: Category) -> PathCategory {
        match c {
            Category::Compute => PathCategory::Compute,
            Category::Communication => PathCategory::Communication,
            Category::Memory => PathCategory::Memory,
            Category::Host => PathCategory::Host,
            Category::Wait => PathCategory::Wait,
        }
    }
}

/// One stretch of a path, on one rank.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathSegment {
    pub rank: u32,
    /// The span's op; `None` for idle time between spans.
    pub op: Option<String>,
    pub category: PathCategory,
    pub start_ns: i64,
    pub duration_ns: u64,
}

/// One step's path, in time order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StepPath {
    pub step: u32,
    pub start_ns: i64,
    pub length_ns: u64,
    pub segments: Vec<PathSegment>,
}

/// Time on the path of one rank's op, over all steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathOpShare {
    pub rank: u32,
    /// `None` for idle time between the rank's spans.
    pub op: Option<String>,
    pub category: PathCategory,
    pub time_ns: u64,
    /// Of `CriticalPathReport::total_ns`.
    pub share_pct: f64,
}

/// Time on the path of one category, over all steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathCategoryShare {
    pub category: PathCategory,
    pub time_ns: u64,
    pub share_pct: f64,
}

/// Time on the path of one rank, over all steps.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PathRankShare {
    pub rank: u32,
    pub time_ns: u64,
    pub share_pct: f64,
    /// `time_ns` per category (categories never on the path left out).
    pub category_ns: BTreeMap<PathCategory, u64>,
}

/// The critical paths of a run's steps, summed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CriticalPathReport {
    /// Steps walked.
    pub steps: u64,
    /// The paths' lengths, summed.
    pub total_ns: u64,
    /// Nearest-rank median of the step lengths; `None` without steps.
    pub median_step_ns: Option<u64>,
    /// The longest step's path; `None` without steps.
    pub slowest: Option<StepPath>,
    /// Time on the path per rank, most first.
    pub by_rank: Vec<PathRankShare>,
    /// Time on the path per category, most first (categories never on it left out).
    pub by_category: Vec<PathCategoryShare>,
    /// Time on the path per (rank, op), most first, at most `TOP_CONTRIBUTORS`.
    pub by_op: Vec<PathOpShare>,
}

/// The critical path of every step of the timeline.
pub fn critical_path(timeline: &Timeline) -> CriticalPathReport {
    let collectives = Collectives::new(timeline);
    let messages = Messages::new(timeline);
    critical_path_from(timeline, &collectives, &messages)
}

/// `critical_path` over indexes already built.
pub(crate) fn critical_path_from(
    timeline: &Timeline,
    collectives: &Collectives,
    messages: &Messages,
) -> CriticalPathReport {
    let walker = Walker {
        spans: &timeline.spans,
        collectives,
        messages,
    };
    let runs = step_runs(&timeline.spans);
    let mut totals = Totals::default();
    let mut lengths: Vec<(u64, u32)> = Vec::new();
    for of_step in runs.chunk_by(|a, b| a.step == b.step) {
        let step = of_step[0].step;
        let length_ns = walker.walk(step, of_step, |seg| totals.add(seg)).length_ns;
        lengths.push((length_ns, step));
    }
    let slowest = lengths
        .iter()
        .max_by_key(|(length, step)| (*length, std::cmp::Reverse(*step)))
        .map(|&(_, step)| walker.recorded(step, &runs, timeline));
    let mut sorted: Vec<u64> = lengths.iter().map(|(l, _)| *l).collect();
    sorted.sort_unstable();
    totals.into_report(
        timeline,
        lengths.len() as u64,
        percentile(&sorted, 50.0),
        slowest,
    )
}

/// The spans of one rank in one step: `Timeline::spans[from..to]` (spans of other steps may lie
/// between, when a rank interleaves steps).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Run {
    step: u32,
    rank: Rank,
    from: u32,
    to: u32,
}

/// Every (step, rank)'s span range, sorted by (step, rank); one pass and one sort.
fn step_runs(spans: &[TimedSpan]) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    for (i, s) in spans.iter().enumerate() {
        let (Some(step), Ok(i)) = (s.attrs.step, u32::try_from(i)) else {
            continue;
        };
        match runs.last_mut() {
            Some(r) if r.step == step && r.rank == s.rank => r.to = i + 1,
            _ => runs.push(Run {
                step,
                rank: s.rank,
                from: i,
                to: i + 1,
            }),
        }
    }
    runs.sort_unstable();
    let mut merged: Vec<Run> = Vec::with_capacity(runs.len());
    for run in runs {
        match merged.last_mut() {
            Some(m) if (m.step, m.rank) == (run.step, run.rank) => m.to = m.to.max(run.to),
            _ => merged.push(run),
        }
    }
    merged
}

/// One stretch found by the walk; `name` is `None` for idle time.
#[derive(Clone, Copy, Debug)]
struct Segment {
    rank: Rank,
    name: Option<NameId>,
    category: PathCategory,
    start_ns: i64,
    duration_ns: u64,
}

/// Where a walk ended up.
#[derive(Clone, Copy, Debug)]
struct Walked {
    start_ns: i64,
    length_ns: u64,
}

#[derive(Debug)]
struct Walker<'a> {
    spans: &'a [TimedSpan],
    collectives: &'a Collectives,
    messages: &'a Messages,
}

impl Walker<'_> {
    /// Walks one step back from its last end, handing each segment to `visit` (latest first).
    fn walk(&self, step: u32, runs: &[Run], mut visit: impl FnMut(Segment)) -> Walked {
        let Some((mut rank, end_ns)) = self.last_end(step, runs) else {
            return Walked {
                start_ns: 0,
                length_ns: 0,
            };
        };
        let mut t = end_ns;
        while let Some(i) = self.previous(step, runs, rank, t) {
            let s = &self.spans[i];
            let end = s.end_ns().min(t);
            if end < t {
                visit(segment(rank, None, PathCategory::Idle, end, t));
            }
            let name = Some(s.name);
            match self
                .waited_for(i)
                .filter(|&(r, at)| r != rank && at > s.start_ns && at < end)
            {
                Some((peer, arrival)) => {
                    visit(segment(rank, name, s.category.into(), arrival, end));
                    (rank, t) = (peer, arrival);
                }
                None => {
                    visit(segment(rank, name, s.category.into(), s.start_ns, end));
                    t = s.start_ns;
                }
            }
        }
        Walked {
            start_ns: t,
            length_ns: u64::try_from(end_ns.saturating_sub(t)).unwrap_or(0),
        }
    }

    /// The rank whose span of the step ends last, and that end.
    fn last_end(&self, step: u32, runs: &[Run]) -> Option<(Rank, i64)> {
        runs.iter()
            .flat_map(|r| &self.spans[r.from as usize..r.to as usize])
            .filter(|s| s.attrs.step == Some(step))
            .map(|s| (s.end_ns(), s.rank))
            .max_by_key(|&(end, rank)| (end, std::cmp::Reverse(rank)))
            .map(|(end, rank)| (rank, end))
    }

    /// The index of `rank`'s last span of the step that starts before `t`.
    fn previous(&self, step: u32, runs: &[Run], rank: Rank, t: i64) -> Option<usize> {
        let run = runs[runs.binary_search_by_key(&rank, |r| r.rank).ok()?];
        let range = &self.spans[run.from as usize..run.to as usize];
        let before = range.partition_point(|s| s.start_ns < t);
        let k = range[..before]
            .iter()
            .rposition(|s| s.attrs.step == Some(step))?;
        Some(run.from as usize + k)
    }

    /// The rank span `i` waited for, and when it arrived; `None` for a span that waits for no
    /// one (or whose peers' spans were not recorded).
    fn waited_for(&self, i: usize) -> Option<(Rank, i64)> {
        let c = self.spans[i].attrs.collective?;
        let index = u32::try_from(i).ok()?;
        let peer = match c.kind {
            CollectiveKind::Recv => self.messages.send_of(index)?,
            CollectiveKind::Send if c.wait_ns.is_some_and(|w| w > 0) => {
                self.messages.recv_of(index)?
            }
            CollectiveKind::Send => return None,
            kind => self.last_member(kind, c.group, c.seq, self.spans[i].rank)?,
        };
        let s = &self.spans[peer as usize];
        Some((s.rank, s.start_ns))
    }

    /// The span of the member a collective's `rank` waited for: the last to arrive, or at a
    /// broadcast, for members other than the root, the root.
    fn last_member(&self, kind: CollectiveKind, group: u32, seq: u64, rank: Rank) -> Option<u32> {
        let members = self.collectives.of(group, seq);
        let root = members.first()?;
        if kind == CollectiveKind::Broadcast && root.rank != rank {
            return Some(root.index);
        }
        members
            .iter()
            .max_by_key(|m| {
                (
                    self.spans[m.index as usize].start_ns,
                    std::cmp::Reverse(m.rank),
                )
            })
            .map(|m| m.index)
    }

    /// One step's path with its segments, in time order.
    fn recorded(&self, step: u32, runs: &[Run], timeline: &Timeline) -> StepPath {
        let from = runs.partition_point(|r| r.step < step);
        let to = runs.partition_point(|r| r.step <= step);
        let mut segments = Vec::new();
        let walked = self.walk(step, &runs[from..to], |seg| {
            segments.push(PathSegment {
                rank: seg.rank.0,
                op: seg.name.map(|n| timeline.name(n).to_string()),
                category: seg.category,
                start_ns: seg.start_ns,
                duration_ns: seg.duration_ns,
            })
        });
        segments.reverse();
        StepPath {
            step,
            start_ns: walked.start_ns,
            length_ns: walked.length_ns,
            segments,
        }
    }
}

fn segment(
    rank: Rank,
    name: Option<NameId>,
    category: PathCategory,
    from: i64,
    to: i64,
) -> Segment {
    Segment {
        rank,
        name,
        category,
        start_ns: from,
        duration_ns: u64::try_from(to.saturating_sub(from)).unwrap_or(0),
    }
}

/// Time on the paths per rank, per category and per (rank, op).
#[derive(Debug, Default)]
struct Totals {
    by_op: HashMap<(Rank, Option<NameId>), (PathCategory, u64)>,
    by_category: [u64; 6],
    by_rank: HashMap<Rank, [u64; 6]>,
    total_ns: u64,
}

impl Totals {
    fn add(&mut self, seg: Segment) {
        let d = seg.duration_ns;
        let op = self
            .by_op
            .entry((seg.rank, seg.name))
            .or_insert((seg.category, 0));
        op.1 += d;
        self.by_category[seg.category.index()] += d;
        self.by_rank.entry(seg.rank).or_default()[seg.category.index()] += d;
        self.total_ns += d;
    }

    fn into_report(
        self,
        timeline: &Timeline,
        steps: u64,
        median_step_ns: Option<u64>,
        slowest: Option<StepPath>,
    ) -> CriticalPathReport {
        CriticalPathReport {
            steps,
            total_ns: self.total_ns,
            median_step_ns,
            slowest,
            by_rank: self.rank_shares(),
            by_category: self.category_shares(),
            by_op: self.op_shares(timeline),
        }
    }

    /// `ns` as a share of the time on all paths.
    fn share(&self, ns: u64) -> f64 {
        pct(ns as f64, self.total_ns as f64).unwrap_or(0.0)
    }

    fn rank_shares(&self) -> Vec<PathRankShare> {
        let mut by_rank: Vec<PathRankShare> = self
            .by_rank
            .iter()
            .map(|(rank, per_category)| {
                let time_ns = per_category.iter().sum();
                PathRankShare {
                    rank: rank.0,
                    time_ns,
                    share_pct: self.share(time_ns),
                    category_ns: PathCategory::ALL
                        .into_iter()
                        .map(|c| (c, per_category[c.index()]))
                        .filter(|(_, ns)| *ns > 0)
                        .collect(),
                }
            })
            .collect();
        by_rank.sort_by_key(|r| (std::cmp::Reverse(r.time_ns), r.rank));
        by_rank
    }

    fn category_shares(&self) -> Vec<PathCategoryShare> {
        let mut by_category: Vec<PathCategoryShare> = PathCategory::ALL
            .iter()
            .map(|&category| PathCategoryShare {
                category,
                time_ns: self.by_category[category.index()],
                share_pct: self.share(self.by_category[category.index()]),
            })
            .filter(|c| c.time_ns > 0)
            .collect();
        by_category.sort_by_key(|c| (std::cmp::Reverse(c.time_ns), c.category));
        by_category
    }

    /// The `TOP_CONTRIBUTORS` (rank, op) pairs with most time on the paths.
    fn op_shares(&self, timeline: &Timeline) -> Vec<PathOpShare> {
        let mut by_op: Vec<PathOpShare> = self
            .by_op
            .iter()
            .map(|(&(rank, name), &(category, time_ns))| PathOpShare {
                rank: rank.0,
                op: name.map(|n| timeline.name(n).to_string()),
                category,
                time_ns,
                share_pct: self.share(time_ns),
            })
            .collect();
        let key = |o: &PathOpShare| (std::cmp::Reverse(o.time_ns), o.rank, o.op.clone());
        by_op.sort_by_cached_key(key);
        by_op.truncate(TOP_CONTRIBUTORS);
        by_op
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{collective, p2p, span, timeline};

    fn in_step(mut s: TimedSpan, step: u32) -> TimedSpan {
        s.attrs.step = Some(step);
        s
    }

    /// Three steps of 1 µs: rank 0 computes 100 ns, rank 1 400 ns, then they all-reduce; the
    /// all-reduce ends 50 ns after rank 1 arrives.
    fn slow_rank_1() -> Timeline {
        let mut spans = Vec::new();
        for step in 0..3u32 {
            let t0 = i64::from(step) * 1_000;
            spans.push(in_step(span(0, Category::Compute, t0, 100), step));
            spans.push(in_step(span(1, Category::Compute, t0, 400), step));
            spans.push(in_step(
                collective(0, u64::from(step), t0 + 100, 350, 64),
                step,
            ));
            spans.push(in_step(
                collective(1, u64::from(step), t0 + 400, 50, 64),
                step,
            ));
        }
        timeline(spans)
    }

    #[test]
    fn the_path_goes_through_the_rank_the_all_reduce_waited_for() {
        let r = critical_path(&slow_rank_1());
        assert_eq!(
            (r.steps, r.total_ns, r.median_step_ns),
            (3, 1_350, Some(450))
        );
        let slowest = r.slowest.unwrap();
        assert_eq!(
            (slowest.step, slowest.start_ns, slowest.length_ns),
            (0, 0, 450)
        );
        let segments: Vec<(u32, Option<&str>, i64, u64)> = slowest
            .segments
            .iter()
            .map(|s| (s.rank, s.op.as_deref(), s.start_ns, s.duration_ns))
            .collect();
        assert_eq!(
            segments,
            vec![
                (1, Some("compute"), 0, 400),
                (0, Some("all_reduce"), 400, 50)
            ]
        );
        let ranks: Vec<(u32, u64)> = r.by_rank.iter().map(|s| (s.rank, s.time_ns)).collect();
        assert_eq!(ranks, vec![(1, 1_200), (0, 150)]);
        assert_eq!(
            r.by_rank[0].category_ns,
            BTreeMap::from([(PathCategory::Compute, 1_200)])
        );
        let top = &r.by_op[0];
        assert_eq!(
            (top.rank, top.op.as_deref(), top.category),
            (1, Some("compute"), PathCategory::Compute)
        );
        assert!((top.share_pct - 1_200.0 / 13.5).abs() < 1e-9);
        let categories: Vec<PathCategory> = r.by_category.iter().map(|c| c.category).collect();
        assert_eq!(
            categories,
            vec![PathCategory::Compute, PathCategory::Communication]
        );
    }

    #[test]
    fn a_receive_jumps_to_its_sender_and_gaps_are_idle() {
        let t = timeline(vec![
            in_step(span(0, Category::Compute, 0, 100), 0),
            in_step(p2p(0, CollectiveKind::Send, 1, 100, 10, 64), 0),
            in_step(p2p(1, CollectiveKind::Recv, 0, 0, 300, 64), 0),
            in_step(span(1, Category::Compute, 350, 50), 0),
        ]);
        let slowest = critical_path(&t).slowest.unwrap();
        let segments: Vec<(u32, PathCategory, i64, u64)> = slowest
            .segments
            .iter()
            .map(|s| (s.rank, s.category, s.start_ns, s.duration_ns))
            .collect();
        assert_eq!(
            segments,
            vec![
                (0, PathCategory::Compute, 0, 100),
                (1, PathCategory::Communication, 100, 200),
                (1, PathCategory::Idle, 300, 50),
                (1, PathCategory::Compute, 350, 50),
            ]
        );
        assert_eq!(slowest.length_ns, 400);
        assert_eq!(slowest.segments[2].op, None);
    }

    #[test]
    fn a_rank_that_did_not_wait_keeps_the_path() {
        // Rank 1 arrives first: its all-reduce waited for rank 0, whose compute is the path.
        let t = timeline(vec![
            in_step(span(0, Category::Compute, 0, 300), 7),
            in_step(collective(0, 0, 300, 20, 64), 7),
            in_step(span(1, Category::Memory, 0, 50), 7),
            in_step(collective(1, 0, 50, 280, 64), 7),
        ]);
        let r = critical_path(&t);
        let slowest = r.slowest.unwrap();
        let ranks: Vec<(u32, PathCategory)> = slowest
            .segments
            .iter()
            .map(|s| (s.rank, s.category))
            .collect();
        assert_eq!(
            ranks,
            vec![(0, PathCategory::Compute), (1, PathCategory::Communication)]
        );
        assert_eq!((slowest.step, slowest.length_ns), (7, 330));
    }

    #[test]
    fn spans_without_steps_have_no_path() {
        let r = critical_path(&timeline(vec![span(0, Category::Compute, 0, 10)]));
        assert_eq!(r, CriticalPathReport::default());
    }
}
