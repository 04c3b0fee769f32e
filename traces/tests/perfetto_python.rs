//! Parses a trace written by `PerfettoWriter` with the perfetto Python wheel's generated protos
//! (perfetto_trace_pb2, Perfetto's own field definitions), which rejects any field they do not
//! know, after expanding its compressed batches, and checks the counts of batches, events and
//! tracks by kind, in both compression modes. Skipped, with the reason printed, where `python3`
//! or the wheel (`pip install perfetto protobuf`) is missing.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use pinch_traces::counter::Unit;
use pinch_traces::export::perfetto::{Compression, PerfettoWriter};
use pinch_traces::export::{
    Arg, ArgValue, FlowId, Instant, Slice, TraceHeader, TraceSink, Track, TrackId, TrackKind,
};
use std::path::Path;
use std::process::Command;

const CHECKER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/perfetto_check.py");

fn track(id: u64, parent: Option<u64>, name: &str, kind: TrackKind) -> Track {
    Track {
        id: TrackId(id),
        parent: parent.map(TrackId),
        name: name.into(),
        kind,
    }
}

/// One node, two ranks with three nested slices each and a flow between them, two counters
/// (one in a unit Perfetto has, one it has not), and two findings.
fn write_trace(path: &Path, compression: Compression) {
    let header = TraceHeader {
        origin_unix_ns: 1_780_000_000_000_000_000,
        title: "tiny".into(),
    };
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = PerfettoWriter::with_compression(file, &header, compression).unwrap();
    w.track(&track(1, None, "host0", TrackKind::Process { pid: 7 }))
        .unwrap();
    for rank in 0..2 {
        let kind = TrackKind::Thread {
            pid: 7,
            tid: 70 + rank as u32,
        };
        w.track(&track(10 + rank, Some(1), &format!("rank {rank}"), kind))
            .unwrap();
    }
    w.track(&track(
        20,
        Some(1),
        "cpu",
        TrackKind::Counter {
            unit: Some(Unit::Percent),
        },
    ))
    .unwrap();
    w.track(&track(
        21,
        Some(1),
        "rss",
        TrackKind::Counter {
            unit: Some(Unit::Bytes),
        },
    ))
    .unwrap();
    w.track(&track(30, None, "findings", TrackKind::Instants))
        .unwrap();
    let args = [
        Arg {
            name: "layer".into(),
            value: ArgValue::Int(3),
        },
        Arg {
            name: "bytes".into(),
            value: ArgValue::Uint(4096),
        },
        Arg {
            name: "gb_per_s".into(),
            value: ArgValue::Float(12.5),
        },
        Arg {
            name: "op".into(),
            value: ArgValue::Str("all_reduce"),
        },
    ];
    let flow = [FlowId(42)];
    for rank in 0..2u64 {
        let (flows, ending): (&[FlowId], &[FlowId]) = if rank == 0 {
            (&flow, &[])
        } else {
            (&[], &flow)
        };
        for (start_ns, duration_ns, name) in [
            (0, 1_000, "step"),
            (100, 500, "layer"),
            (200, 100, "all_reduce"),
        ] {
            let is_leaf = name == "all_reduce";
            w.slice(&Slice {
                track: TrackId(10 + rank),
                name,
                category: "compute",
                start_ns: start_ns + rank as i64,
                duration_ns,
                args: &args,
                flows: if is_leaf { flows } else { &[] },
                flows_ending: if is_leaf { ending } else { &[] },
            })
            .unwrap();
        }
    }
    for (i, track) in [20, 20, 21, 21].into_iter().enumerate() {
        w.counter(TrackId(track), i as i64 * 100, i as f64).unwrap();
    }
    for track in [30, 10] {
        let finding = Instant {
            track: TrackId(track),
            name: "straggler",
            category: "finding",
            time_ns: 900,
            args: &args,
        };
        w.instant(&finding).unwrap();
    }
    w.finish().unwrap();
}

fn wheel_missing() -> Option<String> {
    let probe = Command::new("python3")
        .args([
            "-c",
            "import perfetto.protos.perfetto.trace.perfetto_trace_pb2",
        ])
        .output();
    match probe {
        Err(err) => Some(format!("python3 cannot run: {err}")),
        Ok(out) if !out.status.success() => {
            Some(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
        Ok(_) => None,
    }
}

#[test]
fn perfettos_own_protos_parse_the_trace_with_no_unknown_field() {
    if let Some(reason) = wheel_missing() {
        println!(
            "skipped: the perfetto wheel is missing ({reason}); pip install perfetto protobuf"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    for (compression, batches) in [(Compression::Deflate, 1), (Compression::None, 0)] {
        let path = dir.path().join(format!("tiny-{compression:?}.pftrace"));
        write_trace(&path, compression);
        let summary = check(&path);
        assert_eq!(
            summary,
            format!(
                "TYPE_COUNTER=4 TYPE_INSTANT=2 TYPE_SLICE_BEGIN=6 TYPE_SLICE_END=6 compressed={batches} counter=2 plain=1 process=1 thread=2"
            ),
            "{compression:?}"
        );
    }
}

/// Runs the checker on `path`: its one-line summary, once it has passed.
fn check(path: &Path) -> String {
    let out = Command::new("python3")
        .arg(CHECKER)
        .arg(path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the checker failed: {stderr}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
