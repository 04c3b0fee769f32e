//! Process groups (communicators) and what one operation on them reports.

use super::CommError;

/// A communicator: an ordered subset of the world's ranks. Every member must issue the same
/// sequence of operations on it; `id` must be unique per group within the world (the caller
/// picks it), since it travels in every frame and is checked on arrival.
#[derive(Clone, Debug)]
pub struct Group {
    id: u32,
    members: Vec<usize>,
    index: usize,
    /// Operations issued on this group by this rank, collectives and point-to-point alike.
    seq: u64,
    /// Collectives issued: every member's frames of one collective carry the same number.
    collectives: u64,
    /// Per member: messages sent to it and received from it, numbering send/recv pairs.
    sent: Vec<u64>,
    received: Vec<u64>,
}

impl Group {
    /// The group `members` (in group order) as seen by `my_rank`, which must be one of them.
    pub fn new(id: u32, members: Vec<usize>, my_rank: usize) -> Result<Group, CommError> {
        if let Some(rank) = members
            .iter()
            .enumerate()
            .find_map(|(i, m)| members[..i].contains(m).then_some(*m))
        {
            return Err(CommError::DuplicateMember { group: id, rank });
        }
        let Some(index) = members.iter().position(|&m| m == my_rank) else {
            return Err(CommError::NotAMember {
                group: id,
                rank: my_rank,
                members: format!("{members:?}"),
            });
        };
        let size = members.len();
        Ok(Group {
            id,
            members,
            index,
            seq: 0,
            collectives: 0,
            sent: vec![0; size],
            received: vec![0; size],
        })
    }

    pub fn id(&self) -> u32 {
        self.id
    }

    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// This rank's position in the group.
    pub fn index(&self) -> usize {
        self.index
    }

    pub fn members(&self) -> &[usize] {
        &self.members
    }

    /// The sequence number the next operation will carry: the operations this rank issued on
    /// the group so far.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// This rank's world rank.
    pub(super) fn my_rank(&self) -> usize {
        self.members[self.index]
    }

    /// Counts a collective; returns the number its frames carry.
    pub(super) fn next_collective(&mut self) -> u64 {
        self.seq += 1;
        self.collectives += 1;
        self.collectives - 1
    }

    /// Counts a send to member `to`; returns the number its frames carry.
    pub(super) fn next_send(&mut self, to: usize) -> u64 {
        self.seq += 1;
        self.sent[to] += 1;
        self.sent[to] - 1
    }

    /// Counts a receive from member `from`; returns the number its frames carry.
    pub(super) fn next_recv(&mut self, from: usize) -> u64 {
        self.seq += 1;
        self.received[from] += 1;
        self.received[from] - 1
    }
}

/// What one operation spent: `wait_ns` = time from entering until every peer it depends on
/// had arrived (entered the same operation); the rest of the call, `total_ns - wait_ns`, moved
/// data. See the `comm` module doc for what each operation depends on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Outcome {
    pub wait_ns: u64,
    pub total_ns: u64,
}

/// How an all-reduce moves its data.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AllReduceAlgo {
    /// `OneShot` while buffer bytes × (members − 1) ≤ `ONE_SHOT_MAX_BYTES`, `Ring` above.
    Auto,
    /// Reduce-scatter then all-gather around the group: bandwidth-optimal, `2·(n−1)` steps.
    Ring,
    /// Every member sends its whole buffer to every other and reduces locally in group order:
    /// one step, latency-optimal for small messages.
    OneShot,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_knows_my_place_in_it() {
        let g = Group::new(3, vec![5, 2, 7], 2).unwrap();
        assert_eq!((g.id(), g.size(), g.index(), g.seq()), (3, 3, 1, 0));
        assert_eq!(g.members(), &[5, 2, 7]);
        assert_eq!(g.my_rank(), 2);
    }

    #[test]
    fn every_operation_advances_seq_but_pairs_number_their_own_messages() {
        let mut g = Group::new(0, vec![0, 1, 2], 0).unwrap();
        assert_eq!(g.next_collective(), 0);
        assert_eq!(g.next_send(1), 0);
        assert_eq!(g.next_send(1), 1);
        assert_eq!(g.next_send(2), 0);
        assert_eq!(g.next_recv(1), 0);
        assert_eq!(g.next_collective(), 1);
        assert_eq!(g.seq(), 6);
    }

    #[test]
    fn bad_groups_are_refused_naming_the_rank() {
        let err = Group::new(4, vec![0, 1], 2).unwrap_err().to_string();
        assert_eq!(err, "rank '2' is not a member of group 4 ([0, 1])");
        let err = Group::new(4, vec![0, 1, 0], 0).unwrap_err().to_string();
        assert_eq!(err, "rank '0' is listed twice in group 4");
        assert!(Group::new(4, vec![], 0).is_err());
    }
}
