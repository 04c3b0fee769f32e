//! Who exchanged data with whom, matched once for the traffic matrix and the critical path:
//! each collective's spans across ranks, by (communicator, sequence number), and each receive
//! with the send it took its message from.
//!
//! Both indexes hold span indices into `Timeline::spans`, built with one pass and one sort, so a
//! run of tens of millions of spans costs no per-span allocation.
//!
//! A send and a receive do not share a sequence number (each side numbers the operations *it*
//! issued on the group), but pinch's comm layer pairs the k-th send from A to B on a group with
//! the k-th receive on B from A; a rank's spans are in start order, so the k-th of each is found
//! by position.

use crate::timeline::{TimedSpan, Timeline};
use pinch_traces::{CollectiveKind, Rank};
use rayon::slice::ParallelSliceMut;

/// One rank's span of one collective.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Member {
    pub group: u32,
    pub seq: u64,
    pub rank: Rank,
    /// The span's index in `Timeline::spans`.
    pub index: u32,
}

/// Every collective span (sends and receives aside), sorted by (group, seq, rank): the spans of
/// one collective lie next to each other.
#[derive(Clone, Debug, Default)]
pub(crate) struct Collectives {
    members: Vec<Member>,
}

/// The (group, seq) of the collective a span takes part in; `None` for sends, receives and
/// spans of no collective.
pub fn collective_of(span: &TimedSpan) -> Option<(u32, u64)> {
    let c = span.attrs.collective?;
    let p2p = matches!(c.kind, CollectiveKind::Send | CollectiveKind::Recv);
    (!p2p).then_some((c.group, c.seq))
}

impl Collectives {
    pub fn new(timeline: &Timeline) -> Collectives {
        let mut members: Vec<Member> = timeline
            .spans
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let (group, seq) = collective_of(s)?;
                Some(Member {
                    group,
                    seq,
                    rank: s.rank,
                    index: u32::try_from(i).ok()?,
                })
            })
            .collect();
        // A large run has millions of collective spans: both cores sort them.
        members.par_sort_unstable();
        Collectives { members }
    }

    /// Each collective's members, in rank order.
    pub fn each(&self) -> impl Iterator<Item = &[Member]> {
        self.members
            .chunk_by(|a, b| (a.group, a.seq) == (b.group, b.seq))
    }

    /// The members of one collective (empty when none was seen).
    pub fn of(&self, group: u32, seq: u64) -> &[Member] {
        let key = (group, seq);
        let from = self.members.partition_point(|m| (m.group, m.seq) < key);
        let to = self.members.partition_point(|m| (m.group, m.seq) <= key);
        &self.members[from..to]
    }
}

/// A send or receive span, keyed by the pair it connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Leg {
    group: u32,
    src: Rank,
    dst: Rank,
    index: u32,
}

/// Every receive with its matching send (when the send's span was recorded).
#[derive(Clone, Debug, Default)]
pub(crate) struct Messages {
    /// (receive index, send index), sorted by receive index.
    by_recv: Vec<(u32, Option<u32>)>,
    /// (send index, receive index), sorted by send index.
    by_send: Vec<(u32, u32)>,
}

/// The sends and receives of a timeline, in span order, as a pass over the spans finds them.
#[derive(Clone, Debug, Default)]
pub(crate) struct Legs {
    sends: Vec<Leg>,
    recvs: Vec<Leg>,
}

impl Legs {
    /// Takes the span at `index` if it is a send or a receive; spans must come in index order.
    #[inline]
    pub fn see(&mut self, index: usize, span: &TimedSpan) {
        if let Some((leg, is_send)) = leg(index, span) {
            if is_send {
                &mut self.sends
            } else {
                &mut self.recvs
            }
            .push(leg);
        }
    }

    /// Appends the legs of spans that come after this one's.
    pub fn append(&mut self, mut later: Legs) {
        self.sends.append(&mut later.sends);
        self.recvs.append(&mut later.recvs);
    }
}

impl Messages {
    pub fn new(timeline: &Timeline) -> Messages {
        let mut legs = Legs::default();
        for (i, s) in timeline.spans.iter().enumerate() {
            legs.see(i, s);
        }
        Messages::from_legs(legs)
    }

    /// Pairs the sends and receives a pass over the spans found.
    pub fn from_legs(legs: Legs) -> Messages {
        let Legs {
            mut sends,
            mut recvs,
        } = legs;
        // Stable sorts: within one pair, spans stay in their rank's start order.
        sends.par_sort_by_key(|l| (l.group, l.src, l.dst));
        recvs.par_sort_by_key(|l| (l.group, l.src, l.dst));
        let mut by_recv = Vec::with_capacity(recvs.len());
        let mut by_send = Vec::new();
        let pair = |l: &Leg| (l.group, l.src, l.dst);
        let mut sends = sends.chunk_by(|a, b| pair(a) == pair(b)).peekable();
        for received in recvs.chunk_by(|a, b| pair(a) == pair(b)) {
            let key = pair(&received[0]);
            while sends.next_if(|s| pair(&s[0]) < key).is_some() {}
            let sent = sends.next_if(|s| pair(&s[0]) == key).unwrap_or(&[]);
            for (k, r) in received.iter().enumerate() {
                let send = sent.get(k).map(|s| s.index);
                by_recv.push((r.index, send));
                by_send.extend(send.map(|s| (s, r.index)));
            }
        }
        by_recv.sort_unstable();
        by_send.sort_unstable();
        Messages { by_recv, by_send }
    }

    /// Every receive's span index with its send's, in span order.
    pub fn receives(&self) -> &[(u32, Option<u32>)] {
        &self.by_recv
    }

    /// The send a receive took its message from.
    pub fn send_of(&self, recv: u32) -> Option<u32> {
        let at = self.by_recv.binary_search_by_key(&recv, |p| p.0).ok()?;
        self.by_recv[at].1
    }

    /// The receive that took a send's message.
    pub fn recv_of(&self, send: u32) -> Option<u32> {
        let at = self.by_send.binary_search_by_key(&send, |p| p.0).ok()?;
        Some(self.by_send[at].1)
    }
}

/// A send or receive span as a leg of its pair, and whether it is the sending side.
fn leg(i: usize, s: &TimedSpan) -> Option<(Leg, bool)> {
    let c = s.attrs.collective?;
    let peer = c.peer?;
    let index = u32::try_from(i).ok()?;
    let (src, dst, is_send) = match c.kind {
        CollectiveKind::Send => (s.rank, peer, true),
        CollectiveKind::Recv => (peer, s.rank, false),
        _ => return None,
    };
    let leg = Leg {
        group: c.group,
        src,
        dst,
        index,
    };
    Some((leg, is_send))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{collective, p2p, timeline};

    #[test]
    fn a_collective_s_spans_are_found_together_across_ranks() {
        let t = timeline(vec![
            collective(0, 1, 0, 100, 64),
            collective(1, 1, 10, 90, 64),
            collective(0, 2, 200, 100, 64),
            collective(1, 2, 210, 90, 64),
        ]);
        let c = Collectives::new(&t);
        let sizes: Vec<usize> = c.each().map(<[Member]>::len).collect();
        assert_eq!(sizes, vec![2, 2]);
        let second: Vec<i64> = c
            .of(0, 2)
            .iter()
            .map(|m| t.spans[m.index as usize].start_ns)
            .collect();
        assert_eq!(second, vec![200, 210]);
        assert!(c.of(0, 9).is_empty());
    }

    #[test]
    fn the_k_th_receive_takes_the_k_th_send_of_its_pair() {
        let t = timeline(vec![
            p2p(0, CollectiveKind::Send, 1, 0, 10, 64),
            p2p(0, CollectiveKind::Send, 1, 100, 10, 64),
            p2p(1, CollectiveKind::Recv, 0, 5, 20, 64),
            p2p(1, CollectiveKind::Recv, 0, 90, 30, 64),
            p2p(1, CollectiveKind::Recv, 2, 200, 30, 64),
        ]);
        let m = Messages::new(&t);
        // Spans sort by (rank, start): sends are 0 and 1, receives 2, 3 and 4.
        assert_eq!(m.receives(), &[(2, Some(0)), (3, Some(1)), (4, None)]);
        assert_eq!(
            (m.send_of(3), m.recv_of(0), m.recv_of(4)),
            (Some(1), Some(2), None)
        );
    }
}
