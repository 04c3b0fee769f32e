//! The recorder's hot path (`finish`, `record`) allocates nothing, also when the queue is full
//! and spans are dropped: checked with a counting global allocator in this test binary.

use pinch_collector::Recorder;
use pinch_traces::{Category, Lane, Rank, SpanAttrs};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every call is forwarded unchanged to the system allocator; the counter is a
// thread-local `Cell` of a const-initialized integer, which itself never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|a| a.set(a.get() + 1));
        // SAFETY: the caller upholds `alloc`'s contract, which we pass on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` above, i.e. from the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(Cell::get)
}

#[test]
fn recording_spans_allocates_nothing_even_when_dropping() {
    let (recorder, _drain) = Recorder::new(Rank(0), 1024);
    let op = recorder.intern("matmul");
    let before = allocations();
    for step in 0..4096 {
        let start = recorder.stamp();
        let attrs = SpanAttrs {
            flops: Some(128),
            step: Some(step),
            ..SpanAttrs::default()
        };
        recorder.finish(Lane(0), Category::Compute, op, start, attrs);
    }
    assert_eq!(allocations() - before, 0, "allocations on the hot path");
    assert_eq!(
        recorder.dropped(),
        4096 - 1024,
        "the full queue dropped and counted the rest"
    );
}
