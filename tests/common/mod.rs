//! Helpers shared by the end-to-end tests: running the real `pinch` binary on small workloads.

#![allow(dead_code)]

use assert_cmd::Command;
use serde_json::Value;
use std::path::Path;

/// A workload small enough for a debug build: a few seconds per run.
pub const SMALL: &[&str] = &[
    "--requests=6",
    "--concurrency=3",
    "--prompt-len=8",
    "--output-len=6",
    "--sample-hz=50",
];

pub fn pinch() -> Command {
    let mut cmd = Command::cargo_bin("pinch").expect("the pinch binary is built");
    cmd.timeout(std::time::Duration::from_secs(300));
    cmd
}

/// Runs `pinch run` with the small workload plus `extra`, into `out`.
pub fn run(out: &Path, extra: &[&str]) -> assert_cmd::assert::Assert {
    pinch()
        .arg("run")
        .args(SMALL)
        .args(extra)
        .arg("--out")
        .arg(out)
        .assert()
}

pub fn report_json(run_dir: &Path) -> Value {
    let text =
        std::fs::read_to_string(run_dir.join("report.json")).expect("report.json is written");
    serde_json::from_str(&text).expect("report.json is JSON")
}

pub fn stderr_of(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stderr).into_owned()
}

pub fn stdout_of(assert: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&assert.get_output().stdout).into_owned()
}

/// A Kineto trace of one rank: on stream 7 a computation kernel [0, 100) us, then a copy
/// [200, 220) us launched at 160 us, after the kernel before it ended; on stream 9 an NCCL
/// kernel [40, 130) us. Two ProfilerSteps, the second launching one more kernel, which HTA's
/// clean-up drops.
pub fn kineto_trace(rank: Option<u32>, world_size: u32) -> String {
    let info = match rank {
        Some(r) => format!(
            r#""distributedInfo": {{"backend": "nccl", "rank": {r}, "world_size": {world_size}}},"#
        ),
        None => String::new(),
    };
    let kernel = |cat: &str, name: &str, stream: u32, ts: u32, dur: u32, corr: u32| {
        format!(
            r#"{{"ph": "X", "cat": "{cat}", "name": "{name}", "pid": 0, "tid": {stream}, "ts": {ts}, "dur": {dur}, "args": {{"stream": {stream}, "device": 0, "correlation": {corr}}}}}"#
        )
    };
    let launch = |ts: u32, corr: u32| {
        format!(
            r#"{{"ph": "X", "cat": "cuda_runtime", "name": "cudaLaunchKernel", "pid": 1, "tid": 1, "ts": {ts}, "dur": 2, "args": {{"correlation": {corr}}}}}"#
        )
    };
    let events = [
        r#"{"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#1", "pid": 1, "tid": 1, "ts": 0, "dur": 300}"#.to_string(),
        r#"{"ph": "X", "cat": "user_annotation", "name": "ProfilerStep#2", "pid": 1, "tid": 1, "ts": 300, "dur": 100}"#.to_string(),
        launch(0, 1),
        launch(1, 2),
        launch(160, 3),
        launch(310, 4),
        kernel("kernel", "volta_sgemm_128x64_nn", 7, 0, 100, 1),
        kernel("kernel", "ncclDevKernel_AllReduce_Sum_f32_RING_LL", 9, 40, 90, 2),
        kernel("gpu_memcpy", "Memcpy DtoD (Device -> Device)", 7, 200, 20, 3),
        kernel("kernel", "volta_sgemm_128x64_nn", 7, 320, 50, 4),
        r#"{"ph": "s", "cat": "ac2g", "id": 1, "pid": 1, "tid": 1, "ts": 0}"#.to_string(),
        r#"{"ph": "M", "name": "process_name", "pid": 1, "tid": 0, "args": {"name": "python"}}"#.to_string(),
    ];
    format!(
        r#"{{"schemaVersion": 1, {info} "traceEvents": [{}]}}"#,
        events.join(",\n")
    )
}
