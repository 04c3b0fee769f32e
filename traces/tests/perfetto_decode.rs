//! Decodes a trace written by `PerfettoWriter` with a decoder written here from the protobuf
//! wire format and Perfetto's field numbers (it shares no code with the writer), and checks
//! what a viewer relies on: every slice once with a matching begin and end, slices on a track
//! nested, every counter sample once, every track's parent present, every flow started and
//! ended once, every interned id resolved.
//!
//! The input is a small synthetic run built below: three nodes (processes) of two ranks
//! (threads) each, a counter per node, a findings track, nested slices with arguments, flows
//! across ranks (pairs and one three-hop chain) and instants.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pinch_traces::counter::Unit;
use pinch_traces::export::perfetto::PerfettoWriter;
use pinch_traces::export::{
    Arg, ArgValue, FlowId, Instant, Slice, TraceHeader, TraceSink, Track, TrackId, TrackKind,
};
use std::collections::{BTreeMap, HashMap};

// ---- The wire format -------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Wire<'a> {
    fn varint(self) -> u64 {
        match self {
            Wire::Varint(v) => v,
            other => panic!("expected a varint, got {other:?}"),
        }
    }
    fn fixed64(self) -> u64 {
        match self {
            Wire::Fixed64(v) => v,
            other => panic!("expected a fixed64, got {other:?}"),
        }
    }
    fn bytes(self) -> &'a [u8] {
        match self {
            Wire::Bytes(b) => b,
            other => panic!("expected bytes, got {other:?}"),
        }
    }
    fn string(self) -> String {
        String::from_utf8(self.bytes().to_vec()).expect("utf-8 string")
    }
}

fn read_varint(buf: &[u8], pos: &mut usize) -> u64 {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = buf[*pos];
        *pos += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return value;
        }
    }
    panic!("varint longer than 10 bytes at {pos}");
}

fn take<'a>(buf: &'a [u8], pos: &mut usize, len: usize) -> &'a [u8] {
    let bytes = &buf[*pos..*pos + len];
    *pos += len;
    bytes
}

/// Every (field number, value) of one message, in order.
fn fields(buf: &[u8]) -> Vec<(u64, Wire<'_>)> {
    let mut pos = 0;
    let mut out = Vec::new();
    while pos < buf.len() {
        let key = read_varint(buf, &mut pos);
        let value = match key & 7 {
            0 => Wire::Varint(read_varint(buf, &mut pos)),
            1 => Wire::Fixed64(u64::from_le_bytes(
                take(buf, &mut pos, 8).try_into().unwrap(),
            )),
            2 => {
                let len = read_varint(buf, &mut pos) as usize;
                Wire::Bytes(take(buf, &mut pos, len))
            }
            5 => Wire::Fixed32(u32::from_le_bytes(
                take(buf, &mut pos, 4).try_into().unwrap(),
            )),
            wire => panic!("wire type {wire} at {pos}"),
        };
        out.push((key >> 3, value));
    }
    assert_eq!(pos, buf.len(), "message overruns its bytes");
    out
}

fn field<'a>(msg: &[(u64, Wire<'a>)], number: u64) -> Option<Wire<'a>> {
    msg.iter().find(|(n, _)| *n == number).map(|(_, v)| *v)
}

fn repeated<'a, 'm>(
    msg: &'m [(u64, Wire<'a>)],
    number: u64,
) -> impl Iterator<Item = Wire<'a>> + 'm {
    msg.iter()
        .filter(move |(n, _)| *n == number)
        .map(|(_, v)| *v)
}

// ---- Decoding Perfetto's messages ------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
}

#[derive(Debug)]
struct Event {
    timestamp: u64,
    kind: u64,
    track_uuid: u64,
    category: Option<String>,
    name: Option<String>,
    args: Vec<(String, Value)>,
    flows: Vec<u64>,
    terminating_flows: Vec<u64>,
    counter: Option<f64>,
}

#[derive(Debug)]
struct Descriptor {
    parent: Option<u64>,
    name: String,
    kind: &'static str,
}

#[derive(Default)]
struct Decoded {
    packets: usize,
    clocks: Vec<(u64, u64)>,
    tracks: HashMap<u64, Descriptor>,
    events: Vec<Event>,
}

/// Interned strings by kind (1 categories, 2 event names, 3 annotation names) and iid.
type Interned = HashMap<(u64, u64), String>;

fn decode(trace: &[u8]) -> Decoded {
    let mut out = Decoded::default();
    let mut interned = Interned::new();
    for (number, packet) in fields(trace) {
        assert_eq!(number, 1, "a trace holds only Trace.packet fields");
        decode_packet(&fields(packet.bytes()), &mut out, &mut interned);
        out.packets += 1;
    }
    out
}

fn decode_packet(packet: &[(u64, Wire<'_>)], out: &mut Decoded, interned: &mut Interned) {
    assert_eq!(
        field(packet, 10).map(Wire::varint),
        Some(1),
        "trusted sequence id"
    );
    let flags = field(packet, 13).map_or(0, Wire::varint);
    if out.packets == 0 {
        assert_eq!(flags, 1, "the first packet clears the incremental state");
    }
    if let Some(snapshot) = field(packet, 6) {
        for clock in repeated(&fields(snapshot.bytes()), 1) {
            let clock = fields(clock.bytes());
            out.clocks.push((
                field(&clock, 1).unwrap().varint(),
                field(&clock, 2).unwrap().varint(),
            ));
        }
    }
    if let Some(desc) = field(packet, 60) {
        let (uuid, desc) = decode_descriptor(&fields(desc.bytes()));
        assert!(
            out.tracks.insert(uuid, desc).is_none(),
            "track {uuid} declared twice"
        );
    }
    if let Some(data) = field(packet, 12) {
        for (kind, entry) in fields(data.bytes()) {
            let entry = fields(entry.bytes());
            let iid = field(&entry, 1).unwrap().varint();
            let name = field(&entry, 2).unwrap().string();
            assert!(
                interned.insert((kind, iid), name).is_none(),
                "iid {iid} of {kind} reused"
            );
        }
    }
    if let Some(event) = field(packet, 11) {
        assert_eq!(flags, 2, "event packets need the incremental state");
        let timestamp = field(packet, 8).expect("event timestamp").varint();
        out.events
            .push(decode_event(timestamp, &fields(event.bytes()), interned));
    }
}

fn decode_descriptor(desc: &[(u64, Wire<'_>)]) -> (u64, Descriptor) {
    let uuid = field(desc, 1).unwrap().varint();
    let kind = if let Some(p) = field(desc, 3) {
        let p = fields(p.bytes());
        assert!(
            field(&p, 1).is_some() && field(&p, 6).is_some(),
            "pid and process name"
        );
        "process"
    } else if let Some(t) = field(desc, 4) {
        let t = fields(t.bytes());
        assert!(field(&t, 1).is_some() && field(&t, 2).is_some() && field(&t, 5).is_some());
        "thread"
    } else if let Some(c) = field(desc, 8) {
        let c = fields(c.bytes());
        assert!(field(&c, 3).is_some() || field(&c, 6).is_some() || c.is_empty());
        "counter"
    } else {
        "plain"
    };
    let descriptor = Descriptor {
        parent: field(desc, 5).map(Wire::varint),
        name: field(desc, 2).unwrap().string(),
        kind,
    };
    (uuid, descriptor)
}

fn resolve(interned: &Interned, kind: u64, iid: u64) -> String {
    interned
        .get(&(kind, iid))
        .cloned()
        .unwrap_or_else(|| panic!("iid {iid} of {kind} unresolved"))
}

fn decode_event(timestamp: u64, event: &[(u64, Wire<'_>)], interned: &Interned) -> Event {
    let category = field(event, 3).map(|w| resolve(interned, 1, w.varint()));
    let name = field(event, 10).map(|w| resolve(interned, 2, w.varint()));
    let args = repeated(event, 4)
        .map(|a| decode_annotation(&fields(a.bytes()), interned))
        .collect();
    Event {
        timestamp,
        kind: field(event, 9).expect("event type").varint(),
        track_uuid: field(event, 11).expect("track uuid").varint(),
        category,
        name,
        args,
        flows: repeated(event, 47).map(Wire::fixed64).collect(),
        terminating_flows: repeated(event, 48).map(Wire::fixed64).collect(),
        counter: field(event, 44).map(|w| f64::from_bits(w.fixed64())),
    }
}

fn decode_annotation(a: &[(u64, Wire<'_>)], interned: &Interned) -> (String, Value) {
    let name = resolve(
        interned,
        3,
        field(a, 1).expect("annotation name iid").varint(),
    );
    let value = if let Some(v) = field(a, 3) {
        Value::Uint(v.varint())
    } else if let Some(v) = field(a, 4) {
        Value::Int(v.varint() as i64)
    } else if let Some(v) = field(a, 5) {
        Value::Float(f64::from_bits(v.fixed64()))
    } else {
        Value::Str(field(a, 6).expect("annotation value").string())
    };
    (name, value)
}

// ---- The synthetic run -----------------------------------------------------------------------

const ORIGIN_UNIX_NS: i128 = 1_780_000_000_000_000_000;
const NODES: u64 = 3;
const RANKS_PER_NODE: u64 = 2;
const STEPS: i64 = 20;
const STEP_NS: i64 = 10_000;

/// What was sent: slices by id (track, start, end), counter samples, flow ends.
#[derive(Default)]
struct Sent {
    slices: BTreeMap<u64, (u64, i64, i64)>,
    samples: Vec<(u64, i64, f64)>,
    instants: usize,
    flows: BTreeMap<u64, (usize, usize)>,
}

fn node_id(node: u64) -> u64 {
    node * 100
}
fn rank_id(node: u64, rank: u64) -> u64 {
    node * 100 + 1 + rank
}
fn counter_id(node: u64) -> u64 {
    node * 100 + 50
}
const FINDINGS: u64 = 9_999;

fn declare(sink: &mut impl TraceSink) {
    let units = [Some(Unit::Bytes), Some(Unit::Percent), None];
    for node in 0..NODES {
        let pid = node as u32 + 10;
        let track = |id, parent, name: String, kind| Track {
            id: TrackId(id),
            parent,
            name,
            kind,
        };
        sink.track(&track(
            node_id(node),
            None,
            format!("host{node}"),
            TrackKind::Process { pid },
        ))
        .unwrap();
        for rank in 0..RANKS_PER_NODE {
            let kind = TrackKind::Thread {
                pid,
                tid: pid * 10 + rank as u32,
            };
            let t = track(
                rank_id(node, rank),
                Some(TrackId(node_id(node))),
                format!("rank {rank}"),
                kind,
            );
            sink.track(&t).unwrap();
        }
        let kind = TrackKind::Counter {
            unit: units[node as usize],
        };
        sink.track(&track(
            counter_id(node),
            Some(TrackId(node_id(node))),
            "mem".into(),
            kind,
        ))
        .unwrap();
    }
    let findings = Track {
        id: TrackId(FINDINGS),
        parent: None,
        name: "findings".into(),
        kind: TrackKind::Instants,
    };
    sink.track(&findings).unwrap();
}

struct Emitter<'s, S: TraceSink> {
    sink: &'s mut S,
    sent: Sent,
    next_id: u64,
}

impl<S: TraceSink> Emitter<'_, S> {
    #[allow(clippy::too_many_arguments)]
    fn slice(
        &mut self,
        track: u64,
        name: &str,
        start_ns: i64,
        duration_ns: u64,
        flows: &[FlowId],
        ending: &[FlowId],
    ) {
        let id = self.next_id;
        self.next_id += 1;
        let label = format!("op-{id}");
        let args = [
            Arg {
                name: "id",
                value: ArgValue::Uint(id),
            },
            Arg {
                name: "layer",
                value: ArgValue::Int(-(id as i64)),
            },
            Arg {
                name: "gb_per_s",
                value: ArgValue::Float(id as f64 / 4.0),
            },
            Arg {
                name: "op",
                value: ArgValue::Str(&label),
            },
            Arg {
                name: "step",
                value: ArgValue::Uint(id / 10),
            },
        ];
        let slice = Slice {
            track: TrackId(track),
            name,
            category: "compute",
            start_ns,
            duration_ns,
            args: &args,
            flows,
            flows_ending: ending,
        };
        self.sink.slice(&slice).unwrap();
        self.sent
            .slices
            .insert(id, (track, start_ns, start_ns + duration_ns as i64));
        for f in flows {
            self.sent.flows.entry(f.0).or_default().0 += 1;
        }
        for f in ending {
            self.sent.flows.entry(f.0).or_default().1 += 1;
        }
    }

    /// One step on one rank: an outer slice, two touching children (the first with a
    /// grandchild), a zero-length marker, and the rank's part in the step's flows.
    fn step(&mut self, node: u64, rank: u64, step: i64) {
        let track = rank_id(node, rank);
        let t = step * STEP_NS + (node * 7 + rank) as i64;
        let pair = FlowId(step as u64 * 1000 + node * 10);
        let chain = FlowId(step as u64 * 1000 + 999);
        let global_rank = node * RANKS_PER_NODE + rank;
        let (flows, ending): (Vec<FlowId>, Vec<FlowId>) = match (rank, global_rank) {
            (_, 0) => (vec![pair, chain], vec![]),
            (0, _) => (vec![pair], vec![]),
            (_, 3) => (vec![chain], vec![pair]),
            (_, 5) => (vec![], vec![pair, chain]),
            _ => (vec![], vec![pair]),
        };
        self.slice(track, "step", t, 5_000, &[], &[]);
        self.slice(track, "matmul", t + 100, 200, &[], &[]);
        self.slice(track, "gelu", t + 150, 50, &[], &[]);
        self.slice(track, "all_reduce", t + 300, 1_000, &flows, &ending);
        self.slice(track, "marker", t + 2_000, 0, &[], &[]);
    }

    fn samples(&mut self, step: i64) {
        for node in 0..NODES {
            let (time_ns, value) = (step * STEP_NS + 500, (step * 3 + node as i64) as f64 * 1.5);
            self.sink
                .counter(TrackId(counter_id(node)), time_ns, value)
                .unwrap();
            self.sent.samples.push((counter_id(node), time_ns, value));
        }
    }

    fn instants(&mut self, step: i64) {
        let args = [Arg {
            name: "share",
            value: ArgValue::Float(0.25),
        }];
        for track in [FINDINGS, rank_id(1, 0)] {
            let instant = Instant {
                track: TrackId(track),
                name: "straggler",
                category: "finding",
                time_ns: step * STEP_NS + 4_000,
                args: &args,
            };
            self.sink.instant(&instant).unwrap();
            self.sent.instants += 1;
        }
    }
}

fn write_run() -> (Vec<u8>, Sent) {
    let header = TraceHeader {
        origin_unix_ns: ORIGIN_UNIX_NS,
        title: "synthetic".into(),
    };
    let mut writer = PerfettoWriter::new(Vec::new(), &header).unwrap();
    declare(&mut writer);
    let mut emitter = Emitter {
        sink: &mut writer,
        sent: Sent::default(),
        next_id: 1,
    };
    for step in 0..STEPS {
        for node in 0..NODES {
            for rank in 0..RANKS_PER_NODE {
                emitter.step(node, rank, step);
            }
        }
        emitter.samples(step);
        emitter.instants(step);
    }
    let sent = emitter.sent;
    writer.finish().unwrap();
    (writer.into_inner(), sent)
}

/// A timeline time as written: offset by the BOOTTIME reading of the clock snapshot.
fn timestamp(decoded: &Decoded, time_ns: i64) -> u64 {
    let base = decoded
        .clocks
        .iter()
        .find(|&&(id, _)| id == 6)
        .expect("BOOTTIME in the snapshot");
    (i128::from(base.1) + i128::from(time_ns)) as u64
}

// ---- The checks ------------------------------------------------------------------------------

/// Replays each track's begins and ends with a stack: returns (id, begin, end) per slice, and
/// checks that each track's events come in time order and that children end within parents.
fn replay_slices(decoded: &Decoded) -> Vec<(u64, u64, u64, u64)> {
    let mut stacks: HashMap<u64, Vec<(u64, u64)>> = HashMap::new();
    let mut last_ts: HashMap<u64, u64> = HashMap::new();
    let mut matched = Vec::new();
    for e in decoded.events.iter().filter(|e| e.kind == 1 || e.kind == 2) {
        let last = last_ts.insert(e.track_uuid, e.timestamp).unwrap_or(0);
        assert!(
            e.timestamp >= last,
            "track {} goes back in time",
            e.track_uuid
        );
        let stack = stacks.entry(e.track_uuid).or_default();
        if e.kind == 1 {
            let id = match e.args.iter().find(|(n, _)| n == "id") {
                Some((_, Value::Uint(id))) => *id,
                other => panic!("slice without id: {other:?}"),
            };
            stack.push((id, e.timestamp));
        } else {
            let (id, begin) = stack.pop().expect("an end with no open slice");
            matched.push((e.track_uuid, id, begin, e.timestamp));
        }
    }
    assert!(stacks.values().all(Vec::is_empty), "slices left open");
    matched
}

#[test]
fn every_slice_appears_once_with_a_matching_begin_and_end_and_nests() {
    let (trace, sent) = write_run();
    let decoded = decode(&trace);
    let uuid_of = uuids_by_name(&decoded);
    let mut matched = replay_slices(&decoded);
    matched.sort_by_key(|&(_, id, _, _)| id);
    assert_eq!(matched.len(), sent.slices.len());
    for ((uuid, id, begin, end), (sent_id, &(track, start_ns, end_ns))) in
        matched.iter().zip(&sent.slices)
    {
        assert_eq!(id, sent_id);
        assert_eq!(*uuid, uuid_of[&track]);
        assert_eq!(
            (*begin, *end),
            (timestamp(&decoded, start_ns), timestamp(&decoded, end_ns)),
            "slice {id}"
        );
    }
}

/// Track uuids by the producer's track ids, found through the names and kinds written.
fn uuids_by_name(decoded: &Decoded) -> HashMap<u64, u64> {
    let mut out = HashMap::new();
    for (&uuid, desc) in &decoded.tracks {
        let parent_name = desc.parent.map(|p| decoded.tracks[&p].name.clone());
        let node = |s: &str| s.trim_start_matches("host").parse::<u64>().unwrap();
        let id = match (desc.kind, parent_name) {
            ("process", None) => node_id(node(&desc.name)),
            ("thread", Some(p)) => rank_id(
                node(&p),
                desc.name.trim_start_matches("rank ").parse().unwrap(),
            ),
            ("counter", Some(p)) => counter_id(node(&p)),
            ("plain", None) => FINDINGS,
            other => panic!("unexpected track {other:?}"),
        };
        out.insert(id, uuid);
    }
    out
}

#[test]
fn slice_names_categories_and_args_resolve() {
    let (trace, _) = write_run();
    let decoded = decode(&trace);
    let begins: Vec<&Event> = decoded.events.iter().filter(|e| e.kind == 1).collect();
    assert!(!begins.is_empty());
    for e in begins {
        assert_eq!(e.category.as_deref(), Some("compute"));
        assert!(
            ["step", "matmul", "gelu", "all_reduce", "marker"]
                .contains(&e.name.as_deref().unwrap())
        );
        let id = match e.args[0] {
            (ref n, Value::Uint(id)) if n == "id" => id,
            ref other => panic!("first arg {other:?}"),
        };
        let expected = vec![
            ("id".to_string(), Value::Uint(id)),
            ("layer".to_string(), Value::Int(-(id as i64))),
            ("gb_per_s".to_string(), Value::Float(id as f64 / 4.0)),
            ("op".to_string(), Value::Str(format!("op-{id}"))),
            ("step".to_string(), Value::Uint(id / 10)),
        ];
        assert_eq!(e.args, expected);
    }
}

#[test]
fn every_sample_and_instant_appears_once() {
    let (trace, sent) = write_run();
    let decoded = decode(&trace);
    let uuid_of = uuids_by_name(&decoded);
    let mut got: Vec<(u64, u64, u64)> = decoded
        .events
        .iter()
        .filter(|e| e.kind == 4)
        .map(|e| {
            (
                e.track_uuid,
                e.timestamp,
                e.counter.expect("counter value").to_bits(),
            )
        })
        .collect();
    let mut want: Vec<(u64, u64, u64)> = sent
        .samples
        .iter()
        .map(|&(track, t, v)| (uuid_of[&track], timestamp(&decoded, t), v.to_bits()))
        .collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want);
    let instants: Vec<&Event> = decoded.events.iter().filter(|e| e.kind == 3).collect();
    assert_eq!(instants.len(), sent.instants);
    assert!(
        instants
            .iter()
            .all(|e| e.name.as_deref() == Some("straggler")
                && e.args == [("share".to_string(), Value::Float(0.25))])
    );
}

#[test]
fn every_track_parent_exists_and_counters_sit_on_counter_tracks() {
    let (trace, _) = write_run();
    let decoded = decode(&trace);
    assert_eq!(
        decoded.tracks.len(),
        (NODES * (RANKS_PER_NODE + 2) + 1) as usize
    );
    for desc in decoded.tracks.values() {
        if let Some(parent) = desc.parent {
            assert!(
                decoded.tracks.contains_key(&parent),
                "{} has no parent {parent}",
                desc.name
            );
        }
    }
    for e in &decoded.events {
        let desc = decoded
            .tracks
            .get(&e.track_uuid)
            .expect("event on a declared track");
        assert_eq!(
            e.kind == 4,
            desc.kind == "counter",
            "event {e:?} on {desc:?}"
        );
    }
}

#[test]
fn every_flow_starts_once_and_ends_once_after_it_starts() {
    let (trace, sent) = write_run();
    let decoded = decode(&trace);
    let mut starts: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut ends: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for e in &decoded.events {
        for &f in &e.flows {
            starts.entry(f).or_default().push(e.timestamp);
        }
        for &f in &e.terminating_flows {
            ends.entry(f).or_default().push(e.timestamp);
        }
    }
    assert_eq!(starts.len(), sent.flows.len());
    for (id, &(passes, endings)) in &sent.flows {
        assert_eq!(endings, 1, "flow {id} as sent");
        assert_eq!(starts[id].len(), passes, "flow {id}");
        assert_eq!(ends[id].len(), 1, "flow {id} ends once");
        assert!(
            starts[id].iter().all(|&t| t <= ends[id][0]),
            "flow {id} ends before it starts"
        );
    }
}

#[test]
fn the_clock_snapshot_maps_the_timeline_to_wall_clock_time() {
    let (trace, _) = write_run();
    let decoded = decode(&trace);
    // BOOTTIME (6) at the timeline's zero, REALTIME (1) at the origin.
    assert_eq!(decoded.clocks.len(), 2);
    assert_eq!(decoded.clocks[0].0, 6);
    assert_eq!(decoded.clocks[1], (1, ORIGIN_UNIX_NS as u64));
    // The earliest event, a slice at time 0, is stamped at the snapshot's BOOTTIME reading.
    let first = decoded.events.iter().map(|e| e.timestamp).min();
    assert_eq!(first, Some(decoded.clocks[0].1));
}
