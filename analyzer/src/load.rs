//! Reading a run directory: the manifest and each node's log. The only module here that does I/O.
//!
//! A node log that is missing or cut short is not an error: a crashed agent is exactly what a
//! profiler must still explain, so what was written is kept and the gap recorded in `NodeData`.
//! A log that is not a node log, or of another format version, is an error.

use crate::error::AnalyzerError;
use crate::run::{LogState, NodeData, RunData};
use pinch_traces::nodelog::Frame;
use pinch_traces::{FrameReader, NodeEntry, NodeLogError, RunManifest, Truncation};
use rayon::prelude::*;
use std::io::{BufReader, ErrorKind};
use std::path::Path;

/// Read buffer per node log: large reads keep decoding, not system calls, the cost.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// The node log header's size: a file shorter than this was cut before its first record.
const NODE_LOG_HEADER_BYTES: u64 = 16;

/// Reads `manifest.json` and every node log it names (several logs at once, one per core).
pub fn load_run(dir: &Path) -> Result<RunData, AnalyzerError> {
    if !dir.exists() {
        return Err(AnalyzerError::MissingRun(dir.to_path_buf()));
    }
    let manifest = RunManifest::load(dir)?;
    let nodes = manifest
        .nodes
        .par_iter()
        .map(|entry| load_node(dir, entry))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RunData { manifest, nodes })
}

/// Files each record of a log as it is decoded, so a node's records are never held twice (as
/// records, then split by kind).
fn read_node(path: &Path, entry: &NodeEntry) -> Result<NodeData, NodeLogError> {
    let file = std::fs::File::open(path).map_err(|source| NodeLogError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    let input = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    let mut reader = FrameReader::new(input, path)?;
    let mut node = NodeData::without_log(entry, String::new());
    loop {
        match reader.next_frame()? {
            Frame::Record(record) => node.apply(record),
            Frame::End => {
                node.log = LogState::Whole;
                return Ok(node);
            }
            Frame::Cut(truncation) => {
                node.log = LogState::Cut(truncation);
                return Ok(node);
            }
        }
    }
}

fn load_node(dir: &Path, entry: &NodeEntry) -> Result<NodeData, AnalyzerError> {
    let path = dir.join(&entry.log_file);
    match read_node(&path, entry) {
        Ok(node) => Ok(node),
        Err(NodeLogError::Open { source, .. }) if source.kind() == ErrorKind::NotFound => Ok(
            NodeData::without_log(entry, format!("log '{}' does not exist", entry.log_file)),
        ),
        Err(err @ NodeLogError::BadMagic { .. }) => {
            cut_in_header(&path, entry).ok_or_else(|| err.into())
        }
        Err(err) => Err(err.into()),
    }
}

/// A log shorter than its header was cut before any record; a longer one is not a node log.
fn cut_in_header(path: &Path, entry: &NodeEntry) -> Option<NodeData> {
    let len_bytes = std::fs::metadata(path).ok()?.len();
    if len_bytes >= NODE_LOG_HEADER_BYTES {
        return None;
    }
    let mut node = NodeData::without_log(entry, String::new());
    node.log = crate::run::LogState::Cut(Truncation {
        offset: 0,
        dropped_bytes: len_bytes,
        reason: "the log ends inside its header".to_string(),
    });
    Some(node)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;
    use pinch_traces::{NodeLogWriter, Rank, Record};

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    fn write_log(path: &Path, records: &[Record]) -> Result<Vec<u8>, NodeLogError> {
        let mut w = NodeLogWriter::new(Vec::new())?;
        for r in records {
            w.append(r)?;
        }
        let bytes = w.into_inner();
        std::fs::write(path, &bytes).map_err(NodeLogError::Write)?;
        Ok(bytes)
    }

    #[test]
    fn missing_run_directory_is_named() {
        let err = load_run(Path::new("/no/such/run"))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(err, "run directory '/no/such/run' does not exist");
    }

    #[test]
    fn missing_and_cut_logs_are_kept_as_incompleteness() -> TestResult {
        let dir = tempfile::tempdir()?;
        let manifest = testkit::manifest(&[&[0], &[1], &[2]]);
        manifest.store(dir.path())?;
        write_log(
            &dir.path().join("node-0.pnl"),
            &testkit::node_records(0, &[0], 1),
        )?;
        std::fs::write(dir.path().join("node-1.pnl"), b"PINCH")?;
        let run = load_run(dir.path())?;
        assert_eq!(run.nodes[0].log, LogState::Whole);
        assert!(matches!(&run.nodes[1].log, LogState::Cut(t) if t.dropped_bytes == 5));
        assert!(
            matches!(&run.nodes[2].log, LogState::Missing { reason } if reason.contains("node-2.pnl"))
        );
        assert_eq!(run.nodes[2].placed_ranks, vec![Rank(2)]);
        Ok(())
    }

    #[test]
    fn log_of_another_version_is_an_error() -> TestResult {
        let dir = tempfile::tempdir()?;
        testkit::manifest(&[&[0]]).store(dir.path())?;
        let path = dir.path().join("node-0.pnl");
        let mut bytes = write_log(&path, &testkit::node_records(0, &[0], 1))?;
        bytes[8..12].copy_from_slice(&9u32.to_le_bytes());
        std::fs::write(&path, bytes)?;
        let err = load_run(dir.path()).err().map(|e| e.to_string());
        assert!(
            err.as_deref()
                .is_some_and(|e| e.contains("format version '9'")),
            "{err:?}"
        );
        Ok(())
    }

    #[test]
    fn report_names_the_cut_node_and_keeps_the_other_nodes_ranks() -> TestResult {
        let dir = tempfile::tempdir()?;
        testkit::manifest(&[&[0, 1], &[2, 3]]).store(dir.path())?;
        write_log(
            &dir.path().join("node-0.pnl"),
            &testkit::node_records(0, &[0, 1], 4),
        )?;
        let records = testkit::node_records(1, &[2, 3], 4);
        let whole = write_log(&dir.path().join("node-1.pnl"), &records)?;
        // Cut node 1 in the middle of its (first) spans record.
        let spans_at = records
            .iter()
            .position(|r| matches!(r, Record::Spans(_)))
            .ok_or("no spans record")?;
        let scratch = dir.path().join("scratch.pnl");
        let before_spans = write_log(&scratch, &records[..spans_at])?.len();
        let with_spans = write_log(&scratch, &records[..=spans_at])?.len();
        let cut = (before_spans + with_spans) / 2;
        std::fs::write(dir.path().join("node-1.pnl"), &whole[..cut])?;

        let report = crate::report::analyze(&load_run(dir.path())?);
        let cut_note = format!("node 1: log cut at byte {before_spans}");
        assert!(
            report
                .run
                .incomplete
                .iter()
                .any(|s| s.starts_with(&cut_note)),
            "{:?}",
            report.run.incomplete
        );
        let full: Vec<u32> = report
            .ranks
            .iter()
            .filter(|r| r.wall_ns.is_some())
            .map(|r| r.rank)
            .collect();
        assert_eq!(full, vec![0, 1]);
        assert!(report.ranks.iter().all(|r| r.complete == (r.node == 0)));
        let incomplete = report
            .findings
            .iter()
            .find(|f| f.kind == crate::findings::FindingKind::IncompleteRun);
        assert!(incomplete.is_some_and(|f| f.location.nodes == vec![1]));
        Ok(())
    }
}
