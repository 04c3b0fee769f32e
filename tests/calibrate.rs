//! End-to-end: `pinch calibrate --quick` measures, stores the result under PINCH_CACHE_DIR,
//! prints it from the cache on the next call, and measures again with `--fresh`.

mod common;

use common::pinch;
use serde_json::Value;
use std::path::Path;

/// Runs `pinch calibrate --quick` with `extra` against the cache in `dir`; stdout and stderr.
fn calibrate(dir: &Path, extra: &[&str]) -> (String, String) {
    let assert = pinch()
        .env("PINCH_CACHE_DIR", dir)
        .args(["calibrate", "--quick"])
        .args(extra)
        .assert()
        .success();
    let out = assert.get_output();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_second_call_prints_the_cached_result_and_fresh_measures_again() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (first, progress) = calibrate(dir.path(), &[]);
    assert!(first.contains("stored in"), "{first}");
    assert!(
        progress.contains("measuring link ping-pong (tcp)"),
        "{progress}"
    );
    for needle in [
        "triad",
        "bf16",
        "shm half RTT",
        "tcp GB/s",
        "64.0 KiB",
        "GPUs",
    ] {
        assert!(first.contains(needle), "{needle} missing from\n{first}");
    }
    let files: Vec<_> = std::fs::read_dir(dir.path().join("calibration"))
        .expect("the calibration dir")
        .collect();
    assert_eq!(files.len(), 1, "one file per host");

    let (second, _) = calibrate(dir.path(), &[]);
    assert!(second.starts_with("cached: measured at"), "{second}");

    let (json, note) = calibrate(dir.path(), &["--json"]);
    assert!(note.contains("cached"), "{note}");
    let cached: Value = serde_json::from_str(&json).expect("stdout is JSON");
    assert_eq!(cached["quick"], true);
    assert_eq!(cached["links"][1]["transport"], "tcp");
    // GPU ceilings, or the reason there are none (no driver, no device, no cuda feature).
    let gpus = &cached["gpus"];
    assert!(
        gpus["measured"].is_array() || gpus["not_measured"].is_string(),
        "{gpus}"
    );

    let (fresh, progress) = calibrate(dir.path(), &["--fresh", "--json"]);
    assert!(
        progress.contains("measuring memory bandwidth"),
        "{progress}"
    );
    let fresh: Value = serde_json::from_str(&fresh).expect("stdout is JSON");
    assert_eq!(fresh["host_key"], cached["host_key"]);
    assert!(fresh["memory"]["triad_gbps"]["one_thread"].as_f64() > Some(0.0));
}
