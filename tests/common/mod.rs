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
