//! Reads a Hugging Face `config.json` into a `ModelConfig`, so pinch can size (and, with its
//! safetensors, run) a published checkpoint.
//!
//! Known `model_type`s: llama, mistral, mixtral, qwen2, qwen2_moe, deepseek_v2, deepseek_v3.
//! The shape fields (`hidden_size`, `intermediate_size`, `num_hidden_layers`,
//! `num_attention_heads`, `vocab_size`) are required: a config without them describes no model.
//! Every other field takes the default the transformers library gives it for that model type.
//!
//! What pinch does not model is read past: RoPE scaling, sliding windows, attention biases
//! (Qwen2), Qwen2-MoE's shared-expert gate, DeepSeek's group-limited routing. DeepSeek's
//! multi-head latent attention becomes ordinary attention with `head_dim = v_head_dim` (see
//! `config::presets`). Layer patterns pinch cannot express (MoE on every n-th layer only, dense
//! layers other than the first ones) are refused.

use crate::config::{Family, ModelConfig, MoeConfig};
use crate::error::WorkloadError;
use pinch_kernels::Storage;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// The `model_type`s `from_hf_config` reads, in the order errors list them.
pub const HF_MODEL_TYPES: &[&str] = &[
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen2_moe",
    "deepseek_v2",
    "deepseek_v3",
];

/// The model a Hugging Face `config.json` describes, named after the directory holding it.
pub fn from_hf_config(path: &Path) -> Result<ModelConfig, WorkloadError> {
    let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let value: Value =
        serde_json::from_str(&text).map_err(|err| bad_config(path, format!("not JSON: {err}")))?;
    let model_type = value
        .get("model_type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad_config(path, "no string field 'model_type'".to_string()))?;
    let reader = Reader {
        path,
        value: &value,
    };
    let config = match model_type {
        "llama" => reader.dense(Family::Llama, &LLAMA),
        "mistral" => reader.dense(Family::Mistral, &MISTRAL),
        "qwen2" => reader.dense(Family::Qwen2, &QWEN2),
        "mixtral" => reader.mixtral(),
        "qwen2_moe" => reader.qwen2_moe(),
        "deepseek_v2" => reader.deepseek(&DEEPSEEK_V2, &DEEPSEEK_V2_MOE),
        "deepseek_v3" => reader.deepseek(&DEEPSEEK_V3, &DEEPSEEK_V3_MOE),
        other => Err(WorkloadError::HfModelType {
            path: path.to_path_buf(),
            model_type: other.to_string(),
            known: HF_MODEL_TYPES.join(", "),
        }),
    }?;
    config.validate()?;
    Ok(config)
}

/// The transformers defaults of the optional fields, per model type.
struct Defaults {
    /// `None`: as many KV heads as attention heads.
    kv_heads: Option<usize>,
    rope_theta: f32,
    norm_eps: f32,
    max_seq: usize,
}

const LLAMA: Defaults = Defaults {
    kv_heads: None,
    rope_theta: 10_000.0,
    norm_eps: 1e-6,
    max_seq: 2048,
};
const MISTRAL: Defaults = Defaults {
    kv_heads: Some(8),
    rope_theta: 10_000.0,
    norm_eps: 1e-6,
    max_seq: 4096 * 32,
};
const MIXTRAL: Defaults = Defaults {
    kv_heads: Some(8),
    rope_theta: 1e6,
    norm_eps: 1e-5,
    max_seq: 4096 * 32,
};
const QWEN2: Defaults = Defaults {
    kv_heads: Some(32),
    rope_theta: 10_000.0,
    norm_eps: 1e-6,
    max_seq: 32_768,
};
const QWEN2_MOE: Defaults = Defaults {
    kv_heads: Some(16),
    ..QWEN2
};
const DEEPSEEK_V2: Defaults = Defaults {
    kv_heads: Some(32),
    rope_theta: 10_000.0,
    norm_eps: 1e-6,
    max_seq: 2048,
};
const DEEPSEEK_V3: Defaults = Defaults {
    kv_heads: Some(128),
    max_seq: 4096,
    ..DEEPSEEK_V2
};

/// The fields every supported model type shares.
#[derive(Deserialize)]
struct Common {
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    vocab_size: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rope_theta: Option<f32>,
    rms_norm_eps: Option<f32>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    /// The checkpoint's dtype; newer configs call it `dtype`.
    torch_dtype: Option<String>,
    dtype: Option<String>,
}

#[derive(Deserialize)]
struct MixtralFields {
    #[serde(default = "eight")]
    num_local_experts: usize,
    #[serde(default = "two")]
    num_experts_per_tok: usize,
}

#[derive(Deserialize)]
struct Qwen2MoeFields {
    #[serde(default = "sixty")]
    num_experts: usize,
    #[serde(default = "four")]
    num_experts_per_tok: usize,
    #[serde(default = "qwen2_moe_expert_ffn")]
    moe_intermediate_size: usize,
    #[serde(default = "qwen2_moe_shared_ffn")]
    shared_expert_intermediate_size: usize,
    #[serde(default)]
    norm_topk_prob: bool,
    #[serde(default = "one")]
    decoder_sparse_step: usize,
    #[serde(default)]
    mlp_only_layers: Vec<usize>,
}

#[derive(Deserialize)]
struct DeepSeekFields {
    n_routed_experts: Option<usize>,
    num_experts_per_tok: Option<usize>,
    moe_intermediate_size: Option<usize>,
    n_shared_experts: Option<usize>,
    first_k_dense_replace: Option<usize>,
    norm_topk_prob: Option<bool>,
    #[serde(default = "one")]
    moe_layer_freq: usize,
    #[serde(default = "deepseek_v_head_dim")]
    v_head_dim: usize,
}

/// The transformers defaults of DeepSeek's MoE fields, which differ between V2 and V3.
struct DeepSeekDefaults {
    /// `None`: a dense model.
    experts: Option<usize>,
    /// `None`: no usable default (transformers leaves it unset).
    top_k: Option<usize>,
    expert_ffn: usize,
    shared_experts: usize,
    dense_layers: usize,
    renormalize: bool,
}

const DEEPSEEK_V2_MOE: DeepSeekDefaults = DeepSeekDefaults {
    experts: None,
    top_k: None,
    expert_ffn: 1407,
    shared_experts: 0,
    dense_layers: 0,
    renormalize: false,
};
const DEEPSEEK_V3_MOE: DeepSeekDefaults = DeepSeekDefaults {
    experts: Some(256),
    top_k: Some(8),
    expert_ffn: 2048,
    shared_experts: 1,
    dense_layers: 3,
    renormalize: true,
};

fn one() -> usize {
    1
}
fn two() -> usize {
    2
}
fn four() -> usize {
    4
}
fn eight() -> usize {
    8
}
fn sixty() -> usize {
    60
}
fn qwen2_moe_expert_ffn() -> usize {
    1408
}
fn qwen2_moe_shared_ffn() -> usize {
    5632
}
fn deepseek_v_head_dim() -> usize {
    128
}

/// One parsed config file, read field group by field group.
struct Reader<'a> {
    path: &'a Path,
    value: &'a Value,
}

impl Reader<'_> {
    /// Deserializes `T` from the whole file; an error names the field and the file.
    fn fields<T: DeserializeOwned>(&self) -> Result<T, WorkloadError> {
        serde_path_to_error::deserialize(self.value.clone()).map_err(|err| {
            let field = err.path().to_string();
            let problem = if field == "." {
                err.inner().to_string()
            } else {
                format!("field '{field}': {}", err.inner())
            };
            bad_config(self.path, problem)
        })
    }

    fn dense(&self, family: Family, defaults: &Defaults) -> Result<ModelConfig, WorkloadError> {
        let common: Common = self.fields()?;
        Ok(self.base(family, defaults, &common))
    }

    fn base(&self, family: Family, defaults: &Defaults, c: &Common) -> ModelConfig {
        let heads = c.num_attention_heads;
        let head_dim = c.head_dim.unwrap_or(c.hidden_size / heads.max(1));
        ModelConfig {
            name: model_name(self.path),
            family,
            vocab: c.vocab_size,
            hidden: c.hidden_size,
            layers: c.num_hidden_layers,
            heads,
            kv_heads: c.num_key_value_heads.or(defaults.kv_heads).unwrap_or(heads),
            head_dim,
            ffn: c.intermediate_size,
            rope_theta: c.rope_theta.unwrap_or(defaults.rope_theta),
            norm_eps: c.rms_norm_eps.unwrap_or(defaults.norm_eps),
            max_seq: c.max_position_embeddings.unwrap_or(defaults.max_seq),
            moe: None,
            storage: storage(c.dtype.as_deref().or(c.torch_dtype.as_deref())),
            tie_embeddings: c.tie_word_embeddings.unwrap_or(false),
        }
    }

    fn mixtral(&self) -> Result<ModelConfig, WorkloadError> {
        let common: Common = self.fields()?;
        let m: MixtralFields = self.fields()?;
        let moe = MoeConfig {
            experts: m.num_local_experts,
            top_k: m.num_experts_per_tok,
            expert_ffn: common.intermediate_size,
            shared_experts: 0,
            shared_ffn: 0,
            dense_layers: 0,
            renormalize: true,
        };
        Ok(ModelConfig {
            moe: Some(moe),
            ..self.base(Family::Mixtral, &MIXTRAL, &common)
        })
    }

    fn qwen2_moe(&self) -> Result<ModelConfig, WorkloadError> {
        let common: Common = self.fields()?;
        let q: Qwen2MoeFields = self.fields()?;
        let base = self.base(Family::Qwen2Moe, &QWEN2_MOE, &common);
        if q.num_experts == 0 {
            return Ok(base);
        }
        if q.decoder_sparse_step != 1 {
            return Err(bad_config(
                self.path,
                format!(
                    "decoder_sparse_step '{}' is not 1, but pinch models MoE on every layer \
                     after the dense ones",
                    q.decoder_sparse_step
                ),
            ));
        }
        let dense_layers = self.dense_prefix(&q.mlp_only_layers)?;
        let shared = usize::from(q.shared_expert_intermediate_size > 0);
        let moe = MoeConfig {
            experts: q.num_experts,
            top_k: q.num_experts_per_tok,
            expert_ffn: q.moe_intermediate_size,
            shared_experts: shared,
            shared_ffn: q.shared_expert_intermediate_size,
            dense_layers,
            renormalize: q.norm_topk_prob,
        };
        Ok(ModelConfig {
            moe: Some(moe),
            ..base
        })
    }

    /// The number of leading dense layers `mlp_only_layers` lists, if it lists exactly those.
    fn dense_prefix(&self, layers: &[usize]) -> Result<usize, WorkloadError> {
        let mut sorted = layers.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        if sorted.iter().enumerate().all(|(i, &l)| i == l) {
            return Ok(sorted.len());
        }
        Err(bad_config(
            self.path,
            format!(
                "mlp_only_layers '{layers:?}' are not the first layers, the only ones pinch \
                 models as dense"
            ),
        ))
    }

    fn deepseek(
        &self,
        defaults: &Defaults,
        moe_defaults: &DeepSeekDefaults,
    ) -> Result<ModelConfig, WorkloadError> {
        let common: Common = self.fields()?;
        let d: DeepSeekFields = self.fields()?;
        let base = ModelConfig {
            head_dim: d.v_head_dim,
            ..self.base(Family::DeepSeek, defaults, &common)
        };
        let Some(experts) = d.n_routed_experts.or(moe_defaults.experts) else {
            return Ok(base);
        };
        if d.moe_layer_freq != 1 {
            return Err(bad_config(
                self.path,
                format!(
                    "moe_layer_freq '{}' is not 1, but pinch models MoE on every layer after \
                     the dense ones",
                    d.moe_layer_freq
                ),
            ));
        }
        let top_k = d
            .num_experts_per_tok
            .or(moe_defaults.top_k)
            .ok_or_else(|| {
                bad_config(
                    self.path,
                    "n_routed_experts is set but 'num_experts_per_tok' is missing".to_string(),
                )
            })?;
        let expert_ffn = d.moe_intermediate_size.unwrap_or(moe_defaults.expert_ffn);
        let shared = d.n_shared_experts.unwrap_or(moe_defaults.shared_experts);
        let moe = MoeConfig {
            experts,
            top_k,
            expert_ffn,
            shared_experts: shared,
            shared_ffn: shared * expert_ffn,
            dense_layers: d.first_k_dense_replace.unwrap_or(moe_defaults.dense_layers),
            renormalize: d.norm_topk_prob.unwrap_or(moe_defaults.renormalize),
        };
        Ok(ModelConfig {
            moe: Some(moe),
            ..base
        })
    }
}

/// The name of the directory holding the config, as published checkpoints are laid out.
fn model_name(path: &Path) -> String {
    let absolute = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    absolute
        .parent()
        .and_then(Path::file_name)
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| absolute.to_string_lossy().into_owned())
}

/// float32 checkpoints stay f32; everything else (bfloat16, float16, absent) is stored as bf16,
/// the 2-byte storage pinch has.
fn storage(dtype: Option<&str>) -> Storage {
    match dtype {
        Some("float32") => Storage::F32,
        _ => Storage::Bf16,
    }
}

fn bad_config(path: &Path, problem: String) -> WorkloadError {
    WorkloadError::HfConfig {
        path: PathBuf::from(path),
        problem,
    }
}

#[cfg(test)]
mod tests;
