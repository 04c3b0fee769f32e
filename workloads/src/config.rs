//! Model shapes: the `ModelConfig` of a Llama-style decoder and the named presets pinch ships.
//!
//! A shape is checked twice: on its own (`validate`), and against a tensor-parallel degree
//! (`validate_tp`), so a bad `--tp` is refused before any rank starts.

use crate::error::WorkloadError;
use serde::{Deserialize, Serialize};

/// The names `preset` knows, in the order they are listed to users.
pub const PRESETS: &[&str] = &["tiny"];

/// The shape of a Llama-style decoder (RMSNorm, RoPE, grouped-query attention, SwiGLU MLP).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub name: String,
    pub vocab: usize,
    /// Width of the residual stream.
    pub hidden: usize,
    pub layers: usize,
    /// Query heads.
    pub heads: usize,
    /// Key-value heads (grouped-query attention: `heads` is a multiple of it).
    pub kv_heads: usize,
    pub head_dim: usize,
    /// Width of the MLP's intermediate layer.
    pub ffn: usize,
    pub rope_theta: f32,
    pub norm_eps: f32,
    /// Longest sequence (prompt plus generated tokens) a run may reach.
    pub max_seq: usize,
}

/// The shape called `name`, or an error listing the known presets.
pub fn preset(name: &str) -> Result<ModelConfig, WorkloadError> {
    match name {
        "tiny" => Ok(tiny()),
        _ => Err(WorkloadError::UnknownPreset {
            name: name.to_string(),
            known: PRESETS.join(", "),
        }),
    }
}

/// Llama-3's ratios at about 28 M parameters: 4 query heads per KV head, an MLP three times
/// the hidden width, RoPE theta 500 000. A TP=2 run of 4 × (32 + 64) tokens takes seconds on
/// two cores in a release build.
fn tiny() -> ModelConfig {
    ModelConfig {
        name: "tiny".to_string(),
        vocab: 4096,
        hidden: 512,
        layers: 8,
        heads: 8,
        kv_heads: 2,
        head_dim: 64,
        ffn: 1536,
        rope_theta: 500_000.0,
        norm_eps: 1e-5,
        max_seq: 256,
    }
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

    /// Parameters of one decoder layer: attention, MLP and the two norms.
    pub fn layer_param_count(&self) -> u64 {
        let attention = 2 * self.hidden * self.q_dim() + 2 * self.hidden * self.kv_dim();
        let mlp = 3 * self.hidden * self.ffn;
        (attention + mlp + 2 * self.hidden) as u64
    }

    /// Every parameter: embedding, layers, final norm and the (untied) LM head.
    pub fn param_count(&self) -> u64 {
        let embedding_and_head = 2 * self.vocab * self.hidden + self.hidden;
        embedding_and_head as u64 + self.layers as u64 * self.layer_param_count()
    }

    /// Checks the shape is one the decoder can run: positive sizes, whole GQA groups, even
    /// head dimension (RoPE rotates pairs).
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
        if self.heads % self.kv_heads != 0 {
            return Err(self.malformed(format!(
                "its {} attention heads are not a multiple of its '{}' key-value heads",
                self.heads, self.kv_heads
            )));
        }
        if self.head_dim % 2 != 0 {
            return Err(self.malformed(format!(
                "its head dimension '{}' is odd but RoPE rotates pairs",
                self.head_dim
            )));
        }
        Ok(())
    }

    /// Checks `tp` ranks can split this model Megatron-style: whole query heads and whole MLP
    /// columns on every rank, and KV heads either split evenly or, when there are more ranks
    /// than KV heads, replicated on an equal number of ranks each.
    pub fn validate_tp(&self, tp: usize) -> Result<(), WorkloadError> {
        if tp == 0 {
            return Err(WorkloadError::ZeroSetting {
                what: "tensor-parallel degree",
            });
        }
        let parts = [("attention heads", self.heads), ("ffn columns", self.ffn)];
        if let Some(&(what, count)) = parts.iter().find(|(_, count)| count % tp != 0) {
            return Err(WorkloadError::TpDoesNotDivide {
                tp,
                count,
                what,
                preset: self.name.clone(),
            });
        }
        if self.kv_heads % tp != 0 && tp % self.kv_heads != 0 {
            return Err(WorkloadError::TpDoesNotFitKvHeads {
                tp,
                kv_heads: self.kv_heads,
                preset: self.name.clone(),
            });
        }
        Ok(())
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
        ..tiny()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tiny_has_llama3_ratios_and_counts_its_parameters() {
        let tiny = preset("tiny").unwrap();
        tiny.validate().unwrap();
        assert_eq!(tiny.heads / tiny.kv_heads, 4);
        assert_eq!(tiny.q_dim(), tiny.hidden);
        // Per layer: q and o 512×512, k and v 512×128, three 512×1536 MLP matrices, two norms.
        assert_eq!(tiny.layer_param_count(), 3_015_680);
        assert_eq!(tiny.param_count(), 8 * 3_015_680 + 2 * 4096 * 512 + 512);
    }

    #[test]
    fn every_listed_preset_exists() {
        for name in PRESETS {
            assert_eq!(&preset(name).unwrap().name, name);
        }
    }

    #[test]
    fn unknown_preset_is_named_with_the_known_ones() {
        let err = preset("enormous").unwrap_err().to_string();
        assert_eq!(err, "unknown preset 'enormous'; known presets: tiny");
    }

    #[test]
    fn tp_must_divide_heads_kv_heads_and_ffn() {
        let tiny = preset("tiny").unwrap();
        tiny.validate_tp(1).unwrap();
        tiny.validate_tp(2).unwrap();
        let three = tiny.validate_tp(3).unwrap_err().to_string();
        assert_eq!(
            three,
            "tensor-parallel degree '3' does not divide the 8 attention heads of preset 'tiny'"
        );
        tiny.validate_tp(4).unwrap();
        tiny.validate_tp(8).unwrap();
        let sixteen = tiny.validate_tp(16).unwrap_err().to_string();
        assert!(
            sixteen.contains("'16'") && sixteen.contains("8 attention heads"),
            "{sixteen}"
        );
        let six_heads = ModelConfig {
            heads: 12,
            kv_heads: 4,
            ffn: 1536,
            ..tiny.clone()
        };
        let six = six_heads.validate_tp(6).unwrap_err().to_string();
        assert!(
            six.contains("'6'") && six.contains("4 key-value heads"),
            "{six}"
        );
        let zero = tiny.validate_tp(0).unwrap_err().to_string();
        assert_eq!(zero, "tensor-parallel degree '0' must be at least 1");
    }

    #[test]
    fn ffn_divisibility_is_checked() {
        let odd_ffn = ModelConfig {
            ffn: 1537,
            ..preset("tiny").unwrap()
        };
        let err = odd_ffn.validate_tp(2).unwrap_err().to_string();
        assert!(err.contains("1537 ffn columns"), "{err}");
    }

    #[test]
    fn malformed_shapes_are_refused_naming_the_value() {
        let tiny = preset("tiny").unwrap();
        let groups = ModelConfig {
            kv_heads: 3,
            ..tiny.clone()
        };
        let err = groups.validate().unwrap_err().to_string();
        assert!(err.contains("'3' key-value heads"), "{err}");
        let odd = ModelConfig {
            head_dim: 63,
            ..tiny.clone()
        };
        assert!(odd.validate().unwrap_err().to_string().contains("'63'"));
        let empty = ModelConfig { layers: 0, ..tiny };
        let err = empty.validate().unwrap_err().to_string();
        assert_eq!(err, "model 'tiny' is malformed: its layer count is '0'");
    }

    #[test]
    fn config_round_trips_through_json() {
        let tiny = preset("tiny").unwrap();
        let text = serde_json::to_string(&tiny).unwrap();
        assert!(text.contains("\"kv_heads\":2"), "{text}");
        let back: ModelConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, tiny);
    }
}
