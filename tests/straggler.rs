//! End-to-end: a rank slowed by the fault knob (`--slow-rank`) is reported as a straggler on that
//! rank, and the waiting it causes is not blamed on communication; the same run unslowed has no
//! straggler.

mod common;

use common::{report_json, run};
use serde_json::Value;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

/// The two runs take turns: the slowed rank spins, and run beside the unslowed one on a small
/// host it would make a real straggler of one of its ranks.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The findings of one kind.
fn findings_of(report: &Value, kind: &str) -> Vec<Value> {
    let findings = report["findings"].as_array().cloned().unwrap_or_default();
    findings.into_iter().filter(|f| f["kind"] == kind).collect()
}

#[test]
fn a_rank_slowed_three_times_is_the_straggler() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    run(&out, &["--slow-rank=1=3"]).success();
    let report = report_json(&out);
    let stragglers = findings_of(&report, "straggler");
    assert_eq!(stragglers.len(), 1, "{:#}", report["findings"]);
    assert_eq!(stragglers[0]["location"]["ranks"], serde_json::json!([1]));
    let summary = stragglers[0]["summary"].as_str().unwrap_or_default();
    assert!(summary.starts_with("rank 1 arrives last at "), "{summary}");
    let ranks = report["stragglers"]["ranks"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let cost = |rank: u64| {
        let r = ranks.iter().find(|r| r["rank"] == rank);
        r.and_then(|r| r["cost_to_others_ns"].as_u64()).unwrap_or(0)
    };
    assert!(cost(1) > 2 * cost(0), "{ranks:#?}");
    for comm in findings_of(&report, "communication_bound") {
        let blamed = comm["location"]["ranks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert!(
            !blamed.contains(&Value::from(0)),
            "rank 0's waiting for rank 1 is not communication: {comm:#?}"
        );
    }
}

#[test]
fn the_same_run_unslowed_has_no_straggler() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    run(&out, &[]).success();
    let report = report_json(&out);
    let stragglers = findings_of(&report, "straggler");
    assert!(stragglers.is_empty(), "{stragglers:#?}");
    assert!(report["stragglers"]["collectives"].as_u64() > Some(0));
}

/// Runs `work` while two threads spin, one per core of a 2-core host: a busy host.
fn under_busy_loops<T>(work: impl FnOnce() -> T) -> T {
    static STOP: AtomicBool = AtomicBool::new(false);
    STOP.store(false, Ordering::Relaxed);
    let spinners: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(|| {
                while !STOP.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let out = work();
    STOP.store(true, Ordering::Relaxed);
    for s in spinners {
        assert!(s.join().is_ok(), "a busy loop panicked");
    }
    out
}

#[test]
fn issue_5_the_unslowed_run_on_a_busy_host_has_no_straggler() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    under_busy_loops(|| run(&out, &[]).success());
    let report = report_json(&out);
    let stragglers = findings_of(&report, "straggler");
    assert!(
        stragglers.iter().all(|f| f["level"] == "info"),
        "{stragglers:#?}"
    );
    // The ranks wait for each other while the host runs them by turns: that waiting is the
    // host's, not the links'.
    let waiting = findings_of(&report, "communication_bound");
    assert!(waiting.iter().all(|f| f["level"] == "info"), "{waiting:#?}");
}
