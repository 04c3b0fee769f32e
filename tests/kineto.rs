//! `pinch analyze` on PyTorch profiler (Kineto) traces, end to end through the binary: small
//! traces written here (their numbers worked out by hand), bad input, and, where
//! ../shared/kineto is present, HTA's own test traces against the CSVs HTA 0.5.0 wrote.

mod common;

use common::{kineto_trace as trace, pinch, stderr_of, stdout_of};
use std::io::Write;
use std::path::{Path, PathBuf};

/// `pinch analyze PATH --json`, which must succeed, as parsed JSON.
fn analyze_json(path: impl AsRef<std::ffi::OsStr>) -> serde_json::Value {
    let out = pinch()
        .arg("analyze")
        .arg(path)
        .arg("--json")
        .assert()
        .success();
    serde_json::from_slice(&out.get_output().stdout).expect("--json writes JSON")
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    write_bytes(dir, name, text.as_bytes())
}

fn write_gz(dir: &Path, name: &str, text: &str) -> PathBuf {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(text.as_bytes()).expect("gzip in memory");
    write_bytes(dir, name, &enc.finish().expect("gzip in memory"))
}

fn write_bytes(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("the temporary directory is writable");
    path
}

/// A directory with the two ranks of a job, one gzipped.
fn job() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    write_gz(dir.path(), "rank-0.json.gz", &trace(Some(0), 2));
    write(dir.path(), "rank-1.pt.trace.json", &trace(Some(1), 2));
    dir
}

#[test]
fn a_directory_of_traces_gets_htas_breakdown_per_rank() {
    let dir = job();
    let assert = pinch().arg("analyze").arg(dir.path()).assert().success();
    let out = stdout_of(&assert);
    // Span 0..220 us: kernels cover 130 + 20, so idle 70 us; compute 100 us; the NCCL
    // kernel runs under computation for 60 of its 90 us.
    for want in [
        "Kineto traces: 2 ranks of a world of 2",
        "2 ProfilerSteps: each rank's last step dropped",
        "220.0 µs",
        "31.8%",
        "45.5%",
        "22.7%",
        "66.7%",
        "computation overlapping communication",
        "100.0 µs (100.0%)",
    ] {
        assert!(out.contains(want), "'{want}' missing from:\n{out}");
    }
    assert!(stderr_of(&assert).is_empty(), "{}", stderr_of(&assert));
}

#[test]
fn json_and_hta_csv_carry_the_same_numbers() {
    let dir = job();
    let csv = dir.path().join("csv");
    let assert = pinch()
        .arg("analyze")
        .arg(dir.path().join("rank-0.json.gz"))
        .arg(dir.path().join("rank-1.pt.trace.json"))
        .args(["--json", "--hta-csv"])
        .arg(&csv)
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_slice(&assert.get_output().stdout).unwrap();
    let rank1 = &report["ranks"][1];
    assert_eq!(rank1["rank"], 1);
    assert_eq!(rank1["temporal"]["span_ns"], 220_000);
    assert_eq!(rank1["temporal"]["idle_ns"], 70_000);
    let overlap = rank1["comm_overlap_pct"].as_f64().unwrap();
    assert!((overlap - 200.0 / 3.0).abs() < 1e-9, "{overlap}");
    assert_eq!(rank1["idle"][0]["host_wait"]["time_ns"], 100_000);
    assert_eq!(report["traces"][0]["rank_from"], "distributed_info");
    let temporal = std::fs::read_to_string(csv.join("temporal_breakdown.csv")).unwrap();
    assert!(
        temporal.ends_with("1,70.0,100.0,50.0,220.0,31.82,45.45,22.73\n"),
        "{temporal}"
    );
    let overlap = std::fs::read_to_string(csv.join("comm_comp_overlap.csv")).unwrap();
    assert_eq!(overlap, "rank,comp_comm_overlap_pctg\n0,66.67\n1,66.67\n");
    let idle = std::fs::read_to_string(csv.join("idle_time_breakdown.csv")).unwrap();
    assert!(
        idle.contains("0,7,host_wait,100.0,1.0\n0,7,other,0.0,0.0\n0,9,other,0.0,\n"),
        "{idle}"
    );
    let types = std::fs::read_to_string(csv.join("gpu_kernel_breakdown_by_type.csv")).unwrap();
    assert_eq!(
        types,
        "kernel_type,sum,percentage\n\
         COMPUTATION overlapping COMMUNICATION,120,40.0\n\
         COMPUTATION,80,26.7\n\
         COMMUNICATION,60,20.0\n\
         MEMORY,40,13.3\n"
    );
}

#[test]
fn a_trace_without_a_rank_gets_one_by_file_order_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(dir.path(), "a.json", &trace(None, 2));
    let b = write(dir.path(), "b.json", &trace(Some(0), 2));
    let assert = pinch().arg("analyze").arg(&a).arg(&b).assert().success();
    let stderr = stderr_of(&assert);
    assert!(
        stderr.contains("warning") && stderr.contains("a.json") && stderr.contains("rank 1"),
        "{stderr}"
    );
}

/// Bad input exits 2 with one line naming the file and what is wrong; never a panic.
fn fails_naming(paths: &[&Path], wants: &[&str]) {
    let assert = pinch().arg("analyze").args(paths).assert().code(2);
    let stderr = stderr_of(&assert);
    assert!(!stderr.contains("panicked"), "{stderr}");
    for want in wants {
        assert!(stderr.contains(want), "'{want}' missing from: {stderr}");
    }
}

#[test]
fn bad_traces_are_named_with_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let good = trace(Some(0), 2);
    let cut = write(d, "cut.json", &good[..good.len() / 2]);
    fails_naming(&[&cut], &["cut.json", "ends early"]);
    let malformed = write(
        d,
        "malformed.json",
        "{\"traceEvents\": [{\"ph\": \"X\",,}]}",
    );
    fails_naming(
        &[&malformed],
        &["malformed.json", "not valid JSON", "line 1"],
    );
    let other = write(d, "other.json", "{\"name\": \"not a trace\"}");
    fails_naming(&[&other], &["other.json", "not a Kineto trace"]);
    let empty = write(d, "empty.json", "{\"traceEvents\": []}");
    fails_naming(&[&empty], &["empty.json", "no trace events"]);
    let gz = write_gz(d, "whole.json.gz", &good);
    let bytes = std::fs::read(&gz).unwrap();
    let cut_gz = write_bytes(d, "cut.json.gz", &bytes[..bytes.len() / 2]);
    fails_naming(&[&cut_gz], &["cut.json.gz", "cannot decompress"]);
    let binary = write_bytes(d, "binary.json", &[0xff, 0xfe, 0x00, 0x01]);
    fails_naming(&[&binary], &["binary.json"]);
}

#[test]
fn ranks_that_disagree_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let a = write(d, "a.json", &trace(Some(0), 2));
    let b = write(d, "b.json", &trace(Some(1), 4));
    fails_naming(
        &[&a, &b],
        &["a.json", "b.json", "world size is 2", "says 4"],
    );
    let c = write(d, "c.json", &trace(Some(0), 2));
    fails_naming(&[&a, &c], &["a.json", "c.json", "both rank 0"]);
    let outside = write(d, "outside.json", &trace(Some(3), 2));
    fails_naming(&[&outside], &["outside.json", "rank 3 of a world of 2"]);
}

#[test]
fn times_at_the_ends_of_the_range_do_not_overflow() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = |ts: &str, dur: &str, stream: u32| {
        format!(
            r#"{{"ph": "X", "cat": "kernel", "name": "k", "ts": {ts}, "dur": {dur}, "args": {{"stream": {stream}, "correlation": 1}}}}"#
        )
    };
    let events = [
        kernel("-9000000000000000", "9000000000000000", 7),
        kernel("-8000000000000000", "1", 7),
        kernel("-7000000000000000", "1", 7),
        kernel("9000000000000000", "9000000000000000", 7),
        kernel("-9000000000000000", "9000000000000000", 9),
    ];
    let text = format!(r#"{{"traceEvents": [{}]}}"#, events.join(","));
    let path = write(dir.path(), "extreme.json", &text);
    for extra in [&[][..], &["--exact-times"]] {
        let assert = pinch()
            .arg("analyze")
            .arg(&path)
            .args(extra)
            .assert()
            .success();
        assert!(stdout_of(&assert).contains("Kineto traces: 1 rank"));
    }
    let beyond = write(
        dir.path(),
        "beyond.json",
        &text.replace("-9000000000000000", "-1e17"),
    );
    fails_naming(&[&beyond], &["beyond.json", "time -1e17", "line 1"]);
}

#[test]
fn a_directory_with_neither_a_run_nor_traces_is_named() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "notes.txt", "hello");
    fails_naming(&[dir.path()], &["neither a pinch run", "Kineto traces"]);
}

fn shared() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/kineto");
    if dir.is_dir() {
        Some(dir)
    } else {
        println!(
            "skipped: {} is absent (HTA's traces are not shipped)",
            dir.display()
        );
        None
    }
}

#[test]
fn htas_test_traces_give_htas_csv_files() {
    let Some(shared) = shared() else { return };
    let sets = [
        ("trace_filter", "trace_filter"),
        ("nccl_parser_config", "nccl_parser_config"),
        ("ns_resolution_trace", "ns_resolution_trace"),
        ("alexnet", "critical_path/alexnet"),
    ];
    for (set, folder) in sets {
        let out = tempfile::tempdir().unwrap();
        pinch()
            .arg("analyze")
            .arg(shared.join("traces").join(folder))
            .arg("--hta-csv")
            .arg(out.path())
            .assert()
            .success();
        for name in [
            "temporal_breakdown.csv",
            "comm_comp_overlap.csv",
            "idle_time_breakdown.csv",
            "gpu_kernel_breakdown_by_type.csv",
        ] {
            let ours = std::fs::read_to_string(out.path().join(name)).unwrap();
            let hta =
                std::fs::read_to_string(shared.join("hta-expected").join(set).join(name)).unwrap();
            assert_eq!(ours, hta, "{set}/{name}");
        }
    }
}

#[test]
fn every_shared_trace_reads_without_error() {
    let Some(shared) = shared() else { return };
    let folders = [
        "amd_trace",
        "cpu_only",
        "mtia_inference_trace",
        "rank_unavailable",
        "distributed_info_unavailable",
        "trace_file_list",
    ];
    for folder in folders {
        let assert = pinch()
            .arg("analyze")
            .arg(shared.join("traces").join(folder))
            .assert()
            .success();
        let out = stdout_of(&assert);
        assert!(out.contains("Kineto traces: 1 rank"), "{folder}");
        assert!(out.contains("pinch's analyses"), "{folder}");
    }
}

#[test]
fn nccl_parser_config_all_reduces_have_sizes_and_bus_bandwidth() {
    let Some(shared) = shared() else { return };
    let report = analyze_json(shared.join("traces/nccl_parser_config"));
    let collectives = report["pinch"]["collectives"].as_array().unwrap();
    let all_reduces: Vec<&serde_json::Value> = collectives
        .iter()
        .filter(|c| c["kind"] == "all_reduce")
        .collect();
    assert!(!all_reduces.is_empty(), "{collectives:#?}");
    for c in all_reduces {
        // The trace's all-reduces are of 2.0 to 7.9 M floats on the 2-rank default group.
        assert!(c["message_bytes"].as_u64().unwrap() >= 8_000_000, "{c}");
        assert_eq!(c["participants"], 2, "{c}");
        assert!(c["busbw_gbps"].as_f64().is_some_and(|bw| bw > 0.0), "{c}");
    }
    let text = pinch()
        .arg("analyze")
        .arg(shared.join("traces/nccl_parser_config"))
        .assert()
        .success();
    let out = stdout_of(&text);
    assert!(out.contains("read from the kernels' args"), "{out}");
    assert!(!out.contains("is unknown"), "{out}");
}

#[test]
fn pinchs_own_analyses_follow_the_hta_tables() {
    let dir = job();
    let assert = pinch().arg("analyze").arg(dir.path()).assert().success();
    let out = stdout_of(&assert);
    // pinch keeps the second step: span 0..370 us, of which compute 150, communication 30
    // (the NCCL kernel outside the sgemm), memory 20, idle 170.
    for want in [
        "pinch's analyses",
        "370.0 µs",
        "40.5%",
        "45.9%",
        "all_reduce",
        "A size shown as \"?\" is unknown",
        "the GPU runs no kernel, copy or fill on any stream for 46% of the kernel span on every rank",
        "Not judged on Kineto traces",
    ] {
        assert!(out.contains(want), "'{want}' missing from:\n{out}");
    }
    let report = analyze_json(dir.path());
    let pinch = &report["pinch"];
    assert_eq!(pinch["ranks"][1]["breakdown_ns"]["compute"], 150_000);
    assert_eq!(pinch["ranks"][1]["breakdown_ns"]["idle"], 170_000);
    assert_eq!(pinch["collectives"][0]["kind"], "all_reduce");
    assert_eq!(
        pinch["collectives"][0]["count"], 1,
        "matched across the ranks"
    );
    assert_eq!(pinch["stragglers"]["collectives"], 1);
    assert_eq!(pinch["findings"][0]["kind"], "idle");
    assert_eq!(pinch["lanes"][0]["kind"], "device");
    assert!(
        pinch["skipped_detectors"]
            .as_array()
            .is_some_and(|s| !s.is_empty())
    );
}

/// HTA's per-rank (idle %, compute %, non-compute %) from its temporal_breakdown.csv.
fn hta_temporal(csv: &str) -> Vec<(f64, f64, f64)> {
    csv.lines()
        .skip(1)
        .map(|line| {
            let cells: Vec<f64> = line.split(',').filter_map(|c| c.parse().ok()).collect();
            (cells[5], cells[6], cells[7])
        })
        .collect()
}

#[test]
fn pinchs_breakdown_agrees_with_hta_within_a_few_points() {
    let Some(shared) = shared() else { return };
    let sets = [
        ("trace_filter", "trace_filter"),
        ("nccl_parser_config", "nccl_parser_config"),
        ("ns_resolution_trace", "ns_resolution_trace"),
        ("alexnet", "critical_path/alexnet"),
    ];
    for (set, folder) in sets {
        let report = analyze_json(shared.join("traces").join(folder));
        let csv = shared
            .join("hta-expected")
            .join(set)
            .join("temporal_breakdown.csv");
        let hta = hta_temporal(&std::fs::read_to_string(csv).unwrap());
        let ranks = report["pinch"]["ranks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(ranks.len(), hta.len(), "{set}");
        for (rank, (idle, compute, non_compute)) in ranks.iter().zip(hta) {
            let b = &rank["breakdown_pct"];
            let pct = |k: &str| b[k].as_f64().unwrap();
            let ours_non_compute = pct("communication") + pct("memory") + pct("wait");
            for (what, ours, theirs) in [
                ("idle", pct("idle"), idle),
                ("compute", pct("compute"), compute),
                ("non-compute", ours_non_compute, non_compute),
            ] {
                assert!(
                    (ours - theirs).abs() <= 3.0,
                    "{set} rank {}: {what} {ours:.2}% against HTA's {theirs:.2}%",
                    rank["rank"]
                );
            }
        }
        assert!(report["pinch"]["findings"].is_array(), "{set}");
    }
}

/// Two ranks, three steps: a compute kernel of `rank1_compute_us` on rank 1 (100 us on rank 0),
/// then an all-reduce kernel on stream 13 that ends for both at 350 us into the step.
fn straggling_trace(rank: u32, compute_us: u32) -> String {
    let mut events = Vec::new();
    for step in 0..3u32 {
        let t0 = 1_000 + step * 1_000;
        let arrive = t0 + compute_us;
        events.push(format!(
            r#"{{"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#{step}", "pid": 1, "tid": 1, "ts": {}, "dur": 1000}}"#,
            t0 - 10
        ));
        for (stream, name, ts, dur, extra) in [
            (7, "volta_sgemm_128x64_nn", t0, compute_us, ""),
            (
                13,
                "ncclDevKernel_AllReduce_Sum_f32_RING_LL",
                arrive,
                t0 + 350 - arrive,
                r#", "Collective name": "allreduce""#,
            ),
        ] {
            events.push(format!(
                r#"{{"ph": "X", "cat": "kernel", "name": "{name}", "pid": 0, "tid": {stream}, "ts": {ts}, "dur": {dur}, "args": {{"stream": {stream}, "device": 0{extra}}}}}"#
            ));
        }
    }
    format!(
        r#"{{"distributedInfo": {{"backend": "nccl", "rank": {rank}, "world_size": 2}}, "traceEvents": [{}]}}"#,
        events.join(",\n")
    )
}

/// Regression (issue 5): a collective whose kernels carry no size args has no size, not 0 B,
/// and no bandwidths.
#[test]
fn an_nccl_kernel_without_size_args_has_a_null_size_and_no_bandwidth() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    write(dir.path(), "rank0.json", &straggling_trace(0, 100));
    write(dir.path(), "rank1.json", &straggling_trace(1, 100));
    let report = analyze_json(dir.path());
    let c = &report["pinch"]["collectives"][0];
    assert_eq!(c["kind"], "all_reduce", "{c}");
    for field in [
        "message_bytes",
        "size_class_bytes",
        "algbw_gbps",
        "busbw_gbps",
    ] {
        assert!(c[field].is_null(), "{field} in {c}");
    }
    let text = pinch().arg("analyze").arg(dir.path()).assert().success();
    let out = stdout_of(&text);
    assert!(out.contains("┆    ? ┆"), "{out}");
    assert!(!out.contains("0 B"), "{out}");
}

fn pinch_findings(rank1_compute_us: u32) -> serde_json::Value {
    let dir = tempfile::tempdir().expect("a temporary directory");
    write(dir.path(), "rank0.json", &straggling_trace(0, 100));
    write(
        dir.path(),
        "rank1.json",
        &straggling_trace(1, rank1_compute_us),
    );
    let report = analyze_json(dir.path());
    report["pinch"]["findings"].clone()
}

#[test]
fn a_rank_computing_three_times_as_long_is_the_straggler_at_the_all_reduces() {
    let findings = pinch_findings(300);
    let stragglers: Vec<&serde_json::Value> = findings
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["kind"] == "straggler")
        .collect();
    assert_eq!(stragglers.len(), 1, "{findings:#}");
    assert_eq!(stragglers[0]["location"]["ranks"], serde_json::json!([1]));
    assert_eq!(stragglers[0]["evidence"]["times_last"], 3.0);
    let balanced = pinch_findings(100);
    assert!(
        balanced
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["kind"] != "straggler"),
        "{balanced:#}"
    );
}
