//! The report as a person reads it: tables on stdout (comfy-table), or report.json's content.

use anyhow::Context;
use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use pinch_analyzer::findings::MAX_STRETCHES;
use pinch_analyzer::{
    ClockMethod, Finding, LatencyStats, RankReport, Report, ServingReport, StragglerReport,
};
pub use pinch_traces::units::{fmt_bytes, fmt_ns};
use std::io::Write;
use std::path::Path;

/// How many ops of each rank the tables show (report.json keeps more).
const OPS_SHOWN: usize = 5;

/// Writes the report to stdout as tables, or as JSON.
pub fn print_report(report: &Report, json: bool) -> anyhow::Result<()> {
    let text = if json {
        serde_json::to_string_pretty(report)? + "\n"
    } else {
        render_text(report)
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(())
}

/// The report's file in a run directory.
pub const REPORT_FILE: &str = "report.json";

pub fn write_report_json(report: &Report, path: &Path) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(report)? + "\n";
    std::fs::write(path, text).with_context(|| format!("cannot write report '{}'", path.display()))
}

pub fn render_text(report: &Report) -> String {
    let mut sections = vec![header(report), ranks_table(report), ops_table(report)];
    if !report.collectives.is_empty() {
        sections.push(collectives_table(report));
    }
    if report.stragglers.collectives > 0 {
        sections.push(stragglers_table(&report.stragglers));
    }
    if !report.traffic.pairs.is_empty() {
        sections.push(crate::render_paths::traffic_text(&report.traffic));
    }
    if report.critical_path.steps > 0 {
        sections.push(crate::render_paths::critical_path_text(
            &report.critical_path,
        ));
    }
    if let Some(serving) = &report.serving {
        sections.push(serving_text(serving));
    }
    sections.extend(crate::render_phases::idle_table(&report.ranks));
    sections.extend(crate::render_phases::phases_table(&report.phases));
    if let Some(imbalance) = crate::render_imbalance::imbalance_text(&report.imbalance) {
        sections.push(imbalance);
    }
    sections.push(nodes_table(report));
    sections.push(clock_table(report));
    sections.push(findings_text(&report.findings));
    if !report.run.incomplete.is_empty() {
        let lines: Vec<String> = report
            .run
            .incomplete
            .iter()
            .map(|i| format!("  - {i}"))
            .collect();
        sections.push(format!("Incomplete\n{}", lines.join("\n")));
    }
    sections.join("\n\n") + "\n"
}

fn header(report: &Report) -> String {
    let run = &report.run;
    let param = |k: &str| {
        run.parameters
            .get(k)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "?".into())
    };
    let layout = run
        .parameters
        .get("layout")
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("tp={}", param("tp")));
    let title = format!(
        "pinch run {}: {}, model '{}', {} nodes, {layout}",
        run.id,
        run.workload,
        run.model,
        param("nodes"),
    );
    let wall = run.wall_ns.map_or("unknown".into(), fmt_ns);
    let shape = match &report.serving {
        Some(s) => format!(
            "{} requests served by {} replica{}; wall time {wall}",
            s.requests,
            s.per_replica.len(),
            if s.per_replica.len() == 1 { "" } else { "s" }
        ),
        None => format!(
            "{} rounds of {} prompts, each {} prompt + {} decoded tokens; wall time {wall}",
            param("rounds"),
            param("batch"),
            param("prompt_len"),
            param("decode_tokens"),
        ),
    };
    format!("{title}\n{shape}")
}

/// A table in the style of every table pinch prints.
pub fn table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(headers.iter().map(Cell::new));
    t
}

fn right(text: String) -> Cell {
    Cell::new(text).set_alignment(CellAlignment::Right)
}

fn ranks_table(report: &Report) -> String {
    ranks_table_of(&report.ranks)
}

/// The ranks table of any list of ranks (a pinch run's, or a PyTorch job's).
pub fn ranks_table_of(ranks: &[RankReport]) -> String {
    let mut t = table(&[
        "rank",
        "node",
        "wall",
        "compute",
        "comm",
        "memory",
        "host",
        "wait",
        "idle",
        "comm overlap",
        "dropped",
    ]);
    for r in ranks {
        t.add_row(rank_row(r));
    }
    format!("Ranks: share of wall time (overlaps counted once, compute first)\n{t}")
}

fn rank_row(r: &RankReport) -> Vec<Cell> {
    let b = r.breakdown_pct.as_ref();
    let share = |f: fn(&pinch_analyzer::BreakdownPct) -> f64| {
        right(b.map_or("-".into(), |b| fmt_pct(f(b))))
    };
    vec![
        right(r.rank.to_string()),
        right(r.node.to_string()),
        right(r.wall_ns.map_or("-".into(), fmt_ns)),
        share(|b| b.compute),
        share(|b| b.communication),
        share(|b| b.memory),
        share(|b| b.host),
        share(|b| b.wait),
        share(|b| b.idle),
        right(r.comm_overlap_pct.map_or("-".into(), fmt_pct)),
        right(r.dropped_spans.map_or("-".into(), |d| d.to_string())),
    ]
}

/// "memory 82%": the class and how close the op comes to its roof.
fn roofline_cell(roofline: pinch_analyzer::OpRoofline) -> String {
    let class = match roofline.class {
        pinch_analyzer::RooflineClass::ComputeBound => "compute",
        pinch_analyzer::RooflineClass::MemoryBound => "memory",
        pinch_analyzer::RooflineClass::LatencyBound => "latency",
    };
    format!("{class} {:.0}%", roofline.roof_pct)
}

fn ops_table(report: &Report) -> String {
    let t = ops_rows(&report.ranks);
    let roofs = match report.ranks.iter().find_map(|r| r.roofs) {
        Some(_) => "roofline: class, and achieved share of the roof at the op's flops per byte",
        None => "roofline: no calibration on this host (run `pinch calibrate` once)",
    };
    format!("Top ops per rank ({roofs})\n{t}")
}

/// The top ops of each rank, as a table without its caption.
pub fn ops_rows(ranks: &[RankReport]) -> Table {
    let mut t = table(&[
        "rank", "op", "category", "count", "total", "share", "median", "GFLOP/s", "GB/s",
        "roofline",
    ]);
    for r in ranks {
        for op in r.top_ops.iter().take(OPS_SHOWN) {
            t.add_row(vec![
                right(r.rank.to_string()),
                Cell::new(&op.name),
                Cell::new(op.category.name()),
                right(op.count.to_string()),
                right(fmt_ns(op.total_ns)),
                right(fmt_pct(op.share_pct)),
                right(fmt_ns(op.median_ns)),
                right(op.achieved_gflops.map_or("-".into(), |g| format!("{g:.2}"))),
                right(op.achieved_gbps.map_or("-".into(), |g| format!("{g:.2}"))),
                Cell::new(op.roofline.map_or("-".into(), roofline_cell)),
            ]);
        }
    }
    t
}

/// Collective groups printed (report.json has them all).
const COLLECTIVE_ROWS: usize = 8;

/// "tcp 61%": the link the collective crossed and its bus bandwidth's share of the link's peak.
fn link_cell(c: &pinch_analyzer::CollectiveReport) -> String {
    match (&c.link, c.link_efficiency_pct) {
        (Some(link), Some(pct)) => format!("{} {pct:.0}%", link.transport),
        _ => "-".into(),
    }
}

fn collectives_table(report: &Report) -> String {
    collectives_table_of(&report.collectives)
}

/// The columns every collectives table shows (a run's adds the share of the link's peak).
pub const COLLECTIVE_COLUMNS: [&str; 10] = [
    "collective",
    "size",
    "ranks",
    "count",
    "median",
    "p90",
    "algbw GB/s",
    "busbw GB/s",
    "arrival skew",
    "waiting",
];

/// The collectives table of any list of collective groups.
pub fn collectives_table_of(collectives: &[pinch_analyzer::CollectiveReport]) -> String {
    let mut t = table(&[COLLECTIVE_COLUMNS.as_slice(), &["of link peak"]].concat());
    for c in collectives.iter().take(COLLECTIVE_ROWS) {
        let size = if c.sizes_vary {
            format!("≤{}", fmt_bytes(c.size_class_bytes))
        } else {
            fmt_bytes(c.message_bytes)
        };
        t.add_row(vec![
            Cell::new(c.kind.name()),
            right(size),
            right(c.participants.to_string()),
            right(c.count.to_string()),
            right(fmt_ns(c.median_ns)),
            right(fmt_ns(c.p90_ns)),
            right(c.algbw_gbps.map_or("-".into(), |g| format!("{g:.3}"))),
            right(c.busbw_gbps.map_or("-".into(), |g| format!("{g:.3}"))),
            right(
                c.mean_skew_ns
                    .map_or("-".into(), |s| fmt_ns(s.round() as u64)),
            ),
            right(c.wait_pct.map_or("-".into(), |w| format!("{w:.0}%"))),
            right(link_cell(c)),
        ]);
    }
    let more = match collectives.len().saturating_sub(COLLECTIVE_ROWS) {
        0 => String::new(),
        n => format!("\n  {n} more, shorter in total, in report.json"),
    };
    format!(
        "Collectives, longest in total first (bus bandwidth with nccl-tests' factors; waiting: \
         share of their time spent waiting for the last peer; of link peak: bus bandwidth over \
         the calibrated peak of the link crossed)\n{t}{more}"
    )
}

/// Per rank, how often it arrived last at a collective and what its lateness cost the others.
pub fn stragglers_table(s: &StragglerReport) -> String {
    let mut t = table(&[
        "rank",
        "collectives",
        "last",
        "last share",
        "mean lateness",
        "total lateness",
        "cost to others",
    ]);
    for r in &s.ranks {
        t.add_row(vec![
            right(r.rank.to_string()),
            right(r.collectives.to_string()),
            right(r.times_last.to_string()),
            right(r.last_pct.map_or("-".into(), fmt_pct)),
            right(
                r.mean_lateness_ns
                    .map_or("-".into(), |ns| fmt_ns(ns.round() as u64)),
            ),
            right(fmt_ns(r.total_lateness_ns)),
            right(fmt_ns(r.cost_to_others_ns)),
        ]);
    }
    format!(
        "Stragglers: who arrived last at each of {} collectives, by how much after the rank \
         before it, and the others' waiting that caused\n{t}",
        s.collectives
    )
}

/// The serving metrics: throughput, a latency table, goodput, the replicas and the digest.
fn serving_text(s: &ServingReport) -> String {
    let per_s = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.2}"));
    let summary = format!(
        "Serving (vLLM's definitions; percentiles interpolated)\n  {} requests, {} prompt + {} output tokens in {}; {} preemptions\n  throughput: {} req/s, {} output tok/s, {} total tok/s",
        s.requests,
        s.prompt_tokens,
        s.output_tokens,
        s.duration_s
            .map_or("unknown time".into(), |d| format!("{d:.2} s")),
        s.preemptions,
        per_s(s.request_throughput_per_s),
        per_s(s.output_token_throughput_per_s),
        per_s(s.total_token_throughput_per_s),
    );
    let goodput = s.goodput.as_ref().map_or(
        "  goodput: no SLO given (e.g. pinch run --slo ttft=200ms,tpot=50ms)".into(),
        |g| {
            format!(
                "  goodput ({}): {} of {} requests met it ({}), {} req/s",
                g.slo,
                g.requests,
                s.requests,
                fmt_pct(g.fraction * 100.0),
                per_s(g.requests_per_s),
            )
        },
    );
    format!(
        "{summary}\n{}\n{goodput}\n{}\n  outputs digest: {}",
        latency_table(s),
        replicas_table(s),
        s.outputs_digest
    )
}

fn latency_table(s: &ServingReport) -> Table {
    let mut t = table(&["latency", "mean", "median", "p90", "p99"]);
    for (name, stats) in [
        ("TTFT", &s.ttft),
        ("TPOT", &s.tpot),
        ("ITL", &s.itl),
        ("E2E", &s.e2e),
    ] {
        let cell = |f: fn(&LatencyStats) -> f64| {
            right(stats.as_ref().map_or("-".into(), |l| fmt_ms(f(l))))
        };
        t.add_row(vec![
            Cell::new(name),
            cell(|l| l.mean_ms),
            cell(|l| l.median_ms),
            cell(|l| l.p90_ms),
            cell(|l| l.p99_ms),
        ]);
    }
    t
}

fn replicas_table(s: &ServingReport) -> Table {
    let mut t = table(&["replica", "requests", "output tokens"]);
    for r in &s.per_replica {
        t.add_row(vec![
            right(r.replica.to_string()),
            right(r.requests.to_string()),
            right(r.output_tokens.to_string()),
        ]);
    }
    t
}

/// Milliseconds in the unit that reads best, like `fmt_ns`.
fn fmt_ms(ms: f64) -> String {
    fmt_ns((ms * 1e6).round().max(0.0) as u64)
}

fn nodes_table(report: &Report) -> String {
    let mut t = table(&["node", "host", "ranks", "cpu mean", "cpu max"]);
    for n in &report.nodes {
        let ranks: Vec<String> = n.ranks.iter().map(u32::to_string).collect();
        t.add_row(vec![
            right(n.node.to_string()),
            Cell::new(&n.host),
            Cell::new(ranks.join(", ")),
            right(n.cpu_utilization_mean_pct.map_or("-".into(), fmt_pct)),
            right(n.cpu_utilization_max_pct.map_or("-".into(), fmt_pct)),
        ]);
    }
    let sources: Vec<String> = report
        .nodes
        .iter()
        .map(|n| sources_of(report, n.node))
        .collect();
    format!("Nodes\n{t}\nCounter sources\n{}", sources.join("\n"))
}

/// How each node's clock was put on the run's time base.
fn clock_table(report: &Report) -> String {
    let mut t = table(&[
        "node",
        "method",
        "offset",
        "residual",
        "bound",
        "collectives",
    ]);
    for n in &report.nodes {
        let Some(c) = &n.clock else {
            continue;
        };
        let method = match c.method {
            ClockMethod::Guessed => "guessed",
            ClockMethod::Anchors => "anchors",
            ClockMethod::Collectives => "collectives",
        };
        t.add_row(vec![
            right(n.node.to_string()),
            Cell::new(method),
            right(fmt_signed_ns(c.offset_ns)),
            right(c.residual_ns.map_or("-".into(), fmt_ns)),
            right(c.bound_ns.map_or("-".into(), |b| format!("±{}", fmt_ns(b)))),
            right(c.collectives.to_string()),
        ]);
    }
    format!(
        "Clock alignment (offset added to the node's anchored times; residual: how far its \
         collective completions still differ from the others'; bound: the most causality lets \
         the offset be wrong)\n{t}"
    )
}

/// A source's line, "  node 0 procfs: read (13 counters)" or "  node 0 nvml: not read: ...",
/// then its notes, one per line.
fn source_line(node: u32, s: &pinch_analyzer::CounterSourceReport) -> String {
    let head = match (&s.reason, s.read, s.failed_at_ns) {
        (Some(reason), true, Some(_)) => format!(
            "  node {node} {}: read ({} counters) until it failed: {reason}",
            s.source,
            s.counters.len()
        ),
        (_, true, _) => format!(
            "  node {node} {}: read ({} counters)",
            s.source,
            s.counters.len()
        ),
        (Some(reason), false, _) => format!("  node {node} {}: not read: {reason}", s.source),
        (None, false, _) => format!("  node {node} {}: not read", s.source),
    };
    let notes = s.notes.iter().map(|n| format!("\n      {n}"));
    std::iter::once(head).chain(notes).collect()
}

/// One line per source: "  node 0 procfs: read (13 counters)", "  node 0 nvml: not read: ...".
fn sources_of(report: &Report, node: u32) -> String {
    let lines: Vec<String> = report
        .run
        .counter_sources
        .iter()
        .filter(|s| s.node == node)
        .map(|s| source_line(node, s))
        .collect();
    if lines.is_empty() {
        format!("  node {node}: none recorded (its log ends early)")
    } else {
        lines.join("\n")
    }
}

pub fn findings_text(findings: &[Finding]) -> String {
    if findings.is_empty() {
        return "Findings\n  none: nothing stands out".into();
    }
    let items: Vec<String> = findings
        .iter()
        .enumerate()
        .map(|(i, f)| finding_text(i + 1, f))
        .collect();
    format!("Findings (most urgent first)\n{}", items.join("\n"))
}

fn finding_text(n: usize, f: &Finding) -> String {
    let level = serde_json::to_value(f.level)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string));
    let mut where_ = Vec::new();
    if !f.location.nodes.is_empty() {
        where_.push(format!("nodes {}", join(&f.location.nodes)));
    }
    if !f.location.ranks.is_empty() {
        where_.push(format!("ranks {}", join(&f.location.ranks)));
    }
    if !f.location.ops.is_empty() {
        where_.push(format!("ops {}", f.location.ops.join(", ")));
    }
    if !f.location.links.is_empty() {
        where_.push(format!("links {}", f.location.links.join(", ")));
    }
    if !f.location.experts.is_empty() {
        where_.push(format!("experts {}", join(&f.location.experts)));
    }
    let evidence: Vec<String> = f
        .evidence
        .iter()
        .map(|(k, v)| format!("{k}={}", fmt_number(*v)))
        .collect();
    format!(
        "  {n}. [{}] {}\n     where: {}{}\n     evidence: {}\n     suggestion: {}",
        level.unwrap_or_default(),
        f.summary,
        if where_.is_empty() {
            "the whole run".into()
        } else {
            where_.join("; ")
        },
        when_line(f),
        evidence.join(", "),
        f.suggestion,
    )
}

/// Where in time a finding shows, as a line of its own; empty for one about the whole run.
fn when_line(f: &Finding) -> String {
    let (Some(first), Some(last)) = (f.stretches.first(), f.stretches.last()) else {
        return String::new();
    };
    let total_ns: u64 = f.stretches.iter().map(|s| s.duration_ns).sum();
    let count = f.stretches.len();
    format!(
        "\n     when: {count} stretch{}{} from {:+.6} s to {:+.6} s, {} in all (report.json lists \
         them; the dashboard marks them)",
        if count == 1 { "" } else { "es" },
        if count == MAX_STRETCHES {
            " (the most a finding keeps)"
        } else {
            ""
        },
        first.start_ns as f64 / 1e9,
        last.start_ns as f64 / 1e9,
        fmt_ns(total_ns)
    )
}

fn join(values: &[u32]) -> String {
    values
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn fmt_number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    }
}

pub fn fmt_pct(v: f64) -> String {
    format!("{v:.1}%")
}

/// A duration that may be negative: "-13.6 µs", "0 ns".
fn fmt_signed_ns(ns: i64) -> String {
    let sign = if ns < 0 { "-" } else { "" };
    format!("{sign}{}", fmt_ns(ns.unsigned_abs()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes_read_naturally() {
        assert_eq!(fmt_ns(999), "999 ns");
        assert_eq!(fmt_ns(12_345), "12.3 µs");
        assert_eq!(fmt_ns(4_500_000), "4.50 ms");
        assert_eq!(fmt_ns(3_200_000_000), "3.20 s");
        assert_eq!(fmt_signed_ns(-13_569), "-13.6 µs");
        assert_eq!(fmt_signed_ns(0), "0 ns");
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(4096), "4.0 KiB");
        assert_eq!(fmt_bytes(3 << 20), "3.0 MiB");
    }

    #[test]
    fn the_serving_section_shows_throughput_latencies_goodput_and_replicas() {
        let stats = |base: f64| {
            Some(LatencyStats {
                mean_ms: base,
                median_ms: base,
                p90_ms: base * 2.0,
                p99_ms: base * 3.0,
            })
        };
        let serving = ServingReport {
            requests: 3,
            prompt_tokens: 35,
            output_tokens: 8,
            duration_s: Some(0.5),
            request_throughput_per_s: Some(6.0),
            output_token_throughput_per_s: Some(16.0),
            total_token_throughput_per_s: Some(86.0),
            ttft: stats(200.0),
            tpot: None,
            itl: stats(0.5),
            e2e: stats(270.0),
            goodput: Some(pinch_analyzer::Goodput {
                slo: "ttft=250ms".into(),
                requests: 1,
                requests_per_s: Some(2.0),
                fraction: 1.0 / 3.0,
            }),
            preemptions: 2,
            output_rate: None,
            per_replica: vec![pinch_analyzer::ReplicaServing {
                replica: 0,
                requests: 3,
                output_tokens: 8,
            }],
            outputs_digest: "abc123".into(),
        };
        let text = serving_text(&serving);
        for needle in [
            "3 requests, 35 prompt + 8 output tokens in 0.50 s; 2 preemptions",
            "6.00 req/s, 16.00 output tok/s, 86.00 total tok/s",
            "200.00 ms",
            "600.00 ms",
            "500.0 µs",
            "goodput (ttft=250ms): 1 of 3 requests met it (33.3%), 2.00 req/s",
            "outputs digest: abc123",
        ] {
            assert!(text.contains(needle), "{needle:?} not in\n{text}");
        }
        let tpot_row = text
            .lines()
            .find(|l| l.contains("TPOT"))
            .unwrap_or_default();
        assert!(tpot_row.contains('-'), "{tpot_row}");
    }
}
