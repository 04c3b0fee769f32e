//! Writes a trace in Perfetto's native protobuf format (a `.pftrace` that ui.perfetto.dev and
//! trace_processor open), one packet at a time as events come, so memory stays flat.
//!
//! Layout: every `Track` becomes a `TrackDescriptor` (with a process, thread or counter
//! descriptor by kind); a slice becomes a `TYPE_SLICE_BEGIN` at its start and a
//! `TYPE_SLICE_END` at its end; counter values are `TYPE_COUNTER` events with a double value;
//! instants are `TYPE_INSTANT` events.
//!
//! Packet sequences: the first sequence holds the wall-clock snapshot and the track
//! descriptors. Each track with events has a sequence of its own, opened by a packet that
//! clears its state, sets its defaults (the track's uuid, so events name no track) and
//! snapshots a sequence-scoped incremental clock: an event's timestamp is then the delta from
//! the previous one on its track, a byte or three instead of eight. Instants, which a producer
//! may send out of time order, carry an absolute BOOTTIME timestamp instead. Strings
//! (categories, event names, argument names and string values) are interned: each goes once
//! per sequence, in the packet that first uses it.
//!
//! Ends are written lazily: a track keeps a stack of its open slices' end times and writes the
//! ends that fall before (or at) the next slice's start, and all of them at `finish`, so that
//! begin/end pairs nest. A slice that overruns the slice it started in is cut at that slice's
//! end, as a viewer nests by stack.
//!
//! Clock: BOOTTIME `timeline_ns + BASE_NS`, with `BASE_NS` = 2^50 ns (about 13 days): times up
//! to 13 days before the origin stay non-negative. The first packet pairs BOOTTIME `BASE_NS`
//! with REALTIME `origin_unix_ns`, so a viewer shows wall-clock time: a packet's Unix time is
//! `timestamp - BASE_NS + origin_unix_ns`.
//!
//! Packets are batched and, by default, each batch deflated into one `compressed_packets`
//! packet on a second thread (`output`).

mod output;
mod proto;
mod strings;
mod wire;

pub use output::Compression;

use super::{Arg, ArgName, ArgValue, ExportError, Instant, Slice, TraceHeader, Track, TrackId};
use super::{TraceSink, TrackKind};
use crate::counter::Unit;
use output::ChunkOutput;
use rustc_hash::FxHashMap;
use std::io::Write;
use strings::{Kind, Sent, Strings};
use wire::{
    append_word, bytes_field, fixed64_field, fixed64_field_word, key_len, put_key, put_varint,
    varint_field, varint_field_word, varint_len,
};

/// The sequence of the clock snapshot and the track descriptors.
const GLOBAL_SEQUENCE: u32 = 1;
/// The BOOTTIME timestamp of the timeline's zero (see the module comment).
const BASE_NS: i64 = 1 << 50;

/// Streams tracks and events to `out` as a Perfetto trace. Writing happens on a thread of its
/// own, which owns `out` until `into_inner`.
#[derive(Debug)]
pub struct PerfettoWriter<W: Write + Send + 'static> {
    enc: Encoder<W>,
    tracks: FxHashMap<TrackId, TrackState>,
    /// Track descriptors written so far.
    declared: u64,
}

/// What a declared track accepts, what is still open on it and its packet sequence.
#[derive(Debug)]
struct TrackState {
    uuid: u64,
    holds_counters: bool,
    open: OpenSlices,
    seq: Sequence,
}

/// One track's packet sequence.
#[derive(Debug)]
struct Sequence {
    id: u32,
    uuid: u64,
    /// The packet timestamp the incremental clock stands at; `None` until the sequence's first
    /// packet has set its defaults and clock.
    clock: Option<u64>,
    sent: Sent,
}

/// How an event packet is stamped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stamp {
    /// On the sequence's incremental clock: the delta from its previous packet.
    Delta(u64),
    /// An absolute BOOTTIME timestamp, leaving the incremental clock where it is.
    Absolute(u64),
}

impl<W: Write + Send + 'static> PerfettoWriter<W> {
    /// Starts the trace, deflating batches of packets (`Compression::Deflate`).
    pub fn new(out: W, header: &TraceHeader) -> Result<Self, ExportError> {
        Self::with_compression(out, header, Compression::default())
    }

    /// Starts the trace: writes the clock snapshot that opens the first sequence.
    pub fn with_compression(
        out: W,
        header: &TraceHeader,
        compression: Compression,
    ) -> Result<Self, ExportError> {
        let mut enc = Encoder::new(ChunkOutput::new(out, compression)?, BASE_NS);
        enc.whole_packet(proto::TracePacket {
            trusted_packet_sequence_id: Some(GLOBAL_SEQUENCE),
            sequence_flags: Some(proto::packet::SEQ_INCREMENTAL_STATE_CLEARED),
            clock_snapshot: wall_clock_snapshot(BASE_NS, header.origin_unix_ns),
            ..Default::default()
        })?;
        Ok(PerfettoWriter {
            enc,
            tracks: FxHashMap::default(),
            declared: 0,
        })
    }

    /// The output, once `finish` has written everything to it.
    pub fn into_inner(self) -> Result<W, ExportError> {
        Ok(self.enc.out.into_inner()?)
    }

    fn state(&mut self, track: TrackId) -> Result<&mut TrackState, ExportError> {
        self.tracks
            .get_mut(&track)
            .ok_or(ExportError::UnknownTrack(track.0))
    }
}

impl<W: Write + Send + 'static> TraceSink for PerfettoWriter<W> {
    fn track(&mut self, track: &Track) -> Result<(), ExportError> {
        // A second descriptor would orphan what is open on the first.
        if self.tracks.contains_key(&track.id) {
            return Err(ExportError::DuplicateTrack(track.id.0));
        }
        let parent_uuid = match track.parent {
            Some(parent) => Some(self.state(parent)?.uuid),
            None => None,
        };
        // Uuids count from 1 in declaration order: 0 means "no track" to Perfetto. A track's
        // sequence is the next id after it (the first is the global one).
        self.declared += 1;
        let uuid = self.declared;
        let seq_id = u32::try_from(uuid + 1).map_err(|_| ExportError::TooManyTracks)?;
        self.enc
            .whole_packet(descriptor(track, uuid, parent_uuid))?;
        let state = TrackState {
            uuid,
            holds_counters: matches!(track.kind, TrackKind::Counter { .. }),
            open: OpenSlices::default(),
            seq: Sequence {
                id: seq_id,
                uuid,
                clock: None,
                sent: Sent::default(),
            },
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
            let due = self.enc.timestamp(due_ns)?;
            self.enc.slice_end(&mut state.seq, due)?;
        }
        state.open.push(slice.start_ns, end_ns);
        self.enc.slice_begin(&mut state.seq, start, slice)
    }

    fn counter(&mut self, track: TrackId, time_ns: i64, value: f64) -> Result<(), ExportError> {
        let timestamp = self.enc.timestamp(time_ns)?;
        let state = self
            .tracks
            .get_mut(&track)
            .ok_or(ExportError::UnknownTrack(track.0))?;
        if !state.holds_counters {
            return Err(ExportError::WrongTrackKind {
                event: "counter value",
                track: track.0,
            });
        }
        self.enc.counter(&mut state.seq, timestamp, value)
    }

    fn instant(&mut self, instant: &Instant<'_>) -> Result<(), ExportError> {
        let timestamp = self.enc.timestamp(instant.time_ns)?;
        let state = event_track(&mut self.tracks, instant.track, "instant")?;
        self.enc.instant(&mut state.seq, timestamp, instant)
    }

    fn finish(&mut self) -> Result<(), ExportError> {
        // In declaration order, so that the file is the same from run to run.
        let mut states: Vec<&mut TrackState> = self.tracks.values_mut().collect();
        states.sort_by_key(|s| s.uuid);
        for state in states {
            while let Some(due_ns) = state.open.pop_due(i64::MAX) {
                let due = self.enc.timestamp(due_ns)?;
                self.enc.slice_end(&mut state.seq, due)?;
            }
        }
        self.enc.out.finish()?;
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

/// BOOTTIME at the timeline's zero paired with the wall clock there; none when the origin is not
/// a time after the Unix epoch.
fn wall_clock_snapshot(base_ns: i64, origin_unix_ns: i128) -> Option<proto::ClockSnapshot> {
    let realtime_ns = u64::try_from(origin_unix_ns).ok()?;
    let clock = |clock_id, timestamp| proto::Clock {
        clock_id: Some(clock_id),
        timestamp: Some(timestamp),
        is_incremental: None,
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
        trusted_packet_sequence_id: Some(GLOBAL_SEQUENCE),
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

/// Encodes packets and appends them, framed as `Trace.packet`, to the output's chunk.
#[derive(Debug)]
struct Encoder<W: Write + Send + 'static> {
    out: ChunkOutput<W>,
    base_ns: i64,
    /// The `TrackEvent` being built.
    event: Vec<u8>,
    /// The `InternedData` of the strings the event uses first on its sequence.
    interned: Vec<u8>,
    /// A whole (prost-encoded) packet.
    packet: Vec<u8>,
    strings: Strings,
}

impl<W: Write + Send + 'static> Encoder<W> {
    fn new(out: ChunkOutput<W>, base_ns: i64) -> Self {
        Encoder {
            out,
            base_ns,
            event: Vec::with_capacity(256),
            interned: Vec::with_capacity(256),
            packet: Vec::with_capacity(512),
            strings: Strings::default(),
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

    fn whole_packet(&mut self, packet: proto::TracePacket) -> Result<(), ExportError> {
        self.packet.clear();
        prost::encoding::message::encode(proto::TRACE_PACKET, &packet, &mut self.packet);
        self.out.reserve(self.packet.len())?;
        self.out.chunk.extend_from_slice(&self.packet);
        Ok(())
    }

    /// How a packet at `timestamp` on `seq` is stamped; opens the sequence first if needed.
    fn stamp(&mut self, seq: &mut Sequence, timestamp: u64) -> Result<Stamp, ExportError> {
        let clock = match seq.clock {
            Some(clock) => clock,
            None => self.open_sequence(seq, timestamp)?,
        };
        // A track's slices and counter values come in time order; anything else (a producer's
        // late counter value) stays correct with an absolute stamp.
        Ok(match timestamp.checked_sub(clock) {
            Some(delta) => {
                seq.clock = Some(timestamp);
                Stamp::Delta(delta)
            }
            None => Stamp::Absolute(timestamp),
        })
    }

    /// The packet that starts a track's sequence: clears its state, makes the track and the
    /// incremental clock its defaults and sets that clock to `timestamp`.
    fn open_sequence(&mut self, seq: &mut Sequence, timestamp: u64) -> Result<u64, ExportError> {
        let clock = |clock_id, is_incremental| proto::Clock {
            clock_id: Some(clock_id),
            timestamp: Some(timestamp),
            is_incremental,
        };
        self.whole_packet(proto::TracePacket {
            trusted_packet_sequence_id: Some(seq.id),
            sequence_flags: Some(proto::packet::SEQ_INCREMENTAL_STATE_CLEARED),
            trace_packet_defaults: Some(proto::TracePacketDefaults {
                timestamp_clock_id: Some(proto::CLOCK_INCREMENTAL),
                track_event_defaults: Some(proto::TrackEventDefaults {
                    track_uuid: Some(seq.uuid),
                }),
            }),
            clock_snapshot: Some(proto::ClockSnapshot {
                clocks: vec![
                    clock(proto::CLOCK_BOOTTIME, None),
                    clock(proto::CLOCK_INCREMENTAL, Some(true)),
                ],
            }),
            ..Default::default()
        })?;
        seq.clock = Some(timestamp);
        Ok(timestamp)
    }

    fn slice_begin(
        &mut self,
        seq: &mut Sequence,
        timestamp: u64,
        slice: &Slice<'_>,
    ) -> Result<(), ExportError> {
        let stamp = self.stamp(seq, timestamp)?;
        let name_id = self.named_event(
            seq,
            proto::track_event::TYPE_SLICE_BEGIN,
            slice.category,
            slice.name,
        );
        self.args(seq, slice.args, (slice.name, name_id));
        for flow in slice.flows {
            fixed64_field(&mut self.event, proto::track_event::FLOW_IDS, flow.0);
        }
        for flow in slice.flows_ending {
            fixed64_field(
                &mut self.event,
                proto::track_event::TERMINATING_FLOW_IDS,
                flow.0,
            );
        }
        self.write_event(seq, stamp)
    }

    fn slice_end(&mut self, seq: &mut Sequence, timestamp: u64) -> Result<(), ExportError> {
        let stamp = self.stamp(seq, timestamp)?;
        self.event.clear();
        varint_field(
            &mut self.event,
            proto::track_event::TYPE,
            proto::track_event::TYPE_SLICE_END,
        );
        self.write_event(seq, stamp)
    }

    fn counter(
        &mut self,
        seq: &mut Sequence,
        timestamp: u64,
        value: f64,
    ) -> Result<(), ExportError> {
        let stamp = self.stamp(seq, timestamp)?;
        self.event.clear();
        varint_field(
            &mut self.event,
            proto::track_event::TYPE,
            proto::track_event::TYPE_COUNTER,
        );
        fixed64_field(
            &mut self.event,
            proto::track_event::DOUBLE_COUNTER_VALUE,
            value.to_bits(),
        );
        self.write_event(seq, stamp)
    }

    fn instant(
        &mut self,
        seq: &mut Sequence,
        timestamp: u64,
        instant: &Instant<'_>,
    ) -> Result<(), ExportError> {
        if seq.clock.is_none() {
            self.open_sequence(seq, timestamp)?;
        }
        let name_id = self.named_event(
            seq,
            proto::track_event::TYPE_INSTANT,
            instant.category,
            instant.name,
        );
        self.args(seq, instant.args, (instant.name, name_id));
        // Findings come after the slices of the tracks they mark, earlier in time.
        self.write_event(seq, Stamp::Absolute(timestamp))
    }

    /// The iid of the string `id` as a `kind` string on `seq`, queuing its text if needed.
    #[inline]
    fn iid_of(&mut self, seq: &mut Sequence, kind: Kind, id: u32) -> u64 {
        if seq.sent.first_use(kind, id) {
            self.queue_interned(kind, id);
        }
        u64::from(id)
    }

    /// Adds the string `id` to the `InternedData` of the packet being built.
    #[cold]
    fn queue_interned(&mut self, kind: Kind, id: u32) {
        let field = match kind {
            Kind::Category => proto::interned::EVENT_CATEGORIES,
            Kind::EventName => proto::interned::EVENT_NAMES,
            Kind::ArgName => proto::interned::DEBUG_ANNOTATION_NAMES,
            Kind::ArgValue => proto::interned::DEBUG_ANNOTATION_STRING_VALUES,
        };
        let text = self.strings.text(id).as_bytes();
        let entry_len = 1 + varint_len(u64::from(id)) + 1 + varint_len(text.len() as u64);
        put_key(
            &mut self.interned,
            field,
            prost::encoding::WireType::LengthDelimited,
        );
        put_varint(&mut self.interned, (entry_len + text.len()) as u64);
        varint_field(
            &mut self.interned,
            proto::interned::ENTRY_IID,
            u64::from(id),
        );
        bytes_field(&mut self.interned, proto::interned::ENTRY_TEXT, text);
    }

    /// Starts `event` with its type, interned category and interned name; the name's id.
    fn named_event(
        &mut self,
        seq: &mut Sequence,
        kind: u64,
        category: &'static str,
        name: &str,
    ) -> u32 {
        let category_id = self.strings.static_id(category);
        let category_iid = self.iid_of(seq, Kind::Category, category_id);
        let name_id = self.strings.id(name);
        let name_iid = self.iid_of(seq, Kind::EventName, name_id);
        self.event.clear();
        varint_field(&mut self.event, proto::track_event::TYPE, kind);
        varint_field(
            &mut self.event,
            proto::track_event::CATEGORY_IIDS,
            category_iid,
        );
        varint_field(&mut self.event, proto::track_event::NAME_IID, name_iid);
        name_id
    }

    /// Each argument as a `DebugAnnotation` with an interned name (and string value). `name`
    /// is the event's name and its string id: a value that is the very same string (an op's
    /// name) takes its id without a lookup.
    fn args(&mut self, seq: &mut Sequence, args: &[Arg<'_>], name: (&str, u32)) {
        use proto::debug_annotation as da;
        for arg in args {
            let name_id = match arg.name {
                ArgName::Static(name) => self.strings.static_id(name),
                ArgName::Text(name) => self.strings.id(name),
            };
            let name_iid = self.iid_of(seq, Kind::ArgName, name_id);
            let (value, value_len) = match arg.value {
                ArgValue::Str(text) => {
                    // The very same string as the event's name (an op's) needs no lookup.
                    let id = if std::ptr::eq(text, name.0) {
                        name.1
                    } else {
                        self.strings.id(text)
                    };
                    let iid = self.iid_of(seq, Kind::ArgValue, id);
                    varint_field_word(da::STRING_VALUE_IID, iid)
                }
                ArgValue::Int(v) => varint_field_word(da::INT_VALUE, v as u64),
                ArgValue::Uint(v) => varint_field_word(da::UINT_VALUE, v),
                ArgValue::Float(v) => fixed64_field_word(da::DOUBLE_VALUE, v.to_bits()),
            };
            let body_len = 1 + varint_len(name_iid) + value_len;
            if body_len < 0x80 && name_iid < 0x80 {
                // The usual annotation: its key, length and name take a byte each, so the
                // whole of it is one word of at most 4 + 12 bytes.
                let key = (proto::track_event::DEBUG_ANNOTATIONS << 3) as u8 | 2;
                let name_key = (da::NAME_IID << 3) as u8;
                let head = u32::from_le_bytes([key, body_len as u8, name_key, name_iid as u8]);
                append_word(
                    &mut self.event,
                    u128::from(head) | value << 32,
                    4 + value_len,
                );
            } else {
                put_key(
                    &mut self.event,
                    proto::track_event::DEBUG_ANNOTATIONS,
                    prost::encoding::WireType::LengthDelimited,
                );
                put_varint(&mut self.event, body_len as u64);
                varint_field(&mut self.event, da::NAME_IID, name_iid);
                append_word(&mut self.event, value, value_len);
            }
        }
    }

    /// Frames `event` as a packet on `seq`, with the strings it introduced.
    fn write_event(&mut self, seq: &Sequence, stamp: Stamp) -> Result<(), ExportError> {
        use proto::packet;
        let (timestamp, clock_len) = match stamp {
            Stamp::Delta(delta) => (delta, 0),
            Stamp::Absolute(timestamp) => (timestamp, key_len(packet::TIMESTAMP_CLOCK_ID) + 1),
        };
        let mut len = 1 + varint_len(timestamp) + clock_len + 1 + varint_len(u64::from(seq.id));
        if !self.interned.is_empty() {
            len += 1 + varint_len(self.interned.len() as u64) + self.interned.len();
        }
        len += 1 + varint_len(self.event.len() as u64) + self.event.len();
        self.out.reserve(1 + varint_len(len as u64) + len)?;
        if clock_len == 0 && self.interned.is_empty() && timestamp < 1 << 56 {
            self.write_usual_event(len, timestamp, seq.id);
            return Ok(());
        }
        let buf = &mut self.out.chunk;
        put_key(
            buf,
            proto::TRACE_PACKET,
            prost::encoding::WireType::LengthDelimited,
        );
        put_varint(buf, len as u64);
        varint_field(buf, packet::TIMESTAMP, timestamp);
        if clock_len > 0 {
            varint_field(
                buf,
                packet::TIMESTAMP_CLOCK_ID,
                u64::from(proto::CLOCK_BOOTTIME),
            );
        }
        varint_field(buf, packet::TRUSTED_PACKET_SEQUENCE_ID, u64::from(seq.id));
        if !self.interned.is_empty() {
            bytes_field(buf, packet::INTERNED_DATA, &self.interned);
            self.interned.clear();
        }
        bytes_field(buf, packet::TRACK_EVENT, &self.event);
        Ok(())
    }

    /// `write_event` for the usual packet: a delta stamp and no new strings. Its fields before
    /// the event's bytes (frame, timestamp, sequence, event key and length) are appended as
    /// one or two words rather than field by field. `delta` is below 2^56.
    #[inline]
    fn write_usual_event(&mut self, len: usize, delta: u64, seq_id: u32) {
        use proto::packet;
        let event_len = self.event.len() as u64;
        let parts = [
            (u64::from(proto::TRACE_PACKET << 3 | 2), len as u64),
            (u64::from(packet::TIMESTAMP << 3), delta),
            (
                u64::from(packet::TRUSTED_PACKET_SEQUENCE_ID << 3),
                u64::from(seq_id),
            ),
            (u64::from(packet::TRACK_EVENT << 3 | 2), event_len),
        ];
        let buf = &mut self.out.chunk;
        let (mut word, mut word_len) = (0u128, 0usize);
        for (key, value) in parts {
            // Keys are one byte and values below 2^56 (the caller checks the delta; the rest
            // are lengths and an id): each field joins the word while it fits.
            let (value, value_len) = wire::short_varint(value);
            if word_len + 1 + value_len > 16 {
                append_word(buf, word, word_len);
                (word, word_len) = (0, 0);
            }
            word |= (u128::from(key) | u128::from(value) << 8) << (8 * word_len);
            word_len += 1 + value_len;
        }
        append_word(buf, word, word_len);
        buf.extend_from_slice(&self.event);
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
