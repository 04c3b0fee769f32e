//! The idle breakdown and the phases must keep up with the analyzer's target of 2 million spans
//! per second: each is one pass over the spans, with no allocation per span. Ignored by default
//! (it builds 8 million spans); run it with
//! `cargo test -p pinch-analyzer --test phases_speed -- --ignored --nocapture`.

use pinch_analyzer::phases::{PhaseInput, ReplicaTokens, phase_reports};
use pinch_analyzer::{IdleOps, NameId, TimedSpan, Timeline, idle_breakdown};
use pinch_traces::{Category, CollectiveAttrs, CollectiveKind, Lane, NodeId, Rank, SpanAttrs};
use std::time::Instant;

const RANKS: u32 = 8;
const SPANS_PER_RANK: i64 = 1_000_000;
/// Spans per step: a schedule, 27 compute ops, a KV-cache copy, an all-reduce.
const STEP_SPANS: i64 = 30;
const NAMES: [&str; 4] = ["schedule", "matmul", "kv_cache.append", "all_reduce"];

fn span(rank: u32, i: i64) -> TimedSpan {
    let (category, name) = match i % STEP_SPANS {
        0 => (Category::Host, 0),
        15 => (Category::Memory, 2),
        29 => (Category::Communication, 3),
        _ => (Category::Compute, 1),
    };
    let collective = (category == Category::Communication).then_some(CollectiveAttrs {
        kind: CollectiveKind::AllReduce,
        group: 0,
        seq: i as u64,
        participants: RANKS,
        peer: None,
        message_bytes: 4096,
        wait_ns: Some(300),
    });
    TimedSpan {
        rank: Rank(rank),
        node: NodeId(rank / 2),
        lane: Lane(0),
        category,
        name: NameId(name),
        start_ns: i * 1_000,
        duration_ns: 900,
        attrs: SpanAttrs {
            step: Some((i / STEP_SPANS) as u32),
            collective,
            ..SpanAttrs::default()
        },
    }
}

fn big_timeline() -> Timeline {
    let spans = (0..RANKS)
        .flat_map(|r| (0..SPANS_PER_RANK).map(move |i| span(r, i)))
        .collect();
    let names = NAMES.iter().map(|n| n.to_string()).collect();
    Timeline::from_parts(0, names, spans, Vec::new())
}

/// One token per step at its end; every seventh a request's first.
fn tokens() -> Vec<ReplicaTokens> {
    let steps = SPANS_PER_RANK / STEP_SPANS;
    let step_ns = STEP_SPANS * 1_000;
    let tokens = (0..steps)
        .map(|s| (s * step_ns + step_ns - 50, s % 7 == 0))
        .collect();
    vec![ReplicaTokens {
        node: NodeId(0),
        replica: 0,
        tokens,
    }]
}

#[test]
#[ignore = "builds 8 million spans: a timing, run on request"]
fn idle_breakdown_and_phases_run_at_two_million_spans_per_second() {
    let timeline = big_timeline();
    let spans = timeline.spans.len() as f64;
    let started = Instant::now();
    let ops = IdleOps::of(&timeline);
    let idle_ns: u64 = timeline
        .ranks()
        .into_iter()
        .filter_map(|r| idle_breakdown(timeline.spans_of(r), ops))
        .map(|b| b.idle_ns)
        .sum();
    let idle_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let tokens = tokens();
    let nodes: Vec<NodeId> = (0..RANKS / 2).map(NodeId).collect();
    let phases = phase_reports(&PhaseInput {
        timeline: &timeline,
        tokens: &tokens,
        nodes: &nodes,
        link_bytes_per_s: None,
    });
    let phases_s = started.elapsed().as_secs_f64();
    let rate = |s: f64| spans / s / 1e6;
    eprintln!(
        "{spans} spans: idle breakdown {idle_s:.3} s ({:.1} M spans/s), phases {phases_s:.3} s \
         ({:.1} M spans/s)",
        rate(idle_s),
        rate(phases_s)
    );
    // 300 ns waiting per all-reduce and 100 ns between spans, on every rank.
    let steps = (SPANS_PER_RANK / STEP_SPANS) as u64;
    assert!(idle_ns > u64::from(RANKS) * steps * 300, "{idle_ns}");
    assert!(phases.iter().any(|p| p.steps > 0), "{phases:?}");
    assert!(
        rate(idle_s + phases_s) >= 2.0,
        "both passes together below 2 M spans/s"
    );
}
