//! The cost of capturing one span on a rank's hot path: stamping its start and finishing it
//! (`Recorder::stamp`, `Recorder::finish`: a second stamp and a push into the ring), with a
//! drainer emptying the ring as a rank's stream does, and when the ring is full (the span is
//! counted as dropped). The clock reads alone are measured for scale.
//!
//! Run: `cargo bench -p pinch-collector --bench recorder`.

use divan::Bencher;
use pinch_collector::Recorder;
use pinch_collector::recorder::DEFAULT_CAPACITY;
use pinch_traces::{Category, Lane, OpId, Rank, Span, SpanAttrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

fn main() {
    divan::main();
}

fn attrs() -> SpanAttrs {
    SpanAttrs {
        flops: Some(1 << 20),
        bytes: Some(1 << 16),
        layer: Some(3),
        step: Some(42),
        ..SpanAttrs::default()
    }
}

/// What a rank does for one span: stamp its start, then finish it.
#[inline]
fn record_one(recorder: &Recorder, attrs: SpanAttrs) {
    let start = recorder.stamp();
    recorder.finish(
        Lane(0),
        Category::Compute,
        OpId(7),
        start,
        divan::black_box(attrs),
    );
}

/// One span, the hot-path cost: the ring is emptied between batches, outside the timing, so
/// it always has room and the drain's own work (on the stream's thread in a rank) is not
/// counted.
#[divan::bench]
fn finish_with_room(bencher: Bencher) {
    let (recorder, mut drain) = Recorder::new(Rank(0), DEFAULT_CAPACITY);
    let mut out: Vec<Span> = Vec::with_capacity(DEFAULT_CAPACITY);
    let attrs = attrs();
    bencher
        .with_inputs(|| {
            if drain.pending() > DEFAULT_CAPACITY / 2 {
                out.clear();
                drain.drain_into(&mut out, usize::MAX);
            }
        })
        .bench_local_values(|()| record_one(&recorder, attrs));
}

/// One span while a drainer thread empties the ring every millisecond, as `RankStream` does.
/// Back to back, spans arrive 50 000 times faster than any workload makes them, so this
/// measures the two cores fighting over the ring's memory more than the hot path.
#[divan::bench]
fn finish_with_drainer_thread(bencher: Bencher) {
    let (recorder, mut drain) = Recorder::new(Rank(0), DEFAULT_CAPACITY);
    let stop = Arc::new(AtomicBool::new(false));
    let drainer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut out: Vec<Span> = Vec::with_capacity(DEFAULT_CAPACITY);
            while !stop.load(Ordering::Relaxed) {
                out.clear();
                drain.drain_into(&mut out, usize::MAX);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let attrs = attrs();
    bencher.bench_local(|| record_one(&recorder, attrs));
    stop.store(true, Ordering::Relaxed);
    let _ = drainer.join();
}

/// One span when the ring is full: it is counted as dropped, never blocks.
#[divan::bench]
fn finish_when_full(bencher: Bencher) {
    let (recorder, _drain) = Recorder::new(Rank(0), 1);
    recorder.finish(
        Lane(0),
        Category::Compute,
        OpId(0),
        recorder.stamp(),
        SpanAttrs::default(),
    );
    let attrs = attrs();
    bencher.bench_local(|| record_one(&recorder, attrs));
}

/// The span clock read alone (the TSC, as `quanta` reads it).
#[divan::bench]
fn stamp(bencher: Bencher) {
    let (recorder, _drain) = Recorder::new(Rank(0), 1);
    bencher.bench_local(|| recorder.stamp());
}

/// The monotonic clock read alone (`clock_gettime`), which spans were stamped with before.
#[divan::bench]
fn monotonic_read(bencher: Bencher) {
    bencher.bench_local(pinch_traces::monotonic_now_ns);
}
