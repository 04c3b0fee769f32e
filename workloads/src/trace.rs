//! How the decoder's ops become spans: the op names, interned once per rank, and a `Tracer` that
//! times a piece of work and hands the span to the recorder.
//!
//! Everything here is on the hot path: no allocation, no lock (the names were interned up front).

use crate::comm::{CommError, Ring};
use pinch_collector::Recorder;
use pinch_kernels::Cost;
use pinch_traces::{Category, CollectiveAttrs, CollectiveKind, Lane, OpId, SpanAttrs};

/// The lane a rank's decoder spans are laid on: the rank runs its ops on one thread.
pub const LANE: Lane = Lane(0);

/// Every op name the decoder records, in the order of a forward pass.
pub const OP_NAMES: [&str; 19] = [
    "embedding",
    "attn_norm",
    "matmul.qkv",
    "rope",
    "kv_cache.append",
    "attention",
    "matmul.o",
    "all_reduce.attn",
    "residual_add",
    "mlp_norm",
    "matmul.gate_up",
    "silu_mul",
    "matmul.down",
    "all_reduce.mlp",
    "final_norm",
    "lm_head",
    "sample",
    "step.bookkeeping",
    "weights.init",
];

/// The interned id of each op name in `OP_NAMES`.
#[derive(Clone, Copy, Debug)]
pub struct Ops {
    pub embedding: OpId,
    pub attn_norm: OpId,
    pub matmul_qkv: OpId,
    pub rope: OpId,
    pub kv_append: OpId,
    pub attention: OpId,
    pub matmul_o: OpId,
    pub all_reduce_attn: OpId,
    pub residual_add: OpId,
    pub mlp_norm: OpId,
    pub matmul_gate_up: OpId,
    pub silu_mul: OpId,
    pub matmul_down: OpId,
    pub all_reduce_mlp: OpId,
    pub final_norm: OpId,
    pub lm_head: OpId,
    pub sample: OpId,
    pub bookkeeping: OpId,
    pub weights_init: OpId,
}

impl Ops {
    /// Interns every op name with `recorder` (locks and allocates: call once, before the run).
    pub fn intern(recorder: &Recorder) -> Ops {
        let [a, b, c, d, e, f, g, h, i, j, k, l, m, n, o, p, q, r, s] =
            OP_NAMES.map(|name| recorder.intern(name));
        Ops {
            embedding: a,
            attn_norm: b,
            matmul_qkv: c,
            rope: d,
            kv_append: e,
            attention: f,
            matmul_o: g,
            all_reduce_attn: h,
            residual_add: i,
            mlp_norm: j,
            matmul_gate_up: k,
            silu_mul: l,
            matmul_down: m,
            all_reduce_mlp: n,
            final_norm: o,
            lm_head: p,
            sample: q,
            bookkeeping: r,
            weights_init: s,
        }
    }
}

/// Where in the run an op happens: its step, and its layer when inside one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct At {
    pub step: u32,
    pub layer: Option<u32>,
}

impl At {
    pub fn step(step: u32) -> At {
        At { step, layer: None }
    }

    pub fn layer(step: u32, layer: usize) -> At {
        At {
            step,
            layer: Some(layer as u32),
        }
    }

    fn attrs(self) -> SpanAttrs {
        SpanAttrs {
            layer: self.layer,
            step: Some(self.step),
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

/// Times ops into spans on one rank's recorder.
#[derive(Debug)]
pub struct Tracer<'r> {
    recorder: &'r Recorder,
    pub ops: Ops,
}

impl<'r> Tracer<'r> {
    pub fn new(recorder: &'r Recorder) -> Tracer<'r> {
        Tracer {
            recorder,
            ops: Ops::intern(recorder),
        }
    }

    /// Runs a kernel as a compute span carrying its cost.
    #[inline]
    pub fn compute(&self, op: OpId, at: At, kernel: impl FnOnce() -> Cost) {
        let start_ns = self.recorder.now_ns();
        let cost = kernel();
        let attrs = at.attrs_with(cost);
        self.recorder
            .finish(LANE, Category::Compute, op, start_ns, attrs);
    }

    /// Runs a fallible data movement within the rank as a memory span; a failure is recorded too.
    #[inline]
    pub fn memory<E>(
        &self,
        op: OpId,
        at: At,
        kernel: impl FnOnce() -> Result<Cost, E>,
    ) -> Result<(), E> {
        let start_ns = self.recorder.now_ns();
        let outcome = kernel();
        let attrs = match &outcome {
            Ok(cost) => at.attrs_with(*cost),
            Err(_) => at.attrs(),
        };
        self.recorder
            .finish(LANE, Category::Memory, op, start_ns, attrs);
        outcome.map(|_| ())
    }

    /// Runs host-side bookkeeping as a host span (no cost model).
    #[inline]
    pub fn host<T>(&self, op: OpId, at: At, work: impl FnOnce() -> T) -> T {
        let start_ns = self.recorder.now_ns();
        let out = work();
        self.recorder
            .finish(LANE, Category::Host, op, start_ns, at.attrs());
        out
    }

    /// All-reduces `data` over `ring` as a communication span, recorded even when it fails (the
    /// time spent before a peer vanished is part of the story). A ring of one has nothing to
    /// reduce: no collective is issued and no span recorded.
    pub fn all_reduce(
        &self,
        op: OpId,
        at: At,
        ring: &mut Ring,
        data: &mut [f32],
    ) -> Result<(), CommError> {
        if ring.world() == 1 {
            return Ok(());
        }
        let collective = CollectiveAttrs {
            kind: CollectiveKind::AllReduce,
            seq: ring.seq(),
            participants: ring.world() as u32,
            peer: None,
            message_bytes: std::mem::size_of_val(data) as u64,
            wait_ns: None,
        };
        let start_ns = self.recorder.now_ns();
        let outcome = ring.all_reduce_sum(data);
        let attrs = SpanAttrs {
            collective: Some(collective),
            ..at.attrs()
        };
        self.recorder
            .finish(LANE, Category::Communication, op, start_ns, attrs);
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinch_traces::{Rank, Span};

    fn drain(recorder: &Recorder) -> Vec<Span> {
        let mut spans = Vec::new();
        recorder.drain_into(&mut spans, usize::MAX);
        spans
    }

    #[test]
    fn every_op_name_is_interned_to_a_distinct_id() {
        let recorder = Recorder::new(Rank(0), 16);
        let ops = Ops::intern(&recorder);
        let names = recorder.names_from(0);
        assert_eq!(names.len(), OP_NAMES.len());
        assert_eq!(names[ops.bookkeeping.0 as usize].1, "step.bookkeeping");
        assert_eq!(names[ops.all_reduce_mlp.0 as usize].1, "all_reduce.mlp");
    }

    #[test]
    fn spans_carry_category_cost_step_and_layer() {
        let recorder = Recorder::new(Rank(1), 16);
        let tracer = Tracer::new(&recorder);
        let cost = Cost {
            flops: 10,
            bytes: 20,
        };
        tracer.compute(tracer.ops.rope, At::layer(3, 2), || cost);
        let failed: Result<(), &str> =
            tracer.memory(tracer.ops.kv_append, At::step(4), || Err("full"));
        assert_eq!(failed, Err("full"));
        assert_eq!(tracer.host(tracer.ops.bookkeeping, At::step(5), || 7), 7);
        let spans = drain(&recorder);
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
                (Category::Host, ops.bookkeeping, None, Some(5), None),
            ]
        );
        assert_eq!(spans[0].attrs.bytes, Some(20));
        assert!(spans.iter().all(|s| s.rank == Rank(1) && s.lane == LANE));
    }

    #[test]
    fn a_ring_of_one_records_no_collective() {
        let recorder = Recorder::new(Rank(0), 16);
        let tracer = Tracer::new(&recorder);
        let mut data = [1.0, 2.0];
        let mut ring = Ring::solo();
        tracer
            .all_reduce(
                tracer.ops.all_reduce_attn,
                At::step(0),
                &mut ring,
                &mut data,
            )
            .unwrap();
        assert_eq!(data, [1.0, 2.0]);
        assert!(drain(&recorder).is_empty());
    }
}
