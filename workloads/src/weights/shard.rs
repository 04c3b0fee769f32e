//! One rank's weights, as the model code reads them, and how they are cut from a source
//! (the seeded generator or a checkpoint).
//!
//! A shard is described by a `ShardSpec`: its tensor-parallel rank (Megatron slices, see `tp`),
//! its pipeline layers, and its expert-parallel rank. Expert parallelism (ep > 1) needs tp = 1:
//! attention, routers and shared experts are replicated on every rank (data-parallel
//! attention) and expert `e` lives on ep rank `e / (experts / ep)`. Each source returns blocks
//! of the full tensors, so a shard holds exactly the values of the full model at its slices
//! whatever the layout, and never draws or reads a tensor it does not hold.

use super::source::{Proj, Source, Tensor};
use crate::config::ModelConfig;
use crate::error::WorkloadError;
use crate::tp::TpLayout;
use pinch_kernels::{Matrix, Storage};
use std::ops::Range;

/// A SwiGLU MLP: `w_down · (silu(x · w_gate) ⊙ (x · w_up))`.
#[derive(Clone, Debug, PartialEq)]
pub struct Mlp {
    /// `[hidden, f]`
    pub w_gate: Matrix,
    /// `[hidden, f]`
    pub w_up: Matrix,
    /// `[f, hidden]`
    pub w_down: Matrix,
}

/// The FFN of a MoE layer, as one rank holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeWeights {
    /// `[hidden, experts]`, always f32 (routing decisions are sensitive to rounding).
    pub router: Matrix,
    /// One entry per routed expert; `Some` for those this rank holds.
    pub experts: Vec<Option<Mlp>>,
    /// All shared experts as one MLP; `None` if the model has none.
    pub shared: Option<Mlp>,
}

/// A layer's feed-forward part.
#[derive(Clone, Debug, PartialEq)]
pub enum Ffn {
    Dense(Mlp),
    Moe(MoeWeights),
}

/// The weights of one decoder layer on one rank (shapes below are this rank's slices).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeights {
    /// `[hidden]`
    pub attn_norm: Vec<f32>,
    /// `[hidden, layout.q_dim()]`
    pub wq: Matrix,
    /// `[hidden, layout.kv_dim()]`
    pub wk: Matrix,
    /// `[hidden, layout.kv_dim()]`
    pub wv: Matrix,
    /// `[layout.q_dim(), hidden]`
    pub wo: Matrix,
    /// `[hidden]`
    pub mlp_norm: Vec<f32>,
    pub ffn: Ffn,
}

/// Which part of the model one rank holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardSpec {
    pub tp_rank: usize,
    pub tp: usize,
    /// The pipeline stage's layers (`ModelConfig::stage_layers`).
    pub layers: Range<usize>,
    pub ep_rank: usize,
    pub ep: usize,
    /// How the matrices are stored (routers and norms are always f32).
    pub storage: Storage,
}

/// One rank's weights.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardWeights {
    pub spec: ShardSpec,
    pub layout: TpLayout,
    /// This tensor-parallel rank's vocabulary slice (vocab-parallel embedding and head).
    pub vocab_range: Range<usize>,
    /// `[vocab_range.len(), hidden]`; `Some` iff the shard holds the first layer.
    pub embedding: Option<Matrix>,
    /// The layers of `spec.layers`, in order.
    pub layers: Vec<LayerWeights>,
    /// `[hidden]`; `Some` iff the shard holds the last layer.
    pub final_norm: Option<Vec<f32>>,
    /// `[hidden, vocab_range.len()]`; `Some` iff the shard holds the last layer.
    pub lm_head: Option<Matrix>,
}

impl ShardSpec {
    /// The whole model on one rank, in the model's default storage.
    pub fn whole(config: &ModelConfig) -> ShardSpec {
        ShardSpec {
            tp_rank: 0,
            tp: 1,
            layers: 0..config.layers,
            ep_rank: 0,
            ep: 1,
            storage: config.storage,
        }
    }

    /// Checks this spec cuts `config` into a valid shard, and returns its TP layout.
    pub fn layout(&self, config: &ModelConfig) -> Result<TpLayout, WorkloadError> {
        config.validate()?;
        let layout = TpLayout::new(config, self.tp_rank, self.tp)?;
        config.validate_ep(self.ep)?;
        if self.ep_rank >= self.ep {
            return Err(WorkloadError::EpRankOutOfRange {
                rank: self.ep_rank,
                ep: self.ep,
            });
        }
        if self.ep > 1 && self.tp > 1 {
            return Err(WorkloadError::EpNeedsTpOne {
                ep: self.ep,
                tp: self.tp,
            });
        }
        let layers = &self.layers;
        if layers.start >= layers.end || layers.end > config.layers {
            return Err(WorkloadError::LayersOutOfRange {
                start: layers.start,
                end: layers.end,
                layers: config.layers,
                model: config.name.clone(),
            });
        }
        Ok(layout)
    }

    /// The routed experts this rank holds: all of them unless experts are parallel.
    pub fn expert_range(&self, config: &ModelConfig) -> Range<usize> {
        let experts = config.moe.as_ref().map_or(0, |moe| moe.experts);
        let per_rank = experts / self.ep.max(1);
        self.ep_rank * per_rank..(self.ep_rank + 1) * per_rank
    }
}

impl ShardWeights {
    /// Bytes of every weight this shard holds, in its storage.
    pub fn bytes(&self) -> u64 {
        let matrices = [&self.embedding, &self.lm_head];
        let outside: u64 = matrices
            .iter()
            .filter_map(|m| m.as_ref())
            .map(Matrix::bytes)
            .sum();
        let norm = self.final_norm.as_deref().map_or(0, vector_bytes);
        outside + norm + self.layers.iter().map(LayerWeights::bytes).sum::<u64>()
    }
}

impl LayerWeights {
    /// Bytes of this layer's weights, in their storage.
    pub fn bytes(&self) -> u64 {
        let attention: u64 = [&self.wq, &self.wk, &self.wv, &self.wo]
            .iter()
            .map(|m| m.bytes())
            .sum();
        let norms = vector_bytes(&self.attn_norm) + vector_bytes(&self.mlp_norm);
        attention + norms + self.ffn.bytes()
    }
}

impl Ffn {
    /// Bytes of this FFN's weights (held experts only), in their storage.
    pub fn bytes(&self) -> u64 {
        match self {
            Ffn::Dense(mlp) => mlp.bytes(),
            Ffn::Moe(moe) => {
                let experts: u64 = moe.experts.iter().flatten().map(Mlp::bytes).sum();
                let shared = moe.shared.as_ref().map_or(0, Mlp::bytes);
                moe.router.bytes() + experts + shared
            }
        }
    }
}

impl Mlp {
    /// Bytes of the three matrices.
    pub fn bytes(&self) -> u64 {
        self.w_gate.bytes() + self.w_up.bytes() + self.w_down.bytes()
    }
}

fn vector_bytes(values: &[f32]) -> u64 {
    std::mem::size_of_val(values) as u64
}

/// Cuts the shard `spec` from `source`.
pub(crate) fn assemble(
    config: &ModelConfig,
    spec: &ShardSpec,
    source: &impl Source,
) -> Result<ShardWeights, WorkloadError> {
    let layout = spec.layout(config)?;
    let cut = Cutter {
        config,
        spec,
        layout,
        source,
    };
    let first = spec.layers.start == 0;
    let last = spec.layers.end == config.layers;
    let embedding = first.then(|| cut.embedding()).transpose()?;
    let layers = spec
        .layers
        .clone()
        .map(|l| cut.layer(l))
        .collect::<Result<Vec<_>, _>>()?;
    let final_norm = last.then(|| source.vector(Tensor::FinalNorm)).transpose()?;
    let lm_head = last.then(|| cut.lm_head()).transpose()?;
    Ok(ShardWeights {
        spec: spec.clone(),
        layout,
        vocab_range: layout.vocab_range(),
        embedding,
        layers,
        final_norm,
        lm_head,
    })
}

/// Cuts one shard's slices out of a source's full tensors.
struct Cutter<'a, S> {
    config: &'a ModelConfig,
    spec: &'a ShardSpec,
    layout: TpLayout,
    source: &'a S,
}

impl<S: Source> Cutter<'_, S> {
    /// The block `rows × cols` of `tensor`, stored as `storage`.
    fn block(
        &self,
        tensor: Tensor,
        rows: Range<usize>,
        cols: Range<usize>,
        storage: Storage,
    ) -> Result<Matrix, WorkloadError> {
        let (height, width) = (rows.len(), cols.len());
        let values = self.source.block(tensor, rows, cols)?;
        Ok(Matrix::from_f32(height, width, values, storage))
    }

    /// Columns `cols` of every row (a column-parallel slice).
    fn columns(&self, tensor: Tensor, cols: Range<usize>) -> Result<Matrix, WorkloadError> {
        let (rows, _) = tensor.dims(self.config);
        self.block(tensor, 0..rows, cols, self.spec.storage)
    }

    /// Rows `rows` of every column (a row-parallel slice).
    fn rows(&self, tensor: Tensor, rows: Range<usize>) -> Result<Matrix, WorkloadError> {
        let (_, cols) = tensor.dims(self.config);
        self.block(tensor, rows, 0..cols, self.spec.storage)
    }

    fn embedding(&self) -> Result<Matrix, WorkloadError> {
        let hidden = self.config.hidden;
        self.block(
            Tensor::Embedding,
            self.layout.vocab_range(),
            0..hidden,
            self.spec.storage,
        )
    }

    /// The head's vocabulary columns; a tied head is the embedding's rows, transposed.
    fn lm_head(&self) -> Result<Matrix, WorkloadError> {
        if !self.config.tie_embeddings {
            return self.columns(Tensor::LmHead, self.layout.vocab_range());
        }
        let (vocab, hidden) = (self.layout.vocab_range(), self.config.hidden);
        let rows = self
            .source
            .block(Tensor::Embedding, vocab.clone(), 0..hidden)?;
        let transposed = transpose(&rows, vocab.len(), hidden);
        Ok(Matrix::from_f32(
            hidden,
            vocab.len(),
            transposed,
            self.spec.storage,
        ))
    }

    fn layer(&self, l: usize) -> Result<LayerWeights, WorkloadError> {
        let (q, kv) = (self.layout.q_range(), self.layout.kv_range());
        Ok(LayerWeights {
            attn_norm: self.source.vector(Tensor::AttnNorm(l))?,
            wq: self.columns(Tensor::Wq(l), q.clone())?,
            wk: self.columns(Tensor::Wk(l), kv.clone())?,
            wv: self.columns(Tensor::Wv(l), kv)?,
            wo: self.rows(Tensor::Wo(l), q)?,
            mlp_norm: self.source.vector(Tensor::MlpNorm(l))?,
            ffn: self.ffn(l)?,
        })
    }

    fn ffn(&self, l: usize) -> Result<Ffn, WorkloadError> {
        let expert_width = self.layout.expert_ffn_range();
        match expert_width.filter(|_| self.config.is_moe_layer(l)) {
            Some(width) => Ok(Ffn::Moe(self.moe(l, width)?)),
            None => {
                let mlp = self.mlp(|p| Tensor::Mlp(l, p), self.layout.ffn_range())?;
                Ok(Ffn::Dense(mlp))
            }
        }
    }

    /// A MoE layer: the whole router, the held experts' slices over `width`, the shared
    /// experts' slice.
    fn moe(&self, l: usize, width: Range<usize>) -> Result<MoeWeights, WorkloadError> {
        let (hidden, experts) = Tensor::Router(l).dims(self.config);
        let router = self.block(Tensor::Router(l), 0..hidden, 0..experts, Storage::F32)?;
        let held = self.spec.expert_range(self.config);
        let experts = (0..experts)
            .map(|e| {
                held.contains(&e)
                    .then(|| self.mlp(|p| Tensor::Expert(l, e, p), width.clone()))
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let shared = self
            .layout
            .shared_ffn_range()
            .map(|width| self.mlp(|p| Tensor::Shared(l, p), width))
            .transpose()?;
        Ok(MoeWeights {
            router,
            experts,
            shared,
        })
    }

    /// An MLP's slice over intermediate columns `width`: gate and up by columns, down by rows.
    fn mlp(
        &self,
        tensor: impl Fn(Proj) -> Tensor,
        width: Range<usize>,
    ) -> Result<Mlp, WorkloadError> {
        Ok(Mlp {
            w_gate: self.columns(tensor(Proj::Gate), width.clone())?,
            w_up: self.columns(tensor(Proj::Up), width.clone())?,
            w_down: self.rows(tensor(Proj::Down), width)?,
        })
    }
}

/// The `[cols, rows]` transpose of a row-major `[rows, cols]` block.
pub(crate) fn transpose(values: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| values[r * cols + c]))
        .collect()
}
