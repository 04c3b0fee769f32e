//! The run manifest (`manifest.json`): what ran, where, with which versions, and which counter
//! sources each node could read (and, for the others, why not).

use crate::ids::{NodeId, Rank};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The manifest's own format version; bumped on any incompatible change.
pub const MANIFEST_VERSION: u32 = 1;

/// The file name of the manifest inside a run directory.
pub const MANIFEST_FILE: &str = "manifest.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunManifest {
    pub format_version: u32,
    pub run_id: String,
    /// Wall-clock start of the run, nanoseconds since the Unix epoch.
    pub started_at_unix_ns: u64,
    pub nodes: Vec<NodeEntry>,
    pub workload: WorkloadSpec,
    pub versions: Versions,
    /// Filled in from the node logs when the run ends; empty while it runs.
    pub counter_sources: Vec<CounterSourceStatus>,
}

/// One node of the run: its host, the ranks placed on it, and its log file (relative to the run).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeEntry {
    pub node: NodeId,
    pub host: String,
    pub ranks: Vec<Rank>,
    pub log_file: String,
}

/// The workload and every parameter that shaped it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WorkloadSpec {
    /// e.g. "decode-tp"
    pub name: String,
    /// The model preset, e.g. "tiny".
    pub model: String,
    pub parameters: BTreeMap<String, serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Versions {
    pub pinch: String,
    pub node_log_format: u32,
    pub manifest_format: u32,
}

impl Versions {
    pub fn current(pinch: &str) -> Versions {
        Versions {
            pinch: pinch.to_string(),
            node_log_format: crate::nodelog::NODE_LOG_VERSION,
            manifest_format: MANIFEST_VERSION,
        }
    }
}

/// Whether one counter source (e.g. "procfs", "nvml", "perf") was read on one node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterSourceStatus {
    pub node: NodeId,
    pub source: String,
    pub state: SourceState,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// Read, with what it reads and what it could not (e.g. hardware perf events refused), one
    /// sentence each.
    Read {
        counters: Vec<String>,
        #[serde(default)]
        notes: Vec<String>,
    },
    NotRead {
        reason: String,
    },
    /// Read until it failed mid-run at `at_ns` (the node's monotonic clock); the other sources
    /// and the workload went on.
    Failed {
        counters: Vec<String>,
        reason: String,
        at_ns: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read manifest '{path}': {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("manifest '{path}' is not valid: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error(
        "manifest '{path}' has format version '{version}'; this pinch reads version {MANIFEST_VERSION}"
    )]
    UnknownVersion { path: PathBuf, version: u32 },
    #[error("cannot write manifest '{path}': {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl RunManifest {
    /// Reads `manifest.json` from a run directory.
    pub fn load(run_dir: &Path) -> Result<RunManifest, ManifestError> {
        let path = run_dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| ManifestError::Read {
            path: path.clone(),
            source,
        })?;
        let manifest: RunManifest =
            serde_json::from_str(&text).map_err(|source| ManifestError::Parse {
                path: path.clone(),
                source,
            })?;
        if manifest.format_version != MANIFEST_VERSION {
            return Err(ManifestError::UnknownVersion {
                path,
                version: manifest.format_version,
            });
        }
        Ok(manifest)
    }

    /// Writes `manifest.json` into a run directory, atomically (a reader never sees half a file).
    pub fn store(&self, run_dir: &Path) -> Result<(), ManifestError> {
        let path = run_dir.join(MANIFEST_FILE);
        let tmp = run_dir.join(format!(".{MANIFEST_FILE}.tmp"));
        let write = |p: &Path| -> std::io::Result<()> {
            let text = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
            std::fs::write(p, text + "\n")
        };
        write(&tmp)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|source| ManifestError::Write { path, source })
    }

    /// The node a rank is placed on.
    pub fn node_of(&self, rank: Rank) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|n| n.ranks.contains(&rank))
            .map(|n| n.node)
    }

    /// Every rank of the run, in order.
    pub fn ranks(&self) -> Vec<Rank> {
        let mut ranks: Vec<Rank> = self
            .nodes
            .iter()
            .flat_map(|n| n.ranks.iter().copied())
            .collect();
        ranks.sort();
        ranks
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> RunManifest {
        RunManifest {
            format_version: MANIFEST_VERSION,
            run_id: "r1".into(),
            started_at_unix_ns: 1,
            nodes: vec![NodeEntry {
                node: NodeId(0),
                host: "h".into(),
                ranks: vec![Rank(1), Rank(0)],
                log_file: "node-0.pnl".into(),
            }],
            workload: WorkloadSpec {
                name: "w".into(),
                model: "tiny".into(),
                parameters: BTreeMap::new(),
            },
            versions: Versions::current("0.1.0"),
            counter_sources: vec![CounterSourceStatus {
                node: NodeId(0),
                source: "nvml".into(),
                state: SourceState::NotRead {
                    reason: "no library".into(),
                },
            }],
        }
    }

    #[test]
    fn manifest_round_trips_through_a_run_directory() -> Result<(), ManifestError> {
        let dir = tempfile::tempdir().map_err(|source| ManifestError::Write {
            path: "tmp".into(),
            source,
        })?;
        let m = sample();
        m.store(dir.path())?;
        assert_eq!(RunManifest::load(dir.path())?, m);
        assert_eq!(m.ranks(), vec![Rank(0), Rank(1)]);
        assert_eq!(m.node_of(Rank(1)), Some(NodeId(0)));
        Ok(())
    }

    #[test]
    fn manifest_of_another_version_is_refused() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let mut m = sample();
        m.format_version = 9;
        std::fs::write(dir.path().join(MANIFEST_FILE), serde_json::to_string(&m)?)?;
        let err = RunManifest::load(dir.path())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("format version '9'"), "{err}");
        Ok(())
    }
}
