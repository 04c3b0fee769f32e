//! End-to-end: `pinch run` reports the run's phases with each node's CPU utilization over them,
//! and each rank's idle time by cause.

mod common;

use common::{report_json, run, stdout_of};
use serde_json::Value;

fn phase<'a>(report: &'a Value, kind: &str) -> Option<&'a Value> {
    report["phases"]
        .as_array()?
        .iter()
        .find(|p| p["kind"] == kind)
}

#[test]
fn a_served_run_has_startup_prefill_and_decode_phases_with_cpu_utilization() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let assert = run(&out, &[]).success();
    let printed = stdout_of(&assert);
    assert!(printed.contains("Phases,"), "{printed}");
    assert!(printed.contains("Idle time per rank"), "{printed}");
    let report = report_json(&out);
    assert_eq!(report["schema_version"], 6);
    for kind in ["startup", "prefill", "decode"] {
        assert!(
            phase(&report, kind).is_some(),
            "no {kind} phase: {}",
            report["phases"]
        );
    }
    let decode = phase(&report, "decode").unwrap();
    assert!(decode["steps"].as_u64().unwrap() > 0, "{decode}");
    let nodes = decode["nodes"].as_array().unwrap();
    assert_eq!(nodes.len(), 2);
    for node in nodes {
        let cpu = node["cpu_utilization_pct"].as_f64();
        assert!(cpu.is_some_and(|c| c > 0.0 && c <= 100.0), "{node}");
        assert!(node["memory_bandwidth_missing"].is_string(), "{node}");
    }
    let shares: f64 = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["share_pct"].as_f64().unwrap())
        .sum();
    assert!(
        (shares - 100.0).abs() < 0.01,
        "phases cover the run: {shares}"
    );
    for rank in report["ranks"].as_array().unwrap() {
        let idle = &rank["idle_breakdown"];
        let parts: u64 = ["peer_ns", "host_ns", "requests_ns", "other_ns"]
            .iter()
            .map(|k| idle[*k].as_u64().unwrap())
            .sum();
        assert_eq!(parts, idle["idle_ns"].as_u64().unwrap(), "{idle}");
        assert!(
            idle["peer_ns"].as_u64().unwrap() > 0,
            "TP ranks wait for each other: {idle}"
        );
    }
}
