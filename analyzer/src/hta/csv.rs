//! HTA's CSV files, with its column names and number formats (pandas' `to_csv` of the frames
//! HTA returns), so they can be compared line by line.
//!
//! Pure: returns each file's name and text; the caller writes them.

use super::idle::{IdleShare, StreamIdle};
use super::types::share_pct;
use super::{HtaReport, RankAnalysis};

/// The four files: (name, text).
pub fn csv_files(report: &HtaReport) -> Vec<(&'static str, String)> {
    vec![
        ("temporal_breakdown.csv", temporal_csv(report)),
        ("comm_comp_overlap.csv", overlap_csv(report)),
        ("idle_time_breakdown.csv", idle_csv(report)),
        ("gpu_kernel_breakdown_by_type.csv", types_csv(report)),
    ]
}

pub fn temporal_csv(report: &HtaReport) -> String {
    let mut out = String::from(
        "rank,idle_time(us),compute_time(us),non_compute_time(us),kernel_time(us),\
         idle_time_pctg,compute_time_pctg,non_compute_time_pctg\n",
    );
    for r in &report.ranks {
        out += &temporal_row(r);
    }
    out
}

fn temporal_row(r: &RankAnalysis) -> String {
    let Some(t) = &r.temporal else {
        return format!("{},,,,,,,\n", r.rank);
    };
    let pct = |p: Option<f64>| p.map_or(String::new(), |p| float(round(p, 2)));
    format!(
        "{},{},{},{},{},{},{},{}\n",
        r.rank,
        float(micros(t.idle_ns)),
        float(micros(t.compute_ns)),
        float(micros(t.non_compute_ns)),
        float(micros(t.span_ns)),
        pct(t.idle_pct()),
        pct(t.compute_pct()),
        pct(t.non_compute_pct()),
    )
}

pub fn overlap_csv(report: &HtaReport) -> String {
    let mut out = String::from("rank,comp_comm_overlap_pctg\n");
    for r in &report.ranks {
        let pct = r
            .comm_overlap_pct
            .map_or(String::new(), |p| float(round(p, 2)));
        out += &format!("{},{pct}\n", r.rank);
    }
    out
}

pub fn idle_csv(report: &HtaReport) -> String {
    let mut out = String::from("rank,stream,idle_category,idle_time,idle_time_ratio\n");
    for r in &report.ranks {
        for s in &r.idle {
            out += &idle_rows(r.rank, s);
        }
    }
    out
}

/// HTA writes a row per kind of gap the stream has; its first kernel, with no gap before it,
/// always counts as "other", so that row is always there.
fn idle_rows(rank: u32, s: &StreamIdle) -> String {
    let rows: [(&str, &IdleShare, bool); 3] = [
        ("host_wait", &s.host_wait, s.host_wait.gaps > 0),
        ("kernel_wait", &s.kernel_wait, s.kernel_wait.gaps > 0),
        ("other", &s.other, true),
    ];
    rows.iter()
        .filter(|(_, _, shown)| *shown)
        .map(|(name, share, _)| {
            let ratio = s.ratio(share).map_or(String::new(), |r| float(round(r, 2)));
            format!(
                "{rank},{},{name},{},{ratio}\n",
                s.stream,
                float(micros(share.time_ns))
            )
        })
        .collect()
}

pub fn types_csv(report: &HtaReport) -> String {
    let mut out = String::from("kernel_type,sum,percentage\n");
    for t in &report.kernel_types {
        let pct = share_pct(&report.kernel_types, t);
        let pct = pct.map_or(String::new(), |p| float(round(p, 1)));
        out += &format!("{},{},{pct}\n", t.label(), whole(micros(t.time_ns)));
    }
    out
}

fn micros(ns: i64) -> f64 {
    ns as f64 / 1000.0
}

/// Python's `round(x, digits)`: the nearest value with that many decimals.
fn round(x: f64, digits: usize) -> f64 {
    format!("{x:.digits$}").parse().unwrap_or(x)
}

/// A float as Python writes it: whole numbers keep a `.0`.
fn float(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e16 {
        format!("{x:.1}")
    } else {
        format!("{x}")
    }
}

/// An integer column: whole numbers without a fraction (a fraction only with exact times).
fn whole(x: f64) -> String {
    if x.fract() == 0.0 {
        format!("{x:.0}")
    } else {
        format!("{x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_as_pandas_writes_them() {
        assert_eq!(float(321378.0), "321378.0");
        assert_eq!(float(round(53.5649, 2)), "53.56");
        assert_eq!(float(round(0.999, 2)), "1.0");
        assert_eq!(float(micros(1_500)), "1.5");
        assert_eq!(whole(micros(305_584_000)), "305584");
    }
}
