//! Model shapes: the `ModelConfig` of a Llama-style decoder, dense or mixture-of-experts, and
//! the checks a shape must pass before any rank starts.
//!
//! A shape is checked on its own (`validate`), then against each parallel degree: tensor
//! (`validate_tp`), expert (`validate_ep`) and pipeline (`validate_pp`), so a bad `--tp`,
//! `--ep` or `--pp` is refused with the number that does not fit. The named shapes pinch ships
//! live in `presets`.

mod presets;

use crate::error::WorkloadError;
use pinch_kernels::Storage;
use serde::{Deserialize, Serialize};
use std::ops::Range;

pub use presets::{PRESETS, preset, presets};

/// The published architecture a shape follows; it decides the tensor names of a checkpoint and
/// how the router is read, not the arithmetic (every family runs as the same decoder).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Family {
    #[default]
    Llama,
    Mistral,
    Qwen2,
    Mixtral,
    Qwen2Moe,
    #[serde(rename = "deepseek")]
    DeepSeek,
}

impl Family {
    /// The name users see, as serde writes it.
    pub fn name(self) -> &'static str {
        match self {
            Family::Llama => "llama",
            Family::Mistral => "mistral",
            Family::Qwen2 => "qwen2",
            Family::Mixtral => "mixtral",
            Family::Qwen2Moe => "qwen2_moe",
            Family::DeepSeek => "deepseek",
        }
    }
}

/// The mixture-of-experts part of a shape: which layers route, to how many experts, how wide.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoeConfig {
    /// Routed experts per MoE layer.
    pub experts: usize,
    /// Routed experts each token goes to.
    pub top_k: usize,
    /// Intermediate width of one routed expert.
    pub expert_ffn: usize,
    /// Shared experts every token goes through (0 for Mixtral).
    pub shared_experts: usize,
    /// Intermediate width of all shared experts together (0 if there are none): they are one
    /// wide MLP, as DeepSeek and Qwen2-MoE compute them.
    pub shared_ffn: usize,
    /// The first `dense_layers` layers use a dense MLP of width `ffn` (DeepSeek's
    /// `first_k_dense_replace`); the rest are MoE layers.
    pub dense_layers: usize,
    /// Whether the top-k gate weights are renormalized to sum to 1 (Mixtral: true).
    pub renormalize: bool,
}

/// The shape of a Llama-style decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU MLP),
/// whose MLP may be a mixture of experts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub name: String,
    #[serde(default)]
    pub family: Family,
    pub vocab: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key-value heads (grouped-query attention: `heads` is a multiple of it).
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Width of the dense MLP's intermediate layer (the MLP of every layer of a dense model,
    /// of the first `moe.dense_layers` layers of a MoE model).
    pub ffn: usize,
    pub rope_theta: f32,
    pub norm_eps: f32,
    /// Longest sequence (prompt plus generated tokens) a run may reach.
    pub max_seq: usize,
    /// `None` for a dense model.
    #[serde(default)]
    pub moe: Option<MoeConfig>,
    /// How weight matrices are stored unless a run asks otherwise (norms and routers are
    /// always f32).
    #[serde(default = "f32_storage")]
    pub storage: Storage,
    /// Whether the LM head is the embedding's transpose rather than a tensor of its own.
    #[serde(default)]
    pub tie_embeddings: bool,
}

/// Configs written before weights had a storage type were all f32.
fn f32_storage() -> Storage {
    Storage::F32
}

impl ModelConfig {
    /// Width of all query heads together.
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Width of all key (or value) heads together.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Whether `layer` routes its tokens to experts.
    pub fn is_moe_layer(&self, layer: usize) -> bool {
        self.moe
            .as_ref()
            .is_some_and(|moe| layer >= moe.dense_layers && layer < self.layers)
    }

    /// How many of the layers route to experts.
    pub fn moe_layer_count(&self) -> usize {
        (0..self.layers).filter(|&l| self.is_moe_layer(l)).count()
    }
}

/// Parameter counts of one part of the model, split by how they are stored: matrices take the
/// weight storage, norms and routers always stay f32.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParamSplit {
    pub matrix: u64,
    pub f32: u64,
}

impl ParamSplit {
    pub fn total(self) -> u64 {
        self.matrix + self.f32
    }

    fn add(self, other: ParamSplit) -> ParamSplit {
        ParamSplit {
            matrix: self.matrix + other.matrix,
            f32: self.f32 + other.f32,
        }
    }

    fn times(self, n: u64) -> ParamSplit {
        ParamSplit {
            matrix: self.matrix * n,
            f32: self.f32 * n,
        }
    }
}

/// Which experts a count includes: all of them, or those one token passes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Experts {
    All,
    Active,
}

impl ModelConfig {
    /// Parameters of one decoder layer, every expert and the router included.
    pub fn layer_param_count(&self, layer: usize) -> u64 {
        self.layer_params(layer, Experts::All).total()
    }

    /// Every parameter: embedding, layers (all experts and routers), norms, and the LM head
    /// unless it is tied to the embedding.
    pub fn param_count(&self) -> u64 {
        self.params(Experts::All).total()
    }

    /// The parameters one token passes through: as `param_count`, but only `top_k` routed
    /// experts (and the shared ones) of each MoE layer. The embedding counts whole, as
    /// published active counts do.
    pub fn active_param_count(&self) -> u64 {
        self.params(Experts::Active).total()
    }

    /// Parameters split by storage, as `weight_bytes` prices them.
    pub fn param_split(&self) -> ParamSplit {
        self.params(Experts::All)
    }

    /// Bytes of all weights with matrices in `storage`; norms and routers count as f32, as
    /// the weights hold them.
    pub fn weight_bytes(&self, storage: Storage) -> u64 {
        let split = self.param_split();
        let f32_bytes = Storage::F32.bytes_per_element() as u64;
        split.matrix * storage.bytes_per_element() as u64 + split.f32 * f32_bytes
    }

    fn params(&self, experts: Experts) -> ParamSplit {
        let table = (self.vocab * self.hidden) as u64;
        let head = if self.tie_embeddings { 0 } else { table };
        let outside = ParamSplit {
            matrix: table + head,
            f32: self.hidden as u64,
        };
        (0..self.layers)
            .map(|l| self.layer_params(l, experts))
            .fold(outside, ParamSplit::add)
    }

    fn layer_params(&self, layer: usize, experts: Experts) -> ParamSplit {
        let attention = 2 * self.hidden * self.q_dim() + 2 * self.hidden * self.kv_dim();
        let norms = 2 * self.hidden as u64;
        let base = ParamSplit {
            matrix: attention as u64,
            f32: norms,
        };
        base.add(self.ffn_params(layer, experts))
    }

    fn ffn_params(&self, layer: usize, experts: Experts) -> ParamSplit {
        let mlp = |width: usize| 3 * (self.hidden * width) as u64;
        match self.moe.as_ref().filter(|_| self.is_moe_layer(layer)) {
            None => ParamSplit {
                matrix: mlp(self.ffn),
                f32: 0,
            },
            Some(moe) => {
                let routed = match experts {
                    Experts::All => moe.experts,
                    Experts::Active => moe.top_k,
                };
                let expert = ParamSplit {
                    matrix: mlp(moe.expert_ffn),
                    f32: 0,
                };
                let rest = ParamSplit {
                    matrix: mlp(moe.shared_ffn),
                    f32: (self.hidden * moe.experts) as u64,
                };
                expert.times(routed as u64).add(rest)
            }
        }
    }
}

impl ModelConfig {
    /// Checks the shape is one the decoder can run: positive sizes, whole GQA groups, even
    /// head dimension (RoPE rotates pairs), and a coherent MoE part.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        let sizes = [
            ("vocabulary size", self.vocab),
            ("hidden width", self.hidden),
            ("layer count", self.layers),
            ("head count", self.heads),
            ("key-value head count", self.kv_heads),
            ("head dimension", self.head_dim),
            ("ffn width", self.ffn),
            ("max sequence length", self.max_seq),
        ];
        if let Some((what, _)) = sizes.iter().find(|(_, value)| *value == 0) {
            return Err(self.malformed(format!("its {what} is '0'")));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(self.malformed(format!(
                "its {} attention heads are not a multiple of its '{}' key-value heads",
                self.heads, self.kv_heads
            )));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(self.malformed(format!(
                "its head dimension '{}' is odd but RoPE rotates pairs",
                self.head_dim
            )));
        }
        match &self.moe {
            Some(moe) => self.validate_moe(moe),
            None => Ok(()),
        }
    }

    fn validate_moe(&self, moe: &MoeConfig) -> Result<(), WorkloadError> {
        if moe.experts == 0 || moe.expert_ffn == 0 {
            return Err(self.malformed(format!(
                "its {} experts of width {} leave nothing to route to",
                moe.experts, moe.expert_ffn
            )));
        }
        if moe.top_k == 0 || moe.top_k > moe.experts {
            return Err(self.malformed(format!(
                "its top-k '{}' is not between 1 and its {} experts",
                moe.top_k, moe.experts
            )));
        }
        if (moe.shared_experts == 0) != (moe.shared_ffn == 0) {
            return Err(self.malformed(format!(
                "its {} shared experts have a total width of '{}'",
                moe.shared_experts, moe.shared_ffn
            )));
        }
        if moe.dense_layers >= self.layers {
            return Err(self.malformed(format!(
                "its '{}' dense layers leave no MoE layer among its {}",
                moe.dense_layers, self.layers
            )));
        }
        Ok(())
    }

    /// Checks `tp` ranks can split this model Megatron-style: whole query heads, MLP and
    /// expert columns and vocabulary rows (the embedding and head are vocab-parallel) on
    /// every rank, and KV heads either split evenly or, when there are more ranks than KV
    /// heads, replicated on an equal number of ranks each.
    pub fn validate_tp(&self, tp: usize) -> Result<(), WorkloadError> {
        if tp == 0 {
            return Err(WorkloadError::ZeroSetting {
                what: "tensor-parallel degree",
            });
        }
        let parts = self.tp_split_parts();
        if let Some(&(what, count)) = parts.iter().find(|(_, count)| count % tp != 0) {
            return Err(WorkloadError::TpDoesNotDivide {
                tp,
                count,
                what,
                preset: self.name.clone(),
            });
        }
        if !self.kv_heads.is_multiple_of(tp) && !tp.is_multiple_of(self.kv_heads) {
            return Err(WorkloadError::TpDoesNotFitKvHeads {
                tp,
                kv_heads: self.kv_heads,
                preset: self.name.clone(),
            });
        }
        Ok(())
    }

    /// What tensor parallelism splits into equal parts, named as errors name them. The dense
    /// width counts only if some layer is dense; a shared width only if there is one.
    fn tp_split_parts(&self) -> Vec<(&'static str, usize)> {
        let mut parts = vec![("attention heads", self.heads)];
        if (0..self.layers).any(|l| !self.is_moe_layer(l)) {
            parts.push(("ffn columns", self.ffn));
        }
        if let Some(moe) = &self.moe {
            parts.push(("expert ffn columns", moe.expert_ffn));
            if moe.shared_ffn > 0 {
                parts.push(("shared-expert ffn columns", moe.shared_ffn));
            }
        }
        parts.push(("vocabulary rows", self.vocab));
        parts
    }

    /// Checks `ep` ranks can share out this model's experts evenly.
    pub fn validate_ep(&self, ep: usize) -> Result<(), WorkloadError> {
        if ep == 0 {
            return Err(WorkloadError::ZeroSetting {
                what: "expert-parallel degree",
            });
        }
        match &self.moe {
            None if ep > 1 => Err(WorkloadError::EpNeedsMoe {
                ep,
                model: self.name.clone(),
            }),
            Some(moe) if moe.experts % ep != 0 => Err(WorkloadError::EpDoesNotDivide {
                ep,
                experts: moe.experts,
                model: self.name.clone(),
            }),
            _ => Ok(()),
        }
    }

    /// Checks `pp` pipeline stages each get at least one layer.
    pub fn validate_pp(&self, pp: usize) -> Result<(), WorkloadError> {
        if pp == 0 {
            return Err(WorkloadError::ZeroSetting {
                what: "pipeline-parallel degree",
            });
        }
        if pp > self.layers {
            return Err(WorkloadError::PpExceedsLayers {
                pp,
                layers: self.layers,
                model: self.name.clone(),
            });
        }
        Ok(())
    }

    /// The layers of pipeline stage `stage` of `pp`: contiguous, as even as possible, the
    /// earlier stages taking one extra layer each when `pp` does not divide the layer count.
    /// A stage past the last (or `pp` 0) gets an empty range at the end.
    pub fn stage_layers(&self, stage: usize, pp: usize) -> Range<usize> {
        if pp == 0 || stage >= pp {
            return self.layers..self.layers;
        }
        let (base, extra) = (self.layers / pp, self.layers % pp);
        let start = stage * base + stage.min(extra);
        let len = base + usize::from(stage < extra);
        start..(start + len).min(self.layers)
    }

    fn malformed(&self, problem: String) -> WorkloadError {
        WorkloadError::MalformedModel {
            name: self.name.clone(),
            problem,
        }
    }
}

/// A small shape of the tiny preset's kind, so tests build and run a model in milliseconds.
#[cfg(test)]
pub(crate) fn test_model() -> ModelConfig {
    ModelConfig {
        name: "small".to_string(),
        vocab: 64,
        hidden: 32,
        layers: 2,
        heads: 4,
        kv_heads: 2,
        head_dim: 8,
        ffn: 48,
        max_seq: 16,
        ..preset("tiny").expect("tiny is a preset")
    }
}

/// A small Mixtral-style shape (4 experts, top-2, one dense layer and a shared expert, so every
/// kind of FFN shows up), for tests that build MoE weights in milliseconds.
#[cfg(test)]
pub(crate) fn test_moe_model() -> ModelConfig {
    ModelConfig {
        name: "small-moe".to_string(),
        family: Family::DeepSeek,
        layers: 3,
        moe: Some(MoeConfig {
            experts: 4,
            top_k: 2,
            expert_ffn: 16,
            shared_experts: 1,
            shared_ffn: 24,
            dense_layers: 1,
            renormalize: true,
        }),
        ..test_model()
    }
}

#[cfg(test)]
mod tests;
