//! Seeded synthetic weights: any shard of any model from a seed, without a checkpoint.
//!
//! Every tensor (every expert's too) draws from its own stream (see `init`), and a shard draws
//! only the blocks it holds, so TP, EP and PP shards are slices of one and the same model and
//! a rank never draws a layer or an expert it does not hold. The dense tensors keep the streams
//! and scales of the first generator, so a dense model's outputs did not change with MoE.

use super::init::{
    EMBEDDING_STREAM, EXPERT_STREAMS, FINAL_NORM_STREAM, LAYER_STREAMS, LAYER_STRIDE,
    LM_HEAD_STREAM, MAX_EXPERTS, fan_in_std, norm, uniform_block,
};
use super::shard::{ShardSpec, ShardWeights, assemble};
use super::source::{Source, Tensor};
use crate::config::ModelConfig;
use crate::error::WorkloadError;
use std::ops::Range;

/// The shard `spec` of the model `config` drawn from `seed`; matrices are drawn as f32 and
/// then stored as `spec.storage`.
pub fn synthetic_shard(
    config: &ModelConfig,
    seed: u64,
    spec: &ShardSpec,
) -> Result<ShardWeights, WorkloadError> {
    let experts = config.moe.as_ref().map_or(0, |moe| moe.experts);
    if experts as u64 > MAX_EXPERTS {
        return Err(WorkloadError::MalformedModel {
            name: config.name.clone(),
            problem: format!(
                "its '{experts}' experts are more than the {MAX_EXPERTS} pinch can draw"
            ),
        });
    }
    assemble(config, spec, &Synthetic { config, seed })
}

/// The seeded model as a source of blocks.
pub(crate) struct Synthetic<'a> {
    pub(crate) config: &'a ModelConfig,
    pub(crate) seed: u64,
}

impl Synthetic<'_> {
    /// The stream a tensor draws from.
    fn stream(&self, tensor: Tensor) -> u64 {
        let layer = |l: usize, i: u64| LAYER_STREAMS + LAYER_STRIDE * l as u64 + i;
        match tensor {
            Tensor::Embedding => EMBEDDING_STREAM,
            Tensor::FinalNorm => FINAL_NORM_STREAM,
            Tensor::LmHead => LM_HEAD_STREAM,
            Tensor::AttnNorm(l) => layer(l, 0),
            Tensor::Wq(l) => layer(l, 1),
            Tensor::Wk(l) => layer(l, 2),
            Tensor::Wv(l) => layer(l, 3),
            Tensor::Wo(l) => layer(l, 4),
            Tensor::MlpNorm(l) => layer(l, 5),
            Tensor::Mlp(l, proj) => layer(l, 6 + proj.index()),
            Tensor::Router(l) => layer(l, 9),
            Tensor::Shared(l, proj) => layer(l, 10 + proj.index()),
            Tensor::Expert(l, e, proj) => {
                EXPERT_STREAMS + 4 * (l as u64 * MAX_EXPERTS + e as u64) + proj.index()
            }
        }
    }

    /// The standard deviation of a matrix's values: unit scale for the embedding, otherwise
    /// the fan-in scale of its input width.
    fn std(&self, tensor: Tensor) -> f32 {
        match tensor {
            Tensor::Embedding => 1.0,
            _ => fan_in_std(tensor.dims(self.config).0),
        }
    }
}

impl Source for Synthetic<'_> {
    fn block(
        &self,
        tensor: Tensor,
        rows: Range<usize>,
        cols: Range<usize>,
    ) -> Result<Vec<f32>, WorkloadError> {
        let (_, width) = tensor.dims(self.config);
        let (stream, std) = (self.stream(tensor), self.std(tensor));
        Ok(uniform_block(self.seed, stream, width, rows, cols, std))
    }

    fn vector(&self, tensor: Tensor) -> Result<Vec<f32>, WorkloadError> {
        let (_, len) = tensor.dims(self.config);
        Ok(norm(self.seed, self.stream(tensor), len))
    }
}

#[cfg(test)]
mod tests;
