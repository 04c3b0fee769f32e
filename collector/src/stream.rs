//! The stream that carries a rank's spans to its agent.
//!
//! A rank process writes a framed node-log stream (see `pinch_traces::nodelog`) to its stdout, a
//! pipe its agent reads. All writing happens on one flusher thread: the workload only pushes spans
//! into its `Recorder` and never waits on the pipe. If the agent goes away, the flusher ends on the
//! write error and the recorder simply fills and counts drops.

use crate::error::CollectorError;
use crate::recorder::SpanDrain;
use pinch_traces::{NodeLogError, NodeLogWriter, Rank, Record, Span};
use std::io::{BufWriter, Write};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The most spans one `Record::Spans` carries, so a frame stays a few hundred KiB.
pub const MAX_SPANS_PER_BATCH: usize = 4096;

enum Message {
    Record(Record),
    /// Write everything now, then answer.
    Flush(Sender<()>),
    Stop,
}

/// A running flusher: drains a recorder every period and writes its records to a byte sink.
#[derive(Debug)]
pub struct RankStream {
    rank: Rank,
    messages: Sender<Message>,
    flusher: Option<JoinHandle<Result<(), CollectorError>>>,
}

impl RankStream {
    /// Writes the stream header to `out`, then starts the flusher thread that empties `drain`
    /// every `period`.
    pub fn start<W: Write + Send + 'static>(
        drain: SpanDrain,
        out: W,
        period: Duration,
    ) -> Result<RankStream, CollectorError> {
        let rank = drain.rank();
        let writer = NodeLogWriter::new(BufWriter::with_capacity(1 << 16, out))
            .map_err(|source| CollectorError::Stream { rank, source })?;
        let flusher = Flusher {
            drain,
            writer,
            batch: Vec::with_capacity(MAX_SPANS_PER_BATCH),
            names_sent: 0,
            dropped_sent: None,
        };
        let (messages, inbox) = mpsc::channel();
        let name = flusher_name(rank);
        let handle = thread::Builder::new()
            .name(name.clone())
            .spawn(move || flusher.run(&inbox, period))
            .map_err(|source| CollectorError::Thread { name, source })?;
        Ok(RankStream {
            rank,
            messages,
            flusher: Some(handle),
        })
    }

    /// Queues a record (progress, output) to be written after the spans recorded before it.
    /// After a write error has ended the flusher, the record is discarded.
    pub fn send(&self, record: Record) {
        // A send error means the flusher has ended: the agent is gone and nothing can reach it.
        let _ = self.messages.send(Message::Record(record));
    }

    /// Blocks until every span recorded and every record queued before the call is written
    /// and flushed (or the flusher has ended on a write error). For a rank about to die on
    /// purpose; not for the hot path.
    pub fn flush_now(&self) {
        let (done, flushed) = mpsc::channel();
        if self.messages.send(Message::Flush(done)).is_ok() {
            // An error means the flusher ended before answering: nothing more can be written.
            let _ = flushed.recv();
        }
    }

    /// Drains the recorder one last time, flushes, and stops the flusher thread.
    /// Returns the write error that ended the flusher early, if one did.
    pub fn finish(mut self) -> Result<(), CollectorError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<(), CollectorError> {
        let Some(handle) = self.flusher.take() else {
            return Ok(());
        };
        // A send error means the flusher already ended; joining returns why.
        let _ = self.messages.send(Message::Stop);
        handle.join().map_err(|_| CollectorError::ThreadPanicked {
            name: flusher_name(self.rank),
        })?
    }
}

impl Drop for RankStream {
    /// A stream dropped without `finish` still gets its final drain and flush.
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

fn flusher_name(rank: Rank) -> String {
    format!("pinch-flusher-{}", rank.0)
}

/// The flusher thread's state: what it has already sent, so names and drop counts go once.
struct Flusher<W: Write> {
    drain: SpanDrain,
    writer: NodeLogWriter<BufWriter<W>>,
    batch: Vec<Span>,
    names_sent: usize,
    /// `None` until the first cycle, which writes the count even when it is 0: a known zero.
    dropped_sent: Option<u64>,
}

impl<W: Write> Flusher<W> {
    /// Runs a cycle every `period`, and as soon as a record is queued so it keeps its place
    /// after the spans recorded before it. Ends after the final cycle, or on a write error.
    fn run(mut self, inbox: &Receiver<Message>, period: Duration) -> Result<(), CollectorError> {
        let mut next_cycle = Instant::now() + period;
        loop {
            let wait = next_cycle.saturating_duration_since(Instant::now());
            let collected = collect_messages(inbox, wait);
            self.cycle(collected.records)?;
            for done in collected.waiting {
                // The caller of `flush_now` may have given up waiting; nothing to do then.
                let _ = done.send(());
            }
            if collected.stop {
                return Ok(());
            }
            let now = Instant::now();
            if now >= next_cycle {
                next_cycle = now + period;
            }
        }
    }

    /// Writes new names and spans, the drop count if it changed, then the queued records; flushes.
    fn cycle(&mut self, queued: Vec<Record>) -> Result<(), CollectorError> {
        self.write_spans()?;
        let dropped = self.drain.dropped();
        if Some(dropped) != self.dropped_sent {
            let rank = self.drain.rank();
            self.append(&Record::Dropped {
                rank,
                spans: dropped,
            })?;
            self.dropped_sent = Some(dropped);
        }
        for record in &queued {
            self.append(record)?;
        }
        self.writer.flush().map_err(|e| self.error(e))
    }

    /// Drains what was queued when the cycle began, in batches. Names are read after each
    /// batch is drained, so every name a span uses is written before that span.
    fn write_spans(&mut self) -> Result<(), CollectorError> {
        let mut budget = self.drain.pending();
        while budget > 0 {
            self.batch.clear();
            let moved = self
                .drain
                .drain_into(&mut self.batch, budget.min(MAX_SPANS_PER_BATCH));
            if moved == 0 {
                break;
            }
            budget -= moved;
            self.write_new_names()?;
            let record = Record::Spans(std::mem::take(&mut self.batch));
            self.append(&record)?;
            if let Record::Spans(batch) = record {
                self.batch = batch;
            }
        }
        self.write_new_names()
    }

    fn write_new_names(&mut self) -> Result<(), CollectorError> {
        let rank = self.drain.rank();
        for (op, name) in self.drain.names_from(self.names_sent) {
            self.append(&Record::OpName { rank, op, name })?;
            self.names_sent += 1;
        }
        Ok(())
    }

    fn append(&mut self, record: &Record) -> Result<(), CollectorError> {
        self.writer.append(record).map_err(|e| self.error(e))
    }

    fn error(&self, source: NodeLogError) -> CollectorError {
        CollectorError::Stream {
            rank: self.drain.rank(),
            source,
        }
    }
}

/// What the flusher found in its inbox.
#[derive(Default)]
struct Inbox {
    records: Vec<Record>,
    /// Callers of `flush_now` waiting for the end of this cycle.
    waiting: Vec<Sender<()>>,
    stop: bool,
}

impl Inbox {
    fn take(&mut self, message: Message) {
        match message {
            Message::Record(record) => self.records.push(record),
            Message::Flush(done) => self.waiting.push(done),
            Message::Stop => self.stop = true,
        }
    }
}

/// Waits up to `wait` for a message, then takes whatever else is queued without waiting.
fn collect_messages(inbox: &Receiver<Message>, wait: Duration) -> Inbox {
    let mut collected = Inbox::default();
    match inbox.recv_timeout(wait) {
        Ok(message) => collected.take(message),
        Err(RecvTimeoutError::Disconnected) => collected.stop = true,
        Err(RecvTimeoutError::Timeout) => return collected,
    }
    while let Ok(message) = inbox.try_recv() {
        collected.take(message);
    }
    collected
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recorder::Recorder;
    use pinch_traces::nodelog::Frame;
    use pinch_traces::{Category, FrameReader, Lane, OpId, SpanAttrs};
    use std::collections::HashMap;
    use std::io;
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    /// A `Write` into a shared buffer the test can read after the stream finishes.
    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);

    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Accepts the 16-byte header, then fails like a pipe whose reader is gone.
    struct BrokenPipe {
        accepted: usize,
    }

    impl Write for BrokenPipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.accepted + buf.len() <= 16 {
                self.accepted += buf.len();
                return Ok(buf.len());
            }
            Err(io::Error::from(io::ErrorKind::BrokenPipe))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn parse(bytes: &[u8]) -> Vec<Record> {
        let mut reader = FrameReader::new(bytes, Path::new("stream")).unwrap();
        let mut records = Vec::new();
        loop {
            match reader.next_frame().unwrap() {
                Frame::Record(r) => records.push(r),
                Frame::End => return records,
                Frame::Cut(t) => panic!("stream cut: {t:?}"),
            }
        }
    }

    fn span(recorder: &Recorder, lane: u32, op: OpId, step: u32) -> Span {
        Span {
            rank: recorder.rank(),
            lane: Lane(lane),
            category: Category::Compute,
            op,
            start_ns: recorder.now_ns(),
            duration_ns: 10,
            attrs: SpanAttrs {
                step: Some(step),
                ..SpanAttrs::default()
            },
        }
    }

    /// Records `counts[lane]` spans on each lane from a thread of its own, interleaving the
    /// lanes and interning a fresh name every 1000 spans of a lane.
    fn record_lanes(recorder: Recorder, counts: [u32; 2]) -> thread::JoinHandle<()> {
        thread::spawn(move || {
            for step in 0..counts[0].max(counts[1]) {
                for (lane, count) in counts.into_iter().enumerate() {
                    if step < count {
                        let lane = lane as u32;
                        let op = recorder.intern(&format!("lane{lane}-op{}", step / 1000));
                        recorder.record(span(&recorder, lane, op, step));
                    }
                }
                if step % 500 == 0 {
                    thread::sleep(Duration::from_millis(1));
                }
            }
        })
    }

    #[test]
    fn every_span_and_name_arrives_once_in_order_per_lane() {
        let (recorder, drain) = Recorder::new(Rank(2), 1 << 16);
        let buf = SharedBuf::default();
        let stream = RankStream::start(drain, buf.clone(), Duration::from_millis(1)).unwrap();
        let lanes = record_lanes(recorder, [9000, 5000]);
        stream.send(Record::Progress {
            rank: Rank(2),
            done: 1,
            total: 2,
        });
        lanes.join().unwrap();
        stream.finish().unwrap();

        let records = parse(&buf.0.lock().unwrap());
        let mut names: HashMap<OpId, String> = HashMap::new();
        let mut steps: HashMap<Lane, Vec<u32>> = HashMap::new();
        for record in &records {
            match record {
                Record::OpName { rank, op, name } => {
                    assert_eq!(*rank, Rank(2));
                    assert!(names.insert(*op, name.clone()).is_none(), "{name} twice");
                }
                Record::Spans(batch) => {
                    assert!(!batch.is_empty() && batch.len() <= MAX_SPANS_PER_BATCH);
                    for s in batch {
                        assert!(
                            names.contains_key(&s.op),
                            "span before the name of {:?}",
                            s.op
                        );
                        let lane_op =
                            format!("lane{}-op{}", s.lane.0, s.attrs.step.unwrap() / 1000);
                        assert_eq!(names[&s.op], lane_op);
                        steps.entry(s.lane).or_default().push(s.attrs.step.unwrap());
                    }
                }
                Record::Progress { .. } => {}
                Record::Dropped { rank, spans } => assert_eq!((*rank, *spans), (Rank(2), 0)),
                other => panic!("unexpected record {other:?}"),
            }
        }
        assert_eq!(names.len(), 9 + 5);
        assert_eq!(steps[&Lane(0)], (0..9000).collect::<Vec<_>>());
        assert_eq!(steps[&Lane(1)], (0..5000).collect::<Vec<_>>());
        let progress = records
            .iter()
            .filter(|r| matches!(r, Record::Progress { .. }));
        assert_eq!(progress.count(), 1);
    }

    #[test]
    fn drops_are_reported_as_a_cumulative_count() {
        let (recorder, drain) = Recorder::new(Rank(1), 4);
        let op = recorder.intern("op");
        for step in 0..10 {
            recorder.record(span(&recorder, 0, op, step));
        }
        let buf = SharedBuf::default();
        let stream = RankStream::start(drain, buf.clone(), Duration::from_secs(60)).unwrap();
        stream.finish().unwrap();

        let records = parse(&buf.0.lock().unwrap());
        assert!(matches!(&records[0], Record::OpName { name, .. } if name == "op"));
        assert!(matches!(&records[1], Record::Spans(b) if b.len() == 4));
        assert_eq!(
            records[2],
            Record::Dropped {
                rank: Rank(1),
                spans: 6
            }
        );
        assert_eq!(records.len(), 3);
    }

    #[test]
    fn queued_records_follow_the_spans_recorded_before_them() {
        let (recorder, drain) = Recorder::new(Rank(0), 64);
        let op = recorder.intern("op");
        let buf = SharedBuf::default();
        let stream = RankStream::start(drain, buf.clone(), Duration::from_secs(60)).unwrap();
        recorder.record(span(&recorder, 0, op, 0));
        stream.send(Record::Output {
            rank: Rank(0),
            tokens: vec![vec![7, 8]],
        });
        recorder.record(span(&recorder, 0, op, 1));
        stream.finish().unwrap();

        let records = parse(&buf.0.lock().unwrap());
        let position = |wanted: &dyn Fn(&Record) -> bool| records.iter().position(wanted).unwrap();
        let first_span = position(
            &|r| matches!(r, Record::Spans(b) if b.iter().any(|s| s.attrs.step == Some(0))),
        );
        let output = position(&|r| matches!(r, Record::Output { .. }));
        let second_span = position(
            &|r| matches!(r, Record::Spans(b) if b.iter().any(|s| s.attrs.step == Some(1))),
        );
        assert!(first_span < output, "{records:?}");
        assert!(second_span >= first_span);
    }

    #[test]
    fn flush_now_writes_what_was_recorded_before_it() {
        let (recorder, drain) = Recorder::new(Rank(0), 64);
        let op = recorder.intern("op");
        let buf = SharedBuf::default();
        let stream = RankStream::start(drain, buf.clone(), Duration::from_secs(60)).unwrap();
        recorder.record(span(&recorder, 0, op, 0));
        stream.send(Record::Progress {
            rank: Rank(0),
            done: 1,
            total: 1,
        });
        stream.flush_now();
        let records = parse(&buf.0.lock().unwrap());
        assert!(
            matches!(&records[1], Record::Spans(b) if b.len() == 1),
            "{records:?}"
        );
        assert!(
            matches!(records[2], Record::Dropped { spans: 0, .. }),
            "a known zero is written once"
        );
        assert!(matches!(records[3], Record::Progress { done: 1, .. }));
        stream.finish().unwrap();
    }

    #[test]
    fn write_error_ends_the_flusher_and_the_recorder_keeps_counting() {
        let (recorder, drain) = Recorder::new(Rank(5), 2);
        let op = recorder.intern("op");
        let stream =
            RankStream::start(drain, BrokenPipe { accepted: 0 }, Duration::from_millis(1)).unwrap();
        for step in 0..5 {
            recorder.record(span(&recorder, 0, op, step));
        }
        let err = stream.finish().unwrap_err().to_string();
        assert!(err.contains("stream of rank 5"), "{err}");
        let dropped_before = recorder.dropped();
        for step in 5..10 {
            recorder.record(span(&recorder, 0, op, step));
        }
        // Nothing drains a finished stream's recorder: at most 2 of the 5 fit.
        assert!(recorder.dropped() >= dropped_before + 3);
    }
}
