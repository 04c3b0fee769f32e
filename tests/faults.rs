//! End-to-end: bad input exits 2 with one line naming the value; a crashed rank leaves a run
//! that `pinch analyze` still reports on.

mod common;

use common::{pinch, report_json, run, stderr_of};

fn fails_with_code_2(args: &[&str], names: &str) {
    let assert = pinch().args(args).assert().code(2);
    let stderr = stderr_of(&assert);
    assert!(stderr.contains(names), "stderr names '{names}':\n{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line:\n{stderr}");
}

#[test]
fn unknown_preset_is_named() {
    fails_with_code_2(&["run", "--model=enormous"], "enormous");
}

#[test]
fn tp_degree_that_does_not_divide_the_heads_is_named() {
    fails_with_code_2(&["run", "--nodes=1", "--parallel=tp=3"], "'3'");
}

#[test]
fn injected_crash_outside_the_run_is_named() {
    fails_with_code_2(&["run", "--crash-rank=5", "--crash-at-step=2"], "'5'");
    fails_with_code_2(&["run", "--crash-rank=1", "--crash-at-step=0"], "'0'");
    fails_with_code_2(&["run", "--slow-rank=1=0.5"], "'0.5'");
    fails_with_code_2(&["run", "--link-delay=0-7=2ms"], "'7'");
    fails_with_code_2(&["run", "--link-rate=0-1=fast"], "'fast'");
    fails_with_code_2(&["run", "--pin-rank=0=x"], "'x'");
    fails_with_code_2(&["run", "--pin-rank=0=4096"], "'4096'");
    fails_with_code_2(&["run", "--expert-skew=1.5"], "'tiny'");
}

#[test]
fn layout_that_does_not_fit_is_named() {
    fails_with_code_2(&["run", "--nodes=0"], "'0'");
    fails_with_code_2(&["run", "--nodes=4", "--parallel=tp=2"], "'4'");
    fails_with_code_2(&["run", "--parallel=tp=2,ep=2", "--model=moe-tiny"], "tp=2");
    fails_with_code_2(&["run", "--parallel=ep=2"], "'tiny'");
    fails_with_code_2(&["run", "--parallel=pp=99"], "'99'");
    fails_with_code_2(&["run", "--parallel=zz=2"], "'zz'");
    fails_with_code_2(&["run", "--metrics-addr=0.0.0.0:9400"], "'0.0.0.0:9400'");
    fails_with_code_2(&["run", "--sample-hz=0"], "'0'");
    fails_with_code_2(&["run", "--counters=procfs,gpu=10"], "'gpu'");
    fails_with_code_2(&["run", "--counters=perf=5000"], "'5000'");
    fails_with_code_2(&["run", "--counters=perf,perf"], "'perf'");
    fails_with_code_2(
        &["run", "--counters=none", "--metrics-addr=127.0.0.1:9400"],
        "'--counters none'",
    );
}

#[test]
fn missing_run_directory_is_named() {
    fails_with_code_2(
        &["analyze", "/nonexistent/pinch-run"],
        "/nonexistent/pinch-run",
    );
}

#[test]
fn node_log_of_an_unknown_version_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    run(&out, &["--nodes=1", "--parallel=tp=1"]).success();
    let log = out.join("node-0.pnl");
    let mut bytes = std::fs::read(&log).unwrap();
    bytes[8..12].copy_from_slice(&9u32.to_le_bytes());
    std::fs::write(&log, bytes).unwrap();
    fails_with_code_2(&["analyze", out.to_str().unwrap()], "'9'");
}

#[test]
fn a_rank_that_dies_is_named_and_the_run_stays_readable() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let assert = run(&out, &["--crash-rank=1", "--crash-at-step=2"]).failure();
    let stderr = stderr_of(&assert);
    assert!(
        stderr.contains("rank 1"),
        "the dead rank is named:\n{stderr}"
    );
    assert!(out.join("node-0.pnl").is_file() && out.join("node-1.pnl").is_file());

    let analyzed = pinch()
        .arg("analyze")
        .arg(&out)
        .arg("--json")
        .assert()
        .success();
    let report: serde_json::Value = serde_json::from_slice(&analyzed.get_output().stdout).unwrap();
    let incomplete = report["run"]["incomplete"].to_string();
    assert!(
        incomplete.contains("rank 1"),
        "the report says rank 1 is incomplete: {incomplete}"
    );
    assert_eq!(
        report["ranks"].as_array().map(Vec::len),
        Some(2),
        "both ranks still reported"
    );
    assert_eq!(
        report_json(&out)["run"]["incomplete"],
        report["run"]["incomplete"]
    );
}

#[test]
fn every_subcommand_has_help() {
    let subs = [
        &["--help"][..],
        &["run", "--help"],
        &["analyze", "--help"],
        &["presets", "--help"],
        &["bench", "collectives", "--help"],
        &["bench", "decode", "--help"],
    ];
    for sub in subs {
        let assert = pinch().args(sub).assert().success();
        let text = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
        assert!(text.contains("Usage"), "{sub:?}:\n{text}");
    }
}
