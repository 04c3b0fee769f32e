//! The header that opens every message between two ranks of a mesh, and how a receiver checks
//! it against what it expects.
//!
//! A frame is a 40-byte little-endian header followed by `frame_bytes` of payload:
//! `[magic u32][group u32][kind u16][part u16][step u32][seq u64][op_bytes u64][frame_bytes u64]`.
//! `op_bytes` is the size every participant agrees on (the all-reduce buffer, a p2p message),
//! `frame_bytes` what this one frame carries. The receiver compares each field it knows in
//! advance, so ranks that issue different operations fail with `OpMismatch` naming both sides
//! instead of reading one operation's bytes as another's.

use super::CommError;
use std::fmt;

/// Bytes of a frame header.
pub const HEADER_BYTES: usize = 40;
/// First word of every header: a desynchronised stream shows up as a bad magic at once.
const FRAME_MAGIC: u32 = 0x4843_4e50; // "PNCH"

/// The operation a frame belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    AllReduceRing,
    AllReduceOneShot,
    AllGather,
    ReduceScatter,
    AllToAll,
    Broadcast,
    /// Both halves of a point-to-point transfer (send and recv).
    SendRecv,
}

const OP_KINDS: [OpKind; 7] = [
    OpKind::AllReduceRing,
    OpKind::AllReduceOneShot,
    OpKind::AllGather,
    OpKind::ReduceScatter,
    OpKind::AllToAll,
    OpKind::Broadcast,
    OpKind::SendRecv,
];

impl OpKind {
    pub fn name(self) -> &'static str {
        match self {
            OpKind::AllReduceRing => "all_reduce(ring)",
            OpKind::AllReduceOneShot => "all_reduce(one-shot)",
            OpKind::AllGather => "all_gather",
            OpKind::ReduceScatter => "reduce_scatter",
            OpKind::AllToAll => "all_to_all",
            OpKind::Broadcast => "broadcast",
            OpKind::SendRecv => "send/recv",
        }
    }

    fn code(self) -> u16 {
        OP_KINDS.iter().position(|k| *k == self).unwrap_or(0) as u16 + 1
    }

    fn from_code(code: u16) -> Option<OpKind> {
        OP_KINDS.get(usize::from(code).checked_sub(1)?).copied()
    }
}

/// What a frame is within its operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// Header only: "I have entered this operation" (see the module doc of `comm`).
    Arrive,
    /// Carries payload.
    Data,
    /// Header only: a large send asks the receiver whether it is ready.
    ReadyToSend,
    /// Header only: the receiver of a large send is ready for the data.
    ClearToSend,
}

const PARTS: [Part; 4] = [
    Part::Arrive,
    Part::Data,
    Part::ReadyToSend,
    Part::ClearToSend,
];

impl Part {
    fn name(self) -> &'static str {
        match self {
            Part::Arrive => "arrival",
            Part::Data => "data",
            Part::ReadyToSend => "ready-to-send",
            Part::ClearToSend => "clear-to-send",
        }
    }

    fn code(self) -> u16 {
        PARTS.iter().position(|p| *p == self).unwrap_or(0) as u16 + 1
    }

    fn from_code(code: u16) -> Option<Part> {
        PARTS.get(usize::from(code).checked_sub(1)?).copied()
    }
}

/// A decoded frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub group: u32,
    pub kind: OpKind,
    pub part: Part,
    /// The step of a multi-step algorithm (for the ring all-reduce, the frame's number among
    /// the operation's pieces on that link), or the root of a broadcast; 0 otherwise.
    pub step: u32,
    /// The group's collective number, or the pair's message number for send/recv.
    pub seq: u64,
    pub op_bytes: u64,
    pub frame_bytes: u64,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut bytes = [0u8; HEADER_BYTES];
        bytes[0..4].copy_from_slice(&FRAME_MAGIC.to_le_bytes());
        bytes[4..8].copy_from_slice(&self.group.to_le_bytes());
        bytes[8..10].copy_from_slice(&self.kind.code().to_le_bytes());
        bytes[10..12].copy_from_slice(&self.part.code().to_le_bytes());
        bytes[12..16].copy_from_slice(&self.step.to_le_bytes());
        bytes[16..24].copy_from_slice(&self.seq.to_le_bytes());
        bytes[24..32].copy_from_slice(&self.op_bytes.to_le_bytes());
        bytes[32..40].copy_from_slice(&self.frame_bytes.to_le_bytes());
        bytes
    }

    /// The header in `bytes`, or `None` when they are not a frame header at all.
    pub fn decode(bytes: &[u8; HEADER_BYTES]) -> Option<Header> {
        let u16_at = |at: usize| u16::from_le_bytes([bytes[at], bytes[at + 1]]);
        let u32_at = |at: usize| {
            u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
        };
        let u64_at = |at: usize| (u64::from(u32_at(at + 4)) << 32) | u64::from(u32_at(at));
        if u32_at(0) != FRAME_MAGIC {
            return None;
        }
        Some(Header {
            group: u32_at(4),
            kind: OpKind::from_code(u16_at(8))?,
            part: Part::from_code(u16_at(10))?,
            step: u32_at(12),
            seq: u64_at(16),
            op_bytes: u64_at(24),
            frame_bytes: u64_at(32),
        })
    }
}

impl fmt::Display for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} #{} of group {} ({} frame, step {}, {} of {} bytes)",
            self.kind.name(),
            self.seq,
            self.group,
            self.part.name(),
            self.step,
            self.frame_bytes,
            self.op_bytes
        )
    }
}

/// What a receiver knows about the next frame before reading it.
#[derive(Clone, Copy, Debug)]
pub struct Expect {
    pub group: u32,
    pub kind: OpKind,
    pub part: Part,
    pub step: u32,
    pub seq: u64,
    /// `None` where the receiver cannot know the operation's size (all-to-all, broadcast, recv).
    pub op_bytes: Option<u64>,
    /// `None` where the receiver cannot know this frame's size.
    pub frame_bytes: Option<u64>,
}

impl Expect {
    pub fn matches(&self, got: &Header) -> bool {
        (got.group, got.kind, got.part, got.step, got.seq)
            == (self.group, self.kind, self.part, self.step, self.seq)
            && self.op_bytes.is_none_or(|b| b == got.op_bytes)
            && self.frame_bytes.is_none_or(|b| b == got.frame_bytes)
    }

    /// The error for a peer that sent `got` (`None`: not a frame header) instead.
    pub fn mismatch(&self, peer: usize, got: Option<&Header>) -> CommError {
        CommError::OpMismatch {
            peer,
            expected: self.to_string(),
            got: got.map_or_else(
                || "bytes that are not a frame header".into(),
                Header::to_string,
            ),
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = |b: Option<u64>| b.map_or_else(|| "any".to_string(), |b| b.to_string());
        write!(
            f,
            "{} #{} of group {} ({} frame, step {}, {} of {} bytes)",
            self.kind.name(),
            self.seq,
            self.group,
            self.part.name(),
            self.step,
            bytes(self.frame_bytes),
            bytes(self.op_bytes)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            group: 7,
            kind: OpKind::ReduceScatter,
            part: Part::Data,
            step: 3,
            seq: u64::MAX - 1,
            op_bytes: 1 << 40,
            frame_bytes: 12,
        }
    }

    #[test]
    fn a_header_survives_encoding() {
        assert_eq!(Header::decode(&header().encode()), Some(header()));
        for kind in OP_KINDS {
            for part in PARTS {
                let h = Header {
                    kind,
                    part,
                    ..header()
                };
                assert_eq!(Header::decode(&h.encode()), Some(h));
            }
        }
    }

    #[test]
    fn garbage_is_not_a_header() {
        assert_eq!(Header::decode(&[0u8; HEADER_BYTES]), None);
        let mut bad_kind = header().encode();
        bad_kind[8] = 99;
        assert_eq!(Header::decode(&bad_kind), None);
    }

    #[test]
    fn expectations_compare_every_known_field() {
        let h = header();
        let exact = Expect {
            group: h.group,
            kind: h.kind,
            part: h.part,
            step: h.step,
            seq: h.seq,
            op_bytes: Some(h.op_bytes),
            frame_bytes: Some(h.frame_bytes),
        };
        assert!(exact.matches(&h));
        let any_size = Expect {
            op_bytes: None,
            frame_bytes: None,
            ..exact
        };
        assert!(any_size.matches(&Header {
            frame_bytes: 4,
            ..h
        }));
        assert!(!exact.matches(&Header {
            frame_bytes: 4,
            ..h
        }));
        assert!(!exact.matches(&Header { seq: 0, ..h }));
        assert!(!exact.matches(&Header { group: 0, ..h }));
        let err = exact
            .mismatch(2, Some(&Header { step: 0, ..h }))
            .to_string();
        assert!(err.contains("rank 2 sent reduce_scatter"), "{err}");
        assert!(err.contains("step 0"), "{err}");
    }
}
