//! One rank's stage of the decoder: its layers (dense or mixture-of-experts), the embedding on
//! the first stage and the LM head on the last, run over a batch of sequences whose KV caches
//! live in a paged block pool. One traced kernel call per op.
//!
//! Per layer: attention block (norm, column-parallel q/k/v, RoPE, KV write through each
//! sequence's block table, paged attention over the local heads, row-parallel o projection,
//! tensor-parallel all-reduce, residual add), then the feed-forward block: a dense SwiGLU MLP
//! (column-parallel gate/up, row-parallel down, all-reduce) or a mixture of experts (router,
//! top-k gating with an optional capacity, the experts this rank holds, an optional shared
//! expert). With expert parallelism the routed tokens travel to the rank holding their expert
//! and back by all-to-all.
//!
//! The vocabulary is split over the tensor-parallel ranks: each looks up the tokens of its slice
//! (zero rows for the others) and the partial embeddings are all-reduced; each computes the
//! logits of its slice, and the ranks all-gather their best (logit, token) pairs, so greedy
//! sampling picks the same token as a replicated head would, ties going to the lower token id.

use crate::comm::{AllReduceAlgo, CommError, Group, Mesh};
use crate::config::ModelConfig;
use crate::error::WorkloadError;
use crate::trace::{At, Issue, Tracer};
use crate::weights::{Ffn, LayerWeights, Mlp, MoeWeights, ShardWeights};
use pinch_kernels::{
    Cost, KvPool, add_in_place, embedding_w, matmul_w, paged_attention, rms_norm, rope, scale_add,
    silu_mul, top_k_gating,
};
use pinch_traces::{CollectiveKind, ExpertTokens, Rank};

/// How the mixture-of-experts layers route.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MoeOptions {
    /// Tokens an expert takes per step, as a multiple of an even share (`tokens · k / experts`);
    /// the overflow is dropped (its expert output is zero). `None`: no limit.
    pub capacity_factor: Option<f32>,
    /// Fault injection: biases routing towards low expert ids, Zipf-like with this exponent.
    pub skew: Option<f64>,
}

/// The communicators a forward pass uses.
#[derive(Debug)]
pub struct Comms<'a> {
    pub mesh: &'a mut Mesh,
    pub tp: &'a mut Group,
    /// Every expert-parallel rank; `None` without expert parallelism.
    pub experts: Option<&'a mut Group>,
    pub algo: AllReduceAlgo,
}

/// One sequence's part of a step.
#[derive(Clone, Copy, Debug)]
pub struct SeqInput<'a> {
    pub tokens: &'a [u32],
    /// Position of `tokens[0]`.
    pub start_pos: usize,
    pub block_table: &'a [u32],
    /// Whether this step samples the sequence's next token (from its last row).
    pub samples: bool,
}

/// A step's sequences, flattened into rows.
#[derive(Clone, Debug)]
pub struct Batch<'a> {
    pub seqs: Vec<SeqInput<'a>>,
    /// Each sequence's first row.
    starts: Vec<usize>,
    positions: Vec<usize>,
    tokens: Vec<u32>,
}

impl<'a> Batch<'a> {
    pub fn new(seqs: Vec<SeqInput<'a>>) -> Batch<'a> {
        let mut starts = Vec::with_capacity(seqs.len());
        let mut positions = Vec::new();
        let mut tokens = Vec::new();
        for seq in &seqs {
            starts.push(positions.len());
            positions.extend(seq.start_pos..seq.start_pos + seq.tokens.len());
            tokens.extend_from_slice(seq.tokens);
        }
        Batch {
            seqs,
            starts,
            positions,
            tokens,
        }
    }

    pub fn rows(&self) -> usize {
        self.positions.len()
    }

    /// The rows whose next token is sampled: each sampling sequence's last row.
    fn sampled_rows(&self) -> Vec<usize> {
        self.seqs
            .iter()
            .zip(&self.starts)
            .filter(|(s, _)| s.samples && !s.tokens.is_empty())
            .map(|(s, &start)| start + s.tokens.len() - 1)
            .collect()
    }
}

/// The widths one rank computes with.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Dims {
    hidden: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    rope_theta: f32,
    norm_eps: f32,
}

impl Dims {
    fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// Activations, grown to the largest step seen and then reused.
#[derive(Debug, Default)]
struct Buffers {
    x: Vec<f32>,
    normed: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gate: Vec<f32>,
    up: Vec<f32>,
    act: Vec<f32>,
    mlp_out: Vec<f32>,
    scratch: Vec<f32>,
    moe: MoeBuffers,
    logits: Vec<f32>,
}

#[derive(Debug, Default)]
struct MoeBuffers {
    router_logits: Vec<f32>,
    ids: Vec<u32>,
    gates: Vec<f32>,
    /// Per routed slot (token-major, k per token): whether it was kept under the capacity.
    kept: Vec<bool>,
    /// Per routed slot: the expert's output row.
    slot_out: Vec<f32>,
    /// Rows gathered for one expert, and their outputs.
    gathered: Vec<f32>,
    gathered_out: Vec<f32>,
    send: Vec<f32>,
    send_counts: Vec<usize>,
    recv: Vec<f32>,
    recv_counts: Vec<usize>,
    /// Per slot sent away, in send order: the slot index.
    order: Vec<usize>,
    /// The rows to run through the experts this step: which expert, where each comes from.
    routed: Vec<Routed>,
    /// The experts' outputs for the rows received, then the same sent back and returned.
    received_out: Vec<f32>,
    back_counts: Vec<usize>,
    returned: Vec<f32>,
    returned_counts: Vec<usize>,
}

/// One row for an expert: its input starts at element `src` of the input buffer and its output
/// goes to row `dst` of the output buffer.
#[derive(Clone, Copy, Debug)]
struct Routed {
    expert: u32,
    src: usize,
    dst: usize,
}

/// Tokens each held expert of each MoE layer of the stage processed since the last report. The
/// counts live in one buffer sized once; a report copies them out once per step.
#[derive(Debug, Default)]
struct ExpertTally {
    /// Routed experts per MoE layer in the model.
    experts: u32,
    first_expert: u32,
    held: u32,
    /// The global ids of the stage's MoE layers.
    layers: Vec<u32>,
    /// Per local layer, its index in `layers` (`None` for a dense layer).
    slot_of_local: Vec<Option<usize>>,
    counts: Vec<u32>,
}

impl ExpertTally {
    fn new(config: &ModelConfig, weights: &ShardWeights) -> ExpertTally {
        let mut tally = ExpertTally {
            experts: config.moe.as_ref().map_or(0, |m| m.experts as u32),
            ..ExpertTally::default()
        };
        let first_layer = weights.spec.layers.start;
        for (local, layer) in weights.layers.iter().enumerate() {
            let Ffn::Moe(moe) = &layer.ffn else {
                tally.slot_of_local.push(None);
                continue;
            };
            if tally.layers.is_empty() {
                // Held experts are one consecutive range (`e / (experts / ep) == ep_rank`).
                let held = moe.experts.iter().position(Option::is_some);
                tally.first_expert = held.unwrap_or(0) as u32;
                tally.held = moe.experts.iter().flatten().count() as u32;
            }
            tally.slot_of_local.push(Some(tally.layers.len()));
            tally.layers.push((first_layer + local) as u32);
        }
        tally.counts = vec![0; tally.layers.len() * tally.held as usize];
        tally
    }

    /// Counts the rows of one layer's expert pass, by expert.
    fn add(&mut self, local: usize, routed: &[Routed]) {
        let Some(Some(slot)) = self.slot_of_local.get(local) else {
            return;
        };
        let held = self.held as usize;
        let row = &mut self.counts[slot * held..(slot + 1) * held];
        for r in routed {
            if let Some(n) = r
                .expert
                .checked_sub(self.first_expert)
                .and_then(|j| row.get_mut(j as usize))
            {
                *n += 1;
            }
        }
    }

    /// The counts so far as a record, and a fresh start; `None` when nothing was routed here.
    fn take(&mut self, rank: Rank, step: u32) -> Option<ExpertTokens> {
        if self.counts.iter().all(|&n| n == 0) {
            return None;
        }
        let record = ExpertTokens {
            rank,
            step,
            experts: self.experts,
            first_expert: self.first_expert,
            held: self.held,
            layers: self.layers.clone(),
            tokens: self.counts.clone(),
        };
        self.counts.fill(0);
        Some(record)
    }
}

/// Resizes `buf` to `len` elements (growing its allocation only past the largest step so far).
fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    buf.resize(len, 0.0);
    &mut buf[..len]
}

/// One rank's stage of the model.
#[derive(Debug)]
pub struct StageModel {
    config: ModelConfig,
    dims: Dims,
    weights: ShardWeights,
    pool: KvPool,
    moe: MoeOptions,
    bufs: Buffers,
    tally: ExpertTally,
}

impl StageModel {
    /// A stage over `weights`, with a KV pool of `kv_blocks` blocks of `block_size` positions
    /// for each of its layers.
    pub fn new(
        config: &ModelConfig,
        weights: ShardWeights,
        kv_blocks: usize,
        block_size: usize,
        moe: MoeOptions,
    ) -> StageModel {
        let layout = weights.layout;
        let dims = Dims {
            hidden: config.hidden,
            heads: layout.heads,
            kv_heads: layout.kv_heads,
            head_dim: layout.head_dim,
            rope_theta: config.rope_theta,
            norm_eps: config.norm_eps,
        };
        let pool = KvPool::new(
            weights.layers.len(),
            kv_blocks,
            block_size,
            dims.kv_heads,
            dims.head_dim,
        );
        StageModel {
            config: config.clone(),
            dims,
            tally: ExpertTally::new(config, &weights),
            weights,
            pool,
            moe,
            bufs: Buffers::default(),
        }
    }

    /// The tokens this rank's experts processed since the last call, as `rank`'s record of
    /// `step`; `None` when none did (or the stage has no MoE layer).
    pub fn take_expert_tokens(&mut self, rank: Rank, step: u32) -> Option<ExpertTokens> {
        self.tally.take(rank, step)
    }

    pub fn kv_pool_bytes(&self) -> u64 {
        self.pool.bytes()
    }

    pub fn weight_bytes(&self) -> u64 {
        self.weights.bytes()
    }

    /// The residual stream of the last `rows` rows computed or received, `[rows, hidden]`.
    pub fn hidden(&self, rows: usize) -> &[f32] {
        &self.bufs.x[..rows * self.dims.hidden]
    }

    /// The logits of the last `sample` call, `[sampled rows, this rank's vocabulary slice]`.
    pub fn logits(&self) -> &[f32] {
        &self.bufs.logits
    }

    /// Room for `rows` rows of residual stream received from the previous stage.
    pub fn hidden_mut(&mut self, rows: usize) -> &mut [f32] {
        sized(&mut self.bufs.x, rows * self.dims.hidden)
    }

    /// First stage: the batch's token embeddings into the residual stream.
    pub fn embed(
        &mut self,
        t: &Tracer,
        c: &mut Comms,
        at: At,
        batch: &Batch,
    ) -> Result<(), WorkloadError> {
        let rows = batch.rows();
        let x = sized(&mut self.bufs.x, rows * self.dims.hidden);
        let table = self
            .weights
            .embedding
            .as_ref()
            .ok_or_else(|| not_here("embedding"))?;
        let first = self.weights.vocab_range.start;
        t.compute(t.ops.embedding, at, || {
            embedding_w(table, first, &batch.tokens, x)
        });
        all_reduce(t, c, t.ops.all_reduce_embed, at, x)?;
        Ok(())
    }

    /// Runs every layer of the stage over the batch's rows of the residual stream.
    pub fn layers(
        &mut self,
        t: &Tracer,
        c: &mut Comms,
        at: At,
        batch: &Batch,
    ) -> Result<(), WorkloadError> {
        let first_layer = self.weights.spec.layers.start;
        for local in 0..self.weights.layers.len() {
            let at = at.layer(first_layer + local);
            if batch.rows() > 0 {
                self.attention_block(t, c, at, local, batch)?;
            }
            self.ffn_block(t, c, at, local, batch.rows())?;
        }
        Ok(())
    }

    fn attention_block(
        &mut self,
        t: &Tracer,
        c: &mut Comms,
        at: At,
        local: usize,
        batch: &Batch,
    ) -> Result<(), WorkloadError> {
        let (d, rows) = (self.dims, batch.rows());
        let w = &self.weights.layers[local];
        let b = &mut self.bufs;
        let x = &mut b.x[..rows * d.hidden];
        let normed = sized(&mut b.normed, rows * d.hidden);
        t.compute(t.ops.attn_norm, at, || {
            rms_norm(x, &w.attn_norm, d.norm_eps, normed)
        });
        let q = sized(&mut b.q, rows * d.q_dim());
        let k = sized(&mut b.k, rows * d.kv_dim());
        let v = sized(&mut b.v, rows * d.kv_dim());
        t.compute(t.ops.matmul_qkv, at, || {
            matmul_w(normed, rows, &w.wq, q)
                + matmul_w(normed, rows, &w.wk, k)
                + matmul_w(normed, rows, &w.wv, v)
        });
        t.compute(t.ops.rope, at, || {
            rope(q, &batch.positions, d.heads, d.head_dim, d.rope_theta)
                + rope(k, &batch.positions, d.kv_heads, d.head_dim, d.rope_theta)
        });
        let pool = &mut self.pool;
        t.memory(t.ops.kv_append, at, || {
            let mut cost = Cost::default();
            for (seq, &start) in batch.seqs.iter().zip(&batch.starts) {
                let n = seq.tokens.len();
                let rows = start * d.kv_dim()..(start + n) * d.kv_dim();
                cost += pool.write(
                    local,
                    seq.block_table,
                    seq.start_pos,
                    &k[rows.clone()],
                    &v[rows],
                    n,
                )?;
            }
            Ok(cost)
        })
        .map_err(|source| WorkloadError::KvCache {
            layer: at.layer.unwrap_or(0) as usize,
            source,
        })?;
        let attn = sized(&mut b.attn, rows * d.q_dim());
        let scratch = &mut b.scratch;
        let pool = &self.pool;
        t.compute(t.ops.attention, at, || {
            let mut cost = Cost::default();
            for (seq, &start) in batch.seqs.iter().zip(&batch.starts) {
                let n = seq.tokens.len();
                let rows = start * d.q_dim()..(start + n) * d.q_dim();
                cost += paged_attention(
                    &q[rows.clone()],
                    pool,
                    local,
                    seq.block_table,
                    seq.start_pos,
                    n,
                    d.heads,
                    scratch,
                    &mut attn[rows],
                );
            }
            cost
        });
        let proj = sized(&mut b.proj, rows * d.hidden);
        t.compute(t.ops.matmul_o, at, || matmul_w(attn, rows, &w.wo, proj));
        all_reduce(t, c, t.ops.all_reduce_attn, at, proj)?;
        t.compute(t.ops.residual_add, at, || add_in_place(x, proj));
        Ok(())
    }

    fn ffn_block(
        &mut self,
        t: &Tracer,
        c: &mut Comms,
        at: At,
        local: usize,
        rows: usize,
    ) -> Result<(), WorkloadError> {
        let d = self.dims;
        let w: &LayerWeights = &self.weights.layers[local];
        let b = &mut self.bufs;
        if rows > 0 {
            let x = &b.x[..rows * d.hidden];
            let normed = sized(&mut b.normed, rows * d.hidden);
            t.compute(t.ops.mlp_norm, at, || {
                rms_norm(x, &w.mlp_norm, d.norm_eps, normed)
            });
        }
        match &w.ffn {
            Ffn::Dense(mlp) => {
                if rows == 0 {
                    return Ok(());
                }
                let proj = sized(&mut b.proj, rows * d.hidden);
                dense_mlp(
                    t,
                    at,
                    mlp,
                    &b.normed,
                    rows,
                    &mut b.gate,
                    &mut b.up,
                    &mut b.act,
                    proj,
                );
                all_reduce(t, c, t.ops.all_reduce_mlp, at, proj)?;
            }
            Ffn::Moe(moe) => {
                sized(&mut b.proj, rows * d.hidden);
                moe_block(t, c, at, &self.config, self.moe, moe, b, rows)?;
                self.tally.add(local, &b.moe.routed);
                all_reduce(
                    t,
                    c,
                    t.ops.all_reduce_mlp,
                    at,
                    &mut b.proj[..rows * d.hidden],
                )?;
            }
        }
        if rows > 0 {
            let x = &mut b.x[..rows * d.hidden];
            let proj = &b.proj[..rows * d.hidden];
            t.compute(t.ops.residual_add, at, || add_in_place(x, proj));
        }
        Ok(())
    }

    /// Last stage: the greedy next token of every sampling sequence, in batch order. Every
    /// tensor-parallel rank returns the same tokens.
    pub fn sample(
        &mut self,
        t: &Tracer,
        c: &mut Comms,
        at: At,
        batch: &Batch,
    ) -> Result<Vec<u32>, WorkloadError> {
        let d = self.dims;
        let rows = batch.sampled_rows();
        let n = rows.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        let (norm, head) = match (&self.weights.final_norm, &self.weights.lm_head) {
            (Some(norm), Some(head)) => (norm, head),
            _ => return Err(not_here("LM head")),
        };
        let b = &mut self.bufs;
        let picked = sized(&mut b.up, n * d.hidden);
        for (i, &r) in rows.iter().enumerate() {
            picked[i * d.hidden..(i + 1) * d.hidden]
                .copy_from_slice(&b.x[r * d.hidden..(r + 1) * d.hidden]);
        }
        let normed = sized(&mut b.normed, n * d.hidden);
        t.compute(t.ops.final_norm, at, || {
            rms_norm(picked, norm, d.norm_eps, normed)
        });
        let vocab_local = head.cols();
        let logits = sized(&mut b.logits, n * vocab_local);
        t.compute(t.ops.lm_head, at, || matmul_w(normed, n, head, logits));
        let first = self.weights.vocab_range.start;
        let mut best = vec![0.0f32; 2 * n];
        t.compute(t.ops.sample, at, || {
            local_argmax(logits, vocab_local, first, &mut best)
        });
        if c.tp.size() == 1 {
            return Ok(best.chunks_exact(2).map(|p| p[1] as u32).collect());
        }
        let mut all = vec![0.0f32; 2 * n * c.tp.size()];
        let issue = Issue {
            kind: CollectiveKind::AllGather,
            peer: None,
            message_bytes: (all.len() * 4) as u64,
        };
        let mesh = &mut *c.mesh;
        t.collective(t.ops.all_gather_sample, at, c.tp, issue, |g| {
            mesh.all_gather(g, &best, &mut all)
        })?;
        Ok(pick_across_ranks(&all, n))
    }
}

fn not_here(what: &'static str) -> WorkloadError {
    WorkloadError::StageLacks { what }
}

/// All-reduces `data` over the tensor-parallel group as a traced collective.
fn all_reduce(
    t: &Tracer,
    c: &mut Comms,
    op: pinch_traces::OpId,
    at: At,
    data: &mut [f32],
) -> Result<(), CommError> {
    let issue = Issue {
        kind: CollectiveKind::AllReduce,
        peer: None,
        message_bytes: std::mem::size_of_val(data) as u64,
    };
    let (mesh, algo) = (&mut *c.mesh, c.algo);
    t.collective(op, at, c.tp, issue, |g| mesh.all_reduce_sum(g, data, algo))
        .map(|_| ())
}

/// `out = down(silu(gate(input)) · up(input))` over `rows` rows, as three traced ops.
#[allow(clippy::too_many_arguments)]
fn dense_mlp(
    t: &Tracer,
    at: At,
    mlp: &Mlp,
    input: &[f32],
    rows: usize,
    gate: &mut Vec<f32>,
    up: &mut Vec<f32>,
    act: &mut Vec<f32>,
    out: &mut [f32],
) {
    let hidden = mlp.w_gate.rows();
    let width = mlp.w_gate.cols();
    let input = &input[..rows * hidden];
    let (gate, up, act) = (
        sized(gate, rows * width),
        sized(up, rows * width),
        sized(act, rows * width),
    );
    t.compute(t.ops.matmul_gate_up, at, || {
        matmul_w(input, rows, &mlp.w_gate, gate) + matmul_w(input, rows, &mlp.w_up, up)
    });
    t.compute(t.ops.silu_mul, at, || silu_mul(gate, up, act));
    t.compute(t.ops.matmul_down, at, || {
        matmul_w(act, rows, &mlp.w_down, out)
    });
}

/// The same MLP, untraced, for the expert loop (traced as a whole).
fn expert_mlp(
    mlp: &Mlp,
    input: &[f32],
    rows: usize,
    scratch: &mut [Vec<f32>; 3],
    out: &mut [f32],
) -> Cost {
    let width = mlp.w_gate.cols();
    let [gate, up, act] = scratch;
    let (gate, up, act) = (
        sized(gate, rows * width),
        sized(up, rows * width),
        sized(act, rows * width),
    );
    matmul_w(input, rows, &mlp.w_gate, gate)
        + matmul_w(input, rows, &mlp.w_up, up)
        + silu_mul(gate, up, act)
        + matmul_w(act, rows, &mlp.w_down, out)
}

/// The mixture-of-experts block: `b.proj[..rows]` = Σ over each token's kept slots of gate ·
/// expert(token) (+ the shared expert), from `b.normed`.
#[allow(clippy::too_many_arguments)]
fn moe_block(
    t: &Tracer,
    c: &mut Comms,
    at: At,
    config: &ModelConfig,
    options: MoeOptions,
    w: &MoeWeights,
    b: &mut Buffers,
    rows: usize,
) -> Result<(), WorkloadError> {
    let moe = config
        .moe
        .as_ref()
        .ok_or_else(|| not_here("expert configuration"))?;
    let (hidden, experts, k) = (config.hidden, moe.experts, moe.top_k);
    let m = &mut b.moe;
    if rows > 0 {
        route(
            t,
            at,
            w,
            options,
            moe.renormalize,
            &b.normed[..rows * hidden],
            rows,
            experts,
            k,
            m,
        );
    } else {
        m.ids.clear();
        m.gates.clear();
        m.kept.clear();
    }
    sized(&mut m.slot_out, rows * k * hidden);
    let mut scratch = [
        std::mem::take(&mut b.gate),
        std::mem::take(&mut b.up),
        std::mem::take(&mut b.act),
    ];
    let outcome = match c.experts.as_deref_mut() {
        None => {
            local_experts(t, at, w, &b.normed, hidden, k, m, &mut scratch);
            Ok(())
        }
        Some(group) => exchange_experts(
            t,
            &mut *c.mesh,
            group,
            at,
            w,
            &b.normed,
            (hidden, experts, k),
            m,
            &mut scratch,
        ),
    };
    [b.gate, b.up, b.act] = scratch;
    outcome?;
    let proj = &mut b.proj[..rows * hidden];
    let m = &b.moe;
    t.compute(t.ops.moe_combine, at, || combine(m, hidden, k, proj));
    if let (Some(shared), true) = (&w.shared, rows > 0) {
        let out = sized(&mut b.mlp_out, rows * hidden);
        let mut scratch = [
            std::mem::take(&mut b.gate),
            std::mem::take(&mut b.up),
            std::mem::take(&mut b.act),
        ];
        t.compute(t.ops.moe_shared, at, || {
            expert_mlp(shared, &b.normed[..rows * hidden], rows, &mut scratch, out)
                + add_in_place(&mut b.proj[..rows * hidden], out)
        });
        [b.gate, b.up, b.act] = scratch;
    }
    Ok(())
}

/// Router logits, the skew bias, top-k gating and the capacity cut.
#[allow(clippy::too_many_arguments)]
fn route(
    t: &Tracer,
    at: At,
    w: &MoeWeights,
    options: MoeOptions,
    renormalize: bool,
    normed: &[f32],
    rows: usize,
    experts: usize,
    k: usize,
    m: &mut MoeBuffers,
) {
    let logits = sized(&mut m.router_logits, rows * experts);
    m.ids.resize(rows * k, 0);
    m.gates.resize(rows * k, 0.0);
    t.compute(t.ops.moe_router, at, || {
        let mut cost = matmul_w(normed, rows, &w.router, logits);
        if let Some(s) = options.skew {
            for row in logits.chunks_exact_mut(experts) {
                for (e, l) in row.iter_mut().enumerate() {
                    *l -= (s * ((e + 1) as f64).ln()) as f32;
                }
            }
        }
        cost += top_k_gating(logits, experts, k, renormalize, &mut m.ids, &mut m.gates);
        cost
    });
    m.kept.clear();
    m.kept.resize(rows * k, true);
    if let Some(factor) = options.capacity_factor {
        let capacity = ((factor as f64) * (rows * k) as f64 / experts as f64).ceil() as usize;
        let mut load = vec![0usize; experts];
        for (slot, &e) in m.ids.iter().enumerate() {
            load[e as usize] += 1;
            m.kept[slot] = load[e as usize] <= capacity.max(1);
        }
    }
}

/// Without expert parallelism: every expert (or this rank's slice of it) runs here.
#[allow(clippy::too_many_arguments)]
fn local_experts(
    t: &Tracer,
    at: At,
    w: &MoeWeights,
    normed: &[f32],
    hidden: usize,
    k: usize,
    m: &mut MoeBuffers,
    scratch: &mut [Vec<f32>; 3],
) {
    m.routed.clear();
    let kept = (0..m.ids.len()).filter(|&slot| m.kept[slot]);
    m.routed.extend(kept.map(|slot| Routed {
        expert: m.ids[slot],
        src: slot / k * hidden,
        dst: slot,
    }));
    let bufs = (&mut m.gathered, &mut m.gathered_out);
    let (routed, out) = (&mut m.routed, &mut m.slot_out);
    t.compute(t.ops.moe_experts, at, || {
        run_routed(w, normed, hidden, routed, out, bufs, scratch)
    });
}

/// With expert parallelism: kept slots travel to the rank holding their expert (the row plus
/// the expert id as one more element), run there, and come back in the order they were sent.
#[allow(clippy::too_many_arguments)]
fn exchange_experts(
    t: &Tracer,
    mesh: &mut Mesh,
    group: &mut Group,
    at: At,
    w: &MoeWeights,
    normed: &[f32],
    (hidden, experts, k): (usize, usize, usize),
    m: &mut MoeBuffers,
    scratch: &mut [Vec<f32>; 3],
) -> Result<(), WorkloadError> {
    let ranks = group.size();
    let per_rank = experts / ranks;
    let width = hidden + 1;
    m.send.clear();
    m.order.clear();
    m.send_counts.clear();
    m.send_counts.resize(ranks, 0);
    for dest in 0..ranks {
        for s in 0..m.ids.len() {
            let e = m.ids[s] as usize;
            if !m.kept[s] || e / per_rank != dest {
                continue;
            }
            let token = s / k;
            m.send
                .extend_from_slice(&normed[token * hidden..(token + 1) * hidden]);
            m.send.push(e as f32);
            m.order.push(s);
            m.send_counts[dest] += width;
        }
    }
    let issue = Issue {
        kind: CollectiveKind::AllToAll,
        peer: None,
        message_bytes: (m.send.len() * 4) as u64,
    };
    let (send, counts, recv, recv_counts) =
        (&m.send, &m.send_counts, &mut m.recv, &mut m.recv_counts);
    t.collective(t.ops.moe_dispatch, at, group, issue, |g| {
        mesh.all_to_all_v(g, send, counts, recv, recv_counts)
    })?;
    // Each received row carries its expert id as its last element.
    m.routed.clear();
    let rows = m.recv.chunks_exact(width).enumerate();
    m.routed.extend(rows.map(|(i, row)| Routed {
        expert: row[hidden] as u32,
        src: i * width,
        dst: i,
    }));
    let outputs = sized(&mut m.received_out, m.routed.len() * hidden);
    let bufs = (&mut m.gathered, &mut m.gathered_out);
    let (routed, recv) = (&mut m.routed, &m.recv);
    t.compute(t.ops.moe_experts, at, || {
        run_routed(w, recv, hidden, routed, outputs, bufs, scratch)
    });
    m.back_counts.clear();
    m.back_counts
        .extend(m.recv_counts.iter().map(|c| c / width * hidden));
    let issue = Issue {
        kind: CollectiveKind::AllToAll,
        peer: None,
        message_bytes: (m.received_out.len() * 4) as u64,
    };
    let (outputs, counts) = (&m.received_out, &m.back_counts);
    let (returned, returned_counts) = (&mut m.returned, &mut m.returned_counts);
    t.collective(t.ops.moe_return, at, group, issue, |g| {
        mesh.all_to_all_v(g, outputs, counts, returned, returned_counts)
    })?;
    for (i, &s) in m.order.iter().enumerate() {
        m.slot_out[s * hidden..(s + 1) * hidden]
            .copy_from_slice(&m.returned[i * hidden..(i + 1) * hidden]);
    }
    Ok(())
}

/// Runs `routed` rows of `input` through this rank's experts, expert by expert (rows of one
/// expert in their order), writing each output to its `dst` row of `out`. Rows for experts this
/// rank does not hold are left alone.
fn run_routed(
    w: &MoeWeights,
    input: &[f32],
    hidden: usize,
    routed: &mut [Routed],
    out: &mut [f32],
    (gathered, gathered_out): (&mut Vec<f32>, &mut Vec<f32>),
    scratch: &mut [Vec<f32>; 3],
) -> Cost {
    routed.sort_by_key(|r| r.expert);
    let mut cost = Cost::default();
    for rows in routed.chunk_by(|a, b| a.expert == b.expert) {
        let Some(Some(mlp)) = w.experts.get(rows[0].expert as usize) else {
            continue;
        };
        let rows_in = sized(gathered, rows.len() * hidden);
        for (i, r) in rows.iter().enumerate() {
            rows_in[i * hidden..(i + 1) * hidden].copy_from_slice(&input[r.src..r.src + hidden]);
        }
        let rows_out = sized(gathered_out, rows.len() * hidden);
        cost += expert_mlp(mlp, rows_in, rows.len(), scratch, rows_out);
        for (i, r) in rows.iter().enumerate() {
            out[r.dst * hidden..(r.dst + 1) * hidden]
                .copy_from_slice(&rows_out[i * hidden..(i + 1) * hidden]);
        }
    }
    cost
}

/// `proj[t] = Σ_s gate[t, s] · slot_out[t, s]` over each token's kept slots, in slot order.
fn combine(m: &MoeBuffers, hidden: usize, k: usize, proj: &mut [f32]) -> Cost {
    proj.fill(0.0);
    let mut cost = Cost::default();
    for (token, out) in proj.chunks_exact_mut(hidden).enumerate() {
        for s in token * k..(token + 1) * k {
            if m.kept[s] {
                cost += scale_add(out, &m.slot_out[s * hidden..(s + 1) * hidden], m.gates[s]);
            }
        }
    }
    cost
}

/// Per row of `logits` (`[rows, vocab_local]`): `[max logit, its global token id]`, ties going
/// to the lower id.
fn local_argmax(logits: &[f32], vocab_local: usize, first: usize, best: &mut [f32]) -> Cost {
    for (row, out) in logits
        .chunks_exact(vocab_local)
        .zip(best.chunks_exact_mut(2))
    {
        let mut arg = 0;
        for (i, &l) in row.iter().enumerate() {
            if l > row[arg] {
                arg = i;
            }
        }
        out[0] = row[arg];
        out[1] = (first + arg) as f32;
    }
    Cost {
        flops: logits.len() as u64,
        bytes: (logits.len() * 4 + best.len() * 4) as u64,
    }
}

/// The winner of each row over the ranks' `[logit, id]` pairs (gathered rank-major): the
/// highest logit, the lowest rank (so the lowest id) on ties.
fn pick_across_ranks(all: &[f32], rows: usize) -> Vec<u32> {
    let ranks = all.len() / (2 * rows);
    (0..rows)
        .map(|r| {
            let pair = |rank: usize| &all[(rank * rows + r) * 2..(rank * rows + r) * 2 + 2];
            let mut best = pair(0);
            for rank in 1..ranks {
                if pair(rank)[0] > best[0] {
                    best = pair(rank);
                }
            }
            best[1] as u32
        })
        .collect()
}
