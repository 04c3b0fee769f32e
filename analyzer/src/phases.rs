//! The run split into phases (startup, prefill, decode, mixed, idle), with each node's counters
//! over each phase: CPU and GPU utilization, memory bandwidth, NIC throughput against the link.
//!
//! Phases are stretches of the run's time base, the same for every node. Startup runs from the
//! run's first span to the end of the last rank's weights loading. After it, each replica leader's
//! steps (see `steps`) are prefill, decode or mixed by the tokens they produced; where the steps
//! of several replicas overlap and differ, the time is mixed. A run without served requests has
//! steps of unknown kind (`steps`), read from its lowest rank. Time no step covers is idle when
//! the gap lasts at least `IDLE_GAP_NS`; a shorter gap (the leader committing tokens between two
//! steps) belongs to the phase before it. All stretches of one kind make one `PhaseReport`, whose
//! counters are integrated over exactly those stretches (see `counters`).

pub(crate) mod counters;
pub mod steps;

use crate::align::NodeClockReport;
use crate::run::RunData;
use crate::timeline::{Series, Timeline, node_anchor};
use pinch_traces::{NodeId, Rank};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
pub use steps::{RankSteps, ReplicaTokens, Step, StepOps, rank_steps};

/// Gaps between steps at least this long are idle phases (1 ms: far above the few microseconds
/// a leader spends committing tokens between two steps).
pub const IDLE_GAP_NS: i64 = 1_000_000;

/// The counters the phases read.
const CPU_COUNTER: &str = "cpu.utilization";
const CPU_DEVICE_PREFIX: &str = "cpu";
const GPU_COUNTER: &str = "gpu.utilization";
const GPU_DRAM_COUNTER: &str = "gpu.dram_bandwidth_utilization";
const NET_RX_COUNTER: &str = "net.rx_bytes";
const NET_TX_COUNTER: &str = "net.tx_bytes";

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhaseKind {
    /// From the run's first span to the end of the last rank's weights loading.
    Startup,
    /// Steps that only prefilled prompts (their requests' first tokens, or prompt chunks).
    Prefill,
    /// Steps that prefilled some requests and decoded others, or replicas doing each at once.
    Mixed,
    /// Steps that only decoded.
    Decode,
    /// Steps of a run without served requests: their kind is unknown.
    Steps,
    /// No step running for at least `IDLE_GAP_NS`.
    Idle,
}

impl PhaseKind {
    pub fn name(self) -> &'static str {
        match self {
            PhaseKind::Startup => "startup",
            PhaseKind::Prefill => "prefill",
            PhaseKind::Mixed => "mixed",
            PhaseKind::Decode => "decode",
            PhaseKind::Steps => "steps",
            PhaseKind::Idle => "idle",
        }
    }
}

/// One uninterrupted stretch of a phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stretch {
    pub start_ns: i64,
    pub duration_ns: u64,
}

/// One node's counters over one phase; `None` where no sample covers the phase.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodePhase {
    pub node: u32,
    /// The mean over the node's cores of "cpu.utilization".
    pub cpu_utilization_pct: Option<f64>,
    /// The mean over the node's GPUs of NVML's "gpu.utilization".
    pub gpu_utilization_pct: Option<f64>,
    /// The mean over the node's GPUs of their DRAM bandwidth's share of its peak (NVML GPM).
    pub memory_bandwidth_pct: Option<f64>,
    /// Why `memory_bandwidth_pct` is `None`.
    pub memory_bandwidth_missing: Option<String>,
    /// Received and sent bytes per second, summed over the node's interfaces.
    pub nic_rx_bytes_per_s: Option<f64>,
    pub nic_tx_bytes_per_s: Option<f64>,
    /// The busier direction as a share of the calibrated TCP link's peak; `None` without a
    /// calibration or without NIC samples.
    pub nic_link_pct: Option<f64>,
}

/// Every stretch of one kind of phase, with the counters over them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PhaseReport {
    pub kind: PhaseKind,
    /// The stretches' total.
    pub duration_ns: u64,
    /// `duration_ns` as a share of the run's wall time.
    pub share_pct: Option<f64>,
    /// Steps of this kind (each replica leader's, or the lowest rank's).
    pub steps: u64,
    pub stretches: Vec<Stretch>,
    pub nodes: Vec<NodePhase>,
}

/// What the phases need besides the timeline.
#[derive(Clone, Copy, Debug)]
pub struct PhaseInput<'a> {
    pub timeline: &'a Timeline,
    /// Each replica's tokens, on the timeline's time base (empty for a run without requests).
    pub tokens: &'a [ReplicaTokens],
    /// The nodes to report counters for.
    pub nodes: &'a [NodeId],
    /// The calibrated peak of a TCP link between nodes, bytes per second.
    pub link_bytes_per_s: Option<f64>,
}

/// The run's phases, in `PhaseKind` order; empty for a run without spans.
pub fn phase_reports(input: &PhaseInput) -> Vec<PhaseReport> {
    let timeline = input.timeline;
    let ops = StepOps::of(timeline);
    let ranks: Vec<(Rank, NodeId, RankSteps)> = timeline
        .ranks()
        .into_iter()
        .filter_map(|rank| {
            let spans = timeline.spans_of(rank);
            Some((rank, spans.first()?.node, rank_steps(spans, ops)))
        })
        .collect();
    let Some(wall) = run_extent(&ranks) else {
        return Vec::new();
    };
    let startup_end = ranks.iter().filter_map(|r| r.2.weights_end_ns).max();
    let kinded = kinded_steps(&ranks, input.tokens);
    let stretches = stretches(wall, startup_end, &kinded);
    by_kind(input, wall, &stretches, &kinded)
}

/// The run's first span start and last span end.
fn run_extent(ranks: &[(Rank, NodeId, RankSteps)]) -> Option<(i64, i64)> {
    let extents = ranks.iter().filter_map(|r| r.2.extent);
    extents.reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
}

/// The work interval and kind of every reference step: each leader's with tokens, classified;
/// without any, the lowest rank's, of unknown kind.
fn kinded_steps(
    ranks: &[(Rank, NodeId, RankSteps)],
    tokens: &[ReplicaTokens],
) -> Vec<((i64, i64), PhaseKind)> {
    // A leader without steps served nothing, so its node recorded no replica for it.
    let leaders: Vec<(Rank, NodeId)> = ranks
        .iter()
        .filter(|r| r.2.leads && !r.2.steps.is_empty())
        .map(|r| (r.0, r.1))
        .collect();
    let paired = steps::leaders_of(&leaders, tokens);
    if paired.is_empty() {
        let first = ranks.iter().find(|r| !r.2.steps.is_empty());
        return first.map_or(Vec::new(), |r| {
            r.2.steps
                .iter()
                .map(|s| (s.work, PhaseKind::Steps))
                .collect()
        });
    }
    paired
        .iter()
        .filter_map(|(rank, replica)| {
            let steps = &ranks.iter().find(|r| r.0 == *rank)?.2.steps;
            let kinds = steps::classify(steps, &replica.tokens);
            Some(steps.iter().map(|s| s.work).zip(kinds).collect::<Vec<_>>())
        })
        .flatten()
        .collect()
}

/// The run cut into stretches of one kind each, covering `wall` without gaps.
fn stretches(
    wall: (i64, i64),
    startup_end: Option<i64>,
    steps: &[((i64, i64), PhaseKind)],
) -> Vec<(i64, i64, PhaseKind)> {
    let mut out = Vec::new();
    let mut from = wall.0;
    if let Some(end) = startup_end.filter(|e| *e > wall.0) {
        push(&mut out, (wall.0, end.min(wall.1), PhaseKind::Startup));
        from = end;
    }
    for (start, end, kind) in segments(steps) {
        let (start, end) = (start.max(from), end.min(wall.1));
        if end <= start {
            continue;
        }
        fill_gap(&mut out, from, start);
        push(&mut out, (start, end, kind));
        from = end;
    }
    fill_gap(&mut out, from, wall.1);
    out
}

/// The time between two stretches: idle when long, else the earlier stretch's.
fn fill_gap(out: &mut Vec<(i64, i64, PhaseKind)>, from: i64, to: i64) {
    if to <= from {
        return;
    }
    let kind = match out.last() {
        Some(last) if to.saturating_sub(from) < IDLE_GAP_NS => last.2,
        _ => PhaseKind::Idle,
    };
    push(out, (from, to, kind));
}

/// Appends a stretch, merging it into the last one when they touch and are of one kind.
fn push(out: &mut Vec<(i64, i64, PhaseKind)>, stretch: (i64, i64, PhaseKind)) {
    match out.last_mut() {
        Some(last) if last.2 == stretch.2 && last.1 >= stretch.0 => last.1 = last.1.max(stretch.1),
        _ => out.push(stretch),
    }
}

/// Sweeps the steps' work intervals into disjoint segments of one kind: the kind of the steps
/// in progress, or mixed when they differ.
fn segments(steps: &[((i64, i64), PhaseKind)]) -> Vec<(i64, i64, PhaseKind)> {
    let mut events: Vec<(i64, i32, PhaseKind)> = steps
        .iter()
        .filter(|((s, e), _)| e > s)
        .flat_map(|&((s, e), kind)| [(s, 1, kind), (e, -1, kind)])
        .collect();
    events.sort_unstable_by_key(|e| e.0);
    let mut active = [0i32; 6];
    let mut out = Vec::new();
    let mut i = 0;
    while i < events.len() {
        let now = events[i].0;
        while events.get(i).is_some_and(|e| e.0 == now) {
            active[events[i].2 as usize] += events[i].1;
            i += 1;
        }
        if let (Some(next), Some(kind)) = (events.get(i), kind_of(&active)) {
            push(&mut out, (now, next.0, kind));
        }
    }
    out
}

/// The kind of the steps in progress: theirs when they agree, mixed when they differ.
fn kind_of(active: &[i32; 6]) -> Option<PhaseKind> {
    const KINDS: [PhaseKind; 6] = [
        PhaseKind::Startup,
        PhaseKind::Prefill,
        PhaseKind::Mixed,
        PhaseKind::Decode,
        PhaseKind::Steps,
        PhaseKind::Idle,
    ];
    let mut present = KINDS.iter().zip(active).filter(|(_, n)| **n > 0);
    let first = *present.next()?.0;
    Some(if present.next().is_some() {
        PhaseKind::Mixed
    } else {
        first
    })
}

/// One report per kind present, with its stretches, steps and counters.
fn by_kind(
    input: &PhaseInput,
    wall: (i64, i64),
    stretches: &[(i64, i64, PhaseKind)],
    steps: &[((i64, i64), PhaseKind)],
) -> Vec<PhaseReport> {
    let mut kinds: Vec<PhaseKind> = stretches.iter().map(|s| s.2).collect();
    kinds.sort_unstable();
    kinds.dedup();
    kinds
        .into_iter()
        .map(|kind| {
            let own: Vec<(i64, i64)> = stretches
                .iter()
                .filter(|s| s.2 == kind)
                .map(|s| (s.0, s.1))
                .collect();
            let duration_ns = own.iter().map(|(s, e)| e.abs_diff(*s)).sum();
            PhaseReport {
                kind,
                duration_ns,
                share_pct: crate::stats::pct(duration_ns as f64, wall.1.abs_diff(wall.0) as f64),
                steps: steps.iter().filter(|s| s.1 == kind).count() as u64,
                stretches: own
                    .iter()
                    .map(|&(start_ns, end)| Stretch {
                        start_ns,
                        duration_ns: end.abs_diff(start_ns),
                    })
                    .collect(),
                nodes: input
                    .nodes
                    .iter()
                    .map(|&node| node_phase(input, node, &own))
                    .collect(),
            }
        })
        .collect()
}

/// One node's counters over one phase's stretches.
fn node_phase(input: &PhaseInput, node: NodeId, stretches: &[(i64, i64)]) -> NodePhase {
    let series = |counter: &'static str| {
        input
            .timeline
            .series
            .iter()
            .filter(move |s| s.node == node && s.counter == counter)
    };
    let cpu = series(CPU_COUNTER).filter(|s| s.device.starts_with(CPU_DEVICE_PREFIX));
    let rx = counters::sum_of_means(series(NET_RX_COUNTER), stretches);
    let tx = counters::sum_of_means(series(NET_TX_COUNTER), stretches);
    let memory_bandwidth_pct = counters::mean_of_means(series(GPU_DRAM_COUNTER), stretches);
    let busier = rx.zip(tx).map(|(r, t)| r.max(t)).or(rx).or(tx);
    NodePhase {
        node: node.0,
        cpu_utilization_pct: counters::mean_of_means(cpu, stretches),
        gpu_utilization_pct: counters::mean_of_means(series(GPU_COUNTER), stretches),
        memory_bandwidth_missing: memory_bandwidth_pct
            .is_none()
            .then(|| memory_bandwidth_missing(series(GPU_DRAM_COUNTER).next(), node)),
        memory_bandwidth_pct,
        nic_rx_bytes_per_s: rx,
        nic_tx_bytes_per_s: tx,
        nic_link_pct: busier
            .zip(input.link_bytes_per_s.filter(|l| *l > 0.0))
            .map(|(b, link)| 100.0 * b / link),
    }
}

fn memory_bandwidth_missing(gpu_dram: Option<&Series>, node: NodeId) -> String {
    match gpu_dram {
        Some(_) => format!("no '{GPU_DRAM_COUNTER}' sample of {node} falls in this phase"),
        None => format!(
            "{node} has no memory-bandwidth counter: host DRAM traffic needs the memory \
             controllers' uncore perf events, which pinch does not read, and no GPU reported \
             '{GPU_DRAM_COUNTER}' (NVML GPM)"
        ),
    }
}

/// Each replica's tokens from the requests its leader's node recorded, moved onto the
/// timeline's time base as `merge_with` moved that node's spans (its anchor, then the offset
/// `clocks` gives it).
pub fn replica_tokens(
    run: &RunData,
    timeline: &Timeline,
    clocks: &[NodeClockReport],
) -> Vec<ReplicaTokens> {
    let mut out: Vec<ReplicaTokens> = Vec::new();
    for node in &run.nodes {
        let anchor = node_anchor(node, &run.manifest);
        let offset_ns = clocks
            .iter()
            .find(|c| c.node == node.node.0)
            .map_or(0, |c| c.offset_ns);
        let to_timeline = |mono_ns: u64| {
            let ns = anchor.to_wall_ns(mono_ns) + i128::from(offset_ns) - timeline.origin_unix_ns;
            i64::try_from(ns).unwrap_or(if ns < 0 { i64::MIN } else { i64::MAX })
        };
        for request in &node.requests {
            let slot = match out
                .iter()
                .position(|r| r.node == node.node && r.replica == request.replica)
            {
                Some(i) => i,
                None => {
                    out.push(ReplicaTokens {
                        node: node.node,
                        replica: request.replica,
                        tokens: Vec::new(),
                    });
                    out.len() - 1
                }
            };
            let times = request.token_times_ns.iter().enumerate();
            out[slot]
                .tokens
                .extend(times.map(|(i, t)| (to_timeline(*t), i == 0)));
        }
    }
    for replica in &mut out {
        replica.tokens.sort_unstable();
    }
    out
}

/// The calibrated peak of the TCP link between nodes, bytes per second (from the run's
/// `calibration` parameter, as `pinch calibrate` stored it).
pub fn tcp_link_bytes_per_s(parameters: &BTreeMap<String, serde_json::Value>) -> Option<f64> {
    let links = parameters.get("calibration")?.get("links")?.as_array()?;
    let tcp = links
        .iter()
        .find(|l| l.get("transport").and_then(|t| t.as_str()) == Some("tcp"))?;
    let gbps = tcp.get("peak_bandwidth_gbps")?.as_f64()?;
    (gbps > 0.0).then_some(gbps * 1e9)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{span, timeline};
    use crate::timeline::{NameId, TimedSpan};
    use pinch_traces::{Category::*, Unit};

    const MS: i64 = 1_000_000;

    /// A phase's kind, stretches (start, duration) and steps.
    type PhaseSummary = (PhaseKind, Vec<(i64, u64)>, u64);

    fn at(mut s: TimedSpan, step: u32, name: Option<u32>) -> TimedSpan {
        s.attrs.step = Some(step);
        if let Some(id) = name {
            s.name = NameId(id);
        }
        s
    }

    fn on_node(mut s: TimedSpan, node: u32) -> TimedSpan {
        s.node = NodeId(node);
        s
    }

    /// Rank 0 (node 0) leads: weights, a prefill step, two decode steps, 10 ms waiting for
    /// requests, a mixed step. Rank 1 (node 1) loads its weights until 12 ms and follows.
    fn served_timeline() -> Timeline {
        let (idle, weights, schedule) = (Some(6), Some(7), Some(8));
        let mut spans = vec![
            at(span(0, Host, 0, 10 * MS as u64), 0, weights),
            on_node(at(span(1, Host, 0, 12 * MS as u64), 0, weights), 1),
            at(span(0, Wait, 40 * MS + MS / 10, 9_900_000), 3, idle),
        ];
        for (step, start) in [
            (0u32, 10 * MS),
            (1, 20 * MS + MS / 10),
            (2, 30 * MS + MS / 10),
            (3, 50 * MS),
        ] {
            let step_end = start - start % (10 * MS) + 10 * MS;
            spans.push(at(span(0, Host, start, 100_000), step, schedule));
            let compute_start = start + MS / 10;
            let compute = span(0, Compute, compute_start, (step_end - compute_start) as u64);
            spans.push(at(compute, step, None));
            spans.push(on_node(
                at(span(1, Compute, compute_start, 1_000), step, None),
                1,
            ));
        }
        let mut t = timeline(spans);
        t.names.extend(
            [
                crate::idle::IDLE_OP,
                steps::WEIGHTS_INIT_OP,
                crate::idle::SCHEDULE_OP,
            ]
            .map(String::from),
        );
        t
    }

    fn tokens() -> Vec<ReplicaTokens> {
        let t = |ms_x100: i64, first: bool| (ms_x100 * MS / 100, first);
        vec![ReplicaTokens {
            node: NodeId(0),
            replica: 0,
            tokens: vec![
                t(2005, true),
                t(3005, false),
                t(4005, false),
                t(6005, true),
                t(6006, false),
            ],
        }]
    }

    fn series(counter: &str, device: &str, unit: Unit, samples: &[(i64, f64)]) -> Series {
        Series {
            node: NodeId(0),
            counter: counter.into(),
            unit: Some(unit),
            device: device.into(),
            times_ns: samples.iter().map(|s| s.0 * MS).collect(),
            values: samples.iter().map(|s| s.1).collect(),
        }
    }

    fn report(t: &Timeline, tokens: &[ReplicaTokens]) -> Vec<PhaseReport> {
        phase_reports(&PhaseInput {
            timeline: t,
            tokens,
            nodes: &[NodeId(0), NodeId(1)],
            link_bytes_per_s: Some(4e6),
        })
    }

    #[test]
    fn a_served_run_splits_into_startup_prefill_decode_idle_and_mixed() {
        let t = served_timeline();
        let phases = report(&t, &tokens());
        let summary: Vec<PhaseSummary> = phases
            .iter()
            .map(|p| {
                let stretches = p
                    .stretches
                    .iter()
                    .map(|s| (s.start_ns, s.duration_ns))
                    .collect();
                (p.kind, stretches, p.steps)
            })
            .collect();
        use PhaseKind::*;
        let ms = |a: f64| (a * MS as f64) as i64;
        assert_eq!(
            summary,
            vec![
                (Startup, vec![(0, 12 * MS as u64)], 0),
                (Prefill, vec![(12 * MS, (ms(20.1) - 12 * MS) as u64)], 1),
                (Mixed, vec![(50 * MS, 10 * MS as u64)], 1),
                (Decode, vec![(ms(20.1), (40 * MS - ms(20.1)) as u64)], 2),
                (Idle, vec![(40 * MS, 10 * MS as u64)], 0),
            ]
        );
        let total: f64 = phases.iter().filter_map(|p| p.share_pct).sum();
        assert!((total - 100.0).abs() < 1e-9, "{total}");
    }

    #[test]
    fn counters_are_integrated_over_each_phase() {
        let mut t = served_timeline();
        let cpu = [
            (10, 5.0),
            (20, 50.0),
            (30, 80.0),
            (40, 80.0),
            (50, 10.0),
            (60, 60.0),
        ];
        t.series
            .push(series("cpu.utilization", "cpu0", Unit::Percent, &cpu));
        let flat = |v: f64| [(10, v), (20, v), (30, v), (40, v), (50, v), (60, v)];
        t.series.push(series(
            "net.rx_bytes",
            "lo",
            Unit::BytesPerSecond,
            &flat(1e6),
        ));
        t.series.push(series(
            "net.tx_bytes",
            "lo",
            Unit::BytesPerSecond,
            &flat(2e6),
        ));
        t.series
            .push(series("process.rss", "rank0", Unit::Bytes, &flat(1e9)));
        let phases = report(&t, &tokens());
        let node0 = |kind: PhaseKind| {
            let phase = phases.iter().find(|p| p.kind == kind);
            phase.map(|p| p.nodes[0].clone())
        };
        let cpu_of = |kind| node0(kind).and_then(|n| n.cpu_utilization_pct);
        assert_eq!(cpu_of(PhaseKind::Startup), Some(12.5));
        assert_eq!(cpu_of(PhaseKind::Decode), Some(80.0));
        assert_eq!(cpu_of(PhaseKind::Idle), Some(10.0));
        assert_eq!(cpu_of(PhaseKind::Mixed), Some(60.0));
        let prefill = cpu_of(PhaseKind::Prefill).unwrap_or_default();
        assert!(
            (prefill - (8.0 * 50.0 + 0.1 * 80.0) / 8.1).abs() < 1e-9,
            "{prefill}"
        );
        let decode = node0(PhaseKind::Decode).expect("a decode phase");
        assert_eq!(decode.nic_rx_bytes_per_s, Some(1e6));
        assert_eq!(decode.nic_tx_bytes_per_s, Some(2e6));
        assert_eq!(decode.nic_link_pct, Some(50.0));
        assert_eq!(
            (decode.gpu_utilization_pct, decode.memory_bandwidth_pct),
            (None, None)
        );
        assert!(
            decode
                .memory_bandwidth_missing
                .is_some_and(|m| m.contains("node 0"))
        );
        let node1 = &phases[0].nodes[1];
        assert_eq!(
            (node1.node, node1.cpu_utilization_pct, node1.nic_link_pct),
            (1, None, None)
        );
    }

    #[test]
    fn without_requests_the_lowest_ranks_steps_are_of_unknown_kind() {
        let t = served_timeline();
        let phases = report(&t, &[]);
        let kinds: Vec<PhaseKind> = phases.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            vec![PhaseKind::Startup, PhaseKind::Steps, PhaseKind::Idle]
        );
        assert_eq!(phases[1].steps, 4);
        assert!(report(&timeline(Vec::new()), &[]).is_empty());
    }

    #[test]
    fn overlapping_replicas_in_different_steps_are_mixed() {
        let steps = [((0, 10), PhaseKind::Decode), ((5, 20), PhaseKind::Prefill)];
        assert_eq!(
            segments(&steps),
            vec![
                (0, 5, PhaseKind::Decode),
                (5, 10, PhaseKind::Mixed),
                (10, 20, PhaseKind::Prefill)
            ]
        );
    }

    #[test]
    fn the_link_peak_comes_from_the_calibration() {
        let parameters: BTreeMap<String, serde_json::Value> =
            serde_json::from_value(serde_json::json!({
                "calibration": {"links": [
                    {"transport": "shm", "peak_bandwidth_gbps": 9.0},
                    {"transport": "tcp", "peak_bandwidth_gbps": 1.5},
                ]}
            }))
            .unwrap_or_default();
        assert_eq!(tcp_link_bytes_per_s(&parameters), Some(1.5e9));
        assert_eq!(tcp_link_bytes_per_s(&BTreeMap::new()), None);
    }

    #[test]
    fn request_tokens_move_onto_the_timeline_with_their_nodes_clock() {
        use crate::align::Alignment;
        let mut run = crate::testkit::run_with_spans(&[&[0], &[1]]);
        // The first span of node 1 starts 1 µs after its anchor, at the timeline's origin.
        let base = run.nodes[1].anchor.map_or(0, |a| a.mono_ns) + 1_000;
        run.nodes[1].requests.push(pinch_traces::RequestRecord {
            id: 0,
            replica: 1,
            arrival_ns: base,
            scheduled_ns: None,
            token_times_ns: vec![base + 700, base + 300],
            prompt_tokens: 2,
            tokens: vec![1, 2],
            preemptions: 0,
        });
        let (timeline, clocks) = crate::timeline::merge_with(&run, Alignment::AnchorsOnly);
        let tokens = replica_tokens(&run, &timeline, &clocks);
        assert_eq!(
            tokens,
            vec![ReplicaTokens {
                node: NodeId(1),
                replica: 1,
                tokens: vec![(300, false), (700, true)],
            }]
        );
    }
}
