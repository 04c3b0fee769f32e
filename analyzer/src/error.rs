//! The analyzer's errors: only loading can fail; the analysis itself takes whatever data there is.

use pinch_traces::{ManifestError, NodeLogError};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AnalyzerError {
    #[error("run directory '{}' does not exist", .0.display())]
    MissingRun(PathBuf),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A node log that exists but cannot be read as one (another format version, not a log).
    #[error(transparent)]
    NodeLog(#[from] NodeLogError),
}
