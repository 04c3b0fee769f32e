//! Throughput of the traffic matrix and the critical path on a synthetic 64-rank timeline:
//! eight tensor-parallel groups of eight all-reduce each step, and all 64 ranks all-to-all.
//! Ignored by default (it builds millions of spans); run it with
//! `cargo test -p pinch-analyzer --test paths_scale -- --ignored --nocapture`.

use pinch_analyzer::{RunFacts, TimedSpan, Timeline, critical_path, traffic_report};
use pinch_traces::{Category, CollectiveAttrs, CollectiveKind, Lane, NodeId, Rank, SpanAttrs};
use std::time::Instant;

const RANKS: u32 = 64;
const TP: u32 = 8;
/// Spans per rank per step: compute, all-reduce, compute, all-to-all.
const PER_STEP: u32 = 4;

fn span(rank: u32, step: u32, start_ns: i64, duration_ns: u64) -> TimedSpan {
    TimedSpan {
        rank: Rank(rank),
        node: NodeId(rank / TP),
        lane: Lane(0),
        category: Category::Compute,
        name: pinch_analyzer::NameId(0),
        start_ns,
        duration_ns,
        attrs: SpanAttrs {
            step: Some(step),
            ..SpanAttrs::default()
        },
    }
}

fn comm(
    mut s: TimedSpan,
    kind: CollectiveKind,
    group: u32,
    seq: u64,
    participants: u32,
) -> TimedSpan {
    s.category = Category::Communication;
    s.name = pinch_analyzer::NameId(1);
    s.attrs.collective = Some(CollectiveAttrs {
        kind,
        group,
        seq,
        participants,
        peer: None,
        message_bytes: 16 << 10,
        wait_ns: Some(1_000),
    });
    s
}

/// `steps` steps of every rank; compute time varies by a fixed scramble of (step, rank).
fn synthetic(steps: u32) -> Timeline {
    let mut spans = Vec::with_capacity((steps * RANKS * PER_STEP) as usize);
    for rank in 0..RANKS {
        for step in 0..steps {
            let t0 = i64::from(step) * 100_000;
            let jitter =
                i64::from((step.wrapping_mul(2_654_435_761) ^ rank.wrapping_mul(40_503)) % 10_000);
            spans.push(span(rank, step, t0, 30_000 + jitter as u64));
            let ar = t0 + 30_000 + jitter;
            let ar_end = t0 + 45_000;
            spans.push(comm(
                span(rank, step, ar, (ar_end - ar) as u64),
                CollectiveKind::AllReduce,
                rank / TP,
                u64::from(step),
                TP,
            ));
            spans.push(span(rank, step, ar_end, 20_000 + jitter as u64));
            let a2a = ar_end + 20_000 + jitter;
            let a2a_end = t0 + 90_000;
            spans.push(comm(
                span(rank, step, a2a, (a2a_end - a2a) as u64),
                CollectiveKind::AllToAll,
                100,
                u64::from(step),
                RANKS,
            ));
        }
    }
    Timeline::from_parts(0, vec!["compute".into(), "comm".into()], spans, Vec::new())
}

#[test]
#[ignore = "builds millions of spans; run with --ignored"]
fn traffic_and_critical_path_stay_linear_at_64_ranks() {
    let timeline = synthetic(16_000);
    let spans = timeline.spans.len() as f64;
    let facts = RunFacts::from_timeline(&timeline);
    let started = Instant::now();
    let traffic = traffic_report(&timeline, &facts, Default::default());
    let traffic_s = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let path = critical_path(&timeline);
    let path_s = started.elapsed().as_secs_f64();
    println!(
        "{spans} spans, 64 ranks: traffic {traffic_s:.2} s ({:.1} M spans/s), critical path {path_s:.2} s ({:.1} M spans/s)",
        spans / traffic_s / 1e6,
        spans / path_s / 1e6
    );
    assert_eq!(traffic.links.len(), 64 * 63 / 2);
    assert_eq!(path.steps, 16_000);
    // A floor that a loaded host cannot break but a scan over pairs of spans or of ranks per
    // span would: the measured rates are in BENCHMARKS.md.
    assert!(spans / traffic_s >= 1e6, "traffic below 1 M spans/s");
    assert!(spans / path_s >= 1e6, "critical path below 1 M spans/s");
}
