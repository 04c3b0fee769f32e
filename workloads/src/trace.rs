//! How a rank's work becomes spans: the op names, interned once per rank, and a `Tracer` that
//! times a piece of work and hands the span to the recorder.
//!
//! Everything here is on the hot path: no allocation, no lock (the names were interned up front).
//! The compute slow-down fault lives here too, so an injected slow rank looks exactly like a rank
//! whose kernels are slower: the stretch is spent inside the compute span, busy.

use crate::comm::{CommError, Group, Outcome};
use pinch_collector::Recorder;
use pinch_kernels::Cost;
use pinch_traces::{Category, CollectiveAttrs, CollectiveKind, Lane, OpId, Rank, SpanAttrs};
use std::time::{Duration, Instant};

/// The lane a rank's spans are laid on: the rank runs its ops on one thread.
pub const LANE: Lane = Lane(0);

macro_rules! ops {
    ($($field:ident => $name:literal,)*) => {
        /// Every op name a rank records, in the order of a forward pass.
        pub const OP_NAMES: &[&str] = &[$($name,)*];

        /// The interned id of each op name in `OP_NAMES`.
        #[derive(Clone, Copy, Debug)]
        pub struct Ops {
            $(pub $field: OpId,)*
        }

        impl Ops {
            /// Interns every op name with `recorder` (locks and allocates: call once, before
            /// the run).
            pub fn intern(recorder: &Recorder) -> Ops {
                Ops { $($field: recorder.intern($name),)* }
            }
        }
    };
}

ops! {
    embedding => "embedding",
    all_reduce_embed => "all_reduce.embed",
    recv_activations => "pp.recv",
    attn_norm => "attn_norm",
    matmul_qkv => "matmul.qkv",
    rope => "rope",
    kv_append => "kv_cache.append",
    attention => "attention",
    matmul_o => "matmul.o",
    all_reduce_attn => "all_reduce.attn",
    residual_add => "residual_add",
    mlp_norm => "mlp_norm",
    matmul_gate_up => "matmul.gate_up",
    silu_mul => "silu_mul",
    matmul_down => "matmul.down",
    moe_router => "moe.router",
    moe_dispatch => "moe.dispatch",
    moe_experts => "moe.experts",
    moe_return => "moe.return",
    moe_combine => "moe.combine",
    moe_shared => "moe.shared",
    all_reduce_mlp => "all_reduce.mlp",
    send_activations => "pp.send",
    final_norm => "final_norm",
    lm_head => "lm_head",
    sample => "sample",
    all_gather_sample => "all_gather.sample",
    send_tokens => "tokens.send",
    recv_tokens => "tokens.recv",
    schedule => "schedule",
    broadcast_plan => "plan.broadcast",
    step_sync => "step.sync",
    idle => "idle",
    weights_init => "weights.init",
}

/// Where in the run an op happens: its step, its layer when inside one, and its pipeline
/// micro-batch when pipelined.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct At {
    pub step: u32,
    pub layer: Option<u32>,
    pub micro_batch: Option<u32>,
}

impl At {
    pub fn step(step: u32) -> At {
        At {
            step,
            layer: None,
            micro_batch: None,
        }
    }

    pub fn layer(self, layer: usize) -> At {
        At {
            layer: Some(layer as u32),
            ..self
        }
    }

    pub fn micro_batch(self, micro_batch: Option<usize>) -> At {
        At {
            micro_batch: micro_batch.map(|m| m as u32),
            ..self
        }
    }

    fn attrs(self) -> SpanAttrs {
        SpanAttrs {
            layer: self.layer,
            step: Some(self.step),
            micro_batch: self.micro_batch,
            ..SpanAttrs::default()
        }
    }

    fn attrs_with(self, cost: Cost) -> SpanAttrs {
        SpanAttrs {
            flops: Some(cost.flops),
            bytes: Some(cost.bytes),
            ..self.attrs()
        }
    }
}

/// A collective about to be issued: what the span will say of it.
#[derive(Clone, Copy, Debug)]
pub struct Issue {
    pub kind: CollectiveKind,
    /// The other side, for point-to-point operations (a global rank).
    pub peer: Option<usize>,
    pub message_bytes: u64,
}

/// Times ops into spans on one rank's recorder.
#[derive(Debug)]
pub struct Tracer<'r> {
    recorder: &'r Recorder,
    pub ops: Ops,
    /// Injected fault: compute takes this many times as long (1.0: no fault).
    compute_factor: f64,
}

impl<'r> Tracer<'r> {
    pub fn new(recorder: &'r Recorder) -> Tracer<'r> {
        Tracer {
            recorder,
            ops: Ops::intern(recorder),
            compute_factor: 1.0,
        }
    }

    /// Makes every compute op take `factor` times as long (fault injection; `factor >= 1`).
    pub fn with_compute_factor(mut self, factor: f64) -> Tracer<'r> {
        self.compute_factor = factor.max(1.0);
        self
    }

    pub fn now_ns(&self) -> u64 {
        self.recorder.now_ns()
    }

    /// Runs a kernel as a compute span carrying its cost.
    #[inline]
    pub fn compute(&self, op: OpId, at: At, kernel: impl FnOnce() -> Cost) {
        let start = self.recorder.stamp();
        let started = Instant::now();
        let cost = kernel();
        self.stretch(started);
        self.recorder
            .finish(LANE, Category::Compute, op, start, at.attrs_with(cost));
    }

    /// Spins until the work begun at `started` has taken `compute_factor` times its length.
    fn stretch(&self, started: Instant) {
        if self.compute_factor > 1.0 {
            let target = started.elapsed().mul_f64(self.compute_factor);
            while started.elapsed() < target {
                std::hint::spin_loop();
            }
        }
    }

    /// Runs a fallible data movement within the rank as a memory span; a failure is recorded too.
    #[inline]
    pub fn memory<E>(
        &self,
        op: OpId,
        at: At,
        kernel: impl FnOnce() -> Result<Cost, E>,
    ) -> Result<(), E> {
        let start = self.recorder.stamp();
        let outcome = kernel();
        let attrs = match &outcome {
            Ok(cost) => at.attrs_with(*cost),
            Err(_) => at.attrs(),
        };
        self.recorder
            .finish(LANE, Category::Memory, op, start, attrs);
        outcome.map(|_| ())
    }

    /// Runs host-side bookkeeping as a host span (no cost model).
    #[inline]
    pub fn host<T>(&self, op: OpId, at: At, work: impl FnOnce() -> T) -> T {
        let start = self.recorder.stamp();
        let out = work();
        self.recorder
            .finish(LANE, Category::Host, op, start, at.attrs());
        out
    }

    /// Time the rank spent with nothing to do (waiting for requests), as a wait span.
    pub fn wait<T>(&self, op: OpId, at: At, work: impl FnOnce() -> T) -> T {
        let start = self.recorder.stamp();
        let out = work();
        self.recorder
            .finish(LANE, Category::Wait, op, start, at.attrs());
        out
    }

    /// Runs a collective on `group` as a communication span carrying its kind, sequence number,
    /// participants, bytes and the time spent waiting for peers. The span is recorded even when
    /// the collective fails (the time before a peer vanished is part of the story). A group of
    /// one has nothing to exchange: the collective still runs (it keeps sequence numbers in
    /// step) but no span is recorded.
    pub fn collective(
        &self,
        op: OpId,
        at: At,
        group: &mut Group,
        issue: Issue,
        run: impl FnOnce(&mut Group) -> Result<Outcome, CommError>,
    ) -> Result<Outcome, CommError> {
        let bytes = issue.message_bytes;
        self.collective_sized(op, at, group, issue, |g| run(g).map(|o| (o, bytes)))
    }

    /// `collective` for operations whose size only the operation learns (a broadcast's or a
    /// receive's payload): `run` returns the message bytes with the outcome.
    pub fn collective_sized(
        &self,
        op: OpId,
        at: At,
        group: &mut Group,
        issue: Issue,
        run: impl FnOnce(&mut Group) -> Result<(Outcome, u64), CommError>,
    ) -> Result<Outcome, CommError> {
        let attrs = CollectiveAttrs {
            kind: issue.kind,
            group: group.id(),
            seq: group.seq(),
            participants: group.size() as u32,
            peer: issue.peer.map(|p| Rank(p as u32)),
            message_bytes: issue.message_bytes,
            wait_ns: None,
        };
        let solo = group.size() == 1;
        let start = self.recorder.stamp();
        let outcome = run(group);
        if !solo {
            let collective = match &outcome {
                Ok((o, bytes)) => CollectiveAttrs {
                    wait_ns: Some(o.wait_ns),
                    message_bytes: *bytes,
                    ..attrs
                },
                Err(_) => attrs,
            };
            let attrs = SpanAttrs {
                collective: Some(collective),
                ..at.attrs()
            };
            self.recorder
                .finish(LANE, Category::Communication, op, start, attrs);
        }
        outcome.map(|(o, _)| o)
    }

    /// Sleeps for `duration` as a wait span (idle ranks between requests).
    pub fn idle(&self, at: At, duration: Duration) {
        self.wait(self.ops.idle, at, || std::thread::sleep(duration));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinch_collector::SpanDrain;
    use pinch_traces::{Rank, Span};

    fn drain(drain: &mut SpanDrain) -> Vec<Span> {
        let mut spans = Vec::new();
        drain.drain_into(&mut spans, usize::MAX);
        spans
    }

    #[test]
    fn every_op_name_is_interned_to_a_distinct_id() {
        let (recorder, spans) = Recorder::new(Rank(0), 16);
        let ops = Ops::intern(&recorder);
        let names = spans.names_from(0);
        assert_eq!(names.len(), OP_NAMES.len());
        assert_eq!(names[ops.schedule.0 as usize].1, "schedule");
        assert_eq!(names[ops.all_reduce_mlp.0 as usize].1, "all_reduce.mlp");
    }

    #[test]
    fn spans_carry_category_cost_step_layer_and_micro_batch() {
        let (recorder, mut spans_out) = Recorder::new(Rank(1), 16);
        let tracer = Tracer::new(&recorder);
        let cost = Cost {
            flops: 10,
            bytes: 20,
        };
        let at = At::step(3).micro_batch(Some(1));
        tracer.compute(tracer.ops.rope, at.layer(2), || cost);
        let failed: Result<(), &str> =
            tracer.memory(tracer.ops.kv_append, At::step(4), || Err("full"));
        assert_eq!(failed, Err("full"));
        assert_eq!(tracer.host(tracer.ops.schedule, At::step(5), || 7), 7);
        let spans = drain(&mut spans_out);
        let summary: Vec<_> = spans
            .iter()
            .map(|s| (s.category, s.op, s.attrs.flops, s.attrs.step, s.attrs.layer))
            .collect();
        let ops = tracer.ops;
        assert_eq!(
            summary,
            vec![
                (Category::Compute, ops.rope, Some(10), Some(3), Some(2)),
                (Category::Memory, ops.kv_append, None, Some(4), None),
                (Category::Host, ops.schedule, None, Some(5), None),
            ]
        );
        assert_eq!(spans[0].attrs.bytes, Some(20));
        assert_eq!(spans[0].attrs.micro_batch, Some(1));
        assert!(spans.iter().all(|s| s.rank == Rank(1) && s.lane == LANE));
    }

    #[test]
    fn a_slowed_rank_spends_the_factor_inside_its_compute_spans() {
        let (recorder, mut spans_out) = Recorder::new(Rank(0), 16);
        let tracer = Tracer::new(&recorder).with_compute_factor(3.0);
        tracer.compute(tracer.ops.rope, At::step(0), || {
            std::thread::sleep(Duration::from_millis(5));
            Cost::default()
        });
        let spans = drain(&mut spans_out);
        assert!(
            spans[0].duration_ns >= 15_000_000,
            "{}",
            spans[0].duration_ns
        );
    }

    #[test]
    fn a_group_of_one_records_no_collective() {
        let (recorder, mut spans_out) = Recorder::new(Rank(0), 16);
        let tracer = Tracer::new(&recorder);
        let mut group = Group::new(0, vec![0], 0).unwrap();
        let issue = Issue {
            kind: CollectiveKind::AllReduce,
            peer: None,
            message_bytes: 8,
        };
        let outcome = tracer.collective(
            tracer.ops.all_reduce_attn,
            At::step(0),
            &mut group,
            issue,
            |_| Ok(Outcome::default()),
        );
        assert!(outcome.is_ok());
        assert!(drain(&mut spans_out).is_empty());
    }
}
