//! The workloads pinch profiles: a Llama-style decoder with seeded synthetic weights, run with
//! Megatron-style tensor parallelism over rank processes that all-reduce over TCP, every op
//! recorded as a span.
//!
//! Layers, from the bottom: `config` (model shapes, dense and MoE, and presets), `hf` (shapes
//! from Hugging Face `config.json`), `tp` (which slice a rank owns), `weights` (shards of seeded
//! weights or of safetensors checkpoints, f32 or bf16), `comm` (rendezvous and ring all-reduce),
//! `trace` (op names and spans), `model` (the forward pass), `run` (a rank's generation run).

pub mod comm;
pub mod config;
pub mod error;
pub mod hf;
pub mod model;
pub mod run;
pub mod tp;
pub mod trace;
pub mod weights;

pub use comm::{CommError, DEFAULT_IO_TIMEOUT, RendezvousServer, Ring, rendezvous};
pub use config::{Family, ModelConfig, MoeConfig, PRESETS, preset, presets};
pub use error::WorkloadError;
pub use hf::from_hf_config;
pub use run::{Generation, TpRunConfig, run_tp_rank};
pub use tp::TpLayout;
pub use trace::OP_NAMES;
pub use weights::{
    Ffn, LayerWeights, Mlp, ModelWeights, MoeWeights, ShardSpec, ShardWeights, load_shard,
    synthetic_shard,
};
