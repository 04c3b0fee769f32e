//! The first weights API, kept until the model code moves to `weights::shard`: the full dense
//! model from a seed as `Vec<f32>`s, then one rank's Megatron slice of it.
//!
//! The full model is always generated the same way whatever the tensor-parallel degree, and a
//! shard is a slice of it, so TP=1 and TP=2 compute the same function (up to the order of
//! floating-point sums). Each tensor draws from its own ChaCha stream, so its values depend only
//! on the seed and the tensor, not on what was generated before it.
//!
//! Matrices are stored `[in, out]` row-major, ready for `matmul(x, w)`.

use super::init::{
    EMBEDDING_STREAM, FINAL_NORM_STREAM, LAYER_STREAMS, LM_HEAD_STREAM, fan_in_std, norm, uniform,
};
use crate::config::ModelConfig;
use crate::error::WorkloadError;
use crate::tp::TpLayout;
use std::ops::Range;

/// The weights of one decoder layer, full or sharded (the shapes below are the full ones).
#[derive(Clone, Debug, PartialEq)]
pub struct LayerWeights {
    /// `[hidden]`
    pub attn_norm: Vec<f32>,
    /// `[hidden, heads * head_dim]`
    pub wq: Vec<f32>,
    /// `[hidden, kv_heads * head_dim]`
    pub wk: Vec<f32>,
    /// `[hidden, kv_heads * head_dim]`
    pub wv: Vec<f32>,
    /// `[heads * head_dim, hidden]`
    pub wo: Vec<f32>,
    /// `[hidden]`
    pub mlp_norm: Vec<f32>,
    /// `[hidden, ffn]`
    pub w_gate: Vec<f32>,
    /// `[hidden, ffn]`
    pub w_up: Vec<f32>,
    /// `[ffn, hidden]`
    pub w_down: Vec<f32>,
}

/// The weights of the whole model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelWeights {
    pub config: ModelConfig,
    /// `[vocab, hidden]`
    pub embedding: Vec<f32>,
    pub layers: Vec<LayerWeights>,
    /// `[hidden]`
    pub final_norm: Vec<f32>,
    /// `[hidden, vocab]`, not tied to the embedding.
    pub lm_head: Vec<f32>,
}

/// One rank's weights: its slices of the attention and MLP matrices; everything else replicated.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardWeights {
    pub layout: TpLayout,
    /// `[vocab, hidden]`, replicated.
    pub embedding: Vec<f32>,
    /// Sharded: `wq` `[hidden, layout.q_dim()]`, `wo` `[layout.q_dim(), hidden]`, and so on.
    pub layers: Vec<LayerWeights>,
    /// `[hidden]`, replicated.
    pub final_norm: Vec<f32>,
    /// `[hidden, vocab]`, replicated.
    pub lm_head: Vec<f32>,
}

impl ModelWeights {
    /// The full model for `seed`: matrices uniform with standard deviation `1/sqrt(fan_in)`,
    /// norm weights near 1, embeddings of unit scale.
    pub fn generate(config: &ModelConfig, seed: u64) -> ModelWeights {
        let (hidden, vocab) = (config.hidden, config.vocab);
        let layers = (0..config.layers)
            .map(|l| LayerWeights::generate(config, seed, LAYER_STREAMS + 16 * l as u64))
            .collect();
        ModelWeights {
            config: config.clone(),
            embedding: uniform(seed, EMBEDDING_STREAM, vocab * hidden, 1.0),
            layers,
            final_norm: norm(seed, FINAL_NORM_STREAM, hidden),
            lm_head: uniform(seed, LM_HEAD_STREAM, hidden * vocab, fan_in_std(hidden)),
        }
    }

    /// Rank `tp_rank`'s slice for a group of `tp`, consuming the full model so the replicated
    /// tensors move instead of being copied.
    pub fn shard(self, tp_rank: usize, tp: usize) -> Result<ShardWeights, WorkloadError> {
        let layout = TpLayout::new(&self.config, tp_rank, tp)?;
        let layers = self
            .layers
            .iter()
            .map(|layer| layer.shard(&self.config, &layout))
            .collect();
        Ok(ShardWeights {
            layout,
            embedding: self.embedding,
            layers,
            final_norm: self.final_norm,
            lm_head: self.lm_head,
        })
    }
}

impl LayerWeights {
    /// One layer's full weights, drawn from streams `first_stream..first_stream + 9`.
    fn generate(config: &ModelConfig, seed: u64, first_stream: u64) -> LayerWeights {
        let (hidden, q_dim, kv_dim, ffn) =
            (config.hidden, config.q_dim(), config.kv_dim(), config.ffn);
        let matrix = |i: u64, rows: usize, cols: usize| {
            uniform(seed, first_stream + i, rows * cols, fan_in_std(rows))
        };
        LayerWeights {
            attn_norm: norm(seed, first_stream, hidden),
            wq: matrix(1, hidden, q_dim),
            wk: matrix(2, hidden, kv_dim),
            wv: matrix(3, hidden, kv_dim),
            wo: matrix(4, q_dim, hidden),
            mlp_norm: norm(seed, first_stream + 5, hidden),
            w_gate: matrix(6, hidden, ffn),
            w_up: matrix(7, hidden, ffn),
            w_down: matrix(8, ffn, hidden),
        }
    }

    /// This layer's slice for `layout`: column-parallel q, k, v, gate and up; row-parallel o and
    /// down; norms replicated.
    fn shard(&self, config: &ModelConfig, layout: &TpLayout) -> LayerWeights {
        let (q_dim, kv_dim, hidden, ffn) =
            (config.q_dim(), config.kv_dim(), config.hidden, config.ffn);
        LayerWeights {
            attn_norm: self.attn_norm.clone(),
            wq: columns(&self.wq, q_dim, layout.q_range()),
            wk: columns(&self.wk, kv_dim, layout.kv_range()),
            wv: columns(&self.wv, kv_dim, layout.kv_range()),
            wo: rows(&self.wo, hidden, layout.q_range()),
            mlp_norm: self.mlp_norm.clone(),
            w_gate: columns(&self.w_gate, ffn, layout.ffn_range()),
            w_up: columns(&self.w_up, ffn, layout.ffn_range()),
            w_down: rows(&self.w_down, hidden, layout.ffn_range()),
        }
    }
}

/// Columns `keep` of a row-major matrix `cols` wide.
fn columns(matrix: &[f32], cols: usize, keep: Range<usize>) -> Vec<f32> {
    matrix
        .chunks_exact(cols)
        .flat_map(|row| &row[keep.clone()])
        .copied()
        .collect()
}

/// Rows `keep` of a row-major matrix `cols` wide.
fn rows(matrix: &[f32], cols: usize, keep: Range<usize>) -> Vec<f32> {
    matrix[keep.start * cols..keep.end * cols].to_vec()
}

#[cfg(test)]
mod tests {
    use super::super::init::NORM_SPREAD;
    use super::*;

    fn small() -> ModelConfig {
        crate::config::test_model()
    }

    fn std_of(values: &[f32]) -> f32 {
        let mean = values.iter().sum::<f32>() / values.len() as f32;
        let var = values.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / values.len() as f32;
        var.sqrt()
    }

    #[test]
    fn the_same_seed_gives_the_same_model_and_another_seed_does_not() {
        let a = ModelWeights::generate(&small(), 7);
        assert_eq!(a, ModelWeights::generate(&small(), 7));
        let b = ModelWeights::generate(&small(), 8);
        assert_ne!(a.layers[0].wq, b.layers[0].wq);
        assert_ne!(
            a.layers[0].wq, a.layers[1].wq,
            "layers draw from their own streams"
        );
    }

    #[test]
    fn shapes_and_scales_look_like_a_real_init() {
        let config = small();
        let w = ModelWeights::generate(&config, 1);
        let layer = &w.layers[1];
        assert_eq!(layer.wk.len(), config.hidden * config.kv_dim());
        assert_eq!(layer.w_down.len(), config.ffn * config.hidden);
        assert_eq!(w.lm_head.len(), config.hidden * config.vocab);
        let expected = 1.0 / (config.ffn as f32).sqrt();
        assert!((std_of(&layer.w_down) / expected - 1.0).abs() < 0.1);
        assert!(
            layer
                .mlp_norm
                .iter()
                .all(|g| (g - 1.0).abs() <= NORM_SPREAD)
        );
        assert!(
            std_of(&layer.mlp_norm) > 0.01,
            "norms are not all exactly 1"
        );
    }

    #[test]
    fn shards_are_the_megatron_slices_of_the_full_model() {
        let config = small();
        let full = ModelWeights::generate(&config, 3);
        let zero = full.clone().shard(0, 2).unwrap();
        let one = full.clone().shard(1, 2).unwrap();
        let (f, a, b) = (&full.layers[1], &zero.layers[1], &one.layers[1]);
        let half_q = config.q_dim() / 2;
        for r in 0..config.hidden {
            let row = &f.wq[r * config.q_dim()..(r + 1) * config.q_dim()];
            assert_eq!(&row[..half_q], &a.wq[r * half_q..(r + 1) * half_q]);
            assert_eq!(&row[half_q..], &b.wq[r * half_q..(r + 1) * half_q]);
        }
        assert_eq!([a.wo.as_slice(), b.wo.as_slice()].concat(), f.wo);
        assert_eq!(
            [a.w_down.as_slice(), b.w_down.as_slice()].concat(),
            f.w_down
        );
        assert_eq!(
            b.wk[..config.head_dim],
            f.wk[config.head_dim..2 * config.head_dim]
        );
        assert_eq!(a.w_up.len() + b.w_up.len(), f.w_up.len());
        assert_eq!(
            (&one.embedding, &one.lm_head),
            (&full.embedding, &full.lm_head)
        );
    }

    #[test]
    fn a_single_shard_is_the_full_model() {
        let full = ModelWeights::generate(&small(), 5);
        let solo = full.clone().shard(0, 1).unwrap();
        assert_eq!(solo.layers, full.layers);
    }

    #[test]
    fn a_degree_that_does_not_split_the_model_is_refused() {
        let full = ModelWeights::generate(&small(), 5);
        let err = full.shard(0, 3).unwrap_err().to_string();
        assert!(err.contains("'3'"), "{err}");
    }
}
