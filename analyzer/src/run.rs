//! `RunData`: a run as its manifest and node logs describe it, with each node's records split by
//! kind. Building it from records is pure; reading the files is `load`'s job.

use pinch_traces::{
    ClockAnchor, CounterDef, CounterId, CounterSample, CounterSourceStatus, DeviceDef, DeviceId,
    ExpertTokens, NodeEntry, NodeId, NodeLog, OpId, Rank, RankExit, Record, RequestRecord,
    RunManifest, Span, Truncation,
};
use std::collections::{BTreeMap, BTreeSet};

/// A whole run: the manifest and one `NodeData` per manifest node, in manifest order.
#[derive(Clone, Debug, PartialEq)]
pub struct RunData {
    pub manifest: RunManifest,
    pub nodes: Vec<NodeData>,
}

/// How much of a node's log could be read.
#[derive(Clone, Debug, PartialEq)]
pub enum LogState {
    /// Read to its last byte, which ended a record.
    Whole,
    /// Every record before `Truncation::offset` was read; the tail was dropped.
    Cut(Truncation),
    /// There is no log to read.
    Missing { reason: String },
}

/// What the node log says about one rank process.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RankLife {
    /// Whether a `RankStart` record was seen, and the pid it named.
    pub pid: Option<u32>,
    /// The rank process's own clock anchor, from `RankStart`.
    pub anchor: Option<ClockAnchor>,
    /// How the process ended; `None` when no `RankEnd` record was seen.
    pub exit: Option<RankExit>,
    /// The node's monotonic clock when the process ended.
    pub end_ns: Option<u64>,
}

/// One node's log, split by record kind.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeData {
    pub node: NodeId,
    pub host: String,
    /// The log's path relative to the run directory, as the manifest names it.
    pub log_file: String,
    /// The ranks the manifest places on this node.
    pub placed_ranks: Vec<Rank>,
    /// From `Record::NodeStart`; `None` when the log has no such record.
    pub anchor: Option<ClockAnchor>,
    pub spans: Vec<Span>,
    /// The ranks of spans that were moved out of `spans` onto a timeline
    /// (`timeline::merge_taking_spans`), so that `all_ranks` still names them.
    pub moved_span_ranks: BTreeSet<Rank>,
    pub samples: Vec<CounterSample>,
    pub op_names: BTreeMap<(Rank, OpId), String>,
    pub counters: BTreeMap<CounterId, CounterDef>,
    pub devices: BTreeMap<DeviceId, DeviceDef>,
    pub sources: Vec<CounterSourceStatus>,
    pub ranks: BTreeMap<Rank, RankLife>,
    /// Spans each rank could not record: the largest of its cumulative `Dropped` counts.
    pub dropped_spans: BTreeMap<Rank, u64>,
    /// The last `Output` record of each rank.
    pub outputs: BTreeMap<Rank, Vec<Vec<u32>>>,
    /// Requests served by this node's replica leaders, in the order they finished.
    pub requests: Vec<RequestRecord>,
    /// The per-step expert token counts of this node's ranks, in log order.
    pub expert_tokens: Vec<ExpertTokens>,
    pub log: LogState,
    /// The node's monotonic clock at `Record::NodeEnd`; `None` when the agent did not finish.
    pub end_ns: Option<u64>,
}

impl NodeData {
    /// A node whose log could not be found: only the manifest's facts are known.
    pub fn without_log(entry: &NodeEntry, reason: String) -> NodeData {
        NodeData {
            node: entry.node,
            host: entry.host.clone(),
            log_file: entry.log_file.clone(),
            placed_ranks: entry.ranks.clone(),
            anchor: None,
            spans: Vec::new(),
            moved_span_ranks: BTreeSet::new(),
            samples: Vec::new(),
            op_names: BTreeMap::new(),
            counters: BTreeMap::new(),
            devices: BTreeMap::new(),
            sources: Vec::new(),
            ranks: BTreeMap::new(),
            dropped_spans: BTreeMap::new(),
            outputs: BTreeMap::new(),
            requests: Vec::new(),
            expert_tokens: Vec::new(),
            log: LogState::Missing { reason },
            end_ns: None,
        }
    }

    /// A node from the records of its log, in log order.
    pub fn from_log(entry: &NodeEntry, log: NodeLog) -> NodeData {
        let mut node = NodeData::without_log(entry, String::new());
        node.log = match log.truncation {
            Some(t) => LogState::Cut(t),
            None => LogState::Whole,
        };
        for record in log.records {
            node.apply(record);
        }
        node
    }

    /// Files one record; `Progress` records only matter while the run is live.
    pub fn apply(&mut self, record: Record) {
        match record {
            Record::NodeStart { host, anchor, .. } => {
                self.host = host;
                self.anchor = Some(anchor);
            }
            Record::RankStart { rank, pid, anchor } => {
                let life = self.rank_mut(rank);
                life.pid = Some(pid);
                life.anchor = Some(anchor);
            }
            Record::OpName { rank, op, name } => {
                self.op_names.insert((rank, op), name);
            }
            Record::Device(def) => {
                self.devices.insert(def.id, def);
            }
            Record::Counter(def) => {
                self.counters.insert(def.id, def);
            }
            // A later status of a source (it failed mid-run) replaces the earlier one, keeping
            // the notes the source had when it opened.
            Record::Source(status) => {
                match self.sources.iter_mut().find(|s| s.source == status.source) {
                    Some(earlier) => *earlier = status,
                    None => self.sources.push(status),
                }
            }
            Record::Spans(spans) => self.spans.extend(spans),
            Record::Samples(samples) => self.samples.extend(samples),
            Record::Dropped { rank, spans } => {
                let dropped = self.dropped_spans.entry(rank).or_insert(0);
                *dropped = (*dropped).max(spans);
            }
            Record::Progress { .. } => {}
            Record::Output { rank, tokens } => {
                self.outputs.insert(rank, tokens);
            }
            Record::Request { request, .. } => self.requests.push(request),
            Record::RankEnd { rank, exit, at_ns } => {
                let life = self.rank_mut(rank);
                life.exit = Some(exit);
                life.end_ns = Some(at_ns);
            }
            Record::NodeEnd { at_ns } => self.end_ns = Some(at_ns),
            Record::ExpertTokens(tokens) => self.expert_tokens.push(tokens),
        }
    }

    fn rank_mut(&mut self, rank: Rank) -> &mut RankLife {
        self.ranks.entry(rank).or_default()
    }

    /// Every rank this node knows of: placed by the manifest, or seen in its records.
    pub fn all_ranks(&self) -> Vec<Rank> {
        let mut ranks: BTreeSet<Rank> = self.placed_ranks.iter().copied().collect();
        ranks.extend(self.ranks.keys().copied());
        ranks.extend(&self.moved_span_ranks);
        // A node's spans come in long runs of one rank, so skipping repeats of the last rank
        // keeps this a scan, not a set insertion per span.
        let mut last = None;
        for span in &self.spans {
            if last != Some(span.rank) {
                last = Some(span.rank);
                ranks.insert(span.rank);
            }
        }
        ranks.into_iter().collect()
    }

    /// Whether the log carried any span (still here or moved onto a timeline).
    pub fn has_spans(&self) -> bool {
        !self.spans.is_empty() || !self.moved_span_ranks.is_empty()
    }

    /// Moves the spans out (onto a timeline); `ranks` are the ranks they carried, which
    /// `all_ranks` goes on naming.
    pub fn take_spans(&mut self, ranks: impl IntoIterator<Item = Rank>) -> Vec<Span> {
        self.moved_span_ranks.extend(ranks);
        std::mem::take(&mut self.spans)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;

    #[test]
    fn dropped_counts_are_cumulative_so_the_largest_wins() {
        let mut node = testkit::node_data(0, &[0]);
        for spans in [3, 9, 7] {
            node.apply(Record::Dropped {
                rank: Rank(0),
                spans,
            });
        }
        assert_eq!(node.dropped_spans.get(&Rank(0)), Some(&9));
    }

    #[test]
    fn rank_end_and_node_end_are_filed() {
        let entry = &testkit::manifest(&[&[0]]).nodes[0];
        let mut node = NodeData::without_log(entry, String::new());
        node.apply(Record::RankEnd {
            rank: Rank(0),
            exit: RankExit::Success,
            at_ns: 5,
        });
        node.apply(Record::Progress {
            rank: Rank(0),
            done: 1,
            total: 2,
        });
        node.apply(Record::NodeEnd { at_ns: 6 });
        let life = node.ranks.get(&Rank(0)).cloned().unwrap_or_default();
        assert_eq!(life.exit, Some(RankExit::Success));
        assert_eq!(life.pid, None);
        assert_eq!(node.end_ns, Some(6));
    }
}
