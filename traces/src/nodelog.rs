//! The node log: an append-only file of framed records, one per node of a run.
//!
//! Layout: a 16-byte header (`PINCHLOG`, format version as u32 LE, 4 reserved bytes), then
//! frames of `[payload length: u32 LE][crc32 of payload: u32 LE][payload]`, each payload one
//! postcard-encoded `Record`. A crash can only cut the tail: the reader returns every whole,
//! checksummed record before the cut and says how many bytes it dropped. The same framing
//! carries records from a rank process to its agent over a pipe.

use crate::clock::ClockAnchor;
use crate::counter::{CounterDef, CounterSample, DeviceDef};
use crate::experts::ExpertTokens;
use crate::ids::{NodeId, OpId, Rank};
use crate::manifest::CounterSourceStatus;
use crate::request::RequestRecord;
use crate::span::Span;
use serde::{Deserialize, Serialize};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// The node log format this build writes and reads.
pub const NODE_LOG_VERSION: u32 = 4;
const MAGIC: &[u8; 8] = b"PINCHLOG";
const HEADER_BYTES: usize = 16;
const FRAME_HEADER_BYTES: usize = 8;
/// No record comes near this; a larger length means a corrupt frame, not a huge allocation.
const MAX_PAYLOAD_BYTES: u32 = 64 << 20;

/// One record of a node log (or of a rank's stream to its agent).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Record {
    /// First record of a node log: who wrote it and the node's clock anchor.
    NodeStart {
        node: NodeId,
        host: String,
        ranks: Vec<Rank>,
        agent_pid: u32,
        anchor: ClockAnchor,
    },
    /// A rank process was started.
    RankStart {
        rank: Rank,
        pid: u32,
        anchor: ClockAnchor,
    },
    /// The name behind a rank's `OpId`.
    OpName {
        rank: Rank,
        op: OpId,
        name: String,
    },
    Device(DeviceDef),
    Counter(CounterDef),
    /// Whether a counter source could be read on this node.
    Source(CounterSourceStatus),
    Spans(Vec<Span>),
    Samples(Vec<CounterSample>),
    /// Spans a rank's recorder could not queue, counted since the rank started (cumulative).
    Dropped {
        rank: Rank,
        spans: u64,
    },
    /// Progress of a rank through its workload.
    Progress {
        rank: Rank,
        done: u32,
        total: u32,
    },
    /// What a rank produced, so runs can be compared (greedy tokens per sequence).
    Output {
        rank: Rank,
        tokens: Vec<Vec<u32>>,
    },
    /// A request a replica finished serving (sent by the replica's leader rank).
    Request {
        rank: Rank,
        request: RequestRecord,
    },
    /// A rank process ended.
    RankEnd {
        rank: Rank,
        exit: RankExit,
        at_ns: u64,
    },
    /// Last record of a node log that was closed cleanly.
    NodeEnd {
        at_ns: u64,
    },
    /// Tokens the experts a rank holds processed in one step (sent by every MoE rank).
    ExpertTokens(ExpertTokens),
}

/// How a rank process ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RankExit {
    Success,
    Failed {
        code: Option<i32>,
        signal: Option<i32>,
        message: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum NodeLogError {
    #[error("cannot open node log '{path}': {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("'{path}' is not a pinch node log (bad magic)")]
    BadMagic { path: PathBuf },
    #[error(
        "node log '{path}' has format version '{version}'; this pinch reads version {NODE_LOG_VERSION}"
    )]
    UnknownVersion { path: PathBuf, version: u32 },
    #[error("cannot read node log '{path}': {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("cannot write node log: {0}")]
    Write(io::Error),
    #[error("cannot encode record: {0}")]
    Encode(postcard::Error),
}

/// Why the records of a log stop before its end.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Truncation {
    /// Byte offset of the first frame that could not be read whole.
    pub offset: u64,
    pub dropped_bytes: u64,
    pub reason: String,
}

/// A node log read back: its records, and the cut tail if there was one.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeLog {
    pub version: u32,
    pub records: Vec<Record>,
    pub truncation: Option<Truncation>,
}

/// Writes a header, then framed records, to any byte sink (a file, a pipe).
#[derive(Debug)]
pub struct NodeLogWriter<W: Write> {
    out: W,
    payload: Vec<u8>,
}

impl<W: Write> NodeLogWriter<W> {
    pub fn new(mut out: W) -> Result<NodeLogWriter<W>, NodeLogError> {
        let mut header = [0u8; HEADER_BYTES];
        header[..8].copy_from_slice(MAGIC);
        header[8..12].copy_from_slice(&NODE_LOG_VERSION.to_le_bytes());
        out.write_all(&header).map_err(NodeLogError::Write)?;
        Ok(NodeLogWriter {
            out,
            payload: Vec::with_capacity(4096),
        })
    }

    /// Appends one record as one frame (written in a single `write_all`).
    pub fn append(&mut self, record: &Record) -> Result<(), NodeLogError> {
        self.payload.clear();
        self.payload.extend_from_slice(&[0u8; FRAME_HEADER_BYTES]);
        let encoded = postcard::to_extend(record, std::mem::take(&mut self.payload))
            .map_err(NodeLogError::Encode)?;
        self.payload = encoded;
        let len = (self.payload.len() - FRAME_HEADER_BYTES) as u32;
        let crc = crc32fast::hash(&self.payload[FRAME_HEADER_BYTES..]);
        self.payload[..4].copy_from_slice(&len.to_le_bytes());
        self.payload[4..8].copy_from_slice(&crc.to_le_bytes());
        self.out
            .write_all(&self.payload)
            .map_err(NodeLogError::Write)
    }

    pub fn flush(&mut self) -> Result<(), NodeLogError> {
        self.out.flush().map_err(NodeLogError::Write)
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// What reading the next frame gave.
#[derive(Debug)]
pub enum Frame {
    Record(Record),
    /// The stream ended cleanly on a frame boundary.
    End,
    /// The stream ended inside a frame, or a frame failed its checksum.
    Cut(Truncation),
}

/// Reads framed records one at a time from a byte source (a file, a pipe that may block).
#[derive(Debug)]
pub struct FrameReader<R: Read> {
    input: R,
    offset: u64,
    version: u32,
    path: PathBuf,
}

impl<R: Read> FrameReader<R> {
    /// Reads and checks the header. `path` only names the source in errors.
    pub fn new(mut input: R, path: &Path) -> Result<FrameReader<R>, NodeLogError> {
        let mut header = [0u8; HEADER_BYTES];
        let got = read_up_to(&mut input, &mut header).map_err(|source| NodeLogError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if got < HEADER_BYTES || &header[..8] != MAGIC {
            return Err(NodeLogError::BadMagic {
                path: path.to_path_buf(),
            });
        }
        let version = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
        if version != NODE_LOG_VERSION {
            return Err(NodeLogError::UnknownVersion {
                path: path.to_path_buf(),
                version,
            });
        }
        Ok(FrameReader {
            input,
            offset: HEADER_BYTES as u64,
            version,
            path: path.to_path_buf(),
        })
    }

    pub fn version(&self) -> u32 {
        self.version
    }

    /// Reads the next frame. After `Frame::Cut` the rest of the input is consumed and counted.
    pub fn next_frame(&mut self) -> Result<Frame, NodeLogError> {
        let frame_offset = self.offset;
        let mut head = [0u8; FRAME_HEADER_BYTES];
        let got = self.read(&mut head)?;
        if got == 0 {
            return Ok(Frame::End);
        }
        if got < FRAME_HEADER_BYTES {
            return self.cut(
                frame_offset,
                got as u64,
                "the log ends inside a frame header",
            );
        }
        let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
        if len > MAX_PAYLOAD_BYTES {
            return self.cut(
                frame_offset,
                got as u64,
                &format!("frame length '{len}' is not plausible"),
            );
        }
        let payload = self.read_payload(len)?;
        let got_payload = payload.len();
        if got_payload < len as usize {
            let consumed = (got + got_payload) as u64;
            return self.cut(frame_offset, consumed, "the log ends inside a record");
        }
        if crc32fast::hash(&payload) != crc {
            return self.cut(
                frame_offset,
                (got + got_payload) as u64,
                "a record fails its checksum",
            );
        }
        match postcard::from_bytes::<Record>(&payload) {
            Ok(record) => Ok(Frame::Record(record)),
            Err(e) => self.cut(
                frame_offset,
                (got + got_payload) as u64,
                &format!("a record does not decode: {e}"),
            ),
        }
    }

    /// Up to `len` bytes: memory grows with what the input holds, so a cut log whose last
    /// frame claims 64 MiB does not cost 64 MiB.
    fn read_payload(&mut self, len: u32) -> Result<Vec<u8>, NodeLogError> {
        let mut payload = Vec::with_capacity((len as usize).min(1 << 16));
        let got = (&mut self.input)
            .take(u64::from(len))
            .read_to_end(&mut payload)
            .map_err(|source| NodeLogError::Read {
                path: self.path.clone(),
                source,
            })?;
        self.offset += got as u64;
        Ok(payload)
    }

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, NodeLogError> {
        let got = read_up_to(&mut self.input, buf).map_err(|source| NodeLogError::Read {
            path: self.path.clone(),
            source,
        })?;
        self.offset += got as u64;
        Ok(got)
    }

    fn cut(&mut self, offset: u64, consumed: u64, reason: &str) -> Result<Frame, NodeLogError> {
        let rest =
            io::copy(&mut self.input, &mut io::sink()).map_err(|source| NodeLogError::Read {
                path: self.path.clone(),
                source,
            })?;
        self.offset += rest;
        Ok(Frame::Cut(Truncation {
            offset,
            dropped_bytes: consumed + rest,
            reason: reason.to_string(),
        }))
    }
}

/// Fills `buf` as far as the input allows; fewer bytes only at end of input.
fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match input.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Reads a whole node log file, keeping every whole record before a cut tail.
pub fn read_node_log(path: &Path) -> Result<NodeLog, NodeLogError> {
    let file = std::fs::File::open(path).map_err(|source| NodeLogError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    read_node_log_from(BufReader::new(file), path)
}

/// Reads a whole node log from any byte source; `path` only names it in errors.
pub fn read_node_log_from(input: impl Read, path: &Path) -> Result<NodeLog, NodeLogError> {
    let mut reader = FrameReader::new(input, path)?;
    let mut records = Vec::new();
    loop {
        match reader.next_frame()? {
            Frame::Record(r) => records.push(r),
            Frame::End => {
                return Ok(NodeLog {
                    version: reader.version(),
                    records,
                    truncation: None,
                });
            }
            Frame::Cut(t) => {
                return Ok(NodeLog {
                    version: reader.version(),
                    records,
                    truncation: Some(t),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::Lane;
    use crate::span::{Category, SpanAttrs};

    fn records() -> Vec<Record> {
        let span = |i: u64| Span {
            rank: Rank(1),
            lane: Lane(0),
            category: Category::Compute,
            op: OpId(3),
            start_ns: 1_000 * i,
            duration_ns: 500,
            attrs: SpanAttrs {
                flops: Some(64),
                layer: Some(2),
                ..SpanAttrs::default()
            },
        };
        vec![
            Record::NodeStart {
                node: NodeId(0),
                host: "h".into(),
                ranks: vec![Rank(0), Rank(1)],
                agent_pid: 7,
                anchor: ClockAnchor {
                    mono_ns: 1,
                    wall_ns: 2,
                    read_uncertainty_ns: 3,
                },
            },
            Record::OpName {
                rank: Rank(1),
                op: OpId(3),
                name: "matmul".into(),
            },
            Record::Spans((0..50).map(span).collect()),
            Record::Dropped {
                rank: Rank(1),
                spans: 4,
            },
            Record::ExpertTokens(ExpertTokens {
                rank: Rank(1),
                step: 2,
                experts: 8,
                first_expert: 4,
                held: 4,
                layers: vec![0, 1],
                tokens: vec![3, 0, 1, 9, 2, 2, 2, 2],
            }),
            Record::NodeEnd { at_ns: 99 },
        ]
    }

    fn encode(records: &[Record]) -> Result<Vec<u8>, NodeLogError> {
        let mut w = NodeLogWriter::new(Vec::new())?;
        for r in records {
            w.append(r)?;
        }
        Ok(w.into_inner())
    }

    fn read_bytes(bytes: &[u8]) -> Result<NodeLog, NodeLogError> {
        let dir = tempfile::tempdir().map_err(NodeLogError::Write)?;
        let path = dir.path().join("node-0.pnl");
        std::fs::write(&path, bytes).map_err(NodeLogError::Write)?;
        read_node_log(&path)
    }

    #[test]
    fn whole_log_round_trips() -> Result<(), NodeLogError> {
        let log = read_bytes(&encode(&records())?)?;
        assert_eq!(log.records, records());
        assert_eq!(log.truncation, None);
        Ok(())
    }

    #[test]
    fn log_cut_inside_a_record_keeps_every_record_before_the_cut() -> Result<(), NodeLogError> {
        let all = records();
        let whole = encode(&all)?;
        let before_last_two = encode(&all[..3])?.len();
        let spans_frame_end = before_last_two;
        // Cut in the middle of the fourth record's frame, and at every byte of the big span frame.
        for cut in (encode(&all[..2])?.len() + 1)..spans_frame_end {
            let log = read_bytes(&whole[..cut])?;
            assert_eq!(log.records, all[..2].to_vec(), "cut at byte {cut}");
            let t = log
                .truncation
                .ok_or(NodeLogError::Write(io::Error::other("no truncation")))?;
            assert_eq!(t.dropped_bytes as usize, cut - encode(&all[..2])?.len());
        }
        let cut = spans_frame_end + 3;
        let log = read_bytes(&whole[..cut])?;
        assert_eq!(log.records, all[..3].to_vec());
        assert_eq!(log.truncation.map(|t| t.dropped_bytes), Some(3));
        Ok(())
    }

    #[test]
    fn corrupt_record_stops_the_reader_at_that_record() -> Result<(), NodeLogError> {
        let all = records();
        let mut bytes = encode(&all)?;
        let third_frame = encode(&all[..2])?.len();
        bytes[third_frame + FRAME_HEADER_BYTES + 5] ^= 0xff;
        let log = read_bytes(&bytes)?;
        assert_eq!(log.records, all[..2].to_vec());
        assert!(
            log.truncation
                .is_some_and(|t| t.reason.contains("checksum"))
        );
        Ok(())
    }

    #[test]
    fn unknown_version_is_named() -> Result<(), NodeLogError> {
        let mut bytes = encode(&records())?;
        bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
        let err = read_bytes(&bytes)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("format version '7'"), "{err}");
        Ok(())
    }

    #[test]
    fn not_a_log_is_named() -> Result<(), NodeLogError> {
        let err = read_bytes(b"hello")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("not a pinch node log"), "{err}");
        Ok(())
    }
}
