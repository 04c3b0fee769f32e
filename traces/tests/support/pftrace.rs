//! An independent decoder of the `.pftrace` files `PerfettoWriter` writes, written here from
//! the protobuf wire format and Perfetto's published field numbers: it shares no code with the
//! writer, so a misreading of the format on either side shows as a failed check. Used by
//! traces/tests/perfetto_decode.rs and, through `#[path]`, by the end-to-end tests in
//! tests/export.rs.
//!
//! It reads a file the way trace_processor does: expands `compressed_packets`, keeps each
//! packet sequence's state (whether it was opened, its defaults, its incremental clock, its
//! interned strings by kind) and turns every track event into an absolute BOOTTIME time on a
//! track. Anything the format does not allow (an event on a sequence not yet opened, an iid
//! never sent on its sequence, a delta on no incremental clock) panics with what was wrong.

// A test helper: a panic is the failure report. Not every test crate uses every helper.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::io::Read;

// ---- The wire format -------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    Fixed32(u32),
}

impl<'a> Wire<'a> {
    pub fn varint(self) -> u64 {
        match self {
            Wire::Varint(v) => v,
            other => panic!("expected a varint, got {other:?}"),
        }
    }
    pub fn fixed64(self) -> u64 {
        match self {
            Wire::Fixed64(v) => v,
            other => panic!("expected a fixed64, got {other:?}"),
        }
    }
    pub fn bytes(self) -> &'a [u8] {
        match self {
            Wire::Bytes(b) => b,
            other => panic!("expected bytes, got {other:?}"),
        }
    }
    pub fn string(self) -> String {
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
pub fn fields(buf: &[u8]) -> Vec<(u64, Wire<'_>)> {
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

pub fn field<'a>(msg: &[(u64, Wire<'a>)], number: u64) -> Option<Wire<'a>> {
    msg.iter().find(|(n, _)| *n == number).map(|(_, v)| *v)
}

pub fn repeated<'a, 'm>(
    msg: &'m [(u64, Wire<'a>)],
    number: u64,
) -> impl Iterator<Item = Wire<'a>> + 'm {
    msg.iter()
        .filter(move |(n, _)| *n == number)
        .map(|(_, v)| *v)
}

// ---- Perfetto's field numbers (protos/perfetto/trace/...) ------------------------------------

/// `Trace.packet`.
const TRACE_PACKET: u64 = 1;

/// `TracePacket`.
mod packet {
    pub const CLOCK_SNAPSHOT: u64 = 6;
    pub const TIMESTAMP: u64 = 8;
    pub const TRUSTED_PACKET_SEQUENCE_ID: u64 = 10;
    pub const TRACK_EVENT: u64 = 11;
    pub const INTERNED_DATA: u64 = 12;
    pub const SEQUENCE_FLAGS: u64 = 13;
    pub const COMPRESSED_PACKETS: u64 = 50;
    pub const TIMESTAMP_CLOCK_ID: u64 = 58;
    pub const TRACE_PACKET_DEFAULTS: u64 = 59;
    pub const TRACK_DESCRIPTOR: u64 = 60;
    /// `SequenceFlags.SEQ_INCREMENTAL_STATE_CLEARED`.
    pub const INCREMENTAL_STATE_CLEARED: u64 = 1;
}

/// `TrackEvent`.
mod event {
    pub const CATEGORY_IIDS: u64 = 3;
    pub const DEBUG_ANNOTATIONS: u64 = 4;
    pub const TYPE: u64 = 9;
    pub const NAME_IID: u64 = 10;
    pub const TRACK_UUID: u64 = 11;
    pub const DOUBLE_COUNTER_VALUE: u64 = 44;
    pub const FLOW_IDS: u64 = 47;
    pub const TERMINATING_FLOW_IDS: u64 = 48;
}

/// `InternedData`: the tables, each of entries `{ iid = 1; name or str = 2 }`.
mod interned {
    pub const EVENT_CATEGORIES: u64 = 1;
    pub const EVENT_NAMES: u64 = 2;
    pub const DEBUG_ANNOTATION_NAMES: u64 = 3;
    pub const DEBUG_ANNOTATION_STRING_VALUES: u64 = 29;
}

/// `TrackEvent.Type` values.
pub const SLICE_BEGIN: u64 = 1;
pub const SLICE_END: u64 = 2;
pub const INSTANT: u64 = 3;
pub const COUNTER: u64 = 4;

/// `BuiltinClock` values; ids 64 to 127 are a sequence's own clocks.
pub const CLOCK_REALTIME: u64 = 1;
pub const CLOCK_BOOTTIME: u64 = 6;
const SEQUENCE_CLOCKS: std::ops::RangeInclusive<u64> = 64..=127;

/// The sequence of the wall-clock snapshot and the track descriptors.
pub const GLOBAL_SEQUENCE: u64 = 1;

/// Perfetto's limit on one packet, which a compressed batch must stay under.
pub const MAX_PACKET_BYTES: usize = 512 * 1024;

// ---- What a file holds -----------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub sequence: u64,
    /// The absolute BOOTTIME time, incremental deltas resolved.
    pub boottime_ns: u64,
    pub kind: u64,
    pub track_uuid: u64,
    pub category: Option<String>,
    pub name: Option<String>,
    pub args: Vec<(String, Value)>,
    pub flows: Vec<u64>,
    pub terminating_flows: Vec<u64>,
    pub counter: Option<f64>,
}

#[derive(Debug)]
pub struct Descriptor {
    pub parent: Option<u64>,
    pub name: String,
    pub kind: &'static str,
}

/// One packet as stored in the file (before expanding).
#[derive(Debug, Clone, Copy)]
pub struct FilePacket {
    /// The `TracePacket`'s encoded size, its frame aside.
    pub bytes: usize,
    /// Whether it holds a `compressed_packets` batch.
    pub compressed: bool,
}

#[derive(Debug, Default)]
pub struct Decoded {
    pub file_packets: Vec<FilePacket>,
    /// Packets after expanding the compressed batches.
    pub packets: usize,
    /// The global sequence's clock snapshot: (clock id, timestamp).
    pub clocks: Vec<(u64, u64)>,
    pub tracks: HashMap<u64, Descriptor>,
    pub events: Vec<Event>,
}

impl Decoded {
    /// The events of one `TrackEvent.Type`.
    pub fn of_kind(&self, kind: u64) -> impl Iterator<Item = &Event> {
        self.events.iter().filter(move |e| e.kind == kind)
    }

    /// The BOOTTIME reading the global snapshot pairs with the wall clock: the timeline's zero.
    pub fn base_boottime_ns(&self) -> u64 {
        self.clocks
            .iter()
            .find(|&&(id, _)| id == CLOCK_BOOTTIME)
            .expect("BOOTTIME in the global clock snapshot")
            .1
    }
}

/// A sequence's incremental clock: its id, and its reading and BOOTTIME's at the snapshot.
#[derive(Debug, Clone, Copy)]
struct IncrementalClock {
    id: u64,
    snapshot_value: u64,
    snapshot_boottime_ns: u64,
    value: u64,
}

/// What a packet sequence has set up: everything a cleared-state packet resets.
#[derive(Debug, Default)]
struct Sequence {
    opened: bool,
    default_clock: Option<u64>,
    default_track: Option<u64>,
    clock: Option<IncrementalClock>,
    /// Interned strings by (InternedData table, iid).
    interned: HashMap<(u64, u64), String>,
}

// ---- Decoding --------------------------------------------------------------------------------

/// Decodes a whole file, plain or with compressed batches.
pub fn decode(file: &[u8]) -> Decoded {
    let mut out = Decoded::default();
    let mut sequences: HashMap<u64, Sequence> = HashMap::new();
    for (number, packet) in fields(file) {
        assert_eq!(
            number, TRACE_PACKET,
            "a trace holds only Trace.packet fields"
        );
        let bytes = packet.bytes();
        let msg = fields(bytes);
        let batch = field(&msg, packet::COMPRESSED_PACKETS);
        out.file_packets.push(FilePacket {
            bytes: bytes.len(),
            compressed: batch.is_some(),
        });
        match batch {
            Some(batch) => {
                assert_eq!(msg.len(), 1, "a compressed packet holds its batch alone");
                let raw = inflate(batch.bytes());
                for (number, inner) in fields(&raw) {
                    assert_eq!(
                        number, TRACE_PACKET,
                        "a batch holds only Trace.packet fields"
                    );
                    let inner = fields(inner.bytes());
                    assert!(
                        field(&inner, packet::COMPRESSED_PACKETS).is_none(),
                        "a batch inside a batch"
                    );
                    decode_packet(&inner, &mut out, &mut sequences);
                }
            }
            None => decode_packet(&msg, &mut out, &mut sequences),
        }
    }
    out
}

/// A zlib stream (with its header), expanded.
fn inflate(zlib: &[u8]) -> Vec<u8> {
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(zlib)
        .read_to_end(&mut raw)
        .expect("compressed_packets is a zlib stream");
    raw
}

fn decode_packet(
    packet: &[(u64, Wire<'_>)],
    out: &mut Decoded,
    sequences: &mut HashMap<u64, Sequence>,
) {
    let id = field(packet, packet::TRUSTED_PACKET_SEQUENCE_ID)
        .expect("every packet names its sequence")
        .varint();
    let seq = sequences.entry(id).or_default();
    let flags = field(packet, packet::SEQUENCE_FLAGS).map_or(0, Wire::varint);
    if flags & packet::INCREMENTAL_STATE_CLEARED != 0 {
        *seq = Sequence {
            opened: true,
            ..Sequence::default()
        };
    }
    if let Some(defaults) = field(packet, packet::TRACE_PACKET_DEFAULTS) {
        read_defaults(&fields(defaults.bytes()), seq);
    }
    if let Some(snapshot) = field(packet, packet::CLOCK_SNAPSHOT) {
        read_snapshot(id, &fields(snapshot.bytes()), seq, out);
    }
    if let Some(desc) = field(packet, packet::TRACK_DESCRIPTOR) {
        assert_eq!(
            id, GLOBAL_SEQUENCE,
            "track descriptors go on the global sequence"
        );
        let (uuid, desc) = decode_descriptor(&fields(desc.bytes()));
        assert!(
            out.tracks.insert(uuid, desc).is_none(),
            "track {uuid} declared twice"
        );
    }
    if let Some(data) = field(packet, packet::INTERNED_DATA) {
        assert!(seq.opened, "interned data on sequence {id} before it opens");
        read_interned(&fields(data.bytes()), seq);
    }
    if let Some(event) = field(packet, packet::TRACK_EVENT) {
        assert!(seq.opened, "an event on sequence {id} before it opens");
        let boottime_ns = event_time(packet, seq);
        let event = decode_event(id, boottime_ns, &fields(event.bytes()), seq);
        out.events.push(event);
    }
    out.packets += 1;
}

/// `TracePacketDefaults`: the clock of packets that name none, and the track of events.
fn read_defaults(defaults: &[(u64, Wire<'_>)], seq: &mut Sequence) {
    seq.default_clock = field(defaults, packet::TIMESTAMP_CLOCK_ID).map(Wire::varint);
    seq.default_track = field(defaults, 11).map(|d| {
        field(&fields(d.bytes()), event::TRACK_UUID)
            .expect("track_event_defaults names a track")
            .varint()
    });
}

/// A `ClockSnapshot`: kept whole for the global sequence; on any sequence, a clock of its own
/// there (with the BOOTTIME reading beside it) becomes its incremental clock.
fn read_snapshot(id: u64, snapshot: &[(u64, Wire<'_>)], seq: &mut Sequence, out: &mut Decoded) {
    let mut clocks = Vec::new();
    for clock in repeated(snapshot, 1) {
        let clock = fields(clock.bytes());
        let clock_id = field(&clock, 1).expect("clock_id").varint();
        let timestamp = field(&clock, 2).expect("clock timestamp").varint();
        let incremental = field(&clock, 3).is_some_and(|w| w.varint() == 1);
        clocks.push((clock_id, timestamp, incremental));
    }
    if id == GLOBAL_SEQUENCE {
        out.clocks = clocks.iter().map(|&(c, t, _)| (c, t)).collect();
    }
    let boottime = clocks.iter().find(|c| c.0 == CLOCK_BOOTTIME);
    let own = clocks.iter().find(|c| SEQUENCE_CLOCKS.contains(&c.0));
    if let Some(&(clock_id, value, incremental)) = own {
        assert!(
            incremental,
            "sequence {id}'s clock {clock_id} is not incremental"
        );
        let &(_, boottime_ns, _) = boottime.expect("a sequence clock is snapshotted with BOOTTIME");
        seq.clock = Some(IncrementalClock {
            id: clock_id,
            snapshot_value: value,
            snapshot_boottime_ns: boottime_ns,
            value,
        });
    }
}

/// `InternedData`: each table's entries, which must not redefine an iid of that table.
fn read_interned(data: &[(u64, Wire<'_>)], seq: &mut Sequence) {
    for (table, entry) in data {
        let entry = fields(entry.bytes());
        let iid = field(&entry, 1).expect("interned iid").varint();
        let text = field(&entry, 2).expect("interned text").string();
        assert!(
            seq.interned.insert((*table, iid), text).is_none(),
            "iid {iid} of table {table} sent twice on one sequence"
        );
    }
}

/// An event packet's absolute BOOTTIME time: as it is, or a delta on the incremental clock.
fn event_time(packet: &[(u64, Wire<'_>)], seq: &mut Sequence) -> u64 {
    let timestamp = field(packet, packet::TIMESTAMP)
        .expect("event timestamp")
        .varint();
    let clock_id = field(packet, packet::TIMESTAMP_CLOCK_ID)
        .map(Wire::varint)
        .or(seq.default_clock)
        .unwrap_or(CLOCK_BOOTTIME);
    if clock_id == CLOCK_BOOTTIME {
        return timestamp;
    }
    let clock = seq
        .clock
        .as_mut()
        .filter(|c| c.id == clock_id)
        .unwrap_or_else(|| panic!("clock {clock_id} was never snapshotted on its sequence"));
    clock.value = clock.value.checked_add(timestamp).expect("clock overflow");
    clock.snapshot_boottime_ns + (clock.value - clock.snapshot_value)
}

fn decode_descriptor(desc: &[(u64, Wire<'_>)]) -> (u64, Descriptor) {
    let uuid = field(desc, 1).expect("track uuid").varint();
    let kind = if let Some(p) = field(desc, 3) {
        let p = fields(p.bytes());
        assert!(
            field(&p, 1).is_some() && field(&p, 6).is_some(),
            "pid and process name"
        );
        "process"
    } else if let Some(t) = field(desc, 4) {
        let t = fields(t.bytes());
        assert!(
            field(&t, 1).is_some() && field(&t, 2).is_some() && field(&t, 5).is_some(),
            "pid, tid and thread name"
        );
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
        name: field(desc, 2).expect("track name").string(),
        kind,
    };
    (uuid, descriptor)
}

fn resolve(seq: &Sequence, table: u64, iid: u64) -> String {
    seq.interned
        .get(&(table, iid))
        .cloned()
        .unwrap_or_else(|| panic!("iid {iid} of table {table} was not sent on its sequence"))
}

fn decode_event(
    sequence: u64,
    boottime_ns: u64,
    event: &[(u64, Wire<'_>)],
    seq: &Sequence,
) -> Event {
    let category = field(event, event::CATEGORY_IIDS)
        .map(|w| resolve(seq, interned::EVENT_CATEGORIES, w.varint()));
    let name =
        field(event, event::NAME_IID).map(|w| resolve(seq, interned::EVENT_NAMES, w.varint()));
    let args = repeated(event, event::DEBUG_ANNOTATIONS)
        .map(|a| decode_annotation(&fields(a.bytes()), seq))
        .collect();
    let track_uuid = field(event, event::TRACK_UUID)
        .map(Wire::varint)
        .or(seq.default_track)
        .expect("an event's track, its own or its sequence's default");
    Event {
        sequence,
        boottime_ns,
        kind: field(event, event::TYPE).expect("event type").varint(),
        track_uuid,
        category,
        name,
        args,
        flows: repeated(event, event::FLOW_IDS)
            .map(Wire::fixed64)
            .collect(),
        terminating_flows: repeated(event, event::TERMINATING_FLOW_IDS)
            .map(Wire::fixed64)
            .collect(),
        counter: field(event, event::DOUBLE_COUNTER_VALUE).map(|w| f64::from_bits(w.fixed64())),
    }
}

/// A `DebugAnnotation`: interned name, and one of uint, int, double or interned string.
fn decode_annotation(a: &[(u64, Wire<'_>)], seq: &Sequence) -> (String, Value) {
    let name_iid = field(a, 1).expect("annotation name iid").varint();
    let name = resolve(seq, interned::DEBUG_ANNOTATION_NAMES, name_iid);
    let value = if let Some(v) = field(a, 3) {
        Value::Uint(v.varint())
    } else if let Some(v) = field(a, 4) {
        Value::Int(v.varint() as i64)
    } else if let Some(v) = field(a, 5) {
        Value::Float(f64::from_bits(v.fixed64()))
    } else {
        let iid = field(a, 17).expect("annotation value").varint();
        Value::Str(resolve(seq, interned::DEBUG_ANNOTATION_STRING_VALUES, iid))
    };
    (name, value)
}

// ---- Checks every trace must pass ------------------------------------------------------------

/// A slice rebuilt from its begin and end.
#[derive(Debug, Clone, Copy)]
pub struct DecodedSlice {
    pub track_uuid: u64,
    /// The begin's index in `Decoded::events`.
    pub begin: usize,
    pub start_boottime_ns: u64,
    pub end_boottime_ns: u64,
}

/// Replays each track's begins and ends with a stack, checking that they come in time order
/// and that every end closes an open slice and every slice is closed: slices on a track nest.
pub fn slices(decoded: &Decoded) -> Vec<DecodedSlice> {
    let mut stacks: HashMap<u64, Vec<(usize, u64)>> = HashMap::new();
    let mut last_ns: HashMap<u64, u64> = HashMap::new();
    let mut matched = Vec::new();
    for (index, e) in decoded.events.iter().enumerate() {
        if e.kind != SLICE_BEGIN && e.kind != SLICE_END {
            continue;
        }
        let last = last_ns.insert(e.track_uuid, e.boottime_ns).unwrap_or(0);
        assert!(
            e.boottime_ns >= last,
            "track {} goes back in time",
            e.track_uuid
        );
        let stack = stacks.entry(e.track_uuid).or_default();
        if e.kind == SLICE_BEGIN {
            stack.push((index, e.boottime_ns));
        } else {
            let (begin, start) = stack.pop().expect("an end with no open slice");
            matched.push(DecodedSlice {
                track_uuid: e.track_uuid,
                begin,
                start_boottime_ns: start,
                end_boottime_ns: e.boottime_ns,
            });
        }
    }
    assert!(stacks.values().all(Vec::is_empty), "slices left open");
    matched
}

/// Where each flow passes and where it ends: BOOTTIME times by flow id.
#[derive(Debug, Default)]
pub struct FlowUse {
    pub steps_ns: Vec<u64>,
    pub ends_ns: Vec<u64>,
}

pub fn flows(decoded: &Decoded) -> BTreeMap<u64, FlowUse> {
    let mut out: BTreeMap<u64, FlowUse> = BTreeMap::new();
    for e in &decoded.events {
        for &f in &e.flows {
            out.entry(f).or_default().steps_ns.push(e.boottime_ns);
        }
        for &f in &e.terminating_flows {
            out.entry(f).or_default().ends_ns.push(e.boottime_ns);
        }
    }
    out
}

/// Every flow starts (at least one step) and ends exactly once, not before any of its steps.
pub fn check_flows(decoded: &Decoded) -> BTreeMap<u64, FlowUse> {
    let flows = flows(decoded);
    for (id, used) in &flows {
        assert!(!used.steps_ns.is_empty(), "flow {id} never starts");
        assert_eq!(used.ends_ns.len(), 1, "flow {id} ends once");
        assert!(
            used.steps_ns.iter().all(|&t| t <= used.ends_ns[0]),
            "flow {id} ends before it starts"
        );
    }
    flows
}

/// Every track's parent is declared, and every event is on a declared track.
pub fn check_tracks(decoded: &Decoded) {
    for (uuid, desc) in &decoded.tracks {
        if let Some(parent) = desc.parent {
            assert!(
                decoded.tracks.contains_key(&parent),
                "track {uuid} ('{}') has no parent {parent}",
                desc.name
            );
        }
    }
    for e in &decoded.events {
        assert!(
            decoded.tracks.contains_key(&e.track_uuid),
            "event {e:?} on an undeclared track"
        );
    }
}

/// Every batch is compressed and under Perfetto's packet limit.
pub fn check_batches(decoded: &Decoded) {
    assert!(!decoded.file_packets.is_empty());
    for (i, p) in decoded.file_packets.iter().enumerate() {
        assert!(p.compressed, "file packet {i} is not a compressed batch");
        assert!(
            p.bytes < MAX_PACKET_BYTES,
            "compressed packet {i} is {} bytes",
            p.bytes
        );
    }
}
