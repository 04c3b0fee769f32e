//! The text report's tables of each rank's idle time by cause and of the run's phases with the
//! nodes' counters over them.

use crate::render::{fmt_bytes, fmt_ns, fmt_pct, table};
use comfy_table::{Cell, CellAlignment};
use pinch_analyzer::{IdleBreakdownNs, NodePhase, PhaseReport, RankReport};

fn right(text: String) -> Cell {
    Cell::new(text).set_alignment(CellAlignment::Right)
}

fn pct_or_dash(value: Option<f64>) -> Cell {
    right(value.map_or("-".into(), fmt_pct))
}

/// Each rank's idle time and what it waited on; `None` when no rank has spans.
pub fn idle_table(ranks: &[RankReport]) -> Option<String> {
    let mut t = table(&[
        "rank", "idle", "of wall", "peer", "host", "requests", "other",
    ]);
    let rows: Vec<(&RankReport, IdleBreakdownNs)> = ranks
        .iter()
        .filter_map(|r| r.idle_breakdown.map(|b| (r, b)))
        .collect();
    if rows.is_empty() {
        return None;
    }
    for (r, b) in rows {
        t.add_row(idle_row(r.rank, r.wall_ns, &b));
    }
    Some(format!(
        "Idle time per rank (wall time not spent computing, copying or moving data), by what it \
         waited on, as shares of the idle time\n{t}"
    ))
}

fn idle_row(rank: u32, wall_ns: Option<u64>, b: &IdleBreakdownNs) -> Vec<Cell> {
    let of_wall = wall_ns
        .filter(|w| *w > 0)
        .map(|w| 100.0 * b.idle_ns as f64 / w as f64);
    vec![
        right(rank.to_string()),
        right(fmt_ns(b.idle_ns)),
        pct_or_dash(of_wall),
        pct_or_dash(b.share_pct(b.peer_ns)),
        pct_or_dash(b.share_pct(b.host_ns)),
        pct_or_dash(b.share_pct(b.requests_ns)),
        pct_or_dash(b.share_pct(b.other_ns)),
    ]
}

/// The phases with each node's counters; `None` for a run without phases.
pub fn phases_table(phases: &[PhaseReport]) -> Option<String> {
    if phases.is_empty() {
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
    for phase in phases {
        for node in &phase.nodes {
            t.add_row(phase_row(phase, node));
        }
    }
    let mut text = format!(
        "Phases, with each node's counters averaged over the phase's time (nic: bytes/s over all \
         interfaces; of link: the busier direction against the calibrated TCP peak)\n{t}"
    );
    for reason in memory_reasons(phases) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use pinch_analyzer::{PhaseKind, Stretch};

    fn node(node: u32, cpu: Option<f64>) -> NodePhase {
        NodePhase {
            node,
            cpu_utilization_pct: cpu,
            gpu_utilization_pct: None,
            memory_bandwidth_pct: None,
            memory_bandwidth_missing: Some(format!("node {node} has no counter")),
            nic_rx_bytes_per_s: Some(2048.0),
            nic_tx_bytes_per_s: None,
            nic_link_pct: Some(12.5),
        }
    }

    #[test]
    fn the_phases_table_has_a_row_per_phase_and_node_and_says_why_bandwidth_is_missing() {
        let phase = PhaseReport {
            kind: PhaseKind::Decode,
            duration_ns: 2_500_000_000,
            share_pct: Some(75.0),
            steps: 120,
            stretches: vec![Stretch {
                start_ns: 0,
                duration_ns: 2_500_000_000,
            }],
            nodes: vec![node(0, Some(93.25)), node(1, None)],
        };
        let text = phases_table(&[phase]).unwrap_or_default();
        let rows: Vec<&str> = text.lines().filter(|l| l.contains("decode")).collect();
        assert_eq!(rows.len(), 2, "{text}");
        for needle in ["2.50 s", "75.0%", "120", "93.2%", "2.0 KiB/s", "12.5%"] {
            assert!(rows[0].contains(needle), "{needle:?} not in {}", rows[0]);
        }
        assert!(text.contains("mem bw: node 0 has no counter"), "{text}");
        assert!(text.contains("mem bw: node 1 has no counter"), "{text}");
        assert_eq!(phases_table(&[]), None);
    }

    #[test]
    fn an_idle_row_gives_shares_of_the_idle_time() {
        let b = IdleBreakdownNs {
            idle_ns: 400,
            peer_ns: 300,
            host_ns: 100,
            requests_ns: 0,
            other_ns: 0,
        };
        let mut t = table(&[
            "rank", "idle", "of wall", "peer", "host", "requests", "other",
        ]);
        t.add_row(idle_row(3, Some(1_000), &b));
        let text = t.to_string();
        for needle in ["400 ns", "40.0%", "75.0%", "25.0%", "0.0%"] {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
        assert_eq!(idle_table(&[]), None);
    }
}
