//! The merged timeline: every node's spans and counter samples on one time base.
//!
//! Each node stamps times with its own monotonic clock; its `ClockAnchor` maps them to wall-clock
//! time, and the timeline expresses everything as nanoseconds since the earliest span of the run
//! (its origin). Where nodes share collectives, `align` corrects each node's anchored times so
//! that their collective completions line up. Op names, interned per rank in the logs, resolve to one global string table.

mod merge;

use crate::align::{Alignment, NodeClockReport, align};
use crate::run::{NodeData, RunData};
use pinch_traces::{
    Category, ClockAnchor, CounterSample, Lane, NodeId, Rank, RunManifest, Span, SpanAttrs, Unit,
};
use rayon::prelude::*;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

/// An index into `Timeline::names`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NameId(pub u32);

/// A span on the timeline's time base.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimedSpan {
    pub rank: Rank,
    pub node: NodeId,
    pub lane: Lane,
    pub category: Category,
    pub name: NameId,
    /// Nanoseconds since the timeline's origin (never negative for a span).
    pub start_ns: i64,
    pub duration_ns: u64,
    pub attrs: SpanAttrs,
}

impl TimedSpan {
    pub fn end_ns(&self) -> i64 {
        self.start_ns
            .saturating_add(i64::try_from(self.duration_ns).unwrap_or(i64::MAX))
    }
}

/// One counter on one device of one node, stored by column: sample times and values.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub node: NodeId,
    pub counter: String,
    /// `None` when the log lost the counter's definition.
    pub unit: Option<Unit>,
    pub device: String,
    /// Nanoseconds since the timeline's origin; negative for samples before the first span.
    pub times_ns: Vec<i64>,
    pub values: Vec<f64>,
}

/// The whole run on one time base. Spans are sorted by (rank, start).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timeline {
    /// Wall-clock time of the origin, nanoseconds since the Unix epoch: the earliest span's start,
    /// or the manifest's start time when the run has no span.
    pub origin_unix_ns: i128,
    pub names: Vec<String>,
    pub spans: Vec<TimedSpan>,
    pub series: Vec<Series>,
}

impl Timeline {
    /// A timeline from parts already on one time base; sorts the spans.
    pub fn from_parts(
        origin_unix_ns: i128,
        names: Vec<String>,
        mut spans: Vec<TimedSpan>,
        series: Vec<Series>,
    ) -> Timeline {
        spans.sort_by_key(|s| (s.rank, s.start_ns));
        Timeline {
            origin_unix_ns,
            names,
            spans,
            series,
        }
    }

    /// The op name behind an id; empty for an id of another timeline.
    pub fn name(&self, id: NameId) -> &str {
        self.names.get(id.0 as usize).map_or("", String::as_str)
    }

    /// The ranks that have spans, in order.
    pub fn ranks(&self) -> Vec<Rank> {
        let mut ranks: Vec<Rank> = self.spans.iter().map(|s| s.rank).collect();
        ranks.dedup();
        ranks
    }

    /// The spans of one rank, sorted by start.
    pub fn spans_of(&self, rank: Rank) -> &[TimedSpan] {
        let from = self.spans.partition_point(|s| s.rank < rank);
        let to = self.spans.partition_point(|s| s.rank <= rank);
        &self.spans[from..to]
    }
}

/// Puts every node of a run on one time base: clock anchors, refined by collectives where
/// nodes share them (see `align`).
pub fn merge(run: &RunData) -> Timeline {
    merge_with(run, Alignment::Collectives).0
}

/// Puts every node of a run on one time base as `alignment` says, and tells how each node was
/// aligned (one entry per node of the run, in order).
pub fn merge_with(run: &RunData, alignment: Alignment) -> (Timeline, Vec<NodeClockReport>) {
    let (anchors, reports, surveys) = align_and_survey(run, alignment);
    let spans = run.nodes.iter().map(|n| Cow::from(&n.spans[..])).collect();
    (
        merge_nodes(run, spans, surveys, &anchors, &reports),
        reports,
    )
}

/// `merge_with`, moving the nodes' spans out of `run`: the run keeps every other record, and
/// `NodeData::all_ranks` still names the ranks whose spans moved. Each node's decoded spans are
/// freed as soon as they are on the timeline, so the two are never held whole at once (and the
/// timeline's pages come from the ones freed, not from reclaiming the page cache).
pub fn merge_taking_spans(
    run: &mut RunData,
    alignment: Alignment,
) -> (Timeline, Vec<NodeClockReport>) {
    let (anchors, reports, surveys) = align_and_survey(run, alignment);
    let taken = run
        .nodes
        .iter_mut()
        .zip(&surveys)
        .map(|(node, survey)| Cow::from(node.take_spans(survey.ranks())))
        .collect();
    (
        merge_nodes(run, taken, surveys, &anchors, &reports),
        reports,
    )
}

/// Each node's anchor and alignment, and the survey of its spans (a node per core).
fn align_and_survey(
    run: &RunData,
    alignment: Alignment,
) -> (
    Vec<ClockAnchor>,
    Vec<NodeClockReport>,
    Vec<merge::NodeSurvey>,
) {
    let anchors = anchors(run);
    let reports = align(run, &anchors, alignment);
    let surveys = run
        .nodes
        .par_iter()
        .map(|n| merge::survey(&n.spans))
        .collect();
    (anchors, reports, surveys)
}

/// The timeline of the run's nodes, `spans[n]` being node n's spans (freed as they are
/// converted where owned) and `surveys[n]` their survey: names interned once, then converted on
/// every core and each (node, rank) group sorted.
fn merge_nodes(
    run: &RunData,
    spans: Vec<Cow<'_, [Span]>>,
    mut surveys: Vec<merge::NodeSurvey>,
    anchors: &[ClockAnchor],
    reports: &[NodeClockReport],
) -> Timeline {
    let origin_unix_ns = anchors
        .iter()
        .zip(reports)
        .zip(&surveys)
        .filter_map(|((anchor, report), survey)| {
            Some(anchor.to_wall_ns(survey.earliest_ns?) + i128::from(report.offset_ns))
        })
        .min()
        .unwrap_or(i128::from(run.manifest.started_at_unix_ns));
    let clocks: Vec<NodeClock> = anchors
        .iter()
        .zip(reports)
        .map(|(anchor, report)| NodeClock {
            anchor: *anchor,
            offset_ns: report.offset_ns,
            origin_unix_ns,
        })
        .collect();
    let nodes: Vec<&NodeData> = run.nodes.iter().collect();
    let mut names = Interner::default();
    merge::intern_names(&nodes, &mut surveys, &mut names);
    let parts: Vec<merge::NodePart<'_>> = nodes
        .iter()
        .zip(spans)
        .zip(&surveys)
        .zip(&clocks)
        .map(|(((node, spans), survey), clock)| merge::NodePart {
            node,
            spans,
            survey,
            clock: *clock,
        })
        .collect();
    let mut timed = Vec::new();
    let group_ends = merge::convert(parts, &mut timed);
    sort_groups(&mut timed, &group_ends);
    Timeline {
        origin_unix_ns,
        names: names.names,
        spans: timed,
        series: nodes
            .iter()
            .zip(&clocks)
            .flat_map(|(node, clock)| node_series(node, *clock))
            .collect(),
    }
}

/// Sorts each (node, rank) group by start (both cores), then the whole when groups of one
/// rank came from several nodes; the result is the stable sort by (rank, start) of the spans
/// in run order.
fn sort_groups(spans: &mut [TimedSpan], group_ends: &[usize]) {
    let mut groups: Vec<&mut [TimedSpan]> = Vec::with_capacity(group_ends.len());
    let mut rest: &mut [TimedSpan] = spans;
    let mut at = 0;
    for &end in group_ends {
        let (group, tail) = std::mem::take(&mut rest).split_at_mut(end - at);
        groups.push(group);
        rest = tail;
        at = end;
    }
    groups
        .into_par_iter()
        .for_each(|g| g.sort_by_key(|s| s.start_ns));
    let key = |s: &TimedSpan| (s.rank, s.start_ns);
    let in_order = group_ends
        .iter()
        .all(|&end| end == 0 || end == spans.len() || key(&spans[end - 1]) <= key(&spans[end]));
    if !in_order {
        spans.par_sort_by_key(key);
    }
}

/// How `merge_with` would align each node of the run (in order), without merging.
pub fn node_clocks(run: &RunData, alignment: Alignment) -> Vec<NodeClockReport> {
    align(run, &anchors(run), alignment)
}

/// Every node's anchor, in order.
fn anchors(run: &RunData) -> Vec<ClockAnchor> {
    run.nodes
        .iter()
        .map(|n| node_anchor(n, &run.manifest))
        .collect()
}

/// The node's anchor; failing that, one of its ranks'; failing that (a log without its first
/// record), one that puts the node's earliest span at the run's start.
pub(crate) fn node_anchor(node: &NodeData, manifest: &RunManifest) -> ClockAnchor {
    let rank_anchor = node.ranks.values().find_map(|life| life.anchor);
    // Lazily: the fallback scans every span of the node.
    node.anchor.or(rank_anchor).unwrap_or_else(|| ClockAnchor {
        mono_ns: node.spans.iter().map(|s| s.start_ns).min().unwrap_or(0),
        wall_ns: manifest.started_at_unix_ns,
        read_uncertainty_ns: 0,
    })
}

/// Maps one node's monotonic times onto the timeline.
#[derive(Clone, Copy, Debug)]
struct NodeClock {
    anchor: ClockAnchor,
    /// The alignment's correction, added to the anchored time.
    offset_ns: i64,
    origin_unix_ns: i128,
}

impl NodeClock {
    fn to_timeline_ns(self, mono_ns: u64) -> i64 {
        let wall_ns = self.anchor.to_wall_ns(mono_ns) + i128::from(self.offset_ns);
        let since_origin = wall_ns - self.origin_unix_ns;
        i64::try_from(since_origin).unwrap_or(if since_origin < 0 { i64::MIN } else { i64::MAX })
    }
}

#[derive(Debug, Default)]
struct Interner {
    names: Vec<String>,
    ids: HashMap<String, NameId>,
}

impl Interner {
    fn intern(&mut self, name: &str) -> NameId {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = NameId(u32::try_from(self.names.len()).unwrap_or(u32::MAX));
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), id);
        id
    }
}

/// Groups a node's samples into one series per (counter, device), each sorted by time.
fn node_series(node: &NodeData, clock: NodeClock) -> Vec<Series> {
    let mut groups: BTreeMap<(u32, u32), Vec<&CounterSample>> = BTreeMap::new();
    for s in &node.samples {
        groups.entry((s.counter.0, s.device.0)).or_default().push(s);
    }
    groups
        .into_values()
        .filter_map(|mut samples| {
            samples.sort_by_key(|s| s.time_ns);
            let first = samples.first()?;
            let def = node.counters.get(&first.counter);
            let device = node.devices.get(&first.device);
            Some(Series {
                node: node.node,
                counter: def.map_or(format!("unnamed counter {}", first.counter.0), |d| {
                    d.name.clone()
                }),
                unit: def.map(|d| d.unit),
                device: device.map_or(format!("unnamed device {}", first.device.0), |d| {
                    d.name.clone()
                }),
                times_ns: samples
                    .iter()
                    .map(|s| clock.to_timeline_ns(s.time_ns))
                    .collect(),
                values: samples.iter().map(|s| s.value).collect(),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;
    use pinch_traces::{CounterDef, CounterId, DeviceDef, DeviceId, OpId};

    use crate::testkit::log_span as span;

    /// Two nodes whose monotonic clocks differ by a lot but whose wall clocks agree.
    fn two_node_run() -> RunData {
        let mut run = testkit::run_data(&[&[0], &[1]]);
        run.nodes[0].anchor = Some(ClockAnchor {
            mono_ns: 1_000,
            wall_ns: 1_000_000,
            read_uncertainty_ns: 0,
        });
        run.nodes[1].anchor = Some(ClockAnchor {
            mono_ns: 50_000,
            wall_ns: 1_000_000,
            read_uncertainty_ns: 0,
        });
        // Node 0: op 7 is "matmul"; node 1: op 7 is "all_reduce" and op 2 is "matmul".
        run.nodes[0]
            .op_names
            .insert((Rank(0), OpId(7)), "matmul".into());
        run.nodes[1]
            .op_names
            .insert((Rank(1), OpId(7)), "all_reduce".into());
        run.nodes[1]
            .op_names
            .insert((Rank(1), OpId(2)), "matmul".into());
        run.nodes[0].spans = vec![span(0, 7, 1_300, 100), span(0, 7, 1_100, 100)];
        run.nodes[1].spans = vec![span(1, 7, 50_050, 10), span(1, 2, 50_200, 10)];
        run
    }

    #[test]
    fn nodes_share_one_time_base_from_the_earliest_span() {
        let t = merge(&two_node_run());
        assert_eq!(t.origin_unix_ns, 1_000_050);
        let starts: Vec<(u32, i64)> = t.spans.iter().map(|s| (s.rank.0, s.start_ns)).collect();
        assert_eq!(starts, vec![(0, 50), (0, 250), (1, 0), (1, 150)]);
    }

    #[test]
    fn op_names_resolve_per_rank_into_one_table() {
        let t = merge(&two_node_run());
        let names: Vec<&str> = t.spans.iter().map(|s| t.name(s.name)).collect();
        assert_eq!(names, vec!["matmul", "matmul", "all_reduce", "matmul"]);
        assert_eq!(t.names.len(), 2);
        assert_eq!(t.spans[0].name, t.spans[3].name);
    }

    #[test]
    fn unnamed_ops_keep_their_id() {
        let mut run = two_node_run();
        run.nodes[0].op_names.clear();
        let t = merge(&run);
        assert_eq!(t.name(t.spans[0].name), "unnamed op 7");
    }

    #[test]
    fn samples_become_sorted_series_with_names_and_units() {
        let mut run = two_node_run();
        let node = &mut run.nodes[1];
        node.counters.insert(
            CounterId(0),
            CounterDef {
                id: CounterId(0),
                name: "cpu.utilization".into(),
                unit: Unit::Percent,
            },
        );
        node.devices.insert(
            DeviceId(3),
            DeviceDef {
                id: DeviceId(3),
                name: "cpu3".into(),
            },
        );
        for (time_ns, value) in [(50_100, 20.0), (50_000, 10.0)] {
            node.samples.push(CounterSample {
                node: NodeId(1),
                device: DeviceId(3),
                counter: CounterId(0),
                time_ns,
                value,
            });
        }
        let t = merge(&run);
        assert_eq!(t.series.len(), 1);
        let s = &t.series[0];
        assert_eq!(
            (s.counter.as_str(), s.device.as_str()),
            ("cpu.utilization", "cpu3")
        );
        assert_eq!(s.unit, Some(Unit::Percent));
        assert_eq!(s.times_ns, vec![-50, 50]);
        assert_eq!(s.values, vec![10.0, 20.0]);
    }

    #[test]
    fn ranks_split_over_nodes_still_sort_stably_by_rank_then_start() {
        let mut run = two_node_run();
        // Rank 1's spans also on node 0, rank 0's also on node 1, with ties on start.
        run.nodes[0].spans.push(span(1, 7, 1_300, 5));
        run.nodes[0].spans.push(span(0, 7, 1_100, 7));
        run.nodes[1].spans.insert(0, span(0, 2, 50_250, 9));
        let t = merge(&run);
        let mut expected = t.spans.clone();
        expected.sort_by_key(|s| (s.rank, s.start_ns));
        assert_eq!(t.spans, expected);
        let got: Vec<(u32, i64, u64)> = t
            .spans
            .iter()
            .map(|s| (s.rank.0, s.start_ns, s.duration_ns))
            .collect();
        // Ties keep run order: node 0's two spans at 50 in log order.
        let expected_rows = vec![
            (0, 50, 100),
            (0, 50, 7),
            (0, 200, 9),
            (0, 250, 100),
            (1, 0, 10),
            (1, 150, 10),
            (1, 250, 5),
        ];
        assert_eq!(got, expected_rows);
    }

    #[test]
    fn taking_the_spans_merges_the_same_and_keeps_the_ranks() {
        let mut run = two_node_run();
        let ranks_before: Vec<Vec<Rank>> = run.nodes.iter().map(|n| n.all_ranks()).collect();
        let (expected, clocks) = merge_with(&run, Alignment::Collectives);
        let (got, taken_clocks) = merge_taking_spans(&mut run, Alignment::Collectives);
        assert_eq!((got, taken_clocks), (expected, clocks));
        assert!(
            run.nodes
                .iter()
                .all(|n| n.spans.is_empty() && n.has_spans())
        );
        let ranks_after: Vec<Vec<Rank>> = run.nodes.iter().map(|n| n.all_ranks()).collect();
        assert_eq!(ranks_after, ranks_before);
    }

    #[test]
    fn spans_of_a_rank_are_its_slice() {
        let t = merge(&two_node_run());
        assert_eq!(t.ranks(), vec![Rank(0), Rank(1)]);
        assert_eq!(t.spans_of(Rank(1)).len(), 2);
        assert!(t.spans_of(Rank(5)).is_empty());
    }
}
