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
}
