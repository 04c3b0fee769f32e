//! Synthetic runs and timelines for the unit tests, built so their answers are known by hand:
//! a healthy step is 800 ns of compute then a 150 ns all-reduce, ten steps 1 µs apart.

use crate::run::{NodeData, RunData};
use crate::timeline::{NameId, TimedSpan, Timeline};
use pinch_traces::{
    Category, ClockAnchor, CollectiveAttrs, CollectiveKind, CounterSourceStatus, Lane, NodeEntry,
    NodeId, NodeLog, OpId, Rank, RankExit, Record, RunManifest, SourceState, Span, SpanAttrs,
    Versions, WorkloadSpec,
};
use std::collections::BTreeMap;

/// The names of `timeline`'s table: one per category, then "all_reduce".
const NAMES: [&str; 6] = [
    "compute",
    "communication",
    "memory",
    "host",
    "wait",
    "all_reduce",
];
const STEPS: u64 = 10;
const STEP_NS: u64 = 1_000;
const WALL_AT_ANCHOR_NS: u64 = 1_700_000_000_000_000_000;

/// A span on node 0 named after its category.
pub fn span(rank: u32, category: Category, start_ns: i64, duration_ns: u64) -> TimedSpan {
    let index = Category::ALL
        .iter()
        .position(|c| *c == category)
        .unwrap_or(0);
    TimedSpan {
        rank: Rank(rank),
        node: NodeId(0),
        lane: Lane(0),
        category,
        name: NameId(index as u32),
        start_ns,
        duration_ns,
        attrs: SpanAttrs::default(),
    }
}

/// An all-reduce of two participants on node 0.
pub fn collective(rank: u32, seq: u64, start_ns: i64, duration_ns: u64, bytes: u64) -> TimedSpan {
    let mut s = span(rank, Category::Communication, start_ns, duration_ns);
    s.name = NameId(5);
    s.attrs.collective = Some(all_reduce(seq, 2, bytes));
    s
}

fn all_reduce(seq: u64, participants: u32, message_bytes: u64) -> CollectiveAttrs {
    CollectiveAttrs {
        kind: CollectiveKind::AllReduce,
        group: 0,
        seq,
        participants,
        peer: None,
        message_bytes,
        wait_ns: None,
    }
}

pub fn timeline(spans: Vec<TimedSpan>) -> Timeline {
    let names = NAMES.iter().map(|n| n.to_string()).collect();
    Timeline::from_parts(0, names, spans, Vec::new())
}

/// Each step: compute for `compute_ns`, then an all-reduce until the step's `busy_ns`.
fn stepped_timeline(ranks: u32, compute_ns: u64, busy_ns: u64) -> Timeline {
    let mut spans = Vec::new();
    for step in 0..STEPS {
        let t0 = (step * STEP_NS) as i64;
        for rank in 0..ranks {
            spans.push(span(rank, Category::Compute, t0, compute_ns));
            let start = t0 + compute_ns as i64;
            let mut c = collective(rank, step, start, busy_ns - compute_ns, 1 << 20);
            c.attrs.collective = Some(all_reduce(step, ranks, 1 << 20));
            spans.push(c);
        }
    }
    timeline(spans)
}

/// About 80% compute, 15% communication, 5% idle on every rank, all alike.
pub fn healthy_timeline(ranks: u32) -> Timeline {
    stepped_timeline(ranks, 800, 950)
}

/// 40% compute and 60% communication on every rank, nothing overlapped.
pub fn comm_heavy_timeline(ranks: u32) -> Timeline {
    stepped_timeline(ranks, 400, STEP_NS)
}

/// A manifest with one node per entry of `nodes`, each with those ranks.
pub fn manifest(nodes: &[&[u32]]) -> RunManifest {
    RunManifest {
        format_version: pinch_traces::manifest::MANIFEST_VERSION,
        run_id: "test-run".into(),
        started_at_unix_ns: WALL_AT_ANCHOR_NS,
        nodes: nodes
            .iter()
            .enumerate()
            .map(|(i, ranks)| NodeEntry {
                node: NodeId(i as u32),
                host: format!("host{i}"),
                ranks: ranks.iter().map(|r| Rank(*r)).collect(),
                log_file: format!("node-{i}.pnl"),
            })
            .collect(),
        workload: WorkloadSpec {
            name: "decode-tp".into(),
            model: "tiny".into(),
            parameters: BTreeMap::new(),
        },
        versions: Versions::current("0.1.0"),
        counter_sources: vec![CounterSourceStatus {
            node: NodeId(0),
            source: "nvml".into(),
            state: SourceState::NotRead {
                reason: "no gpu".into(),
            },
        }],
    }
}

/// The anchor of node `node`: monotonic clocks differ per node, wall clocks agree.
fn anchor(node: u32) -> ClockAnchor {
    ClockAnchor {
        mono_ns: 1_000_000_000 * u64::from(node + 1),
        wall_ns: WALL_AT_ANCHOR_NS,
        read_uncertainty_ns: 10,
    }
}

/// The healthy steps of one rank on its node's monotonic clock.
fn rank_spans(node: u32, rank: u32, participants: u32) -> Vec<Span> {
    let base = anchor(node).mono_ns + 1_000;
    let span = |op: u32, start_ns: u64, duration_ns: u64, attrs: SpanAttrs| Span {
        rank: Rank(rank),
        lane: Lane(0),
        category: if op == 0 {
            Category::Compute
        } else {
            Category::Communication
        },
        op: OpId(op),
        start_ns,
        duration_ns,
        attrs,
    };
    (0..STEPS)
        .flat_map(|step| {
            let t0 = base + step * STEP_NS;
            let compute = SpanAttrs {
                flops: Some(1_000_000),
                ..SpanAttrs::default()
            };
            let comm = SpanAttrs {
                collective: Some(all_reduce(step, participants, 1 << 20)),
                ..SpanAttrs::default()
            };
            [span(0, t0, 800, compute), span(1, t0 + 800, 150, comm)]
        })
        .collect()
}

/// A whole, healthy node log: start, names, spans, drop counts, ends.
pub fn node_records(node: u32, ranks: &[u32], participants: u32) -> Vec<Record> {
    let mut records = vec![Record::NodeStart {
        node: NodeId(node),
        host: format!("host{node}"),
        ranks: ranks.iter().map(|r| Rank(*r)).collect(),
        agent_pid: 100,
        anchor: anchor(node),
    }];
    for &rank in ranks {
        records.push(Record::RankStart {
            rank: Rank(rank),
            pid: 1_000 + rank,
            anchor: anchor(node),
        });
        for (op, name) in [(0, "matmul"), (1, "all_reduce")] {
            records.push(Record::OpName {
                rank: Rank(rank),
                op: OpId(op),
                name: name.into(),
            });
        }
    }
    for &rank in ranks {
        records.push(Record::Spans(rank_spans(node, rank, participants)));
        records.push(Record::Dropped {
            rank: Rank(rank),
            spans: 0,
        });
    }
    records.extend(end_records(ranks));
    records
}

fn end_records(ranks: &[u32]) -> Vec<Record> {
    let mut records: Vec<Record> = ranks
        .iter()
        .map(|&rank| Record::RankEnd {
            rank: Rank(rank),
            exit: RankExit::Success,
            at_ns: 2_000_000_000_000,
        })
        .collect();
    records.push(Record::NodeEnd {
        at_ns: 2_000_000_000_001,
    });
    records
}

fn from_records(entry: &NodeEntry, records: Vec<Record>) -> NodeData {
    let log = NodeLog {
        version: pinch_traces::NODE_LOG_VERSION,
        records,
        truncation: None,
    };
    NodeData::from_log(entry, log)
}

/// A node whose ranks started and ended cleanly, without any span.
pub fn node_data(node: u32, ranks: &[u32]) -> NodeData {
    let records: Vec<Record> = node_records(node, ranks, 1)
        .into_iter()
        .filter(|r| !matches!(r, Record::Spans(_)))
        .collect();
    from_records(&manifest(&[ranks]).nodes[0], records).renamed(node)
}

impl NodeData {
    /// The same node under another id (the manifest built for it numbered it 0).
    fn renamed(mut self, node: u32) -> NodeData {
        self.node = NodeId(node);
        self.log_file = format!("node-{node}.pnl");
        self
    }
}

/// A clean run without spans.
pub fn run_data(nodes: &[&[u32]]) -> RunData {
    let manifest = manifest(nodes);
    let nodes = (0..nodes.len() as u32)
        .zip(nodes)
        .map(|(i, ranks)| node_data(i, ranks))
        .collect();
    RunData { manifest, nodes }
}

/// A clean, healthy run: every rank does the healthy steps, all-reducing with every other.
pub fn run_with_spans(nodes: &[&[u32]]) -> RunData {
    let manifest = manifest(nodes);
    let participants = nodes.iter().map(|r| r.len() as u32).sum();
    let nodes = manifest
        .nodes
        .iter()
        .zip(nodes)
        .map(|(entry, ranks)| from_records(entry, node_records(entry.node.0, ranks, participants)))
        .collect();
    RunData { manifest, nodes }
}

/// How much of a skewed step's compute varies: 0 to this, by a fixed hash of (step, rank).
const JITTER_NS: u64 = 200_000;

/// A fixed scramble of (step, rank) into `0..modulo`, so ranks take turns arriving last.
fn jitter(step: u64, rank: u32, modulo: u64) -> u64 {
    (step.wrapping_mul(2_654_435_761) ^ u64::from(rank).wrapping_mul(40_503)) % modulo
}

/// Two nodes of one rank each, `steps` steps 1 ms apart: compute of 300 µs plus jitter, then an
/// all-reduce the last arrival releases: it leaves 20 µs after arriving, its peer 15 µs later
/// (the last message's flight), each give or take 5 µs; rank 1, woken from its wait on a busy
/// node, up to `wake_late_ns` later still. Both nodes' anchors are read at the same true instant, but node
/// 1's wall clock reads `skew_ns` ahead.
pub fn skewed_run(steps: u64, skew_ns: i64, wake_late_ns: u64) -> RunData {
    let manifest = manifest(&[&[0], &[1]]);
    let nodes = manifest
        .nodes
        .iter()
        .map(|entry| {
            let node = entry.node.0;
            let mut node_anchor = anchor(node);
            node_anchor.wall_ns =
                WALL_AT_ANCHOR_NS.saturating_add_signed(skew_ns * i64::from(node));
            let mut records = node_records(node, &[node], 2);
            for record in &mut records {
                match record {
                    Record::NodeStart { anchor, .. } | Record::RankStart { anchor, .. } => {
                        *anchor = node_anchor
                    }
                    Record::Spans(spans) => *spans = skewed_spans(node, steps, wake_late_ns),
                    _ => {}
                }
            }
            from_records(entry, records)
        })
        .collect();
    RunData { manifest, nodes }
}

/// Rank `rank`'s spans (on node `rank`) of `skewed_run`, on its node's monotonic clock.
fn skewed_spans(rank: u32, steps: u64, wake_late_ns: u64) -> Vec<Span> {
    let base = anchor(rank).mono_ns;
    let arrival = |step: u64, r: u32| step * 1_000_000 + 300_000 + jitter(step, r, JITTER_NS);
    let span = |op: u32, category, start_ns: u64, end_ns: u64, attrs| Span {
        rank: Rank(rank),
        lane: Lane(0),
        category,
        op: OpId(op),
        start_ns: base + start_ns,
        duration_ns: end_ns - start_ns,
        attrs,
    };
    (0..steps)
        .flat_map(|step| {
            let own = arrival(step, rank);
            let last = own.max(arrival(step, 1 - rank));
            let flight = match (own == last, rank, wake_late_ns) {
                (true, _, _) => 0,
                (false, 1, late) if late > 0 => 15_000 + jitter(step, 13, late),
                (false, _, _) => 15_000,
            };
            let end = last + 20_000 + flight + jitter(step, rank + 7, 10_000) - 5_000;
            let comm = SpanAttrs {
                collective: Some(all_reduce(step, 2, 1 << 16)),
                ..SpanAttrs::default()
            };
            [
                span(
                    0,
                    Category::Compute,
                    step * 1_000_000,
                    own,
                    SpanAttrs::default(),
                ),
                span(1, Category::Communication, own, end, comm),
            ]
        })
        .collect()
}

/// A send or receive of `bytes` between `rank` and `peer` on group 1, on node 0.
pub fn p2p(
    rank: u32,
    kind: CollectiveKind,
    peer: u32,
    start_ns: i64,
    duration_ns: u64,
    bytes: u64,
) -> TimedSpan {
    let mut s = span(rank, Category::Communication, start_ns, duration_ns);
    s.name = NameId(1);
    s.attrs.collective = Some(CollectiveAttrs {
        kind,
        group: 1,
        seq: 0,
        participants: 2,
        peer: Some(Rank(peer)),
        message_bytes: bytes,
        wait_ns: None,
    });
    s
}

/// A receive on `rank` from `peer` that waited `wait_ns` of its `duration_ns`.
pub fn recv(rank: u32, peer: u32, start_ns: i64, duration_ns: u64, wait_ns: u64) -> TimedSpan {
    let mut s = span(rank, Category::Communication, start_ns, duration_ns);
    s.attrs.collective = Some(pinch_traces::CollectiveAttrs {
        kind: pinch_traces::CollectiveKind::Recv,
        group: 9,
        seq: start_ns as u64,
        participants: 2,
        peer: Some(pinch_traces::Rank(peer)),
        message_bytes: 4096,
        wait_ns: Some(wait_ns),
    });
    s
}

/// A compute span as a node log holds it: op `op` of rank `rank`, on the node's clock.
pub fn log_span(rank: u32, op: u32, start_ns: u64, duration_ns: u64) -> pinch_traces::Span {
    pinch_traces::Span {
        rank: Rank(rank),
        lane: pinch_traces::Lane(0),
        category: pinch_traces::Category::Compute,
        op: pinch_traces::OpId(op),
        start_ns,
        duration_ns,
        attrs: pinch_traces::SpanAttrs::default(),
    }
}
