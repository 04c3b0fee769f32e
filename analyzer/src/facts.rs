//! What the logs say beyond spans: where each rank ran, how it ended, what it dropped, and every
//! way the run is incomplete. Findings and the report read these; nothing here does I/O.

use crate::run::{LogState, NodeData, RunData};
use crate::timeline::Timeline;
use pinch_traces::{NodeId, Rank, RankExit, Truncation};
use std::collections::BTreeMap;
use std::fmt;

/// Run facts the analysis needs besides the timeline.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunFacts {
    /// The node of every rank: placed by the manifest, or seen in a node's log.
    pub rank_nodes: BTreeMap<Rank, NodeId>,
    /// How each rank ended, for ranks whose `RankEnd` was read.
    pub exits: BTreeMap<Rank, RankExit>,
    /// Spans each rank could not record, for ranks that reported a count.
    pub dropped_spans: BTreeMap<Rank, u64>,
    pub problems: Vec<Problem>,
}

impl RunFacts {
    pub fn from_run(run: &RunData) -> RunFacts {
        let mut facts = RunFacts::default();
        for node in &run.nodes {
            for rank in node.all_ranks() {
                facts.rank_nodes.insert(rank, node.node);
            }
            for (rank, life) in &node.ranks {
                if let Some(exit) = &life.exit {
                    facts.exits.insert(*rank, exit.clone());
                }
            }
            facts.dropped_spans.extend(&node.dropped_spans);
            facts.problems.extend(node_problems(node));
        }
        facts
    }

    /// Facts of a timeline alone (a synthetic or imported one): nodes from spans, nothing else.
    pub fn from_timeline(timeline: &Timeline) -> RunFacts {
        RunFacts {
            rank_nodes: timeline.spans.iter().map(|s| (s.rank, s.node)).collect(),
            ..RunFacts::default()
        }
    }

    /// Whether no problem touches this rank.
    pub fn is_complete(&self, rank: Rank) -> bool {
        let node = self.rank_nodes.get(&rank).copied();
        !self.problems.iter().any(|p| p.affects(rank, node))
    }
}

/// One way a node or rank is incomplete.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub node: NodeId,
    /// The rank concerned; `None` when the problem is the whole node's.
    pub rank: Option<Rank>,
    pub kind: ProblemKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ProblemKind {
    LogMissing {
        reason: String,
    },
    LogCut(Truncation),
    /// The log was read whole but has no `NodeEnd`: the agent stopped between records.
    NoNodeEnd,
    /// The log has no `NodeStart`, so its times could not be anchored to wall-clock time.
    NoClockAnchor,
    RankFailed {
        code: Option<i32>,
        signal: Option<i32>,
        message: String,
    },
    /// A `RankStart` without a `RankEnd`.
    RankNotEnded,
    /// Placed on a node whose log is whole, yet never started.
    RankNotStarted,
}

impl Problem {
    /// Lost data or a failed rank: the numbers of the run cannot be trusted as a whole.
    pub fn is_critical(&self) -> bool {
        matches!(
            self.kind,
            ProblemKind::LogMissing { .. }
                | ProblemKind::LogCut(_)
                | ProblemKind::RankFailed { .. }
        )
    }

    /// Whether the problem concerns a rank (placed on `node`).
    pub fn affects(&self, rank: Rank, node: Option<NodeId>) -> bool {
        match self.rank {
            Some(r) => r == rank,
            None => node == Some(self.node),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.rank {
            Some(rank) => write!(f, "{rank} ({}): ", self.node)?,
            None => write!(f, "{}: ", self.node)?,
        }
        match &self.kind {
            ProblemKind::LogMissing { reason } => f.write_str(reason),
            ProblemKind::LogCut(t) => write!(
                f,
                "log cut at byte {}, {} bytes dropped ({})",
                t.offset, t.dropped_bytes, t.reason
            ),
            ProblemKind::NoNodeEnd => {
                f.write_str("log has no NodeEnd record: the agent did not finish")
            }
            ProblemKind::NoClockAnchor => f.write_str(
                "log has no NodeStart record: its times are aligned to the run's start, not measured",
            ),
            ProblemKind::RankFailed {
                code,
                signal,
                message,
            } => write_failure(f, *code, *signal, message),
            ProblemKind::RankNotEnded => {
                f.write_str("has a RankStart but no RankEnd record: the rank did not finish")
            }
            ProblemKind::RankNotStarted => f.write_str("never started (no RankStart record)"),
        }
    }
}

fn write_failure(
    f: &mut fmt::Formatter<'_>,
    code: Option<i32>,
    signal: Option<i32>,
    message: &str,
) -> fmt::Result {
    // The agent's message starts with the status when it states it ("killed by signal 6; ...");
    // say it once.
    let stated = match (code, signal) {
        (Some(c), _) => message.starts_with(&format!("exited with code {c}")),
        (None, Some(s)) => message.starts_with(&format!("killed by signal {s}")),
        (None, None) => false,
    };
    if stated {
        return f.write_str(message);
    }
    match (code, signal) {
        (Some(c), Some(s)) => write!(f, "failed with exit code {c} and signal {s}")?,
        (Some(c), None) => write!(f, "failed with exit code {c}")?,
        (None, Some(s)) => write!(f, "killed by signal {s}")?,
        (None, None) => f.write_str("failed")?,
    }
    if message.is_empty() {
        Ok(())
    } else {
        write!(f, ": {message}")
    }
}

/// Every problem of one node and of the ranks on it.
fn node_problems(node: &NodeData) -> Vec<Problem> {
    let of_node = |kind| Problem {
        node: node.node,
        rank: None,
        kind,
    };
    let mut problems = Vec::new();
    match &node.log {
        LogState::Missing { reason } => problems.push(of_node(ProblemKind::LogMissing {
            reason: reason.clone(),
        })),
        LogState::Cut(t) => problems.push(of_node(ProblemKind::LogCut(t.clone()))),
        LogState::Whole if node.end_ns.is_none() => problems.push(of_node(ProblemKind::NoNodeEnd)),
        LogState::Whole => {}
    }
    if node.anchor.is_none() && node.has_spans() {
        problems.push(of_node(ProblemKind::NoClockAnchor));
    }
    problems.extend(node.all_ranks().into_iter().filter_map(|rank| {
        rank_problem(node, rank).map(|kind| Problem {
            node: node.node,
            rank: Some(rank),
            kind,
        })
    }));
    problems
}

fn rank_problem(node: &NodeData, rank: Rank) -> Option<ProblemKind> {
    let life = node.ranks.get(&rank);
    match life.and_then(|l| l.exit.as_ref()) {
        Some(RankExit::Success) => None,
        Some(RankExit::Failed {
            code,
            signal,
            message,
        }) => Some(ProblemKind::RankFailed {
            code: *code,
            signal: *signal,
            message: message.clone(),
        }),
        None if life.is_some_and(|l| l.pid.is_some()) => Some(ProblemKind::RankNotEnded),
        None if node.log == LogState::Whole => Some(ProblemKind::RankNotStarted),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;
    use pinch_traces::Record;

    fn problems_of(node: &NodeData) -> Vec<String> {
        node_problems(node)
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn a_clean_node_has_no_problem() {
        let run = testkit::run_data(&[&[0, 1]]);
        let facts = RunFacts::from_run(&run);
        assert_eq!(facts.problems, vec![]);
        assert!(facts.is_complete(Rank(1)));
    }

    #[test]
    fn a_cut_log_names_its_offset_and_reason_and_touches_all_its_ranks() {
        let mut run = testkit::run_data(&[&[0], &[1, 2]]);
        run.nodes[1].log = LogState::Cut(Truncation {
            offset: 5123,
            dropped_bytes: 37,
            reason: "the log ends inside a record".into(),
        });
        assert_eq!(
            problems_of(&run.nodes[1]),
            vec!["node 1: log cut at byte 5123, 37 bytes dropped (the log ends inside a record)"]
        );
        let facts = RunFacts::from_run(&run);
        assert!(facts.is_complete(Rank(0)));
        assert!(!facts.is_complete(Rank(2)));
        assert!(facts.problems.iter().all(Problem::is_critical));
    }

    #[test]
    fn failed_unfinished_and_unstarted_ranks_are_named() {
        let mut node = testkit::node_data(1, &[3, 4, 5]);
        node.end_ns = None;
        node.ranks.remove(&Rank(5));
        node.apply(Record::RankEnd {
            rank: Rank(3),
            exit: RankExit::Failed {
                code: None,
                signal: Some(9),
                message: "out of memory".into(),
            },
            at_ns: 1,
        });
        if let Some(life) = node.ranks.get_mut(&Rank(4)) {
            life.exit = None;
        }
        assert_eq!(
            problems_of(&node),
            vec![
                "node 1: log has no NodeEnd record: the agent did not finish",
                "rank 3 (node 1): killed by signal 9: out of memory",
                "rank 4 (node 1): has a RankStart but no RankEnd record: the rank did not finish",
                "rank 5 (node 1): never started (no RankStart record)",
            ]
        );
    }
}
