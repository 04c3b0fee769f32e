//! A fixed dashboard for the views' snapshot tests and the app's key tests: two nodes, four
//! ranks stepping through compute, an all-reduce and a wait, three findings, a few ops, a
//! traffic matrix and serving latencies. Every number is written here, so snapshots only
//! change when drawing does.

use crate::app::App;
use crate::state::{Comm, Dashboard, Details, NodeRow, OpRow, PairCell, RankRow, Serving};
use crate::view;
use pinch_analyzer::{
    Ceilings, Finding, FindingKind, Level, Location, NameId, RooflineClass, Series, SpanColumns,
    Stretch, TimedSpan, Timeline,
};
use pinch_traces::{Category, CollectiveAttrs, CollectiveKind, Lane, NodeId, Rank, SpanAttrs};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use std::collections::BTreeMap;

const NAMES: [&str; 4] = ["matmul.qkv", "attention", "all_reduce", "barrier"];

/// One step of one rank: qkv, attention, the all-reduce, a wait; 100 µs a step.
fn step_spans(rank: u32, step: u32) -> Vec<TimedSpan> {
    let t0 = i64::from(step) * 100_000 + i64::from(rank) * 2_000;
    let span = |name: u32, category, start: i64, duration_ns: u64, attrs| TimedSpan {
        rank: Rank(rank),
        node: NodeId(rank / 2),
        lane: Lane(0),
        category,
        name: NameId(name),
        start_ns: t0 + start,
        duration_ns,
        attrs,
    };
    let op = |layer| SpanAttrs {
        layer: Some(layer),
        step: Some(step),
        flops: Some(2_000_000_000),
        bytes: Some(40_000_000),
        ..SpanAttrs::default()
    };
    let all_reduce = SpanAttrs {
        step: Some(step),
        bytes: Some(8_388_608),
        collective: Some(CollectiveAttrs {
            kind: CollectiveKind::AllReduce,
            group: 0,
            seq: u64::from(step),
            participants: 4,
            peer: None,
            message_bytes: 8_388_608,
            wait_ns: Some(3_000),
        }),
        ..SpanAttrs::default()
    };
    vec![
        span(0, Category::Compute, 0, 30_000, op(0)),
        span(
            1,
            Category::Compute,
            31_000,
            25_000 + u64::from(rank) * 4_000,
            op(0),
        ),
        span(2, Category::Communication, 70_000, 20_000, all_reduce),
        span(3, Category::Wait, 91_000, 5_000, SpanAttrs::default()),
    ]
}

fn timeline() -> Timeline {
    let spans = (0..4)
        .flat_map(|rank| (0..10).flat_map(move |step| step_spans(rank, step)))
        .collect();
    let cpu = |node: u32| Series {
        node: NodeId(node),
        counter: "cpu.utilization".into(),
        unit: None,
        device: "cpu".into(),
        times_ns: (0..10).map(|s| s * 100_000).collect(),
        values: (0..10).map(|s| 50.0 + f64::from(s * (node + 1))).collect(),
    };
    let names = NAMES.iter().map(|n| n.to_string()).collect();
    Timeline::from_parts(
        1_780_000_000_000_000_000,
        names,
        spans,
        vec![cpu(0), cpu(1)],
    )
}

fn finding(
    kind: FindingKind,
    level: Level,
    severity: f64,
    summary: &str,
    location: Location,
) -> Finding {
    Finding {
        kind,
        level,
        severity,
        summary: summary.into(),
        location,
        evidence: BTreeMap::from([("lateness_ns".into(), 12_000.0), ("share_pct".into(), 18.5)]),
        suggestion: "look at rank 3's attention: it runs 12 µs longer than its peers'".into(),
        stretches: Vec::new(),
    }
}

fn findings() -> Vec<Finding> {
    let ranks = |ranks: &[u32], ops: &[&str]| Location {
        ranks: ranks.to_vec(),
        ops: ops.iter().map(|o| o.to_string()).collect(),
        ..Location::default()
    };
    let mut straggler = finding(
        FindingKind::Straggler,
        Level::Critical,
        0.185,
        "rank 3 arrives last at 100% of all-reduces, 12 µs late on median",
        ranks(&[3], &[]),
    );
    // The others wait from rank 2's arrival at each all-reduce to rank 3's, 2 µs later.
    straggler.stretches = (0..10)
        .map(|step| Stretch {
            start_ns: step * 100_000 + 74_000,
            duration_ns: 2_000,
        })
        .collect();
    vec![
        straggler,
        finding(
            FindingKind::LoadImbalance,
            Level::Warning,
            0.09,
            "attention takes 48% longer on rank 3 than on rank 0",
            ranks(&[3, 0], &["attention"]),
        ),
        finding(
            FindingKind::ComputeBound,
            Level::Info,
            0.6,
            "the run is compute-bound: 60% of wall time in compute",
            Location::default(),
        ),
    ]
}

fn op(name: &str, category: Category, count: u64, total_ns: u64, rates: (f64, f64)) -> OpRow {
    OpRow {
        name: name.into(),
        category,
        count,
        total_ns,
        share_pct: total_ns as f64 / 4_000_000.0 * 100.0,
        median_ns: total_ns / count,
        gflops: (rates.0 > 0.0).then_some(rates.0),
        gbps: Some(rates.1),
        intensity: (rates.0 > 0.0).then_some(rates.0 / rates.1),
        class: (rates.0 > 0.0).then_some(if rates.0 / rates.1 > 20.0 {
            RooflineClass::ComputeBound
        } else {
            RooflineClass::MemoryBound
        }),
    }
}

fn comm() -> Comm {
    let mut pairs = BTreeMap::new();
    for src in 0..4_u32 {
        let dst = (src + 1) % 4;
        let gbps = if src == 3 { 0.9 } else { 2.5 };
        let bytes = 31_457_280 + u64::from(src) * 1_048_576;
        pairs.insert(
            (src, dst),
            PairCell {
                bytes,
                gbps: Some(gbps),
            },
        );
    }
    let collective = serde_json::json!({
        "kind": "all_reduce", "message_bytes": 8388608, "size_class_bytes": 8388608,
        "sizes_vary": false, "participants": 4, "count": 10, "span_count": 40,
        "ranks": [0, 1, 2, 3], "median_ns": 20000, "p90_ns": 21000, "total_ns": 800000,
        "algbw_gbps": 419.43, "busbw_gbps": 629.15, "mean_skew_ns": 3000.0,
        "last_arrival_rank": 3, "wait_pct": 15.0, "link": null, "link_efficiency_pct": null
    });
    Comm {
        ranks: vec![0, 1, 2, 3],
        pairs,
        collectives: vec![serde_json::from_value(collective).expect("a collective report")],
    }
}

fn serving() -> Serving {
    let stats = |median: f64| serde_json::json!({"mean_ms": median * 1.1, "median_ms": median, "p90_ms": median * 1.5, "p99_ms": median * 2.0});
    let report = serde_json::json!({
        "requests": 32, "prompt_tokens": 2048, "output_tokens": 2048, "duration_s": 4.0,
        "request_throughput_per_s": 8.0, "output_token_throughput_per_s": 512.0,
        "total_token_throughput_per_s": 1024.0, "ttft": stats(140.0), "tpot": stats(13.4),
        "itl": stats(12.8), "e2e": stats(990.0), "goodput": null, "preemptions": 0,
        "per_replica": [], "outputs_digest": "00"
    });
    Serving {
        report: serde_json::from_value(report).expect("a serving report"),
        tokens_per_s: vec![120, 480, 512, 530, 406],
        bin_ns: Some(1_000_000_000),
    }
}

/// The fixed dashboard.
pub fn dashboard() -> Dashboard {
    let timeline = timeline();
    let rank = |rank: u32, compute: f64| RankRow {
        rank,
        node: rank / 2,
        compute_pct: Some(compute),
        communication_pct: Some(20.0),
        memory_pct: Some(0.0),
        host_pct: Some(5.0),
        wait_pct: Some(95.0 - compute - 20.0),
        idle_pct: Some(0.0),
        dropped_spans: Some(0),
    };
    let node = |node: u32, cpu: f64| NodeRow {
        node,
        host: format!("host-{node}"),
        cpu_pct: Some(cpu),
        gpu_pct: None,
        memory_available_bytes: Some(12.5 * 1024.0 * 1024.0 * 1024.0),
        nic_bytes_per_s: Some(40_000_000.0),
        link_bytes_per_s: Some(1_168_000_000.0),
        cpu_history: (0..60).map(|s| 40 + (s * (node as u64 + 3)) % 50).collect(),
        nic_history: (0..60).map(|s| (s * 7) % 20).collect(),
    };
    Dashboard {
        title: "pinch run 20261126T120000-test: serve, model 'tiny', 2 nodes, 4 ranks".into(),
        live: false,
        dropped_spans: Some(0),
        nodes: vec![node(0, 71.5), node(1, 64.0)],
        ranks: vec![rank(0, 60.0), rank(1, 58.0), rank(2, 61.0), rank(3, 66.0)],
        spans: SpanColumns::from_timeline(&timeline).expect("sorted spans"),
        details: Details::Held(Box::new(timeline)),
        findings: findings(),
        ops: vec![
            op("matmul.qkv", Category::Compute, 40, 1_200_000, (66.7, 1.33)),
            op("attention", Category::Compute, 40, 1_240_000, (64.5, 1.29)),
            op(
                "all_reduce",
                Category::Communication,
                40,
                800_000,
                (0.0, 0.42),
            ),
            op("barrier", Category::Wait, 40, 200_000, (0.0, 0.0)),
        ],
        roofs: Some(Ceilings {
            gflops: 180.0,
            gbps: 12.0,
        }),
        comm: comm(),
        serving: Some(serving()),
    }
}

/// The app drawn on a `width`×`height` test terminal, as text (one line per row).
pub fn screen(app: &App, width: u16, height: u16) -> String {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("a test terminal");
    terminal
        .draw(|frame| view::render(app, frame))
        .expect("drawn");
    let buffer = terminal.backend().buffer();
    let mut text = String::new();
    for y in 0..buffer.area.height {
        let line: String = (0..buffer.area.width)
            .map(|x| buffer[(x, y)].symbol())
            .collect();
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}
