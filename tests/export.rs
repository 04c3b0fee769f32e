//! End-to-end: `pinch run` on two local nodes, then `pinch export` of what it stored to Chrome
//! JSON and to Perfetto's .pftrace (read back with the independent decoder of the trace crate's
//! tests); PyTorch profiler (Kineto) traces exported to both formats; and the one-line failures
//! (unknown format, unwritable output) with nothing left behind.

mod common;
#[path = "../traces/tests/support/pftrace.rs"]
mod pftrace;

use common::{pinch, report_json, run, stderr_of, stdout_of};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn export(run_dir: &Path, output: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    pinch()
        .arg("export")
        .arg(run_dir)
        .arg("-o")
        .arg(output)
        .args(extra)
        .assert()
}

#[allow(clippy::unwrap_used)] // a test helper: a panic is the failure report
fn events(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert!(
        doc["metadata"]["origin_unix_ns"].is_number(),
        "{}",
        doc["metadata"]
    );
    doc["traceEvents"].as_array().unwrap().clone()
}

fn with_phase<'a>(events: &'a [Value], phase: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["ph"] == phase).collect()
}

/// The one line a failed export prints, and that it exited with 2.
fn one_line_failure(assert: assert_cmd::assert::Assert) -> String {
    let stderr = stderr_of(&assert.code(2));
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    stderr
}

#[test]
fn a_run_exports_every_rank_span_counter_and_finding_to_chrome_json() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    run(&out, &[]).success();
    let json = dir.path().join("run.json");
    export(&out, &json, &[]).success();
    let events = events(&json);
    let report = report_json(&out);

    let threads: BTreeSet<String> = with_phase(&events, "M")
        .iter()
        .filter(|e| e["name"] == "thread_name")
        .map(|e| e["args"]["name"].as_str().unwrap().to_string())
        .collect();
    let ranks = report["ranks"].as_array().unwrap();
    for rank in ranks {
        let name = format!("rank {}", rank["rank"]);
        assert!(threads.contains(&name), "{name} in {threads:?}");
    }
    let spans: u64 = ranks
        .iter()
        .map(|r| r["span_count"].as_u64().unwrap())
        .sum();
    assert_eq!(with_phase(&events, "X").len() as u64, spans);
    assert!(
        !with_phase(&events, "C").is_empty(),
        "the counters are exported"
    );
    let global_findings = with_phase(&events, "i")
        .iter()
        .filter(|e| e["s"] == "g")
        .count();
    assert_eq!(
        global_findings,
        report["findings"].as_array().unwrap().len()
    );
    let starts = with_phase(&events, "s").len();
    assert!(starts > 0 && starts == with_phase(&events, "f").len());
}

/// The counts `pinch export` reports ("wrote F (B bytes): 12 slices on 7 tracks, 0 counter
/// values, ..."), by what they count.
#[allow(clippy::unwrap_used)] // a test helper: a panic is the failure report
fn reported(stdout: &str) -> BTreeMap<String, u64> {
    let line = stdout.lines().find(|l| l.starts_with("wrote ")).unwrap();
    let (_, counts) = line.split_once("): ").unwrap();
    counts
        .split(", ")
        .flat_map(|part| part.split(" on "))
        .map(|part| {
            let (n, what) = part.split_once(' ').unwrap();
            (what.to_string(), n.parse().unwrap())
        })
        .collect()
}

/// Exports `input` to `output`, decodes the .pftrace and checks what every trace must hold:
/// batches under the packet limit, slices that nest and close, flows that start and end once,
/// tracks whose parents exist, and the counts the export reported.
#[allow(clippy::unwrap_used)] // a test helper: a panic is the failure report
fn export_pftrace(input: &Path, output: &Path) -> (pftrace::Decoded, BTreeMap<String, u64>) {
    let counts = reported(&stdout_of(&export(input, output, &[]).success()));
    let decoded = pftrace::decode(&std::fs::read(output).unwrap());
    pftrace::check_batches(&decoded);
    pftrace::check_tracks(&decoded);
    let slices = pftrace::slices(&decoded);
    let flows = pftrace::check_flows(&decoded);
    assert_eq!(slices.len() as u64, counts["slices"], "{counts:?}");
    assert_eq!(decoded.of_kind(pftrace::SLICE_BEGIN).count(), slices.len());
    assert_eq!(flows.len() as u64, counts["flows"], "{counts:?}");
    assert_eq!(decoded.tracks.len() as u64, counts["tracks"], "{counts:?}");
    let samples = decoded.of_kind(pftrace::COUNTER).count() as u64;
    assert_eq!(samples, counts["counter values"], "{counts:?}");
    let instants = decoded.of_kind(pftrace::INSTANT).count() as u64;
    assert_eq!(instants, counts["finding events"], "{counts:?}");
    (decoded, counts)
}

#[test]
fn a_run_exports_to_a_pftrace_that_decodes_to_every_span_and_flow() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    run(&out, &[]).success();
    let trace = dir.path().join("run.pftrace");
    let (decoded, counts) = export_pftrace(&out, &trace);
    let spans: u64 = report_json(&out)["ranks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["span_count"].as_u64().unwrap())
        .sum();
    assert_eq!(counts["slices"], spans);
    assert!(counts["flows"] > 0, "the run's collectives are linked");
    assert!(counts["counter values"] > 0, "the counters are exported");
    let threads = decoded.tracks.values().filter(|t| t.kind == "thread");
    assert!(threads.count() >= 2, "a thread track per rank");
}

/// Kineto traces to export: the fuzz seed in the repository, and where ../shared/kineto is
/// present (it is not shipped), a real two-rank NCCL job's traces.
fn kineto_inputs() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut inputs = vec![root.join("fuzz/seeds/kineto/small.json")];
    let shared = root.join("../shared/kineto/traces/trace_filter");
    if shared.is_dir() {
        inputs.push(shared);
    } else {
        println!(
            "skipped {}: absent (HTA's traces are not shipped)",
            shared.display()
        );
    }
    inputs
}

#[test]
fn kineto_traces_export_the_same_slices_to_pftrace_and_json() {
    for input in kineto_inputs() {
        let dir = tempfile::tempdir().unwrap();
        let (decoded, counts) = export_pftrace(&input, &dir.path().join("k.pftrace"));
        let json = dir.path().join("k.json");
        export(&input, &json, &[]).success();
        let events = events(&json);
        let name = input.display();
        assert!(counts["slices"] > 0, "{name}");
        assert_eq!(
            with_phase(&events, "X").len(),
            pftrace::slices(&decoded).len(),
            "{name}"
        );
        assert_eq!(
            with_phase(&events, "i").len(),
            decoded.of_kind(pftrace::INSTANT).count(),
            "{name}"
        );
    }
}

#[test]
fn a_cut_log_still_exports_with_a_warning_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    run(&out, &[]).success();
    let log = out.join("node-1.pnl");
    let len = std::fs::metadata(&log).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&log).unwrap();
    file.set_len(len - 100).unwrap();
    let json = dir.path().join("cut.json");
    let stderr = stderr_of(&export(&out, &json, &[]).success());
    assert!(
        stderr.contains("warning") && stderr.contains("node-1.pnl"),
        "{stderr}"
    );
    assert!(!with_phase(&events(&json), "X").is_empty());
}

#[test]
fn an_unknown_format_or_unwritable_output_is_one_line_and_exit_2() {
    // The output is checked before the run is read, so an empty directory stands for one.
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    std::fs::create_dir(&out).unwrap();
    let target = dir.path().join("run.trace");
    let stderr = one_line_failure(export(&out, &target, &["--format", "xml"]));
    assert!(stderr.contains("format 'xml' is unknown"), "{stderr}");
    let stderr = one_line_failure(export(&out, &target, &[]));
    assert!(stderr.contains("run.trace"), "{stderr}");
    let unwritable = dir.path().join("no/such/dir/run.json");
    let stderr = one_line_failure(export(&out, &unwritable, &[]));
    assert!(stderr.contains("no/such/dir/run.json"), "{stderr}");
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "run")
        .collect();
    assert!(left.is_empty(), "nothing half-written: {left:?}");
}
