//! The decoder's forward pass on one rank's shard, one traced kernel call per op.
//!
//! Per layer: attention block (norm, column-parallel q/k/v, RoPE, KV-cache append, attention over
//! the local heads, row-parallel o projection, all-reduce, residual add), then MLP block (norm,
//! column-parallel gate/up, SiLU-gate, row-parallel down projection, all-reduce, residual add).
//! Then the final norm of each sequence's last position, the replicated LM head and greedy
//! sampling. The all-reduced partial sums are identical on every rank, so every rank computes
//! the same residual stream, logits and tokens.
//!
//! Activations are allocated once, for the largest step (the prefill), and reused.

use crate::comm::Ring;
use crate::config::ModelConfig;
use crate::error::WorkloadError;
use crate::trace::{At, Tracer};
use crate::weights::{LayerWeights, ShardWeights};
use pinch_kernels::{
    Cost, KvCache, add_in_place, attention, embedding, greedy_sample, matmul, rms_norm, rope,
    silu_mul,
};

/// The sizes one rank computes with: the model's, with heads and MLP columns local to the rank.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Dims {
    pub vocab: usize,
    pub hidden: usize,
    /// Local query heads.
    pub heads: usize,
    /// Local key-value heads.
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Local MLP columns.
    pub ffn: usize,
    pub rope_theta: f32,
    pub norm_eps: f32,
}

impl Dims {
    fn new(model: &ModelConfig, shard: &ShardWeights) -> Dims {
        let layout = shard.layout;
        Dims {
            vocab: model.vocab,
            hidden: model.hidden,
            heads: layout.heads,
            kv_heads: layout.kv_heads,
            head_dim: layout.head_dim,
            ffn: layout.ffn,
            rope_theta: model.rope_theta,
            norm_eps: model.norm_eps,
        }
    }

    fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// One step's input: `new_tokens` tokens per sequence, `[batch, new_tokens]` row-major, and the
/// position of each.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StepInput {
    pub tokens: Vec<u32>,
    pub positions: Vec<usize>,
    pub new_tokens: usize,
}

/// Activation buffers, sized for `max_rows` rows (batch × the longest step).
#[derive(Debug)]
struct Buffers {
    /// The residual stream, `[rows, hidden]`.
    x: Vec<f32>,
    normed: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    /// A row-parallel projection's partial sum, all-reduced in place, `[rows, hidden]`.
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    act: Vec<f32>,
    /// The final norm of each sequence's last position, `[batch, hidden]`.
    last: Vec<f32>,
    logits: Vec<f32>,
    sampled: Vec<u32>,
}

/// This step's rows of every buffer.
struct Views<'a> {
    x: &'a mut [f32],
    normed: &'a mut [f32],
    q: &'a mut [f32],
    k: &'a mut [f32],
    v: &'a mut [f32],
    attn: &'a mut [f32],
    proj: &'a mut [f32],
    gate: &'a mut [f32],
    up: &'a mut [f32],
    act: &'a mut [f32],
}

impl Buffers {
    fn new(dims: &Dims, batch: usize, max_rows: usize) -> Buffers {
        let rows = |width: usize| vec![0.0f32; max_rows * width];
        Buffers {
            x: rows(dims.hidden),
            normed: rows(dims.hidden),
            q: rows(dims.q_dim()),
            k: rows(dims.kv_dim()),
            v: rows(dims.kv_dim()),
            attn: rows(dims.q_dim()),
            proj: rows(dims.hidden),
            gate: rows(dims.ffn),
            up: rows(dims.ffn),
            act: rows(dims.ffn),
            last: vec![0.0; batch * dims.hidden],
            logits: vec![0.0; batch * dims.vocab],
            sampled: vec![0; batch],
        }
    }

    fn views(&mut self, dims: &Dims, rows: usize) -> Views<'_> {
        Views {
            x: &mut self.x[..rows * dims.hidden],
            normed: &mut self.normed[..rows * dims.hidden],
            q: &mut self.q[..rows * dims.q_dim()],
            k: &mut self.k[..rows * dims.kv_dim()],
            v: &mut self.v[..rows * dims.kv_dim()],
            attn: &mut self.attn[..rows * dims.q_dim()],
            proj: &mut self.proj[..rows * dims.hidden],
            gate: &mut self.gate[..rows * dims.ffn],
            up: &mut self.up[..rows * dims.ffn],
            act: &mut self.act[..rows * dims.ffn],
        }
    }
}

/// What every op of one step shares.
struct Pass<'a, 'r> {
    tracer: &'a Tracer<'r>,
    dims: Dims,
    batch: usize,
    input: &'a StepInput,
    step: u32,
}

impl Pass<'_, '_> {
    fn rows(&self) -> usize {
        self.batch * self.input.new_tokens
    }
}

/// One rank's decoder: its weights, KV caches and activation buffers.
#[derive(Debug)]
pub struct Decoder {
    dims: Dims,
    batch: usize,
    max_tokens: usize,
    weights: ShardWeights,
    caches: Vec<KvCache>,
    buffers: Buffers,
}

impl Decoder {
    /// A decoder for `batch` sequences of up to `max_seq` positions, taking at most
    /// `max_tokens` new tokens per sequence in one step.
    pub fn new(
        model: &ModelConfig,
        weights: ShardWeights,
        batch: usize,
        max_tokens: usize,
        max_seq: usize,
    ) -> Decoder {
        let dims = Dims::new(model, &weights);
        let caches = (0..model.layers)
            .map(|_| KvCache::new(batch, max_seq, dims.kv_heads, dims.head_dim))
            .collect();
        Decoder {
            dims,
            batch,
            max_tokens,
            weights,
            caches,
            buffers: Buffers::new(&dims, batch, batch * max_tokens),
        }
    }

    pub fn dims(&self) -> Dims {
        self.dims
    }

    /// The last step's logits, `[batch, vocab]`: for each sequence, those of its last position.
    pub fn logits(&self) -> &[f32] {
        &self.buffers.logits
    }

    /// Empties the KV caches for the next batch of sequences, keeping their memory.
    pub fn reset(&mut self) {
        self.caches.iter_mut().for_each(KvCache::clear);
    }

    /// Positions already in the KV caches: where the next step's tokens go.
    pub fn cached_positions(&self) -> usize {
        self.caches.first().map_or(0, KvCache::len)
    }

    /// Runs one step (a prefill or a decode) and returns the token sampled for each sequence.
    pub fn forward(
        &mut self,
        tracer: &Tracer,
        ring: &mut Ring,
        input: &StepInput,
        step: u32,
    ) -> Result<&[u32], WorkloadError> {
        assert!(
            input.new_tokens <= self.max_tokens,
            "a step of {} tokens exceeds the {} the buffers were sized for",
            input.new_tokens,
            self.max_tokens
        );
        let pass = Pass {
            tracer,
            dims: self.dims,
            batch: self.batch,
            input,
            step,
        };
        let mut views = self.buffers.views(&self.dims, pass.rows());
        embed(&pass, &self.weights.embedding, views.x);
        for (layer, (weights, cache)) in
            self.weights.layers.iter().zip(&mut self.caches).enumerate()
        {
            attention_block(&pass, layer, weights, cache, &mut views, ring)?;
            mlp_block(&pass, layer, weights, &mut views, ring)?;
        }
        head(&pass, &self.weights, &mut self.buffers);
        Ok(&self.buffers.sampled)
    }
}

fn embed(pass: &Pass, table: &[f32], x: &mut [f32]) {
    let op = pass.tracer.ops.embedding;
    let hidden = pass.dims.hidden;
    pass.tracer.compute(op, At::step(pass.step), || {
        embedding(table, hidden, &pass.input.tokens, x)
    });
}

/// Norm, q/k/v, RoPE, cache append, attention, o projection, all-reduce, residual add.
fn attention_block(
    pass: &Pass,
    layer: usize,
    w: &LayerWeights,
    cache: &mut KvCache,
    v: &mut Views,
    ring: &mut Ring,
) -> Result<(), WorkloadError> {
    let (tracer, ops, d) = (pass.tracer, &pass.tracer.ops, pass.dims);
    let (at, rows, new_tokens) = (
        At::layer(pass.step, layer),
        pass.rows(),
        pass.input.new_tokens,
    );
    tracer.compute(ops.attn_norm, at, || {
        rms_norm(v.x, &w.attn_norm, d.norm_eps, v.normed)
    });
    tracer.compute(ops.matmul_qkv, at, || {
        matmul(v.normed, &w.wq, rows, d.hidden, d.q_dim(), v.q)
            + matmul(v.normed, &w.wk, rows, d.hidden, d.kv_dim(), v.k)
            + matmul(v.normed, &w.wv, rows, d.hidden, d.kv_dim(), v.v)
    });
    let positions = &pass.input.positions;
    tracer.compute(ops.rope, at, || {
        rope(v.q, positions, d.heads, d.head_dim, d.rope_theta)
            + rope(v.k, positions, d.kv_heads, d.head_dim, d.rope_theta)
    });
    tracer
        .memory(ops.kv_append, at, || cache.append(v.k, v.v, new_tokens))
        .map_err(|source| WorkloadError::KvCache { layer, source })?;
    tracer.compute(ops.attention, at, || {
        attention(v.q, cache, pass.batch, new_tokens, d.heads, v.attn)
    });
    tracer.compute(ops.matmul_o, at, || {
        matmul(v.attn, &w.wo, rows, d.q_dim(), d.hidden, v.proj)
    });
    tracer.all_reduce(ops.all_reduce_attn, at, ring, v.proj)?;
    tracer.compute(ops.residual_add, at, || add_in_place(v.x, v.proj));
    Ok(())
}

/// Norm, gate/up, SiLU gating, down projection, all-reduce, residual add.
fn mlp_block(
    pass: &Pass,
    layer: usize,
    w: &LayerWeights,
    v: &mut Views,
    ring: &mut Ring,
) -> Result<(), WorkloadError> {
    let (tracer, ops, d) = (pass.tracer, &pass.tracer.ops, pass.dims);
    let (at, rows) = (At::layer(pass.step, layer), pass.rows());
    tracer.compute(ops.mlp_norm, at, || {
        rms_norm(v.x, &w.mlp_norm, d.norm_eps, v.normed)
    });
    tracer.compute(ops.matmul_gate_up, at, || {
        matmul(v.normed, &w.w_gate, rows, d.hidden, d.ffn, v.gate)
            + matmul(v.normed, &w.w_up, rows, d.hidden, d.ffn, v.up)
    });
    tracer.compute(ops.silu_mul, at, || silu_mul(v.gate, v.up, v.act));
    tracer.compute(ops.matmul_down, at, || {
        matmul(v.act, &w.w_down, rows, d.ffn, d.hidden, v.proj)
    });
    tracer.all_reduce(ops.all_reduce_mlp, at, ring, v.proj)?;
    tracer.compute(ops.residual_add, at, || add_in_place(v.x, v.proj));
    Ok(())
}

/// Final norm of each sequence's last position, LM head, greedy sampling.
fn head(pass: &Pass, weights: &ShardWeights, b: &mut Buffers) {
    let (tracer, ops, d) = (pass.tracer, &pass.tracer.ops, pass.dims);
    let at = At::step(pass.step);
    let new_tokens = pass.input.new_tokens;
    tracer.compute(ops.final_norm, at, || {
        let last_rows = b.last.chunks_exact_mut(d.hidden).enumerate();
        last_rows
            .map(|(seq, out)| {
                let row = (seq * new_tokens + new_tokens - 1) * d.hidden;
                rms_norm(
                    &b.x[row..row + d.hidden],
                    &weights.final_norm,
                    d.norm_eps,
                    out,
                )
            })
            .sum::<Cost>()
    });
    tracer.compute(ops.lm_head, at, || {
        matmul(
            &b.last,
            &weights.lm_head,
            pass.batch,
            d.hidden,
            d.vocab,
            &mut b.logits,
        )
    });
    tracer.compute(ops.sample, at, || {
        greedy_sample(&b.logits, d.vocab, &mut b.sampled)
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::ModelWeights;
    use pinch_collector::Recorder;
    use pinch_traces::Rank;

    fn small() -> ModelConfig {
        crate::config::test_model()
    }

    /// One step of two sequences: the same number of tokens each, from position `first` on.
    fn input(seqs: [&[u32]; 2], first: usize) -> StepInput {
        let new_tokens = seqs[0].len();
        StepInput {
            tokens: seqs.concat(),
            positions: (0..2).flat_map(|_| first..first + new_tokens).collect(),
            new_tokens,
        }
    }

    #[test]
    fn decoding_a_token_matches_prefilling_it() {
        let model = small();
        let recorder = Recorder::new(Rank(0), 1 << 12);
        let tracer = Tracer::new(&recorder);
        let mut ring = Ring::solo();
        let shard = || ModelWeights::generate(&model, 9).shard(0, 1).unwrap();
        let (a, b): (&[u32], &[u32]) = (&[3, 14, 15, 9, 26], &[53, 58, 9, 7, 29]);

        let mut stepwise = Decoder::new(&model, shard(), 2, 4, 8);
        stepwise
            .forward(&tracer, &mut ring, &input([&a[..4], &b[..4]], 0), 0)
            .unwrap();
        assert_eq!(stepwise.cached_positions(), 4);
        stepwise
            .forward(&tracer, &mut ring, &input([&a[4..], &b[4..]], 4), 1)
            .unwrap();
        assert_eq!(stepwise.cached_positions(), 5);

        let mut at_once = Decoder::new(&model, shard(), 2, 5, 8);
        let sampled = at_once
            .forward(&tracer, &mut ring, &input([a, b], 0), 0)
            .unwrap()
            .to_vec();
        let worst = stepwise
            .logits()
            .iter()
            .zip(at_once.logits())
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-4, "logits differ by {worst}");
        let (first, second) = at_once.logits().split_at(model.vocab);
        assert_ne!(
            first, second,
            "the two sequences do not bleed into each other"
        );
        assert_eq!(sampled.len(), 2);
    }

    #[test]
    fn a_run_past_the_cache_fails_naming_the_layer() {
        let model = small();
        let recorder = Recorder::new(Rank(0), 1 << 12);
        let tracer = Tracer::new(&recorder);
        let shard = ModelWeights::generate(&model, 9).shard(0, 1).unwrap();
        let mut decoder = Decoder::new(&model, shard, 2, 3, 4);
        let mut ring = Ring::solo();
        decoder
            .forward(&tracer, &mut ring, &input([&[1, 2, 3], &[4, 5, 6]], 0), 0)
            .unwrap();
        decoder
            .forward(&tracer, &mut ring, &input([&[7], &[8]], 3), 1)
            .unwrap();
        let err = decoder.forward(&tracer, &mut ring, &input([&[9], &[10]], 4), 2);
        let err = err.unwrap_err().to_string();
        assert!(
            err.starts_with("kv-cache append failed at layer 0: "),
            "{err}"
        );
    }
}
