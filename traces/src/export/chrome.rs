//! Chrome's Trace Event Format (JSON), for chrome://tracing and the tools that read only that:
//! a `TraceSink` that writes each event as it comes, so memory holds the declared tracks and
//! the open flows, never the events.
//!
//! Layout: a process track is a pid with "process_name"/"process_sort_index" metadata, a
//! thread track a (pid, tid) with "thread_name"/"thread_sort_index"; slices are complete ("X")
//! events, counter values "C" events named after their track, instants "i" events (thread scope
//! on a thread, global on an instants track of its own). A flow is "s" on its first slice, "t"
//! on the ones between and "f" (bound to the enclosing slice) on its last. Times are
//! microseconds written from integer nanoseconds, so no precision is lost. The header's origin
//! goes into the top-level "metadata" object.

use super::{
    Arg, ArgValue, ExportError, FlowId, Instant, Slice, TraceHeader, TraceSink, Track, TrackId,
    TrackKind,
};
use rustc_hash::{FxHashMap, FxHashSet};
use std::io::{BufWriter, Write};

/// Where a declared track's events go.
#[derive(Clone, Debug)]
struct Place {
    pid: u32,
    /// `None` for a process track or a top-level instants track.
    tid: Option<u64>,
    name: String,
    kind: PlaceKind,
    /// The start of the last slice sent to it, to refuse slices out of order.
    last_start_ns: Option<i64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PlaceKind {
    Process,
    Thread,
    Counter,
    Instants,
}

/// Writes a trace as Chrome JSON to `out`, event by event. Call `finish` to close it.
#[derive(Debug)]
pub struct ChromeJsonWriter<W: Write> {
    out: BufWriter<W>,
    header: TraceHeader,
    tracks: FxHashMap<TrackId, Place>,
    /// Flows that have started and not ended: their next slice gets "t", not "s".
    open_flows: FxHashSet<FlowId>,
    /// Whether no event has been written yet (no comma before the next).
    first: bool,
    finished: bool,
    /// Declaration order of processes and threads, their sort index.
    next_sort_index: u64,
}

impl<W: Write> ChromeJsonWriter<W> {
    /// Starts the trace: writes the opening of the event array.
    pub fn new(out: W, header: &TraceHeader) -> Result<Self, ExportError> {
        let mut out = BufWriter::with_capacity(1 << 16, out);
        out.write_all(b"{\"traceEvents\":[\n")?;
        Ok(ChromeJsonWriter {
            out,
            header: header.clone(),
            tracks: FxHashMap::default(),
            open_flows: FxHashSet::default(),
            first: true,
            finished: false,
            next_sort_index: 0,
        })
    }

    /// The writer, after `finish`: flushed.
    pub fn into_inner(self) -> Result<W, ExportError> {
        self.out
            .into_inner()
            .map_err(|e| ExportError::Write(e.into_error()))
    }

    /// Opens the next event: the separator, and refuses events after `finish`.
    fn begin(&mut self) -> Result<(), ExportError> {
        if self.finished {
            return Err(ExportError::Write(std::io::Error::other(
                "an event came after the trace was finished",
            )));
        }
        if !self.first {
            self.out.write_all(b",\n")?;
        }
        self.first = false;
        Ok(())
    }

    fn place(&self, track: TrackId) -> Result<&Place, ExportError> {
        self.tracks
            .get(&track)
            .ok_or(ExportError::UnknownTrack(track.0))
    }

    /// The pid of a parent track, or 0 (the global process) for none.
    fn parent_pid(&self, parent: Option<TrackId>) -> Result<u32, ExportError> {
        parent.map_or(Ok(0), |p| self.place(p).map(|p| p.pid))
    }

    /// A metadata ("M") event naming or ordering a process or thread.
    fn metadata(
        &mut self,
        what: &str,
        pid: u32,
        tid: Option<u64>,
        arg: Arg<'_>,
    ) -> Result<(), ExportError> {
        self.begin()?;
        write!(self.out, "{{\"ph\":\"M\",\"pid\":{pid},")?;
        if let Some(tid) = tid {
            write!(self.out, "\"tid\":{tid},")?;
        }
        self.out.write_all(b"\"name\":")?;
        write_str(&mut self.out, what)?;
        self.out.write_all(b",\"args\":")?;
        write_args(&mut self.out, &[arg])?;
        self.out.write_all(b"}")?;
        Ok(())
    }

    /// The name and sort index of a process or thread.
    fn declare(&mut self, place: &Place) -> Result<(), ExportError> {
        let (name_event, sort_event) = match place.tid {
            None => ("process_name", "process_sort_index"),
            Some(_) => ("thread_name", "thread_sort_index"),
        };
        let name = Arg {
            name: "name".into(),
            value: ArgValue::Str(&place.name),
        };
        self.metadata(name_event, place.pid, place.tid, name)?;
        let sort_index = Arg {
            name: "sort_index".into(),
            value: ArgValue::Uint(self.next_sort_index),
        };
        self.next_sort_index += 1;
        self.metadata(sort_event, place.pid, place.tid, sort_index)
    }

    /// One flow event ("s", "t" or "f") at `ts_ns` on a slice's thread.
    fn flow_event(
        &mut self,
        phase: &str,
        flow: FlowId,
        pid: u32,
        tid: u64,
        ts_ns: i64,
    ) -> Result<(), ExportError> {
        self.begin()?;
        write!(
            self.out,
            "{{\"ph\":\"{phase}\",\"name\":\"flow\",\"cat\":\"flow\",\"id\":{},\"pid\":{pid},\"tid\":{tid},\"ts\":",
            flow.0
        )?;
        write_us(&mut self.out, ts_ns)?;
        if phase == "f" {
            self.out.write_all(b",\"bp\":\"e\"")?;
        }
        self.out.write_all(b"}")?;
        Ok(())
    }

    /// The flow events of a slice: each flow starts ("s") or continues ("t") here, or ends.
    fn flows(&mut self, slice: &Slice<'_>, pid: u32, tid: u64) -> Result<(), ExportError> {
        for &flow in slice.flows {
            let phase = if self.open_flows.insert(flow) {
                "s"
            } else {
                "t"
            };
            self.flow_event(phase, flow, pid, tid, slice.start_ns)?;
        }
        for &flow in slice.flows_ending {
            self.open_flows.remove(&flow);
            self.flow_event("f", flow, pid, tid, slice.start_ns)?;
        }
        Ok(())
    }
}

impl<W: Write> TraceSink for ChromeJsonWriter<W> {
    fn track(&mut self, track: &Track) -> Result<(), ExportError> {
        let (pid, tid, kind) = match track.kind {
            TrackKind::Process { pid } => (pid, None, PlaceKind::Process),
            TrackKind::Thread { pid, tid } => (pid, Some(u64::from(tid)), PlaceKind::Thread),
            TrackKind::Counter { .. } => (self.parent_pid(track.parent)?, None, PlaceKind::Counter),
            TrackKind::Instants => {
                // Under a thread, its instants are that thread's; else they are global.
                let parent = track.parent.map(|p| self.place(p)).transpose()?;
                match parent {
                    Some(p) if p.kind == PlaceKind::Thread => (p.pid, p.tid, PlaceKind::Instants),
                    Some(p) => (p.pid, None, PlaceKind::Instants),
                    None => (0, None, PlaceKind::Instants),
                }
            }
        };
        let place = Place {
            pid,
            tid,
            name: track.name.clone(),
            kind,
            last_start_ns: None,
        };
        if matches!(kind, PlaceKind::Process | PlaceKind::Thread) {
            self.declare(&place)?;
        }
        self.tracks.insert(track.id, place);
        Ok(())
    }

    fn slice(&mut self, slice: &Slice<'_>) -> Result<(), ExportError> {
        let place = self
            .tracks
            .get_mut(&slice.track)
            .ok_or(ExportError::UnknownTrack(slice.track.0))?;
        if place
            .last_start_ns
            .is_some_and(|last| slice.start_ns < last)
        {
            return Err(ExportError::OutOfOrder {
                name: slice.name.to_string(),
                track: slice.track.0,
                start_ns: slice.start_ns,
            });
        }
        place.last_start_ns = Some(slice.start_ns);
        // A slice on a track that is not a thread gets a thread of its own, named by its id.
        let (pid, tid) = (place.pid, place.tid.unwrap_or(slice.track.0));
        self.begin()?;
        write!(
            self.out,
            "{{\"ph\":\"X\",\"pid\":{pid},\"tid\":{tid},\"ts\":"
        )?;
        write_us(&mut self.out, slice.start_ns)?;
        self.out.write_all(b",\"dur\":")?;
        write_us(
            &mut self.out,
            i64::try_from(slice.duration_ns).unwrap_or(i64::MAX),
        )?;
        write_name_cat(&mut self.out, slice.name, slice.category)?;
        if !slice.args.is_empty() {
            self.out.write_all(b",\"args\":")?;
            write_args(&mut self.out, slice.args)?;
        }
        self.out.write_all(b"}")?;
        self.flows(slice, pid, tid)
    }

    fn counter(&mut self, track: TrackId, time_ns: i64, value: f64) -> Result<(), ExportError> {
        let place = self.place(track)?;
        let pid = place.pid;
        let name = place.name.clone();
        self.begin()?;
        write!(self.out, "{{\"ph\":\"C\",\"pid\":{pid},\"ts\":")?;
        write_us(&mut self.out, time_ns)?;
        self.out.write_all(b",\"name\":")?;
        write_str(&mut self.out, &name)?;
        self.out.write_all(b",\"args\":")?;
        write_args(
            &mut self.out,
            &[Arg {
                name: "value".into(),
                value: ArgValue::Float(value),
            }],
        )?;
        self.out.write_all(b"}")?;
        Ok(())
    }

    fn instant(&mut self, instant: &Instant<'_>) -> Result<(), ExportError> {
        let place = self.place(instant.track)?;
        let (pid, tid) = (place.pid, place.tid);
        self.begin()?;
        match tid {
            Some(tid) => write!(
                self.out,
                "{{\"ph\":\"i\",\"s\":\"t\",\"pid\":{pid},\"tid\":{tid},\"ts\":"
            )?,
            None => write!(self.out, "{{\"ph\":\"i\",\"s\":\"g\",\"pid\":{pid},\"ts\":")?,
        }
        write_us(&mut self.out, instant.time_ns)?;
        write_name_cat(&mut self.out, instant.name, instant.category)?;
        if !instant.args.is_empty() {
            self.out.write_all(b",\"args\":")?;
            write_args(&mut self.out, instant.args)?;
        }
        self.out.write_all(b"}")?;
        Ok(())
    }

    fn finish(&mut self) -> Result<(), ExportError> {
        if self.finished {
            return Ok(());
        }
        self.finished = true;
        self.out
            .write_all(b"\n],\"displayTimeUnit\":\"ns\",\"metadata\":{\"title\":")?;
        write_str(&mut self.out, &self.header.title)?;
        writeln!(
            self.out,
            ",\"origin_unix_ns\":{}}}}}",
            self.header.origin_unix_ns
        )?;
        self.out.flush()?;
        Ok(())
    }
}

/// A JSON string, escaped by serde_json.
fn write_str(out: &mut impl Write, s: &str) -> Result<(), ExportError> {
    serde_json::to_writer(out, s).map_err(|e| ExportError::Write(e.into()))
}

fn write_name_cat(out: &mut impl Write, name: &str, category: &str) -> Result<(), ExportError> {
    out.write_all(b",\"name\":")?;
    write_str(out, name)?;
    out.write_all(b",\"cat\":")?;
    write_str(out, category)
}

/// Nanoseconds as microseconds with three decimals, from the integer (no float rounding).
fn write_us(out: &mut impl Write, ns: i64) -> Result<(), ExportError> {
    let sign = if ns < 0 { "-" } else { "" };
    let abs = ns.unsigned_abs();
    write!(out, "{sign}{}.{:03}", abs / 1_000, abs % 1_000)?;
    Ok(())
}

/// An args object; a float that is not finite is written as null (JSON has no NaN).
fn write_args(out: &mut impl Write, args: &[Arg<'_>]) -> Result<(), ExportError> {
    out.write_all(b"{")?;
    for (i, arg) in args.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write_str(out, arg.name.as_str())?;
        out.write_all(b":")?;
        match arg.value {
            ArgValue::Int(v) => write!(out, "{v}")?,
            ArgValue::Uint(v) => write!(out, "{v}")?,
            ArgValue::Float(v) => {
                serde_json::to_writer(&mut *out, &v).map_err(|e| ExportError::Write(e.into()))?
            }
            ArgValue::Str(v) => write_str(out, v)?,
        }
    }
    out.write_all(b"}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn header() -> TraceHeader {
        TraceHeader {
            origin_unix_ns: 1_700_000_000_000_000_123,
            title: "run \"a\"".into(),
        }
    }

    fn track(id: u64, parent: Option<u64>, name: &str, kind: TrackKind) -> Track {
        Track {
            id: TrackId(id),
            parent: parent.map(TrackId),
            name: name.into(),
            kind,
        }
    }

    fn slice<'a>(
        track: u64,
        start_ns: i64,
        duration_ns: u64,
        args: &'a [Arg<'a>],
        flows: &'a [FlowId],
        ending: &'a [FlowId],
    ) -> Slice<'a> {
        Slice {
            track: TrackId(track),
            name: "matmul",
            category: "compute",
            start_ns,
            duration_ns,
            args,
            flows,
            flows_ending: ending,
        }
    }

    /// A node with two ranks, a counter and a findings track.
    fn declared() -> ChromeJsonWriter<Vec<u8>> {
        let mut w = ChromeJsonWriter::new(Vec::new(), &header()).unwrap();
        w.track(&track(1, None, "host-a", TrackKind::Process { pid: 1 }))
            .unwrap();
        for (id, tid) in [(2, 1), (3, 2)] {
            let name = format!("rank {}", tid - 1);
            w.track(&track(
                id,
                Some(1),
                &name,
                TrackKind::Thread { pid: 1, tid },
            ))
            .unwrap();
        }
        let counter = TrackKind::Counter { unit: None };
        w.track(&track(4, Some(1), "cpu.utilization cpu0", counter))
            .unwrap();
        w.track(&track(5, None, "findings", TrackKind::Instants))
            .unwrap();
        w
    }

    fn events(w: ChromeJsonWriter<Vec<u8>>) -> (Vec<Value>, Value) {
        let doc: Value = serde_json::from_slice(&w.into_inner().unwrap()).unwrap();
        let events = doc["traceEvents"].as_array().unwrap().clone();
        (events, doc["metadata"].clone())
    }

    #[test]
    fn every_kind_of_event_is_valid_json_with_exact_microseconds() {
        let mut w = declared();
        let args = [
            Arg {
                name: "op".into(),
                value: ArgValue::Str("mat\"mul\n"),
            },
            Arg {
                name: "gb_per_s".into(),
                value: ArgValue::Float(f64::NAN),
            },
            Arg {
                name: "layer".into(),
                value: ArgValue::Uint(3),
            },
        ];
        w.slice(&slice(2, 1_234_567, 1_001, &args, &[], &[]))
            .unwrap();
        w.counter(TrackId(4), -1_500, 42.5).unwrap();
        let finding = Instant {
            track: TrackId(5),
            name: "straggler",
            category: "finding",
            time_ns: 7,
            args: &[],
        };
        w.instant(&finding).unwrap();
        w.instant(&Instant {
            track: TrackId(3),
            ..finding
        })
        .unwrap();
        w.finish().unwrap();
        let (events, metadata) = events(w);
        assert_eq!(metadata["origin_unix_ns"], 1_700_000_000_000_000_123_u64);
        assert_eq!(metadata["title"], "run \"a\"");
        let names: Vec<&str> = events
            .iter()
            .filter(|e| e["ph"] == "M")
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "process_name",
                "process_sort_index",
                "thread_name",
                "thread_sort_index",
                "thread_name",
                "thread_sort_index"
            ]
        );
        let x = events.iter().find(|e| e["ph"] == "X").unwrap();
        assert_eq!(
            (x["ts"].as_f64(), x["dur"].as_f64()),
            (Some(1234.567), Some(1.001))
        );
        assert_eq!(x["args"]["op"], "mat\"mul\n");
        assert!(x["args"]["gb_per_s"].is_null());
        assert_eq!((x["pid"].as_u64(), x["tid"].as_u64()), (Some(1), Some(1)));
        let c = events.iter().find(|e| e["ph"] == "C").unwrap();
        assert_eq!(c["ts"].as_f64(), Some(-1.5));
        assert_eq!(c["name"], "cpu.utilization cpu0");
        assert_eq!(c["args"]["value"], 42.5);
        let scopes: Vec<(&str, Option<u64>)> = events
            .iter()
            .filter(|e| e["ph"] == "i")
            .map(|e| (e["s"].as_str().unwrap(), e["tid"].as_u64()))
            .collect();
        assert_eq!(scopes, [("g", None), ("t", Some(2))]);
    }

    #[test]
    fn a_flow_starts_continues_and_ends_bound_to_its_slices() {
        let mut w = declared();
        let flow = [FlowId(9)];
        w.slice(&slice(2, 0, 10, &[], &flow, &[])).unwrap();
        w.slice(&slice(3, 5, 10, &[], &flow, &[])).unwrap();
        w.slice(&slice(2, 20, 10, &[], &[], &flow)).unwrap();
        w.finish().unwrap();
        let (events, _) = events(w);
        let phases: Vec<(&str, u64)> = events
            .iter()
            .filter(|e| e["cat"] == "flow")
            .map(|e| (e["ph"].as_str().unwrap(), e["id"].as_u64().unwrap()))
            .collect();
        assert_eq!(phases, [("s", 9), ("t", 9), ("f", 9)]);
        let end = events.iter().find(|e| e["ph"] == "f").unwrap();
        assert_eq!(
            (end["bp"].as_str(), end["ts"].as_f64()),
            (Some("e"), Some(0.02))
        );
    }

    #[test]
    fn undeclared_tracks_and_slices_out_of_order_are_refused() {
        let mut w = declared();
        let err = w.slice(&slice(77, 0, 1, &[], &[], &[])).unwrap_err();
        assert!(matches!(err, ExportError::UnknownTrack(77)), "{err}");
        w.slice(&slice(2, 100, 1, &[], &[], &[])).unwrap();
        let err = w.slice(&slice(2, 99, 1, &[], &[], &[])).unwrap_err();
        assert!(
            matches!(err, ExportError::OutOfOrder { start_ns: 99, .. }),
            "{err}"
        );
        assert!(w.counter(TrackId(78), 0, 1.0).is_err());
    }

    #[test]
    fn an_empty_trace_is_valid_and_nothing_may_follow_finish() {
        let mut w = ChromeJsonWriter::new(Vec::new(), &header()).unwrap();
        w.finish().unwrap();
        let err = w
            .track(&track(1, None, "late", TrackKind::Process { pid: 1 }))
            .unwrap_err();
        assert!(
            err.to_string().contains("after the trace was finished"),
            "{err}"
        );
        let (events, _) = events(w);
        assert!(events.is_empty());
    }
}
