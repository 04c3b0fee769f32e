//! Moving every node's spans onto the timeline, on all cores.
//!
//! At tens of millions of spans the merge is a copy of gigabytes, so every pass reads the
//! spans in log order, which the memory system streams: a survey of each node (how many spans
//! each rank has, which ops each rank uses, the earliest start) runs a node per core; the op
//! names are then interned once, in the order a span-by-span merge would meet them; and the
//! conversion writes each span straight into its rank's part of the timeline, a node per core.

use super::{Interner, NameId, NodeClock, TimedSpan};
use crate::run::NodeData;
use pinch_traces::{OpId, Rank, Span};
use rayon::prelude::*;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::mem::MaybeUninit;

/// Op ids below this get a slot in a group's dense name table; larger ones (never seen in
/// practice) are looked up in a map.
const DENSE_OP_IDS: usize = 1 << 16;

/// One node's spans, surveyed: how many each rank has, and the ops each rank uses.
pub(super) struct NodeSurvey {
    /// The node's ranks, ascending; the timeline keeps each rank's spans together.
    groups: Vec<Group>,
    /// The earliest span start on the node's monotonic clock; `None` without spans.
    pub(super) earliest_ns: Option<u64>,
}

/// One rank's spans within a node.
struct Group {
    rank: Rank,
    spans: usize,
    /// The op ids the rank's spans use, in the order they first appear.
    ops: Vec<OpId>,
    /// Filled by `intern_names`: the timeline name of each op id.
    names: OpNameTable,
}

/// Op id to timeline name for one rank: a dense table, a map for the rare huge id.
#[derive(Default)]
struct OpNameTable {
    dense: Vec<Option<NameId>>,
    sparse: BTreeMap<OpId, NameId>,
}

impl OpNameTable {
    fn insert(&mut self, op: OpId, name: NameId) {
        let slot = op.0 as usize;
        if slot < DENSE_OP_IDS {
            if self.dense.len() <= slot {
                self.dense.resize(slot + 1, None);
            }
            self.dense[slot] = Some(name);
        } else {
            self.sparse.insert(op, name);
        }
    }

    fn get(&self, op: OpId) -> NameId {
        let dense = self.dense.get(op.0 as usize).copied().flatten();
        // Every op of the group was interned, so the fallback never names a real op wrongly.
        dense
            .or_else(|| self.sparse.get(&op).copied())
            .unwrap_or(NameId(u32::MAX))
    }
}

/// Counts one node's spans per rank and notes the ops each rank uses.
pub(super) fn survey(spans: &[Span]) -> NodeSurvey {
    let mut slots = RankSlots::default();
    let mut groups: Vec<(Group, Vec<bool>)> = Vec::new();
    let mut earliest_ns: Option<u64> = None;
    for span in spans {
        let slot = slots.slot(span.rank, || {
            groups.push((
                Group {
                    rank: span.rank,
                    spans: 0,
                    ops: Vec::new(),
                    names: OpNameTable::default(),
                },
                Vec::new(),
            ));
            groups.len() - 1
        });
        let (group, seen) = &mut groups[slot];
        group.spans += 1;
        note_op(&mut group.ops, seen, span.op);
        earliest_ns = Some(earliest_ns.map_or(span.start_ns, |e| e.min(span.start_ns)));
    }
    let mut groups: Vec<Group> = groups.into_iter().map(|(g, _)| g).collect();
    groups.sort_by_key(|g| g.rank);
    NodeSurvey {
        groups,
        earliest_ns,
    }
}

impl NodeSurvey {
    /// The ranks that have spans on the node, ascending.
    pub(super) fn ranks(&self) -> impl Iterator<Item = Rank> + '_ {
        self.groups.iter().map(|g| g.rank)
    }
}

/// Rank to a small dense index, in order of first appearance. Spans come in runs of one rank
/// often enough that the last answer is checked first.
#[derive(Default)]
struct RankSlots {
    last: Option<(Rank, usize)>,
    slots: BTreeMap<Rank, usize>,
}

impl RankSlots {
    fn slot(&mut self, rank: Rank, new_slot: impl FnOnce() -> usize) -> usize {
        match self.last {
            Some((last, slot)) if last == rank => slot,
            _ => {
                let slot = *self.slots.entry(rank).or_insert_with(new_slot);
                self.last = Some((rank, slot));
                slot
            }
        }
    }
}

/// Records an op's first appearance in a group.
fn note_op(first_seen: &mut Vec<OpId>, seen: &mut Vec<bool>, op: OpId) {
    let slot = op.0 as usize;
    if slot < DENSE_OP_IDS {
        if seen.len() <= slot {
            seen.resize(slot + 1, false);
        }
        if !seen[slot] {
            seen[slot] = true;
            first_seen.push(op);
        }
    } else if !first_seen.contains(&op) {
        first_seen.push(op);
    }
}

/// Interns every op of every group, nodes in run order, ranks ascending, ops by first
/// appearance: the ids a span-by-span merge would give.
pub(super) fn intern_names(nodes: &[&NodeData], surveys: &mut [NodeSurvey], names: &mut Interner) {
    for (node, survey) in nodes.iter().zip(surveys) {
        for group in &mut survey.groups {
            for &op in &group.ops {
                let name = match node.op_names.get(&(group.rank, op)) {
                    Some(name) => names.intern(name),
                    None => names.intern(&format!("unnamed op {}", op.0)),
                };
                group.names.insert(op, name);
            }
        }
    }
}

/// One node's part of the conversion: its spans (freed once converted, where owned), how they
/// map to the timeline.
pub(super) struct NodePart<'a> {
    pub(super) node: &'a NodeData,
    pub(super) spans: Cow<'a, [Span]>,
    pub(super) survey: &'a NodeSurvey,
    pub(super) clock: NodeClock,
}

/// Converts every span into `out` (cleared first), node after node, each node's spans grouped
/// by rank (ranks ascending, log order within a rank); returns where each (node, rank) group
/// ends in `out`.
pub(super) fn convert(parts: Vec<NodePart<'_>>, out: &mut Vec<TimedSpan>) -> Vec<usize> {
    let total: usize = parts.iter().map(|p| p.spans.len()).sum();
    out.clear();
    out.reserve_exact(total);
    let mut rest = &mut out.spare_capacity_mut()[..total];
    let mut jobs = Vec::with_capacity(parts.len());
    let mut group_ends = Vec::new();
    let mut at = 0;
    for part in parts {
        let mut slices = Vec::with_capacity(part.survey.groups.len());
        for group in &part.survey.groups {
            let (slice, tail) = std::mem::take(&mut rest).split_at_mut(group.spans);
            slices.push(slice);
            rest = tail;
            at += group.spans;
            group_ends.push(at);
        }
        jobs.push((part, slices));
    }
    let written: usize = jobs
        .into_par_iter()
        .map(|(part, mut slices)| scatter(&part, &mut slices))
        .sum();
    // The survey counted each rank's spans in the same slices, so every slot was written once.
    assert_eq!(written, total, "the survey's counts match the spans");
    // SAFETY: the first `total` slots of `out` were split into disjoint slices, one per (node,
    // rank) group sized by the survey's count; `scatter` initialized every slot of each slice
    // (it returns the slots it wrote only when each slice came out full), and `written == total`.
    unsafe { out.set_len(total) };
    group_ends
}

/// Writes one node's spans, in log order, into its groups' slices; returns how many slots it
/// wrote, or 0 when a slice did not come out exactly full.
fn scatter(part: &NodePart<'_>, slices: &mut [&mut [MaybeUninit<TimedSpan>]]) -> usize {
    let groups = &part.survey.groups;
    let mut cursors = vec![0usize; groups.len()];
    let mut last: Option<(Rank, usize)> = None;
    for s in part.spans.iter() {
        let g = match last {
            Some((rank, g)) if rank == s.rank => g,
            _ => {
                let g = groups.partition_point(|g| g.rank < s.rank);
                last = Some((s.rank, g));
                g
            }
        };
        // Indexing panics, never writes out of bounds, should a count be wrong.
        slices[g][cursors[g]].write(TimedSpan {
            rank: s.rank,
            node: part.node.node,
            lane: s.lane,
            category: s.category,
            name: groups[g].names.get(s.op),
            start_ns: part.clock.to_timeline_ns(s.start_ns),
            duration_ns: s.duration_ns,
            attrs: s.attrs,
        });
        cursors[g] += 1;
    }
    let full = slices
        .iter()
        .zip(&cursors)
        .all(|(slice, &n)| slice.len() == n);
    if full { cursors.iter().sum() } else { 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(rank: u32, op: u32, start_ns: u64) -> Span {
        crate::testkit::log_span(rank, op, start_ns, 1)
    }

    #[test]
    fn survey_counts_spans_by_rank_and_lists_ops_by_first_appearance() {
        let spans = [
            span(3, 9, 50),
            span(1, 4, 20),
            span(3, 2, 10),
            span(1, 4, 30),
            span(3, 9, 40),
            span(1, 70_000, 60),
        ];
        let s = survey(&spans);
        let groups: Vec<(u32, usize, Vec<u32>)> = s
            .groups
            .iter()
            .map(|g| (g.rank.0, g.spans, g.ops.iter().map(|o| o.0).collect()))
            .collect();
        assert_eq!(groups, vec![(1, 3, vec![4, 70_000]), (3, 3, vec![9, 2])]);
        assert_eq!(s.earliest_ns, Some(10));
    }

    #[test]
    fn an_empty_node_has_no_groups_and_no_earliest_start() {
        let s = survey(&[]);
        assert!(s.groups.is_empty());
        assert_eq!(s.earliest_ns, None);
    }

    #[test]
    fn name_table_resolves_dense_and_huge_op_ids() {
        let mut table = OpNameTable::default();
        table.insert(OpId(3), NameId(7));
        table.insert(OpId(1 << 20), NameId(8));
        assert_eq!(table.get(OpId(3)), NameId(7));
        assert_eq!(table.get(OpId(1 << 20)), NameId(8));
    }
}
