//! A Kineto job seen as a pinch run, for what shows runs (the dashboard): pinch's report of its
//! device timeline (`report_of`) put in a `Report`, one node per rank, with the device
//! timeline beside it. What traces do not record (counters, requests, phases, the traffic
//! matrix) is left empty, never made up.

use super::kineto_device_timeline;
use super::report::{device_view, report_of};
use crate::align::Alignment;
use crate::report::{NodeReport, REPORT_SCHEMA_VERSION, Report, RunInfo};
use crate::timeline::Timeline;
use pinch_traces::kineto::KinetoRun;
use std::collections::BTreeMap;

/// The name a Kineto job's report gives its workload.
pub const KINETO_WORKLOAD: &str = "pytorch-profiler";

/// The job's report, named `id`, and its device timeline.
pub fn as_run_report(run: &KinetoRun, id: &str) -> (Report, Timeline) {
    let kt = kineto_device_timeline(run, Alignment::Collectives);
    let pinch = report_of(&kt);
    let timeline = device_view(&kt).into_owned();
    let start = timeline.spans.iter().map(|s| s.start_ns).min();
    let end = timeline.spans.iter().map(|s| s.end_ns()).max();
    let nodes = run
        .ranks
        .iter()
        .map(|r| NodeReport {
            node: r.rank.0,
            host: format!("rank {}", r.rank.0),
            log_file: r.path.display().to_string(),
            ranks: vec![r.rank.0],
            cpu_utilization_mean_pct: None,
            cpu_utilization_max_pct: None,
            complete: true,
            incomplete: Vec::new(),
            clock: pinch.clocks.iter().find(|c| c.node == r.rank.0).cloned(),
        })
        .collect();
    let report = Report {
        schema_version: REPORT_SCHEMA_VERSION,
        run: RunInfo {
            id: id.to_string(),
            workload: KINETO_WORKLOAD.to_string(),
            model: "unknown".to_string(),
            parameters: BTreeMap::new(),
            started_at: None,
            started_at_unix_ns: u64::try_from(timeline.origin_unix_ns).unwrap_or(0),
            pinch_version: env!("CARGO_PKG_VERSION").to_string(),
            wall_ns: start.zip(end).map(|(s, e)| e.abs_diff(s)),
            counter_sources: Vec::new(),
            generated_tokens: None,
            generated_tokens_rank: None,
            incomplete: run.warnings.iter().map(ToString::to_string).collect(),
        },
        ranks: pinch.ranks,
        collectives: pinch.collectives.into_iter().map(|c| c.report).collect(),
        nodes,
        findings: pinch.findings,
        serving: None,
        stragglers: pinch.stragglers,
        phases: Vec::new(),
        traffic: Default::default(),
        critical_path: Default::default(),
        imbalance: Default::default(),
    };
    (report, timeline)
}
