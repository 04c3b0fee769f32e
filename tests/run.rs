//! End-to-end: `pinch run` on two local nodes, then `pinch analyze` on what it stored.

mod common;

use common::{pinch, report_json, run, stdout_of};
use serde_json::Value;

fn breakdown_sum(rank: &Value) -> f64 {
    let b = &rank["breakdown_pct"];
    ["compute", "communication", "memory", "host", "wait", "idle"]
        .iter()
        .map(|k| {
            b[*k]
                .as_f64()
                .unwrap_or_else(|| panic!("breakdown_pct.{k} missing in {b}"))
        })
        .sum()
}

#[test]
fn default_layout_records_two_nodes_and_reports_every_rank() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let assert = run(&out, &[]).success();
    let printed = stdout_of(&assert);
    assert!(
        printed.contains("rank"),
        "the report is printed:\n{printed}"
    );

    for file in ["manifest.json", "node-0.pnl", "node-1.pnl", "report.json"] {
        assert!(out.join(file).is_file(), "{file} is stored");
    }
    let report = report_json(&out);
    let ranks = report["ranks"].as_array().unwrap();
    assert_eq!(ranks.len(), 2);
    for rank in ranks {
        let sum = breakdown_sum(rank);
        assert!((sum - 100.0).abs() <= 1.0, "shares add to {sum}: {rank}");
        assert!(rank["wall_ns"].as_u64().unwrap() > 0);
        assert!(rank["breakdown_pct"]["communication"].as_f64().unwrap() > 0.0);
        assert_eq!(
            rank["dropped_spans"], 0,
            "a known zero, not a missing count"
        );
    }
    let nodes: Vec<u64> = ranks.iter().map(|r| r["node"].as_u64().unwrap()).collect();
    assert_eq!(nodes, vec![0, 1], "TP=2 over 2 nodes puts one rank on each");
    let collectives = report["collectives"].as_array().unwrap();
    assert!(
        collectives.iter().any(|c| c["kind"] == "all_reduce"),
        "{collectives:?}"
    );

    let again = pinch()
        .arg("analyze")
        .arg(&out)
        .arg("--json")
        .assert()
        .success();
    let analyzed: Value = serde_json::from_str(&stdout_of(&again)).unwrap();
    assert_eq!(
        analyzed, report,
        "analyze --json gives the numbers the run printed"
    );
}

#[test]
fn tp1_tp2_and_tp4_generate_the_same_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let one = dir.path().join("tp1");
    let two = dir.path().join("tp2");
    let four = dir.path().join("tp4");
    run(&one, &["--nodes=1", "--parallel=tp=1", "--seed=7"]).success();
    run(&two, &["--nodes=2", "--parallel=tp=2", "--seed=7"]).success();
    run(&four, &["--nodes=2", "--parallel=tp=4", "--seed=7"]).success();
    let digest = |d: &std::path::Path| report_json(d)["serving"]["outputs_digest"].clone();
    assert!(digest(&one).is_string(), "{}", digest(&one));
    assert_eq!(digest(&one), digest(&two));
    assert_eq!(digest(&one), digest(&four));
    let placed: Vec<(u64, u64)> = report_json(&four)["ranks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["rank"].as_u64().unwrap(), r["node"].as_u64().unwrap()))
        .collect();
    assert_eq!(
        placed,
        vec![(0, 0), (1, 0), (2, 1), (3, 1)],
        "ranks placed node-major"
    );
}

/// Every source appears in the manifest for every node, read (with its counters) or not (with
/// why); each source is sampled at its own rate.
#[test]
fn counter_sources_are_listed_with_their_reasons_and_rates() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    run(&out, &["--counters=procfs=200,perf=20,nvml"]).success();
    let text = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    let manifest: Value = serde_json::from_str(&text).unwrap();
    let sources = manifest["counter_sources"].as_array().unwrap();
    let state = |node: u64, source: &str| -> Value {
        let found = sources
            .iter()
            .find(|s| s["node"] == node && s["source"] == source)
            .unwrap_or_else(|| panic!("node {node} lists {source}: {sources:?}"));
        found["state"].clone()
    };
    for node in [0, 1] {
        let procfs = &state(node, "procfs")["read"]["counters"];
        assert!(
            procfs
                .as_array()
                .unwrap()
                .contains(&"cpu.utilization".into())
        );
        let perf = state(node, "perf");
        let perf_counters = &perf["read"]["counters"];
        assert!(
            perf_counters
                .as_array()
                .unwrap()
                .contains(&"perf.task_clock_ratio".into()),
            "the software events are always offered: {perf}"
        );
        let nvml = state(node, "nvml");
        assert!(
            nvml.get("read").is_some() || nvml["not_read"]["reason"].as_str().unwrap().len() > 10,
            "{nvml}"
        );
        assert_eq!(
            state(node, "infiniband")["not_read"]["reason"],
            "not asked for (--counters)"
        );
    }
    assert_eq!(
        manifest["workload"]["parameters"]["counters"], "procfs=200,perf=20,nvml=50",
        "nvml takes --sample-hz"
    );
}
