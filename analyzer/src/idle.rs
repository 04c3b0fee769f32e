//! Where a pinch rank's idle time went: waiting for a peer, for the host, for requests, or other.
//!
//! HTA splits a GPU stream's idle time (the gaps between its kernels) into host wait (the CPU
//! launched the next kernel late), kernel wait (short launch gaps) and other (see `hta::idle`).
//! A pinch rank is a CPU process running the model itself, so the analogue of "a kernel runs" is
//! "the rank moves the model forward": compute, memory traffic, and the part of a collective that
//! moved data. Everything else in the rank's wall time is its idle time, split by what it was
//! blocked on:
//! - peer: the waiting part of a collective, send or receive (its `wait_ns`, taken as the start of
//!   the span: a rank waits for the last peer, then moves data), and `wait` spans other than the
//!   `idle` op (barriers, rendezvous);
//! - host: host-category spans (scheduling, weights loading: the model is not running because the
//!   rank's own host work is), and the waiting part of `plan.broadcast` on the ranks that do not
//!   schedule, where they wait for their leader's scheduler to hand them the next step (the
//!   leader itself, the broadcast's root, waits there for its peers to arrive: peer);
//! - requests: the `idle` op, a replica leader with nothing to serve waiting for the router;
//! - other: time no span covers (the rank's own untraced code between ops; HTA's kernel wait).
//!
//! Overlapping time counts once, busy first, then host, peer, requests. One pass over the rank's
//! spans, which `Timeline` keeps sorted by start; no allocation per span.

use crate::timeline::{NameId, TimedSpan, Timeline};
use pinch_traces::Category;
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// The op whose waiting is the leader's scheduler feeding the replica.
pub const PLAN_BROADCAST_OP: &str = "plan.broadcast";
/// The op only a replica's leader records, before it broadcasts each step's plan.
pub const SCHEDULE_OP: &str = "schedule";
/// The op a replica leader records while it waits for requests.
pub const IDLE_OP: &str = "idle";

/// A rank's idle time by cause, in nanoseconds; the causes sum to `idle_ns`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdleBreakdownNs {
    /// Wall time not spent moving the model forward (compute, memory, data transfer).
    pub idle_ns: u64,
    pub peer_ns: u64,
    pub host_ns: u64,
    pub requests_ns: u64,
    pub other_ns: u64,
}

impl IdleBreakdownNs {
    /// A part's share of the idle time; `None` when the rank never idled.
    pub fn share_pct(&self, part_ns: u64) -> Option<f64> {
        crate::stats::pct(part_ns as f64, self.idle_ns as f64)
    }
}

/// The classes of covered time, highest precedence first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Busy = 0,
    Host = 1,
    Peer = 2,
    Requests = 3,
}

const CLASSES: usize = 4;

/// The name ids the classification looks for; `None` when the timeline never names the op.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IdleOps {
    plan_broadcast: Option<NameId>,
    idle: Option<NameId>,
    schedule: Option<NameId>,
}

impl IdleOps {
    pub fn of(timeline: &Timeline) -> IdleOps {
        let find = |op: &str| {
            let index = timeline.names.iter().position(|n| n == op)?;
            u32::try_from(index).ok().map(NameId)
        };
        IdleOps {
            plan_broadcast: find(PLAN_BROADCAST_OP),
            idle: find(IDLE_OP),
            schedule: find(SCHEDULE_OP),
        }
    }
}

/// One rank's idle breakdown; `None` without spans. `spans` are sorted by start.
pub fn idle_breakdown(spans: &[TimedSpan], ops: IdleOps) -> Option<IdleBreakdownNs> {
    let first = spans.first()?.start_ns;
    let mut sweep = Sweep::new(first);
    let mut last_end_ns = first;
    for span in spans {
        last_end_ns = last_end_ns.max(span.end_ns());
        sweep.add_span(span, ops);
    }
    sweep.flush_until(i64::MAX);
    sweep.advance(last_end_ns);
    Some(sweep.finish())
}

/// Walks time forward, giving each instant to the highest class covering it.
///
/// Pieces arrive in start order, so for each class the latest end seen (`frontier`) covers
/// everything from the current instant up to it: the piece that reaches that end started
/// before now. The transfer part of a collective starts after its waiting part, later than the
/// span's start: it waits in `pending` until time reaches it.
struct Sweep {
    now_ns: i64,
    frontier_ns: [i64; CLASSES],
    covered_ns: [u64; CLASSES],
    other_ns: u64,
    pending: BinaryHeap<Reverse<(i64, i64)>>,
    /// Whether the rank has scheduled: a leader schedules before its first plan broadcast.
    leads: bool,
}

impl Sweep {
    fn new(start_ns: i64) -> Sweep {
        Sweep {
            now_ns: start_ns,
            frontier_ns: [start_ns; CLASSES],
            covered_ns: [0; CLASSES],
            other_ns: 0,
            pending: BinaryHeap::new(),
            leads: false,
        }
    }

    fn add_span(&mut self, span: &TimedSpan, ops: IdleOps) {
        let (start, end) = (span.start_ns, span.end_ns());
        self.flush_until(start);
        self.leads |= Some(span.name) == ops.schedule;
        match span.category {
            Category::Compute | Category::Memory => self.add(Class::Busy, start, end),
            Category::Host => self.add(Class::Host, start, end),
            Category::Wait if Some(span.name) == ops.idle => self.add(Class::Requests, start, end),
            Category::Wait => self.add(Class::Peer, start, end),
            Category::Communication => {
                let wait_ns = span.attrs.collective.and_then(|c| c.wait_ns).unwrap_or(0);
                let waited_until = start.saturating_add_unsigned(wait_ns.min(span.duration_ns));
                let class = if Some(span.name) == ops.plan_broadcast && !self.leads {
                    Class::Host
                } else {
                    Class::Peer
                };
                self.add(class, start, waited_until);
                if waited_until < end {
                    self.pending.push(Reverse((waited_until, end)));
                }
            }
        }
    }

    /// Adds the deferred transfer pieces that start at or before `until`, in start order.
    fn flush_until(&mut self, until: i64) {
        while let Some(&Reverse((start, end))) = self.pending.peek() {
            if start > until {
                break;
            }
            self.pending.pop();
            self.add(Class::Busy, start, end);
        }
    }

    fn add(&mut self, class: Class, start: i64, end: i64) {
        if end <= start {
            return;
        }
        self.advance(start);
        let frontier = &mut self.frontier_ns[class as usize];
        *frontier = (*frontier).max(end);
    }

    /// Attributes the time from now to `to`.
    fn advance(&mut self, to: i64) {
        while self.now_ns < to {
            let now = self.now_ns;
            match self.frontier_ns.iter().position(|f| *f > now) {
                Some(class) => {
                    let until = to.min(self.frontier_ns[class]);
                    self.covered_ns[class] += until.abs_diff(now);
                    self.now_ns = until;
                }
                None => {
                    self.other_ns += to.abs_diff(now);
                    self.now_ns = to;
                }
            }
        }
    }

    fn finish(self) -> IdleBreakdownNs {
        let c = self.covered_ns;
        let host_ns = c[Class::Host as usize];
        let peer_ns = c[Class::Peer as usize];
        let requests_ns = c[Class::Requests as usize];
        IdleBreakdownNs {
            idle_ns: host_ns + peer_ns + requests_ns + self.other_ns,
            peer_ns,
            host_ns,
            requests_ns,
            other_ns: self.other_ns,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{collective, span, timeline};
    use Category::*;

    /// A timeline whose table also names the `idle` and `plan.broadcast` ops (ids 6 and 7).
    fn named(spans: Vec<TimedSpan>) -> Timeline {
        let mut t = timeline(spans);
        t.names.push(IDLE_OP.into());
        t.names.push(PLAN_BROADCAST_OP.into());
        t
    }

    fn waited(mut s: TimedSpan, wait_ns: u64) -> TimedSpan {
        if let Some(c) = s.attrs.collective.as_mut() {
            c.wait_ns = Some(wait_ns);
        }
        s
    }

    fn renamed(mut s: TimedSpan, id: u32) -> TimedSpan {
        s.name = NameId(id);
        s
    }

    #[test]
    fn idle_time_splits_into_peer_host_requests_and_other() {
        let t = named(vec![
            renamed(span(0, Wait, 0, 100), 6),                    // requests
            span(0, Host, 100, 20),                               // host (schedule)
            renamed(waited(collective(0, 0, 120, 50, 8), 30), 7), // host 30, busy 20
            span(0, Compute, 170, 200),
            waited(collective(0, 1, 370, 100, 64), 60), // peer 60, busy 40
            span(0, Wait, 480, 10),                     // peer (a barrier); 10 ns gap before
            span(0, Memory, 490, 10),
        ]);
        let b = idle_breakdown(&t.spans, IdleOps::of(&t));
        let expected = IdleBreakdownNs {
            idle_ns: 100 + 50 + 70 + 10,
            peer_ns: 70,
            host_ns: 50,
            requests_ns: 100,
            other_ns: 10,
        };
        assert_eq!(b, Some(expected));
        assert_eq!(
            expected.share_pct(expected.requests_ns),
            Some(100.0 / 230.0 * 100.0)
        );
    }

    #[test]
    fn the_leader_waits_for_peers_in_its_own_plan_broadcast() {
        let mut t = named(vec![
            renamed(span(0, Host, 0, 10), 8), // schedule: rank 0 leads
            renamed(waited(collective(0, 0, 10, 30, 8), 20), 7), // peer 20, busy 10
            renamed(waited(collective(1, 0, 0, 40, 8), 30), 7), // host 30, busy 10
        ]);
        t.names.push(SCHEDULE_OP.into());
        let ops = IdleOps::of(&t);
        let leader = idle_breakdown(t.spans_of(pinch_traces::Rank(0)), ops).unwrap_or_default();
        let follower = idle_breakdown(t.spans_of(pinch_traces::Rank(1)), ops).unwrap_or_default();
        assert_eq!((leader.host_ns, leader.peer_ns), (10, 20));
        assert_eq!((follower.host_ns, follower.peer_ns), (30, 0));
    }

    #[test]
    fn busy_time_under_a_wait_is_not_idle() {
        // Compute on another lane during a collective's wait: the rank was not idle then.
        let t = named(vec![
            waited(collective(0, 0, 0, 100, 64), 80),
            span(0, Compute, 10, 50),
            span(0, Host, 90, 30),
        ]);
        let b = idle_breakdown(&t.spans, IdleOps::of(&t)).unwrap_or_default();
        // 0..10 peer, 10..60 busy, 60..80 peer, 80..100 busy (transfer), 100..120 host.
        assert_eq!((b.peer_ns, b.host_ns, b.other_ns), (30, 20, 0));
        assert_eq!(b.idle_ns, 50);
    }

    #[test]
    fn without_the_ops_named_waits_are_peers_and_broadcasts_are_peers_too() {
        let t = timeline(vec![
            span(0, Wait, 0, 10),
            waited(collective(0, 0, 10, 10, 8), 10),
        ]);
        let b = idle_breakdown(&t.spans, IdleOps::of(&t)).unwrap_or_default();
        assert_eq!((b.peer_ns, b.requests_ns, b.idle_ns), (20, 0, 20));
        assert_eq!(idle_breakdown(&[], IdleOps::default()), None);
    }

    #[test]
    fn a_collective_without_wait_ns_counts_as_transfer() {
        let t = timeline(vec![collective(0, 0, 0, 100, 64)]);
        let b = idle_breakdown(&t.spans, IdleOps::of(&t)).unwrap_or_default();
        assert_eq!(b, IdleBreakdownNs::default());
        assert_eq!(b.share_pct(0), None);
    }
}
