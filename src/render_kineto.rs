//! HTA's analyses of Kineto traces as a person reads them: a header, then tables (in the style
//! of `render`) of each rank's GPU time, kernel time by type, and idle time per stream.

use crate::render::{fmt_ns, fmt_pct, table};
use comfy_table::{Cell, CellAlignment};
use pinch_analyzer::hta::{HtaReport, IdleShare, RankAnalysis, StreamIdle, TimeBase, types};
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
