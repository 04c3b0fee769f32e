//! Writing a run as a trace for timeline viewers: the tracks and events a producer walks
//! through once, and the sinks that write them as they come (Perfetto's protobuf, Chrome's
//! Trace Event Format JSON), so that memory stays flat however large the run.
//!
//! A producer (the analyzer, which knows the merged timeline, the counters and the findings)
//! first declares every track, then sends events: each track's slices in start order, with a
//! slice that starts inside another one's time nested under it. Times are nanoseconds on the
//! run's timeline (since its origin); `TraceHeader::origin_unix_ns` maps them to wall-clock time.

pub mod perfetto;

use crate::counter::Unit;
use thiserror::Error;

pub mod chrome;

/// Names a track within one export; unique, chosen by the producer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TrackId(pub u64);

/// What the whole trace shares.
#[derive(Clone, Debug, PartialEq)]
pub struct TraceHeader {
    /// Wall-clock time of the timeline's zero, nanoseconds since the Unix epoch: written as a
    /// clock snapshot so viewers can show wall-clock time.
    pub origin_unix_ns: i128,
    /// What the trace is of (the run id, or the traces it was imported from). The JSON keeps it
    /// in its metadata; a .pftrace has no place for it (Perfetto's UI titles a trace by its file
    /// name), so name the file after it.
    pub title: String,
}

/// A track of the trace: a node is a process, a rank (or a GPU stream of it) a thread under it,
/// a counter a counter track under its node or device.
#[derive(Clone, Debug, PartialEq)]
pub struct Track {
    pub id: TrackId,
    /// The track it is grouped under; `None` for a top-level track.
    pub parent: Option<TrackId>,
    pub name: String,
    pub kind: TrackKind,
}

#[derive(Clone, Debug, PartialEq)]
pub enum TrackKind {
    /// One node: a process, named by its host.
    Process { pid: u32 },
    /// One rank, or one lane (CUDA stream, host thread) of it: a thread of its node's process.
    Thread { pid: u32, tid: u32 },
    /// A sampled counter; values come with `TraceSink::counter`.
    Counter { unit: Option<Unit> },
    /// A track of instant events only (the findings).
    Instants,
}

/// A value of an event argument.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ArgValue<'a> {
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(&'a str),
}

/// A named argument of a slice or instant (op, layer, step, flops, bytes, GB/s, collective kind
/// and sequence number, request id, a finding's evidence).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Arg<'a> {
    pub name: ArgName<'a>,
    pub value: ArgValue<'a>,
}

/// An argument's name. A producer's fixed names are `Static` (`"op".into()`): a sink may know
/// them by address, as such a string never changes; any other name is `Text`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgName<'a> {
    Static(&'static str),
    Text(&'a str),
}

impl<'a> ArgName<'a> {
    pub fn as_str(self) -> &'a str {
        match self {
            ArgName::Static(name) => name,
            ArgName::Text(name) => name,
        }
    }
}

impl From<&'static str> for ArgName<'_> {
    fn from(name: &'static str) -> Self {
        ArgName::Static(name)
    }
}

/// One piece of work on a thread track.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Slice<'a> {
    pub track: TrackId,
    pub name: &'a str,
    /// The span's category ("compute", "communication", ...): one of a producer's few fixed
    /// names, which a sink may know by address.
    pub category: &'static str,
    pub start_ns: i64,
    pub duration_ns: u64,
    pub args: &'a [Arg<'a>],
    /// Flows this slice starts or continues (a collective's participants, a send to its
    /// receive): each id appears on every slice it links, in time order.
    pub flows: &'a [FlowId],
    /// Flows that end at this slice.
    pub flows_ending: &'a [FlowId],
}

/// Links slices across tracks: a collective's participants, a send and its receive.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowId(pub u64);

/// A moment on a track: a finding on the ranks it names and on the findings track.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Instant<'a> {
    pub track: TrackId,
    pub name: &'a str,
    pub category: &'static str,
    pub time_ns: i64,
    pub args: &'a [Arg<'a>],
}

/// Where tracks and events go as a producer walks the run. Tracks come first; then slices
/// (per track in start order), counter values (per track in time order) and instants, in any
/// interleaving across tracks.
pub trait TraceSink {
    fn track(&mut self, track: &Track) -> Result<(), ExportError>;
    fn slice(&mut self, slice: &Slice<'_>) -> Result<(), ExportError>;
    fn counter(&mut self, track: TrackId, time_ns: i64, value: f64) -> Result<(), ExportError>;
    fn instant(&mut self, instant: &Instant<'_>) -> Result<(), ExportError>;
    /// Closes what is open and flushes; nothing may be sent after.
    fn finish(&mut self) -> Result<(), ExportError>;
}

#[derive(Debug, Error)]
pub enum ExportError {
    #[error("cannot write the trace: {0}")]
    Write(#[from] std::io::Error),
    #[error("event on track '{0}', which was not declared")]
    UnknownTrack(u64),
    #[error(
        "slice '{name}' on track '{track}' starts at {start_ns} ns, before the slice before it"
    )]
    OutOfOrder {
        name: String,
        track: u64,
        start_ns: i64,
    },
    #[error("time {time_ns} ns is out of the range the trace format can hold")]
    TimeOutOfRange { time_ns: i64 },
    #[error("track '{0}' is declared twice")]
    DuplicateTrack(u64),
    #[error("more tracks than a trace can hold")]
    TooManyTracks,
    #[error("'{0}' spans are more than an export can hold ({max})", max = u32::MAX)]
    TooManySpans(usize),
    #[error("{event} on track '{track}', which cannot hold one")]
    WrongTrackKind { event: &'static str, track: u64 },
}
