//! HTA's analyses of Kineto traces as a person reads them: a header, then tables (in the style
//! of `render`) of each rank's GPU time, kernel time by type, and idle time per stream.

use crate::render::{
    COLLECTIVE_COLUMNS, findings_text, fmt_bytes, fmt_ns, fmt_pct, ops_rows, ranks_table_of,
    stragglers_table, table,
};
use comfy_table::{Cell, CellAlignment};
use pinch_analyzer::hta::{HtaReport, IdleShare, RankAnalysis, StreamIdle, TimeBase, types};
use pinch_analyzer::kineto_timeline::{KinetoCollective, KinetoPinchReport};
use pinch_analyzer::{Finding, RankReport};
use pinch_traces::kineto::KinetoRun;

pub fn render(run: &KinetoRun, report: &HtaReport) -> String {
    let mut sections = vec![header(run, report), ranks_table(report)];
    if !report.kernel_types.is_empty() {
        sections.push(types_table(report));
    }
    if report.ranks.iter().any(|r| !r.idle.is_empty()) {
        sections.push(idle_table(report));
    }
    sections.join("\n\n") + "\n"
}

/// pinch's own analyses of the traces, after HTA's: the tables of `pinch analyze RUN` on each
/// rank's device lanes, then the findings.
pub fn render_pinch(report: &KinetoPinchReport) -> String {
    let ranks = short_op_names(&report.ranks);
    let findings = short_finding_names(&report.findings);
    let mut sections = vec![
        format!(
            "pinch's analyses ({} device and {} host spans; wall = first kernel start to last \
             kernel end, idle = no kernel, copy or fill on any stream; exact times, every step)",
            report.device_spans, report.host_spans
        ),
        ranks_table_of(&ranks),
        format!(
            "Top kernels per rank (no flop or byte counts in Kineto traces; names shortened, \
             whole in --json)\n{}",
            ops_rows(&ranks)
        ),
    ];
    if report.clamped_spans > 0 {
        sections.push(format!(
            "{} spans end past the timeline's horizon and were cut short there",
            report.clamped_spans
        ));
    }
    if !report.collectives.is_empty() {
        sections.push(format!(
            "{}\n{}",
            collectives_heading(&report.collectives),
            collectives_table(&report.collectives)
        ));
    }
    if report.stragglers.collectives > 0 {
        sections.push(stragglers_table(&report.stragglers));
    }
    sections.push(findings_text(&findings));
    let skipped: Vec<String> = report
        .skipped_detectors
        .iter()
        .map(|s| format!("  - {}: {}", kind_name(s.kind), s.reason))
        .collect();
    sections.push(format!(
        "Not judged on Kineto traces\n{}",
        skipped.join("\n")
    ));
    sections.join("\n\n") + "\n"
}

/// Longest kernel name the tables show.
const NAME_CHARS: usize = 80;

/// A C++ kernel name a table can hold: no `void `, no argument list, at most `NAME_CHARS`.
fn short_name(name: &str) -> String {
    let name = name.strip_prefix("void ").unwrap_or(name);
    let mut depth = 0i32;
    let mut end = name.len();
    for (i, c) in name.char_indices() {
        match c {
            '<' => depth += 1,
            '>' => depth -= 1,
            '(' if depth <= 0 && i > 0 => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    let head = &name[..end];
    if head.chars().count() <= NAME_CHARS {
        return head.to_string();
    }
    let cut: String = head.chars().take(NAME_CHARS - 1).collect();
    cut + "…"
}

fn short_op_names(ranks: &[RankReport]) -> Vec<RankReport> {
    let mut ranks = ranks.to_vec();
    for op in ranks.iter_mut().flat_map(|r| r.top_ops.iter_mut()) {
        op.name = short_name(&op.name);
    }
    ranks
}

fn short_finding_names(findings: &[Finding]) -> Vec<Finding> {
    let mut findings = findings.to_vec();
    for f in &mut findings {
        for op in &mut f.location.ops {
            let short = short_name(op);
            f.summary = f.summary.replace(op.as_str(), &short);
            *op = short;
        }
    }
    findings
}

/// A finding kind as report.json spells it.
fn kind_name(kind: pinch_analyzer::FindingKind) -> String {
    serde_json::to_value(kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn header(run: &KinetoRun, report: &HtaReport) -> String {
    let n = run.ranks.len();
    let world = report
        .world_size
        .map_or(String::new(), |w| format!(" of a world of {w}"));
    let events: usize = run.ranks.iter().map(|r| r.trace.event_count()).sum();
    let title = format!(
        "Kineto traces: {n} rank{}{world}, {events} events",
        if n == 1 { "" } else { "s" }
    );
    let c = &report.cleanup;
    let plural = if c.profiler_steps == 1 { "" } else { "s" };
    let steps = if c.last_step_dropped {
        let dropped: usize = report.ranks.iter().map(|r| r.dropped_kernels).sum();
        format!(
            "{} ProfilerSteps: each rank's last step dropped, as HTA does ({dropped} device events)",
            c.profiler_steps
        )
    } else {
        format!(
            "{} ProfilerStep{plural}: every event kept",
            c.profiler_steps
        )
    };
    let times = match report.options.time_base {
        TimeBase::HtaMicros => "times rounded to whole µs as HTA does",
        TimeBase::Exact => "times to the ns",
    };
    let mut lines = vec![title, format!("{steps}; {times}")];
    if !c.ranks_without_steps.is_empty() {
        let ranks: Vec<String> = c.ranks_without_steps.iter().map(u32::to_string).collect();
        lines.push(format!(
            "ranks without ProfilerSteps, kept whole: {}",
            ranks.join(", ")
        ));
    }
    lines.join("\n")
}

fn right(text: String) -> Cell {
    Cell::new(text).set_alignment(CellAlignment::Right)
}

fn pct_or_dash(v: Option<f64>) -> String {
    v.map_or("-".to_string(), fmt_pct)
}

fn ns(v: i64) -> String {
    if v < 0 {
        format!("-{}", fmt_ns(v.unsigned_abs()))
    } else {
        fmt_ns(v.unsigned_abs())
    }
}

fn ranks_table(report: &HtaReport) -> String {
    let mut t = table(&[
        "rank",
        "kernels",
        "kernel span",
        "idle",
        "compute",
        "non-compute",
        "comm overlap",
    ]);
    for r in &report.ranks {
        t.add_row(rank_row(r));
    }
    format!("GPU time per rank: share of the span from first kernel start to last kernel end\n{t}")
}

fn rank_row(r: &RankAnalysis) -> Vec<Cell> {
    let mut row = vec![right(r.rank.to_string()), right(r.kernels.to_string())];
    match &r.temporal {
        Some(t) => row.extend([
            right(ns(t.span_ns)),
            right(pct_or_dash(t.idle_pct())),
            right(pct_or_dash(t.compute_pct())),
            right(pct_or_dash(t.non_compute_pct())),
        ]),
        None => row.extend((0..4).map(|_| right("-".to_string()))),
    }
    row.push(right(pct_or_dash(r.comm_overlap_pct)));
    row
}

fn types_table(report: &HtaReport) -> String {
    let mut t = table(&["kernel type", "time", "share"]);
    for k in &report.kernel_types {
        let share = types::share_pct(&report.kernel_types, k);
        t.add_row(vec![
            Cell::new(k.label().to_lowercase()),
            right(ns(k.time_ns)),
            right(pct_or_dash(share)),
        ]);
    }
    format!("Kernel time by type, all ranks (time under several types counted once)\n{t}")
}

fn idle_table(report: &HtaReport) -> String {
    let mut t = table(&[
        "rank",
        "stream",
        "kernels",
        "idle",
        "host wait",
        "kernel wait",
        "other",
    ]);
    for r in &report.ranks {
        for s in &r.idle {
            t.add_row(idle_row(r.rank, s));
        }
    }
    format!(
        "Idle time per stream: host wait = launched after the previous kernel ended; \
         kernel wait = a gap under 30 µs\n{t}"
    )
}

fn idle_row(rank: u32, s: &StreamIdle) -> Vec<Cell> {
    let share = |share: &IdleShare| {
        if share.gaps == 0 {
            return right("-".to_string());
        }
        let ratio = s
            .ratio(share)
            .map_or(String::new(), |r| format!(" ({})", fmt_pct(r * 100.0)));
        right(format!("{}{ratio}", ns(share.time_ns)))
    };
    vec![
        right(rank.to_string()),
        right(s.stream.to_string()),
        right(s.kernels.to_string()),
        right(ns(s.total_ns())),
        share(&s.host_wait),
        share(&s.kernel_wait),
        share(&s.other),
    ]
}

/// The collectives table's heading; it explains unknown sizes only where one is.
fn collectives_heading(collectives: &[KinetoCollective]) -> &'static str {
    if collectives.iter().any(|c| c.message_bytes.is_none()) {
        "A size shown as \"?\" is unknown, and so are its bandwidths: only newer traces carry \
         PyTorch's collective args."
    } else {
        "Message sizes are read from the kernels' args and counted as nccl-tests does."
    }
}

/// Rows of the collectives table; the rest are in --json.
const COLLECTIVE_ROWS: usize = 10;

/// pinch's collectives table of a Kineto job: the columns of `pinch analyze RUN`'s, an
/// unknown size shown as "?" (never 0 B), and no link column (no calibration here).
fn collectives_table(collectives: &[KinetoCollective]) -> String {
    let mut t = table(&COLLECTIVE_COLUMNS);
    for c in collectives.iter().take(COLLECTIVE_ROWS) {
        t.add_row(collective_row(c));
    }
    let more = match collectives.len().saturating_sub(COLLECTIVE_ROWS) {
        0 => String::new(),
        n => format!("\n  {n} more, shorter in total, in --json"),
    };
    format!(
        "Collectives, longest in total first (bus bandwidth with nccl-tests' factors; waiting: \
         share of their time spent waiting for the last peer)\n{t}{more}"
    )
}

fn collective_row(c: &KinetoCollective) -> Vec<Cell> {
    let r = &c.report;
    let size = match c.message_bytes {
        None => "?".to_string(),
        Some(_) if r.sizes_vary => format!("≤{}", fmt_bytes(r.size_class_bytes)),
        Some(bytes) => fmt_bytes(bytes),
    };
    let gbps = |v: Option<f64>| v.map_or("-".into(), |g| format!("{g:.3}"));
    vec![
        Cell::new(r.kind.name()),
        right(size),
        right(r.participants.to_string()),
        right(r.count.to_string()),
        right(fmt_ns(r.median_ns)),
        right(fmt_ns(r.p90_ns)),
        right(gbps(r.algbw_gbps)),
        right(gbps(r.busbw_gbps)),
        right(
            r.mean_skew_ns
                .map_or("-".into(), |s| fmt_ns(s.round() as u64)),
        ),
        right(r.wait_pct.map_or("-".into(), |w| format!("{w:.0}%"))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_names_lose_their_arguments_and_fit_a_table() {
        assert_eq!(
            short_name("void at::native::kernel<4, f<float>(int)>(int, float*)"),
            "at::native::kernel<4, f<float>(int)>"
        );
        assert_eq!(short_name("ampere_sgemm_32x32_nn"), "ampere_sgemm_32x32_nn");
        let long = short_name(&"x".repeat(200));
        assert_eq!(long.chars().count(), NAME_CHARS);
        assert!(long.ends_with('…'));
    }
}
