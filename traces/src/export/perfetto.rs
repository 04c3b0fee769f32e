//! Writes a trace in Perfetto's native protobuf format (a `.pftrace` that ui.perfetto.dev and
//! trace_processor open), one packet at a time as events come, so memory stays flat.
//!
//! Layout: every `Track` becomes a `TrackDescriptor` (with a process, thread or counter
//! descriptor by kind); a slice becomes a `TYPE_SLICE_BEGIN` at its start and a
//! `TYPE_SLICE_END` at its end; counter values are `TYPE_COUNTER` events with a double value;
//! instants are `TYPE_INSTANT` events. Categories, event names and argument names are interned
//! on one packet sequence: a string is sent once, in the `InternedData` of the first packet that
//! uses it.
//!
//! Ends are written lazily: a track keeps a stack of its open slices' end times and writes the
//! ends that fall before (or at) the next slice's start, and all of them at `finish`, so that
//! begin/end pairs nest. A slice that overruns the slice it started in is cut at that slice's
//! end, as a viewer nests by stack.
//!
//! Clock: packets are stamped in BOOTTIME (track events' default clock) as
//! `timeline_ns + BASE_NS`, with `BASE_NS` = 2^50 ns (about 13 days): times up to 13 days
//! before the origin stay non-negative, and a run's first 2.3 years take 8-byte varints (a Unix
//! time would take 9). The first packet is a clock snapshot that pairs BOOTTIME `BASE_NS` with
//! REALTIME `origin_unix_ns`, so a viewer shows wall-clock time: a packet's Unix time is
//! `timestamp - BASE_NS + origin_unix_ns`.

#[path = "perfetto_proto.rs"]
mod proto;

use super::{Arg, ArgValue, ExportError, FlowId, Instant, Slice, TraceHeader, Track, TrackId};
use super::{TraceSink, TrackKind};
use crate::counter::Unit;
use prost::encoding::{WireType, encoded_len_varint};
use rustc_hash::FxHashMap;
use std::io::Write;

/// Every packet goes on this one sequence, which owns the interned strings.
const SEQUENCE_ID: u32 = 1;
/// A packet's `trusted_packet_sequence_id` and `sequence_flags` after the first, encoded once.
const SEQUENCE_FIELDS: [u8; 4] = [
    (proto::packet::TRUSTED_PACKET_SEQUENCE_ID << 3) as u8,
    SEQUENCE_ID as u8,
    (proto::packet::SEQUENCE_FLAGS << 3) as u8,
    proto::packet::SEQ_NEEDS_INCREMENTAL_STATE as u8,
];
/// The BOOTTIME timestamp of the timeline's zero (see the module comment).
const BASE_NS: i64 = 1 << 50;

/// Streams tracks and events to `out` (pass a `BufWriter`) as a Perfetto trace.
#[derive(Debug)]
pub struct PerfettoWriter<W: Write> {
    enc: Encoder<W>,
    tracks: FxHashMap<TrackId, TrackState>,
    /// Track descriptors written so far.
    declared: u64,
}

/// What a declared track accepts and, for slices, what is still open on it.
#[derive(Debug)]
struct TrackState {
    uuid: u64,
    holds_counters: bool,
    open: OpenSlices,
}

impl<W: Write> PerfettoWriter<W> {
    /// Starts the trace: writes the clock snapshot that clears the sequence's state.
    pub fn new(out: W, header: &TraceHeader) -> Result<Self, ExportError> {
        let mut enc = Encoder::new(out, BASE_NS);
        enc.first_packet(clock_snapshot(BASE_NS, header.origin_unix_ns))?;
        Ok(PerfettoWriter {
            enc,
            tracks: FxHashMap::default(),
            declared: 0,
        })
    }

    /// The output, once `finish` has flushed it.
    pub fn into_inner(self) -> W {
        self.enc.out
    }

    fn state(&mut self, track: TrackId) -> Result<&mut TrackState, ExportError> {
        self.tracks
            .get_mut(&track)
            .ok_or(ExportError::UnknownTrack(track.0))
    }
}

impl<W: Write> TraceSink for PerfettoWriter<W> {
    fn track(&mut self, track: &Track) -> Result<(), ExportError> {
        // A second descriptor would orphan what is open on the first.
        if self.tracks.contains_key(&track.id) {
            return Err(ExportError::DuplicateTrack(track.id.0));
        }
        let parent_uuid = match track.parent {
            Some(parent) => Some(self.state(parent)?.uuid),
            None => None,
        };
        // Uuids count from 1 in declaration order: 0 means "no track" to Perfetto, and small
        // numbers are short varints on every event.
        self.declared += 1;
        let uuid = self.declared;
        self.enc
            .whole_packet(descriptor(track, uuid, parent_uuid))?;
        let state = TrackState {
            uuid,
            holds_counters: matches!(track.kind, TrackKind::Counter { .. }),
            open: OpenSlices::default(),
        };
        self.tracks.insert(track.id, state);
        Ok(())
    }

    fn slice(&mut self, slice: &Slice<'_>) -> Result<(), ExportError> {
        let state = event_track(&mut self.tracks, slice.track, "slice")?;
        let end_ns = i64::try_from(slice.duration_ns)
            .ok()
            .and_then(|d| slice.start_ns.checked_add(d))
            .ok_or(ExportError::TimeOutOfRange {
                time_ns: slice.start_ns,
            })?;
        self.enc.timestamp(end_ns)?;
        let start = self.enc.timestamp(slice.start_ns)?;
        if !state.open.in_order(slice.start_ns) {
            return Err(ExportError::OutOfOrder {
                name: slice.name.to_owned(),
                track: slice.track.0,
                start_ns: slice.start_ns,
            });
        }
        while let Some(due_ns) = state.open.pop_due(slice.start_ns) {
            self.enc.slice_end(state.uuid, due_ns)?;
        }
        state.open.push(slice.start_ns, end_ns);
        self.enc.slice_begin(state.uuid, start, slice)
    }

    fn counter(&mut self, track: TrackId, time_ns: i64, value: f64) -> Result<(), ExportError> {
        let state = self.state(track)?;
        if !state.holds_counters {
            return Err(ExportError::WrongTrackKind {
                event: "counter value",
                track: track.0,
            });
        }
        let uuid = state.uuid;
        let timestamp = self.enc.timestamp(time_ns)?;
        self.enc.counter(uuid, timestamp, value)
    }

    fn instant(&mut self, instant: &Instant<'_>) -> Result<(), ExportError> {
        let uuid = event_track(&mut self.tracks, instant.track, "instant")?.uuid;
        let timestamp = self.enc.timestamp(instant.time_ns)?;
        self.enc.instant(uuid, timestamp, instant)
    }

    fn finish(&mut self) -> Result<(), ExportError> {
        for state in self.tracks.values_mut() {
            while let Some(due_ns) = state.open.pop_due(i64::MAX) {
                self.enc.slice_end(state.uuid, due_ns)?;
            }
        }
        self.enc.out.flush()?;
        Ok(())
    }
}

/// The state of a track that takes slices and instants (any but a counter track).
fn event_track<'t>(
    tracks: &'t mut FxHashMap<TrackId, TrackState>,
    track: TrackId,
    event: &'static str,
) -> Result<&'t mut TrackState, ExportError> {
    let state = tracks
        .get_mut(&track)
        .ok_or(ExportError::UnknownTrack(track.0))?;
    if state.holds_counters {
        return Err(ExportError::WrongTrackKind {
            event,
            track: track.0,
        });
    }
    Ok(state)
}

/// The slices still open on one track: their end times, innermost last, and the last start
/// seen (slices must come in start order).
#[derive(Debug, Default)]
struct OpenSlices {
    last_start_ns: Option<i64>,
    ends_ns: Vec<i64>,
}

impl OpenSlices {
    /// Whether a slice starting at `start_ns` comes at or after the one before it.
    fn in_order(&self, start_ns: i64) -> bool {
        self.last_start_ns.is_none_or(|last_ns| start_ns >= last_ns)
    }

    /// The innermost open slice's end if it comes at or before `time_ns` (it must be written
    /// before anything that starts then); call until `None`.
    fn pop_due(&mut self, time_ns: i64) -> Option<i64> {
        let end_ns = *self.ends_ns.last()?;
        (end_ns <= time_ns).then(|| {
            self.ends_ns.pop();
            end_ns
        })
    }

    /// Opens a slice, once the due ends are popped; returns its end, cut at the enclosing
    /// slice's end so that the pair nests.
    fn push(&mut self, start_ns: i64, end_ns: i64) -> i64 {
        let end_ns = self
            .ends_ns
            .last()
            .map_or(end_ns, |&outer| end_ns.min(outer));
        self.last_start_ns = Some(start_ns);
        self.ends_ns.push(end_ns);
        end_ns
    }
}

/// The cache slot of a name: its length and first, middle and last bytes tell a producer's
/// few names apart, mixed by a multiplicative hash (slots are its top bits).
fn recent_slot(name: &str) -> usize {
    let bytes = name.as_bytes();
    let byte = |i: usize| bytes.get(i).map_or(0, |&b| u64::from(b));
    let last = bytes.len().saturating_sub(1);
    let digest = bytes.len() as u64 | byte(0) << 16 | byte(last / 2) << 24 | byte(last) << 32;
    (digest.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> (64 - RECENT_SLOTS.trailing_zeros())) as usize
}

/// BOOTTIME at the timeline's zero paired with the wall clock there; none when the origin is not
/// a time after the Unix epoch.
fn clock_snapshot(base_ns: i64, origin_unix_ns: i128) -> Option<proto::ClockSnapshot> {
    let realtime_ns = u64::try_from(origin_unix_ns).ok()?;
    let clock = |clock_id, timestamp| proto::Clock {
        clock_id: Some(clock_id),
        timestamp: Some(timestamp),
    };
    Some(proto::ClockSnapshot {
        clocks: vec![
            clock(proto::CLOCK_BOOTTIME, base_ns as u64),
            clock(proto::CLOCK_REALTIME, realtime_ns),
        ],
    })
}

fn descriptor(track: &Track, uuid: u64, parent_uuid: Option<u64>) -> proto::TracePacket {
    let mut desc = proto::TrackDescriptor {
        uuid: Some(uuid),
        name: Some(track.name.clone()),
        parent_uuid,
        ..Default::default()
    };
    match track.kind {
        TrackKind::Process { pid } => {
            desc.process = Some(proto::ProcessDescriptor {
                pid: Some(pid as i32),
                process_name: Some(track.name.clone()),
            });
        }
        TrackKind::Thread { pid, tid } => {
            desc.thread = Some(proto::ThreadDescriptor {
                pid: Some(pid as i32),
                tid: Some(i64::from(tid)),
                thread_name: Some(track.name.clone()),
            });
        }
        TrackKind::Counter { unit } => desc.counter = Some(counter_descriptor(unit)),
        TrackKind::Instants => {}
    }
    proto::TracePacket {
        track_descriptor: Some(desc),
        ..Default::default()
    }
}

/// Perfetto's own unit where it has one (time, count, bytes), else the unit's symbol.
fn counter_descriptor(unit: Option<Unit>) -> proto::CounterDescriptor {
    let builtin = match unit {
        Some(Unit::Nanoseconds) => Some(proto::UNIT_TIME_NS),
        Some(Unit::Count) => Some(proto::UNIT_COUNT),
        Some(Unit::Bytes) => Some(proto::UNIT_SIZE_BYTES),
        _ => None,
    };
    let unit_name = match builtin {
        Some(_) => None,
        None => unit.map(|unit| unit.symbol().to_owned()),
    };
    proto::CounterDescriptor {
        unit: builtin,
        unit_name,
    }
}

/// How many recently used names an interner checks before hashing.
const RECENT_SLOTS: usize = 64;

/// Strings sent once and then named by id on the sequence.
#[derive(Debug)]
struct Interner {
    ids: FxHashMap<Box<str>, u64>,
    /// The names by iid - 1.
    names: Vec<Box<str>>,
    /// A direct-mapped cache of iids (0: empty) by a cheap digest of the name: a producer
    /// repeats a few names, and comparing with one name is cheaper than hashing it.
    recent: [u64; RECENT_SLOTS],
}

impl Default for Interner {
    fn default() -> Self {
        Interner {
            ids: FxHashMap::default(),
            names: Vec::new(),
            recent: [0; RECENT_SLOTS],
        }
    }
}

impl Interner {
    /// The id of `name`, adding it to `fresh` (to be sent with this packet) when it is new.
    fn id(&mut self, name: &str, fresh: &mut Vec<proto::InternedName>) -> u64 {
        let slot = recent_slot(name);
        let iid = self.recent[slot];
        if iid != 0
            && self
                .names
                .get(iid as usize - 1)
                .is_some_and(|n| **n == *name)
        {
            return iid;
        }
        let iid = self.lookup(name, fresh);
        self.recent[slot] = iid;
        iid
    }

    fn lookup(&mut self, name: &str, fresh: &mut Vec<proto::InternedName>) -> u64 {
        if let Some(&iid) = self.ids.get(name) {
            return iid;
        }
        // Ids start at 1: Perfetto reads 0 as unset.
        let iid = self.names.len() as u64 + 1;
        self.ids.insert(name.into(), iid);
        self.names.push(name.into());
        fresh.push(proto::InternedName {
            iid: Some(iid),
            name: Some(name.to_owned()),
        });
        iid
    }
}

/// Encodes packets into reused buffers and writes each, framed as `Trace.packet`, to `out`.
#[derive(Debug)]
struct Encoder<W: Write> {
    out: W,
    base_ns: i64,
    /// The `TrackEvent` being built, then the `TracePacket` around it.
    event: Vec<u8>,
    packet: Vec<u8>,
    fresh: proto::InternedData,
    categories: Interner,
    event_names: Interner,
    arg_names: Interner,
}

impl<W: Write> Encoder<W> {
    fn new(out: W, base_ns: i64) -> Self {
        Encoder {
            out,
            base_ns,
            event: Vec::with_capacity(256),
            packet: Vec::with_capacity(512),
            fresh: proto::InternedData::default(),
            categories: Interner::default(),
            event_names: Interner::default(),
            arg_names: Interner::default(),
        }
    }

    /// A timeline time as a packet timestamp: non-negative and within int64, as trace_processor
    /// reads timestamps as int64.
    fn timestamp(&self, time_ns: i64) -> Result<u64, ExportError> {
        time_ns
            .checked_add(self.base_ns)
            .and_then(|t| u64::try_from(t).ok())
            .ok_or(ExportError::TimeOutOfRange { time_ns })
    }

    /// The packet that opens the sequence, clearing its interned state.
    fn first_packet(&mut self, snapshot: Option<proto::ClockSnapshot>) -> Result<(), ExportError> {
        self.whole_packet(proto::TracePacket {
            clock_snapshot: snapshot,
            sequence_flags: Some(proto::packet::SEQ_INCREMENTAL_STATE_CLEARED),
            ..Default::default()
        })
    }

    fn whole_packet(&mut self, mut packet: proto::TracePacket) -> Result<(), ExportError> {
        packet.trusted_packet_sequence_id = Some(SEQUENCE_ID);
        self.packet.clear();
        prost::encoding::message::encode(proto::TRACE_PACKET, &packet, &mut self.packet);
        self.out.write_all(&self.packet)?;
        Ok(())
    }

    fn slice_begin(
        &mut self,
        uuid: u64,
        timestamp: u64,
        slice: &Slice<'_>,
    ) -> Result<(), ExportError> {
        self.named_event(
            proto::track_event::TYPE_SLICE_BEGIN,
            uuid,
            slice.category,
            slice.name,
        );
        self.args(slice.args);
        self.flows(proto::track_event::FLOW_IDS, slice.flows);
        self.flows(proto::track_event::TERMINATING_FLOW_IDS, slice.flows_ending);
        self.write_event(timestamp)
    }

    fn slice_end(&mut self, uuid: u64, end_ns: i64) -> Result<(), ExportError> {
        let timestamp = self.timestamp(end_ns)?;
        self.event.clear();
        varint_field(
            &mut self.event,
            proto::track_event::TYPE,
            proto::track_event::TYPE_SLICE_END,
        );
        varint_field(&mut self.event, proto::track_event::TRACK_UUID, uuid);
        self.write_event(timestamp)
    }

    fn counter(&mut self, uuid: u64, timestamp: u64, value: f64) -> Result<(), ExportError> {
        self.event.clear();
        varint_field(
            &mut self.event,
            proto::track_event::TYPE,
            proto::track_event::TYPE_COUNTER,
        );
        varint_field(&mut self.event, proto::track_event::TRACK_UUID, uuid);
        put_key(
            proto::track_event::DOUBLE_COUNTER_VALUE,
            WireType::SixtyFourBit,
            &mut self.event,
        );
        self.event.extend_from_slice(&value.to_le_bytes());
        self.write_event(timestamp)
    }

    fn instant(
        &mut self,
        uuid: u64,
        timestamp: u64,
        instant: &Instant<'_>,
    ) -> Result<(), ExportError> {
        self.named_event(
            proto::track_event::TYPE_INSTANT,
            uuid,
            instant.category,
            instant.name,
        );
        self.args(instant.args);
        self.write_event(timestamp)
    }

    /// Starts `event` with its type, track, interned category and interned name.
    fn named_event(&mut self, kind: u64, uuid: u64, category: &str, name: &str) {
        let category_iid = self
            .categories
            .id(category, &mut self.fresh.event_categories);
        let name_iid = self.event_names.id(name, &mut self.fresh.event_names);
        self.event.clear();
        varint_field(&mut self.event, proto::track_event::TYPE, kind);
        varint_field(&mut self.event, proto::track_event::TRACK_UUID, uuid);
        varint_field(
            &mut self.event,
            proto::track_event::CATEGORY_IIDS,
            category_iid,
        );
        varint_field(&mut self.event, proto::track_event::NAME_IID, name_iid);
    }

    /// Each argument as a `DebugAnnotation` with an interned name.
    fn args(&mut self, args: &[Arg<'_>]) {
        for arg in args {
            let name_iid = self
                .arg_names
                .id(arg.name, &mut self.fresh.debug_annotation_names);
            let body_len = 1 + encoded_len_varint(name_iid) + 1 + value_len(&arg.value);
            put_key(
                proto::track_event::DEBUG_ANNOTATIONS,
                WireType::LengthDelimited,
                &mut self.event,
            );
            put_varint(body_len as u64, &mut self.event);
            varint_field(&mut self.event, proto::debug_annotation::NAME_IID, name_iid);
            encode_value(&mut self.event, &arg.value);
        }
    }

    fn flows(&mut self, field: u32, flows: &[FlowId]) {
        for flow in flows {
            put_key(field, WireType::SixtyFourBit, &mut self.event);
            self.event.extend_from_slice(&flow.0.to_le_bytes());
        }
    }

    /// Wraps `event` in a packet on the sequence, with the strings it introduced, and writes it.
    fn write_event(&mut self, timestamp: u64) -> Result<(), ExportError> {
        let packet = &mut self.packet;
        packet.clear();
        varint_field(packet, proto::packet::TIMESTAMP, timestamp);
        packet.extend_from_slice(&SEQUENCE_FIELDS);
        if !self.fresh.is_empty() {
            prost::encoding::message::encode(proto::packet::INTERNED_DATA, &self.fresh, packet);
            self.fresh.clear();
        }
        bytes_field(packet, proto::packet::TRACK_EVENT, &self.event);
        // The event is in the packet now: its buffer takes the frame header.
        let frame = &mut self.event;
        frame.clear();
        put_key(proto::TRACE_PACKET, WireType::LengthDelimited, frame);
        put_varint(packet.len() as u64, frame);
        self.out.write_all(frame)?;
        self.out.write_all(packet)?;
        Ok(())
    }
}

#[inline]
fn varint_field(buf: &mut Vec<u8>, field: u32, value: u64) {
    // Most fields (types, iids, flags, uuids) have one-byte keys and values.
    if field < 16 && value < 0x80 {
        buf.extend_from_slice(&[(field << 3) as u8, value as u8]);
    } else {
        long_varint_field(buf, field, value);
    }
}

fn long_varint_field(buf: &mut Vec<u8>, field: u32, value: u64) {
    let (key, key_len) = varint_word(u64::from(field) << 3);
    let (value, value_len) = varint_word(value);
    let word = key | value << (8 * key_len);
    append_prefix(buf, &word.to_le_bytes(), key_len + value_len);
}

/// `value` as varint bytes in the low bytes of a little-endian word, and how many there are.
/// Built in a register, not byte by byte in memory: reading those bytes back as one block
/// stalled on store forwarding and took half the export's time.
#[inline]
fn varint_word(mut value: u64) -> (u128, usize) {
    if value < 1 << 56 {
        return short_varint_word(value);
    }
    let mut word = 0u128;
    let mut len = 0;
    while value >= 0x80 {
        word |= u128::from(value as u8 | 0x80) << (8 * len);
        value >>= 7;
        len += 1;
    }
    word |= u128::from(value as u8) << (8 * len);
    (word, len + 1)
}

/// `varint_word` for values below 2^56 (at most 8 bytes, as timestamps are): shifts of a
/// 64-bit word are cheaper.
#[inline]
fn short_varint_word(mut value: u64) -> (u128, usize) {
    let mut word = 0u64;
    let mut len = 0;
    while value >= 0x80 {
        word |= u64::from(value as u8 | 0x80) << (8 * len);
        value >>= 7;
        len += 1;
    }
    word |= u64::from(value as u8) << (8 * len);
    (u128::from(word), len + 1)
}

/// Appends `bytes[..len]`. Copying the whole array and truncating is a fixed-size copy the
/// compiler inlines; a copy of `len` bytes is a call to memmove, which took half the time.
#[inline]
fn append_prefix<const N: usize>(buf: &mut Vec<u8>, bytes: &[u8; N], len: usize) {
    let old_len = buf.len();
    buf.extend_from_slice(bytes);
    buf.truncate(old_len + len);
}

fn bytes_field(buf: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_key(field, WireType::LengthDelimited, buf);
    put_varint(bytes.len() as u64, buf);
    buf.extend_from_slice(bytes);
}

// prost's `encode_key`/`encode_varint` go through the generic `BufMut` a byte at a time and
// took a third of the export's time in the profile; these write straight into the `Vec`.
#[inline]
fn put_key(field: u32, wire_type: WireType, buf: &mut Vec<u8>) {
    put_varint(u64::from(field) << 3 | wire_type as u64, buf);
}

#[inline]
fn put_varint(value: u64, buf: &mut Vec<u8>) {
    let (word, len) = varint_word(value);
    append_prefix(buf, &word.to_le_bytes(), len);
}

/// The encoded size of a value field, its key excluded (all value fields have one-byte keys).
fn value_len(value: &ArgValue<'_>) -> usize {
    match *value {
        // int64 is sent as the varint of its two's complement.
        ArgValue::Int(v) => encoded_len_varint(v as u64),
        ArgValue::Uint(v) => encoded_len_varint(v),
        ArgValue::Float(_) => 8,
        ArgValue::Str(s) => encoded_len_varint(s.len() as u64) + s.len(),
    }
}

fn encode_value(buf: &mut Vec<u8>, value: &ArgValue<'_>) {
    use proto::debug_annotation as da;
    match *value {
        ArgValue::Int(v) => varint_field(buf, da::INT_VALUE, v as u64),
        ArgValue::Uint(v) => varint_field(buf, da::UINT_VALUE, v),
        ArgValue::Float(v) => {
            put_key(da::DOUBLE_VALUE, WireType::SixtyFourBit, buf);
            buf.extend_from_slice(&v.to_le_bytes());
        }
        ArgValue::Str(s) => bytes_field(buf, da::STRING_VALUE, s.as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> TraceHeader {
        TraceHeader {
            origin_unix_ns: 1_780_000_000_000_000_000,
            title: "test".into(),
        }
    }

    fn thread(id: u64) -> Track {
        Track {
            id: TrackId(id),
            parent: None,
            name: format!("rank {id}"),
            kind: TrackKind::Thread {
                pid: 1,
                tid: id as u32,
            },
        }
    }

    fn slice(track: u64, start_ns: i64, duration_ns: u64) -> Slice<'static> {
        Slice {
            track: TrackId(track),
            name: "op",
            category: "compute",
            start_ns,
            duration_ns,
            args: &[],
            flows: &[],
            flows_ending: &[],
        }
    }

    fn drain(open: &mut OpenSlices, time_ns: i64) -> Vec<i64> {
        std::iter::from_fn(|| open.pop_due(time_ns)).collect()
    }

    #[test]
    fn ends_come_innermost_first_and_only_when_due() {
        let mut open = OpenSlices::default();
        assert!(drain(&mut open, 0).is_empty());
        assert_eq!(open.push(0, 100), 100);
        assert_eq!(open.push(10, 50), 50);
        assert_eq!(open.push(20, 30), 30);
        // A slice starting at 30 closes the one ending at 30 (an end at a start comes first).
        assert_eq!(drain(&mut open, 30), vec![30]);
        assert_eq!(drain(&mut open, 60), vec![50]);
        assert_eq!(drain(&mut open, i64::MAX), vec![100]);
    }

    #[test]
    fn a_slice_overrunning_its_parent_is_cut_at_the_parent_end() {
        let mut open = OpenSlices::default();
        open.push(0, 100);
        assert_eq!(open.push(50, 150), 100);
        assert_eq!(drain(&mut open, i64::MAX), vec![100, 100]);
    }

    #[test]
    fn zero_length_slices_close_before_the_next_start() {
        let mut open = OpenSlices::default();
        open.push(5, 5);
        assert_eq!(drain(&mut open, 5), vec![5]);
    }

    #[test]
    fn a_slice_out_of_start_order_is_an_error() {
        let mut w = PerfettoWriter::new(Vec::new(), &header()).unwrap();
        w.track(&thread(1)).unwrap();
        w.slice(&slice(1, 100, 10)).unwrap();
        let err = w.slice(&slice(1, 50, 10)).unwrap_err();
        assert!(
            matches!(
                err,
                ExportError::OutOfOrder {
                    track: 1,
                    start_ns: 50,
                    ..
                }
            ),
            "{err}"
        );
        // Another track has its own order.
        w.track(&thread(2)).unwrap();
        w.slice(&slice(2, 50, 10)).unwrap();
    }

    #[test]
    fn events_on_undeclared_or_wrong_tracks_are_errors() {
        let mut w = PerfettoWriter::new(Vec::new(), &header()).unwrap();
        let err = w.slice(&slice(7, 0, 1)).unwrap_err();
        assert!(matches!(err, ExportError::UnknownTrack(7)), "{err}");
        let err = w.counter(TrackId(7), 0, 1.0).unwrap_err();
        assert!(matches!(err, ExportError::UnknownTrack(7)), "{err}");
        let mut child = thread(3);
        child.parent = Some(TrackId(9));
        assert!(matches!(w.track(&child), Err(ExportError::UnknownTrack(9))));
        w.track(&thread(1)).unwrap();
        let err = w.counter(TrackId(1), 0, 1.0).unwrap_err();
        assert!(
            matches!(err, ExportError::WrongTrackKind { track: 1, .. }),
            "{err}"
        );
    }

    #[test]
    fn times_the_format_cannot_hold_are_errors() {
        let mut w = PerfettoWriter::new(Vec::new(), &header()).unwrap();
        w.track(&thread(1)).unwrap();
        let err = w.slice(&slice(1, i64::MIN, 1)).unwrap_err();
        assert!(matches!(err, ExportError::TimeOutOfRange { .. }), "{err}");
        let err = w.slice(&slice(1, 0, u64::MAX)).unwrap_err();
        assert!(matches!(err, ExportError::TimeOutOfRange { .. }), "{err}");
    }

    #[test]
    fn timeline_times_are_offset_by_the_base() {
        let w = PerfettoWriter::new(Vec::new(), &header()).unwrap();
        assert_eq!(w.enc.timestamp(5).unwrap(), (1 << 50) + 5);
        assert_eq!(w.enc.timestamp(-(1 << 50)).unwrap(), 0);
        assert!(w.enc.timestamp(-(1 << 50) - 1).is_err());
    }
}
