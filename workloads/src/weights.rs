//! Model weights: one rank's shard of a model, drawn from a seed (`synthetic_shard`) or read
//! from a safetensors checkpoint (`load_shard`), stored as f32 or bf16 `Matrix`es ready for
//! `matmul_w(x, w)` (`[in, out]` row-major).
//!
//! `shard` holds the types the model code reads and cuts shards from a `source`; `init` is the
//! seeded generator (its streams and scales are those of the first, dense-only generator, so a
//! seed gives the same `tiny` model as it always did).

mod checkpoint;
mod init;
pub mod shard;
mod source;
mod synthetic;

pub use checkpoint::{check_checkpoint, load_shard};
pub use shard::{Ffn, LayerWeights, Mlp, MoeWeights, ShardSpec, ShardWeights};
pub use synthetic::synthetic_shard;
