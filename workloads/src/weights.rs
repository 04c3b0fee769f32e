//! Model weights: one rank's shard of a model, drawn from a seed (`synthetic_shard`) or read
//! from a safetensors checkpoint (`load_shard`), stored as f32 or bf16 `Matrix`es ready for
//! `matmul_w(x, w)` (`[in, out]` row-major).
//!
//! `shard` holds the types the model code reads and cuts shards from a `source`; `init` is the
//! seeded generator. `legacy` is the first, dense-only f32 API (`ModelWeights::generate(..)
//! .shard(..)`), kept until the model code moves over; its `LayerWeights` and `ShardWeights`
//! are still the ones re-exported here, so the new types of the same names are reached as
//! `weights::shard::{LayerWeights, ShardWeights}` until then.

mod checkpoint;
mod init;
pub mod shard;
mod source;
mod synthetic;

pub use checkpoint::load_shard;
pub use shard::{Ffn, LayerWeights, Mlp, MoeWeights, ShardSpec, ShardWeights};
pub use synthetic::synthetic_shard;
