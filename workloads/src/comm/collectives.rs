//! The collectives over a `Mesh` and a `Group`: all-reduce (ring and one-shot), all-gather,
//! reduce-scatter, all-to-all(v) and broadcast (the ring all-reduce's steps are in
//! `ring_pipeline.rs`); see the `comm` module doc for the protocol and for what
//! `Outcome::wait_ns` means for each.
//!
//! Sums are always formed in one fixed order (the ring's for `Ring`, group order otherwise), so
//! the same inputs give bit-identical results, and all-reduce members end with identical bits.

use super::frame::{Expect, HEADER_BYTES, Header, OpKind, Part};
use super::link::{DIRECT_MAX_BYTES, Link};
use super::mesh::{Mesh, Net, Scratch};
use super::{AllReduceAlgo, CommError, Group, Outcome};
use std::time::Instant;

/// `AllReduceAlgo::Auto` uses one-shot while the buffer times the other members, the bytes
/// one-shot sends per rank, is at most this, and the ring above. One-shot moves `n−1` times the
/// buffer in one step, the ring `2·(n−1)/n` times in `2·(n−1)` steps, so one-shot wins while
/// per-step latency dominates. Measured with `pinch bench collectives --algo` on the 2-core
/// development machine: the two cross near 64 KiB for 2 ranks and 16 KiB for 4 ranks.
pub const ONE_SHOT_MAX_BYTES: usize = 64 << 10;

#[cfg(not(target_endian = "little"))]
compile_error!("pinch's wire format sends f32 in little-endian byte order");

/// One operation in flight: what its frames carry and when it started.
#[derive(Clone, Copy, Debug)]
pub(super) struct Op {
    pub group: u32,
    pub kind: OpKind,
    pub seq: u64,
    /// The size every participant agrees on, `None` where receivers cannot know it.
    pub op_bytes: Option<u64>,
    pub started: Instant,
}

impl Op {
    pub fn new(g: &Group, kind: OpKind, seq: u64, op_bytes: Option<usize>) -> Op {
        Op {
            group: g.id(),
            kind,
            seq,
            op_bytes: op_bytes.map(|b| b as u64),
            started: Instant::now(),
        }
    }

    pub fn header(&self, part: Part, step: u32, frame_bytes: usize) -> Header {
        Header {
            group: self.group,
            kind: self.kind,
            part,
            step,
            seq: self.seq,
            op_bytes: self.op_bytes.unwrap_or(frame_bytes as u64),
            frame_bytes: frame_bytes as u64,
        }
    }

    pub fn expect(&self, part: Part, step: u32, frame_bytes: Option<usize>) -> Expect {
        Expect {
            group: self.group,
            kind: self.kind,
            part,
            step,
            seq: self.seq,
            op_bytes: self.op_bytes,
            frame_bytes: frame_bytes.map(|b| b as u64),
        }
    }

    pub fn elapsed_ns(&self) -> u64 {
        self.started.elapsed().as_nanos() as u64
    }

    pub fn outcome(&self, wait_ns: u64) -> Outcome {
        Outcome {
            wait_ns,
            total_ns: self.elapsed_ns(),
        }
    }
}

impl Net {
    fn link(&mut self, peer: usize) -> Result<&mut Link, CommError> {
        link_of(&mut self.links, peer)
    }

    /// Sends `header` and `payload` to `peer`.
    pub fn post(&mut self, peer: usize, header: &Header, payload: &[u8]) -> Result<(), CommError> {
        self.post_each(std::iter::once(peer), header, payload)
    }

    /// Sends one frame to every rank of `peers`. A small frame goes directly where a link
    /// allows it, else through the writer threads, which share one copy. A large frame's header
    /// goes ahead on its own, so that peers see this rank arrive before its payload has been
    /// copied for the writers.
    pub fn post_each(
        &mut self,
        peers: impl Iterator<Item = usize> + Clone,
        header: &Header,
        payload: &[u8],
    ) -> Result<(), CommError> {
        let encoded = header.encode();
        if encoded.len() + payload.len() <= DIRECT_MAX_BYTES {
            return self.post_whole(peers, &encoded, payload);
        }
        self.post_whole(peers.clone(), &encoded, &[])?;
        let body = self.pool.bytes([payload, &[]]);
        for peer in peers {
            link_of(&mut self.links, peer)?.post(&body, &mut self.pool)?;
        }
        Ok(())
    }

    /// Sends `header` and `payload` to `peer` as one frame, whatever its size (a large one's
    /// header does not go ahead, as with `post`).
    pub fn post_frame(
        &mut self,
        peer: usize,
        header: &Header,
        payload: &[u8],
    ) -> Result<(), CommError> {
        self.post_whole(std::iter::once(peer), &header.encode(), payload)
    }

    /// Sends each `(peer, header, payload)` frame, every large frame's header ahead of any
    /// payload copy, as `post_each` does.
    pub fn post_scatter<'a>(
        &mut self,
        frames: impl Iterator<Item = (usize, Header, &'a [u8])> + Clone,
    ) -> Result<(), CommError> {
        let large = |payload: &[u8]| HEADER_BYTES + payload.len() > DIRECT_MAX_BYTES;
        for (peer, header, payload) in frames.clone() {
            let now = if large(payload) { &[] } else { payload };
            self.post_whole(std::iter::once(peer), &header.encode(), now)?;
        }
        for (peer, _, payload) in frames.filter(|(_, _, payload)| large(payload)) {
            let body = self.pool.bytes([payload, &[]]);
            link_of(&mut self.links, peer)?.post(&body, &mut self.pool)?;
        }
        Ok(())
    }

    /// Sends `encoded` then `payload` to every rank of `peers`, directly where possible.
    fn post_whole(
        &mut self,
        peers: impl Iterator<Item = usize>,
        encoded: &[u8],
        payload: &[u8],
    ) -> Result<(), CommError> {
        let mut shared = None;
        for peer in peers {
            let link = link_of(&mut self.links, peer)?;
            if !link.try_direct(encoded, payload, &mut self.pool)? {
                let frame = shared.get_or_insert_with(|| self.pool.bytes([encoded, payload]));
                link.post(frame, &mut self.pool)?;
            }
        }
        Ok(())
    }

    /// The next header from `peer`, which must be what `expect` describes.
    pub fn expect(&mut self, peer: usize, expect: &Expect) -> Result<Header, CommError> {
        let got = self.link(peer)?.next_header(expect.group)?;
        match got {
            Some(h) if expect.matches(&h) => Ok(h),
            _ => Err(expect.mismatch(peer, got.as_ref())),
        }
    }

    /// The next header of `group` from `peer`, unchecked (`None` when it is not a header).
    pub fn header(&mut self, peer: usize, group: u32) -> Result<Option<Header>, CommError> {
        self.link(peer)?.next_header(group)
    }

    pub fn read(&mut self, peer: usize, dst: &mut [u8]) -> Result<(), CommError> {
        self.link(peer)?.read_payload(dst)
    }

    pub fn read_f32(&mut self, peer: usize, dst: &mut [f32]) -> Result<(), CommError> {
        self.read(peer, bytemuck::cast_slice_mut(dst))
    }

    /// Waits until everything sent to `peers` is written.
    pub fn finish(&mut self, peers: impl Iterator<Item = usize>) -> Result<(), CommError> {
        for peer in peers {
            if let Some(Some(link)) = self.links.get_mut(peer) {
                link.finish_sends(&mut self.pool)?;
            }
        }
        Ok(())
    }

    /// Frames to `peer` not yet written (the buffers of written ones are taken back).
    pub fn unwritten(&mut self, peer: usize) -> Result<usize, CommError> {
        link_of(&mut self.links, peer)?.unwritten(&mut self.pool)
    }

    /// Waits until at most `frames` frames to `peer` are not yet written.
    pub fn wait_unwritten(&mut self, peer: usize, frames: usize) -> Result<(), CommError> {
        link_of(&mut self.links, peer)?.wait_unwritten(frames, &mut self.pool)
    }

    /// Takes back the buffers of frames to `peer` already written.
    pub fn reclaim(&mut self, peer: usize) -> Result<(), CommError> {
        if let Some(Some(link)) = self.links.get_mut(peer) {
            link.reclaim(&mut self.pool)?;
        }
        Ok(())
    }
}

fn link_of(links: &mut [Option<Link>], peer: usize) -> Result<&mut Link, CommError> {
    links
        .get_mut(peer)
        .and_then(Option::as_mut)
        .ok_or(CommError::Broken)
}

/// The other members of `g`, in group order.
pub(super) fn others(g: &Group) -> impl Iterator<Item = usize> + Clone + '_ {
    let me = g.my_rank();
    g.members().iter().copied().filter(move |&p| p != me)
}

fn f32_bytes(data: &[f32]) -> &[u8] {
    bytemuck::cast_slice(data)
}

fn add_into(acc: &mut [f32], other: &[f32]) {
    for (a, b) in acc.iter_mut().zip(other) {
        *a += b;
    }
}

/// Checks that a buffer holds the number of elements the operation needs.
fn check_len(what: &'static str, got: usize, expected: usize) -> Result<(), CommError> {
    if got == expected {
        Ok(())
    } else {
        Err(CommError::BufferSize {
            what,
            got,
            expected,
        })
    }
}

impl Mesh {
    /// Checks that an operation on `g` may run on this mesh.
    pub(super) fn enter(&self, g: &Group) -> Result<(), CommError> {
        if self.broken {
            return Err(CommError::Broken);
        }
        if g.my_rank() != self.rank {
            return Err(CommError::GroupNotForThisRank {
                group: g.id(),
                group_rank: g.my_rank(),
                rank: self.rank,
            });
        }
        match g.members().iter().find(|&&m| m >= self.world) {
            Some(&member) => Err(CommError::MemberOutOfRange {
                group: g.id(),
                member,
                world: self.world,
            }),
            None => Ok(()),
        }
    }

    /// Runs the communicating part of an operation; a failure leaves the mesh broken, since
    /// its links may now hold half an operation.
    pub(super) fn guarded<T>(
        &mut self,
        body: impl FnOnce(&mut Mesh) -> Result<T, CommError>,
    ) -> Result<T, CommError> {
        let outcome = body(self);
        self.broken |= outcome.is_err();
        outcome
    }

    /// Sums `data` elementwise across the group; every member ends with identical bits.
    pub fn all_reduce_sum(
        &mut self,
        g: &mut Group,
        data: &mut [f32],
        algo: AllReduceAlgo,
    ) -> Result<Outcome, CommError> {
        self.enter(g)?;
        let bytes = 4 * data.len();
        let kind = match algo {
            AllReduceAlgo::Ring => OpKind::AllReduceRing,
            AllReduceAlgo::OneShot => OpKind::AllReduceOneShot,
            AllReduceAlgo::Auto if bytes.saturating_mul(g.size() - 1) <= ONE_SHOT_MAX_BYTES => {
                OpKind::AllReduceOneShot
            }
            AllReduceAlgo::Auto => OpKind::AllReduceRing,
        };
        let seq = g.next_collective();
        let op = Op::new(g, kind, seq, Some(bytes));
        if g.size() == 1 {
            return Ok(op.outcome(0));
        }
        self.guarded(|m| {
            let wait_ns = match kind {
                OpKind::AllReduceRing => m.ring_all_reduce(&op, g, data),
                _ => m.one_shot_all_reduce(&op, g, data),
            }?;
            m.net.finish(others(g))?;
            Ok(op.outcome(wait_ns))
        })
    }

    /// Reads the payload of a frame from `peer` into `target`, adding it on when `reduce`.
    pub(super) fn take_chunk(
        &mut self,
        peer: usize,
        target: &mut [f32],
        reduce: bool,
    ) -> Result<(), CommError> {
        if !reduce {
            return self.net.read_f32(peer, target);
        }
        let incoming = &mut self.scratch.incoming;
        incoming.resize(target.len(), 0.0);
        self.net.read_f32(peer, incoming)?;
        add_into(target, incoming);
        Ok(())
    }

    /// One-shot all-reduce: everyone sends everyone its buffer; each member sums the buffers in
    /// group order. Returns `wait_ns`.
    fn one_shot_all_reduce(
        &mut self,
        op: &Op,
        g: &Group,
        data: &mut [f32],
    ) -> Result<u64, CommError> {
        let bytes = 4 * data.len();
        self.net
            .post_each(others(g), &op.header(Part::Data, 0, bytes), f32_bytes(data))?;
        let wait_ns = self.arrivals(op, g, Part::Data, Some(bytes))?;
        let members = g.members();
        let Scratch { own, incoming } = &mut self.scratch;
        if g.index() != 0 {
            own.clear();
            own.extend_from_slice(data);
            self.net.read_f32(members[0], data)?;
        }
        for (j, &member) in members.iter().enumerate().skip(1) {
            if j == g.index() {
                add_into(data, own);
            } else {
                incoming.resize(data.len(), 0.0);
                self.net.read_f32(member, incoming)?;
                add_into(data, incoming);
            }
        }
        Ok(wait_ns)
    }

    /// Reads every other member's first frame of `op` (each sent one on entering) and returns
    /// how long after entering the last one had arrived.
    fn arrivals(
        &mut self,
        op: &Op,
        g: &Group,
        part: Part,
        frame_bytes: Option<usize>,
    ) -> Result<u64, CommError> {
        let expect = op.expect(part, 0, frame_bytes);
        for p in others(g) {
            self.net.expect(p, &expect)?;
        }
        Ok(op.elapsed_ns())
    }

    /// `recv` = every member's `send`, concatenated in group order.
    pub fn all_gather(
        &mut self,
        g: &mut Group,
        send: &[f32],
        recv: &mut [f32],
    ) -> Result<Outcome, CommError> {
        self.enter(g)?;
        check_len("all_gather's recv", recv.len(), send.len() * g.size())?;
        let bytes = 4 * send.len();
        let seq = g.next_collective();
        let op = Op::new(g, OpKind::AllGather, seq, Some(bytes));
        let k = send.len();
        if g.size() == 1 {
            recv.copy_from_slice(send);
            return Ok(op.outcome(0));
        }
        self.guarded(|m| {
            m.net
                .post_each(others(g), &op.header(Part::Data, 0, bytes), f32_bytes(send))?;
            let wait_ns = m.arrivals(&op, g, Part::Data, Some(bytes))?;
            for (j, &member) in g.members().iter().enumerate() {
                let into = &mut recv[j * k..(j + 1) * k];
                if j == g.index() {
                    into.copy_from_slice(send);
                } else {
                    m.net.read_f32(member, into)?;
                }
            }
            m.net.finish(others(g))?;
            Ok(op.outcome(wait_ns))
        })
    }

    /// Member j's `recv` = the sum over members, in group order, of their `send` chunk j.
    pub fn reduce_scatter_sum(
        &mut self,
        g: &mut Group,
        send: &[f32],
        recv: &mut [f32],
    ) -> Result<Outcome, CommError> {
        self.enter(g)?;
        check_len("reduce_scatter's send", send.len(), recv.len() * g.size())?;
        let seq = g.next_collective();
        let op = Op::new(g, OpKind::ReduceScatter, seq, Some(4 * send.len()));
        let (k, me) = (recv.len(), g.index());
        let chunk = |j: usize| &send[j * k..(j + 1) * k];
        if g.size() == 1 {
            recv.copy_from_slice(send);
            return Ok(op.outcome(0));
        }
        self.guarded(|m| {
            let frames = g.members().iter().enumerate().filter(|(j, _)| *j != me);
            let header = op.header(Part::Data, 0, 4 * k);
            m.net
                .post_scatter(frames.map(|(j, &member)| (member, header, f32_bytes(chunk(j)))))?;
            let wait_ns = m.arrivals(&op, g, Part::Data, Some(4 * k))?;
            for (j, &member) in g.members().iter().enumerate() {
                match (j, j == me) {
                    (0, true) => recv.copy_from_slice(chunk(me)),
                    (0, false) => m.net.read_f32(member, recv)?,
                    (_, true) => add_into(recv, chunk(me)),
                    (_, false) => m.take_chunk(member, recv, true)?,
                }
            }
            m.net.finish(others(g))?;
            Ok(op.outcome(wait_ns))
        })
    }

    /// All-to-all(v): `send` holds, in group order, `send_counts[j]` elements for member j
    /// (this rank included). `recv` is cleared then filled with what each member sent to this
    /// rank, in group order; `recv_counts[j]` (resized to the group size) is how many came from
    /// member j.
    pub fn all_to_all_v(
        &mut self,
        g: &mut Group,
        send: &[f32],
        send_counts: &[usize],
        recv: &mut Vec<f32>,
        recv_counts: &mut Vec<usize>,
    ) -> Result<Outcome, CommError> {
        self.enter(g)?;
        check_len("all_to_all's send_counts", send_counts.len(), g.size())?;
        check_len("all_to_all's send", send.len(), send_counts.iter().sum())?;
        let seq = g.next_collective();
        let op = Op::new(g, OpKind::AllToAll, seq, None);
        let me = g.index();
        let start = |j: usize| send_counts[..j].iter().sum::<usize>();
        let to = |j: usize| &send[start(j)..start(j) + send_counts[j]];
        recv_counts.clear();
        recv_counts.resize(g.size(), 0);
        recv_counts[me] = send_counts[me];
        recv.clear();
        if g.size() == 1 {
            recv.extend_from_slice(send);
            return Ok(op.outcome(0));
        }
        self.guarded(|m| {
            let frames = g.members().iter().enumerate().filter(|(j, _)| *j != me);
            m.net.post_scatter(frames.map(|(j, &member)| {
                (
                    member,
                    op.header(Part::Data, 0, 4 * send_counts[j]),
                    f32_bytes(to(j)),
                )
            }))?;
            let wait_ns = m.all_to_all_arrivals(&op, g, recv_counts)?;
            recv.resize(recv_counts.iter().sum(), 0.0);
            let mut at = 0;
            for (j, &member) in g.members().iter().enumerate() {
                let into = &mut recv[at..at + recv_counts[j]];
                if j == me {
                    into.copy_from_slice(to(j));
                } else {
                    m.net.read_f32(member, into)?;
                }
                at += recv_counts[j];
            }
            m.net.finish(others(g))?;
            Ok(op.outcome(wait_ns))
        })
    }

    /// Like `arrivals`, noting how many elements each member is sending.
    fn all_to_all_arrivals(
        &mut self,
        op: &Op,
        g: &Group,
        recv_counts: &mut [usize],
    ) -> Result<u64, CommError> {
        let expect = op.expect(Part::Data, 0, None);
        for (j, &member) in g.members().iter().enumerate() {
            if j != g.index() {
                let header = self.net.expect(member, &expect)?;
                if header.frame_bytes % 4 != 0 {
                    return Err(expect.mismatch(member, Some(&header)));
                }
                recv_counts[j] = (header.frame_bytes / 4) as usize;
            }
        }
        Ok(op.elapsed_ns())
    }

    /// The bytes of member `root` go to every member; elsewhere `data` is replaced by them.
    pub fn broadcast(
        &mut self,
        g: &mut Group,
        root: usize,
        data: &mut Vec<u8>,
    ) -> Result<Outcome, CommError> {
        self.enter(g)?;
        check_index("broadcast's root", root, g.size())?;
        let root_bytes = (g.index() == root).then_some(data.len());
        let seq = g.next_collective();
        let mut op = Op::new(g, OpKind::Broadcast, seq, root_bytes);
        if g.size() == 1 {
            return Ok(op.outcome(0));
        }
        let step = root as u32;
        self.guarded(|m| {
            let wait_ns = if let Some(bytes) = root_bytes {
                m.net
                    .post_each(others(g), &op.header(Part::Data, step, bytes), data)?;
                // Members that do not know the size yet announce themselves with 0 bytes.
                op.op_bytes = None;
                let arrive = op.expect(Part::Arrive, step, Some(0));
                for p in others(g) {
                    m.net.expect(p, &arrive)?;
                }
                op.elapsed_ns()
            } else {
                m.broadcast_receive(&op, g.members()[root], step, data)?
            };
            m.net.finish(others(g))?;
            Ok(op.outcome(wait_ns))
        })
    }

    /// A non-root's side of a broadcast: announce, then take the root's bytes.
    fn broadcast_receive(
        &mut self,
        op: &Op,
        root: usize,
        step: u32,
        data: &mut Vec<u8>,
    ) -> Result<u64, CommError> {
        self.net
            .post(root, &op.header(Part::Arrive, step, 0), &[])?;
        let header = self.net.expect(root, &op.expect(Part::Data, step, None))?;
        let wait_ns = op.elapsed_ns();
        data.clear();
        data.resize(header.frame_bytes as usize, 0);
        self.net.read(root, data)?;
        Ok(wait_ns)
    }
}

/// Checks a group index given as an argument (a root, a peer).
pub(super) fn check_index(what: &'static str, index: usize, size: usize) -> Result<(), CommError> {
    if index < size {
        Ok(())
    } else {
        Err(CommError::MemberIndex { what, index, size })
    }
}
