//! The span recorder: what a rank calls on every op and collective.
//!
//! The hot path (`record`, `finish`) takes no lock and allocates nothing: a span is pushed into a
//! bounded lock-free queue, and when the queue is full the span is dropped and counted, so the
//! workload is never slowed by its observer. A flusher drains the queue off the hot path.
//! Interning an op name does lock and allocate; workloads intern their names once, up front.

use crossbeam_queue::ArrayQueue;
use pinch_traces::{Category, Lane, OpId, Rank, Span, SpanAttrs, monotonic_now_ns};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Spans queued per rank before drops begin: about 4 MiB, a few seconds of the busiest workload.
pub const DEFAULT_CAPACITY: usize = 1 << 16;

#[derive(Debug)]
pub struct Recorder {
    rank: Rank,
    queue: ArrayQueue<Span>,
    dropped: AtomicU64,
    names: Mutex<Vec<String>>,
}

impl Recorder {
    /// A recorder for one rank holding at most `capacity` undrained spans.
    pub fn new(rank: Rank, capacity: usize) -> Recorder {
        Recorder {
            rank,
            queue: ArrayQueue::new(capacity.max(1)),
            dropped: AtomicU64::new(0),
            names: Mutex::new(Vec::new()),
        }
    }

    pub fn rank(&self) -> Rank {
        self.rank
    }

    /// The id of an op name, registering it on first use. Not for the hot path.
    pub fn intern(&self, name: &str) -> OpId {
        let mut names = self
            .names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let index = match names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                names.push(name.to_string());
                names.len() - 1
            }
        };
        OpId(index as u32)
    }

    /// Every interned name from index `first` on, for the flusher to send once.
    pub fn names_from(&self, first: usize) -> Vec<(OpId, String)> {
        let names = self
            .names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        names
            .iter()
            .enumerate()
            .skip(first)
            .map(|(i, n)| (OpId(i as u32), n.clone()))
            .collect()
    }

    /// The clock spans are stamped with (the node's monotonic clock, ns).
    #[inline]
    pub fn now_ns(&self) -> u64 {
        monotonic_now_ns()
    }

    /// Queues a span, or counts it as dropped when the queue is full.
    #[inline]
    pub fn record(&self, span: Span) {
        if self.queue.push(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Records a span that started at `start_ns` and ends now; returns the end time.
    #[inline]
    pub fn finish(
        &self,
        lane: Lane,
        category: Category,
        op: OpId,
        start_ns: u64,
        attrs: SpanAttrs,
    ) -> u64 {
        let end_ns = self.now_ns();
        self.record(Span {
            rank: self.rank,
            lane,
            category,
            op,
            start_ns,
            duration_ns: end_ns.saturating_sub(start_ns),
            attrs,
        });
        end_ns
    }

    /// Moves up to `max` queued spans into `out`; returns how many moved.
    pub fn drain_into(&self, out: &mut Vec<Span>, max: usize) -> usize {
        let mut moved = 0;
        while moved < max {
            match self.queue.pop() {
                Some(span) => {
                    out.push(span);
                    moved += 1;
                }
                None => break,
            }
        }
        moved
    }

    /// Spans dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Spans waiting to be drained.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable() {
        let r = Recorder::new(Rank(0), 8);
        let a = r.intern("matmul");
        let b = r.intern("attention");
        assert_eq!(r.intern("matmul"), a);
        assert_ne!(a, b);
        assert_eq!(r.names_from(1), vec![(b, "attention".to_string())]);
    }

    #[test]
    fn full_queue_counts_drops_instead_of_blocking() {
        let r = Recorder::new(Rank(3), 4);
        let op = r.intern("op");
        for i in 0..10 {
            let start = r.now_ns();
            r.finish(
                Lane(0),
                Category::Compute,
                op,
                start,
                SpanAttrs {
                    step: Some(i),
                    ..SpanAttrs::default()
                },
            );
        }
        assert_eq!(r.dropped(), 6);
        let mut out = Vec::new();
        assert_eq!(r.drain_into(&mut out, 100), 4);
        assert_eq!(
            out.iter().map(|s| s.attrs.step).collect::<Vec<_>>(),
            vec![Some(0), Some(1), Some(2), Some(3)]
        );
        assert!(out.iter().all(|s| s.rank == Rank(3)));
    }

    #[test]
    fn concurrent_producers_lose_nothing_below_capacity() {
        let r = std::sync::Arc::new(Recorder::new(Rank(0), 4096));
        let op = r.intern("op");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let r = r.clone();
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        r.finish(
                            Lane(t),
                            Category::Host,
                            op,
                            r.now_ns(),
                            SpanAttrs::default(),
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        let mut out = Vec::new();
        r.drain_into(&mut out, usize::MAX);
        assert_eq!(out.len(), 4000);
        assert_eq!(r.dropped(), 0);
    }
}
