//! Tests that write small Hugging Face-style safetensors checkpoints of seeded models (dense,
//! Mixtral, Qwen2-MoE and DeepSeek naming) into a temporary directory and load shards back.

use super::*;
use crate::config::{MoeConfig, test_model, test_moe_model};
use crate::weights::shard::{Ffn, transpose};
use crate::weights::synthetic::{Synthetic, synthetic_shard};
use half::{bf16, f16};
use pinch_kernels::Storage;
use safetensors::tensor::TensorView;

/// The tensor as a checkpoint stores it: `[out, in]` for a linear layer.
fn stored(config: &ModelConfig, seed: u64, tensor: Tensor) -> (Vec<usize>, Vec<f32>) {
    let source = Synthetic { config, seed };
    let (rows, cols) = tensor.dims(config);
    match tensor {
        Tensor::FinalNorm | Tensor::AttnNorm(_) | Tensor::MlpNorm(_) => {
            (vec![cols], source.vector(tensor).unwrap())
        }
        Tensor::Embedding => (
            vec![rows, cols],
            source.block(tensor, 0..rows, 0..cols).unwrap(),
        ),
        _ => {
            let values = source.block(tensor, 0..rows, 0..cols).unwrap();
            (vec![cols, rows], transpose(&values, rows, cols))
        }
    }
}

fn encode(values: &[f32], dtype: Dtype) -> Vec<u8> {
    match dtype {
        Dtype::BF16 => values
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
            .collect(),
        Dtype::F16 => values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_le_bytes())
            .collect(),
        _ => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
    }
}

/// Writes tensors `(name, shape, bytes)` as one safetensors file.
fn write_file(path: &Path, tensors: &[(String, Vec<usize>, Vec<u8>)], dtype: Dtype) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(name, shape, bytes)| {
            (
                name.clone(),
                TensorView::new(dtype, shape.clone(), bytes).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// A checkpoint of the seeded model `config` in `files` files, leaving out `skip` and
/// overriding tensors named in `replace`.
struct Writer<'a> {
    config: &'a ModelConfig,
    seed: u64,
    dtype: Dtype,
    files: usize,
}

impl Writer<'_> {
    fn tensors(&self) -> Vec<(String, Vec<usize>, Vec<u8>)> {
        all_tensors(self.config)
            .into_iter()
            .map(|t| {
                let (shape, values) = stored(self.config, self.seed, t);
                (
                    hf_name(self.config.family, t),
                    shape,
                    encode(&values, self.dtype),
                )
            })
            .collect()
    }

    fn write_tensors(&self, dir: &Path, tensors: &[(String, Vec<usize>, Vec<u8>)]) {
        let per_file = tensors.len().div_ceil(self.files);
        for (i, chunk) in tensors.chunks(per_file).enumerate() {
            let path = dir.join(format!(
                "model-{:05}-of-{:05}.safetensors",
                i + 1,
                self.files
            ));
            write_file(&path, chunk, self.dtype);
        }
    }

    fn write(&self, dir: &Path) {
        self.write_tensors(dir, &self.tensors());
    }
}

fn f32_writer(config: &ModelConfig) -> Writer<'_> {
    Writer {
        config,
        seed: 11,
        dtype: Dtype::F32,
        files: 1,
    }
}

fn mixtral_model() -> ModelConfig {
    ModelConfig {
        family: Family::Mixtral,
        moe: Some(MoeConfig {
            shared_experts: 0,
            shared_ffn: 0,
            dense_layers: 0,
            ..test_moe_model().moe.unwrap()
        }),
        ..test_moe_model()
    }
}

fn whole(config: &ModelConfig) -> ShardSpec {
    ShardSpec::whole(config)
}

#[test]
fn a_dense_checkpoint_loads_as_the_model_it_was_written_from() {
    let config = test_model();
    let dir = tempfile::tempdir().unwrap();
    f32_writer(&config).write(dir.path());
    let loaded = load_shard(dir.path(), &config, &whole(&config)).unwrap();
    assert_eq!(
        loaded,
        synthetic_shard(&config, 11, &whole(&config)).unwrap()
    );
    let spec = ShardSpec {
        tp_rank: 1,
        tp: 2,
        ..whole(&config)
    };
    let rank = load_shard(dir.path(), &config, &spec).unwrap();
    assert_eq!(rank, synthetic_shard(&config, 11, &spec).unwrap());
}

#[test]
fn linear_weights_are_transposed_into_place() {
    let config = test_model();
    let dir = tempfile::tempdir().unwrap();
    let writer = f32_writer(&config);
    let mut tensors = writer.tensors();
    // q_proj is [out = q_dim, in = hidden]: put 7.5 at out 3, in 5.
    let q = tensors
        .iter_mut()
        .find(|t| t.0 == "model.layers.1.self_attn.q_proj.weight")
        .unwrap();
    let at = 3 * config.hidden + 5;
    q.2[4 * at..4 * at + 4].copy_from_slice(&7.5f32.to_le_bytes());
    writer.write_tensors(dir.path(), &tensors);
    let loaded = load_shard(dir.path(), &config, &whole(&config)).unwrap();
    assert_eq!(loaded.layers[1].wq.to_f32()[5 * config.q_dim() + 3], 7.5);
}

#[test]
fn a_sharded_mixtral_checkpoint_loads_expert_parallel_ranks() {
    let config = mixtral_model();
    let dir = tempfile::tempdir().unwrap();
    Writer {
        files: 3,
        ..f32_writer(&config)
    }
    .write(dir.path());
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3);
    for ep_rank in 0..2 {
        let spec = ShardSpec {
            ep_rank,
            ep: 2,
            ..whole(&config)
        };
        let loaded = load_shard(dir.path(), &config, &spec).unwrap();
        assert_eq!(loaded, synthetic_shard(&config, 11, &spec).unwrap());
    }
}

#[test]
fn mixtral_experts_are_read_from_w1_w3_and_w2() {
    let config = mixtral_model();
    let names: Vec<String> = all_tensors(&config)
        .into_iter()
        .map(|t| hf_name(config.family, t))
        .collect();
    assert!(names.contains(&"model.layers.2.block_sparse_moe.gate.weight".to_string()));
    assert!(names.contains(&"model.layers.0.block_sparse_moe.experts.3.w1.weight".to_string()));
    assert!(names.contains(&"model.layers.0.block_sparse_moe.experts.3.w3.weight".to_string()));
    assert!(names.contains(&"model.layers.0.block_sparse_moe.experts.3.w2.weight".to_string()));
    assert!(!names.iter().any(|n| n.contains("mlp.")), "{names:?}");
}

#[test]
fn deepseek_and_qwen2_moe_name_their_shared_experts_apart() {
    let deepseek = test_moe_model();
    let qwen = ModelConfig {
        family: Family::Qwen2Moe,
        ..test_moe_model()
    };
    assert_eq!(
        hf_name(deepseek.family, Tensor::Shared(1, Proj::Up)),
        "model.layers.1.mlp.shared_experts.up_proj.weight"
    );
    assert_eq!(
        hf_name(qwen.family, Tensor::Shared(1, Proj::Up)),
        "model.layers.1.mlp.shared_expert.up_proj.weight"
    );
    assert_eq!(
        hf_name(qwen.family, Tensor::Expert(2, 3, Proj::Down)),
        "model.layers.2.mlp.experts.3.down_proj.weight"
    );
    for config in [deepseek, qwen] {
        let dir = tempfile::tempdir().unwrap();
        f32_writer(&config).write(dir.path());
        let spec = ShardSpec {
            tp_rank: 1,
            tp: 2,
            ..whole(&config)
        };
        let loaded = load_shard(dir.path(), &config, &spec).unwrap();
        assert_eq!(loaded, synthetic_shard(&config, 11, &spec).unwrap());
        assert!(matches!(&loaded.layers[1].ffn, Ffn::Moe(m) if m.shared.is_some()));
    }
}

#[test]
fn bf16_and_f16_checkpoints_convert_to_the_requested_storage() {
    let config = test_moe_model();
    let dir = tempfile::tempdir().unwrap();
    Writer {
        dtype: Dtype::BF16,
        ..f32_writer(&config)
    }
    .write(dir.path());
    let spec = ShardSpec {
        storage: Storage::Bf16,
        ..whole(&config)
    };
    let loaded = load_shard(dir.path(), &config, &spec).unwrap();
    let expected = synthetic_shard(&config, 11, &spec).unwrap();
    assert_eq!(
        loaded.layers[1].wq, expected.layers[1].wq,
        "bf16 read as bf16 is exact"
    );
    let as_f32 = load_shard(dir.path(), &config, &whole(&config)).unwrap();
    assert_eq!(as_f32.layers[1].wq.storage(), Storage::F32);
    assert_eq!(as_f32.layers[1].wq.to_f32(), expected.layers[1].wq.to_f32());

    let dir = tempfile::tempdir().unwrap();
    Writer {
        dtype: Dtype::F16,
        ..f32_writer(&config)
    }
    .write(dir.path());
    let loaded = load_shard(dir.path(), &config, &whole(&config)).unwrap();
    let exact = synthetic_shard(&config, 11, &whole(&config)).unwrap();
    let (a, b) = (loaded.layers[2].wo.to_f32(), exact.layers[2].wo.to_f32());
    assert!(
        a.iter()
            .zip(&b)
            .all(|(x, y)| (x - y).abs() <= 1e-3 * y.abs().max(1e-2))
    );
    assert_ne!(a, b, "f16 rounds");
}

#[test]
fn a_tied_checkpoint_needs_no_head() {
    let config = ModelConfig {
        tie_embeddings: true,
        ..test_model()
    };
    let dir = tempfile::tempdir().unwrap();
    f32_writer(&config).write(dir.path());
    let loaded = load_shard(dir.path(), &config, &whole(&config)).unwrap();
    assert_eq!(
        loaded,
        synthetic_shard(&config, 11, &whole(&config)).unwrap()
    );
}

#[test]
fn a_missing_tensor_is_named_with_its_shape() {
    let config = test_model();
    let dir = tempfile::tempdir().unwrap();
    let writer = f32_writer(&config);
    let mut tensors = writer.tensors();
    tensors.retain(|t| t.0 != "model.layers.1.self_attn.k_proj.weight");
    writer.write_tensors(dir.path(), &tensors);
    let err = load_shard(dir.path(), &config, &whole(&config))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "tensor 'model.layers.1.self_attn.k_proj.weight' of shape [16, 32] is missing \
             from the checkpoint in '{}'",
            dir.path().display()
        )
    );
}

#[test]
fn a_checkpoint_is_checked_without_loading_it() {
    let config = mixtral_model();
    let dir = tempfile::tempdir().unwrap();
    let writer = f32_writer(&config);
    let mut tensors = writer.tensors();
    writer.write_tensors(dir.path(), &tensors);
    check_checkpoint(dir.path(), &config).unwrap();
    let other = tempfile::tempdir().unwrap();
    tensors.retain(|t| t.0 != "model.layers.1.block_sparse_moe.experts.3.w2.weight");
    writer.write_tensors(other.path(), &tensors);
    let err = check_checkpoint(other.path(), &config)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("'model.layers.1.block_sparse_moe.experts.3.w2.weight'"),
        "{err}"
    );
}

#[test]
fn a_misshapen_tensor_is_named_with_both_shapes() {
    let config = test_model();
    let dir = tempfile::tempdir().unwrap();
    let writer = f32_writer(&config);
    let mut tensors = writer.tensors();
    let down = tensors
        .iter_mut()
        .find(|t| t.0 == "model.layers.0.mlp.down_proj.weight")
        .unwrap();
    down.1 = vec![48, 32];
    writer.write_tensors(dir.path(), &tensors);
    let err = load_shard(dir.path(), &config, &whole(&config))
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("tensor 'model.layers.0.mlp.down_proj.weight' in '")
            && err.ends_with("has shape '[48, 32]' but [32, 48] was expected"),
        "{err}"
    );
}

#[test]
fn an_unreadable_dtype_is_named() {
    let config = test_model();
    let dir = tempfile::tempdir().unwrap();
    let writer = Writer {
        dtype: Dtype::I32,
        ..f32_writer(&config)
    };
    writer.write(dir.path());
    let err = load_shard(dir.path(), &config, &whole(&config))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has dtype 'I32'; pinch reads F32, BF16 and F16"),
        "{err}"
    );
}

#[test]
fn directories_without_a_readable_checkpoint_are_refused() {
    let config = test_model();
    let empty = tempfile::tempdir().unwrap();
    std::fs::write(empty.path().join("config.json"), "{}").unwrap();
    let err = load_shard(empty.path(), &config, &whole(&config))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!("no *.safetensors file in '{}'", empty.path().display())
    );
    let garbage = tempfile::tempdir().unwrap();
    std::fs::write(
        garbage.path().join("model.safetensors"),
        b"not a checkpoint",
    )
    .unwrap();
    let err = load_shard(garbage.path(), &config, &whole(&config))
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.safetensors' is unreadable"), "{err}");
    let missing = load_shard(Path::new("/nonexistent"), &config, &whole(&config));
    assert!(
        missing
            .unwrap_err()
            .to_string()
            .starts_with("cannot read '/nonexistent'")
    );
}

#[test]
fn latent_attention_checkpoints_are_refused() {
    let config = test_moe_model();
    let dir = tempfile::tempdir().unwrap();
    let writer = f32_writer(&config);
    let mut tensors = writer.tensors();
    let mla = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight".to_string();
    tensors.push((mla, vec![2], encode(&[1.0, 2.0], Dtype::F32)));
    writer.write_tensors(dir.path(), &tensors);
    let err = load_shard(dir.path(), &config, &whole(&config))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("kv_a_proj_with_mqa.weight' is multi-head latent attention"),
        "{err}"
    );
}
