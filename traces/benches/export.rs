//! Benchmarks trace export: how many producer events per second a sink writes, for a mix like
//! a real run's (nested slices with five arguments on eight ranks, some with flows, and counter
//! samples), written to `io::sink()` so that no disk is timed: encoding on the calling thread,
//! deflating on the writer's thread (the default `Compression::Deflate`).
//!
//! Run with `cargo bench -p pinch-traces --bench export`; results go in BENCHMARKS.md
//! ("Trace export").

use divan::Bencher;
use divan::counter::ItemsCount;
use pinch_traces::counter::Unit;
use pinch_traces::export::perfetto::PerfettoWriter;
use pinch_traces::export::{
    Arg, ArgValue, ExportError, FlowId, Slice, TraceHeader, TraceSink, Track, TrackId, TrackKind,
};
use std::io::{self, BufWriter};

fn main() {
    match perfetto_bytes() {
        Ok(bytes) => eprintln!(
            "perfetto: {bytes} bytes for {EVENTS} events ({:.1} bytes per event)",
            bytes as f64 / EVENTS as f64
        ),
        Err(err) => eprintln!("perfetto: cannot measure the size: {err}"),
    }
    divan::main();
}

/// Counts what is written, to report the trace's size per event.
#[derive(Default)]
struct CountingSink {
    bytes: u64,
}

impl io::Write for CountingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn perfetto_bytes() -> Result<u64, ExportError> {
    let mut writer = PerfettoWriter::new(CountingSink::default(), &header())?;
    declare(&mut writer)?;
    emit(&mut writer, EVENTS)?;
    writer.finish()?;
    Ok(writer.into_inner()?.bytes)
}

const RANKS: u64 = 8;
const COUNTERS: u64 = 2;
/// Producer events (slices and counter samples) per iteration.
const EVENTS: usize = 1_000_000;
const OPS: [&str; 4] = ["matmul", "attention", "all_reduce", "gelu"];

fn header() -> TraceHeader {
    TraceHeader {
        origin_unix_ns: 1_780_000_000_000_000_000,
        title: "bench".into(),
    }
}

fn declare(sink: &mut impl TraceSink) -> Result<(), ExportError> {
    let node = TrackId(0);
    let track = |id, name: &str, kind| Track {
        id: TrackId(id),
        parent: Some(node),
        name: name.into(),
        kind,
    };
    let process = Track {
        parent: None,
        ..track(0, "host0", TrackKind::Process { pid: 1 })
    };
    sink.track(&process)?;
    for rank in 0..RANKS {
        let kind = TrackKind::Thread {
            pid: 1,
            tid: rank as u32 + 2,
        };
        sink.track(&track(1 + rank, "rank", kind))?;
    }
    for counter in 0..COUNTERS {
        let kind = TrackKind::Counter {
            unit: Some(Unit::BytesPerSecond),
        };
        sink.track(&track(100 + counter, "memory bandwidth", kind))?;
    }
    Ok(())
}

/// One op slice of `step` on `rank`: the fourth child of each step's outer slice, every
/// tenth carries a flow.
fn op_slice(sink: &mut impl TraceSink, rank: u64, step: u64, op: u64) -> Result<(), ExportError> {
    let start_ns = (step * 10_000 + op * 2_000 + 100) as i64;
    let flow = [FlowId(step * RANKS + rank)];
    let has_flow = op == 2 && step.is_multiple_of(10);
    let args = [
        Arg {
            name: "op".into(),
            value: ArgValue::Str(OPS[op as usize]),
        },
        Arg {
            name: "layer".into(),
            value: ArgValue::Int((step % 32) as i64),
        },
        Arg {
            name: "step".into(),
            value: ArgValue::Uint(step),
        },
        Arg {
            name: "flops".into(),
            value: ArgValue::Uint(step * 1_000_003),
        },
        Arg {
            name: "gb_per_s".into(),
            value: ArgValue::Float(step as f64 * 0.37),
        },
    ];
    sink.slice(&Slice {
        track: TrackId(1 + rank),
        name: OPS[op as usize],
        category: "compute",
        start_ns,
        duration_ns: 1_500,
        args: &args,
        flows: if has_flow && rank.is_multiple_of(2) {
            &flow
        } else {
            &[]
        },
        flows_ending: if has_flow && rank % 2 == 1 {
            &flow
        } else {
            &[]
        },
    })
}

/// Sends `events` producer events: per step and rank an outer slice, four nested op slices
/// and a counter sample (six events).
fn emit(sink: &mut impl TraceSink, events: usize) -> Result<(), ExportError> {
    let mut sent = 0;
    for step in 0.. {
        for rank in 0..RANKS {
            if sent >= events {
                return Ok(());
            }
            let outer = Slice {
                track: TrackId(1 + rank),
                name: "step",
                category: "step",
                start_ns: (step * 10_000) as i64,
                duration_ns: 9_000,
                args: &[Arg {
                    name: "step".into(),
                    value: ArgValue::Uint(step),
                }],
                flows: &[],
                flows_ending: &[],
            };
            sink.slice(&outer)?;
            for op in 0..4 {
                op_slice(sink, rank, step, op)?;
            }
            let value = (step * rank) as f64;
            sink.counter(
                TrackId(100 + rank % COUNTERS),
                (step * 10_000 + rank) as i64,
                value,
            )?;
            sent += 6;
        }
    }
    Ok(())
}

#[divan::bench(sample_count = 5, sample_size = 1)]
fn perfetto(bencher: Bencher) {
    bencher
        .counter(ItemsCount::new(EVENTS))
        .bench(|| -> Result<(), ExportError> {
            let mut writer = PerfettoWriter::new(BufWriter::new(io::sink()), &header())?;
            declare(&mut writer)?;
            emit(&mut writer, EVENTS)?;
            writer.finish()
        });
}
