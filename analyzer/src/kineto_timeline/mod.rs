//! PyTorch profiler (Kineto) traces on pinch's own timeline, so that pinch's analyses and
//! detectors run on them as on a pinch run.
//!
//! Each rank becomes a node of its own (Kineto traces name no host, and pids cannot tell two
//! hosts apart), its streams and host threads lanes of it:
//! - device lanes `0..`: one per (device, stream) in the trace's order. Kernels are compute,
//!   communication or memory by HTA's rules (`hta::kernel_type`, so NCCL, RCCL and HCCL kernels
//!   and `Collective name` are communication); copies and fills are memory; device
//!   synchronizations (and kernels HTA files as "other" for a `Sync` in their name) are wait.
//! - host lanes from `HOST_LANE_BASE`: one per (pid, tid). Operators, annotations and runtime
//!   calls are host work, except runtime calls that synchronize (`cudaStreamSynchronize`,
//!   `cudaDeviceSynchronize`, ...), which are the host waiting for the device.
//!
//! Times: Kineto writes microseconds since an epoch of the profiler's choice (the Unix epoch in
//! most traces). Every rank is read on that one clock, shifted by the earliest event of the job
//! (as HTA does); `align` then refines each rank's offset so its collective completions line up
//! with the other ranks' (see `align`), which also corrects ranks whose hosts' clocks disagree.
//! Times past the horizon (`i64::MAX` ns over the job's event count, 2.5 hours from the first
//! event for a million events) are clamped to it, and counted, so that no sum of durations can
//! overflow; real traces span seconds. A span's `step` is the `ProfilerStep#N` annotation its launch (for a device event, the
//! runtime call with its correlation) started in. Flows are not kept on the timeline: the
//! correlation they draw is what attributes device events to steps.

pub mod comm;
pub mod report;

pub use report::{KinetoPinchReport, SkippedDetector, kineto_detectors, pinch_report, report_of};

use crate::align::{Alignment, NodeClockReport, align};
use crate::facts::RunFacts;
use crate::hta::{KernelType, kernel_type};
use crate::run::{LogState, NodeData, RunData};
use crate::timeline::{NameId, TimedSpan, Timeline};
use pinch_traces::kineto::{
    DeviceEvent, DeviceEventKind, HostEvent, HostEventKind, KinetoRun, NameId as KinetoNameId,
    RankTrace,
};
use pinch_traces::{
    Category, ClockAnchor, CollectiveAttrs, Lane, NodeEntry, NodeId, OpId, RunManifest, Span,
    SpanAttrs, Versions, WorkloadSpec,
};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};

/// The first host lane: device lanes are numbered below it, host threads from it.
pub const HOST_LANE_BASE: u32 = 1 << 16;

/// Whether a lane of a Kineto timeline is a device stream (else a host thread).
pub fn is_device_lane(lane: Lane) -> bool {
    lane.0 < HOST_LANE_BASE
}

/// What one lane of one rank is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneInfo {
    pub rank: u32,
    pub lane: u32,
    #[serde(flatten)]
    pub kind: LaneKind,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LaneKind {
    /// A stream of a device; `stream: None` holds device-wide synchronizations.
    Device {
        device: Option<u32>,
        stream: Option<u32>,
    },
    /// A thread of a host process.
    Host { pid: Option<i64>, tid: Option<i64> },
}

/// A Kineto job on pinch's timeline.
#[derive(Clone, Debug)]
pub struct KinetoTimeline {
    /// Every device and host event of every rank.
    pub timeline: Timeline,
    /// One node per rank (`NodeId` = the rank's number).
    pub facts: RunFacts,
    pub lanes: Vec<LaneInfo>,
    /// How each rank's clock was aligned, one entry per rank (its node).
    pub clocks: Vec<NodeClockReport>,
    /// Spans cut short at the horizon (see the module doc); 0 for any real trace.
    pub clamped_spans: u64,
}

impl KinetoTimeline {
    /// The device events alone: the view pinch's per-rank measures read, where a rank's wall
    /// time runs from its first kernel's start to its last kernel's end and idle means no
    /// kernel, copy or fill on any of its streams (HTA's definitions).
    pub fn device_timeline(&self) -> Timeline {
        let spans = self
            .timeline
            .spans
            .iter()
            .filter(|s| is_device_lane(s.lane))
            .copied()
            .collect();
        Timeline::from_parts(
            self.timeline.origin_unix_ns,
            self.timeline.names.clone(),
            spans,
            Vec::new(),
        )
    }
}

/// Puts a Kineto job on pinch's timeline, aligning ranks as `alignment` says.
pub fn kineto_timeline(run: &KinetoRun, alignment: Alignment) -> KinetoTimeline {
    let clock = JobClock::of(run);
    let world_size = run
        .world_size
        .unwrap_or_else(|| u32::try_from(run.ranks.len()).unwrap_or(u32::MAX));
    let mut lanes = Vec::new();
    let mut clamped_spans = 0;
    let nodes: Vec<NodeData> = run
        .ranks
        .iter()
        .map(|r| {
            let (node, rank_lanes, clamped) = rank_node(r, clock, world_size);
            lanes.extend(rank_lanes);
            clamped_spans += clamped;
            node
        })
        .collect();
    let clocks = align_ranks(&nodes, clock, alignment);
    let timeline = timed(run, &nodes, &clocks, clock);
    // Every rank is a node of its own, with or without spans.
    let facts = RunFacts {
        rank_nodes: nodes
            .iter()
            .flat_map(|n| n.placed_ranks.iter().map(|r| (*r, n.node)))
            .collect(),
        ..RunFacts::default()
    };
    KinetoTimeline {
        timeline,
        facts,
        lanes,
        clocks,
        clamped_spans,
    }
}

/// How `align` puts each rank on the job's time base: it reads only collective spans, so only
/// those are handed to it.
fn align_ranks(nodes: &[NodeData], clock: JobClock, alignment: Alignment) -> Vec<NodeClockReport> {
    let collective_nodes: Vec<NodeData> = nodes
        .iter()
        .map(|n| {
            let mut only = NodeData::without_log(&node_entry(n), String::new());
            only.log = LogState::Whole;
            only.anchor = n.anchor;
            only.spans = n
                .spans
                .iter()
                .filter(|s| s.attrs.collective.is_some())
                .copied()
                .collect();
            only
        })
        .collect();
    let anchors: Vec<ClockAnchor> = nodes.iter().map(|_| clock.anchor()).collect();
    let run = RunData {
        manifest: manifest(&collective_nodes, clock.origin_ns),
        nodes: collective_nodes,
    };
    align(&run, &anchors, alignment)
}

/// Every rank's spans on the timeline: names resolved into one table, each rank moved by its
/// clock's offset, times counted from the earliest span.
fn timed(
    run: &KinetoRun,
    nodes: &[NodeData],
    clocks: &[NodeClockReport],
    clock: JobClock,
) -> Timeline {
    let mut names = Interner::default();
    let mut spans = Vec::with_capacity(nodes.iter().map(|n| n.spans.len()).sum());
    for ((rank, node), node_clock) in run.ranks.iter().zip(nodes).zip(clocks) {
        let table: Vec<NameId> = (0..rank.trace.names.len())
            .map(|i| names.intern(rank.trace.names.get(KinetoNameId(i as u32))))
            .collect();
        spans.extend(node.spans.iter().map(|s| {
            TimedSpan {
                rank: s.rank,
                node: node.node,
                lane: s.lane,
                category: s.category,
                name: table.get(s.op.0 as usize).copied().unwrap_or(NameId(0)),
                // Below the horizon, so within i64.
                start_ns: i64::try_from(s.start_ns)
                    .unwrap_or(i64::MAX)
                    .saturating_add(node_clock.offset_ns),
                duration_ns: s.duration_ns,
                attrs: s.attrs,
            }
        }));
    }
    // Offsets may move a rank before the earliest event: the origin is the earliest span.
    let first_ns = spans.iter().map(|s| s.start_ns).min().unwrap_or(0);
    for s in &mut spans {
        s.start_ns = s.start_ns.saturating_sub(first_ns);
    }
    let origin_unix_ns = i128::from(clock.origin_ns) + i128::from(first_ns);
    Timeline::from_parts(origin_unix_ns, names.names, spans, Vec::new())
}

/// One name table for the job: each distinct string once.
#[derive(Default)]
struct Interner<'a> {
    names: Vec<String>,
    ids: HashMap<&'a str, NameId>,
}

impl<'a> Interner<'a> {
    fn intern(&mut self, name: &'a str) -> NameId {
        let next = NameId(u32::try_from(self.names.len()).unwrap_or(u32::MAX));
        *self.ids.entry(name).or_insert_with(|| {
            self.names.push(name.to_string());
            next
        })
    }
}

/// The job's time base: nanoseconds since its earliest event, up to a horizon.
#[derive(Clone, Copy, Debug)]
struct JobClock {
    origin_ns: i64,
    horizon_ns: u64,
}

impl JobClock {
    fn of(run: &KinetoRun) -> JobClock {
        let origin_ns = run.ranks.iter().filter_map(earliest_ns).min().unwrap_or(0);
        let events: usize = run.ranks.iter().map(|r| r.trace.event_count()).sum();
        JobClock {
            origin_ns,
            horizon_ns: i64::MAX.unsigned_abs() / (events as u64 + 1),
        }
    }

    /// Every rank's anchor: the traces share one clock until `align` says otherwise.
    fn anchor(self) -> ClockAnchor {
        ClockAnchor {
            mono_ns: 0,
            wall_ns: u64::try_from(self.origin_ns).unwrap_or(0),
            read_uncertainty_ns: 0,
        }
    }

    /// An event's start and duration on the job's time base, and whether they were clamped.
    fn place(self, start_ns: i64, duration_ns: u64) -> (u64, u64, bool) {
        // Never negative: the origin is the earliest event.
        let since = u64::try_from(start_ns.saturating_sub(self.origin_ns)).unwrap_or(0);
        let start = since.min(self.horizon_ns);
        let duration = duration_ns.min(self.horizon_ns - start);
        (start, duration, start != since || duration != duration_ns)
    }
}

/// The earliest start of any event of a rank.
fn earliest_ns(rank: &RankTrace) -> Option<i64> {
    let t = &rank.trace;
    let device = t
        .streams
        .iter()
        .filter_map(|s| s.events.first())
        .map(|e| e.start_ns);
    let host = [t.cpu_ops.first(), t.runtime.first()]
        .into_iter()
        .flatten()
        .map(|e| e.start_ns);
    device.chain(host).min()
}

/// A run manifest around the ranks' nodes (`align` reads only the nodes).
fn manifest(nodes: &[NodeData], origin_ns: i64) -> RunManifest {
    RunManifest {
        format_version: pinch_traces::manifest::MANIFEST_VERSION,
        run_id: "kineto".into(),
        started_at_unix_ns: u64::try_from(origin_ns).unwrap_or(0),
        nodes: nodes.iter().map(node_entry).collect(),
        workload: WorkloadSpec {
            name: "pytorch-profiler".into(),
            model: String::new(),
            parameters: BTreeMap::new(),
        },
        versions: Versions::current(env!("CARGO_PKG_VERSION")),
        counter_sources: Vec::new(),
    }
}

fn node_entry(node: &NodeData) -> NodeEntry {
    NodeEntry {
        node: node.node,
        host: node.host.clone(),
        ranks: node.placed_ranks.clone(),
        log_file: node.log_file.clone(),
    }
}

/// One rank's trace as a node whose monotonic clock reads nanoseconds since `origin_ns`, and
/// the lanes it has.
fn rank_node(rank: &RankTrace, clock: JobClock, world_size: u32) -> (NodeData, Vec<LaneInfo>, u64) {
    let entry = NodeEntry {
        node: NodeId(rank.rank.0),
        host: String::new(),
        ranks: vec![rank.rank],
        log_file: rank.path.display().to_string(),
    };
    let mut node = NodeData::without_log(&entry, String::new());
    node.log = LogState::Whole;
    node.anchor = Some(clock.anchor());
    let builder = RankSpans::new(rank, clock, world_size);
    let (spans, lanes) = builder.spans();
    let clamped = builder.clamped.get();
    node.spans = spans;
    (node, lanes, clamped)
}

/// Turns one rank's events into spans.
struct RankSpans<'a> {
    rank: &'a RankTrace,
    clock: JobClock,
    world_size: u32,
    /// Spans `clock` cut short so far.
    clamped: std::cell::Cell<u64>,
    /// `ProfilerStep#N` annotations as (start, end, N), by start.
    steps: Vec<(i64, i64, u32)>,
    /// The start of the runtime call of each correlation id.
    launches: HashMap<u64, i64>,
}

impl<'a> RankSpans<'a> {
    fn new(rank: &'a RankTrace, clock: JobClock, world_size: u32) -> RankSpans<'a> {
        let trace = &rank.trace;
        let mut steps: Vec<(i64, i64, u32)> = trace
            .cpu_ops
            .iter()
            .filter(|e| e.kind == HostEventKind::UserAnnotation)
            .filter_map(|e| {
                let n = trace.names.get(e.name).strip_prefix("ProfilerStep#")?;
                Some((e.start_ns, e.end_ns(), n.parse().ok()?))
            })
            .collect();
        steps.sort_unstable();
        let launches = trace
            .runtime
            .iter()
            .filter_map(|e| Some((e.correlation?, e.start_ns)))
            .collect();
        RankSpans {
            rank,
            clock,
            world_size,
            clamped: std::cell::Cell::new(0),
            steps,
            launches,
        }
    }

    /// The step running at `time_ns`, if any.
    fn step_at(&self, time_ns: i64) -> Option<u32> {
        let after = self
            .steps
            .partition_point(|(start, _, _)| *start <= time_ns);
        let (_, end, n) = self.steps.get(after.checked_sub(1)?)?;
        (time_ns < *end).then_some(*n)
    }

    fn spans(&self) -> (Vec<Span>, Vec<LaneInfo>) {
        let trace = &self.rank.trace;
        let mut spans = Vec::with_capacity(trace.event_count());
        let mut lanes = Vec::new();
        let comm_groups = self.comm_groups();
        for (index, stream) in trace.streams.iter().enumerate() {
            let lane = Lane(u32::try_from(index).unwrap_or(HOST_LANE_BASE - 1));
            lanes.push(LaneInfo {
                rank: self.rank.rank.0,
                lane: lane.0,
                kind: LaneKind::Device {
                    device: stream.device,
                    stream: stream.stream,
                },
            });
            let group = comm_groups.get(&index).copied();
            let mut seq = 0;
            for event in &stream.events {
                let mut span = self.device_span(lane, event);
                if span.category == Category::Communication
                    && let Some(group) = group
                {
                    span.attrs.collective = self.collective(event, group, seq);
                    seq += u64::from(span.attrs.collective.is_some());
                }
                spans.push(span);
            }
        }
        // A process has a handful of threads: a list beats hashing every event.
        let mut threads: Vec<(Option<i64>, Option<i64>)> = Vec::new();
        for event in trace.host_events() {
            let thread = (event.pid, event.tid);
            let index = threads
                .iter()
                .position(|t| *t == thread)
                .unwrap_or_else(|| {
                    threads.push(thread);
                    lanes.push(self.host_lane(threads.len() - 1, thread));
                    threads.len() - 1
                });
            let lane = Lane(HOST_LANE_BASE.saturating_add(index as u32));
            spans.push(self.host_span(lane, event));
        }
        (spans, lanes)
    }

    fn host_lane(&self, index: usize, (pid, tid): (Option<i64>, Option<i64>)) -> LaneInfo {
        LaneInfo {
            rank: self.rank.rank.0,
            lane: HOST_LANE_BASE.saturating_add(index as u32),
            kind: LaneKind::Host { pid, tid },
        }
    }

    /// The streams that carry communication kernels, each numbered by its place among them
    /// (by device and stream number): the rank's communicators, as the module doc explains.
    fn comm_groups(&self) -> HashMap<usize, u32> {
        let trace = &self.rank.trace;
        let mut comm: Vec<(Option<u32>, Option<u32>, usize)> = trace
            .streams
            .iter()
            .enumerate()
            .filter(|(_, s)| s.events.iter().any(|e| self.is_comm(e)))
            .map(|(i, s)| (s.device, s.stream, i))
            .collect();
        comm.sort_unstable();
        comm.iter()
            .enumerate()
            .map(|(group, (_, _, index))| (*index, u32::try_from(group).unwrap_or(u32::MAX)))
            .collect()
    }

    fn is_comm(&self, event: &DeviceEvent) -> bool {
        self.kernel_type(event) == KernelType::Communication
    }

    fn kernel_type(&self, event: &DeviceEvent) -> KernelType {
        let names = &self.rank.trace.names;
        let collective = event.collective.map(|c| names.get(c));
        kernel_type(names.get(event.name), collective)
    }

    fn collective(&self, event: &DeviceEvent, group: u32, seq: u64) -> Option<CollectiveAttrs> {
        let names = &self.rank.trace.names;
        let collective = event.collective.map(|c| names.get(c));
        let kind = comm::collective_kind(collective, names.get(event.name))?;
        Some(CollectiveAttrs {
            kind,
            group,
            seq,
            participants: comm::participants(kind, self.world_size),
            peer: None,
            // Message sizes are not in pinch's Kineto model: 0 means unknown here, and the
            // Kineto report leaves bandwidths out (see `report`).
            message_bytes: 0,
            wait_ns: None,
        })
    }

    fn device_span(&self, lane: Lane, event: &DeviceEvent) -> Span {
        let launched_ns = event
            .correlation
            .and_then(|c| self.launches.get(&c).copied())
            .unwrap_or(event.start_ns);
        let (start_ns, duration_ns) = self.place(event.start_ns, event.duration_ns);
        Span {
            rank: self.rank.rank,
            lane,
            category: self.device_category(event),
            op: OpId(event.name.0),
            start_ns,
            duration_ns,
            attrs: SpanAttrs {
                step: self.step_at(launched_ns),
                ..SpanAttrs::default()
            },
        }
    }

    fn device_category(&self, event: &DeviceEvent) -> Category {
        match event.kind {
            DeviceEventKind::Memcpy | DeviceEventKind::Memset => Category::Memory,
            DeviceEventKind::Sync => Category::Wait,
            DeviceEventKind::Kernel | DeviceEventKind::Other => match self.kernel_type(event) {
                KernelType::Computation => Category::Compute,
                KernelType::Communication => Category::Communication,
                KernelType::Memory => Category::Memory,
                KernelType::Other if self.rank.trace.names.get(event.name).contains("Memcpy") => {
                    Category::Memory
                }
                KernelType::Other => Category::Wait,
            },
        }
    }

    fn host_span(&self, lane: Lane, event: &HostEvent) -> Span {
        let name = self.rank.trace.names.get(event.name);
        let category = if event.kind == HostEventKind::Runtime && name.contains("Synchronize") {
            Category::Wait
        } else {
            Category::Host
        };
        let (start_ns, duration_ns) = self.place(event.start_ns, event.duration_ns);
        Span {
            rank: self.rank.rank,
            lane,
            category,
            op: OpId(event.name.0),
            start_ns,
            duration_ns,
            attrs: SpanAttrs {
                step: self.step_at(event.start_ns),
                ..SpanAttrs::default()
            },
        }
    }

    /// An event's start and duration on the job's clock, counting the clamped ones.
    fn place(&self, start_ns: i64, duration_ns: u64) -> (u64, u64) {
        let (start, duration, clamped) = self.clock.place(start_ns, duration_ns);
        self.clamped.set(self.clamped.get() + u64::from(clamped));
        (start, duration)
    }
}

#[cfg(test)]
mod tests;
