//! Errors the kernels can return.
//!
//! Shape mismatches are programming errors and panic; only conditions that depend on how a
//! caller drives a workload at run time (such as running a KV cache past its capacity) are errors.

/// A kernel could not do what was asked.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KernelError {
    /// Appending to a [`crate::KvCache`] would take it past the positions it was sized for.
    #[error("kv cache of {capacity} positions cannot take {requested}")]
    CacheFull {
        /// The cache's `max_seq`.
        capacity: usize,
        /// Positions the cache would hold after the append.
        requested: usize,
    },
    /// A sequence's block table has fewer blocks than its positions need.
    #[error("block table of {blocks} blocks of {block_size} cannot hold {positions} positions")]
    BlockTableTooShort {
        /// Blocks in the table.
        blocks: usize,
        /// Positions the sequence would hold (the last one written, plus 1).
        positions: usize,
        /// Positions per block.
        block_size: usize,
    },
    /// A block table names a block the pool does not have.
    #[error("block id {block} is outside the pool's {blocks} blocks")]
    BlockOutOfRange {
        /// The block id found in the table.
        block: u32,
        /// Blocks in the pool.
        blocks: usize,
    },
}
