//! Walks a merged timeline, its counters and its findings once into a `TraceSink` (Perfetto,
//! Chrome JSON): the producer side of `pinch_traces::export`. Nothing of the timeline is copied;
//! what is held besides it is per track (open slices) and per flow link (two entries each).
//!
//! Layout: a process per node (named by its host), under it a thread per rank, or per lane
//! where a rank has several (CUDA streams and host threads of Kineto traces); a counter track
//! per `Series` under its node; a "findings" track of instants at the top.
//!
//! Slices on one track must nest. A rank's spans come sorted by start, but two of one lane may
//! overlap without one holding the other (clocks of two threads, a span cut by a crash): such a
//! span goes to a sibling thread ("rank 3 (overlap 1)") where it nests, so every span shows
//! whole and once. Which sibling is decided by the same placement in a first pass (to declare
//! the tracks) and in the second (to send the slices).
//!
//! Flows: each link is a flow of two slices, from the one that starts first to the other, so
//! that any sink can tell start from end whatever order the tracks are sent in. A collective of
//! n participants is a chain of n - 1 links in start order (drawn as one arrow path through its
//! participants); a send and its receive are one link.

use crate::exchanges::{Legs, Messages, collective_of};
use crate::findings::Finding;
use crate::kineto_timeline::{KinetoTimeline, LaneKind};
use crate::run::RunData;
use crate::timeline::{Series, TimedSpan, Timeline};
use pinch_traces::export::{
    Arg, ArgName, ArgValue, ExportError, FlowId, Instant, Slice, TraceHeader, TraceSink, Track,
    TrackId, TrackKind,
};
use pinch_traces::kineto::KinetoRun;
use pinch_traces::{Lane, NodeId, Rank};
use rayon::iter::{IntoParallelIterator, ParallelIterator};
use rayon::slice::ParallelSliceMut;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

/// What the timeline alone does not say: hosts, where ranks without spans ran, lane names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExportLayout {
    /// Each node's host; a node missing here is named "node N".
    pub hosts: BTreeMap<NodeId, String>,
    /// Every rank known to the run and its node, spans or not: each gets its thread.
    pub ranks: BTreeMap<Rank, NodeId>,
    /// Names of lanes ("stream 7", "thread 1234") for ranks with several.
    pub lane_names: BTreeMap<(Rank, Lane), String>,
}

impl ExportLayout {
    /// The layout of a pinch run: its nodes' hosts and the ranks each knows of.
    pub fn of_run(run: &RunData) -> ExportLayout {
        let mut layout = ExportLayout::default();
        for node in &run.nodes {
            layout.hosts.insert(node.node, node.host.clone());
            for rank in node.all_ranks() {
                layout.ranks.insert(rank, node.node);
            }
        }
        layout
    }

    /// The layout of Kineto traces on the timeline: a node per rank (named after its trace
    /// file, as traces name no host), its lanes named as streams and host threads.
    pub fn of_kineto(kt: &KinetoTimeline, run: &KinetoRun) -> ExportLayout {
        let mut layout = ExportLayout::default();
        for trace in &run.ranks {
            let file = trace.path.file_name().unwrap_or(trace.path.as_os_str());
            let name = format!("rank {} ({})", trace.rank.0, file.to_string_lossy());
            layout.hosts.insert(NodeId(trace.rank.0), name);
            layout.ranks.insert(trace.rank, NodeId(trace.rank.0));
        }
        for info in &kt.lanes {
            let key = (Rank(info.rank), Lane(info.lane));
            layout.lane_names.insert(key, lane_name(info.kind));
        }
        layout
    }
}

/// "gpu 0 stream 7", "gpu sync", "thread 1234".
fn lane_name(kind: LaneKind) -> String {
    let part = |what: &str, v: Option<String>| v.map(|v| format!("{what} {v}"));
    let parts: Vec<String> = match kind {
        LaneKind::Device { device, stream } => [
            part("gpu", device.map(|d| d.to_string())),
            Some(stream.map_or("sync".to_string(), |s| format!("stream {s}"))),
        ]
        .into_iter()
        .flatten()
        .collect(),
        LaneKind::Host { pid, tid } => [
            part("pid", pid.map(|p| p.to_string())),
            part("thread", tid.map(|t| t.to_string())),
        ]
        .into_iter()
        .flatten()
        .collect(),
    };
    parts.join(" ")
}

/// What an export wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExportSummary {
    pub tracks: u64,
    pub slices: u64,
    /// Slices sent to a sibling track because they overlapped a slice without nesting in it.
    pub moved_slices: u64,
    pub counter_values: u64,
    pub instants: u64,
    /// Flow links, each from one slice to another.
    pub flows: u64,
}

impl ExportSummary {
    /// Every event sent (track declarations aside).
    pub fn events(&self) -> u64 {
        self.slices + self.counter_values + self.instants
    }
}

/// The header of a timeline's trace.
pub fn trace_header(timeline: &Timeline, title: &str) -> TraceHeader {
    TraceHeader {
        origin_unix_ns: timeline.origin_unix_ns,
        title: title.to_string(),
    }
}

/// Sends the whole timeline, its counters and `findings` to `sink`, then finishes it.
pub fn export_run(
    timeline: &Timeline,
    findings: &[Finding],
    layout: &ExportLayout,
    sink: &mut dyn TraceSink,
) -> Result<ExportSummary, ExportError> {
    let mut summary = ExportSummary::default();
    // Flow marks and moved slices name spans by a u32 index.
    if u32::try_from(timeline.spans.len()).is_err() {
        return Err(ExportError::TooManySpans(timeline.spans.len()));
    }
    let Survey {
        shapes,
        moved,
        participants,
        legs,
    } = survey(timeline, layout);
    let marks = flow_marks(timeline, participants, legs);
    let tracks = declare_tracks(timeline, layout, &shapes, sink, &mut summary)?;
    summary.flows = (marks.len() / 2) as u64;
    send_slices(timeline, &tracks, &marks, &moved, sink, &mut summary)?;
    for (series, &track) in timeline.series.iter().zip(&tracks.counters) {
        send_series(series, track, sink, &mut summary)?;
    }
    for finding in findings {
        send_finding(timeline, finding, &tracks, sink, &mut summary)?;
    }
    sink.finish()?;
    Ok(summary)
}

/// Where each thing of the timeline goes.
#[derive(Debug)]
struct Tracks {
    /// Per rank, per lane, its thread tracks: the lane's own, then the overlap siblings.
    threads: BTreeMap<Rank, Vec<(Lane, Vec<TrackId>)>>,
    /// One per `Timeline::series`, in order.
    counters: Vec<TrackId>,
    findings: TrackId,
}

impl Tracks {
    /// The track a finding on a rank goes to: its first lane's.
    fn rank_track(&self, rank: Rank) -> Option<TrackId> {
        self.threads.get(&rank)?.first()?.1.first().copied()
    }
}

/// Per rank: its node and, per lane, how many tracks (the lane's own plus siblings) it needs.
struct RankShape {
    node: NodeId,
    lanes: Vec<(Lane, usize)>,
}

/// Declares every track: nodes, then each node's rank threads and counters, then findings.
fn declare_tracks(
    timeline: &Timeline,
    layout: &ExportLayout,
    shapes: &BTreeMap<Rank, RankShape>,
    sink: &mut dyn TraceSink,
    summary: &mut ExportSummary,
) -> Result<Tracks, ExportError> {
    let mut nodes: BTreeSet<NodeId> = layout.hosts.keys().copied().collect();
    nodes.extend(shapes.values().map(|s| s.node));
    nodes.extend(timeline.series.iter().map(|s| s.node));
    let mut next_id = 0_u64;
    let mut declare = |sink: &mut dyn TraceSink, parent, name: String, kind| {
        next_id += 1;
        summary.tracks += 1;
        let id = TrackId(next_id);
        let track = Track {
            id,
            parent,
            name,
            kind,
        };
        sink.track(&track).map(|()| id)
    };
    let mut tracks = Tracks {
        threads: BTreeMap::new(),
        counters: Vec::new(),
        findings: TrackId(0),
    };
    let mut next_tid = 0_u32;
    for node in nodes {
        let pid = node.0.saturating_add(1);
        let name = process_name(layout, node);
        let process = declare(&mut *sink, None, name, TrackKind::Process { pid })?;
        for (&rank, shape) in shapes.iter().filter(|(_, s)| s.node == node) {
            let mut lanes = Vec::with_capacity(shape.lanes.len());
            for &(lane, count) in &shape.lanes {
                let mut ids = Vec::with_capacity(count);
                for sibling in 0..count {
                    next_tid += 1;
                    let name = thread_name(layout, rank, lane, shape.lanes.len(), sibling);
                    let kind = TrackKind::Thread { pid, tid: next_tid };
                    ids.push(declare(&mut *sink, Some(process), name, kind)?);
                }
                lanes.push((lane, ids));
            }
            tracks.threads.insert(rank, lanes);
        }
        for series in timeline.series.iter().filter(|s| s.node == node) {
            let name = format!("{} {}", series.counter, series.device);
            let kind = TrackKind::Counter { unit: series.unit };
            tracks
                .counters
                .push(declare(&mut *sink, Some(process), name, kind)?);
        }
    }
    // Counters were declared node by node; put them back in `Timeline::series` order.
    tracks.counters = reorder_by_node(&timeline.series, &tracks.counters);
    tracks.findings = declare(&mut *sink, None, "findings".into(), TrackKind::Instants)?;
    Ok(tracks)
}

/// A node's process name: its host, with the node's number where several nodes share the host
/// (a run of several nodes on one machine); "node N" where the host is unknown.
fn process_name(layout: &ExportLayout, node: NodeId) -> String {
    let Some(host) = layout.hosts.get(&node) else {
        return format!("node {}", node.0);
    };
    let sharing = layout.hosts.values().filter(|h| *h == host).count();
    if sharing > 1 {
        format!("{host} (node {})", node.0)
    } else {
        host.clone()
    }
}

/// `ids` were given to `series` grouped by node (in node order, each in series order); the
/// same ids in series order.
fn reorder_by_node(series: &[Series], ids: &[TrackId]) -> Vec<TrackId> {
    let mut order: Vec<usize> = (0..series.len()).collect();
    order.sort_by_key(|&i| series[i].node);
    let mut out = vec![TrackId(0); series.len()];
    for (&i, &id) in order.iter().zip(ids) {
        out[i] = id;
    }
    out
}

fn thread_name(
    layout: &ExportLayout,
    rank: Rank,
    lane: Lane,
    lanes: usize,
    sibling: usize,
) -> String {
    let mut name = format!("rank {}", rank.0);
    if lanes > 1 {
        match layout.lane_names.get(&(rank, lane)) {
            Some(lane_name) => name = format!("{name} {lane_name}"),
            None => name = format!("{name} lane {}", lane.0),
        }
    }
    if sibling > 0 {
        name = format!("{name} (overlap {sibling})");
    }
    name
}

/// A span placed on a sibling of its lane's track: its index in `Timeline::spans` and which
/// sibling (from 1). Few spans are, so the slices' pass reads their places from a short list.
type Moved = (u32, u32);

/// What the slices' pass needs to know before its first slice, from one read of the spans
/// (the spans are far larger than the caches: each read of them costs).
struct Survey {
    /// Every rank's node and lanes, with the tracks each lane's spans need.
    shapes: BTreeMap<Rank, RankShape>,
    /// The spans that go to a sibling track, in timeline order.
    moved: Vec<Moved>,
    /// The collective spans, in timeline order.
    participants: Vec<Participant>,
    legs: Legs,
}

/// Surveys the timeline rank by rank, the ranks shared among the cores.
fn survey(timeline: &Timeline, layout: &ExportLayout) -> Survey {
    let parts: Vec<(Rank, RankSurvey)> = rank_ranges(&timeline.spans)
        .into_par_iter()
        .map(|(rank, range)| (rank, survey_rank(timeline, range)))
        .collect();
    let mut survey = Survey {
        shapes: BTreeMap::new(),
        moved: Vec::new(),
        participants: Vec::new(),
        legs: Legs::default(),
    };
    for (rank, mut part) in parts {
        survey.shapes.insert(rank, part.shape);
        survey.moved.append(&mut part.moved);
        survey.participants.append(&mut part.participants);
        survey.legs.append(part.legs);
    }
    for (&rank, &node) in &layout.ranks {
        survey.shapes.entry(rank).or_insert(RankShape {
            node,
            lanes: vec![(Lane(0), 1)],
        });
    }
    survey
}

/// Each rank's spans as an index range (the spans are sorted by rank), found by bisection.
fn rank_ranges(spans: &[TimedSpan]) -> Vec<(Rank, Range<usize>)> {
    let mut ranges = Vec::new();
    let mut from = 0;
    while let Some(first) = spans.get(from) {
        let to = from + spans[from..].partition_point(|s| s.rank <= first.rank);
        ranges.push((first.rank, from..to));
        from = to;
    }
    ranges
}

/// `Survey`'s part for one rank's spans.
struct RankSurvey {
    shape: RankShape,
    moved: Vec<Moved>,
    participants: Vec<Participant>,
    legs: Legs,
}

fn survey_rank(timeline: &Timeline, range: Range<usize>) -> RankSurvey {
    let mut placer = RankPlacer::default();
    let mut part = RankSurvey {
        shape: RankShape {
            node: timeline.spans[range.start].node,
            lanes: Vec::new(),
        },
        moved: Vec::new(),
        participants: Vec::new(),
        legs: Legs::default(),
    };
    for (index, span) in range.clone().zip(&timeline.spans[range]) {
        let sibling = placer.place(span);
        // Indices fit in u32: `export_run` refuses more spans.
        if sibling > 0 {
            part.moved.push((index as u32, sibling as u32));
        }
        if let Some((group, seq)) = collective_of(span) {
            part.participants.push(Participant {
                group,
                seq,
                start_ns: span.start_ns,
                index: index as u32,
            });
        }
        part.legs.see(index, span);
    }
    part.shape.lanes = placer
        .lanes
        .iter()
        .map(|(lane, n)| (*lane, n.stacks.len()))
        .collect();
    part
}

/// The open slices of one lane's tracks: per track, the ends of the slices that hold the next
/// one's start, outermost first.
#[derive(Debug, Default)]
struct Nesting {
    stacks: Vec<Vec<i64>>,
}

impl Nesting {
    /// The first of the lane's tracks where a slice of these times nests (a new one if none).
    fn place(&mut self, start_ns: i64, end_ns: i64) -> usize {
        for (k, stack) in self.stacks.iter_mut().enumerate() {
            // Slices come in start order: one ended by now holds nothing that follows.
            while stack.last().is_some_and(|&end| end <= start_ns) {
                stack.pop();
            }
            if stack.last().is_none_or(|&end| end >= end_ns) {
                stack.push(end_ns);
                return k;
            }
        }
        self.stacks.push(vec![end_ns]);
        self.stacks.len() - 1
    }
}

/// Places one rank's spans, lane by lane (a rank has few lanes).
#[derive(Debug, Default)]
struct RankPlacer {
    lanes: Vec<(Lane, Nesting)>,
}

impl RankPlacer {
    fn place(&mut self, span: &TimedSpan) -> usize {
        let at = match self.lanes.iter().position(|(l, _)| *l == span.lane) {
            Some(at) => at,
            None => {
                self.lanes.push((span.lane, Nesting::default()));
                self.lanes.len() - 1
            }
        };
        self.lanes[at].1.place(span.start_ns, span.end_ns())
    }
}

/// One end of a flow link at a span.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct FlowMark {
    /// The span's index in `Timeline::spans`.
    index: u32,
    flow: FlowId,
    /// Whether the link ends here (else it starts here).
    ending: bool,
}

/// Both ends of every link, sorted by span index: collectives chained in start order, then
/// each send with its receive.
fn flow_marks(
    timeline: &Timeline,
    mut participants: Vec<Participant>,
    legs: Legs,
) -> Vec<FlowMark> {
    let ((), messages) = rayon::join(
        || participants.par_sort_unstable(),
        || Messages::from_legs(legs),
    );
    let mut marks = Vec::new();
    let mut next = 0_u64;
    // Links go from the slice that starts first (the earlier index on a tie) to the other.
    let mut link = |marks: &mut Vec<FlowMark>, from: u32, to: u32| {
        next += 1;
        let flow = FlowId(next);
        marks.push(FlowMark {
            index: from,
            flow,
            ending: false,
        });
        marks.push(FlowMark {
            index: to,
            flow,
            ending: true,
        });
    };
    let collective = |p: &Participant| (p.group, p.seq);
    for members in participants.chunk_by(|a, b| collective(a) == collective(b)) {
        for pair in members.windows(2) {
            link(&mut marks, pair[0].index, pair[1].index);
        }
    }
    let key = |i: u32| (timeline.spans[i as usize].start_ns, i);
    for &(recv, send) in messages.receives() {
        if let Some(send) = send {
            let (from, to) = if key(send) <= key(recv) {
                (send, recv)
            } else {
                (recv, send)
            };
            link(&mut marks, from, to);
        }
    }
    // Marks went in by flow, a link's start before its end: sorted by span index (millions of
    // them on a large run, so by radix) and stable, they stay in that order on each span.
    radsort::sort_by_key(&mut marks, |m| m.index);
    marks
}

/// A span of a collective (sends and receives aside) as flows link it: sorted, each
/// collective's spans are together in start order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Participant {
    group: u32,
    seq: u64,
    start_ns: i64,
    /// The span's index in `Timeline::spans`.
    index: u32,
}

/// Sends every span as a slice, rank by rank in start order, each on the track it nests in.
fn send_slices(
    timeline: &Timeline,
    tracks: &Tracks,
    marks: &[FlowMark],
    moved: &[Moved],
    sink: &mut dyn TraceSink,
    summary: &mut ExportSummary,
) -> Result<(), ExportError> {
    let mut marks = marks.iter().peekable();
    let mut moved = moved.iter().peekable();
    let mut args = SpanArgs::default();
    let (mut flows, mut ending) = (Vec::new(), Vec::new());
    // One pass over the spans (a rank's lanes looked up where its spans begin), as `chunk_by`
    // would read every span twice.
    let mut lanes: (Option<Rank>, &[(Lane, Vec<TrackId>)]) = (None, &[]);
    for (index, span) in timeline.spans.iter().enumerate() {
        if lanes.0 != Some(span.rank) {
            let rank_lanes = tracks.threads.get(&span.rank);
            lanes = (
                Some(span.rank),
                rank_lanes.ok_or(ExportError::UnknownTrack(0))?,
            );
        }
        let sibling = moved
            .next_if(|m| m.0 as usize == index)
            .map_or(0, |m| m.1 as usize);
        let track = lane_track(lanes.1, span.lane, sibling).ok_or(ExportError::UnknownTrack(0))?;
        summary.moved_slices += u64::from(sibling > 0);
        flows.clear();
        ending.clear();
        while let Some(mark) = marks.next_if(|m| m.index as usize == index) {
            if mark.ending { &mut ending } else { &mut flows }.push(mark.flow);
        }
        args.fill(span);
        sink.slice(&Slice {
            track,
            name: timeline.name(span.name),
            category: span.category.name(),
            start_ns: span.start_ns,
            duration_ns: span.duration_ns,
            args: args.as_slice(),
            flows: &flows,
            flows_ending: &ending,
        })?;
        summary.slices += 1;
    }
    Ok(())
}

/// The track of a lane's `sibling`-th thread, among one rank's lanes (a rank has few).
fn lane_track(lanes: &[(Lane, Vec<TrackId>)], lane: Lane, sibling: usize) -> Option<TrackId> {
    let (_, ids) = lanes.iter().find(|(l, _)| *l == lane)?;
    ids.get(sibling).copied()
}

/// The most arguments a span has: layer, step, micro-batch, request, FLOPs, bytes, GB/s, and a
/// collective's kind, group, sequence number, participants, bytes, peer and wait.
const MAX_SPAN_ARGS: usize = 14;

/// One span's arguments, rebuilt in place for each span (no allocation per span).
struct SpanArgs<'t> {
    args: [Arg<'t>; MAX_SPAN_ARGS],
    len: usize,
}

impl Default for SpanArgs<'_> {
    fn default() -> Self {
        let empty = Arg {
            name: "".into(),
            value: ArgValue::Uint(0),
        };
        SpanArgs {
            args: [empty; MAX_SPAN_ARGS],
            len: 0,
        }
    }
}

impl<'t> SpanArgs<'t> {
    fn as_slice(&self) -> &[Arg<'t>] {
        &self.args[..self.len]
    }

    fn push(&mut self, name: &'static str, value: ArgValue<'t>) {
        self.args[self.len] = Arg {
            name: name.into(),
            value,
        };
        self.len += 1;
    }

    /// A span's arguments: only the attributes it has (a missing one is absent, never 0). The
    /// op is the slice's name, not an argument.
    fn fill(&mut self, span: &TimedSpan) {
        self.len = 0;
        let a = &span.attrs;
        if let Some(layer) = a.layer {
            self.push("layer", ArgValue::Uint(u64::from(layer)));
        }
        if let Some(step) = a.step {
            self.push("step", ArgValue::Uint(u64::from(step)));
        }
        if let Some(micro_batch) = a.micro_batch {
            self.push("micro_batch", ArgValue::Uint(u64::from(micro_batch)));
        }
        if let Some(request_id) = a.request_id {
            self.push("request_id", ArgValue::Uint(request_id));
        }
        if let Some(flops) = a.flops {
            self.push("flops", ArgValue::Uint(flops));
        }
        if let Some(bytes) = a.bytes {
            self.push("bytes", ArgValue::Uint(bytes));
        }
        if let Some(gb_per_s) = achieved_gb_per_s(span) {
            self.push("achieved_gb_per_s", ArgValue::Float(gb_per_s));
        }
        let Some(c) = a.collective else { return };
        self.push("collective", ArgValue::Str(c.kind.name()));
        self.push("group", ArgValue::Uint(u64::from(c.group)));
        self.push("seq", ArgValue::Uint(c.seq));
        self.push("participants", ArgValue::Uint(u64::from(c.participants)));
        self.push("message_bytes", ArgValue::Uint(c.message_bytes));
        if let Some(peer) = c.peer {
            self.push("peer", ArgValue::Uint(u64::from(peer.0)));
        }
        if let Some(wait_ns) = c.wait_ns {
            self.push("wait_ns", ArgValue::Uint(wait_ns));
        }
    }
}

/// Bytes over duration: bytes per nanosecond are GB/s. None without bytes or duration.
fn achieved_gb_per_s(span: &TimedSpan) -> Option<f64> {
    let bytes = span.attrs.bytes?;
    (span.duration_ns > 0).then(|| bytes as f64 / span.duration_ns as f64)
}

fn send_series(
    series: &Series,
    track: TrackId,
    sink: &mut dyn TraceSink,
    summary: &mut ExportSummary,
) -> Result<(), ExportError> {
    for (&time_ns, &value) in series.times_ns.iter().zip(&series.values) {
        sink.counter(track, time_ns, value)?;
        summary.counter_values += 1;
    }
    Ok(())
}

/// A finding as an instant on the findings track and on each rank it names, at the start of
/// what it judged: the named ranks' first span (a finding covers the whole run), or the run's
/// first span when it names no rank.
fn send_finding(
    timeline: &Timeline,
    finding: &Finding,
    tracks: &Tracks,
    sink: &mut dyn TraceSink,
    summary: &mut ExportSummary,
) -> Result<(), ExportError> {
    let ranks: Vec<Rank> = finding.location.ranks.iter().map(|&r| Rank(r)).collect();
    let time_ns = first_start_ns(timeline, &ranks).unwrap_or(0);
    let kind = serde_name(&finding.kind);
    let level = serde_name(&finding.level);
    let mut args = vec![
        Arg {
            name: "summary".into(),
            value: ArgValue::Str(&finding.summary),
        },
        Arg {
            name: "level".into(),
            value: ArgValue::Str(&level),
        },
        Arg {
            name: "severity".into(),
            value: ArgValue::Float(finding.severity),
        },
        Arg {
            name: "suggestion".into(),
            value: ArgValue::Str(&finding.suggestion),
        },
    ];
    args.extend(finding.evidence.iter().map(|(name, &value)| Arg {
        name: ArgName::Text(name),
        value: ArgValue::Float(value),
    }));
    let on_ranks = ranks.iter().filter_map(|&r| tracks.rank_track(r));
    for track in std::iter::once(tracks.findings).chain(on_ranks) {
        sink.instant(&Instant {
            track,
            name: &kind,
            category: "finding",
            time_ns,
            args: &args,
        })?;
        summary.instants += 1;
    }
    Ok(())
}

/// The earliest span start of `ranks` (of every rank when empty).
fn first_start_ns(timeline: &Timeline, ranks: &[Rank]) -> Option<i64> {
    if ranks.is_empty() {
        return timeline.spans.iter().map(|s| s.start_ns).min();
    }
    ranks
        .iter()
        .filter_map(|&r| timeline.spans_of(r).first().map(|s| s.start_ns))
        .min()
}

/// The snake_case name serde gives an enum variant ("communication_bound").
fn serde_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::{FindingKind, Level, Location};
    use crate::testkit::{self, collective, p2p, span};
    use pinch_traces::export::chrome::ChromeJsonWriter;
    use pinch_traces::{Category, CollectiveKind, Unit};
    use std::collections::HashMap;

    /// A slice as recorded: (track, name, start, end, arg names, flows, flows ending).
    type SliceRow = (
        TrackId,
        String,
        i64,
        i64,
        Vec<String>,
        Vec<FlowId>,
        Vec<FlowId>,
    );

    /// What a sink was sent, kept whole for the tests to look at.
    #[derive(Debug, Default)]
    struct Recorder {
        tracks: Vec<Track>,
        slices: Vec<SliceRow>,
        counters: Vec<(TrackId, i64, f64)>,
        instants: Vec<(TrackId, String, i64)>,
        finished: bool,
    }

    impl TraceSink for Recorder {
        fn track(&mut self, track: &Track) -> Result<(), ExportError> {
            self.tracks.push(track.clone());
            Ok(())
        }
        fn slice(&mut self, s: &Slice<'_>) -> Result<(), ExportError> {
            let args = s.args.iter().map(|a| a.name.as_str().to_string()).collect();
            let end = s.start_ns + s.duration_ns as i64;
            let row = (
                s.track,
                s.name.into(),
                s.start_ns,
                end,
                args,
                s.flows.to_vec(),
                s.flows_ending.to_vec(),
            );
            self.slices.push(row);
            Ok(())
        }
        fn counter(&mut self, track: TrackId, time_ns: i64, value: f64) -> Result<(), ExportError> {
            self.counters.push((track, time_ns, value));
            Ok(())
        }
        fn instant(&mut self, i: &Instant<'_>) -> Result<(), ExportError> {
            self.instants.push((i.track, i.name.into(), i.time_ns));
            Ok(())
        }
        fn finish(&mut self) -> Result<(), ExportError> {
            self.finished = true;
            Ok(())
        }
    }

    impl Recorder {
        fn track_named(&self, name: &str) -> TrackId {
            self.tracks.iter().find(|t| t.name == name).unwrap().id
        }
    }

    fn on(node: u32, mut s: TimedSpan) -> TimedSpan {
        s.node = NodeId(node);
        s
    }

    /// Two nodes: rank 0 on host-a, ranks 1 and 2 on host-b (rank 2 without spans). An
    /// all-reduce between ranks 0 and 1, a send from 1 to 0, a nested copy on rank 0 and, on
    /// rank 1, a host span that overlaps its compute without nesting in it.
    fn small_run() -> (Timeline, Vec<Finding>, ExportLayout) {
        let mut compute = span(0, Category::Compute, 0, 800);
        compute.attrs.layer = Some(1);
        compute.attrs.step = Some(0);
        compute.attrs.flops = Some(2_000_000);
        compute.attrs.bytes = Some(4_000);
        let mut copy = span(0, Category::Memory, 100, 100);
        copy.attrs.bytes = Some(1_000);
        let spans = vec![
            compute,
            copy,
            collective(0, 0, 800, 150, 1 << 20),
            p2p(0, CollectiveKind::Recv, 1, 990, 60, 64),
            on(1, span(1, Category::Compute, 0, 700)),
            on(1, span(1, Category::Host, 650, 100)),
            on(1, collective(1, 0, 760, 190, 1 << 20)),
            on(1, p2p(1, CollectiveKind::Send, 0, 1_000, 20, 64)),
        ];
        let mut t = testkit::timeline(spans);
        t.origin_unix_ns = 1_700_000_000_000_000_000;
        t.series.push(Series {
            node: NodeId(0),
            counter: "cpu.utilization".into(),
            unit: Some(Unit::Percent),
            device: "cpu0".into(),
            times_ns: vec![-500, 500],
            values: vec![12.5, 97.0],
        });
        let finding = Finding {
            kind: FindingKind::Straggler,
            level: Level::Warning,
            severity: 0.1,
            summary: "rank 1 arrives last at 1 of 1 all-reduces".into(),
            location: Location {
                ranks: vec![1],
                ..Location::default()
            },
            evidence: BTreeMap::from([("lateness_ns".to_string(), 60.0)]),
            suggestion: "look at rank 1".into(),
            stretches: Vec::new(),
        };
        let layout = ExportLayout {
            hosts: BTreeMap::from([(NodeId(0), "host-a".into()), (NodeId(1), "host-b".into())]),
            ranks: BTreeMap::from([
                (Rank(0), NodeId(0)),
                (Rank(1), NodeId(1)),
                (Rank(2), NodeId(1)),
            ]),
            lane_names: BTreeMap::new(),
        };
        (t, vec![finding], layout)
    }

    fn recorded() -> (Recorder, ExportSummary, Timeline) {
        let (t, findings, layout) = small_run();
        let mut sink = Recorder::default();
        let summary = export_run(&t, &findings, &layout, &mut sink).unwrap();
        (sink, summary, t)
    }

    #[test]
    fn every_span_sample_and_rank_appears_once_under_its_host() {
        let (sink, summary, t) = recorded();
        assert!(sink.finished);
        assert_eq!(sink.slices.len(), t.spans.len());
        assert_eq!(summary.slices, t.spans.len() as u64);
        let names: Vec<&str> = sink.tracks.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "host-a",
                "rank 0",
                "cpu.utilization cpu0",
                "host-b",
                "rank 1",
                "rank 1 (overlap 1)",
                "rank 2",
                "findings"
            ]
        );
        let host_b = sink.track_named("host-b");
        let rank2 = sink.tracks.iter().find(|t| t.name == "rank 2").unwrap();
        assert_eq!(rank2.parent, Some(host_b));
        let cpu = sink.track_named("cpu.utilization cpu0");
        assert_eq!(sink.counters, [(cpu, -500, 12.5), (cpu, 500, 97.0)]);
        // Every track's parent was declared before it.
        for (i, track) in sink.tracks.iter().enumerate() {
            if let Some(parent) = track.parent {
                assert!(sink.tracks[..i].iter().any(|t| t.id == parent), "{track:?}");
            }
        }
    }

    #[test]
    fn slices_nest_on_each_track_and_an_overlapping_span_moves_to_a_sibling() {
        let (sink, summary, _) = recorded();
        assert_eq!(summary.moved_slices, 1);
        let sibling = sink.track_named("rank 1 (overlap 1)");
        let moved: Vec<&str> = sink
            .slices
            .iter()
            .filter(|s| s.0 == sibling)
            .map(|s| s.1.as_str())
            .collect();
        assert_eq!(moved, ["host"]);
        let mut open: HashMap<TrackId, Vec<i64>> = HashMap::new();
        for (track, name, start, end, ..) in &sink.slices {
            let stack = open.entry(*track).or_default();
            while stack.last().is_some_and(|&e| e <= *start) {
                stack.pop();
            }
            assert!(stack.last().is_none_or(|&e| e >= *end), "{name} at {start}");
            stack.push(*end);
        }
    }

    #[test]
    fn nodes_sharing_a_host_are_told_apart() {
        let mut layout = ExportLayout::default();
        layout.hosts.insert(NodeId(0), "vm".into());
        layout.hosts.insert(NodeId(1), "vm".into());
        layout.hosts.insert(NodeId(2), "gpu-7".into());
        assert_eq!(process_name(&layout, NodeId(0)), "vm (node 0)");
        assert_eq!(process_name(&layout, NodeId(1)), "vm (node 1)");
        assert_eq!(process_name(&layout, NodeId(2)), "gpu-7");
        assert_eq!(process_name(&layout, NodeId(5)), "node 5");
    }

    #[test]
    fn attributes_a_span_lacks_are_absent_and_bandwidth_is_bytes_over_time() {
        let (sink, _, _) = recorded();
        let args_of = |name: &str| sink.slices.iter().find(|s| s.1 == name).unwrap().4.clone();
        // The op is the slice's name: no argument repeats it.
        assert!(args_of("host").is_empty());
        assert_eq!(
            args_of("compute"),
            ["layer", "step", "flops", "bytes", "achieved_gb_per_s"]
        );
        assert_eq!(
            args_of("all_reduce"),
            [
                "collective",
                "group",
                "seq",
                "participants",
                "message_bytes"
            ]
        );
        assert!(args_of("communication").contains(&"peer".to_string()));
        let t = small_run().0;
        assert_eq!(achieved_gb_per_s(&t.spans[0]), Some(5.0));
    }

    #[test]
    fn each_flow_starts_once_and_ends_once_forward_in_time() {
        let (sink, summary, _) = recorded();
        assert_eq!(summary.flows, 2);
        let mut starts: HashMap<FlowId, i64> = HashMap::new();
        let mut ends: HashMap<FlowId, i64> = HashMap::new();
        for (_, _, start, _, _, flows, ending) in &sink.slices {
            for f in flows {
                assert!(starts.insert(*f, *start).is_none(), "{f:?} starts twice");
            }
            for f in ending {
                assert!(ends.insert(*f, *start).is_none(), "{f:?} ends twice");
            }
        }
        assert_eq!(starts.len(), 2);
        for (flow, start) in &starts {
            assert!(ends[flow] >= *start, "{flow:?}");
        }
    }

    #[test]
    fn a_collective_of_three_is_a_chain_in_start_order() {
        let spans: Vec<TimedSpan> = [(0, 30), (1, 10), (2, 20)]
            .into_iter()
            .map(|(rank, start)| collective(rank, 0, start, 100, 64))
            .collect();
        let t = testkit::timeline(spans);
        let survey = survey(&t, &ExportLayout::default());
        let marks = flow_marks(&t, survey.participants, survey.legs);
        let link = |f: u64| -> Vec<(u32, bool)> {
            marks
                .iter()
                .filter(|m| m.flow == FlowId(f))
                .map(|m| (m.index, m.ending))
                .collect()
        };
        // Indices are ranks here; rank 1 starts first, then 2, then 0.
        assert_eq!(link(1), [(1, false), (2, true)]);
        assert_eq!(link(2), [(0, true), (2, false)]);
    }

    #[test]
    fn findings_sit_on_the_findings_track_and_on_each_rank_they_name() {
        let (sink, _, _) = recorded();
        let expected = [
            (sink.track_named("findings"), "straggler".to_string(), 0),
            (sink.track_named("rank 1"), "straggler".to_string(), 0),
        ];
        assert_eq!(sink.instants, expected);
    }

    #[test]
    fn the_small_run_exports_to_stable_chrome_json() {
        let (t, findings, layout) = small_run();
        let header = trace_header(&t, "small run");
        let mut writer = ChromeJsonWriter::new(Vec::new(), &header).unwrap();
        export_run(&t, &findings, &layout, &mut writer).unwrap();
        let json = String::from_utf8(writer.into_inner().unwrap()).unwrap();
        serde_json::from_str::<serde_json::Value>(&json).unwrap();
        insta::assert_snapshot!(json);
    }
}
