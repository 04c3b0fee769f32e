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
//! overflow; real traces span seconds.
//!
//! A span's `step` is the `ProfilerStep#N` annotation its launch (for a device event, the
//! runtime call with its correlation) started in. Flows are not kept on the timeline: the
//! correlation they draw is what attributes device events to steps.
//!
//! Cost: one pass per rank merging its streams' and host lists' events (each sorted by start)
//! straight into the timeline's order, so no sort and no intermediate copy of the spans.
//! `kineto_device_timeline` builds the device spans alone (what pinch's analyses read), a
//! sixth of the events of a typical trace; host events are then only counted.

pub mod as_run;
pub mod comm;
pub mod report;

pub use report::{
    KinetoCollective, KinetoPinchReport, SkippedDetector, kineto_detectors, pinch_report, report_of,
};

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
    Category, ClockAnchor, CollectiveAttrs, Lane, NodeEntry, NodeId, OpId, Rank, RunManifest, Span,
    SpanAttrs, Versions, WorkloadSpec,
};
use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

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
    /// Host events over all ranks, whether or not `timeline` holds their spans.
    pub host_spans: u64,
    /// The collectives, as (rank, group, seq), whose kernels' args give no size (older
    /// traces): their spans carry `message_bytes` 0, which here means unknown.
    pub unknown_sizes: FxHashSet<(Rank, u32, u64)>,
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

/// Which spans a `KinetoTimeline` holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keep {
    /// Device and host spans.
    All,
    /// Device spans only; host events are counted and give their threads' lanes. What
    /// pinch's analyses read, at a sixth of the spans on a typical trace.
    Device,
}

/// Puts a Kineto job on pinch's timeline, aligning ranks as `alignment` says.
pub fn kineto_timeline(run: &KinetoRun, alignment: Alignment) -> KinetoTimeline {
    build(run, alignment, Keep::All)
}

/// `kineto_timeline` whose `timeline` holds only the device spans (`device_timeline`'s view),
/// on the same time base: host events are counted in `host_spans`, not built.
pub fn kineto_device_timeline(run: &KinetoRun, alignment: Alignment) -> KinetoTimeline {
    build(run, alignment, Keep::Device)
}

fn build(run: &KinetoRun, alignment: Alignment, keep: Keep) -> KinetoTimeline {
    let clock = JobClock::of(run);
    let world_size = run
        .world_size
        .unwrap_or_else(|| u32::try_from(run.ranks.len()).unwrap_or(u32::MAX));
    let mut names = Interner::default();
    let groups = comm::JobGroups::of(run);
    let mut spans = Vec::with_capacity(run.ranks.iter().map(|r| spans_kept(r, keep)).sum());
    let mut ranges = Vec::with_capacity(run.ranks.len());
    let mut lanes = Vec::new();
    let (mut clamped_spans, mut host_spans) = (0, 0);
    let mut unknown_sizes = FxHashSet::default();
    // Per rank, the start of its first host span, which `keep` may leave out.
    let mut first_host = Vec::with_capacity(run.ranks.len());
    for rank in &run.ranks {
        let table: Vec<NameId> = (0..rank.trace.names.len())
            .map(|i| names.intern(rank.trace.names.get(KinetoNameId(i as u32))))
            .collect();
        let builder = RankSpans::new(rank, clock, world_size, &groups, keep);
        let from = spans.len();
        lanes.extend(builder.spans(&table, &mut spans));
        clamped_spans += builder.clamped.get();
        host_spans += builder.host_spans.get();
        unknown_sizes.extend(builder.unknown_sizes.take());
        first_host.push(builder.first_host_ns.get());
        ranges.push(from..spans.len());
    }
    let clocks = align_ranks(run, &spans, &ranges, clock, alignment);
    for (range, c) in ranges.iter().zip(&clocks) {
        for s in &mut spans[range.clone()] {
            s.start_ns = s.start_ns.saturating_add(c.offset_ns);
        }
    }
    let first_host_ns = first_host
        .iter()
        .zip(&clocks)
        .filter_map(|(first, c)| Some(first.as_ref()?.saturating_add(c.offset_ns)))
        .min();
    let timeline = timeline_of(spans, first_host_ns, names.names, clock);
    // Every rank is a node of its own, with or without spans.
    let facts = RunFacts {
        rank_nodes: run.ranks.iter().map(|r| (r.rank, node_of(r))).collect(),
        ..RunFacts::default()
    };
    KinetoTimeline {
        timeline,
        facts,
        lanes,
        clocks,
        clamped_spans,
        host_spans,
        unknown_sizes,
    }
}

/// How many spans of a rank `keep` builds.
fn spans_kept(rank: &RankTrace, keep: Keep) -> usize {
    match keep {
        Keep::All => rank.trace.event_count(),
        Keep::Device => rank.trace.device_event_count(),
    }
}

fn node_of(rank: &RankTrace) -> NodeId {
    NodeId(rank.rank.0)
}

/// How `align` puts each rank on the job's time base. It reads only collective spans, so each
/// rank's node holds only those.
fn align_ranks(
    run: &KinetoRun,
    spans: &[TimedSpan],
    ranges: &[std::ops::Range<usize>],
    clock: JobClock,
    alignment: Alignment,
) -> Vec<NodeClockReport> {
    let nodes: Vec<NodeData> = run
        .ranks
        .iter()
        .zip(ranges)
        .map(|(rank, range)| {
            let entry = NodeEntry {
                node: node_of(rank),
                host: String::new(),
                ranks: vec![rank.rank],
                log_file: rank.path.display().to_string(),
            };
            let mut node = NodeData::without_log(&entry, String::new());
            node.log = LogState::Whole;
            node.anchor = Some(clock.anchor());
            node.spans = spans[range.clone()]
                .iter()
                .filter(|s| s.attrs.collective.is_some())
                .map(untimed)
                .collect();
            node
        })
        .collect();
    let anchors: Vec<ClockAnchor> = nodes.iter().map(|_| clock.anchor()).collect();
    let run = RunData {
        manifest: manifest(&nodes, clock.origin_ns),
        nodes,
    };
    align(&run, &anchors, alignment)
}

/// A span of the timeline as a node log's span (its name is not needed by `align`).
fn untimed(s: &TimedSpan) -> Span {
    Span {
        rank: s.rank,
        lane: s.lane,
        category: s.category,
        op: OpId(s.name.0),
        // Not yet offset, so never negative.
        start_ns: u64::try_from(s.start_ns).unwrap_or(0),
        duration_ns: s.duration_ns,
        attrs: s.attrs,
    }
}

/// The timeline of spans in rank order (each rank's by start), with times counted from the
/// earliest span, or host span left out (`first_host_ns`): offsets may have moved a rank
/// before the job's earliest event.
fn timeline_of(
    mut spans: Vec<TimedSpan>,
    first_host_ns: Option<i64>,
    names: Vec<String>,
    clock: JobClock,
) -> Timeline {
    let first_span_ns = spans.iter().map(|s| s.start_ns).min();
    let first_ns = first_span_ns
        .into_iter()
        .chain(first_host_ns)
        .min()
        .unwrap_or(0);
    for s in &mut spans {
        s.start_ns = s.start_ns.saturating_sub(first_ns);
    }
    let origin_unix_ns = i128::from(clock.origin_ns) + i128::from(first_ns);
    if spans.is_sorted_by_key(|s| (s.rank, s.start_ns)) {
        // Already in the timeline's order (ranks come sorted, each rank's spans merged by
        // start): no need for `from_parts`' sort and its scratch copy.
        Timeline {
            origin_unix_ns,
            names,
            spans,
            series: Vec::new(),
        }
    } else {
        Timeline::from_parts(origin_unix_ns, names, spans, Vec::new())
    }
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

/// Turns one rank's events into spans.
struct RankSpans<'a> {
    rank: &'a RankTrace,
    clock: JobClock,
    world_size: u32,
    /// The job's named process groups.
    groups: &'a comm::JobGroups,
    /// Whether host events become spans.
    keep: Keep,
    /// Spans `clock` cut short so far.
    clamped: std::cell::Cell<u64>,
    /// Host events seen so far, and where the first of them starts on the job's clock.
    host_spans: std::cell::Cell<u64>,
    first_host_ns: std::cell::Cell<Option<i64>>,
    /// The collectives so far whose size the args do not give (`KinetoTimeline::unknown_sizes`).
    unknown_sizes: std::cell::RefCell<Vec<(Rank, u32, u64)>>,
    /// `ProfilerStep#N` annotations as (start, end, N), by start.
    steps: Vec<(i64, i64, u32)>,
    /// The start of the runtime call of each correlation id.
    launches: FxHashMap<u64, i64>,
}

impl<'a> RankSpans<'a> {
    fn new(
        rank: &'a RankTrace,
        clock: JobClock,
        world_size: u32,
        groups: &'a comm::JobGroups,
        keep: Keep,
    ) -> RankSpans<'a> {
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
            groups,
            keep,
            clamped: std::cell::Cell::new(0),
            host_spans: std::cell::Cell::new(0),
            first_host_ns: std::cell::Cell::new(None),
            unknown_sizes: std::cell::RefCell::new(Vec::new()),
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

    /// Appends the rank's spans to `out` in start order (a merge of its streams' and host
    /// lists' events, each sorted by start), names resolved through `names`; returns its lanes.
    fn spans(&self, names: &[NameId], out: &mut Vec<TimedSpan>) -> Vec<LaneInfo> {
        let trace = &self.rank.trace;
        let streams = trace.streams.len();
        let host = [&trace.cpu_ops[..], &trace.runtime[..]];
        let start_of = |run: usize, i: usize| match run.checked_sub(streams) {
            None => trace.streams[run].events.get(i).map(|e| e.start_ns),
            Some(h) => host[h].get(i).map(|e| e.start_ns),
        };
        let mut lanes = self.device_lanes();
        let comm_groups = self.comm_groups();
        // Per group, the collectives seen so far on this rank.
        let mut seqs: HashMap<u32, u64> = HashMap::new();
        let mut threads: Vec<(Option<i64>, Option<i64>)> = Vec::new();
        let mut next = vec![0usize; streams + host.len()];
        let mut heap: BinaryHeap<Reverse<(i64, usize)>> = (0..next.len())
            .filter_map(|run| Some(Reverse((start_of(run, 0)?, run))))
            .collect();
        while let Some(Reverse((_, run))) = heap.pop() {
            let i = next[run];
            next[run] += 1;
            if let Some(start) = start_of(run, i + 1) {
                heap.push(Reverse((start, run)));
            }
            let span = match run.checked_sub(streams) {
                None => trace.streams[run].events.get(i).map(|event| {
                    self.stream_span(run, event, comm_groups.get(&run).copied(), &mut seqs)
                }),
                Some(h) => host[h].get(i).and_then(|event| {
                    let lane = self.thread_lane(event, &mut threads, &mut lanes);
                    self.host_span(lane, event)
                }),
            };
            out.extend(span.map(|s| self.timed(s, names)));
        }
        lanes
    }

    /// A device event's span, with its collective's data when it is one (the n-th of its
    /// group: the one its args name, else its stream's, `stream_group`).
    fn stream_span(
        &self,
        index: usize,
        event: &DeviceEvent,
        stream_group: Option<u32>,
        seqs: &mut HashMap<u32, u64>,
    ) -> Span {
        let lane = Lane(u32::try_from(index).unwrap_or(HOST_LANE_BASE - 1));
        let mut span = self.device_span(lane, event);
        if span.category == Category::Communication
            && let Some(group) = self.named_group(event).or(stream_group)
        {
            let seq = seqs.entry(group).or_default();
            span.attrs.collective = self.collective(event, group, *seq);
            *seq += u64::from(span.attrs.collective.is_some());
        }
        span
    }

    /// The job-wide number of the process group a kernel's args name.
    fn named_group(&self, event: &DeviceEvent) -> Option<u32> {
        let trace = &self.rank.trace;
        let group = trace.group(trace.comm_args(event)?.group?)?;
        self.groups.id(&group.name)
    }

    fn timed(&self, s: Span, names: &[NameId]) -> TimedSpan {
        TimedSpan {
            rank: s.rank,
            node: node_of(self.rank),
            lane: s.lane,
            category: s.category,
            name: names.get(s.op.0 as usize).copied().unwrap_or(NameId(0)),
            // Below the horizon, so within i64.
            start_ns: i64::try_from(s.start_ns).unwrap_or(i64::MAX),
            duration_ns: s.duration_ns,
            attrs: s.attrs,
        }
    }

    fn device_lanes(&self) -> Vec<LaneInfo> {
        let streams = self.rank.trace.streams.iter().enumerate();
        streams
            .map(|(index, stream)| LaneInfo {
                rank: self.rank.rank.0,
                lane: u32::try_from(index).unwrap_or(HOST_LANE_BASE - 1),
                kind: LaneKind::Device {
                    device: stream.device,
                    stream: stream.stream,
                },
            })
            .collect()
    }

    /// The lane of a host event's thread, adding it on first sight (a process has a handful of
    /// threads: a list beats hashing every event).
    fn thread_lane(
        &self,
        event: &HostEvent,
        threads: &mut Vec<(Option<i64>, Option<i64>)>,
        lanes: &mut Vec<LaneInfo>,
    ) -> Lane {
        let thread = (event.pid, event.tid);
        let index = threads
            .iter()
            .position(|t| *t == thread)
            .unwrap_or_else(|| {
                threads.push(thread);
                lanes.push(self.host_lane(threads.len() - 1, thread));
                threads.len() - 1
            });
        Lane(HOST_LANE_BASE.saturating_add(index as u32))
    }

    fn host_lane(&self, index: usize, (pid, tid): (Option<i64>, Option<i64>)) -> LaneInfo {
        LaneInfo {
            rank: self.rank.rank.0,
            lane: HOST_LANE_BASE.saturating_add(index as u32),
            kind: LaneKind::Host { pid, tid },
        }
    }

    /// The streams that carry communication kernels, each numbered by its place among them
    /// (by device and stream number) after the named groups: the rank's communicators where
    /// the args name none, as `comm`'s doc explains.
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
            .map(|(group, (_, _, index))| {
                let group = u32::try_from(group).unwrap_or(u32::MAX);
                (*index, self.groups.count().saturating_add(group))
            })
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
        let trace = &self.rank.trace;
        let collective = event.collective.map(|c| trace.names.get(c));
        let kind = comm::collective_kind(collective, trace.names.get(event.name))?;
        let args = trace.comm_args(event);
        let message_bytes = args.and_then(|a| comm::message_bytes(kind, a));
        if message_bytes.is_none() {
            self.unknown_sizes
                .borrow_mut()
                .push((self.rank.rank, group, seq));
        }
        Some(CollectiveAttrs {
            kind,
            group,
            seq,
            participants: comm::participants(
                kind,
                args.and_then(|a| a.group_size),
                self.world_size,
            ),
            peer: None,
            // The span's size is a plain number: an unknown one is kept in `unknown_sizes`,
            // and the report shows it as none (see `report`).
            message_bytes: message_bytes.unwrap_or(0),
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

    /// A host event's span, counted; `None` when host spans are not kept.
    fn host_span(&self, lane: Lane, event: &HostEvent) -> Option<Span> {
        let (start_ns, duration_ns) = self.place(event.start_ns, event.duration_ns);
        self.host_spans.set(self.host_spans.get() + 1);
        if self.first_host_ns.get().is_none() {
            // Events come in start order: the first is the earliest. Below the horizon.
            self.first_host_ns
                .set(Some(i64::try_from(start_ns).unwrap_or(i64::MAX)));
        }
        if self.keep == Keep::Device {
            return None;
        }
        let name = self.rank.trace.names.get(event.name);
        let category = if event.kind == HostEventKind::Runtime && name.contains("Synchronize") {
            Category::Wait
        } else {
            Category::Host
        };
        Some(Span {
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
        })
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
