//! The ring all-reduce over a `Mesh`, pipelined: each ring step's chunk travels as a run of
//! pieces, so that the link to the next member stays busy while this rank adds up and forwards
//! what came from the previous one.
//!
//! The ring has `2·(n−1)` steps: at step t member i sends chunk i−t to the next member and
//! receives chunk i−t−1 from the previous one (mod n), adding it on during the first `n−1`
//! (reduce-scatter) steps and storing it during the last `n−1` (all-gather). What arrives at step
//! t is what goes out at step t+1, so a piece can be forwarded as soon as it is added up instead
//! of after its whole chunk. Sends and receives each run in (step, piece) order. The frames a
//! rank sends carry their position in that order as their `step`, which is also the position in
//! which the next member receives them, so a lost or extra piece shows up as a mismatch.
//!
//! # Schedule
//!
//! Send number s is ready once its data is: at once for the first step's `np0` pieces, and for
//! a later one when receive number `s − np0` (the piece it forwards) has been taken. Before
//! receive number r, this rank posts the ready sends in order: those numbered up to r always,
//! waiting if need be until fewer than `SEND_WINDOW_FRAMES` frames to the next member are
//! unwritten, and later ones only while fewer than that are. So a link holds a bounded backlog
//! (and the frame pool a bounded number of buffers), and:
//! - No deadlock. A member blocked on its writer has frames the next member has not read, so
//!   the next member is not reading either: it is blocked on its own writer, and so on around
//!   the ring. But a member blocked on its writer while posting send s ≤ r has a next member
//!   that has not read past s−1, so is at a receive number below r: around the ring `r < r`.
//!   And when every member is blocked reading, member i+1 waits for a send of member i that is
//!   not posted, so is numbered above `r_i` (or not ready: at least `r_i + np0`): again
//!   `r > r` around the ring.
//! - No send reads data a later receive overwrites: the piece a send copies is next written by
//!   a receive at least `n−1` numbers later, and the send is posted before that receive.
//! - Every element is added in the ring's order, whatever the pieces, so members end with
//!   identical bits (the final sums travel as copies).
//!
//! The first piece goes out alone before this rank reads the first frames of its peers: an idle
//! unshaped link writes it without a copy, else `wait_ns` includes copying one piece (about
//! 0.1 ms), not a whole chunk.

use super::collectives::{Op, others};
use super::frame::{Expect, HEADER_BYTES, Part};
use super::link::QUEUE_FRAMES;
use super::{CommError, Group, Mesh};
use std::ops::Range;

/// A piece carries this many bytes: about 4 ms of a 1 Gbit/s link, small enough that adding
/// one up and copying it stay in cache, and (with its header) under `DIRECT_MAX_BYTES`, so an
/// idle link writes it without a copy.
const PIECE_BYTES: usize = 512 << 10;
/// Frames to the next member that may be unwritten before this rank stops sending ahead: the
/// writer thread's backlog, which keeps the link busy while this rank is held up (about 30 ms
/// of a 1 Gbit/s link).
const SEND_WINDOW_FRAMES: usize = 8;
// Posting within the window never fills a link's queue (an arrival may add a frame), so it
// never blocks there.
const _: () = assert!(SEND_WINDOW_FRAMES + 2 < QUEUE_FRAMES);

/// Where the pieces of one member's ring all-reduce lie in its buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RingPlan {
    /// Members in the ring.
    n: usize,
    /// This member's index among them.
    i: usize,
    len: usize,
    chunk_elems: usize,
    piece_elems: usize,
}

impl RingPlan {
    /// The plan for member `i` of `n` (at least 2) reducing `len` elements.
    fn new(len: usize, n: usize, i: usize) -> RingPlan {
        RingPlan {
            n,
            i,
            len,
            chunk_elems: len.div_ceil(n),
            piece_elems: PIECE_BYTES / 4,
        }
    }

    fn steps(&self) -> usize {
        2 * (self.n - 1)
    }

    /// The chunk sent at step `t`.
    fn send_chunk(&self, t: usize) -> usize {
        (self.i + 2 * self.n - t) % self.n
    }

    /// The chunk received at step `t`: the one sent at step t+1.
    fn recv_chunk(&self, t: usize) -> usize {
        self.send_chunk(t + 1)
    }

    /// Pieces sent in all.
    fn sends(&self) -> usize {
        (0..self.steps())
            .map(|t| self.pieces(self.send_chunk(t)))
            .sum()
    }

    /// Whether the chunk received at step `t` is added on (else it replaces).
    fn reduces(&self, t: usize) -> bool {
        t < self.n - 1
    }

    fn chunk(&self, c: usize) -> Range<usize> {
        (c * self.chunk_elems).min(self.len)..((c + 1) * self.chunk_elems).min(self.len)
    }

    /// Pieces of chunk `c`: an empty chunk still travels as one empty piece.
    fn pieces(&self, c: usize) -> usize {
        self.chunk(c).len().div_ceil(self.piece_elems).max(1)
    }

    /// The elements of piece `k` of chunk `c`.
    fn piece(&self, c: usize, k: usize) -> Range<usize> {
        let chunk = self.chunk(c);
        let start = (chunk.start + k * self.piece_elems).min(chunk.end);
        start..(start + self.piece_elems).min(chunk.end)
    }
}

/// A position in the (step, piece) order of a ring all-reduce's sends or receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Cursor {
    step: usize,
    piece: usize,
    /// How many came before.
    index: usize,
}

impl Cursor {
    /// Moves on by one, in a step of `pieces` pieces.
    fn advance(&mut self, pieces: usize) {
        self.index += 1;
        self.piece += 1;
        if self.piece == pieces {
            self.step += 1;
            self.piece = 0;
        }
    }
}

/// Which sends `post_ready` may post.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Posting {
    /// Only the first, before anything is received.
    First,
    /// The ready ones: up to the receive at hand always, beyond it while the window allows.
    Ahead,
    /// All that are left, once every receive has been taken.
    Rest,
}

/// One member's ring all-reduce under way: its neighbours and where its sends and receives
/// stand.
struct Flow<'a> {
    op: &'a Op,
    plan: RingPlan,
    next: usize,
    prev: usize,
    /// Pieces of the first step: send s forwards receive `s − np0`.
    np0: usize,
    sent: Cursor,
    received: Cursor,
}

impl Mesh {
    /// Ring all-reduce of `data` over `g` (of at least 2 members), pipelined (see the module
    /// doc). Returns `wait_ns`.
    pub(super) fn ring_all_reduce(
        &mut self,
        op: &Op,
        g: &Group,
        data: &mut [f32],
    ) -> Result<u64, CommError> {
        let (n, i, members) = (g.size(), g.index(), g.members());
        let plan = RingPlan::new(data.len(), n, i);
        let mut flow = Flow {
            op,
            plan,
            next: members[(i + 1) % n],
            prev: members[(i + n - 1) % n],
            np0: plan.pieces(plan.send_chunk(0)),
            sent: Cursor::default(),
            received: Cursor::default(),
        };
        // The window bounds the frames unwritten at once, so buffers for that many (and for an
        // arrival that a busy or shaped link queues) are all the sends need.
        let frame_bytes = HEADER_BYTES + 4 * plan.piece_elems.min(plan.chunk_elems);
        let frames = SEND_WINDOW_FRAMES.min(plan.sends()) + 1;
        self.net.pool.reserve(frames, frame_bytes);
        // Next learns of our arrival from our first piece; everyone else gets a header.
        let arrive = op.header(Part::Arrive, 0, 0);
        self.net
            .post_each(others(g).filter(|&p| p != flow.next), &arrive, &[])?;
        self.post_ready(&mut flow, data, Posting::First)?;
        let wait_ns = self.ring_arrivals(&flow, g)?;
        while flow.received.step < plan.steps() {
            self.post_ready(&mut flow, data, Posting::Ahead)?;
            if flow.received.index > 0 {
                let expect = piece_expect(&flow, &flow.received);
                self.net.expect(flow.prev, &expect)?;
            }
            let (t, k) = (flow.received.step, flow.received.piece);
            let c = plan.recv_chunk(t);
            self.take_chunk(flow.prev, &mut data[plan.piece(c, k)], plan.reduces(t))?;
            flow.received.advance(plan.pieces(c));
        }
        self.post_ready(&mut flow, data, Posting::Rest)?;
        Ok(wait_ns)
    }

    /// Reads the first frame's header from every other member: the first piece from the
    /// previous member, an arrival from the rest. Returns how long after entering the last came.
    fn ring_arrivals(&mut self, flow: &Flow, g: &Group) -> Result<u64, CommError> {
        let first = piece_expect(flow, &Cursor::default());
        for p in others(g) {
            let expect = if p == flow.prev {
                first
            } else {
                flow.op.expect(Part::Arrive, 0, Some(0))
            };
            self.net.expect(p, &expect)?;
        }
        Ok(flow.op.elapsed_ns())
    }

    /// Posts sends in order, as `posting` allows (see the module doc's schedule).
    fn post_ready(
        &mut self,
        flow: &mut Flow,
        data: &[f32],
        posting: Posting,
    ) -> Result<(), CommError> {
        let plan = flow.plan;
        let (ready, must) = match posting {
            Posting::First => (1, 1),
            Posting::Ahead => (flow.received.index + flow.np0, flow.received.index + 1),
            Posting::Rest => (usize::MAX, usize::MAX),
        };
        while flow.sent.step < plan.steps() && flow.sent.index < ready {
            if self.net.unwritten(flow.next)? >= SEND_WINDOW_FRAMES {
                if flow.sent.index >= must {
                    break;
                }
                self.net.wait_unwritten(flow.next, SEND_WINDOW_FRAMES - 1)?;
            }
            let c = plan.send_chunk(flow.sent.step);
            let payload: &[u8] = bytemuck::cast_slice(&data[plan.piece(c, flow.sent.piece)]);
            let header = flow
                .op
                .header(Part::Data, flow.sent.index as u32, payload.len());
            self.net.post_frame(flow.next, &header, payload)?;
            flow.sent.advance(plan.pieces(c));
        }
        Ok(())
    }
}

/// What the frame of receive `at` looks like: the previous member numbers its sends in the
/// order this rank receives them.
fn piece_expect(flow: &Flow, at: &Cursor) -> Expect {
    let plan = flow.plan;
    let piece = plan.piece(plan.recv_chunk(at.step), at.piece);
    flow.op
        .expect(Part::Data, at.index as u32, Some(4 * piece.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every (step, piece) of one side, in order, with the elements it covers.
    fn walk(plan: &RingPlan, chunk_of: impl Fn(usize) -> usize) -> Vec<(usize, Range<usize>)> {
        let mut at = Cursor::default();
        let mut out = Vec::new();
        while at.step < plan.steps() {
            let c = chunk_of(at.step);
            out.push((at.step, plan.piece(c, at.piece)));
            at.advance(plan.pieces(c));
        }
        out
    }

    #[test]
    fn the_pieces_of_a_step_tile_its_chunk() {
        for (len, n) in [
            (0, 2),
            (1, 4),
            (7, 3),
            (1001, 4),
            (5 << 20, 2),
            (3 << 20, 3),
        ] {
            for i in 0..n {
                let plan = RingPlan::new(len, n, i);
                for t in 0..plan.steps() {
                    let c = plan.send_chunk(t);
                    let covered: Vec<usize> =
                        (0..plan.pieces(c)).flat_map(|k| plan.piece(c, k)).collect();
                    let whole: Vec<usize> = plan.chunk(c).collect();
                    assert_eq!(covered, whole, "len {len} n {n} i {i} step {t}");
                }
            }
        }
    }

    #[test]
    fn a_member_receives_pieces_in_the_order_its_previous_member_sends_them() {
        let (len, n) = (3 << 20, 3);
        for i in 0..n {
            let me = RingPlan::new(len, n, i);
            let prev = RingPlan::new(len, n, (i + n - 1) % n);
            let received = walk(&me, |t| me.recv_chunk(t));
            let sent = walk(&prev, |t| prev.send_chunk(t));
            assert_eq!(received, sent, "member {i}");
            assert!(received.len() > 2 * me.steps(), "several pieces per step");
        }
    }

    #[test]
    fn a_send_forwards_the_receive_np0_numbers_earlier() {
        let plan = RingPlan::new(5 << 20, 4, 1);
        let np0 = plan.pieces(plan.send_chunk(0));
        let sends = walk(&plan, |t| plan.send_chunk(t));
        let receives = walk(&plan, |t| plan.recv_chunk(t));
        for (s, (step, piece)) in sends.iter().enumerate().skip(np0) {
            assert_eq!(receives[s - np0], (step - 1, piece.clone()), "send {s}");
        }
    }
}
