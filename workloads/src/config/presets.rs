//! The named model shapes pinch ships, shaped like the published models they are named after
//! (the same ratios of hidden width, heads, KV heads, FFN width, vocabulary and layers).
//!
//! Three families, each from a CPU-sized `tiny` and `small` up to the published sizes:
//! dense Llama-3, Mixtral-style MoE (top-2 of 8 experts), and DeepSeek-style MoE (many narrow
//! experts, top-k of them plus shared experts, the first layers dense). The tiny presets store
//! their weights as f32 (tests compare them exactly); the others as bf16, as they are published.
//!
//! DeepSeek-V2 and V3 use multi-head latent attention (MLA), which compresses keys and values
//! through a low-rank projection. pinch models it as ordinary multi-head attention with the
//! published head count (as many KV heads as query heads) and `head_dim = v_head_dim`, so its
//! attention weighs more than the real one while its KV cache and FLOPs have the right shape.

use super::{Family, ModelConfig, MoeConfig};
use crate::error::WorkloadError;
use pinch_kernels::Storage;

/// The names `preset` knows, in the order they are listed to users.
pub const PRESETS: &[&str] = &[
    "tiny",
    "small",
    "llama3-8b",
    "llama3-70b",
    "llama3-405b",
    "moe-tiny",
    "moe-small",
    "mixtral-8x7b",
    "mixtral-8x22b",
    "deepseek-tiny",
    "deepseek-small",
    "deepseek-v2-lite",
    "deepseek-v3",
];

/// Every preset, in the order of `PRESETS`.
pub fn presets() -> Vec<ModelConfig> {
    PRESETS.iter().filter_map(|name| build(name)).collect()
}

/// The shape called `name`, or an error listing the known presets.
pub fn preset(name: &str) -> Result<ModelConfig, WorkloadError> {
    build(name).ok_or_else(|| WorkloadError::UnknownPreset {
        name: name.to_string(),
        known: PRESETS.join(", "),
    })
}

fn build(name: &str) -> Option<ModelConfig> {
    let config = match name {
        "tiny" => tiny(),
        "small" => small(),
        "llama3-8b" => llama3_8b(),
        "llama3-70b" => llama3_70b(),
        "llama3-405b" => llama3_405b(),
        "moe-tiny" => moe_tiny(),
        "moe-small" => moe_small(),
        "mixtral-8x7b" => mixtral_8x7b(),
        "mixtral-8x22b" => mixtral_8x22b(),
        "deepseek-tiny" => deepseek_tiny(),
        "deepseek-small" => deepseek_small(),
        "deepseek-v2-lite" => deepseek_v2_lite(),
        "deepseek-v3" => deepseek_v3(),
        _ => return None,
    };
    Some(config)
}

/// Llama-3's ratios at about 28 M parameters: 4 query heads per KV head, an MLP three times
/// the hidden width, RoPE theta 500 000. A TP=2 run of 4 × (32 + 64) tokens takes seconds on
/// two cores in a release build. Tests depend on this exact shape.
fn tiny() -> ModelConfig {
    ModelConfig {
        name: "tiny".to_string(),
        family: Family::Llama,
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
        moe: None,
        storage: Storage::F32,
        tie_embeddings: false,
    }
}

/// Llama-3 ratios (4 query heads per KV head, MLP 3.5× hidden) at about 230 M parameters:
/// 0.9 GB in f32, so decoding is bound by memory bandwidth on a CPU, yet a run stays short.
fn small() -> ModelConfig {
    ModelConfig {
        name: "small".to_string(),
        vocab: 32_768,
        hidden: 1024,
        layers: 12,
        heads: 16,
        kv_heads: 4,
        head_dim: 64,
        ffn: 3584,
        max_seq: 2048,
        storage: Storage::Bf16,
        ..tiny()
    }
}

/// Meta-Llama-3-8B.
fn llama3_8b() -> ModelConfig {
    ModelConfig {
        name: "llama3-8b".to_string(),
        vocab: 128_256,
        hidden: 4096,
        layers: 32,
        heads: 32,
        kv_heads: 8,
        head_dim: 128,
        ffn: 14_336,
        max_seq: 8192,
        storage: Storage::Bf16,
        ..tiny()
    }
}

/// Meta-Llama-3-70B.
fn llama3_70b() -> ModelConfig {
    ModelConfig {
        name: "llama3-70b".to_string(),
        hidden: 8192,
        layers: 80,
        heads: 64,
        ffn: 28_672,
        ..llama3_8b()
    }
}

/// Llama-3.1-405B (its 128 K context).
fn llama3_405b() -> ModelConfig {
    ModelConfig {
        name: "llama3-405b".to_string(),
        hidden: 16_384,
        layers: 126,
        heads: 128,
        ffn: 53_248,
        max_seq: 131_072,
        ..llama3_8b()
    }
}

/// Mixtral's routing (8 experts, top-2, renormalized, no shared expert) on tiny's attention,
/// with 4 layers and experts twice the hidden width so a TP=2 or EP=2 run takes seconds on
/// two cores.
fn moe_tiny() -> ModelConfig {
    ModelConfig {
        name: "moe-tiny".to_string(),
        family: Family::Mixtral,
        layers: 4,
        ffn: 1024,
        rope_theta: 1_000_000.0,
        max_seq: 512,
        moe: Some(mixtral_moe(1024)),
        ..tiny()
    }
}

/// Mixtral's routing on small's attention, experts 1.5× the hidden width: about 550 M
/// parameters of which about 210 M are active per token.
fn moe_small() -> ModelConfig {
    ModelConfig {
        name: "moe-small".to_string(),
        family: Family::Mixtral,
        ffn: 1536,
        rope_theta: 1_000_000.0,
        moe: Some(mixtral_moe(1536)),
        storage: Storage::Bf16,
        ..small()
    }
}

/// Mixtral-8x7B-v0.1: 46.7 B parameters, 12.9 B active.
fn mixtral_8x7b() -> ModelConfig {
    ModelConfig {
        name: "mixtral-8x7b".to_string(),
        family: Family::Mixtral,
        vocab: 32_000,
        hidden: 4096,
        layers: 32,
        heads: 32,
        kv_heads: 8,
        head_dim: 128,
        ffn: 14_336,
        rope_theta: 1_000_000.0,
        max_seq: 32_768,
        moe: Some(mixtral_moe(14_336)),
        storage: Storage::Bf16,
        ..tiny()
    }
}

/// Mixtral-8x22B-v0.1: 141 B parameters, 39 B active.
fn mixtral_8x22b() -> ModelConfig {
    ModelConfig {
        name: "mixtral-8x22b".to_string(),
        vocab: 32_768,
        hidden: 6144,
        layers: 56,
        heads: 48,
        ffn: 16_384,
        max_seq: 65_536,
        moe: Some(mixtral_moe(16_384)),
        ..mixtral_8x7b()
    }
}

/// Mixtral's router: top-2 of 8 experts of width `expert_ffn`, renormalized, every layer MoE.
fn mixtral_moe(expert_ffn: usize) -> MoeConfig {
    MoeConfig {
        experts: 8,
        top_k: 2,
        expert_ffn,
        shared_experts: 0,
        shared_ffn: 0,
        dense_layers: 0,
        renormalize: true,
    }
}

/// DeepSeek-V2-Lite's ratios on tiny's width: 16 experts 0.6875× hidden, top-4, two shared
/// experts, a dense first layer 5.3× hidden; multi-head attention (see the module doc).
fn deepseek_tiny() -> ModelConfig {
    ModelConfig {
        name: "deepseek-tiny".to_string(),
        family: Family::DeepSeek,
        vocab: 4096,
        hidden: 512,
        layers: 4,
        heads: 8,
        kv_heads: 8,
        head_dim: 64,
        ffn: 2736,
        rope_theta: 10_000.0,
        norm_eps: 1e-6,
        max_seq: 512,
        moe: Some(MoeConfig {
            experts: 16,
            top_k: 4,
            expert_ffn: 352,
            shared_experts: 2,
            shared_ffn: 704,
            dense_layers: 1,
            renormalize: false,
        }),
        storage: Storage::F32,
        tie_embeddings: false,
    }
}

/// DeepSeek-style routing on small's width: 32 experts half the hidden width, top-4, two
/// shared experts, a dense first layer: about 740 M parameters, 190 M active.
fn deepseek_small() -> ModelConfig {
    ModelConfig {
        name: "deepseek-small".to_string(),
        vocab: 32_768,
        hidden: 1024,
        layers: 12,
        heads: 16,
        kv_heads: 16,
        ffn: 5472,
        max_seq: 2048,
        moe: Some(MoeConfig {
            experts: 32,
            top_k: 4,
            expert_ffn: 512,
            shared_experts: 2,
            shared_ffn: 1024,
            dense_layers: 1,
            renormalize: false,
        }),
        storage: Storage::Bf16,
        ..deepseek_tiny()
    }
}

/// DeepSeek-V2-Lite: 64 routed experts, top-6, two shared, the first layer dense.
fn deepseek_v2_lite() -> ModelConfig {
    ModelConfig {
        name: "deepseek-v2-lite".to_string(),
        vocab: 102_400,
        hidden: 2048,
        layers: 27,
        heads: 16,
        kv_heads: 16,
        head_dim: 128,
        ffn: 10_944,
        max_seq: 163_840,
        moe: Some(MoeConfig {
            experts: 64,
            top_k: 6,
            expert_ffn: 1408,
            shared_experts: 2,
            shared_ffn: 2816,
            dense_layers: 1,
            renormalize: false,
        }),
        storage: Storage::Bf16,
        ..deepseek_tiny()
    }
}

/// DeepSeek-V3: 256 routed experts, top-8 (renormalized), one shared, the first 3 layers
/// dense. Its sigmoid scoring and group-limited routing are modelled as plain top-k.
fn deepseek_v3() -> ModelConfig {
    ModelConfig {
        name: "deepseek-v3".to_string(),
        vocab: 129_280,
        hidden: 7168,
        layers: 61,
        heads: 128,
        kv_heads: 128,
        head_dim: 128,
        ffn: 18_432,
        max_seq: 163_840,
        moe: Some(MoeConfig {
            experts: 256,
            top_k: 8,
            expert_ffn: 2048,
            shared_experts: 1,
            shared_ffn: 2048,
            dense_layers: 3,
            renormalize: true,
        }),
        storage: Storage::Bf16,
        ..deepseek_tiny()
    }
}
