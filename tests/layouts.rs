//! End-to-end: every parallel strategy serves the same request stream, reports serving metrics
//! and per-rank breakdowns, and (for the dense layouts) generates the same tokens.

// Test helpers panic with the value in view, as the tests themselves do.
#![allow(clippy::unwrap_used)]

mod common;

use common::{report_json, run};
use serde_json::Value;
use std::path::Path;

/// Runs `layout` and checks the report has serving metrics and one breakdown per rank.
fn serve(dir: &Path, name: &str, extra: &[&str], ranks: usize) -> Value {
    let out = dir.join(name);
    run(&out, extra).success();
    let report = report_json(&out);
    let serving = &report["serving"];
    assert_eq!(serving["requests"], 6, "{name}: {serving}");
    for metric in ["ttft", "tpot", "itl", "e2e"] {
        assert!(
            serving[metric]["p99_ms"].as_f64().is_some_and(|v| v > 0.0),
            "{name}: {metric} in {serving}"
        );
    }
    assert!(serving["output_token_throughput_per_s"].as_f64().unwrap() > 0.0);
    let reported = report["ranks"].as_array().unwrap();
    assert_eq!(reported.len(), ranks, "{name}: one breakdown per rank");
    for rank in reported {
        assert!(
            rank["breakdown_pct"]["compute"].as_f64().unwrap() > 0.0,
            "{name}: {rank}"
        );
    }
    report
}

fn digest(report: &Value) -> Value {
    report["serving"]["outputs_digest"].clone()
}

#[test]
fn dense_layouts_serve_the_same_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let tp = serve(dir.path(), "tp2", &["--parallel=tp=2"], 2);
    let dp = serve(
        dir.path(),
        "dp2",
        &["--parallel=dp=2", "--route=least-tokens"],
        2,
    );
    let pp = serve(dir.path(), "pp2", &["--parallel=pp=2"], 2);
    let tp_pp = serve(dir.path(), "tp2pp2", &["--parallel=tp=2,pp=2"], 4);
    assert_eq!(digest(&tp), digest(&dp));
    assert_eq!(digest(&tp), digest(&pp));
    assert_eq!(digest(&tp), digest(&tp_pp));
    let per_replica = dp["serving"]["per_replica"].as_array().unwrap();
    assert_eq!(
        per_replica.len(),
        2,
        "both replicas served: {per_replica:?}"
    );
    let kinds = |r: &Value| r["collectives"].to_string();
    assert!(
        kinds(&pp).contains("send"),
        "pipeline stages send: {}",
        kinds(&pp)
    );
    let findings = |r: &Value| r["findings"].to_string();
    assert!(
        findings(&pp).contains("\"pipeline_bubble\""),
        "two stages wait for each other: {}",
        findings(&pp)
    );
    assert!(!findings(&tp).contains("\"pipeline_bubble\""));
}

#[test]
fn expert_parallel_moe_serves_with_all_to_all() {
    let dir = tempfile::tempdir().unwrap();
    let ep = serve(
        dir.path(),
        "ep2",
        &["--parallel=ep=2", "--model=moe-tiny"],
        2,
    );
    let collectives = ep["collectives"].to_string();
    assert!(collectives.contains("all_to_all"), "{collectives}");
    let tp = serve(
        dir.path(),
        "moe-tp2",
        &["--parallel=tp=2", "--model=moe-tiny"],
        2,
    );
    assert!(tp["serving"]["outputs_digest"].is_string());
}
