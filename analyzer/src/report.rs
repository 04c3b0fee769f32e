//! `Report`, the analyzer's answer (written as report.json), and `analyze`, which builds it from a
//! loaded run. Ids are plain numbers and enum values snake_case strings; docs/report.md documents
//! every field.

use crate::align::{Alignment, NodeClockReport};
use crate::analysis::{AnalysisInput, RankReport};
use crate::collectives::{CollectiveReport, rate_against_links};
use crate::critical_path::CriticalPathReport;
use crate::facts::RunFacts;
use crate::findings::{Finding, cite_phases, detect_all};
use crate::imbalance::{ImbalanceReport, imbalance_report};
use crate::phases::{
    PhaseInput, PhaseReport, ReplicaTokens, phase_reports, replica_tokens, tcp_link_bytes_per_s,
};
use crate::roofline::{classify, rank_ceilings};
use crate::run::{NodeData, RunData};
use crate::serving::{OutputRate, ServingReport, serving_report};
use crate::stragglers::StragglerReport;
use crate::timeline::{Timeline, merge_with, node_clocks};
use crate::traffic::{CommSettings, TrafficReport, rate_links};
use pinch_traces::{CounterSourceStatus, SourceState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// report.json's schema version; bumped on any incompatible change.
pub const REPORT_SCHEMA_VERSION: u32 = 6;

/// The counter and device names CPU utilization is read from.
const CPU_COUNTER: &str = "cpu.utilization";
const CPU_DEVICE_PREFIX: &str = "cpu";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub run: RunInfo,
    pub ranks: Vec<RankReport>,
    pub collectives: Vec<CollectiveReport>,
    pub nodes: Vec<NodeReport>,
    pub findings: Vec<Finding>,
    /// Serving metrics (vLLM's definitions); `None` when the run recorded no request.
    pub serving: Option<ServingReport>,
    /// Who arrived last at each collective, and what it cost the others.
    pub stragglers: StragglerReport,
    /// The run's phases (startup, prefill, decode, mixed, idle) with each node's counters over
    /// them; empty for a run without spans.
    #[serde(default)]
    pub phases: Vec<PhaseReport>,
    /// The rank×rank traffic matrix: bytes and achieved bandwidth per pair and per link.
    pub traffic: TrafficReport,
    /// Each step's critical path across ranks and collectives, summed over steps.
    pub critical_path: CriticalPathReport,
    /// Expert token counts, pipeline bubble per stage and replica queueing.
    #[serde(default)]
    pub imbalance: ImbalanceReport,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunInfo {
    pub id: String,
    pub workload: String,
    pub model: String,
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// RFC 3339, UTC; `None` when the start time is out of chrono's range.
    pub started_at: Option<String>,
    pub started_at_unix_ns: u64,
    pub pinch_version: String,
    /// Earliest span start to latest span end over all ranks; `None` without spans.
    pub wall_ns: Option<u64>,
    pub counter_sources: Vec<CounterSourceReport>,
    /// What the lowest rank that wrote an output generated: token ids, one list per sequence.
    /// `None` when no rank wrote one.
    pub generated_tokens: Option<Vec<Vec<u32>>>,
    /// The rank `generated_tokens` come from.
    pub generated_tokens_rank: Option<u32>,
    /// Every way the run is incomplete, one sentence each; empty for a complete run.
    pub incomplete: Vec<String>,
}

/// Whether one counter source was read on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSourceReport {
    pub node: u32,
    pub source: String,
    pub read: bool,
    /// The counters read (empty when not read).
    pub counters: Vec<String>,
    /// Why it was not read, or why it stopped; `None` when it was read to the end.
    pub reason: Option<String>,
    /// What the source could not read although it ran (e.g. hardware perf events refused).
    pub notes: Vec<String>,
    /// When a source that was read failed and stopped (the node's monotonic clock, ns).
    pub failed_at_ns: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeReport {
    pub node: u32,
    pub host: String,
    pub log_file: String,
    pub ranks: Vec<u32>,
    /// Over every "cpu.utilization" sample of a "cpu*" device; `None` when there is none.
    pub cpu_utilization_mean_pct: Option<f64>,
    pub cpu_utilization_max_pct: Option<f64>,
    /// Whether the log was read whole, ends with NodeEnd, and every rank on it finished.
    pub complete: bool,
    /// This node's (and its ranks') entries of `run.incomplete`.
    pub incomplete: Vec<String>,
    /// How its clock was put on the run's time base; `None` when the timeline was not merged
    /// from this run's nodes.
    pub clock: Option<NodeClockReport>,
}

/// Analyzes a loaded run.
pub fn analyze(run: &RunData) -> Report {
    let (timeline, clocks) = merge_with(run, Alignment::Collectives);
    let facts = RunFacts::from_run(run);
    report_with_clocks(run, &timeline, &facts, &clocks)
}

/// Builds the report from a run, its timeline as `merge` builds it, and its facts.
pub fn report_from(run: &RunData, timeline: &Timeline, facts: &RunFacts) -> Report {
    let clocks = node_clocks(run, Alignment::Collectives);
    report_with_clocks(run, timeline, facts, &clocks)
}

/// Builds the report from a run, its merged timeline, its facts and how its nodes' clocks were
/// aligned (as `merge_with` tells).
pub fn report_with_clocks(
    run: &RunData,
    timeline: &Timeline,
    facts: &RunFacts,
    clocks: &[NodeClockReport],
) -> Report {
    report_from_input(
        run,
        timeline,
        facts,
        clocks,
        AnalysisInput::with_comm_settings(
            timeline,
            facts,
            CommSettings::from_parameters(&run.manifest.workload.parameters),
        ),
    )
}

/// `report_with_clocks` from the measurements already taken.
pub(crate) fn report_from_input(
    run: &RunData,
    timeline: &Timeline,
    facts: &RunFacts,
    clocks: &[NodeClockReport],
    mut input: AnalysisInput<'_>,
) -> Report {
    let parameters = &run.manifest.workload.parameters;
    place_under_roofs(&mut input.ranks, parameters, facts);
    let links = parameters
        .get("calibration")
        .and_then(|c| c.get("links"))
        .and_then(|l| l.as_array());
    if let Some(links) = links {
        let node_of = |rank: u32| facts.rank_nodes.get(&pinch_traces::Rank(rank)).map(|n| n.0);
        rate_against_links(&mut input.collectives, links, node_of);
        rate_links(&mut input.traffic, links);
    }
    input.imbalance = imbalance_report(run, &input);
    let mut findings = detect_all(&input);
    let tokens = replica_tokens(run, timeline, clocks);
    let phases = run_phases(run, timeline, &tokens);
    cite_phases(&mut findings, timeline, &phases);
    let clock_of = |node: &NodeData| clocks.iter().find(|c| c.node == node.node.0).cloned();
    Report {
        schema_version: REPORT_SCHEMA_VERSION,
        run: run_info(run, timeline, facts),
        nodes: run
            .nodes
            .iter()
            .map(|n| node_report(n, timeline, facts, clock_of(n)))
            .collect(),
        ranks: input.ranks,
        collectives: input.collectives,
        findings,
        serving: serving_report(run).map(|serving| ServingReport {
            output_rate: OutputRate::of(token_times(&tokens), timeline_end_ns(timeline)),
            ..serving
        }),
        stragglers: input.stragglers,
        phases,
        traffic: input.traffic,
        critical_path: input.critical_path,
        imbalance: input.imbalance,
    }
}

/// The run's phases, with request tokens and the link's peak taken from the run.
fn run_phases(run: &RunData, timeline: &Timeline, tokens: &[ReplicaTokens]) -> Vec<PhaseReport> {
    let nodes: Vec<pinch_traces::NodeId> = run.nodes.iter().map(|n| n.node).collect();
    phase_reports(&PhaseInput {
        timeline,
        tokens,
        nodes: &nodes,
        link_bytes_per_s: tcp_link_bytes_per_s(&run.manifest.workload.parameters),
    })
}

/// Every replica's output token times (timeline ns).
fn token_times(tokens: &[ReplicaTokens]) -> impl Iterator<Item = i64> + '_ {
    tokens.iter().flat_map(|r| r.tokens.iter().map(|t| t.0))
}

/// The latest span end (0 without spans).
fn timeline_end_ns(timeline: &Timeline) -> i64 {
    timeline.spans.iter().map(|s| s.end_ns()).max().unwrap_or(0)
}

/// Gives each rank its roofs (its share of the host's calibrated ceilings) and each of its ops
/// its roofline class; without a calibration in the run, both stay `None`.
fn place_under_roofs(
    ranks: &mut [RankReport],
    parameters: &BTreeMap<String, serde_json::Value>,
    facts: &RunFacts,
) {
    for rank in ranks {
        let on_node = facts
            .rank_nodes
            .values()
            .filter(|n| n.0 == rank.node)
            .count();
        rank.roofs = rank_ceilings(parameters, on_node);
        if let Some(roofs) = rank.roofs {
            for op in &mut rank.top_ops {
                op.roofline = classify(op, &roofs);
            }
        }
    }
}

fn run_info(run: &RunData, timeline: &Timeline, facts: &RunFacts) -> RunInfo {
    let m = &run.manifest;
    let output = first_output(run);
    let start = timeline.spans.iter().map(|s| s.start_ns).min();
    let end = timeline.spans.iter().map(|s| s.end_ns()).max();
    RunInfo {
        id: m.run_id.clone(),
        workload: m.workload.name.clone(),
        model: m.workload.model.clone(),
        parameters: m.workload.parameters.clone(),
        started_at: rfc3339(m.started_at_unix_ns),
        started_at_unix_ns: m.started_at_unix_ns,
        pinch_version: m.versions.pinch.clone(),
        wall_ns: start.zip(end).map(|(s, e)| e.abs_diff(s)),
        counter_sources: counter_sources(run),
        generated_tokens_rank: output.map(|(rank, _)| rank),
        generated_tokens: output.map(|(_, tokens)| tokens.clone()),
        incomplete: facts.problems.iter().map(ToString::to_string).collect(),
    }
}

fn rfc3339(unix_ns: u64) -> Option<String> {
    let secs = i64::try_from(unix_ns / 1_000_000_000).ok()?;
    let nanos = u32::try_from(unix_ns % 1_000_000_000).ok()?;
    let at = chrono::DateTime::from_timestamp(secs, nanos)?;
    Some(at.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true))
}

/// The manifest's list; while the manifest has none (a run still going, or one that crashed),
/// what the node logs reported.
fn counter_sources(run: &RunData) -> Vec<CounterSourceReport> {
    let from_logs: Vec<&CounterSourceStatus> = run.nodes.iter().flat_map(|n| &n.sources).collect();
    let statuses: Vec<&CounterSourceStatus> = if run.manifest.counter_sources.is_empty() {
        from_logs
    } else {
        run.manifest.counter_sources.iter().collect()
    };
    statuses.into_iter().map(source_report).collect()
}

fn source_report(status: &CounterSourceStatus) -> CounterSourceReport {
    let mut report = CounterSourceReport {
        node: status.node.0,
        source: status.source.clone(),
        read: false,
        counters: Vec::new(),
        reason: None,
        notes: Vec::new(),
        failed_at_ns: None,
    };
    match &status.state {
        SourceState::Read { counters, notes } => {
            report.read = true;
            report.counters = counters.clone();
            report.notes = notes.clone();
        }
        SourceState::NotRead { reason } => report.reason = Some(reason.clone()),
        SourceState::Failed {
            counters,
            reason,
            at_ns,
        } => {
            report.read = true;
            report.counters = counters.clone();
            report.reason = Some(reason.clone());
            report.failed_at_ns = Some(*at_ns);
        }
    }
    report
}

/// The output of the lowest rank that wrote one (every rank of a tensor-parallel group
/// generates the same tokens).
fn first_output(run: &RunData) -> Option<(u32, &Vec<Vec<u32>>)> {
    run.nodes
        .iter()
        .flat_map(|n| n.outputs.iter())
        .min_by_key(|(rank, _)| **rank)
        .map(|(rank, tokens)| (rank.0, tokens))
}

fn node_report(
    node: &NodeData,
    timeline: &Timeline,
    facts: &RunFacts,
    clock: Option<NodeClockReport>,
) -> NodeReport {
    let cpu: Vec<f64> = timeline
        .series
        .iter()
        .filter(|s| s.node == node.node && s.counter == CPU_COUNTER)
        .filter(|s| s.device.starts_with(CPU_DEVICE_PREFIX))
        .flat_map(|s| s.values.iter().copied())
        .filter(|v| v.is_finite())
        .collect();
    let incomplete: Vec<String> = facts
        .problems
        .iter()
        .filter(|p| p.node == node.node)
        .map(ToString::to_string)
        .collect();
    NodeReport {
        node: node.node.0,
        host: node.host.clone(),
        log_file: node.log_file.clone(),
        ranks: node.all_ranks().iter().map(|r| r.0).collect(),
        cpu_utilization_mean_pct: (!cpu.is_empty())
            .then(|| cpu.iter().sum::<f64>() / cpu.len() as f64),
        cpu_utilization_max_pct: cpu.iter().copied().reduce(f64::max),
        complete: incomplete.is_empty(),
        incomplete,
        clock,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::findings::Level;
    use crate::testkit;
    use pinch_traces::{
        CounterDef, CounterId, CounterSample, DeviceDef, DeviceId, NodeId, Rank, RankExit, Unit,
    };

    #[test]
    fn ops_get_a_roofline_class_when_the_run_carries_a_calibration() {
        use crate::roofline::{Ceilings, RooflineClass};
        use serde_json::json;
        let mut run = testkit::run_with_spans(&[&[0, 1]]);
        let uncalibrated = analyze(&run);
        assert!(uncalibrated.ranks.iter().all(|r| r.roofs.is_none()));
        let rates = |one: f64, all: f64| json!({"one_thread": one, "all_threads": all});
        let parameters = &mut run.manifest.workload.parameters;
        parameters.insert(
            "calibration".into(),
            json!({
                "gemm": [{"dtype": "f32", "gflops": rates(100.0, 100.0)}],
                "memory": {"triad_gbps": rates(20.0, 20.0)},
            }),
        );
        parameters.insert("dtype".into(), json!("f32"));
        parameters.insert("threads".into(), json!(1));
        let facts = RunFacts::from_run(&run);
        let mut ranks = analyze(&run).ranks;
        // The synthetic spans carry no cost model: give the first op one.
        let op = &mut ranks[0].top_ops[0];
        (op.flops, op.bytes, op.achieved_gflops) = (Some(8_000), Some(1_000), Some(40.0));
        place_under_roofs(&mut ranks, &run.manifest.workload.parameters, &facts);
        // Two ranks share the node: each gets half the host's all-thread figures.
        let roofs = Ceilings {
            gflops: 50.0,
            gbps: 10.0,
        };
        assert_eq!(ranks[0].roofs, Some(roofs));
        let roofline = ranks[0].top_ops[0].roofline.unwrap();
        assert_eq!(roofline.class, RooflineClass::ComputeBound);
        assert_eq!((roofline.roof_gflops, roofline.roof_pct), (50.0, 80.0));
    }

    #[test]
    fn a_healthy_run_is_complete_and_has_nothing_above_info() {
        let run = testkit::run_with_spans(&[&[0, 1], &[2, 3]]);
        let report = analyze(&run);
        assert_eq!(report.schema_version, 6);
        assert_eq!(report.serving, None);
        assert_eq!(report.run.incomplete, Vec::<String>::new());
        assert_eq!(report.ranks.len(), 4);
        assert!(
            report
                .ranks
                .iter()
                .all(|r| r.complete && r.wall_ns.is_some())
        );
        assert!(
            report.findings.iter().all(|f| f.level == Level::Info),
            "{:#?}",
            report.findings
        );
        assert_eq!(report.collectives.len(), 1);
        assert_eq!(report.collectives[0].participants, 4);
        assert!(report.nodes.iter().all(|n| n.complete));
    }

    #[test]
    fn report_json_uses_plain_ids_and_snake_case_and_round_trips() -> serde_json::Result<()> {
        let mut run = testkit::run_with_spans(&[&[0, 1]]);
        run.nodes[0].apply(pinch_traces::Record::RankEnd {
            rank: Rank(1),
            exit: RankExit::Failed {
                code: Some(3),
                signal: None,
                message: "boom".into(),
            },
            at_ns: 9,
        });
        let report = analyze(&run);
        let json = serde_json::to_value(&report)?;
        assert_eq!(json["schema_version"], 6);
        assert!(json["serving"].is_null());
        assert_eq!(json["ranks"][0]["rank"], 0);
        assert_eq!(json["ranks"][0]["node"], 0);
        assert_eq!(json["ranks"][1]["exit"]["status"], "failed");
        assert_eq!(json["collectives"][0]["kind"], "all_reduce");
        let findings = json["findings"].as_array().cloned().unwrap_or_default();
        let incomplete = findings.iter().find(|f| f["kind"] == "incomplete_run");
        assert_eq!(
            incomplete.map(|f| f["level"].clone()),
            Some("critical".into())
        );
        assert_eq!(
            incomplete.map(|f| f["location"]["ranks"][0].clone()),
            Some(1.into())
        );
        assert!(json["ranks"][0]["breakdown_pct"]["idle"].is_number());
        let back: Report = serde_json::from_value(json)?;
        assert_eq!(back, report);
        Ok(())
    }

    #[test]
    fn nodes_tell_how_their_clocks_were_aligned_and_ranks_how_they_arrived()
    -> serde_json::Result<()> {
        let report = analyze(&testkit::skewed_run(20, 300_000_000, 0));
        let node1 = report.nodes[1].clock.clone();
        assert!(
            node1.is_some_and(|c| (c.offset_ns + 300_000_000).abs() < 100_000),
            "{:?}",
            report.nodes[1]
        );
        let json = serde_json::to_value(&report)?;
        assert_eq!(json["nodes"][1]["clock"]["method"], "collectives");
        assert_eq!(json["nodes"][1]["clock"]["collectives"], 20);
        assert_eq!(json["stragglers"]["collectives"], 20);
        let ranks = json["stragglers"]["ranks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let times_last: Vec<u64> = ranks
            .iter()
            .filter_map(|r| r["times_last"].as_u64())
            .collect();
        assert_eq!(
            times_last.iter().sum::<u64>(),
            20,
            "one rank is last at each"
        );
        let one_node = analyze(&testkit::run_with_spans(&[&[0, 1]]));
        assert_eq!(
            one_node.nodes[0].clock.as_ref().map(|c| c.method),
            Some(crate::align::ClockMethod::Anchors)
        );
        Ok(())
    }

    #[test]
    fn run_facts_come_from_the_manifest_and_the_logs() {
        let mut run = testkit::run_with_spans(&[&[0], &[1]]);
        run.manifest.started_at_unix_ns = 1_700_000_000_123_456_789;
        run.nodes[1].outputs.insert(Rank(1), vec![vec![7, 8]]);
        run.nodes[0].outputs.insert(Rank(0), vec![vec![5]]);
        let report = analyze(&run);
        assert_eq!(
            report.run.started_at.as_deref(),
            Some("2023-11-14T22:13:20.123456789Z")
        );
        assert_eq!(report.run.generated_tokens, Some(vec![vec![5]]));
        assert_eq!(report.run.generated_tokens_rank, Some(0));
        assert_eq!(report.run.id, "test-run");
        assert_eq!(
            report.run.counter_sources[0].reason.as_deref(),
            Some("no gpu")
        );
    }

    #[test]
    fn cpu_utilization_is_read_from_cpu_devices_only() {
        let mut run = testkit::run_with_spans(&[&[0]]);
        let node = &mut run.nodes[0];
        let def = |id: u32, name: &str| DeviceDef {
            id: DeviceId(id),
            name: name.into(),
        };
        node.devices.insert(DeviceId(0), def(0, "cpu0"));
        node.devices.insert(DeviceId(1), def(1, "rank0"));
        node.counters.insert(
            CounterId(0),
            CounterDef {
                id: CounterId(0),
                name: "cpu.utilization".into(),
                unit: Unit::Percent,
            },
        );
        for (device, value) in [(0, 20.0), (0, 60.0), (1, 99.0)] {
            node.samples.push(CounterSample {
                node: NodeId(0),
                device: DeviceId(device),
                counter: CounterId(0),
                time_ns: 1,
                value,
            });
        }
        let report = analyze(&run);
        assert_eq!(report.nodes[0].cpu_utilization_mean_pct, Some(40.0));
        assert_eq!(report.nodes[0].cpu_utilization_max_pct, Some(60.0));
        let bare = analyze(&testkit::run_with_spans(&[&[0]]));
        assert_eq!(bare.nodes[0].cpu_utilization_mean_pct, None);
    }

    #[test]
    fn served_requests_give_a_serving_section_with_the_manifest_slo() {
        let mut run = testkit::run_with_spans(&[&[0]]);
        run.manifest
            .workload
            .parameters
            .insert("slo".into(), "ttft=1ms".into());
        let base = run.nodes[0].anchor.map_or(0, |a| a.mono_ns);
        run.nodes[0].requests.push(pinch_traces::RequestRecord {
            id: 0,
            replica: 0,
            arrival_ns: base,
            scheduled_ns: None,
            token_times_ns: vec![base + 500_000, base + 2_500_000],
            prompt_tokens: 3,
            tokens: vec![4, 5],
            preemptions: 0,
        });
        let report = analyze(&run);
        let serving = report.serving.expect("serving");
        assert_eq!((serving.requests, serving.output_tokens), (1, 2));
        let goodput = serving.goodput.expect("goodput");
        assert_eq!((goodput.slo.as_str(), goodput.requests), ("ttft=1ms", 1));
        assert_eq!(serving.tpot.map(|t| t.mean_ms), Some(2.0));
    }
}
