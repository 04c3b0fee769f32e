//! Point-to-point transfers within a group: `send` and `recv`.
//!
//! A message under `EAGER_MAX_BYTES` goes eagerly: the sender hands the frame to its link's
//! writer thread and returns, whether or not the receiver has arrived. A larger one uses a
//! rendezvous, so that it never sits whole in a queue: the sender announces it
//! (ready-to-send), waits for the receiver's clear-to-send, then sends the data and waits until
//! it is written. The k-th send from A to B in a group pairs with the k-th recv on B from A,
//! whatever other members do.

use super::collectives::{Op, check_index};
use super::frame::{OpKind, Part};
use super::{CommError, Group, Mesh, Outcome};

/// Messages shorter than this are sent eagerly, without waiting for the receiver.
pub const EAGER_MAX_BYTES: usize = 1 << 20;

impl Mesh {
    /// Sends `data` to member `to` of the group. Returns at once for messages under
    /// `EAGER_MAX_BYTES`; a larger one waits until the receiver is in `recv` and the data is
    /// written.
    pub fn send(&mut self, g: &mut Group, to: usize, data: &[u8]) -> Result<Outcome, CommError> {
        self.enter(g)?;
        check_peer(g, to)?;
        let seq = g.next_send(to);
        let op = Op::new(g, OpKind::SendRecv, seq, Some(data.len()));
        let peer = g.members()[to];
        self.guarded(|m| {
            // Frames of earlier eager sends that are out free their buffers for this one.
            m.net.reclaim(peer)?;
            if data.len() < EAGER_MAX_BYTES {
                m.net
                    .post(peer, &op.header(Part::Data, 0, data.len()), data)?;
                return Ok(op.outcome(0));
            }
            m.net.post(peer, &op.header(Part::ReadyToSend, 0, 0), &[])?;
            m.net
                .expect(peer, &op.expect(Part::ClearToSend, 0, Some(0)))?;
            let wait_ns = op.elapsed_ns();
            m.net
                .post(peer, &op.header(Part::Data, 0, data.len()), data)?;
            m.net.finish(std::iter::once(peer))?;
            Ok(op.outcome(wait_ns))
        })
    }

    /// Receives the next message from member `from` of the group into `data` (replacing it).
    pub fn recv(
        &mut self,
        g: &mut Group,
        from: usize,
        data: &mut Vec<u8>,
    ) -> Result<Outcome, CommError> {
        self.enter(g)?;
        check_peer(g, from)?;
        let seq = g.next_recv(from);
        let mut op = Op::new(g, OpKind::SendRecv, seq, None);
        let peer = g.members()[from];
        self.guarded(|m| {
            let got = m.net.header(peer, op.group)?;
            let eager = op.expect(Part::Data, 0, None);
            let announced = op.expect(Part::ReadyToSend, 0, Some(0));
            let header = match got {
                Some(h) if eager.matches(&h) && h.frame_bytes == h.op_bytes => h,
                Some(h) if announced.matches(&h) => h,
                _ => return Err(eager.mismatch(peer, got.as_ref())),
            };
            let wait_ns = op.elapsed_ns();
            let bytes = header.op_bytes as usize;
            if header.part == Part::ReadyToSend {
                op.op_bytes = Some(header.op_bytes);
                m.net.post(peer, &op.header(Part::ClearToSend, 0, 0), &[])?;
                m.net.expect(peer, &op.expect(Part::Data, 0, Some(bytes)))?;
            }
            data.clear();
            data.resize(bytes, 0);
            m.net.read(peer, data)?;
            m.net.finish(std::iter::once(peer))?;
            Ok(op.outcome(wait_ns))
        })
    }
}

/// Checks a send's or recv's other member: in the group, and not this rank itself.
fn check_peer(g: &Group, index: usize) -> Result<(), CommError> {
    check_index("send/recv peer", index, g.size())?;
    if index == g.index() {
        return Err(CommError::SelfMessage { index });
    }
    Ok(())
}
