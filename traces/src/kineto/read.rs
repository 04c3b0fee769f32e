//! Reading Kineto trace files: one file (gzip or plain), or the files of a job, one per rank,
//! whose ranks and world size are checked against each other.
//!
//! A file is decompressed into memory whole and parsed from there: serde_json parses a slice
//! several times faster than a reader, and its strings can then be borrowed instead of copied.
//! The text costs memory for as long as its file is parsed (files are parsed on up to as many
//! threads as there are cores; a single big file is cut in two and parsed on two, see `split`).

use super::model::KinetoTrace;
use super::parse::{ParseFailure, parse_trace};
use super::split::{self, Loaded};
use crate::ids::Rank;
use flate2::bufread::MultiGzDecoder;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Why traces could not be read; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum KinetoError {
    #[error("cannot read '{}': {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot decompress '{}': {source}", path.display())]
    Decompress {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("'{}' ends early (cut short?): {source}", path.display())]
    Truncated {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("'{}' is not valid JSON: {source}", path.display())]
    Json {
        path: PathBuf,
        source: serde_json::Error,
    },
    /// Valid JSON with a value of the wrong kind where pinch reads one (a time that is no
    /// number, `traceEvents` that is no list).
    #[error("'{}' holds a value pinch cannot read: {source}", path.display())]
    BadValue {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("'{}' is not a Kineto trace: {reason}", path.display())]
    NotKineto { path: PathBuf, reason: &'static str },
    #[error("'{}' holds no trace events", path.display())]
    Empty { path: PathBuf },
    #[error("'{}' holds no .json or .json.gz files", path.display())]
    NoTraces { path: PathBuf },
    #[error("'{}' and '{}' are both rank {rank}", first.display(), second.display())]
    DuplicateRank {
        rank: u32,
        first: PathBuf,
        second: PathBuf,
    },
    #[error(
        "'{}' says the world size is {first_size} but '{}' says {second_size}",
        first.display(),
        second.display()
    )]
    WorldSize {
        first: PathBuf,
        first_size: u32,
        second: PathBuf,
        second_size: u32,
    },
    #[error("'{}' is rank {rank} of a world of {world_size}", path.display())]
    RankOutsideWorld {
        path: PathBuf,
        rank: u32,
        world_size: u32,
    },
}

/// Where a rank's number came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RankSource {
    /// The trace's `distributedInfo.rank`.
    DistributedInfo,
    /// The trace names no rank: the lowest rank no other file claims, in file order.
    FileOrder,
}

/// One rank's trace and where it came from.
#[derive(Debug)]
pub struct RankTrace {
    pub rank: Rank,
    pub rank_source: RankSource,
    pub path: PathBuf,
    pub trace: KinetoTrace,
}

/// Something the reader noticed that does not stop the analysis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KinetoWarning {
    /// The trace names no rank, so it got one by file order.
    RankFromFileOrder { path: PathBuf, rank: u32 },
    /// The trace has host events only: no device time to break down.
    NoDeviceEvents { path: PathBuf },
}

impl fmt::Display for KinetoWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::RankFromFileOrder { path, rank } => write!(
                f,
                "'{}' names no rank (no distributedInfo.rank); taken as rank {rank} by file order",
                path.display()
            ),
            Self::NoDeviceEvents { path } => write!(
                f,
                "'{}' holds no GPU or accelerator events; only its host events are read",
                path.display()
            ),
        }
    }
}

/// The traces of one job, sorted by rank.
#[derive(Debug)]
pub struct KinetoRun {
    pub ranks: Vec<RankTrace>,
    /// The world size the traces agree on, when any says.
    pub world_size: Option<u32>,
    pub warnings: Vec<KinetoWarning>,
}

/// Reads one trace file, gzip (found by its magic bytes, whatever the name) or plain JSON.
pub fn read_trace(path: &Path) -> Result<KinetoTrace, KinetoError> {
    read_one(path, split::may_split())
}

/// Reads one trace file, a big one on two threads if `split`.
fn read_one(path: &Path, split: bool) -> Result<KinetoTrace, KinetoError> {
    let trace = match load(path, split)? {
        Loaded::Parsed(trace) => *trace,
        Loaded::Text(text) => parse_text(path, &text)?,
    };
    if trace.event_count() == 0 {
        return Err(KinetoError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(trace)
}

/// The file's text, or already its trace when it was big enough to parse on two threads.
fn load(path: &Path, split: bool) -> Result<Loaded, KinetoError> {
    let bytes = std::fs::read(path).map_err(|source| KinetoError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    if !bytes.starts_with(&[0x1f, 0x8b]) {
        return Ok(if split {
            split::parse_plain(bytes)
        } else {
            Loaded::Text(bytes)
        });
    }
    let size_bytes = gzip_size_hint(&bytes);
    let decompress = |source| KinetoError::Decompress {
        path: path.to_path_buf(),
        source,
    };
    if split && size_bytes >= split::MIN_SPLIT_BYTES {
        return split::inflate_and_parse(&bytes, size_bytes).map_err(decompress);
    }
    let mut text = Vec::with_capacity(size_bytes);
    MultiGzDecoder::new(bytes.as_slice())
        .read_to_end(&mut text)
        .map_err(decompress)?;
    Ok(Loaded::Text(text))
}

/// Parses a whole text on this thread, naming the file in any error.
fn parse_text(path: &Path, text: &[u8]) -> Result<KinetoTrace, KinetoError> {
    parse_trace(text).map_err(|failure| match failure {
        ParseFailure::Json(source) if source.is_eof() => KinetoError::Truncated {
            path: path.to_path_buf(),
            source,
        },
        ParseFailure::Json(source) if source.is_data() => KinetoError::BadValue {
            path: path.to_path_buf(),
            source,
        },
        ParseFailure::Json(source) => KinetoError::Json {
            path: path.to_path_buf(),
            source,
        },
        ParseFailure::NotKineto(reason) => KinetoError::NotKineto {
            path: path.to_path_buf(),
            reason,
        },
    })
}

/// The uncompressed size a gzip member records in its last 4 bytes (mod 4 GiB), capped so a
/// corrupt trailer cannot ask for a huge allocation.
fn gzip_size_hint(bytes: &[u8]) -> usize {
    let Some(tail) = bytes.len().checked_sub(4).and_then(|at| bytes.get(at..)) else {
        return 0;
    };
    let size = u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as usize;
    size.min(bytes.len().saturating_mul(64))
}

/// The trace files a path stands for: the file itself, or a directory's `.json` and
/// `.json.gz` files, sorted by name.
pub fn trace_files(path: &Path) -> Result<Vec<PathBuf>, KinetoError> {
    if !path.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries = std::fs::read_dir(path).map_err(|source| KinetoError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file() && is_trace_name(p))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(KinetoError::NoTraces {
            path: path.to_path_buf(),
        });
    }
    Ok(files)
}

/// Whether a file name looks like a trace: `*.json` or `*.json.gz`.
pub fn is_trace_name(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    name.ends_with(".json") || name.ends_with(".json.gz")
}

/// Reads the traces of one job (files, or directories of them), one file per rank.
pub fn read_run(paths: &[PathBuf]) -> Result<KinetoRun, KinetoError> {
    let mut files = Vec::new();
    for path in paths {
        files.extend(trace_files(path)?);
    }
    let traces = read_all(&files)?;
    assemble(files.into_iter().zip(traces).collect())
}

/// Reads files on up to one thread per core; the first failure in file order wins.
fn read_all(files: &[PathBuf]) -> Result<Vec<KinetoTrace>, KinetoError> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(files.len());
    if threads <= 1 {
        return files.iter().map(|f| read_trace(f)).collect();
    }
    // Each file on a core of its own: none is split.
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<KinetoTrace, KinetoError>>>> =
        Mutex::new(files.iter().map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let at = next.fetch_add(1, Ordering::Relaxed);
                    let Some(file) = files.get(at) else { break };
                    let result = read_one(file, false);
                    if let Ok(mut slots) = results.lock() {
                        slots[at] = Some(result);
                    }
                }
            });
        }
    });
    let slots = results.into_inner().unwrap_or_else(|e| e.into_inner());
    files
        .iter()
        .zip(slots)
        .map(|(file, slot)| {
            slot.unwrap_or_else(|| {
                Err(KinetoError::Read {
                    path: file.clone(),
                    source: std::io::Error::other("its reader thread stopped"),
                })
            })
        })
        .collect()
}

/// Gives every trace its rank and checks that the files describe one job.
pub fn assemble(traces: Vec<(PathBuf, KinetoTrace)>) -> Result<KinetoRun, KinetoError> {
    let world_size = agreed_world_size(&traces)?;
    let mut claimed: BTreeMap<u32, PathBuf> = BTreeMap::new();
    for (path, trace) in &traces {
        if let Some(Rank(rank)) = trace.rank
            && let Some(first) = claimed.insert(rank, path.clone())
        {
            return Err(KinetoError::DuplicateRank {
                rank,
                first,
                second: path.clone(),
            });
        }
    }
    let mut warnings = Vec::new();
    let mut ranks = Vec::with_capacity(traces.len());
    let mut free = (0u32..).filter(|r| !claimed.contains_key(r));
    for (path, trace) in traces {
        let (rank, rank_source) = match trace.rank {
            Some(Rank(r)) => (r, RankSource::DistributedInfo),
            None => {
                let r = free.next().unwrap_or(u32::MAX);
                warnings.push(KinetoWarning::RankFromFileOrder {
                    path: path.clone(),
                    rank: r,
                });
                (r, RankSource::FileOrder)
            }
        };
        check_in_world(&path, rank, world_size)?;
        if trace.streams.is_empty() {
            warnings.push(KinetoWarning::NoDeviceEvents { path: path.clone() });
        }
        ranks.push(RankTrace {
            rank: Rank(rank),
            rank_source,
            path,
            trace,
        });
    }
    ranks.sort_by_key(|r| r.rank);
    Ok(KinetoRun {
        ranks,
        world_size,
        warnings,
    })
}

fn agreed_world_size(traces: &[(PathBuf, KinetoTrace)]) -> Result<Option<u32>, KinetoError> {
    let mut sizes = traces
        .iter()
        .filter_map(|(path, t)| t.world_size.map(|w| (path, w)));
    let Some((first, first_size)) = sizes.next() else {
        return Ok(None);
    };
    match sizes.find(|(_, size)| *size != first_size) {
        Some((second, second_size)) => Err(KinetoError::WorldSize {
            first: first.clone(),
            first_size,
            second: second.clone(),
            second_size,
        }),
        None => Ok(Some(first_size)),
    }
}

fn check_in_world(path: &Path, rank: u32, world_size: Option<u32>) -> Result<(), KinetoError> {
    match world_size {
        Some(world_size) if rank >= world_size => Err(KinetoError::RankOutsideWorld {
            path: path.to_path_buf(),
            rank,
            world_size,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn trace_text(rank: Option<u32>, world: Option<u32>) -> String {
        let mut info = Vec::new();
        if let Some(r) = rank {
            info.push(format!(r#""rank": {r}"#));
        }
        if let Some(w) = world {
            info.push(format!(r#""world_size": {w}"#));
        }
        format!(
            r#"{{"distributedInfo": {{{}}}, "traceEvents": [
              {{"ph": "X", "cat": "kernel", "name": "k", "ts": 1, "dur": 2, "args": {{"stream": 7, "correlation": 1}}}}]}}"#,
            info.join(", ")
        )
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn write_gz(dir: &Path, name: &str, text: &str) -> PathBuf {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(text.as_bytes()).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, enc.finish().unwrap()).unwrap();
        path
    }

    #[test]
    fn reads_gzip_and_plain_files_of_a_directory_in_rank_order() {
        let dir = tempfile::tempdir().unwrap();
        write_gz(dir.path(), "a.json.gz", &trace_text(Some(1), Some(2)));
        write(dir.path(), "b.json", &trace_text(Some(0), Some(2)));
        write(dir.path(), "notes.txt", "not a trace");
        let run = read_run(&[dir.path().to_path_buf()]).unwrap();
        let ranks: Vec<u32> = run.ranks.iter().map(|r| r.rank.0).collect();
        assert_eq!(ranks, [0, 1]);
        assert_eq!(run.world_size, Some(2));
        assert!(run.warnings.is_empty(), "{:?}", run.warnings);
    }

    #[test]
    fn ranks_missing_from_a_trace_come_from_file_order_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.json", &trace_text(None, None));
        let b = write(dir.path(), "b.json", &trace_text(Some(0), None));
        let c = write(dir.path(), "c.json", &trace_text(None, None));
        let run = read_run(&[a.clone(), b, c.clone()]).unwrap();
        let got: Vec<(u32, &Path)> = run
            .ranks
            .iter()
            .map(|r| (r.rank.0, r.path.as_path()))
            .collect();
        assert_eq!(got[1], (1, a.as_path()));
        assert_eq!(got[2], (2, c.as_path()));
        assert_eq!(run.warnings.len(), 2);
        assert!(run.warnings[0].to_string().contains("taken as rank 1"));
    }

    #[test]
    fn ranks_that_disagree_are_refused_naming_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = write(dir.path(), "a.json", &trace_text(Some(0), Some(2)));
        let b = write(dir.path(), "b.json", &trace_text(Some(1), Some(4)));
        let err = read_run(&[a.clone(), b]).unwrap_err().to_string();
        assert!(
            err.contains("world size is 2") && err.contains("b.json' says 4"),
            "{err}"
        );
        let c = write(dir.path(), "c.json", &trace_text(Some(0), Some(2)));
        let err = read_run(&[a.clone(), c]).unwrap_err().to_string();
        assert!(err.contains("are both rank 0"), "{err}");
        let d = write(dir.path(), "d.json", &trace_text(Some(5), Some(2)));
        let err = read_run(&[d]).unwrap_err().to_string();
        assert!(err.contains("rank 5 of a world of 2"), "{err}");
    }

    #[test]
    fn bad_files_are_named_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let text = trace_text(Some(0), None);
        let cases = [
            (
                write(dir.path(), "cut.json", &text[..text.len() - 10]),
                "ends early",
            ),
            (
                write(dir.path(), "bad.json", "{\"traceEvents\": [,]}"),
                "not valid JSON",
            ),
            (
                write(dir.path(), "other.json", "{\"a\": 1}"),
                "not a Kineto trace",
            ),
            (
                write(dir.path(), "empty.json", "{\"traceEvents\": []}"),
                "holds no trace events",
            ),
            (dir.path().join("missing.json"), "cannot read"),
        ];
        for (path, want) in cases {
            let err = read_trace(&path).unwrap_err().to_string();
            assert!(
                err.contains(want) && err.contains(path.to_str().unwrap()),
                "{err}"
            );
        }
        let gz = write_gz(dir.path(), "cut.json.gz", &text);
        let bytes = std::fs::read(&gz).unwrap();
        std::fs::write(&gz, &bytes[..bytes.len() / 2]).unwrap();
        let err = read_trace(&gz).unwrap_err().to_string();
        assert!(err.contains("cannot decompress"), "{err}");
        let err = read_run(&[dir.path().join("nothing")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot read"), "{err}");
    }

    #[test]
    fn a_directory_without_traces_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_run(&[dir.path().to_path_buf()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("holds no .json"), "{err}");
    }
}
