//! End-to-end: a model from a Hugging Face config.json and a safetensors checkpoint, and the
//! one-line errors for an architecture pinch does not know or a tensor that does not fit.

// Test helpers panic with the value in view, as the tests themselves do.
#![allow(clippy::unwrap_used)]

mod common;

use common::{pinch, report_json, run, stderr_of};
use safetensors::{Dtype, tensor::TensorView};
use std::path::Path;

const CONFIG: &str = r#"{
  "model_type": "llama",
  "hidden_size": 64,
  "intermediate_size": 128,
  "num_hidden_layers": 2,
  "num_attention_heads": 4,
  "num_key_value_heads": 2,
  "vocab_size": 256,
  "max_position_embeddings": 128,
  "rms_norm_eps": 1e-5,
  "rope_theta": 10000.0,
  "torch_dtype": "float32"
}"#;

/// Every tensor of the config above, Hugging Face names and `[out, in]` shapes, values from a
/// simple deterministic pattern; `skip` leaves one out and `bend` gives one a wrong shape.
fn write_checkpoint(dir: &Path, skip: Option<&str>, bend: Option<&str>) {
    let (h, f, v, kv) = (64usize, 128usize, 256usize, 32usize);
    let mut tensors: Vec<(String, Vec<usize>)> = vec![
        ("model.embed_tokens.weight".into(), vec![v, h]),
        ("model.norm.weight".into(), vec![h]),
        ("lm_head.weight".into(), vec![v, h]),
    ];
    for l in 0..2 {
        let name = |rest: &str| format!("model.layers.{l}.{rest}.weight");
        tensors.extend([
            (name("input_layernorm"), vec![h]),
            (name("self_attn.q_proj"), vec![h, h]),
            (name("self_attn.k_proj"), vec![kv, h]),
            (name("self_attn.v_proj"), vec![kv, h]),
            (name("self_attn.o_proj"), vec![h, h]),
            (name("post_attention_layernorm"), vec![h]),
            (name("mlp.gate_proj"), vec![f, h]),
            (name("mlp.up_proj"), vec![f, h]),
            (name("mlp.down_proj"), vec![h, f]),
        ]);
    }
    tensors.retain(|(name, _)| Some(name.as_str()) != skip);
    for (name, shape) in &mut tensors {
        if Some(name.as_str()) == bend {
            shape[0] += 1;
        }
    }
    let data: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, shape)| {
            let n: usize = shape.iter().product();
            (0..n)
                .flat_map(|i| (((i * 37 % 101) as f32 - 50.0) / 400.0).to_le_bytes())
                .collect()
        })
        .collect();
    let views: Vec<(String, TensorView)> = tensors
        .iter()
        .zip(&data)
        .map(|((name, shape), bytes)| {
            (
                name.clone(),
                TensorView::new(Dtype::F32, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
}

fn model_dir(skip: Option<&str>, bend: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("config.json"), CONFIG).unwrap();
    write_checkpoint(dir.path(), skip, bend);
    dir
}

#[test]
fn a_hugging_face_model_with_real_weights_serves() {
    let model = model_dir(None, None);
    let out = model.path().join("run");
    let config = model.path().join("config.json");
    run(
        &out,
        &[
            "--nodes=1",
            "--parallel=tp=2",
            &format!("--model-config={}", config.display()),
            &format!("--weights={}", model.path().display()),
        ],
    )
    .success();
    let report = report_json(&out);
    assert_eq!(report["serving"]["requests"], 6);
    let name = model.path().file_name().unwrap().to_str().unwrap();
    assert_eq!(report["run"]["model"], name, "named after its directory");
}

fn fails_with_code_2(args: &[String], names: &str) {
    let assert = pinch().args(args).assert().code(2);
    let stderr = stderr_of(&assert);
    assert!(stderr.contains(names), "stderr names '{names}':\n{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "one line:\n{stderr}");
}

#[test]
fn an_unknown_architecture_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.json");
    std::fs::write(&config, CONFIG.replace("\"llama\"", "\"gpt2\"")).unwrap();
    fails_with_code_2(
        &["run".into(), format!("--model-config={}", config.display())],
        "'gpt2'",
    );
}

#[test]
fn missing_and_misshapen_tensors_are_named() {
    for (skip, bend, names) in [
        (
            Some("model.layers.1.mlp.up_proj.weight"),
            None,
            "'model.layers.1.mlp.up_proj.weight'",
        ),
        (
            None,
            Some("model.layers.0.self_attn.k_proj.weight"),
            "'[33, 64]'",
        ),
    ] {
        let model = model_dir(skip, bend);
        let config = model.path().join("config.json");
        fails_with_code_2(
            &[
                "run".into(),
                format!("--model-config={}", config.display()),
                format!("--weights={}", model.path().display()),
            ],
            names,
        );
    }
}
