//! End-to-end: expert routing skewed by the fault knob (`--expert-skew`) on an expert-parallel
//! MoE run is reported as expert load imbalance naming the hot expert and the rank holding it;
//! the same run unskewed has no imbalance finding above info. Both report the expert counts.
//! A pipeline-parallel run with one stage slowed (`--slow-rank`) is reported as a pipeline
//! bubble on the other stage, naming the slow one; the same run unslowed has no bubble finding
//! above info.

// Test helpers panic with the value in view, as the tests themselves do.
#![allow(clippy::unwrap_used)]

mod common;

use common::{report_json, run, stdout_of};
use serde_json::Value;
use std::sync::Mutex;

/// The two runs take turns so each has the small host to itself.
static ONE_RUN_AT_A_TIME: Mutex<()> = Mutex::new(());

const MOE_EP2: &[&str] = &["--parallel=ep=2", "--model=moe-tiny"];

fn findings_of(report: &Value, kind: &str) -> Vec<Value> {
    let findings = report["findings"].as_array().cloned().unwrap_or_default();
    findings.into_iter().filter(|f| f["kind"] == kind).collect()
}

/// The expert-load findings (those that name experts).
fn expert_findings(report: &Value) -> Vec<Value> {
    findings_of(report, "load_imbalance")
        .into_iter()
        .filter(|f| {
            f["location"]["experts"]
                .as_array()
                .is_some_and(|e| !e.is_empty())
        })
        .collect()
}

/// Runs the EP=2 MoE workload with `extra`, prints its imbalance lines, returns report.json.
fn moe_run(extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args: Vec<&str> = MOE_EP2.iter().chain(extra).copied().collect();
    let text = stdout_of(&run(&out, &args).success());
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Expert load") || l.contains("over experts") || l.contains("expert"))
        .collect();
    println!("{}", lines.join("\n"));
    report_json(&out)
}

#[test]
fn skewed_routing_names_the_hot_expert_and_its_rank() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let report = moe_run(&["--expert-skew=1.5"]);
    let experts = &report["imbalance"]["experts"];
    assert_eq!(experts["experts"], 8, "{experts:#}");
    let findings = expert_findings(&report);
    assert_eq!(findings.len(), 1, "{findings:#?}");
    let f = &findings[0];
    // The skew favours low expert ids: expert 0 is the hottest, held by rank 0 (experts 0-3).
    assert_eq!(f["location"]["experts"][0], 0, "{f:#}");
    assert_eq!(f["location"]["ranks"], serde_json::json!([0]), "{f:#}");
    assert!(f["level"] != "info", "{f:#}");
    let ratio = f["evidence"]["max_to_mean_ratio"].as_f64().unwrap_or(0.0);
    assert!(ratio >= 1.5, "{f:#}");
    let per_rank = experts["per_rank"].as_array().cloned().unwrap_or_default();
    let tokens = |rank: u64| {
        let r = per_rank.iter().find(|r| r["rank"] == rank);
        r.and_then(|r| r["tokens"].as_u64()).unwrap_or(0)
    };
    assert!(tokens(0) > tokens(1), "{per_rank:#?}");
}

#[test]
fn even_routing_has_no_expert_imbalance() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let report = moe_run(&[]);
    let experts = &report["imbalance"]["experts"];
    assert!(
        experts["expert_tokens"]["mean"].as_f64() > Some(0.0),
        "{experts:#}"
    );
    let loud: Vec<Value> = findings_of(&report, "load_imbalance")
        .into_iter()
        .filter(|f| f["level"] != "info")
        .collect();
    assert!(loud.is_empty(), "{loud:#?}");
    let replicas = &report["imbalance"]["replicas"]["per_replica"];
    assert_eq!(replicas.as_array().map(Vec::len), Some(2), "{replicas:#}");
    assert!(
        replicas[0]["queue_ns_mean"].as_f64().is_some(),
        "{replicas:#}"
    );
}

/// Runs pp=2 (one rank per stage) with `extra`, prints its bubble findings, returns report.json.
fn pipeline_run(extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let args: Vec<&str> = ["--parallel=pp=2"].iter().chain(extra).copied().collect();
    run(&out, &args).success();
    let report = report_json(&out);
    for f in findings_of(&report, "pipeline_bubble") {
        println!("[{}] {}", f["level"], f["summary"]);
    }
    report
}

#[test]
fn a_slow_stage_leaves_the_other_in_a_bubble_that_names_it() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let report = pipeline_run(&["--slow-rank=1=3"]);
    let stages = report["imbalance"]["stages"].as_array().cloned().unwrap();
    assert_eq!(stages.len(), 2, "{stages:#?}");
    assert!(stages[0]["micro_batches"].as_u64() > Some(0), "{stages:#?}");
    let loud: Vec<Value> = findings_of(&report, "pipeline_bubble")
        .into_iter()
        .filter(|f| f["level"] != "info")
        .collect();
    let [f] = &loud[..] else {
        panic!("one stage's bubble asks for action: {loud:#?}")
    };
    assert_eq!(f["location"]["ranks"], serde_json::json!([0]), "{f:#}");
    assert_eq!(f["evidence"]["stage"], 0.0, "{f:#}");
    assert_eq!(f["evidence"]["slowest_stage"], 1.0, "{f:#}");
    assert!(f["evidence"]["micro_batches"].as_f64() > Some(0.0), "{f:#}");
    let summary = f["summary"].as_str().unwrap_or_default();
    assert!(summary.starts_with("pipeline stage 0 (rank 0)"), "{f:#}");
    assert!(summary.contains("stage 1 computes"), "{f:#}");
    let suggestion = f["suggestion"].as_str().unwrap_or_default();
    assert!(
        suggestion.contains("move layers from stage 1 to stage 0"),
        "{f:#}"
    );
}

#[test]
fn a_balanced_pipeline_has_no_bubble_finding_above_info() {
    let _turn = ONE_RUN_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let report = pipeline_run(&[]);
    let bubbles = findings_of(&report, "pipeline_bubble");
    let loud: Vec<&Value> = bubbles.iter().filter(|f| f["level"] != "info").collect();
    assert!(loud.is_empty(), "{loud:#?}");
    // The per-rank finding gives way to the stage findings: none names a rank alone.
    assert!(
        bubbles.iter().all(|f| f["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("pipeline stage"))),
        "{bubbles:#?}"
    );
    // A host-bound finding, where the run is one, says in which phase the host time lies.
    for f in findings_of(&report, "host_bound") {
        let summary = f["summary"].as_str().unwrap_or_default();
        assert!(summary.contains("; host time concentrates in "), "{f:#}");
        let evidence = f["evidence"].as_object().cloned().unwrap_or_default();
        assert!(evidence.contains_key("startup_host_pct"), "{f:#}");
    }
}
