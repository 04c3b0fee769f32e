//! Tests of shapes, presets, parameter counts and the parallel-degree checks.

use super::*;

#[test]
fn tiny_has_llama3_ratios_and_counts_its_parameters() {
    let tiny = preset("tiny").unwrap();
    tiny.validate().unwrap();
    assert_eq!(tiny.heads / tiny.kv_heads, 4);
    assert_eq!(tiny.q_dim(), tiny.hidden);
    // Per layer: q and o 512×512, k and v 512×128, three 512×1536 MLP matrices, two norms.
    assert_eq!(tiny.layer_param_count(0), 3_015_680);
    assert_eq!(tiny.param_count(), 8 * 3_015_680 + 2 * 4096 * 512 + 512);
    assert_eq!(tiny.active_param_count(), tiny.param_count());
    assert!(!tiny.is_moe_layer(0));
}

#[test]
fn tiny_keeps_its_exact_shape() {
    let tiny = preset("tiny").unwrap();
    let shape = (
        tiny.vocab,
        tiny.hidden,
        tiny.layers,
        tiny.heads,
        tiny.kv_heads,
        tiny.head_dim,
        tiny.ffn,
        tiny.max_seq,
    );
    assert_eq!(shape, (4096, 512, 8, 8, 2, 64, 1536, 256));
    assert_eq!((tiny.rope_theta, tiny.norm_eps), (500_000.0, 1e-5));
    assert_eq!((tiny.moe, tiny.tie_embeddings), (None, false));
}

#[test]
fn every_listed_preset_exists_and_is_valid() {
    let all = presets();
    assert_eq!(all.len(), PRESETS.len());
    for (config, name) in all.iter().zip(PRESETS) {
        assert_eq!(&config.name, name);
        config.validate().unwrap();
        config.validate_tp(1).unwrap();
        config.validate_tp(2).unwrap();
    }
}

#[test]
fn published_presets_have_their_published_sizes() {
    let billions = |name: &str| {
        let c = preset(name).unwrap();
        (
            c.param_count() as f64 / 1e9,
            c.active_param_count() as f64 / 1e9,
        )
    };
    let near = |got: f64, want: f64| (got / want - 1.0).abs() < 0.02;
    let (total, _) = billions("llama3-8b");
    assert!(near(total, 8.03), "{total}");
    let (total, _) = billions("llama3-70b");
    assert!(near(total, 70.55), "{total}");
    let (total, _) = billions("llama3-405b");
    assert!(near(total, 405.8), "{total}");
    let (total, active) = billions("mixtral-8x7b");
    assert!(
        near(total, 46.70) && near(active, 12.88),
        "{total} {active}"
    );
    let (total, active) = billions("mixtral-8x22b");
    assert!(near(total, 140.6) && near(active, 39.2), "{total} {active}");
}

#[test]
fn small_presets_stay_runnable_on_a_cpu() {
    let small = preset("small").unwrap();
    let f32_bytes = 4 * small.param_count();
    assert!(
        (500_000_000..1_000_000_000).contains(&f32_bytes),
        "{f32_bytes}"
    );
    for name in ["moe-tiny", "deepseek-tiny"] {
        let c = preset(name).unwrap();
        assert_eq!(c.vocab, 4096);
        assert!(c.param_count() < 100_000_000, "{name}: {}", c.param_count());
    }
}

#[test]
fn moe_counts_all_experts_but_activates_top_k_and_shared() {
    let c = test_moe_model();
    c.validate().unwrap();
    let (h, moe) = (c.hidden as u64, c.moe.clone().unwrap());
    assert!(!c.is_moe_layer(0) && c.is_moe_layer(1) && c.is_moe_layer(2));
    assert!(!c.is_moe_layer(3), "past the last layer");
    assert_eq!(c.moe_layer_count(), 2);
    let attention = (2 * c.hidden * c.q_dim() + 2 * c.hidden * c.kv_dim()) as u64;
    let mlp = |width: usize| 3 * h * width as u64;
    let router = h * moe.experts as u64;
    let dense_layer = attention + 2 * h + mlp(c.ffn);
    let moe_layer = |routed: usize| {
        attention + 2 * h + routed as u64 * mlp(moe.expert_ffn) + mlp(moe.shared_ffn) + router
    };
    assert_eq!(c.layer_param_count(0), dense_layer);
    assert_eq!(c.layer_param_count(1), moe_layer(4));
    let outside = 2 * (c.vocab as u64) * h + h;
    assert_eq!(c.param_count(), outside + dense_layer + 2 * moe_layer(4));
    assert_eq!(
        c.active_param_count(),
        outside + dense_layer + 2 * moe_layer(2)
    );
}

#[test]
fn a_tied_head_is_counted_once() {
    let tiny = preset("tiny").unwrap();
    let tied = ModelConfig {
        tie_embeddings: true,
        ..tiny.clone()
    };
    let table = (tiny.vocab * tiny.hidden) as u64;
    assert_eq!(tied.param_count(), tiny.param_count() - table);
}

#[test]
fn norms_and_routers_are_counted_as_f32() {
    let c = test_moe_model();
    let split = c.param_split();
    let h = c.hidden as u64;
    // Two norms per layer, the final norm, one router per MoE layer.
    assert_eq!(split.f32, 2 * 3 * h + h + 2 * h * 4);
    assert_eq!(split.total(), c.param_count());
}

#[test]
fn weight_bytes_price_matrices_by_storage_and_the_rest_as_f32() {
    let c = test_moe_model();
    let split = c.param_split();
    assert_eq!(c.weight_bytes(Storage::F32), 4 * c.param_count());
    assert_eq!(
        c.weight_bytes(Storage::Bf16),
        2 * split.matrix + 4 * split.f32
    );
}

#[test]
fn tiny_presets_default_to_f32_and_the_rest_to_bf16() {
    for config in presets() {
        let want = if config.name.ends_with("tiny") {
            Storage::F32
        } else {
            Storage::Bf16
        };
        assert_eq!(config.storage, want, "{}", config.name);
    }
}

#[test]
fn unknown_preset_is_named_with_the_known_ones() {
    let err = preset("enormous").unwrap_err().to_string();
    assert!(
        err.starts_with("unknown preset 'enormous'; known presets: tiny, small, llama3-8b"),
        "{err}"
    );
    assert!(err.ends_with("deepseek-v3"), "{err}");
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
        vocab: 4098 * 6,
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
fn tp_must_divide_the_vocabulary_and_expert_widths() {
    let odd_vocab = ModelConfig {
        vocab: 4097,
        ..preset("tiny").unwrap()
    };
    let err = odd_vocab.validate_tp(2).unwrap_err().to_string();
    assert!(err.contains("4097 vocabulary rows"), "{err}");
    let mut odd_expert = test_moe_model();
    if let Some(moe) = odd_expert.moe.as_mut() {
        moe.expert_ffn = 17;
    }
    let err = odd_expert.validate_tp(2).unwrap_err().to_string();
    assert!(err.contains("17 expert ffn columns"), "{err}");
    let mut odd_shared = test_moe_model();
    if let Some(moe) = odd_shared.moe.as_mut() {
        moe.shared_ffn = 25;
    }
    let err = odd_shared.validate_tp(2).unwrap_err().to_string();
    assert!(err.contains("25 shared-expert ffn columns"), "{err}");
}

#[test]
fn an_all_moe_model_ignores_its_unused_dense_width() {
    let mut c = preset("moe-tiny").unwrap();
    c.ffn = 1000 + 1;
    c.validate_tp(2).unwrap();
}

#[test]
fn ep_needs_moe_and_whole_experts_per_rank() {
    let moe = preset("moe-tiny").unwrap();
    moe.validate_ep(1).unwrap();
    moe.validate_ep(2).unwrap();
    moe.validate_ep(8).unwrap();
    let err = moe.validate_ep(3).unwrap_err().to_string();
    assert_eq!(
        err,
        "expert-parallel degree '3' does not divide the 8 experts of model 'moe-tiny'"
    );
    let dense = preset("tiny").unwrap();
    dense.validate_ep(1).unwrap();
    let err = dense.validate_ep(2).unwrap_err().to_string();
    assert_eq!(
        err,
        "expert-parallel degree '2' needs a mixture-of-experts model but 'tiny' is dense"
    );
    let err = moe.validate_ep(0).unwrap_err().to_string();
    assert_eq!(err, "expert-parallel degree '0' must be at least 1");
}

#[test]
fn pp_gives_every_stage_a_layer() {
    let tiny = preset("tiny").unwrap();
    tiny.validate_pp(1).unwrap();
    tiny.validate_pp(8).unwrap();
    let err = tiny.validate_pp(9).unwrap_err().to_string();
    assert_eq!(
        err,
        "pipeline-parallel degree '9' exceeds the 8 layers of model 'tiny'"
    );
    assert!(tiny.validate_pp(0).is_err());
}

#[test]
fn stages_are_contiguous_and_earlier_ones_take_the_extra_layers() {
    let c = ModelConfig {
        layers: 10,
        ..preset("tiny").unwrap()
    };
    let stages: Vec<_> = (0..4).map(|s| c.stage_layers(s, 4)).collect();
    assert_eq!(stages, vec![0..3, 3..6, 6..8, 8..10]);
    assert_eq!(c.stage_layers(0, 1), 0..10);
    let ten: Vec<_> = (0..10).map(|s| c.stage_layers(s, 10)).collect();
    assert!(ten.iter().enumerate().all(|(s, r)| *r == (s..s + 1)));
    assert_eq!(c.stage_layers(4, 4), 10..10);
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
fn malformed_moe_parts_are_refused_naming_the_value() {
    let with = |change: fn(&mut MoeConfig)| {
        let mut c = test_moe_model();
        if let Some(moe) = c.moe.as_mut() {
            change(moe);
        }
        c.validate().unwrap_err().to_string()
    };
    let err = with(|m| m.top_k = 5);
    assert_eq!(
        err,
        "model 'small-moe' is malformed: its top-k '5' is not between 1 and its 4 experts"
    );
    assert!(with(|m| m.top_k = 0).contains("top-k '0'"));
    assert!(with(|m| m.experts = 0).contains("0 experts"));
    assert!(with(|m| m.shared_ffn = 0).contains("width of '0'"));
    assert!(with(|m| m.dense_layers = 3).contains("'3' dense layers"));
}

#[test]
fn config_round_trips_through_json() {
    for config in [preset("tiny").unwrap(), preset("deepseek-v3").unwrap()] {
        let text = serde_json::to_string(&config).unwrap();
        let back: ModelConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, config);
    }
    let text = serde_json::to_string(&preset("moe-tiny").unwrap()).unwrap();
    assert!(text.contains("\"family\":\"mixtral\""), "{text}");
    assert!(text.contains("\"top_k\":2"), "{text}");
}

#[test]
fn a_config_written_before_moe_still_reads_as_dense_llama() {
    let old = r#"{"name":"tiny","vocab":4096,"hidden":512,"layers":8,"heads":8,"kv_heads":2,
        "head_dim":64,"ffn":1536,"rope_theta":500000.0,"norm_eps":1e-5,"max_seq":256}"#;
    let back: ModelConfig = serde_json::from_str(old).unwrap();
    assert_eq!(back, preset("tiny").unwrap());
}
