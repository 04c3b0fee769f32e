//! What can go wrong before or during a workload run; every message names the offending value.

use crate::comm::CommError;
use pinch_kernels::KernelError;
use std::path::PathBuf;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum WorkloadError {
    #[error("unknown preset '{name}'; known presets: {known}")]
    UnknownPreset { name: String, known: String },

    #[error("{what} '0' must be at least 1")]
    ZeroSetting { what: &'static str },

    #[error(
        "tensor-parallel degree '{tp}' does not divide the {count} {what} of preset '{preset}'"
    )]
    TpDoesNotDivide {
        tp: usize,
        count: usize,
        what: &'static str,
        preset: String,
    },

    #[error("model '{name}' is malformed: {problem}")]
    MalformedModel { name: String, problem: String },

    #[error(
        "tensor-parallel degree '{tp}' neither divides nor is a multiple of the {kv_heads} \
         key-value heads of preset '{preset}'"
    )]
    TpDoesNotFitKvHeads {
        tp: usize,
        kv_heads: usize,
        preset: String,
    },

    #[error(
        "expert-parallel degree '{ep}' needs a mixture-of-experts model but '{model}' is dense"
    )]
    EpNeedsMoe { ep: usize, model: String },

    #[error(
        "expert-parallel degree '{ep}' does not divide the {experts} experts of model '{model}'"
    )]
    EpDoesNotDivide {
        ep: usize,
        experts: usize,
        model: String,
    },

    #[error("pipeline-parallel degree '{pp}' exceeds the {layers} layers of model '{model}'")]
    PpExceedsLayers {
        pp: usize,
        layers: usize,
        model: String,
    },

    #[error("cannot read '{path}': {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("hugging face config '{path}': {problem}")]
    HfConfig { path: PathBuf, problem: String },

    #[error("hugging face config '{path}': model_type '{model_type}' is unknown; known: {known}")]
    HfModelType {
        path: PathBuf,
        model_type: String,
        known: String,
    },

    #[error("no *.safetensors file in '{dir}'")]
    NoCheckpoint { dir: PathBuf },

    #[error("checkpoint file '{path}' is unreadable: {problem}")]
    CheckpointFile { path: PathBuf, problem: String },

    #[error("tensor '{name}' of shape {shape} is missing from the checkpoint in '{dir}'")]
    MissingTensor {
        name: String,
        shape: String,
        dir: PathBuf,
    },

    #[error("tensor '{name}' in '{path}' has shape '{found}' but {expected} was expected")]
    TensorShape {
        name: String,
        path: PathBuf,
        found: String,
        expected: String,
    },

    #[error("tensor '{name}' in '{path}' has dtype '{dtype}'; pinch reads F32, BF16 and F16")]
    TensorDtype {
        name: String,
        path: PathBuf,
        dtype: String,
    },

    #[error("checkpoint in '{dir}' cannot be loaded: {problem}")]
    UnsupportedCheckpoint { dir: PathBuf, problem: String },

    #[error("rank '{rank}' is out of range for tensor-parallel degree {tp}")]
    RankOutOfRange { rank: usize, tp: usize },

    #[error("expert-parallel rank '{rank}' is out of range for expert-parallel degree {ep}")]
    EpRankOutOfRange { rank: usize, ep: usize },

    #[error(
        "expert-parallel degree {ep} needs tensor-parallel degree 1, not '{tp}' \
         (attention is data-parallel under expert parallelism)"
    )]
    EpNeedsTpOne { ep: usize, tp: usize },

    #[error(
        "layers '{start}..{end}' are not a non-empty range within the {layers} layers of model '{model}'"
    )]
    LayersOutOfRange {
        start: usize,
        end: usize,
        layers: usize,
        model: String,
    },

    #[error("this rank's pipeline stage does not hold the {what} the step needs")]
    StageLacks { what: &'static str },

    #[error("kv-cache append failed at layer {layer}: {source}")]
    KvCache { layer: usize, source: KernelError },

    #[error(transparent)]
    Comm(#[from] CommError),
}
