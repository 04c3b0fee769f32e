//! Kineto's Chrome-JSON trace text into a `KinetoTrace`, in one pass.
//!
//! serde visits the top-level object and hands each element of `traceEvents` to a `Builder`
//! as it is parsed, so no tree of `serde_json::Value`s is ever built: an event's fields are
//! read in place into one reused struct of borrowed strings (`fields`), every other field
//! skipped. Names are interned as they arrive.

use super::fields::{EventSeed, RawArgs, RawEvent};
use super::model::{
    CommArgs, CommArgsId, DeviceEvent, DeviceEventKind, DeviceStream, Flow, FlowKind, FlowPhase,
    GroupId, HostEvent, HostEventKind, KinetoTrace, NameId, ProcessGroup, Skipped, dtype_bytes,
};
use crate::ids::Rank;
use rustc_hash::FxHashMap;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;

/// Why text could not be read as a Kineto trace (the caller adds the file's name).
#[derive(Debug)]
pub enum ParseFailure {
    Json(serde_json::Error),
    /// Valid JSON, but not a Kineto trace; says what is missing.
    NotKineto(&'static str),
}

/// Parses a whole trace held in memory.
pub fn parse_trace(text: &[u8]) -> Result<KinetoTrace, ParseFailure> {
    let mut builder = Builder::default();
    // Text checked as UTF-8 once up front spares serde_json checking each string again.
    match std::str::from_utf8(text) {
        Ok(text) => run(&mut builder, serde_json::Deserializer::from_str(text)),
        Err(_) => run(&mut builder, serde_json::Deserializer::from_slice(text)),
    }
    .map_err(ParseFailure::Json)?;
    if !builder.saw_events {
        return Err(ParseFailure::NotKineto("it has no 'traceEvents' list"));
    }
    Ok(builder.finish())
}

fn run<'de, R: serde_json::de::Read<'de>>(
    builder: &mut Builder,
    mut de: serde_json::Deserializer<R>,
) -> Result<(), serde_json::Error> {
    TraceSeed(builder).deserialize(&mut de)?;
    de.end()
}

/// A string as it appears in the text: borrowed unless it holds escapes.
pub(super) struct Str<'a>(pub Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Not serde's `Cow` impl: that one always copies.
        d.deserialize_str(StrVisitor)
    }
}

struct StrVisitor;

impl<'de> Visitor<'de> for StrVisitor {
    type Value = Str<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'de>, E> {
        Ok(Str(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Str<'de>, E> {
        Ok(Str(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Str<'de>, E> {
        Ok(Str(Cow::Owned(v)))
    }
}

/// A time in Kineto's microseconds (integer, or with a fraction of nanoseconds), held as
/// nanoseconds. Read from the number's text: at Unix-epoch microseconds (~1.7e15) an f64 keeps
/// only quarter microseconds.
pub(super) struct Nanos(pub i64);

impl<'de> Deserialize<'de> for Nanos {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = <&'de RawValue>::deserialize(d)?;
        let text = raw.get();
        micros_text_to_ns(text.trim_matches('"'))
            .map(Nanos)
            .ok_or_else(|| {
                de::Error::custom(format!(
                    "time {text} is not a number of microseconds within ±9.2e15"
                ))
            })
    }
}

/// `"1712195495505583.123"` (us) to 1712195495505583123 (ns), exactly; digits past the
/// nanosecond round half up. Exponents go through f64. One pass over the bytes: every event
/// has two times.
pub fn micros_text_to_ns(text: &str) -> Option<i64> {
    let bytes = text.as_bytes();
    let (negative, digits) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    let mut ns: i64 = 0;
    // Digits read after the point, once there is one.
    let mut fraction: Option<u32> = None;
    let mut round_up = false;
    for (i, &b) in digits.iter().enumerate() {
        match b {
            b'0'..=b'9' => {
                let digit = i64::from(b - b'0');
                match fraction {
                    Some(3) => round_up = digit >= 5,
                    Some(n) if n > 3 => {}
                    _ => ns = ns.checked_mul(10)?.checked_add(digit)?,
                }
                if let Some(n) = fraction.as_mut() {
                    *n = n.saturating_add(1);
                }
            }
            b'.' if fraction.is_none() && i > 0 => fraction = Some(0),
            b'e' | b'E' => return exponent_micros_to_ns(text),
            _ => return None,
        }
    }
    if digits.is_empty() || fraction == Some(0) {
        return None;
    }
    let missing = 3 - fraction.unwrap_or(0).min(3);
    let ns = ns
        .checked_mul(10i64.pow(missing))?
        .checked_add(i64::from(round_up))?;
    Some(if negative { -ns } else { ns })
}

fn exponent_micros_to_ns(text: &str) -> Option<i64> {
    let ns = (text.parse::<f64>().ok()? * 1000.0).round();
    (ns.is_finite() && ns.abs() < i64::MAX as f64).then_some(ns as i64)
}

/// An integer argument that traces spell several ways (7, 7.0, "7"); anything else, such as a
/// HIP stream's pointer "0x5555...", is no integer (HTA reads those as -1, none).
pub(super) struct LenientInt(pub Option<i64>);

impl<'de> Deserialize<'de> for LenientInt {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientIntVisitor)
    }
}

struct LenientIntVisitor;

impl<'de> Visitor<'de> for LenientIntVisitor {
    type Value = LenientInt;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an integer")
    }

    fn visit_u64<E>(self, v: u64) -> Result<LenientInt, E> {
        Ok(LenientInt(i64::try_from(v).ok()))
    }

    fn visit_i64<E>(self, v: i64) -> Result<LenientInt, E> {
        Ok(LenientInt(Some(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<LenientInt, E> {
        let whole = v.fract() == 0.0 && v.abs() < i64::MAX as f64;
        Ok(LenientInt(whole.then_some(v as i64)))
    }

    fn visit_str<E>(self, v: &str) -> Result<LenientInt, E> {
        Ok(LenientInt(v.trim().parse().ok()))
    }

    fn visit_bool<E>(self, _: bool) -> Result<LenientInt, E> {
        Ok(LenientInt(None))
    }

    fn visit_unit<E>(self) -> Result<LenientInt, E> {
        Ok(LenientInt(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LenientInt, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(LenientInt(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LenientInt, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(LenientInt(None))
    }
}

/// A text argument; a number is read as its digits (a group named `0` or `"0"` is one group),
/// anything else as no text.
pub(super) struct LenientStr<'a>(pub Option<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for LenientStr<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(LenientStrVisitor)
    }
}

struct LenientStrVisitor;

impl<'de> Visitor<'de> for LenientStrVisitor {
    type Value = LenientStr<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<LenientStr<'de>, E> {
        Ok(LenientStr(Some(Cow::Borrowed(v))))
    }

    fn visit_str<E>(self, v: &str) -> Result<LenientStr<'de>, E> {
        Ok(LenientStr(Some(Cow::Owned(v.to_owned()))))
    }

    fn visit_u64<E>(self, v: u64) -> Result<LenientStr<'de>, E> {
        Ok(LenientStr(Some(Cow::Owned(v.to_string()))))
    }

    fn visit_i64<E>(self, v: i64) -> Result<LenientStr<'de>, E> {
        Ok(LenientStr(Some(Cow::Owned(v.to_string()))))
    }

    fn visit_f64<E>(self, _: f64) -> Result<LenientStr<'de>, E> {
        Ok(LenientStr(None))
    }

    fn visit_bool<E>(self, _: bool) -> Result<LenientStr<'de>, E> {
        Ok(LenientStr(None))
    }

    fn visit_unit<E>(self) -> Result<LenientStr<'de>, E> {
        Ok(LenientStr(None))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<LenientStr<'de>, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(LenientStr(None))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<LenientStr<'de>, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(LenientStr(None))
    }
}

fn text<'v>(value: &'v Option<LenientStr>) -> Option<&'v str> {
    value.as_ref().and_then(|v| v.0.as_deref())
}

/// `"[0, 1, 2]"` as ranks; `None` unless every item is a rank (PyTorch may elide long lists).
fn ranks_list(text: &str) -> Option<Vec<u32>> {
    let inner = text.trim().strip_prefix('[')?.strip_suffix(']')?.trim();
    if inner.is_empty() {
        return Some(Vec::new());
    }
    inner.split(',').map(|r| r.trim().parse().ok()).collect()
}

fn int(value: &Option<LenientInt>) -> Option<i64> {
    value.as_ref().and_then(|v| v.0)
}

fn unsigned(value: &Option<LenientInt>) -> Option<u64> {
    int(value).and_then(|v| u64::try_from(v).ok())
}

#[derive(Deserialize)]
struct RawDistributed {
    rank: Option<LenientInt>,
    world_size: Option<LenientInt>,
    backend: Option<String>,
}

/// Visits the top level: an object whose `traceEvents` go to the builder (or, as Chrome's
/// format also allows, a bare list of events).
struct TraceSeed<'b>(&'b mut Builder);

impl<'de> DeserializeSeed<'de> for TraceSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TraceSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a Kineto trace (an object with a 'traceEvents' list)")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<Str>()? {
            let key = key.0.as_ref();
            match key {
                "traceEvents" => map.next_value_seed(EventsSeed(&mut *self.0))?,
                "distributedInfo" => {
                    let info = map.next_value::<Option<RawDistributed>>()?;
                    self.0.distributed(info);
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
            self.0.last_key_was_events = key == "traceEvents";
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        EventsSeed(self.0).visit_seq(seq)
    }
}

/// Feeds each event of the `traceEvents` list to the builder as soon as it is parsed.
struct EventsSeed<'b>(&'b mut Builder);

impl<'de> DeserializeSeed<'de> for EventsSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for EventsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of trace events")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.0.saw_events = true;
        let mut event = RawEvent::default();
        while seq.next_element_seed(EventSeed(&mut event))?.is_some() {
            self.0.add(&event);
            event = RawEvent::default();
        }
        Ok(())
    }
}

/// The fields every kept complete event has.
struct Timed<'e> {
    cat: &'e str,
    name: NameId,
    start_ns: i64,
    duration_ns: u64,
}

/// Collects events into the model; `finish` sorts them.
#[derive(Default)]
struct Builder {
    trace: KinetoTrace,
    saw_events: bool,
    /// Whether a non-null `distributedInfo` was read (a later part's replaces an earlier's).
    saw_distributed: bool,
    /// Whether the last top-level key read was `traceEvents`: a head part must end in it.
    last_key_was_events: bool,
    /// Where each (device, stream) sits in `trace.streams`.
    lanes: FxHashMap<(Option<u32>, Option<u32>), usize>,
}

impl Builder {
    fn distributed(&mut self, info: Option<RawDistributed>) {
        let Some(info) = info else { return };
        self.saw_distributed = true;
        let small = |v: &Option<LenientInt>| int(v).and_then(|v| u32::try_from(v).ok());
        self.trace.rank = small(&info.rank).map(Rank);
        self.trace.world_size = small(&info.world_size);
        self.trace.backend = info.backend;
    }

    fn add(&mut self, event: &RawEvent) {
        match event.ph.as_ref().map(|p| p.0.as_ref()) {
            Some("X") => self.complete(event),
            Some(ph @ ("s" | "t" | "f")) => self.flow(ph, event),
            _ => self.trace.skipped.other_phases += 1,
        }
    }

    fn complete(&mut self, event: &RawEvent) {
        let Some(timed) = self.timed(event) else {
            return;
        };
        let args = event.args();
        let stream = args
            .and_then(|a| int(&a.stream))
            .and_then(|s| u32::try_from(s).ok());
        if stream.is_some() || timed.cat == "cuda_sync" {
            self.device(timed, stream, args);
        } else {
            self.host(timed, event, args);
        }
    }

    /// What every kept complete event has; `None` (and the reason counted) for one to skip.
    fn timed<'e>(&mut self, event: &'e RawEvent) -> Option<Timed<'e>> {
        let skipped = &mut self.trace.skipped;
        let (Some(Nanos(start_ns)), Some(Nanos(dur_ns))) = (&event.ts, &event.dur) else {
            skipped.no_time += 1;
            return None;
        };
        let Ok(duration_ns) = u64::try_from(*dur_ns) else {
            skipped.no_time += 1;
            return None;
        };
        let Some(cat) = event.cat.as_ref().map(|c| c.0.as_ref()) else {
            skipped.no_category += 1;
            return None;
        };
        if cat == "Trace" {
            skipped.profiler_spans += 1;
            return None;
        }
        let name = event.name.as_ref().map_or("", |n| n.0.as_ref());
        Some(Timed {
            cat,
            name: self.trace.names.intern(name),
            start_ns: *start_ns,
            duration_ns,
        })
    }

    fn device(&mut self, timed: Timed, stream: Option<u32>, args: Option<&RawArgs>) {
        let device = args
            .and_then(|a| int(&a.device))
            .and_then(|d| u32::try_from(d).ok());
        let collective = args
            .and_then(|a| a.collective.as_ref())
            .map(|c| self.trace.names.intern(&c.0));
        let event = DeviceEvent {
            name: timed.name,
            kind: device_kind(timed.cat),
            start_ns: timed.start_ns,
            duration_ns: timed.duration_ns,
            correlation: args.and_then(|a| unsigned(&a.correlation)),
            collective,
            comm: args.filter(|a| a.has_comm()).map(|a| self.comm(a)),
        };
        self.push_device(device, stream, event);
    }

    /// Stores a communication kernel's sizes and group.
    fn comm(&mut self, args: &RawArgs) -> CommArgsId {
        let group = text(&args.group_name).map(|name| {
            let description = text(&args.group_description).map(str::to_owned);
            let ranks = text(&args.group_ranks).and_then(ranks_list);
            self.group(ProcessGroup {
                name: name.to_owned(),
                description,
                ranks,
            })
        });
        self.push_comm(CommArgs {
            in_msg_nelems: unsigned(&args.in_msg_nelems),
            out_msg_nelems: unsigned(&args.out_msg_nelems),
            group_size: unsigned(&args.group_size).and_then(|n| u32::try_from(n).ok()),
            element_bytes: text(&args.dtype).and_then(dtype_bytes),
            group,
        })
    }

    fn push_comm(&mut self, args: CommArgs) -> CommArgsId {
        let comm_args = &mut self.trace.comm_args;
        comm_args.push(args);
        CommArgsId(u32::try_from(comm_args.len() - 1).unwrap_or(u32::MAX))
    }

    /// The id of a group by its name, adding it on first sight (the first sight's description
    /// and ranks are kept). A job has a handful of groups: a list beats hashing.
    fn group(&mut self, group: ProcessGroup) -> GroupId {
        let groups = &mut self.trace.groups;
        let at = groups
            .iter()
            .position(|g| g.name == group.name)
            .unwrap_or_else(|| {
                groups.push(group);
                groups.len() - 1
            });
        GroupId(u32::try_from(at).unwrap_or(u32::MAX))
    }

    fn host(&mut self, timed: Timed, raw: &RawEvent, args: Option<&RawArgs>) {
        let kind = host_kind(timed.cat);
        let event = HostEvent {
            name: timed.name,
            kind,
            start_ns: timed.start_ns,
            duration_ns: timed.duration_ns,
            pid: int(&raw.pid),
            tid: int(&raw.tid),
            correlation: args.and_then(|a| unsigned(&a.correlation)),
            external_id: args.and_then(|a| unsigned(&a.external_id)),
        };
        match kind {
            HostEventKind::Runtime => self.trace.runtime.push(event),
            _ => self.trace.cpu_ops.push(event),
        }
    }

    fn push_device(&mut self, device: Option<u32>, stream: Option<u32>, event: DeviceEvent) {
        let at = self.lane(device, stream);
        self.trace.streams[at].events.push(event);
    }

    /// Where (device, stream) sits in `trace.streams`, adding it on first sight.
    fn lane(&mut self, device: Option<u32>, stream: Option<u32>) -> usize {
        let streams = &mut self.trace.streams;
        *self.lanes.entry((device, stream)).or_insert_with(|| {
            streams.push(DeviceStream {
                device,
                stream,
                events: Vec::new(),
            });
            streams.len() - 1
        })
    }

    fn flow(&mut self, ph: &str, event: &RawEvent) {
        let (Some(Nanos(time_ns)), Some(id)) = (&event.ts, unsigned(&event.id)) else {
            self.trace.skipped.no_time += 1;
            return;
        };
        let kind = match event.cat.as_ref().map(|c| c.0.as_ref()) {
            Some("ac2g" | "async_gpu") => FlowKind::Launch,
            Some("fwdbwd") => FlowKind::ForwardBackward,
            _ => FlowKind::Other,
        };
        let phase = match ph {
            "s" => FlowPhase::Start,
            "t" => FlowPhase::Step,
            _ => FlowPhase::End,
        };
        self.trace.flows.push(Flow {
            id,
            kind,
            phase,
            time_ns: *time_ns,
            pid: int(&event.pid),
            tid: int(&event.tid),
        });
    }

    fn finish(mut self) -> KinetoTrace {
        // Stable sorts: events that start together keep the file's order, as in HTA.
        for stream in &mut self.trace.streams {
            stream.events.sort_by_key(|e| e.start_ns);
        }
        self.trace.cpu_ops.sort_by_key(|e| e.start_ns);
        self.trace.runtime.sort_by_key(|e| e.start_ns);
        self.trace
    }
}

impl Builder {
    /// Appends what `later` read from the text after this builder's, so that the result is
    /// what one builder reading both texts in turn would hold: names and streams keep their
    /// order of first sight, events their file order.
    fn merge(&mut self, later: Builder) {
        let ids: Vec<NameId> = later
            .trace
            .names
            .iter()
            .map(|name| self.trace.names.intern(name))
            .collect();
        let remap = |id: NameId| ids.get(id.0 as usize).copied().unwrap_or(id);
        let comm_ids = self.merge_comm(later.trace.groups, later.trace.comm_args);
        let remap_comm = |id: CommArgsId| comm_ids.get(id.0 as usize).copied().unwrap_or(id);
        for stream in later.trace.streams {
            let at = self.lane(stream.device, stream.stream);
            let events = stream.events.into_iter().map(|e| DeviceEvent {
                name: remap(e.name),
                collective: e.collective.map(remap),
                comm: e.comm.map(remap_comm),
                ..e
            });
            self.trace.streams[at].events.extend(events);
        }
        let host = |e: HostEvent| HostEvent {
            name: remap(e.name),
            ..e
        };
        let trace = &mut self.trace;
        trace
            .cpu_ops
            .extend(later.trace.cpu_ops.into_iter().map(host));
        trace
            .runtime
            .extend(later.trace.runtime.into_iter().map(host));
        trace.flows.extend(later.trace.flows);
        add_skipped(&mut trace.skipped, &later.trace.skipped);
        if later.saw_distributed {
            trace.rank = later.trace.rank;
            trace.world_size = later.trace.world_size;
            trace.backend = later.trace.backend;
            self.saw_distributed = true;
        }
        self.saw_events |= later.saw_events;
        self.last_key_was_events = later.last_key_was_events;
    }
}

impl Builder {
    /// Appends a later part's collective args, its groups matched to ours by name; returns
    /// the new id of each of its args.
    fn merge_comm(&mut self, groups: Vec<ProcessGroup>, args: Vec<CommArgs>) -> Vec<CommArgsId> {
        let group_ids: Vec<GroupId> = groups.into_iter().map(|g| self.group(g)).collect();
        args.into_iter()
            .map(|a| {
                let group = a.group.and_then(|g| group_ids.get(g.0 as usize).copied());
                self.push_comm(CommArgs { group, ..a })
            })
            .collect()
    }
}

fn add_skipped(sum: &mut Skipped, more: &Skipped) {
    sum.no_time += more.no_time;
    sum.no_category += more.no_category;
    sum.profiler_spans += more.profiler_spans;
    sum.other_phases += more.other_phases;
}

/// A piece of one trace's text parsed on its own (see `split`): the pieces of a text, joined
/// in order, make the trace that parsing the whole text makes.
pub(super) struct Part(Builder);

/// Parses the text before a cut between two events, closed with `]}` right after the first of
/// them. `None` unless that is a whole trace object whose last key is `traceEvents`: only then
/// did the cut fall between two elements of that list.
pub(super) fn parse_head(text: &[u8]) -> Option<Part> {
    let text = std::str::from_utf8(text).ok()?;
    let mut builder = Builder::default();
    run(&mut builder, serde_json::Deserializer::from_str(text)).ok()?;
    builder.last_key_was_events.then_some(Part(builder))
}

/// Parses the text after a cut, opened with `[` right before the second event: the rest of
/// `traceEvents`, then the rest of the top-level object (more keys, or just its `}`).
pub(super) fn parse_tail(text: &[u8]) -> Option<Part> {
    let text = std::str::from_utf8(text).ok()?;
    let mut list = serde_json::Deserializer::from_str(text).into_iter::<EventList>();
    let EventList(mut builder) = list.next()?.ok()?;
    let rest = text
        .get(list.byte_offset()..)?
        .trim_start_matches(is_json_space);
    if let Some(end) = rest.strip_prefix('}') {
        return end
            .trim_matches(is_json_space)
            .is_empty()
            .then_some(Part(builder));
    }
    // `, "key": ...}` becomes an object of its own; a key must follow the comma, as `, }` is
    // no JSON though `{ }` would be.
    let keys = rest.strip_prefix(',')?;
    if !keys.trim_start_matches(is_json_space).starts_with('"') {
        return None;
    }
    let object = format!("{{{keys}");
    run(&mut builder, serde_json::Deserializer::from_str(&object)).ok()?;
    Some(Part(builder))
}

/// The trace of a text parsed in two parts, the head first.
pub(super) fn join(head: Part, tail: Part) -> KinetoTrace {
    let mut builder = head.0;
    builder.merge(tail.0);
    builder.finish()
}

/// JSON's white space (narrower than Unicode's or `is_ascii_whitespace`'s).
pub(super) fn is_json_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r')
}

/// A list of events parsed into a builder of its own.
struct EventList(Builder);

impl<'de> Deserialize<'de> for EventList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut builder = Builder::default();
        EventsSeed(&mut builder).deserialize(d)?;
        Ok(EventList(builder))
    }
}

fn device_kind(cat: &str) -> DeviceEventKind {
    match cat {
        "kernel" | "Kernel" | "mtia_ccp_events" => DeviceEventKind::Kernel,
        "gpu_memcpy" | "Memcpy" => DeviceEventKind::Memcpy,
        "gpu_memset" | "Memset" => DeviceEventKind::Memset,
        "cuda_sync" => DeviceEventKind::Sync,
        _ => DeviceEventKind::Other,
    }
}

fn host_kind(cat: &str) -> HostEventKind {
    match cat {
        "cpu_op" | "Operator" => HostEventKind::CpuOp,
        "user_annotation" => HostEventKind::UserAnnotation,
        "gpu_user_annotation" => HostEventKind::DeviceAnnotation,
        "python_function" => HostEventKind::PythonFunction,
        "Runtime" | "Driver" => HostEventKind::Runtime,
        _ if cat.ends_with("_runtime") || cat.ends_with("_driver") => HostEventKind::Runtime,
        _ => HostEventKind::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kineto::model::Skipped;

    fn parse(text: &str) -> KinetoTrace {
        match parse_trace(text.as_bytes()) {
            Ok(trace) => trace,
            Err(e) => panic!("{text} does not parse: {e:?}"),
        }
    }

    const SMALL: &str = r#"{
      "schemaVersion": 1,
      "distributedInfo": {"backend": "nccl", "rank": 3, "world_size": 8, "pg_config": [{"ranks": [0, 1]}]},
      "traceEvents": [
        {"ph": "X", "cat": "cpu_op", "name": "aten::mm", "pid": 10, "tid": 11, "ts": 100, "dur": 50, "args": {"External id": 4}},
        {"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 10, "tid": 11, "ts": 110.5, "dur": 5.25, "args": {"correlation": 77, "External id": 4}},
        {"ph": "X", "cat": "kernel", "name": "ncclDevKernel_AllReduce", "pid": 0, "tid": 7, "ts": 300.001, "dur": 20, "args": {"stream": 7, "device": 0, "correlation": 77, "Collective name": "allreduce", "In msg nelems": 6637568, "Out msg nelems": 6637568, "Group size": 2, "dtype": "BFloat16", "Process Group Name": "0", "Process Group Description": "default_pg", "Process Group Ranks": "[0, 1]"}},
        {"ph": "X", "cat": "kernel", "name": "gemm \"tn\"", "pid": 0, "tid": 7, "ts": 200, "dur": 20, "args": {"stream": 7, "device": 0, "correlation": 78}},
        {"ph": "X", "cat": "gpu_memcpy", "name": "Memcpy HtoD", "pid": 0, "tid": 9, "ts": 250, "dur": 3, "args": {"stream": "9", "device": 0}},
        {"ph": "X", "cat": "cuda_sync", "name": "Context Sync", "pid": 0, "tid": 1, "ts": 330, "dur": 1, "args": {"stream": -1, "device": 0}},
        {"ph": "X", "cat": "cuda_runtime", "name": "hipLaunchKernel", "ts": 120, "dur": 1, "args": {"stream": "0x5555", "correlation": 80}},
        {"ph": "s", "cat": "ac2g", "id": 77, "pid": 10, "tid": 11, "ts": 110.5},
        {"ph": "f", "cat": "ac2g", "id": 77, "pid": 0, "tid": 7, "ts": 300.001, "bp": "e"},
        {"ph": "X", "cat": "Trace", "name": "PyTorch Profiler (0)", "pid": "Spans", "tid": "PyTorch Profiler", "ts": 90, "dur": 500},
        {"ph": "M", "name": "process_name", "pid": 10, "tid": 0, "ts": 90, "args": {"name": "python"}},
        {"ph": "X", "cat": "cpu_op", "name": "no duration", "ts": 1},
        {"ph": "X", "name": "no category", "ts": 1, "dur": 2},
        {"name": "Record Window End", "ph": "i", "s": "g", "pid": "", "tid": "", "ts": 900}
      ]
    }"#;

    #[test]
    fn reads_distributed_info_and_every_kind_of_event() {
        let t = parse(SMALL);
        assert_eq!((t.rank, t.world_size), (Some(Rank(3)), Some(8)));
        assert_eq!(t.backend.as_deref(), Some("nccl"));
        assert_eq!(t.cpu_ops.len(), 1);
        assert_eq!(t.cpu_ops[0].external_id, Some(4));
        assert_eq!(t.runtime.len(), 2);
        assert_eq!(t.runtime[0].start_ns, 110_500);
        assert_eq!(t.runtime[0].duration_ns, 5_250);
        assert_eq!(
            t.runtime[1].correlation,
            Some(80),
            "a HIP stream pointer is no stream"
        );
        let lanes: Vec<_> = t.streams.iter().map(|s| (s.device, s.stream)).collect();
        assert_eq!(
            lanes,
            [(Some(0), Some(7)), (Some(0), Some(9)), (Some(0), None)]
        );
        assert_eq!(t.flows.len(), 2);
        assert_eq!(t.flows[1].phase, FlowPhase::End);
        assert_eq!(
            t.skipped,
            Skipped {
                no_time: 1,
                no_category: 1,
                profiler_spans: 1,
                other_phases: 2
            }
        );
    }

    #[test]
    fn device_events_are_sorted_and_keep_their_links() {
        let t = parse(SMALL);
        let s7 = &t.streams[0].events;
        assert_eq!(
            t.names.get(s7[0].name),
            "gemm \"tn\"",
            "escapes are decoded"
        );
        assert_eq!(s7[1].start_ns, 300_001);
        assert_eq!(s7[1].correlation, Some(77));
        assert_eq!(s7[1].collective.map(|c| t.names.get(c)), Some("allreduce"));
        assert_eq!(t.streams[1].events[0].kind, DeviceEventKind::Memcpy);
        assert_eq!(t.streams[2].events[0].kind, DeviceEventKind::Sync);
        assert_eq!(t.device_event_count(), 4);
    }

    #[test]
    fn collective_args_give_sizes_and_an_interned_group() {
        let t = parse(SMALL);
        let all_reduce = &t.streams[0].events[1];
        let args = t.comm_args(all_reduce).copied();
        assert_eq!(
            args,
            Some(CommArgs {
                in_msg_nelems: Some(6_637_568),
                out_msg_nelems: Some(6_637_568),
                group_size: Some(2),
                element_bytes: Some(2),
                group: Some(GroupId(0)),
            })
        );
        assert_eq!(
            t.groups,
            [ProcessGroup {
                name: "0".into(),
                description: Some("default_pg".into()),
                ranks: Some(vec![0, 1]),
            }]
        );
        assert_eq!(t.streams[0].events[0].comm, None, "a gemm has no args");
    }

    #[test]
    fn odd_collective_args_are_absent_not_errors() {
        let t = parse(
            r#"{"traceEvents": [{"ph": "X", "cat": "kernel", "name": "k", "ts": 1, "dur": 1,
              "args": {"stream": 1, "Group size": "x", "dtype": "Quux", "Process Group Name": 3,
                       "Process Group Ranks": "[0, 1, ...]", "In msg nelems": -4}}]}"#,
        );
        let e = &t.streams[0].events[0];
        let args = t.comm_args(e).copied().unwrap_or_default();
        assert_eq!((args.group_size, args.element_bytes), (None, None));
        assert_eq!(args.in_msg_nelems, None);
        assert_eq!(t.groups[0].name, "3");
        assert_eq!(t.groups[0].ranks, None);
    }

    #[test]
    fn microsecond_text_becomes_exact_nanoseconds() {
        let cases = [
            ("1712195495505583.123", Some(1_712_195_495_505_583_123)),
            ("1712195495505583", Some(1_712_195_495_505_583_000)),
            ("2.5", Some(2_500)),
            ("0.0004", Some(0)),
            ("0.0005", Some(1)),
            ("0.00049", Some(0)),
            ("0.12345", Some(123)),
            ("7.", None),
            (".5", None),
            ("-3.25", Some(-3_250)),
            ("1e3", Some(1_000_000)),
            ("abc", None),
            ("1.2.3", None),
            ("", None),
        ];
        for (text, want) in cases {
            assert_eq!(micros_text_to_ns(text), want, "{text}");
        }
        let t = parse(r#"{"traceEvents": [{"ph": "X", "cat": "c", "ts": "7", "dur": 1.5}]}"#);
        assert_eq!(
            (t.cpu_ops[0].start_ns, t.cpu_ops[0].duration_ns),
            (7_000, 1_500)
        );
    }

    #[test]
    fn fields_read_in_place_keep_serde_derive_rules() {
        let t = parse(
            r#"{"traceEvents": [
              {"ph": "X", "cat": "cpu_op", "name": "a", "ts": 1, "dur": 2, "args": null, "x": [1]},
              {"ph": "X", "cat": "cpu_op", "name": "b", "ts": 3, "dur": 2, "args": {"external id": 9}}]}"#,
        );
        assert_eq!(t.cpu_ops[0].external_id, None, "args: null is no args");
        assert_eq!(t.cpu_ops[1].external_id, Some(9), "the old spelling");
        assert_eq!(
            t.names.get(t.cpu_ops[1].name),
            "b",
            "nothing left of the first event"
        );
        for dup in [
            r#"{"traceEvents": [{"ph": "X", "ph": null}]}"#,
            r#"{"traceEvents": [{"args": {"External id": 1, "external id": 2}}]}"#,
        ] {
            match parse_trace(dup.as_bytes()) {
                Err(ParseFailure::Json(e)) => assert!(e.to_string().contains("duplicate"), "{e}"),
                other => panic!("{dup}: {other:?}"),
            }
        }
    }

    #[test]
    fn a_bare_list_of_events_is_a_trace_without_metadata() {
        let t = parse(r#"[{"ph": "X", "cat": "cpu_op", "name": "a", "ts": 1, "dur": 2}]"#);
        assert_eq!((t.rank, t.cpu_ops.len()), (None, 1));
    }

    #[test]
    fn json_that_is_no_trace_is_refused() {
        for text in [r#"{"foo": 1}"#, "{}"] {
            assert!(matches!(
                parse_trace(text.as_bytes()),
                Err(ParseFailure::NotKineto(_))
            ));
        }
        for text in [
            "5",
            r#"{"traceEvents": 3}"#,
            r#"{"traceEvents": [{"ts": [1]}]}"#,
        ] {
            assert!(
                matches!(parse_trace(text.as_bytes()), Err(ParseFailure::Json(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn cut_text_is_an_eof_error() {
        let cut = &SMALL[..SMALL.len() / 2];
        match parse_trace(cut.as_bytes()) {
            Err(ParseFailure::Json(e)) => assert!(e.is_eof(), "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
