//! End-to-end: the clock alignment of a real two-node run does not hinge on the nodes' anchors.
//! Both nodes run on this host, so their anchors agree and place every span right; shifting node
//! 1's anchors by 300 ms, as a wall clock that far off would, must leave the timeline aligned by
//! collectives within 100 µs of that.

mod common;

use common::run;
use pinch_analyzer::{Alignment, ClockMethod, RunData, Timeline, load_run, merge_with};

const SHIFT_NS: u64 = 300_000_000;

/// The largest distance between a span's wall-clock time in `t` and in `truth`.
fn max_error_ns(t: &Timeline, truth: &Timeline) -> u128 {
    assert_eq!(t.spans.len(), truth.spans.len());
    let wall = |t: &Timeline, start_ns: i64| t.origin_unix_ns + i128::from(start_ns);
    t.spans
        .iter()
        .zip(&truth.spans)
        .map(|(a, b)| (wall(t, a.start_ns) - wall(truth, b.start_ns)).unsigned_abs())
        .max()
        .unwrap_or(0)
}

/// The run with node 1's wall clock (its anchors, the node's and its ranks') 300 ms ahead.
fn shifted(run: &RunData) -> RunData {
    let mut run = run.clone();
    let node = &mut run.nodes[1];
    let anchors = node.ranks.values_mut().filter_map(|l| l.anchor.as_mut());
    for anchor in node.anchor.iter_mut().chain(anchors) {
        anchor.wall_ns += SHIFT_NS;
    }
    run
}

#[test]
fn a_node_clock_300_ms_off_is_realigned_within_100_us() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    run(&out, &[]).success();
    let original = load_run(&out).unwrap();
    let truth = merge_with(&original, Alignment::AnchorsOnly).0;
    let aligned = merge_with(&original, Alignment::Collectives).0;
    let moved = shifted(&original);
    let anchored = merge_with(&moved, Alignment::AnchorsOnly).0;
    let (realigned, clocks) = merge_with(&moved, Alignment::Collectives);

    let off_ns = max_error_ns(&anchored, &truth);
    assert!(off_ns.abs_diff(u128::from(SHIFT_NS)) < 1_000, "{off_ns}");
    let error_ns = max_error_ns(&realigned, &truth);
    assert!(error_ns < 100_000, "realigned {error_ns} ns off the truth");
    let drift_ns = max_error_ns(&realigned, &aligned);
    assert!(
        drift_ns < 100_000,
        "realigned {drift_ns} ns off the unshifted alignment"
    );
    assert_eq!(clocks[1].method, ClockMethod::Collectives);
    println!("node 1: {:?}; error {error_ns} ns", clocks[1]);
}
