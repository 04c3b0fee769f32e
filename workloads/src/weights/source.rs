//! Names for the model's full tensors, and the trait a source of weights implements: give a
//! block of a full tensor, or a whole vector. The seeded generator and checkpoints both do.

use crate::config::ModelConfig;
use crate::error::WorkloadError;
use std::ops::Range;

/// One of the three matrices of a SwiGLU MLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Proj {
    Gate,
    Up,
    Down,
}

impl Proj {
    /// Its index among the three, for stream numbers.
    pub(crate) fn index(self) -> u64 {
        match self {
            Proj::Gate => 0,
            Proj::Up => 1,
            Proj::Down => 2,
        }
    }
}

/// A full tensor of the model; the `usize`s are a layer and then an expert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Tensor {
    Embedding,
    FinalNorm,
    LmHead,
    AttnNorm(usize),
    Wq(usize),
    Wk(usize),
    Wv(usize),
    Wo(usize),
    MlpNorm(usize),
    /// The dense MLP of a dense layer.
    Mlp(usize, Proj),
    Router(usize),
    Expert(usize, usize, Proj),
    /// All shared experts of a layer, as one MLP.
    Shared(usize, Proj),
}

impl Tensor {
    /// Its full `(rows, cols)` in pinch's orientation: `[in, out]` for a linear layer,
    /// `[vocab, hidden]` for the embedding, `(1, hidden)` for a norm vector.
    pub(crate) fn dims(self, config: &ModelConfig) -> (usize, usize) {
        let (hidden, moe) = (config.hidden, config.moe.as_ref());
        let mlp = |proj: Proj, width: usize| match proj {
            Proj::Gate | Proj::Up => (hidden, width),
            Proj::Down => (width, hidden),
        };
        match self {
            Tensor::Embedding => (config.vocab, hidden),
            Tensor::LmHead => (hidden, config.vocab),
            Tensor::FinalNorm | Tensor::AttnNorm(_) | Tensor::MlpNorm(_) => (1, hidden),
            Tensor::Wq(_) => (hidden, config.q_dim()),
            Tensor::Wk(_) | Tensor::Wv(_) => (hidden, config.kv_dim()),
            Tensor::Wo(_) => (config.q_dim(), hidden),
            Tensor::Mlp(_, proj) => mlp(proj, config.ffn),
            Tensor::Router(_) => (hidden, moe.map_or(0, |m| m.experts)),
            Tensor::Expert(_, _, proj) => mlp(proj, moe.map_or(0, |m| m.expert_ffn)),
            Tensor::Shared(_, proj) => mlp(proj, moe.map_or(0, |m| m.shared_ffn)),
        }
    }
}

/// Where a shard's values come from.
pub(crate) trait Source {
    /// Rows `rows` and columns `cols` of the full matrix `tensor` (in `Tensor::dims`'s
    /// orientation), row-major, `rows.len() * cols.len()` values.
    fn block(
        &self,
        tensor: Tensor,
        rows: Range<usize>,
        cols: Range<usize>,
    ) -> Result<Vec<f32>, WorkloadError>;

    /// The whole norm vector `tensor`.
    fn vector(&self, tensor: Tensor) -> Result<Vec<f32>, WorkloadError>;
}
