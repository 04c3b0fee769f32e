//! The steps of a rank, read off its spans, and what each step did (prefill, decode or both),
//! read off the tokens its replica produced at the step's end.
//!
//! Every op a serving rank records carries its step (`attrs.step`). A step's window runs from its
//! first span (the leader's wait for requests or its scheduling) to the next step's first span; its
//! work runs from its first span other than the `idle` op to its last span's end. A leader
//! commits the step's sampled tokens after its last span and before the next step's first, so
//! the tokens stamped inside a step's window are that step's: a request's first token ends its
//! prefill, any later token is a decode. Spans of `weights.init` (stamped step 0) are startup,
//! not a step; a "step" without compute (the broadcast of the stop signal) is not one either.

use super::PhaseKind;
use crate::idle::{IDLE_OP, SCHEDULE_OP};
use crate::timeline::{NameId, TimedSpan, Timeline};
use pinch_traces::{Category, NodeId, Rank};

/// The op that loads a rank's weights, before its first step.
pub const WEIGHTS_INIT_OP: &str = "weights.init";

/// One step of one rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Step {
    pub step: u32,
    /// From the step's first span to the next step's first span (`i64::MAX` for the last).
    pub window: (i64, i64),
    /// From the first span that is not the `idle` op to the last span's end.
    pub work: (i64, i64),
    pub has_compute: bool,
}

/// The op ids the step reader looks for.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepOps {
    pub idle: Option<NameId>,
    pub weights_init: Option<NameId>,
    pub schedule: Option<NameId>,
}

impl StepOps {
    pub fn of(timeline: &Timeline) -> StepOps {
        let find = |op: &str| {
            let index = timeline.names.iter().position(|n| n == op)?;
            u32::try_from(index).ok().map(NameId)
        };
        StepOps {
            idle: find(IDLE_OP),
            weights_init: find(WEIGHTS_INIT_OP),
            schedule: find(SCHEDULE_OP),
        }
    }
}

/// What one pass over a rank's spans learns.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RankSteps {
    /// The steps with compute, in order.
    pub steps: Vec<Step>,
    /// Whether the rank scheduled (it leads a replica).
    pub leads: bool,
    /// The end of its last `weights.init` span.
    pub weights_end_ns: Option<i64>,
    /// Its first span's start and its last span end; `None` without spans.
    pub extent: Option<(i64, i64)>,
}

/// Reads one rank's steps; `spans` are sorted by start.
pub fn rank_steps(spans: &[TimedSpan], ops: StepOps) -> RankSteps {
    let mut out = RankSteps::default();
    let mut open: Option<Step> = None;
    for span in spans {
        let (start, end) = out.extent.unwrap_or((span.start_ns, span.end_ns()));
        out.extent = Some((start, end.max(span.end_ns())));
        if Some(span.name) == ops.weights_init {
            out.weights_end_ns = out.weights_end_ns.max(Some(span.end_ns()));
            continue;
        }
        out.leads |= Some(span.name) == ops.schedule;
        let Some(step) = span.attrs.step else {
            continue;
        };
        if open.is_some_and(|o| o.step != step) {
            close(&mut out.steps, open.take(), span.start_ns);
        }
        let current = open.get_or_insert(Step {
            step,
            window: (span.start_ns, i64::MAX),
            work: (i64::MAX, i64::MIN),
            has_compute: false,
        });
        if Some(span.name) != ops.idle {
            current.work.0 = current.work.0.min(span.start_ns);
            current.work.1 = current.work.1.max(span.end_ns());
            current.has_compute |= span.category == Category::Compute;
        }
    }
    close(&mut out.steps, open, i64::MAX);
    out
}

fn close(steps: &mut Vec<Step>, open: Option<Step>, next_start_ns: i64) {
    if let Some(mut step) = open.filter(|s| s.has_compute) {
        step.window.1 = next_start_ns;
        steps.push(step);
    }
}

/// The tokens one replica produced, on the timeline's time base.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplicaTokens {
    /// The node whose log recorded the replica's requests (its leader's).
    pub node: NodeId,
    pub replica: u32,
    /// When each token was produced and whether it was its request's first; sorted by time.
    pub tokens: Vec<(i64, bool)>,
}

/// The kind of each step from the tokens produced in its window: first tokens only (or none,
/// a chunk of a long prompt) prefill, later tokens only decode, both mixed.
pub fn classify(steps: &[Step], tokens: &[(i64, bool)]) -> Vec<PhaseKind> {
    let mut next = 0;
    steps
        .iter()
        .map(|step| {
            next += tokens[next..].partition_point(|(t, _)| *t < step.window.0);
            let inside = tokens[next..].partition_point(|(t, _)| *t < step.window.1);
            let window = &tokens[next..next + inside];
            next += inside;
            let first = window.iter().any(|(_, first)| *first);
            let later = window.iter().any(|(_, first)| !*first);
            match (first, later) {
                (_, false) => PhaseKind::Prefill,
                (false, true) => PhaseKind::Decode,
                (true, true) => PhaseKind::Mixed,
            }
        })
        .collect()
}

/// Pairs each node's leading ranks with the replicas whose requests that node recorded, both in
/// ascending order (a replica's leader is the lowest rank of the replica, and replicas are
/// numbered in rank order).
pub fn leaders_of<'t>(
    leaders: &[(Rank, NodeId)],
    replicas: &'t [ReplicaTokens],
) -> Vec<(Rank, &'t ReplicaTokens)> {
    let mut nodes: Vec<NodeId> = leaders.iter().map(|(_, n)| *n).collect();
    nodes.dedup();
    nodes
        .into_iter()
        .flat_map(|node| {
            let mut on_node: Vec<&ReplicaTokens> =
                replicas.iter().filter(|r| r.node == node).collect();
            on_node.sort_by_key(|r| r.replica);
            leaders
                .iter()
                .filter(move |(_, n)| *n == node)
                .map(|(rank, _)| *rank)
                .zip(on_node)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{span, timeline};
    use Category::*;

    fn at(mut s: TimedSpan, step: u32) -> TimedSpan {
        s.attrs.step = Some(step);
        s
    }

    fn named(mut s: TimedSpan, id: u32) -> TimedSpan {
        s.name = NameId(id);
        s
    }

    /// Names 6..9: idle, weights.init, schedule.
    fn with_ops(spans: Vec<TimedSpan>) -> Timeline {
        let mut t = timeline(spans);
        t.names
            .extend([IDLE_OP, WEIGHTS_INIT_OP, SCHEDULE_OP].map(String::from));
        t
    }

    #[test]
    fn steps_run_from_first_span_to_next_and_skip_weights_and_stop() {
        let t = with_ops(vec![
            at(named(span(0, Host, 0, 50), 7), 0),   // weights.init
            at(named(span(0, Wait, 60, 40), 6), 0),  // idle: opens step 0's window
            at(named(span(0, Host, 100, 10), 8), 0), // schedule
            at(span(0, Compute, 110, 90), 0),
            at(named(span(0, Host, 210, 10), 8), 1),
            at(span(0, Compute, 220, 30), 1),
            at(span(0, Communication, 260, 5), 2), // the stop broadcast: no compute
        ]);
        let r = rank_steps(&t.spans, StepOps::of(&t));
        assert!(r.leads);
        assert_eq!((r.weights_end_ns, r.extent), (Some(50), Some((0, 265))));
        let s: Vec<_> = r.steps.iter().map(|s| (s.step, s.window, s.work)).collect();
        assert_eq!(
            s,
            vec![(0, (60, 210), (100, 200)), (1, (210, 260), (210, 250))]
        );
    }

    #[test]
    fn tokens_in_a_window_tell_prefill_decode_or_mixed() {
        let step = |a: i64, b: i64| Step {
            step: 0,
            window: (a, b),
            work: (a, b),
            has_compute: true,
        };
        let steps = [step(0, 10), step(10, 20), step(20, 30), step(30, 40)];
        let tokens = [(5, true), (15, false), (16, false), (25, true), (26, false)];
        use PhaseKind::*;
        assert_eq!(
            classify(&steps, &tokens),
            vec![Prefill, Decode, Mixed, Prefill]
        );
    }

    #[test]
    fn leaders_pair_with_their_nodes_replicas_in_order() {
        let replica = |node: u32, replica: u32| ReplicaTokens {
            node: NodeId(node),
            replica,
            tokens: Vec::new(),
        };
        let replicas = [replica(1, 3), replica(0, 0), replica(1, 2)];
        let leaders = [
            (Rank(0), NodeId(0)),
            (Rank(4), NodeId(1)),
            (Rank(6), NodeId(1)),
        ];
        let paired: Vec<(u32, u32)> = leaders_of(&leaders, &replicas)
            .iter()
            .map(|(rank, r)| (rank.0, r.replica))
            .collect();
        assert_eq!(paired, vec![(0, 0), (4, 2), (6, 3)]);
    }
}
