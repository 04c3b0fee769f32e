//! Imbalance: how evenly work spreads where a run splits it. Three views, each from its own data:
//! - experts: the tokens each mixture-of-experts expert processed (the ranks' per-step
//!   `ExpertTokens` records), max and mean over experts, over ranks and per layer;
//! - pipeline stages: per stage, the share of its ranks' wall time spent in the bubble (waiting
//!   in receives for the previous stage, or idle with no span at all);
//! - data-parallel replicas: requests and tokens each served, and how long their requests
//!   queued before the scheduler first put them in a step.
//!
//! Everything is grouped once: expert counts by (layer, expert) in flat vectors, stages from the
//! per-rank breakdowns and the pipeline detector's receive waiting, replicas from the requests.

use crate::analysis::AnalysisInput;
use crate::findings::receive_waiting;
use crate::run::RunData;
use pinch_traces::{ExpertTokens, RequestRecord};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The run's parallel degrees as the manifest's parameters give them (1 when absent).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Degrees {
    pub tp: u32,
    pub pp: u32,
}

impl Degrees {
    pub fn from_parameters(parameters: &BTreeMap<String, serde_json::Value>) -> Degrees {
        let degree = |key: &str| {
            parameters
                .get(key)
                .and_then(serde_json::Value::as_u64)
                .and_then(|d| u32::try_from(d).ok())
                .filter(|d| *d >= 1)
                .unwrap_or(1)
        };
        Degrees {
            tp: degree("tp"),
            pp: degree("pp"),
        }
    }

    /// The pipeline stage of a rank (ranks are tp-innermost, then stages, then replicas).
    pub fn stage_of(&self, rank: u32) -> u32 {
        (rank / self.tp) % self.pp
    }

    pub fn tp_rank_of(&self, rank: u32) -> u32 {
        rank % self.tp
    }
}

/// Max and mean of a quantity over some population, and their ratio.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Spread {
    pub max: f64,
    pub mean: f64,
    /// `max / mean`; `None` when the mean is 0.
    pub max_to_mean: Option<f64>,
}

impl Spread {
    /// Over `values`; `None` when there are none.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let (mut n, mut sum, mut max) = (0usize, 0.0, f64::NEG_INFINITY);
        for v in values {
            n += 1;
            sum += v;
            max = max.max(v);
        }
        (n > 0).then(|| {
            let mean = sum / n as f64;
            Spread {
                max,
                mean,
                max_to_mean: (mean > 0.0).then(|| max / mean),
            }
        })
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImbalanceReport {
    /// `None` when no rank recorded expert token counts (a dense model, or an old log).
    pub experts: Option<ExpertImbalance>,
    /// One entry per pipeline stage; empty without pipeline parallelism.
    pub stages: Vec<StageBubble>,
    /// `None` when the run recorded no request.
    pub replicas: Option<ReplicaImbalance>,
}

/// Tokens per expert, summed over steps and MoE layers. A token slot is one (token, chosen
/// expert) pair: with top-k routing each token counts k times.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpertImbalance {
    /// Routed experts per MoE layer.
    pub experts: u32,
    /// Steps with at least one record.
    pub steps: u32,
    /// Every expert, by id (experts that processed nothing included).
    pub per_expert: Vec<ExpertLoad>,
    /// Over `per_expert[].tokens`.
    pub expert_tokens: Spread,
    /// Every rank that recorded counts: the token slots its own experts processed.
    pub per_rank: Vec<RankExpertLoad>,
    /// Over `per_rank[].tokens`.
    pub rank_tokens: Spread,
    /// Per MoE layer, the spread over its experts.
    pub per_layer: Vec<LayerExpertLoad>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExpertLoad {
    pub expert: u32,
    /// Token slots processed, over every layer and step. Tensor-parallel ranks holding slices
    /// of the same expert process the same slots; they count once.
    pub tokens: u64,
    /// `tokens` over all experts' tokens, percent.
    pub share_pct: f64,
    /// The ranks holding (a slice of) this expert.
    pub ranks: Vec<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RankExpertLoad {
    pub rank: u32,
    /// The expert ids it holds: `first_expert .. first_expert + held`.
    pub first_expert: u32,
    pub held: u32,
    pub tokens: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LayerExpertLoad {
    pub layer: u32,
    pub tokens: u64,
    /// Over the layer's experts' token counts.
    pub expert_tokens: Spread,
    /// The expert with the most tokens (the lowest id on ties).
    pub hottest_expert: u32,
}

/// One pipeline stage's bubble.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StageBubble {
    pub stage: u32,
    pub ranks: Vec<u32>,
    /// The stage's ranks' wall times, summed.
    pub wall_ns: u64,
    /// Time its ranks waited in receives for the sender (pp.recv and the like).
    pub recv_wait_ns: u64,
    /// Time its ranks had no span at all (between micro-batches, between steps).
    pub idle_ns: u64,
    /// `recv_wait_ns + idle_ns`.
    pub bubble_ns: u64,
    /// `bubble_ns` over the stage's working time (`wall_ns` less `startup_ns`), percent; `None`
    /// when that is 0.
    pub bubble_pct: Option<f64>,
    /// Time its ranks spent loading weights (`weights.init` spans), summed: before the first
    /// step, no pipeline runs, so the bubble is measured without it.
    #[serde(default)]
    pub startup_ns: u64,
    /// Its ranks' compute time (exclusive, as the breakdown counts it), summed.
    #[serde(default)]
    pub compute_ns: u64,
    /// The model layers its spans name (distinct `layer` attributes of its first rank); `None`
    /// when no span names a layer.
    #[serde(default)]
    pub layers: Option<u32>,
    /// The micro-batches it ran: distinct (step, micro-batch) pairs of its first rank's spans;
    /// `None` when no span names a micro-batch.
    #[serde(default)]
    pub micro_batches: Option<u64>,
    /// The steps those micro-batches belong to.
    #[serde(default)]
    pub steps: Option<u64>,
}

impl StageBubble {
    /// Mean micro-batches per step; `None` when unknown.
    pub fn micro_batches_per_step(&self) -> Option<f64> {
        let (micro_batches, steps) = (self.micro_batches?, self.steps?);
        (steps > 0).then(|| micro_batches as f64 / steps as f64)
    }

    /// The stage's time after its weights were loaded: what its bubble is a share of.
    pub fn working_ns(&self) -> u64 {
        self.wall_ns.saturating_sub(self.startup_ns)
    }

    /// Its ranks' mean compute time.
    pub fn compute_ns_per_rank(&self) -> Option<f64> {
        (!self.ranks.is_empty()).then(|| self.compute_ns as f64 / self.ranks.len() as f64)
    }
}

/// How requests spread over the data-parallel replicas.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicaImbalance {
    pub per_replica: Vec<ReplicaLoad>,
    /// Over `per_replica[].requests`.
    pub requests: Spread,
    /// Over `per_replica[].output_tokens`.
    pub output_tokens: Spread,
    /// Over the replicas' `queue_ns_mean` (those that have one); `None` when none has.
    pub queue_ns_mean: Option<Spread>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicaLoad {
    pub replica: u32,
    /// The replica's ranks, from the layout in the manifest's parameters.
    pub ranks: Vec<u32>,
    pub requests: u64,
    pub output_tokens: u64,
    /// Requests whose scheduling time was recorded.
    pub queued_requests: u64,
    /// Mean and longest time from arrival to first scheduled; `None` without a recorded time.
    pub queue_ns_mean: Option<f64>,
    pub queue_ns_max: Option<u64>,
    /// Mean arrival to last token, for requests with a token.
    pub e2e_ns_mean: Option<f64>,
}

/// The imbalance views of a run whose timeline measurements are in `input`.
pub fn imbalance_report(run: &RunData, input: &AnalysisInput<'_>) -> ImbalanceReport {
    let degrees = Degrees::from_parameters(&run.manifest.workload.parameters);
    let records: Vec<&ExpertTokens> = run.nodes.iter().flat_map(|n| &n.expert_tokens).collect();
    let requests: Vec<&RequestRecord> = run.nodes.iter().flat_map(|n| &n.requests).collect();
    ImbalanceReport {
        experts: expert_imbalance(&records, degrees),
        stages: stage_bubbles(input, degrees),
        replicas: replica_imbalance(&requests, degrees),
    }
}

/// Token counts grouped by (layer, expert), deduplicated over tensor-parallel peers.
#[derive(Debug, Default)]
struct ExpertGrid {
    experts: usize,
    /// Global layer ids, in order; `counts` is `layers.len() × experts`, layer-major.
    layers: Vec<u32>,
    counts: Vec<u64>,
}

impl ExpertGrid {
    fn new(records: &[&ExpertTokens]) -> ExpertGrid {
        let experts = records.iter().map(|r| r.experts).max().unwrap_or(0) as usize;
        let layers: BTreeSet<u32> = records
            .iter()
            .flat_map(|r| r.layers.iter().copied())
            .collect();
        ExpertGrid {
            experts,
            counts: vec![0; layers.len() * experts],
            layers: layers.into_iter().collect(),
        }
    }

    fn add(&mut self, record: &ExpertTokens) {
        for (layer, expert, n) in record.counts() {
            let (Ok(row), true) = (
                self.layers.binary_search(&layer),
                expert < self.experts as u32,
            ) else {
                continue;
            };
            self.counts[row * self.experts + expert as usize] += u64::from(n);
        }
    }

    fn row(&self, i: usize) -> &[u64] {
        &self.counts[i * self.experts..(i + 1) * self.experts]
    }

    fn expert_totals(&self) -> Vec<u64> {
        let mut totals = vec![0u64; self.experts];
        for i in 0..self.layers.len() {
            for (t, n) in totals.iter_mut().zip(self.row(i)) {
                *t += n;
            }
        }
        totals
    }
}

fn expert_imbalance(records: &[&ExpertTokens], degrees: Degrees) -> Option<ExpertImbalance> {
    let mut grid = ExpertGrid::new(records);
    if grid.experts == 0 {
        return None;
    }
    let mut per_rank: BTreeMap<u32, RankExpertLoad> = BTreeMap::new();
    let mut steps = BTreeSet::new();
    for r in records {
        steps.insert(r.step);
        // Tensor-parallel peers process the same slots on their slices: count tp rank 0's.
        if degrees.tp_rank_of(r.rank.0) == 0 {
            grid.add(r);
        }
        let load = per_rank.entry(r.rank.0).or_insert(RankExpertLoad {
            rank: r.rank.0,
            first_expert: r.first_expert,
            held: r.held,
            tokens: 0,
        });
        load.tokens += r.tokens.iter().map(|&n| u64::from(n)).sum::<u64>();
    }
    let per_rank: Vec<RankExpertLoad> = per_rank.into_values().collect();
    let per_expert = expert_loads(&grid.expert_totals(), &per_rank);
    Some(ExpertImbalance {
        experts: grid.experts as u32,
        steps: steps.len() as u32,
        expert_tokens: Spread::of(per_expert.iter().map(|e| e.tokens as f64))?,
        rank_tokens: Spread::of(per_rank.iter().map(|r| r.tokens as f64))?,
        per_layer: layer_loads(&grid),
        per_expert,
        per_rank,
    })
}

fn expert_loads(totals: &[u64], per_rank: &[RankExpertLoad]) -> Vec<ExpertLoad> {
    let all: u64 = totals.iter().sum();
    totals
        .iter()
        .enumerate()
        .map(|(e, &tokens)| {
            let e = e as u32;
            let holds =
                |r: &&RankExpertLoad| (r.first_expert..r.first_expert + r.held).contains(&e);
            ExpertLoad {
                expert: e,
                tokens,
                share_pct: crate::stats::pct(tokens as f64, all as f64).unwrap_or(0.0),
                ranks: per_rank.iter().filter(holds).map(|r| r.rank).collect(),
            }
        })
        .collect()
}

fn layer_loads(grid: &ExpertGrid) -> Vec<LayerExpertLoad> {
    grid.layers
        .iter()
        .enumerate()
        .filter_map(|(i, &layer)| {
            let row = grid.row(i);
            let hottest = (0..row.len()).max_by_key(|&e| (row[e], std::cmp::Reverse(e)))?;
            Some(LayerExpertLoad {
                layer,
                tokens: row.iter().sum(),
                expert_tokens: Spread::of(row.iter().map(|&n| n as f64))?,
                hottest_expert: hottest as u32,
            })
        })
        .collect()
}

/// Per stage, its ranks' receive waiting and idle time over their wall time (pipelined runs).
pub(crate) fn stage_bubbles(input: &AnalysisInput<'_>, degrees: Degrees) -> Vec<StageBubble> {
    if degrees.pp < 2 {
        return Vec::new();
    }
    let waiting = receive_waiting(input);
    let weights = crate::phases::StepOps::of(input.timeline).weights_init;
    let mut stages: BTreeMap<u32, StageBubble> = BTreeMap::new();
    for (rank, breakdown) in input.measured_ranks() {
        let stage = degrees.stage_of(rank.rank);
        let s = stages.entry(stage).or_insert(StageBubble {
            stage,
            ranks: Vec::new(),
            wall_ns: 0,
            recv_wait_ns: 0,
            idle_ns: 0,
            bubble_ns: 0,
            bubble_pct: None,
            startup_ns: 0,
            compute_ns: 0,
            layers: None,
            micro_batches: None,
            steps: None,
        });
        s.ranks.push(rank.rank);
        s.wall_ns += breakdown.wall_ns();
        s.recv_wait_ns += waiting.get(&rank.rank).map_or(0, |w| w.wait_ns);
        s.idle_ns += breakdown.idle;
        s.compute_ns += breakdown.compute;
        s.startup_ns += weights.map_or(0, |op| {
            let spans = input.timeline.spans_of(pinch_traces::Rank(rank.rank));
            spans
                .iter()
                .filter(|x| x.name == op)
                .map(|x| x.duration_ns)
                .sum()
        });
    }
    for s in stages.values_mut() {
        s.bubble_ns = s.recv_wait_ns + s.idle_ns;
        s.bubble_pct = crate::stats::pct(s.bubble_ns as f64, s.working_ns() as f64);
        // Tensor-parallel peers run the same layers and micro-batches: the first rank tells.
        if let Some(&first) = s.ranks.first() {
            let work = StageWork::of(input.timeline.spans_of(pinch_traces::Rank(first)));
            s.layers = (!work.layers.is_empty()).then_some(work.layers.len() as u32);
            s.micro_batches = (work.micro_batches > 0).then_some(work.micro_batches);
            s.steps = (work.micro_batches > 0).then_some(work.steps.len() as u64);
        }
    }
    stages.into_values().collect()
}

/// What one rank's spans say of its stage's work: the layers they name and the micro-batches
/// (and their steps) they ran.
#[derive(Debug, Default)]
struct StageWork {
    layers: BTreeSet<u32>,
    steps: BTreeSet<u32>,
    micro_batches: u64,
}

impl StageWork {
    fn of(spans: &[crate::TimedSpan]) -> StageWork {
        let mut work = StageWork::default();
        let mut seen: BTreeSet<(u32, u32)> = BTreeSet::new();
        let (mut last, mut last_layer): (Option<(u32, u32)>, Option<u32>) = (None, None);
        for span in spans {
            // A layer's ops run together: insert only when the layer changes.
            if let Some(layer) = span.attrs.layer.filter(|l| last_layer != Some(*l)) {
                work.layers.insert(layer);
                last_layer = Some(layer);
            }
            let (Some(step), Some(mb)) = (span.attrs.step, span.attrs.micro_batch) else {
                continue;
            };
            // A micro-batch's spans run together: look it up only when it changes.
            if last != Some((step, mb)) && seen.insert((step, mb)) {
                work.steps.insert(step);
            }
            last = Some((step, mb));
        }
        work.micro_batches = seen.len() as u64;
        work
    }
}

fn replica_imbalance(requests: &[&RequestRecord], degrees: Degrees) -> Option<ReplicaImbalance> {
    let mut by_replica: BTreeMap<u32, Vec<&RequestRecord>> = BTreeMap::new();
    for r in requests {
        by_replica.entry(r.replica).or_default().push(r);
    }
    let per_replica: Vec<ReplicaLoad> = by_replica
        .into_iter()
        .map(|(replica, records)| replica_load(replica, &records, degrees))
        .collect();
    Some(ReplicaImbalance {
        requests: Spread::of(per_replica.iter().map(|r| r.requests as f64))?,
        output_tokens: Spread::of(per_replica.iter().map(|r| r.output_tokens as f64))?,
        queue_ns_mean: Spread::of(per_replica.iter().filter_map(|r| r.queue_ns_mean)),
        per_replica,
    })
}

fn replica_load(replica: u32, records: &[&RequestRecord], degrees: Degrees) -> ReplicaLoad {
    let size = degrees.tp * degrees.pp;
    let queued: Vec<u64> = records.iter().filter_map(|r| r.queued_ns()).collect();
    let e2e: Vec<u64> = records.iter().filter_map(|r| r.e2e_ns()).collect();
    let mean = |v: &[u64]| (!v.is_empty()).then(|| v.iter().sum::<u64>() as f64 / v.len() as f64);
    ReplicaLoad {
        replica,
        ranks: (replica * size..(replica + 1) * size).collect(),
        requests: records.len() as u64,
        output_tokens: records.iter().map(|r| r.tokens.len() as u64).sum(),
        queued_requests: queued.len() as u64,
        queue_ns_mean: mean(&queued),
        queue_ns_max: queued.iter().copied().max(),
        e2e_ns_mean: mean(&e2e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::RunFacts;
    use crate::testkit::{self, span, timeline};
    use pinch_traces::{Category, Rank};
    use serde_json::json;

    fn record(
        rank: u32,
        step: u32,
        first_expert: u32,
        held: u32,
        tokens: Vec<u32>,
    ) -> ExpertTokens {
        let layers = (tokens.len() as u32 / held).max(1);
        ExpertTokens {
            rank: Rank(rank),
            step,
            experts: 4,
            first_expert,
            held,
            layers: (0..layers).collect(),
            tokens,
        }
    }

    #[test]
    fn expert_parallel_counts_sum_per_expert_and_per_rank() {
        // Two ranks, experts 0-1 on rank 0 and 2-3 on rank 1, one layer, two steps.
        let records = [
            record(0, 0, 0, 2, vec![6, 2]),
            record(1, 0, 2, 2, vec![1, 1]),
            record(0, 1, 0, 2, vec![6, 2]),
            record(1, 1, 2, 2, vec![1, 1]),
        ];
        let refs: Vec<&ExpertTokens> = records.iter().collect();
        let e = expert_imbalance(&refs, Degrees { tp: 1, pp: 1 }).unwrap();
        let tokens: Vec<u64> = e.per_expert.iter().map(|x| x.tokens).collect();
        assert_eq!(tokens, vec![12, 4, 2, 2]);
        assert_eq!(e.per_expert[0].ranks, vec![0]);
        assert_eq!(e.per_expert[3].ranks, vec![1]);
        // Mean 5, max 12.
        assert_eq!(e.expert_tokens.max_to_mean, Some(2.4));
        let ranks: Vec<(u32, u64)> = e.per_rank.iter().map(|r| (r.rank, r.tokens)).collect();
        assert_eq!(ranks, vec![(0, 16), (1, 4)]);
        assert_eq!(e.rank_tokens.max_to_mean, Some(1.6));
        assert_eq!((e.steps, e.per_layer[0].hottest_expert), (2, 0));
    }

    #[test]
    fn tensor_parallel_peers_count_once_per_expert() {
        // tp=2: ranks 0 and 1 hold slices of all 4 experts and run the same rows.
        let records = [
            record(0, 0, 0, 4, vec![3, 1, 0, 0, 1, 1, 1, 1]),
            record(1, 0, 0, 4, vec![3, 1, 0, 0, 1, 1, 1, 1]),
        ];
        let refs: Vec<&ExpertTokens> = records.iter().collect();
        let e = expert_imbalance(&refs, Degrees { tp: 2, pp: 1 }).unwrap();
        let tokens: Vec<u64> = e.per_expert.iter().map(|x| x.tokens).collect();
        assert_eq!(tokens, vec![4, 2, 1, 1]);
        assert_eq!(e.per_expert[0].ranks, vec![0, 1]);
        assert_eq!(e.per_rank.len(), 2);
        assert_eq!(e.per_layer.len(), 2);
        assert_eq!(e.per_layer[0].expert_tokens.max, 3.0);
        assert!(expert_imbalance(&[], Degrees { tp: 1, pp: 1 }).is_none());
    }

    fn recv(rank: u32, start_ns: i64, duration_ns: u64, wait_ns: u64) -> crate::TimedSpan {
        testkit::recv(rank, 0, start_ns, duration_ns, wait_ns)
    }

    #[test]
    fn a_stage_bubble_is_receive_waiting_plus_idle_over_wall_time() {
        // pp=2: rank 0 computes throughout; rank 1 waits 300 ns in a receive, then after its
        // compute sits idle 150 ns before its last op.
        let t = timeline(vec![
            span(0, Category::Compute, 0, 1_000),
            recv(1, 0, 400, 300),
            span(1, Category::Compute, 400, 400),
            span(1, Category::Compute, 950, 50),
        ]);
        let facts = RunFacts::from_timeline(&t);
        let input = AnalysisInput::new(&t, &facts);
        let stages = stage_bubbles(&input, Degrees { tp: 1, pp: 2 });
        assert_eq!(stages.len(), 2);
        assert_eq!((stages[0].bubble_ns, stages[0].bubble_pct), (0, Some(0.0)));
        let s = &stages[1];
        assert_eq!((s.ranks.clone(), s.wall_ns), (vec![1], 1_000));
        assert_eq!((s.recv_wait_ns, s.idle_ns, s.bubble_ns), (300, 150, 450));
        assert_eq!(s.bubble_pct, Some(45.0));
        assert!(stage_bubbles(&input, Degrees { tp: 1, pp: 1 }).is_empty());
    }

    #[test]
    fn loading_weights_is_no_part_of_the_stage_bubble() {
        // Rank 1 loads weights for 500 ns, then waits 100 ns of its 500 ns of steps.
        let mut weights = span(1, Category::Host, 0, 500);
        weights.name = crate::timeline::NameId(6);
        let mut t = timeline(vec![
            span(0, Category::Compute, 0, 1_000),
            weights,
            recv(1, 500, 200, 100),
            span(1, Category::Compute, 700, 300),
        ]);
        t.names
            .push(crate::phases::steps::WEIGHTS_INIT_OP.to_string());
        let facts = RunFacts::from_timeline(&t);
        let stages = stage_bubbles(&AnalysisInput::new(&t, &facts), Degrees { tp: 1, pp: 2 });
        let s = &stages[1];
        assert_eq!((s.wall_ns, s.startup_ns, s.bubble_ns), (1_000, 500, 100));
        assert_eq!(s.bubble_pct, Some(20.0));
    }

    fn request(
        replica: u32,
        arrival_ns: u64,
        scheduled_ns: Option<u64>,
        end_ns: u64,
    ) -> RequestRecord {
        RequestRecord {
            id: arrival_ns,
            replica,
            arrival_ns,
            scheduled_ns,
            token_times_ns: vec![end_ns],
            prompt_tokens: 4,
            tokens: vec![1],
            preemptions: 0,
        }
    }

    #[test]
    fn replicas_report_their_load_and_queueing() {
        let records = [
            request(0, 0, Some(10), 100),
            request(0, 0, Some(30), 100),
            request(1, 0, Some(100), 300),
            request(1, 0, None, 300),
        ];
        let refs: Vec<&RequestRecord> = records.iter().collect();
        let r = replica_imbalance(&refs, Degrees { tp: 2, pp: 1 }).unwrap();
        let a = &r.per_replica[0];
        assert_eq!((a.requests, a.queued_requests), (2, 2));
        assert_eq!((a.queue_ns_mean, a.queue_ns_max), (Some(20.0), Some(30)));
        assert_eq!(r.per_replica[1].ranks, vec![2, 3]);
        assert_eq!(r.per_replica[1].queued_requests, 1);
        let q = r.queue_ns_mean.unwrap();
        assert_eq!((q.max, q.mean), (100.0, 60.0));
        assert!(replica_imbalance(&[], Degrees { tp: 1, pp: 1 }).is_none());
    }

    #[test]
    fn the_report_reads_degrees_and_records_from_the_run() {
        let mut run = testkit::run_with_spans(&[&[0, 1]]);
        let parameters = &mut run.manifest.workload.parameters;
        parameters.insert("tp".into(), json!(1));
        parameters.insert("pp".into(), json!(2));
        run.nodes[0]
            .expert_tokens
            .push(record(0, 0, 0, 4, vec![1, 2, 3, 4]));
        let report = crate::analyze(&run);
        let e = report.imbalance.experts.as_ref().unwrap();
        assert_eq!(e.expert_tokens.max, 4.0);
        assert_eq!(report.imbalance.stages.len(), 2);
        assert!(report.imbalance.replicas.is_none());
    }
}
