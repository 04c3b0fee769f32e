//! The workloads pinch profiles: Llama-, Mixtral- and DeepSeek-shaped decoders (seeded synthetic
//! weights or real safetensors), served to a stream of requests by ranks laid out with tensor,
//! pipeline, data and expert parallelism, every op and collective recorded as a span.
//!
//! Layers, from the bottom: `config` and `hf` (model shapes: presets and Hugging Face configs),
//! `tp` (which slice a tensor-parallel rank owns), `weights` (seeded or loaded weights and their
//! shards), `layout` (parallel degrees, rank coordinates, groups), `comm` (the mesh of links and
//! the collectives), `trace` (op names and spans), `model` (one stage's forward pass), `serving`
//! (requests, scheduler, router), `engine` (a rank's serving loop), `decode_bench`.

pub mod calibrate;
pub mod comm;
pub mod config;
pub mod decode_bench;
pub mod engine;
pub mod error;
pub mod hf;
pub mod layout;
pub mod model;
pub mod serving;
pub mod tp;
pub mod trace;
pub mod weights;

pub use comm::{CommError, DEFAULT_IO_TIMEOUT, RendezvousServer};
pub use config::{ModelConfig, preset, presets};
pub use error::WorkloadError;
pub use hf::from_hf_config;
pub use tp::TpLayout;
pub use trace::OP_NAMES;
