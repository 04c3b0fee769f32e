//! What the dashboard shows, gathered once from the analyzer's report and timeline: the views
//! render from this and nothing else, so a recorded run and a live one look the same.

use pinch_analyzer::{
    Ceilings, CollectiveReport, Finding, OpReport, Report, RooflineClass, Series, ServingReport,
    SpanColumns, SpanRow, Timeline, read_span_row,
};
use pinch_traces::Category;
use std::collections::BTreeMap;
use std::path::PathBuf;

/// How far back the overview's sparklines reach (all of a shorter run).
pub const SPARK_WINDOW_NS: i64 = 60_000_000_000;
/// How many points a sparkline holds (one per second of its minute).
pub const SPARK_POINTS: usize = 60;

/// Everything the views show.
#[derive(Debug)]
pub struct Dashboard {
    /// One line naming the run: its id, workload, model and layout.
    pub title: String,
    /// Whether the run is still going (a live source) or recorded.
    pub live: bool,
    /// Spans the collectors dropped, over all ranks; `None` when no rank counted them.
    pub dropped_spans: Option<u64>,
    pub nodes: Vec<NodeRow>,
    pub ranks: Vec<RankRow>,
    /// Every span, compact; the timeline's rows are its tracks.
    pub spans: SpanColumns,
    /// Where a selected span's arguments come from.
    pub details: Details,
    /// Ranked, most severe first (as the report has them).
    pub findings: Vec<Finding>,
    pub ops: Vec<OpRow>,
    /// The roofs of the first rank that has them (ranks of one run share a machine type).
    pub roofs: Option<Ceilings>,
    pub comm: Comm,
    pub serving: Option<Serving>,
}

/// One node's gauges.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeRow {
    pub node: u32,
    pub host: String,
    pub cpu_pct: Option<f64>,
    pub gpu_pct: Option<f64>,
    /// Memory available at the run's end (the kernel's MemAvailable).
    pub memory_available_bytes: Option<f64>,
    /// The busier direction (received or sent), over the run.
    pub nic_bytes_per_s: Option<f64>,
    /// The calibrated link rate the NIC throughput is held against.
    pub link_bytes_per_s: Option<f64>,
    /// CPU utilization over the run's last minute (all of a shorter run), `SPARK_POINTS` points.
    pub cpu_history: Vec<u64>,
    /// NIC bytes per second, the busier direction, over the same stretch.
    pub nic_history: Vec<u64>,
}

/// One rank's share of wall time by category.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RankRow {
    pub rank: u32,
    pub node: u32,
    pub compute_pct: Option<f64>,
    pub communication_pct: Option<f64>,
    pub memory_pct: Option<f64>,
    pub host_pct: Option<f64>,
    pub wait_pct: Option<f64>,
    pub idle_pct: Option<f64>,
    pub dropped_spans: Option<u64>,
}

/// One op over all ranks.
#[derive(Clone, Debug, PartialEq)]
pub struct OpRow {
    pub name: String,
    pub category: Category,
    pub count: u64,
    pub total_ns: u64,
    /// Of all ranks' wall time.
    pub share_pct: f64,
    /// The median over ranks of the ops' median duration.
    pub median_ns: u64,
    pub gflops: Option<f64>,
    pub gbps: Option<f64>,
    /// FLOPs per byte by the cost model.
    pub intensity: Option<f64>,
    pub class: Option<RooflineClass>,
}

/// The communication view's numbers.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Comm {
    /// The ranks of the matrix, in order.
    pub ranks: Vec<u32>,
    /// Bytes and achieved GB/s from each rank to each other, by (src, dst).
    pub pairs: BTreeMap<(u32, u32), PairCell>,
    pub collectives: Vec<CollectiveReport>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PairCell {
    pub bytes: u64,
    pub gbps: Option<f64>,
}

/// The serving view's numbers: the report's latencies and the output rate over time.
#[derive(Clone, Debug, PartialEq)]
pub struct Serving {
    pub report: ServingReport,
    /// Output tokens per second over the run, in equal bins (empty when the report has none).
    pub tokens_per_s: Vec<u64>,
    /// How long each bin is; `None` when the report has no rate over time.
    pub bin_ns: Option<u64>,
}

/// Where the arguments of a selected span come from: the dashboard keeps only what it draws.
#[derive(Debug)]
pub enum Details {
    /// The run directory whose spans.parquet has a row per span, in the columns' order.
    Stored(PathBuf),
    /// A timeline held whole (a live run, or one whose tables could not be stored).
    Held(Box<Timeline>),
}

impl Details {
    /// Span `index` whole; an error says in one line why it cannot be read.
    pub fn row(&self, index: usize) -> Result<SpanRow, String> {
        match self {
            Details::Stored(dir) => read_span_row(dir, index).map_err(|e| e.to_string()),
            Details::Held(timeline) => {
                SpanRow::of(timeline, index).ok_or_else(|| format!("no span {index}"))
            }
        }
    }
}

impl Dashboard {
    /// The dashboard of a run that has recorded nothing yet.
    pub fn starting(title: String) -> Dashboard {
        Dashboard {
            title,
            live: true,
            dropped_spans: None,
            nodes: Vec::new(),
            ranks: Vec::new(),
            spans: SpanColumns::default(),
            details: Details::Held(Box::default()),
            findings: Vec::new(),
            ops: Vec::new(),
            roofs: None,
            comm: Comm::default(),
            serving: None,
        }
    }

    /// The dashboard of a run: its report, its spans, its counters' series (timeline ns) and
    /// where a span's arguments are read.
    pub fn new(
        report: &Report,
        spans: SpanColumns,
        series: &[Series],
        details: Details,
    ) -> Dashboard {
        let end_ns = spans.end_ns();
        let nodes = report
            .nodes
            .iter()
            .map(|n| node_row(report, series, end_ns, n.node, &n.host))
            .collect();
        let ranks: Vec<RankRow> = report.ranks.iter().map(rank_row).collect();
        let dropped: Vec<u64> = ranks.iter().filter_map(|r| r.dropped_spans).collect();
        Dashboard {
            title: title_of(report),
            live: false,
            dropped_spans: (!dropped.is_empty()).then(|| dropped.iter().sum()),
            nodes,
            ranks,
            findings: report.findings.clone(),
            ops: op_rows(&report.ranks),
            roofs: report.ranks.iter().find_map(|r| r.roofs),
            comm: comm_of(report),
            serving: report.serving.clone().map(serving_of),
            spans,
            details,
        }
    }

    /// The dashboard of a run analysed in this process: its timeline is kept for the spans'
    /// arguments.
    pub fn of_timeline(report: &Report, timeline: Timeline) -> Dashboard {
        // A timeline keeps its spans sorted and its names whole, which is all the columns ask.
        let spans = SpanColumns::from_timeline(&timeline).unwrap_or_default();
        let series = timeline.series.clone();
        Dashboard::new(report, spans, &series, Details::Held(Box::new(timeline)))
    }
}

fn serving_of(report: ServingReport) -> Serving {
    let (tokens_per_s, bin_ns) = match &report.output_rate {
        Some(rate) => (
            rate.tokens_per_s.iter().map(|r| r.round() as u64).collect(),
            Some(rate.bin_ns),
        ),
        None => (Vec::new(), None),
    };
    Serving {
        report,
        tokens_per_s,
        bin_ns,
    }
}

fn title_of(report: &Report) -> String {
    let run = &report.run;
    format!(
        "pinch run {}: {}, model '{}', {} nodes, {} ranks",
        run.id,
        run.workload,
        run.model,
        report.nodes.len(),
        report.ranks.len()
    )
}

fn rank_row(rank: &pinch_analyzer::RankReport) -> RankRow {
    let pct = rank.breakdown_pct.as_ref();
    RankRow {
        rank: rank.rank,
        node: rank.node,
        compute_pct: pct.map(|p| p.compute),
        communication_pct: pct.map(|p| p.communication),
        memory_pct: pct.map(|p| p.memory),
        host_pct: pct.map(|p| p.host),
        wait_pct: pct.map(|p| p.wait),
        idle_pct: pct.map(|p| p.idle),
        dropped_spans: rank.dropped_spans,
    }
}

/// A node's gauges: the report's CPU mean, the counters' last values and last minute.
fn node_row(report: &Report, all: &[Series], end_ns: i64, node: u32, host: &str) -> NodeRow {
    let series = |name: &'static str| {
        all.iter()
            .filter(move |s| s.node.0 == node && s.counter == name)
    };
    let cpu = series("cpu.utilization").next();
    let gpu = series("gpu.utilization").next();
    let nic: Vec<(Vec<i64>, Vec<f64>)> = ["net.rx_bytes", "net.tx_bytes"]
        .iter()
        .flat_map(|name| series(name))
        .map(|s| (s.times_ns.clone(), s.values.clone()))
        .collect();
    let nic_rates = busier_rates(&nic);
    let link = report
        .phases
        .iter()
        .flat_map(|p| &p.nodes)
        .find(|n| n.node == node && n.nic_link_pct.is_some());
    let nic_mean = mean_rate(&nic_rates);
    NodeRow {
        node,
        host: host.to_string(),
        cpu_pct: report
            .nodes
            .iter()
            .find(|n| n.node == node)
            .and_then(|n| n.cpu_utilization_mean_pct),
        gpu_pct: gpu.and_then(|s| mean(&s.values)),
        memory_available_bytes: series("mem.available").find_map(|s| s.values.last().copied()),
        nic_bytes_per_s: nic_mean,
        // The phases hold the busier direction against the link: the link is their quotient.
        link_bytes_per_s: link.and_then(|l| {
            let rate = l.nic_rx_bytes_per_s?.max(l.nic_tx_bytes_per_s?);
            let pct = l.nic_link_pct?;
            (pct > 0.0).then(|| rate / (pct / 100.0))
        }),
        cpu_history: cpu.map_or_else(Vec::new, |s| last_minute(&s.times_ns, &s.values, end_ns)),
        nic_history: last_minute(
            &nic_rates.iter().map(|r| r.0).collect::<Vec<_>>(),
            &nic_rates.iter().map(|r| r.1).collect::<Vec<_>>(),
            end_ns,
        ),
    }
}

/// Bytes per second between consecutive samples of cumulative byte counters (receive, send),
/// the busier direction at each time: a link carries each direction at its full rate.
fn busier_rates(counters: &[(Vec<i64>, Vec<f64>)]) -> Vec<(i64, f64)> {
    let mut rates: BTreeMap<i64, f64> = BTreeMap::new();
    for (times, values) in counters {
        for k in 1..times.len().min(values.len()) {
            let dt_ns = times[k] - times[k - 1];
            let bytes = values[k] - values[k - 1];
            if dt_ns > 0 && bytes >= 0.0 {
                let rate = rates.entry(times[k]).or_default();
                *rate = rate.max(bytes * 1e9 / dt_ns as f64);
            }
        }
    }
    rates.into_iter().collect()
}

fn mean_rate(rates: &[(i64, f64)]) -> Option<f64> {
    let values: Vec<f64> = rates.iter().map(|r| r.1).collect();
    mean(&values)
}

fn mean(values: &[f64]) -> Option<f64> {
    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
}

/// The mean of each of `SPARK_POINTS` equal slots of the minute before `end_ns` (of the whole
/// run from 0 if shorter); slots with no sample repeat the one before, or stay 0 at the start.
fn last_minute(times_ns: &[i64], values: &[f64], end_ns: i64) -> Vec<u64> {
    let window_ns = SPARK_WINDOW_NS.min(end_ns).max(1);
    let from_ns = end_ns - window_ns;
    let mut sums = vec![(0.0, 0_u32); SPARK_POINTS];
    for (&t, &v) in times_ns.iter().zip(values) {
        if t < from_ns || t > end_ns {
            continue;
        }
        let slot = (((t - from_ns) as u128 * SPARK_POINTS as u128) / window_ns as u128)
            .min(SPARK_POINTS as u128 - 1) as usize;
        sums[slot].0 += v;
        sums[slot].1 += 1;
    }
    let mut last = 0;
    sums.iter()
        .map(|&(sum, n)| {
            if n > 0 {
                last = (sum / f64::from(n)).max(0.0).round() as u64;
            }
            last
        })
        .collect()
}

/// Each op summed over the ranks, largest total first.
fn op_rows(ranks: &[pinch_analyzer::RankReport]) -> Vec<OpRow> {
    let mut by_name: BTreeMap<&str, Vec<&OpReport>> = BTreeMap::new();
    for op in ranks.iter().flat_map(|r| &r.top_ops) {
        by_name.entry(&op.name).or_default().push(op);
    }
    let wall_ns: u64 = ranks.iter().filter_map(|r| r.wall_ns).sum();
    let mut rows: Vec<OpRow> = by_name
        .into_iter()
        .map(|(name, ops)| op_row(name, &ops, wall_ns))
        .collect();
    rows.sort_by(|a, b| b.total_ns.cmp(&a.total_ns).then(a.name.cmp(&b.name)));
    rows
}

fn op_row(name: &str, ops: &[&OpReport], wall_ns: u64) -> OpRow {
    let total_ns: u64 = ops.iter().map(|o| o.total_ns).sum();
    let mut medians: Vec<u64> = ops.iter().map(|o| o.median_ns).collect();
    medians.sort_unstable();
    let seconds = total_ns as f64 / 1e9;
    let sum = |f: fn(&OpReport) -> Option<u64>| -> Option<u64> {
        ops.iter().map(|o| f(o)).sum::<Option<u64>>()
    };
    let flops = sum(|o| o.flops);
    let bytes = sum(|o| o.bytes);
    let rate = |amount: Option<u64>| {
        amount
            .filter(|_| seconds > 0.0)
            .map(|a| a as f64 / seconds / 1e9)
    };
    OpRow {
        name: name.to_string(),
        category: ops[0].category,
        count: ops.iter().map(|o| o.count).sum(),
        total_ns,
        share_pct: if wall_ns > 0 {
            100.0 * total_ns as f64 / wall_ns as f64
        } else {
            0.0
        },
        median_ns: medians[medians.len() / 2],
        gflops: rate(flops),
        gbps: rate(bytes),
        intensity: flops
            .zip(bytes)
            .filter(|&(_, b)| b > 0)
            .map(|(f, b)| f as f64 / b as f64),
        class: ops.iter().find_map(|o| o.roofline.map(|r| r.class)),
    }
}

fn comm_of(report: &Report) -> Comm {
    Comm {
        ranks: report.traffic.ranks.clone(),
        pairs: report
            .traffic
            .pairs
            .iter()
            .map(|p| {
                let cell = PairCell {
                    bytes: p.bytes,
                    gbps: p.gbps,
                };
                ((p.src, p.dst), cell)
            })
            .collect(),
        collectives: report.collectives.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_minute_is_a_point_per_second_with_gaps_held() {
        let end = 120_000_000_000;
        let times = [end - 59_500_000_000, end - 1_000_000];
        let points = last_minute(&times, &[40.0, 80.0], end);
        assert_eq!(points.len(), SPARK_POINTS);
        assert_eq!(points[0], 40);
        assert_eq!(points[30], 40);
        assert_eq!(points[59], 80);
        // A run shorter than a minute spreads over all the points.
        let short = last_minute(&[100_000_000, 3_990_000_000], &[10.0, 90.0], 4_000_000_000);
        assert_eq!((short[1], short[58], short[59]), (10, 10, 90));
    }

    #[test]
    fn nic_rates_are_byte_deltas_over_time_in_the_busier_direction() {
        let rx = (
            vec![0, 1_000_000_000, 2_000_000_000],
            vec![0.0, 100.0, 300.0],
        );
        let tx = (
            vec![0, 1_000_000_000, 2_000_000_000],
            vec![0.0, 150.0, 160.0],
        );
        let rates = busier_rates(&[rx, tx]);
        assert_eq!(rates, [(1_000_000_000, 150.0), (2_000_000_000, 200.0)]);
    }
}
