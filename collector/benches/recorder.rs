//! The cost of capturing one span on a rank's hot path: reading the clock and queueing the span
//! (`Recorder::finish`), with a drainer emptying the queue as a rank's stream does, and when the
//! queue is full (the span is counted as dropped).
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

/// `finish` while a drainer thread moves spans out every millisecond, as `RankStream` does.
#[divan::bench]
fn finish_with_room(bencher: Bencher) {
    let recorder = Arc::new(Recorder::new(Rank(0), DEFAULT_CAPACITY));
    let stop = Arc::new(AtomicBool::new(false));
    let drainer = {
        let (recorder, stop) = (recorder.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut out: Vec<Span> = Vec::with_capacity(DEFAULT_CAPACITY);
            while !stop.load(Ordering::Relaxed) {
                out.clear();
                recorder.drain_into(&mut out, usize::MAX);
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let attrs = attrs();
    bencher.bench(|| {
        let start_ns = recorder.now_ns();
        recorder.finish(
            Lane(0),
            Category::Compute,
            OpId(7),
            start_ns,
            divan::black_box(attrs),
        )
    });
    stop.store(true, Ordering::Relaxed);
    let _ = drainer.join();
}

/// `finish` when the queue is full: the span is counted as dropped, never blocks.
#[divan::bench]
fn finish_when_full(bencher: Bencher) {
    let recorder = Recorder::new(Rank(0), 1);
    recorder.finish(Lane(0), Category::Compute, OpId(0), 0, SpanAttrs::default());
    let attrs = attrs();
    bencher.bench(|| {
        let start_ns = recorder.now_ns();
        recorder.finish(
            Lane(0),
            Category::Compute,
            OpId(7),
            start_ns,
            divan::black_box(attrs),
        )
    });
}

/// The clock read alone, for scale.
#[divan::bench]
fn clock_read(bencher: Bencher) {
    let recorder = Recorder::new(Rank(0), 1);
    bencher.bench(|| recorder.now_ns());
}
