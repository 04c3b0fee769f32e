//! The text report's tables of each rank's idle time by cause and of the run's phases with the
//! nodes' counters over them.

use crate::render::{fmt_bytes, fmt_ns, fmt_pct, table};
use comfy_table::{Cell, CellAlignment};
use pinch_analyzer::{IdleBreakdownNs, NodePhase, PhaseReport, RankReport, Report};

fn right(text: String) -> Cell {
    Cell::new(text).set_alignment(CellAlignment::Right)
}

fn pct_or_dash(value: Option<f64>) -> Cell {
    right(value.map_or("-".into(), fmt_pct))
}

/// Each rank's idle time and what it waited on; `None` when no rank has spans.
pub fn idle_table(report: &Report) -> Option<String> {
    let mut t = table(&[
        "rank", "idle", "of wall", "peer", "host", "requests", "other",
    ]);
    let rows: Vec<(&RankReport, IdleBreakdownNs)> = report
        .ranks
        .iter()
        .filter_map(|r| r.idle_breakdown.map(|b| (r, b)))
        .collect();
    if rows.is_empty() {
        return None;
    }
    for (r, b) in rows {
        let of_wall = r
            .wall_ns
            .filter(|w| *w > 0)
            .map(|w| 100.0 * b.idle_ns as f64 / w as f64);
        t.add_row(vec![
            right(r.rank.to_string()),
            right(fmt_ns(b.idle_ns)),
            pct_or_dash(of_wall),
            pct_or_dash(b.share_pct(b.peer_ns)),
            pct_or_dash(b.share_pct(b.host_ns)),
            pct_or_dash(b.share_pct(b.requests_ns)),
            pct_or_dash(b.share_pct(b.other_ns)),
        ]);
    }
    Some(format!(
        "Idle time per rank (wall time not spent computing, copying or moving data), by what it \
         waited on, as shares of the idle time\n{t}"
    ))
}

/// The phases with each node's counters; `None` for a run without phases.
pub fn phases_table(report: &Report) -> Option<String> {
    if report.phases.is_empty() {
        return None;
    }
    let mut t = table(&[
        "phase",
        "time",
        "share",
        "stretches",
        "steps",
        "node",
        "cpu",
        "gpu",
        "mem bw",
        "nic rx",
        "nic tx",
        "of link",
    ]);
    for phase in &report.phases {
        for node in &phase.nodes {
            t.add_row(phase_row(phase, node));
        }
    }
    let mut text = format!(
        "Phases, with each node's counters averaged over the phase's time (nic: bytes/s over all \
         interfaces; of link: the busier direction against the calibrated TCP peak)\n{t}"
    );
    for reason in memory_reasons(&report.phases) {
        text.push_str(&format!("\n  mem bw: {reason}"));
    }
    Some(text)
}

fn phase_row(phase: &PhaseReport, node: &NodePhase) -> Vec<Cell> {
    let rate =
        |v: Option<f64>| right(v.map_or("-".into(), |r| format!("{}/s", fmt_bytes(r as u64))));
    vec![
        Cell::new(phase.kind.name()),
        right(fmt_ns(phase.duration_ns)),
        pct_or_dash(phase.share_pct),
        right(phase.stretches.len().to_string()),
        right(phase.steps.to_string()),
        right(node.node.to_string()),
        pct_or_dash(node.cpu_utilization_pct),
        pct_or_dash(node.gpu_utilization_pct),
        pct_or_dash(node.memory_bandwidth_pct),
        rate(node.nic_rx_bytes_per_s),
        rate(node.nic_tx_bytes_per_s),
        pct_or_dash(node.nic_link_pct),
    ]
}

/// Why memory bandwidth is missing, each distinct reason once.
fn memory_reasons(phases: &[PhaseReport]) -> Vec<&str> {
    let mut reasons: Vec<&str> = phases
        .iter()
        .flat_map(|p| &p.nodes)
        .filter_map(|n| n.memory_bandwidth_missing.as_deref())
        .collect();
    reasons.sort_unstable();
    reasons.dedup();
    reasons
}
