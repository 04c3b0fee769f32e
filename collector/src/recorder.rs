//! The span recorder: what a rank calls on every op and collective, and the drain its stream
//! empties it through.
//!
//! The hot path (`stamp`, `finish`) takes no lock, makes no system call and allocates nothing.
//! Times are raw reads of the CPU's time-stamp counter (through `quanta`), about 9 ns against
//! 23 ns for the monotonic clock on a KVM guest; the drain converts them to the node's monotonic
//! nanoseconds against an anchor pair (TSC, monotonic) it reads each time it drains, so spans of
//! every process on the node share one time base and the conversion never drifts by more than
//! the TSC rate error over one drain period. Where the TSC is unusable `quanta` reads the
//! monotonic clock itself and the conversion is the identity.
//!
//! A span goes into a single-producer ring (`rtrb`): the rank's thread owns the [`Recorder`],
//! its stream's flusher owns the [`SpanDrain`]. When the ring is full the span is dropped and
//! counted, so the workload is never slowed by its observer. Interning an op name does lock and
//! allocate; workloads intern their names once, up front.

use pinch_traces::{Category, Lane, OpId, Rank, Span, SpanAttrs, monotonic_now_ns};
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Spans queued per rank before drops begin: a few MiB, a few seconds of the busiest workload.
pub const DEFAULT_CAPACITY: usize = 1 << 16;

/// A raw clock reading from [`Recorder::stamp`]: only the drain knows its nanoseconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Stamp(u64);

/// What the ring carries: a span timed by raw stamps, or one already in nanoseconds.
#[derive(Clone, Copy, Debug)]
enum Entry {
    Stamped {
        lane: Lane,
        category: Category,
        op: OpId,
        start: Stamp,
        end: Stamp,
        attrs: SpanAttrs,
    },
    Timed(Span),
}

/// What the recording thread and the drain share: names and the drop count.
#[derive(Debug, Default)]
struct Shared {
    dropped: AtomicU64,
    names: Mutex<Vec<String>>,
}

impl Shared {
    fn names(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.names
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// The recording side, owned by the rank's thread (it can be moved, not shared).
#[derive(Debug)]
pub struct Recorder {
    rank: Rank,
    clock: quanta::Clock,
    ring: RefCell<rtrb::Producer<Entry>>,
    shared: Arc<Shared>,
}

/// The draining side, owned by the rank's stream.
#[derive(Debug)]
pub struct SpanDrain {
    rank: Rank,
    clock: quanta::Clock,
    ring: rtrb::Consumer<Entry>,
    shared: Arc<Shared>,
}

impl Recorder {
    /// A recorder for one rank holding at most `capacity` undrained spans, and its drain.
    pub fn new(rank: Rank, capacity: usize) -> (Recorder, SpanDrain) {
        let (mut producer, mut consumer) = rtrb::RingBuffer::new(capacity.max(1));
        prefault(&mut producer, &mut consumer);
        let clock = quanta::Clock::new();
        let shared = Arc::new(Shared::default());
        let recorder = Recorder {
            rank,
            clock: clock.clone(),
            ring: RefCell::new(producer),
            shared: shared.clone(),
        };
        let drain = SpanDrain {
            rank,
            clock,
            ring: consumer,
            shared,
        };
        (recorder, drain)
    }

    pub fn rank(&self) -> Rank {
        self.rank
    }

    /// The id of an op name, registering it on first use. Not for the hot path.
    pub fn intern(&self, name: &str) -> OpId {
        let mut names = self.shared.names();
        let index = match names.iter().position(|n| n == name) {
            Some(i) => i,
            None => {
                names.push(name.to_string());
                names.len() - 1
            }
        };
        OpId(index as u32)
    }

    /// The node's monotonic clock, ns: for times the workload keeps itself (request arrivals),
    /// not for spans, which take a [`Stamp`].
    pub fn now_ns(&self) -> u64 {
        monotonic_now_ns()
    }

    /// The start of a span.
    #[inline]
    pub fn stamp(&self) -> Stamp {
        Stamp(self.clock.raw())
    }

    /// Records a span that started at `start` and ends now.
    #[inline]
    pub fn finish(&self, lane: Lane, category: Category, op: OpId, start: Stamp, attrs: SpanAttrs) {
        let end = self.stamp();
        self.push(Entry::Stamped {
            lane,
            category,
            op,
            start,
            end,
            attrs,
        });
    }

    /// Queues a span already timed in the node's monotonic nanoseconds.
    pub fn record(&self, span: Span) {
        self.push(Entry::Timed(span));
    }

    /// Spans dropped so far because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    #[inline]
    fn push(&self, entry: Entry) {
        // The recorder is not `Sync` and nothing it calls records, so the borrow never fails;
        // a span that found it taken would be counted as dropped, never lost silently.
        let pushed = match self.ring.try_borrow_mut() {
            Ok(mut ring) => ring.push(entry).is_ok(),
            Err(_) => false,
        };
        if !pushed {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Writes every slot of a new ring once, so the pages behind it are mapped now and not by page
/// faults on the hot path (one every couple of dozen spans during the first lap otherwise).
fn prefault(producer: &mut rtrb::Producer<Entry>, consumer: &mut rtrb::Consumer<Entry>) {
    let blank = Entry::Timed(Span {
        rank: Rank(0),
        lane: Lane(0),
        category: Category::Host,
        op: OpId(0),
        start_ns: 0,
        duration_ns: 0,
        attrs: SpanAttrs::default(),
    });
    while producer.push(blank).is_ok() {}
    while consumer.pop().is_ok() {}
}

/// A (TSC, monotonic ns) pair read together, to convert stamps near it.
#[derive(Clone, Copy, Debug)]
struct Anchor {
    raw: u64,
    ns: u64,
}

impl Anchor {
    /// Reads the monotonic clock between two TSC reads and takes their midpoint, halving the
    /// error of the pair.
    fn now(clock: &quanta::Clock) -> Anchor {
        let before = clock.raw();
        let ns = monotonic_now_ns();
        let after = clock.raw();
        Anchor {
            raw: before + after.saturating_sub(before) / 2,
            ns,
        }
    }

    fn to_ns(self, clock: &quanta::Clock, stamp: Stamp) -> u64 {
        if stamp.0 >= self.raw {
            self.ns + clock.delta_as_nanos(self.raw, stamp.0)
        } else {
            self.ns
                .saturating_sub(clock.delta_as_nanos(stamp.0, self.raw))
        }
    }
}

impl SpanDrain {
    pub fn rank(&self) -> Rank {
        self.rank
    }

    /// Moves up to `max` queued spans into `out`, in the node's monotonic nanoseconds; returns
    /// how many moved.
    pub fn drain_into(&mut self, out: &mut Vec<Span>, max: usize) -> usize {
        let anchor = Anchor::now(&self.clock);
        let mut moved = 0;
        while moved < max {
            let Ok(entry) = self.ring.pop() else {
                break;
            };
            out.push(self.to_span(anchor, entry));
            moved += 1;
        }
        moved
    }

    fn to_span(&self, anchor: Anchor, entry: Entry) -> Span {
        match entry {
            Entry::Timed(span) => span,
            Entry::Stamped {
                lane,
                category,
                op,
                start,
                end,
                attrs,
            } => Span {
                rank: self.rank,
                lane,
                category,
                op,
                start_ns: anchor.to_ns(&self.clock, start),
                duration_ns: self.clock.delta_as_nanos(start.0, end.0),
                attrs,
            },
        }
    }

    /// Every interned name from index `first` on, for the flusher to send once.
    pub fn names_from(&self, first: usize) -> Vec<(OpId, String)> {
        let names = self.shared.names();
        names
            .iter()
            .enumerate()
            .skip(first)
            .map(|(i, n)| (OpId(i as u32), n.clone()))
            .collect()
    }

    /// Spans dropped so far because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Spans waiting to be drained.
    pub fn pending(&self) -> usize {
        self.ring.slots()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_stable() {
        let (r, drain) = Recorder::new(Rank(0), 8);
        let a = r.intern("matmul");
        let b = r.intern("attention");
        assert_eq!(r.intern("matmul"), a);
        assert_ne!(a, b);
        assert_eq!(drain.names_from(1), vec![(b, "attention".to_string())]);
    }

    #[test]
    fn full_ring_counts_drops_instead_of_blocking() {
        let (r, mut drain) = Recorder::new(Rank(3), 4);
        let op = r.intern("op");
        for i in 0..10 {
            let start = r.stamp();
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
        assert_eq!(drain.dropped(), 6);
        assert_eq!(drain.pending(), 4);
        let mut out = Vec::new();
        assert_eq!(drain.drain_into(&mut out, 100), 4);
        assert_eq!(
            out.iter().map(|s| s.attrs.step).collect::<Vec<_>>(),
            vec![Some(0), Some(1), Some(2), Some(3)]
        );
        assert!(out.iter().all(|s| s.rank == Rank(3)));
    }

    #[test]
    fn stamps_become_the_monotonic_time_they_were_taken_at() {
        let (r, mut drain) = Recorder::new(Rank(0), 8);
        let before_ns = monotonic_now_ns();
        let start = r.stamp();
        std::thread::sleep(std::time::Duration::from_millis(20));
        r.finish(
            Lane(0),
            Category::Host,
            OpId(0),
            start,
            SpanAttrs::default(),
        );
        let after_ns = monotonic_now_ns();
        // Drained a while later, as a stream does, with a fresh anchor.
        std::thread::sleep(std::time::Duration::from_millis(30));
        let mut out = Vec::new();
        drain.drain_into(&mut out, 8);
        let [span] = &out[..] else { panic!("{out:?}") };
        // The stamps lie within the monotonic readings around them, to the anchor's error.
        let slack_ns = 20_000;
        assert!(
            span.start_ns + slack_ns >= before_ns,
            "{span:?} vs {before_ns}"
        );
        assert!(
            span.end_ns() <= after_ns + slack_ns,
            "{span:?} vs {after_ns}"
        );
        assert!(span.duration_ns >= 19_000_000, "{span:?}");
    }

    #[test]
    fn spans_timed_elsewhere_keep_their_times() {
        let (r, mut drain) = Recorder::new(Rank(2), 8);
        let span = Span {
            rank: Rank(2),
            lane: Lane(1),
            category: Category::Wait,
            op: OpId(0),
            start_ns: 1234,
            duration_ns: 99,
            attrs: SpanAttrs::default(),
        };
        r.record(span);
        let mut out = Vec::new();
        drain.drain_into(&mut out, 8);
        assert_eq!(out, vec![span]);
    }

    #[test]
    fn the_recorder_moves_to_another_thread_and_the_drain_sees_its_spans() {
        let (r, mut drain) = Recorder::new(Rank(0), 4096);
        let op = r.intern("op");
        let producer = std::thread::spawn(move || {
            for _ in 0..1000 {
                r.finish(Lane(0), Category::Host, op, r.stamp(), SpanAttrs::default());
            }
            r.dropped()
        });
        let mut out = Vec::new();
        while !producer.is_finished() {
            drain.drain_into(&mut out, usize::MAX);
        }
        assert_eq!(producer.join().unwrap(), 0);
        drain.drain_into(&mut out, usize::MAX);
        assert_eq!(out.len(), 1000);
        assert!(out.windows(2).all(|w| w[0].start_ns <= w[1].start_ns));
    }
}
