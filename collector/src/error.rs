//! The collector's errors: each names the file, rank or thread it concerns.

use pinch_traces::{NodeLogError, Rank};
use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error(transparent)]
    Metrics(#[from] crate::prometheus::MetricsError),
    #[error("cannot create node log '{path}': {source}")]
    CreateLog { path: PathBuf, source: io::Error },
    #[error("cannot write node log '{path}': {source}")]
    WriteLog { path: PathBuf, source: NodeLogError },
    #[error("cannot sync node log '{path}' to disk: {source}")]
    SyncLog { path: PathBuf, source: io::Error },
    #[error("cannot write the stream of {rank}: {source}")]
    Stream { rank: Rank, source: NodeLogError },
    #[error("cannot start thread '{name}': {source}")]
    Thread { name: String, source: io::Error },
    #[error("thread '{name}' panicked")]
    ThreadPanicked { name: String },
}
