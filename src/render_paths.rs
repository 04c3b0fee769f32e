//! The text report's traffic and critical-path sections: the rank×rank matrix (or, past
//! `MATRIX_MAX_RANKS`, the busiest pairs), the slowest links, and what lay on the steps'
//! critical paths.

use crate::render::{fmt_bytes, fmt_ns, fmt_pct, table};
use comfy_table::{Cell, CellAlignment};
use pinch_analyzer::{CriticalPathReport, LinkTraffic, PathSegment, TrafficReport};

/// Up to this many ranks, the traffic prints as a full matrix; beyond, as its busiest pairs.
const MATRIX_MAX_RANKS: usize = 16;
/// Pairs printed when the matrix is too large.
const PAIR_ROWS: usize = 16;
/// Links printed, slowest first.
const LINK_ROWS: usize = 8;
/// Critical-path contributors printed.
const CONTRIBUTOR_ROWS: usize = 8;
/// The slowest step's longest segments printed.
const SEGMENT_ROWS: usize = 5;

fn right(text: String) -> Cell {
    Cell::new(text).set_alignment(CellAlignment::Right)
}

fn gbps(rate: Option<f64>) -> String {
    rate.map_or("-".into(), |g| format!("{g:.3}"))
}

/// The traffic section: the matrix or the busiest pairs, then the slowest links.
pub fn traffic_text(t: &TrafficReport) -> String {
    let pairs = if t.ranks.len() <= MATRIX_MAX_RANKS {
        matrix_table(t)
    } else {
        busiest_pairs(t)
    };
    format!("{pairs}\n\n{}", links_table(&t.links))
}

/// Rows send, columns receive; each cell the bytes moved and the rate achieved.
fn matrix_table(t: &TrafficReport) -> String {
    let mut headers = vec!["from \\ to".to_string()];
    headers.extend(t.ranks.iter().map(|r| format!("rank {r}")));
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut table = table(&headers);
    for &src in &t.ranks {
        let mut row = vec![right(format!("rank {src}"))];
        row.extend(t.ranks.iter().map(|&dst| match t.pair(src, dst) {
            Some(p) => right(format!("{}\n{} GB/s", fmt_bytes(p.bytes), gbps(p.gbps))),
            None => right("-".into()),
        }));
        table.add_row(row);
    }
    format!(
        "Traffic: bytes each rank (row) sent each rank (column), and the rate achieved (bytes \
         over the receiver's time after both sides arrived; {} all-reduce)\n{table}",
        algorithm_name(t)
    )
}

fn algorithm_name(t: &TrafficReport) -> &'static str {
    match t.all_reduce {
        pinch_analyzer::AllReduceAlgorithm::Auto => "auto",
        pinch_analyzer::AllReduceAlgorithm::Ring => "ring",
        pinch_analyzer::AllReduceAlgorithm::OneShot => "one-shot",
    }
}

/// The pairs that moved most bytes, for worlds too large for a matrix.
fn busiest_pairs(t: &TrafficReport) -> String {
    let mut pairs: Vec<_> = t.pairs.iter().collect();
    pairs.sort_by_key(|p| (std::cmp::Reverse(p.bytes), p.src, p.dst));
    let mut table = table(&["from", "to", "bytes", "transfers", "GB/s", "median GB/s"]);
    for p in pairs.iter().take(PAIR_ROWS) {
        table.add_row(vec![
            right(p.src.to_string()),
            right(p.dst.to_string()),
            right(fmt_bytes(p.bytes)),
            right(p.transfers.to_string()),
            right(gbps(p.gbps)),
            right(gbps(p.median_gbps)),
        ]);
    }
    format!(
        "Traffic between {} ranks: the {} busiest of {} pairs\n{table}",
        t.ranks.len(),
        pairs.len().min(PAIR_ROWS),
        pairs.len()
    )
}

/// Links, slowest typical transfer first.
fn links_table(links: &[LinkTraffic]) -> String {
    let mut sorted: Vec<&LinkTraffic> = links.iter().collect();
    sorted.sort_by(|a, b| {
        let rate = |l: &LinkTraffic| l.median_gbps.unwrap_or(f64::INFINITY);
        rate(a).total_cmp(&rate(b)).then(a.ranks.cmp(&b.ranks))
    });
    let mut table = table(&[
        "link",
        "transport",
        "bytes",
        "transfers",
        "GB/s",
        "median GB/s",
        "of peak",
    ]);
    for l in sorted.iter().take(LINK_ROWS) {
        table.add_row(vec![
            Cell::new(&l.link),
            Cell::new(l.transport.as_deref().unwrap_or("-")),
            right(fmt_bytes(l.bytes)),
            right(l.transfers.to_string()),
            right(gbps(l.gbps)),
            right(gbps(l.median_gbps)),
            right(l.peak_pct.map_or("-".into(), fmt_pct)),
        ]);
    }
    let more = match links.len().saturating_sub(LINK_ROWS) {
        0 => String::new(),
        n => format!("\n  {n} more, faster, in report.json"),
    };
    format!(
        "Links, slowest first (median GB/s: a typical transfer's rate, ring all-reduces left \
         out; of peak: GB/s over the calibrated peak of the transport)\n{table}{more}"
    )
}

/// The critical path section: a summary line, the top contributors, the slowest step.
pub fn critical_path_text(c: &CriticalPathReport) -> String {
    let categories: Vec<String> = c
        .by_category
        .iter()
        .map(|s| format!("{} {}", s.category.name(), fmt_pct(s.share_pct)))
        .collect();
    let summary = format!(
        "Critical path across ranks: {} steps, median {}; time on the path: {}",
        c.steps,
        c.median_step_ns.map_or("-".into(), fmt_ns),
        categories.join(", ")
    );
    let mut top = table(&["rank", "op", "category", "on path", "share"]);
    for op in c.by_op.iter().take(CONTRIBUTOR_ROWS) {
        top.add_row(vec![
            right(op.rank.to_string()),
            Cell::new(op.op.as_deref().unwrap_or("(idle)")),
            Cell::new(op.category.name()),
            right(fmt_ns(op.time_ns)),
            right(fmt_pct(op.share_pct)),
        ]);
    }
    let slowest = c.slowest.as_ref().map_or(String::new(), |s| {
        format!(
            "\n  slowest: step {}, {} on the path; its longest stretches:\n{}",
            s.step,
            fmt_ns(s.length_ns),
            segments_table(&s.segments)
        )
    });
    format!("{summary}\n  top contributors over all steps:\n{top}{slowest}")
}

/// A step's longest segments, longest first.
fn segments_table(segments: &[PathSegment]) -> comfy_table::Table {
    let mut longest: Vec<&PathSegment> = segments.iter().collect();
    longest.sort_by_key(|s| (std::cmp::Reverse(s.duration_ns), s.start_ns));
    let mut t = table(&["rank", "op", "category", "start", "duration"]);
    for s in longest.iter().take(SEGMENT_ROWS) {
        t.add_row(vec![
            right(s.rank.to_string()),
            Cell::new(s.op.as_deref().unwrap_or("(idle)")),
            Cell::new(s.category.name()),
            right(fmt_ns(u64::try_from(s.start_ns).unwrap_or(0))),
            right(fmt_ns(s.duration_ns)),
        ]);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinch_analyzer::{PairTraffic, PathCategory, PathOpShare, StepPath};

    fn pair(src: u32, dst: u32, bytes: u64) -> PairTraffic {
        PairTraffic {
            src,
            dst,
            bytes,
            transfers: 10,
            time_ns: bytes,
            gbps: Some(1.0),
            ring_bytes: 0,
            ring_time_ns: 0,
            median_gbps: Some(0.5),
        }
    }

    fn link(name: &str, ranks: [u32; 2], median_gbps: f64) -> LinkTraffic {
        LinkTraffic {
            link: name.into(),
            ranks,
            transport: Some("shm".into()),
            bytes: 2_048,
            transfers: 20,
            time_ns: 2_048,
            gbps: Some(1.0),
            median_gbps: Some(median_gbps),
            mean_transfer_bytes: Some(1_024),
            peak_gbps: None,
            peak_pct: None,
        }
    }

    #[test]
    fn small_worlds_print_a_matrix_and_the_slowest_link_first() {
        let t = TrafficReport {
            ranks: vec![0, 1],
            pairs: vec![pair(0, 1, 1_024), pair(1, 0, 4_096)],
            links: vec![link("0-1", [0, 1], 0.5), link("0-2", [0, 2], 0.01)],
            ..TrafficReport::default()
        };
        let text = traffic_text(&t);
        assert!(text.contains("rank 1"), "{text}");
        assert!(text.contains("4.0 KiB"), "{text}");
        assert!(text.contains("1.000 GB/s"), "{text}");
        let slow = text.find("0-2").unwrap_or(usize::MAX);
        let fast = text.find("0-1 ").unwrap_or(0);
        assert!(slow < fast, "{text}");
    }

    #[test]
    fn large_worlds_print_their_busiest_pairs() {
        let ranks: Vec<u32> = (0..20).collect();
        let pairs = (1..20).map(|r| pair(0, r, u64::from(r) * 1_024)).collect();
        let t = TrafficReport {
            ranks,
            pairs,
            ..TrafficReport::default()
        };
        let text = traffic_text(&t);
        assert!(
            text.starts_with("Traffic between 20 ranks: the 16 busiest of 19 pairs"),
            "{text}"
        );
        assert!(
            text.contains("19.0 KiB") && !text.contains("│ 1.0 KiB"),
            "{text}"
        );
    }

    #[test]
    fn the_critical_path_shows_its_contributors_and_slowest_step() {
        let c = CriticalPathReport {
            steps: 3,
            total_ns: 1_350,
            median_step_ns: Some(450),
            slowest: Some(StepPath {
                step: 0,
                start_ns: 0,
                length_ns: 450,
                segments: vec![PathSegment {
                    rank: 1,
                    op: Some("matmul.down".into()),
                    category: PathCategory::Compute,
                    start_ns: 0,
                    duration_ns: 400,
                }],
            }),
            by_op: vec![PathOpShare {
                rank: 1,
                op: Some("matmul.down".into()),
                category: PathCategory::Compute,
                time_ns: 1_200,
                share_pct: 88.9,
            }],
            ..CriticalPathReport::default()
        };
        let text = critical_path_text(&c);
        assert!(
            text.starts_with("Critical path across ranks: 3 steps, median 450 ns"),
            "{text}"
        );
        assert!(
            text.contains("matmul.down") && text.contains("88.9%"),
            "{text}"
        );
        assert!(
            text.contains("slowest: step 0, 450 ns on the path"),
            "{text}"
        );
    }
}
