//! Reads one rank's shard from a Hugging Face safetensors checkpoint: every `*.safetensors`
//! file of a directory (sharded checkpoints), memory-mapped, so a rank reads only the bytes of
//! the slices it holds.
//!
//! Tensor names are Hugging Face's (`model.layers.N.self_attn.q_proj.weight`, Mixtral's
//! `block_sparse_moe.experts.E.w1`, Qwen2-MoE's `mlp.shared_expert`, DeepSeek's
//! `mlp.shared_experts`, ...). Linear weights are stored `[out, in]` there and transposed to
//! pinch's `[in, out]`; F32, BF16 and F16 are read and stored as the spec asks. Tensors pinch
//! does not model (attention biases, Qwen2-MoE's shared-expert gate) are left unread.
//! DeepSeek's multi-head latent attention has no ordinary q/k/v projections, so such
//! checkpoints are refused.

use super::shard::{ShardSpec, ShardWeights, assemble};
use super::source::{Proj, Source, Tensor};
use crate::config::{Family, ModelConfig};
use crate::error::WorkloadError;
use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// The shard `spec` of `config` read from the safetensors files in `dir`.
pub fn load_shard(
    dir: &Path,
    config: &ModelConfig,
    spec: &ShardSpec,
) -> Result<ShardWeights, WorkloadError> {
    let maps = map_files(dir)?;
    let checkpoint = Checkpoint::index(dir, config, &maps)?;
    checkpoint.refuse_latent_attention()?;
    assemble(config, spec, &checkpoint)
}

/// Checks, without reading any weight, that the checkpoint in `dir` has every tensor `config`
/// needs, each of the expected shape and a dtype pinch reads: what a run checks before any rank
/// starts, so a broken checkpoint is one line of bad input and not a failed run.
pub fn check_checkpoint(dir: &Path, config: &ModelConfig) -> Result<(), WorkloadError> {
    let maps = map_files(dir)?;
    let checkpoint = Checkpoint::index(dir, config, &maps)?;
    checkpoint.refuse_latent_attention()?;
    for tensor in all_tensors(config) {
        let (height, width) = tensor.dims(config);
        let shape = match tensor {
            Tensor::Embedding => vec![height, width],
            Tensor::FinalNorm | Tensor::AttnNorm(_) | Tensor::MlpNorm(_) => vec![width],
            _ => vec![width, height],
        };
        checkpoint.view(&hf_name(config.family, tensor), &shape)?;
    }
    Ok(())
}

/// Every full tensor of `config`'s model, in checkpoint order.
fn all_tensors(config: &ModelConfig) -> Vec<Tensor> {
    let mut tensors = vec![Tensor::Embedding, Tensor::FinalNorm];
    if !config.tie_embeddings {
        tensors.push(Tensor::LmHead);
    }
    let projs = [Proj::Gate, Proj::Up, Proj::Down];
    for l in 0..config.layers {
        tensors.extend([
            Tensor::AttnNorm(l),
            Tensor::Wq(l),
            Tensor::Wk(l),
            Tensor::Wv(l),
            Tensor::Wo(l),
            Tensor::MlpNorm(l),
        ]);
        match config.moe.as_ref().filter(|_| config.is_moe_layer(l)) {
            None => tensors.extend(projs.map(|p| Tensor::Mlp(l, p))),
            Some(moe) => {
                tensors.push(Tensor::Router(l));
                for e in 0..moe.experts {
                    tensors.extend(projs.map(|p| Tensor::Expert(l, e, p)));
                }
                if moe.shared_ffn > 0 {
                    tensors.extend(projs.map(|p| Tensor::Shared(l, p)));
                }
            }
        }
    }
    tensors
}

/// Every `*.safetensors` file in `dir`, in name order, memory-mapped.
fn map_files(dir: &Path) -> Result<Vec<(PathBuf, Mmap)>, WorkloadError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| WorkloadError::Io { path, source }
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io(dir))?
        .map(|entry| entry.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io(dir))?;
    paths.retain(|p| p.extension().is_some_and(|ext| ext == "safetensors"));
    paths.sort();
    if paths.is_empty() {
        return Err(WorkloadError::NoCheckpoint {
            dir: dir.to_path_buf(),
        });
    }
    paths
        .into_iter()
        .map(|path| {
            let file = std::fs::File::open(&path).map_err(io(&path))?;
            // SAFETY: the map is read-only and lives only while this shard is loaded; a
            // checkpoint is not rewritten while a run reads it (if it were, values could
            // change under us, but no memory outside the map is touched).
            let map = unsafe { Mmap::map(&file) }.map_err(io(&path))?;
            Ok((path, map))
        })
        .collect()
}

/// The tensors of all files of a checkpoint, by name.
struct Checkpoint<'a> {
    dir: &'a Path,
    config: &'a ModelConfig,
    tensors: HashMap<String, (&'a Path, TensorView<'a>)>,
}

impl<'a> Checkpoint<'a> {
    fn index(
        dir: &'a Path,
        config: &'a ModelConfig,
        maps: &'a [(PathBuf, Mmap)],
    ) -> Result<Checkpoint<'a>, WorkloadError> {
        let mut tensors = HashMap::new();
        for (path, map) in maps {
            let file =
                SafeTensors::deserialize(map).map_err(|err| WorkloadError::CheckpointFile {
                    path: path.clone(),
                    problem: err.to_string(),
                })?;
            for (name, view) in file.tensors() {
                tensors.entry(name).or_insert((path.as_path(), view));
            }
        }
        Ok(Checkpoint {
            dir,
            config,
            tensors,
        })
    }

    fn refuse_latent_attention(&self) -> Result<(), WorkloadError> {
        match self
            .tensors
            .keys()
            .find(|name| name.contains("kv_a_proj_with_mqa"))
        {
            Some(name) => Err(WorkloadError::UnsupportedCheckpoint {
                dir: self.dir.to_path_buf(),
                problem: format!(
                    "tensor '{name}' is multi-head latent attention, which pinch models as \
                     ordinary attention and cannot load"
                ),
            }),
            None => Ok(()),
        }
    }

    /// The tensor `name`, checked to have `shape` and a dtype pinch reads.
    fn view(&self, name: &str, shape: &[usize]) -> Result<Elements<'a>, WorkloadError> {
        let Some((path, view)) = self.tensors.get(name) else {
            return Err(WorkloadError::MissingTensor {
                name: name.to_string(),
                shape: format!("{shape:?}"),
                dir: self.dir.to_path_buf(),
            });
        };
        if view.shape() != shape {
            return Err(WorkloadError::TensorShape {
                name: name.to_string(),
                path: path.to_path_buf(),
                found: format!("{:?}", view.shape()),
                expected: format!("{shape:?}"),
            });
        }
        let kind = match view.dtype() {
            Dtype::F32 => Kind::F32,
            Dtype::BF16 => Kind::Bf16,
            Dtype::F16 => Kind::F16,
            other => {
                return Err(WorkloadError::TensorDtype {
                    name: name.to_string(),
                    path: path.to_path_buf(),
                    dtype: other.to_string(),
                });
            }
        };
        Ok(Elements {
            kind,
            data: view.data(),
        })
    }
}

impl Source for Checkpoint<'_> {
    fn block(
        &self,
        tensor: Tensor,
        rows: Range<usize>,
        cols: Range<usize>,
    ) -> Result<Vec<f32>, WorkloadError> {
        let (height, width) = tensor.dims(self.config);
        let name = hf_name(self.config.family, tensor);
        if tensor == Tensor::Embedding {
            let elements = self.view(&name, &[height, width])?;
            return Ok(elements.block(width, rows, cols));
        }
        // A linear weight is [out, in] in the file: pinch's block is the transpose of the
        // file's block (cols × rows).
        let elements = self.view(&name, &[width, height])?;
        let stored = elements.block(height, cols.clone(), rows.clone());
        Ok(super::shard::transpose(&stored, cols.len(), rows.len()))
    }

    fn vector(&self, tensor: Tensor) -> Result<Vec<f32>, WorkloadError> {
        let (_, len) = tensor.dims(self.config);
        let name = hf_name(self.config.family, tensor);
        let elements = self.view(&name, &[len])?;
        Ok(elements.block(len, 0..1, 0..len))
    }
}

/// The element types pinch reads.
#[derive(Clone, Copy, Debug)]
enum Kind {
    F32,
    Bf16,
    F16,
}

/// The raw little-endian elements of one tensor (safetensors checked that `data` holds
/// exactly its shape's elements).
struct Elements<'a> {
    kind: Kind,
    data: &'a [u8],
}

impl Elements<'_> {
    /// The block `rows × cols` of this row-major tensor, `width` wide, as f32.
    fn block(&self, width: usize, rows: Range<usize>, cols: Range<usize>) -> Vec<f32> {
        let mut out = Vec::with_capacity(rows.len() * cols.len());
        for row in rows {
            let start = row * width;
            out.extend(cols.clone().map(|col| self.get(start + col)));
        }
        out
    }

    fn get(&self, index: usize) -> f32 {
        match self.kind {
            Kind::F32 => {
                let b = &self.data[4 * index..4 * index + 4];
                f32::from_le_bytes([b[0], b[1], b[2], b[3]])
            }
            Kind::Bf16 => {
                let b = &self.data[2 * index..2 * index + 2];
                half::bf16::from_le_bytes([b[0], b[1]]).to_f32()
            }
            Kind::F16 => {
                let b = &self.data[2 * index..2 * index + 2];
                half::f16::from_le_bytes([b[0], b[1]]).to_f32()
            }
        }
    }
}

/// The Hugging Face name of `tensor` in a checkpoint of `family`.
fn hf_name(family: Family, tensor: Tensor) -> String {
    let layer = |l: usize, rest: &str| format!("model.layers.{l}.{rest}.weight");
    match tensor {
        Tensor::Embedding => "model.embed_tokens.weight".to_string(),
        Tensor::FinalNorm => "model.norm.weight".to_string(),
        Tensor::LmHead => "lm_head.weight".to_string(),
        Tensor::AttnNorm(l) => layer(l, "input_layernorm"),
        Tensor::Wq(l) => layer(l, "self_attn.q_proj"),
        Tensor::Wk(l) => layer(l, "self_attn.k_proj"),
        Tensor::Wv(l) => layer(l, "self_attn.v_proj"),
        Tensor::Wo(l) => layer(l, "self_attn.o_proj"),
        Tensor::MlpNorm(l) => layer(l, "post_attention_layernorm"),
        Tensor::Mlp(l, proj) => layer(l, &format!("mlp.{}", proj_name(proj))),
        Tensor::Router(l) if family == Family::Mixtral => layer(l, "block_sparse_moe.gate"),
        Tensor::Router(l) => layer(l, "mlp.gate"),
        Tensor::Expert(l, e, proj) if family == Family::Mixtral => layer(
            l,
            &format!("block_sparse_moe.experts.{e}.{}", mixtral_name(proj)),
        ),
        Tensor::Expert(l, e, proj) => layer(l, &format!("mlp.experts.{e}.{}", proj_name(proj))),
        Tensor::Shared(l, proj) if family == Family::Qwen2Moe => {
            layer(l, &format!("mlp.shared_expert.{}", proj_name(proj)))
        }
        Tensor::Shared(l, proj) => layer(l, &format!("mlp.shared_experts.{}", proj_name(proj))),
    }
}

fn proj_name(proj: Proj) -> &'static str {
    match proj {
        Proj::Gate => "gate_proj",
        Proj::Up => "up_proj",
        Proj::Down => "down_proj",
    }
}

/// Mixtral's expert matrices: w1 gates, w3 goes up, w2 comes down.
fn mixtral_name(proj: Proj) -> &'static str {
    match proj {
        Proj::Gate => "w1",
        Proj::Up => "w3",
        Proj::Down => "w2",
    }
}

#[cfg(test)]
mod tests;
