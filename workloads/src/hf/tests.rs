//! Tests of `from_hf_config` on trimmed copies of published configs, one per model type.

use super::*;

/// Writes `json` as `<tempdir>/<model>/config.json` and reads it back.
fn read(model: &str, json: &str) -> Result<ModelConfig, WorkloadError> {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), model, json);
    from_hf_config(&path)
}

fn write(root: &Path, model: &str, json: &str) -> PathBuf {
    let dir = root.join(model);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.json");
    std::fs::write(&path, json).unwrap();
    path
}

const LLAMA3_8B: &str = r#"{
  "architectures": ["LlamaForCausalLM"], "model_type": "llama",
  "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
  "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256,
  "max_position_embeddings": 8192, "rms_norm_eps": 1e-05, "rope_theta": 500000.0,
  "tie_word_embeddings": false, "torch_dtype": "bfloat16", "hidden_act": "silu"
}"#;

#[test]
fn llama3_8b_reads_as_the_preset() {
    let config = read("Meta-Llama-3-8B", LLAMA3_8B).unwrap();
    let preset = crate::config::preset("llama3-8b").unwrap();
    assert_eq!(config.name, "Meta-Llama-3-8B");
    assert_eq!(
        ModelConfig {
            name: preset.name.clone(),
            ..config
        },
        preset
    );
}

#[test]
fn llama_defaults_are_the_transformers_ones() {
    let minimal = r#"{"model_type": "llama", "hidden_size": 256, "intermediate_size": 688,
        "num_hidden_layers": 2, "num_attention_heads": 4, "vocab_size": 1000}"#;
    let c = read("m", minimal).unwrap();
    assert_eq!(
        (c.kv_heads, c.head_dim),
        (4, 64),
        "kv heads default to heads"
    );
    assert_eq!(
        (c.rope_theta, c.norm_eps, c.max_seq),
        (10_000.0, 1e-6, 2048)
    );
    assert!(!c.tie_embeddings);
    assert_eq!(c.storage, Storage::Bf16);
    assert_eq!((c.family, c.moe), (Family::Llama, None));
}

#[test]
fn mistral_takes_an_explicit_head_dim_and_its_own_defaults() {
    let json = r#"{"model_type": "mistral", "hidden_size": 5120, "intermediate_size": 14336,
        "num_hidden_layers": 40, "num_attention_heads": 32, "head_dim": 128,
        "vocab_size": 131072, "torch_dtype": "float32"}"#;
    let c = read("Mistral-Nemo", json).unwrap();
    assert_eq!(
        (c.head_dim, c.q_dim()),
        (128, 4096),
        "head_dim is not hidden / heads"
    );
    assert_eq!((c.kv_heads, c.max_seq), (8, 131_072));
    assert_eq!((c.family, c.storage), (Family::Mistral, Storage::F32));
}

#[test]
fn qwen2_reads_tied_embeddings() {
    let json = r#"{"model_type": "qwen2", "hidden_size": 896, "intermediate_size": 4864,
        "num_hidden_layers": 24, "num_attention_heads": 14, "num_key_value_heads": 2,
        "vocab_size": 151936, "max_position_embeddings": 131072, "rope_theta": 1000000.0,
        "tie_word_embeddings": true, "sliding_window": null, "use_sliding_window": false}"#;
    let c = read("Qwen2-0.5B", json).unwrap();
    assert_eq!((c.family, c.head_dim, c.kv_heads), (Family::Qwen2, 64, 2));
    assert!(c.tie_embeddings);
    assert_eq!(c.rope_theta, 1e6);
}

#[test]
fn mixtral_routes_top_2_of_8_renormalized() {
    let json = r#"{"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
        "vocab_size": 32000, "max_position_embeddings": 32768, "num_local_experts": 8,
        "num_experts_per_tok": 2, "rope_theta": 1e6, "rms_norm_eps": 1e-5}"#;
    let c = read("Mixtral-8x7B-v0.1", json).unwrap();
    let preset = crate::config::preset("mixtral-8x7b").unwrap();
    assert_eq!(c.moe, preset.moe);
    assert_eq!(c.param_count(), preset.param_count());
    assert_eq!(c.family, Family::Mixtral);
}

#[test]
fn qwen2_moe_has_one_wide_shared_expert() {
    let json = r#"{"model_type": "qwen2_moe", "hidden_size": 2048, "intermediate_size": 5632,
        "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16,
        "vocab_size": 151936, "num_experts": 60, "num_experts_per_tok": 4,
        "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632,
        "norm_topk_prob": false, "decoder_sparse_step": 1, "mlp_only_layers": []}"#;
    let c = read("Qwen1.5-MoE-A2.7B", json).unwrap();
    let moe = c.moe.clone().unwrap();
    assert_eq!((moe.experts, moe.top_k, moe.expert_ffn), (60, 4, 1408));
    assert_eq!((moe.shared_experts, moe.shared_ffn), (1, 5632));
    assert_eq!((moe.dense_layers, moe.renormalize), (0, false));
    // Published: 14.3 B parameters, 2.7 B active.
    let billions = |n: u64| n as f64 / 1e9;
    assert!((billions(c.param_count()) - 14.3).abs() < 0.2);
    assert!((billions(c.active_param_count()) - 2.7).abs() < 0.2);
}

#[test]
fn qwen2_moe_dense_first_layers_are_read_and_other_patterns_refused() {
    let json = |extra: &str| {
        format!(
            r#"{{"model_type": "qwen2_moe", "hidden_size": 64, "intermediate_size": 128,
            "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 4,
            "vocab_size": 100 {extra}}}"#
        )
    };
    let c = read("q", &json(r#", "mlp_only_layers": [1, 0]"#)).unwrap();
    assert_eq!(c.moe.unwrap().dense_layers, 2);
    let err = read("q", &json(r#", "mlp_only_layers": [2]"#))
        .unwrap_err()
        .to_string();
    assert!(err.contains("mlp_only_layers '[2]'"), "{err}");
    let err = read("q", &json(r#", "decoder_sparse_step": 2"#))
        .unwrap_err()
        .to_string();
    assert!(err.contains("decoder_sparse_step '2'"), "{err}");
    let dense = read("q", &json(r#", "num_experts": 0"#)).unwrap();
    assert_eq!(dense.moe, None);
}

const DEEPSEEK_V2_LITE: &str = r#"{
  "model_type": "deepseek_v2", "hidden_size": 2048, "intermediate_size": 10944,
  "num_hidden_layers": 27, "num_attention_heads": 16, "num_key_value_heads": 16,
  "vocab_size": 102400, "max_position_embeddings": 163840, "kv_lora_rank": 512,
  "q_lora_rank": null, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
  "n_routed_experts": 64, "n_shared_experts": 2, "num_experts_per_tok": 6,
  "moe_intermediate_size": 1408, "first_k_dense_replace": 1, "moe_layer_freq": 1,
  "norm_topk_prob": false, "topk_method": "greedy", "rope_theta": 10000,
  "rope_scaling": {"type": "yarn", "factor": 40}, "torch_dtype": "bfloat16"
}"#;

#[test]
fn deepseek_v2_lite_reads_as_the_preset() {
    let c = read("deepseek-v2-lite", DEEPSEEK_V2_LITE).unwrap();
    assert_eq!(c, crate::config::preset("deepseek-v2-lite").unwrap());
}

#[test]
fn deepseek_v2_without_routed_experts_is_dense_and_with_them_needs_top_k() {
    let dense = DEEPSEEK_V2_LITE.replace(r#""n_routed_experts": 64,"#, "");
    assert_eq!(read("d", &dense).unwrap().moe, None);
    let no_top_k = DEEPSEEK_V2_LITE.replace(r#""num_experts_per_tok": 6,"#, "");
    let err = read("d", &no_top_k).unwrap_err().to_string();
    assert!(err.contains("'num_experts_per_tok' is missing"), "{err}");
    let sparse_every_2 =
        DEEPSEEK_V2_LITE.replace(r#""moe_layer_freq": 1"#, r#""moe_layer_freq": 2"#);
    let err = read("d", &sparse_every_2).unwrap_err().to_string();
    assert!(err.contains("moe_layer_freq '2'"), "{err}");
}

#[test]
fn deepseek_v3_defaults_fill_what_its_config_leaves_out() {
    let json = r#"{"model_type": "deepseek_v3", "hidden_size": 7168, "intermediate_size": 18432,
        "num_hidden_layers": 61, "num_attention_heads": 128, "vocab_size": 129280,
        "max_position_embeddings": 163840, "n_group": 8, "topk_group": 4,
        "scoring_func": "sigmoid"}"#;
    let c = read("DeepSeek-V3", json).unwrap();
    let preset = crate::config::preset("deepseek-v3").unwrap();
    assert_eq!(c.moe, preset.moe);
    assert_eq!((c.kv_heads, c.head_dim), (128, 128));
    assert_eq!(c.param_count(), preset.param_count());
}

#[test]
fn an_unknown_model_type_is_named_with_the_known_ones() {
    let err = read("g", r#"{"model_type": "gpt2", "n_embd": 768}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model_type 'gpt2' is unknown"), "{err}");
    assert!(
        err.ends_with("known: llama, mistral, mixtral, qwen2, qwen2_moe, deepseek_v2, deepseek_v3"),
        "{err}"
    );
    assert!(err.contains("g/config.json"), "{err}");
}

#[test]
fn a_missing_field_is_named_with_the_file() {
    let json = LLAMA3_8B.replace(r#""hidden_size": 4096,"#, "");
    let err = read("m", &json).unwrap_err().to_string();
    assert!(err.contains("m/config.json"), "{err}");
    assert!(err.contains("missing field `hidden_size`"), "{err}");
}

#[test]
fn a_wrongly_typed_field_is_named_with_the_file() {
    let json = LLAMA3_8B.replace(
        r#""num_key_value_heads": 8"#,
        r#""num_key_value_heads": "8""#,
    );
    let err = read("m", &json).unwrap_err().to_string();
    assert!(err.contains("m/config.json"), "{err}");
    assert!(
        err.contains("field 'num_key_value_heads': invalid type"),
        "{err}"
    );
    let negative = LLAMA3_8B.replace(r#""vocab_size": 128256"#, r#""vocab_size": -1"#);
    let err = read("m", &negative).unwrap_err().to_string();
    assert!(err.contains("field 'vocab_size'"), "{err}");
}

#[test]
fn files_that_are_not_configs_are_refused() {
    let err = read("m", "{ not json").unwrap_err().to_string();
    assert!(err.contains("not JSON"), "{err}");
    let err = read("m", r#"{"hidden_size": 1}"#).unwrap_err().to_string();
    assert!(err.contains("no string field 'model_type'"), "{err}");
    let missing = from_hf_config(Path::new("/nonexistent/config.json"))
        .unwrap_err()
        .to_string();
    assert!(
        missing.starts_with("cannot read '/nonexistent/config.json'"),
        "{missing}"
    );
}

#[test]
fn a_config_describing_an_impossible_shape_is_refused() {
    let json = LLAMA3_8B.replace(r#""num_key_value_heads": 8"#, r#""num_key_value_heads": 5"#);
    let err = read("m", &json).unwrap_err().to_string();
    assert!(err.contains("'5' key-value heads"), "{err}");
}
