//! Writes a synthetic run directory (manifest plus one node log per node) of any size, for the
//! analyzer's scale benchmark (`scripts/bench-analyze-scale`). It lives beside the node-log
//! format rather than in the analyzer so that building it never rebuilds polars.
//!
//! `cargo run --release -p pinch-traces --example synth-run -- DIR --ranks 64 --spans 50000000`
//!
//! The run looks like tensor-parallel decoding, one tensor-parallel group per node, pipelined
//! across nodes: per layer, four compute ops carrying flops and bytes, a KV-cache copy and an
//! all-reduce over the node's ranks (the same sequence number on each, the last arrival
//! releasing them all); per step, a scheduling span on the host, a send to the next node's rank
//! and a receive from the previous node's, then a step-wide all-reduce over every rank. Each
//! node samples two counters every 10 ms. Clocks: every node's monotonic clock has its own base
//! and its wall clock a skew of up to 50 µs, so alignment has work to do.
//!
//! Memory stays bounded: all nodes advance together one step at a time, and each node's spans
//! go out in records of at most `SPANS_PER_RECORD` spans.

use clap::Parser;
use pinch_traces::{
    Category, ClockAnchor, CollectiveAttrs, CollectiveKind, CounterDef, CounterId, CounterSample,
    DeviceDef, DeviceId, Lane, NodeEntry, NodeId, NodeLogWriter, OpId, Rank, RankExit, Record,
    RunManifest, Span, SpanAttrs, Unit, Versions, WorkloadSpec,
};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

/// SplitMix64: a few lines of jitter for a benchmark input. The `rand` crate as a dependency
/// of this example would change the features polars is built with, and so rebuild polars.
struct Jitter(u64);

impl Jitter {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `range` (its length must not be 0).
    fn random_range(&mut self, range: std::ops::Range<u64>) -> u64 {
        range.start + self.next() % (range.end - range.start)
    }

    /// Uniform in [low, high).
    fn factor(&mut self, low: f64, high: f64) -> f64 {
        low + (self.next() >> 11) as f64 / (1u64 << 53) as f64 * (high - low)
    }
}

const SPANS_PER_RECORD: usize = 4_096;
const LAYERS: u32 = 16;
const WALL_START_NS: u64 = 1_780_000_000_000_000_000;
const SAMPLE_EVERY_NS: u64 = 10_000_000;
/// Spans per rank per step: six per layer, then host, send, receive and the step's all-reduce.
const SPANS_PER_STEP: u64 = LAYERS as u64 * 6 + 4;

/// The ops of a layer and the step, by `OpId`; the name table every rank writes.
const OPS: [(&str, Category); 10] = [
    ("matmul_qkv", Category::Compute),
    ("attention", Category::Compute),
    ("matmul_o", Category::Compute),
    ("mlp", Category::Compute),
    ("kv_cache_copy", Category::Memory),
    ("all_reduce_tp", Category::Communication),
    ("schedule", Category::Host),
    ("send_activations", Category::Communication),
    ("recv_activations", Category::Communication),
    ("all_reduce_step", Category::Communication),
];

#[derive(Parser, Debug)]
struct Args {
    /// The run directory to write (created; must not hold a run).
    dir: PathBuf,
    #[arg(long, default_value_t = 64)]
    ranks: u32,
    /// About how many spans to write in all (rounded to whole steps).
    #[arg(long, default_value_t = 5_000_000)]
    spans: u64,
    #[arg(long, default_value_t = 8)]
    ranks_per_node: u32,
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.ranks == 0 || args.ranks_per_node == 0 || args.ranks % args.ranks_per_node != 0 {
        return Err(format!(
            "ranks '{}' must be a positive multiple of ranks per node '{}'",
            args.ranks, args.ranks_per_node
        )
        .into());
    }
    std::fs::create_dir_all(&args.dir)?;
    let nodes = args.ranks / args.ranks_per_node;
    let manifest = manifest(nodes, args.ranks_per_node, &args);
    let steps = (args.spans / (u64::from(args.ranks) * SPANS_PER_STEP)).max(1);
    let mut run = Synth::new(&args.dir, &manifest, args.seed)?;
    for _ in 0..steps {
        run.step()?;
    }
    let spans = run.finish()?;
    manifest.store(&args.dir)?;
    println!(
        "{}: {nodes} nodes, {} ranks, {steps} steps, {spans} spans",
        args.dir.display(),
        args.ranks
    );
    Ok(())
}

fn manifest(nodes: u32, ranks_per_node: u32, args: &Args) -> RunManifest {
    let mut parameters = BTreeMap::new();
    parameters.insert("synthetic_spans".to_string(), args.spans.into());
    parameters.insert("seed".to_string(), args.seed.into());
    RunManifest {
        format_version: pinch_traces::manifest::MANIFEST_VERSION,
        run_id: format!("synth-{}r-{}s", args.ranks, args.spans),
        started_at_unix_ns: WALL_START_NS,
        nodes: (0..nodes)
            .map(|n| NodeEntry {
                node: NodeId(n),
                host: format!("synth{n}"),
                ranks: (0..ranks_per_node)
                    .map(|i| Rank(n * ranks_per_node + i))
                    .collect(),
                log_file: format!("node-{n}.pnl"),
            })
            .collect(),
        workload: WorkloadSpec {
            name: "synthetic-tp-pp".into(),
            model: "synthetic".into(),
            parameters,
        },
        versions: Versions::current(env!("CARGO_PKG_VERSION")),
        counter_sources: Vec::new(),
    }
}

/// One node's log being written, and its clock.
struct NodeOut {
    node: NodeId,
    ranks: Vec<Rank>,
    writer: NodeLogWriter<BufWriter<File>>,
    spans: Vec<Span>,
    /// The node's monotonic clock reads `wall − wall_minus_mono_ns`.
    wall_minus_mono_ns: u64,
    /// How far the node's wall clock (and so its anchor) is off the true time.
    skew_ns: u64,
    next_sample_wall_ns: u64,
}

impl NodeOut {
    fn mono(&self, wall_ns: u64) -> u64 {
        wall_ns - self.wall_minus_mono_ns
    }

    fn push(&mut self, span: Span) -> Result<(), Box<dyn std::error::Error>> {
        self.spans.push(span);
        if self.spans.len() >= SPANS_PER_RECORD {
            self.flush_spans()?;
        }
        Ok(())
    }

    fn flush_spans(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        if !self.spans.is_empty() {
            let spans = std::mem::take(&mut self.spans);
            self.writer.append(&Record::Spans(spans))?;
        }
        Ok(())
    }
}

/// Every node advancing together; times are true wall-clock nanoseconds.
struct Synth {
    nodes: Vec<NodeOut>,
    /// Per rank, when it is free to start its next op.
    free_at_ns: Vec<u64>,
    rng: Jitter,
    step: u32,
    /// Per tensor-parallel group (node), the next sequence number; the step group's after.
    seqs: Vec<u64>,
    spans: u64,
}

impl Synth {
    fn new(
        dir: &Path,
        manifest: &RunManifest,
        seed: u64,
    ) -> Result<Synth, Box<dyn std::error::Error>> {
        let mut rng = Jitter(seed);
        let mut nodes = Vec::new();
        for entry in &manifest.nodes {
            let file = File::create(dir.join(&entry.log_file))?;
            let mono_base_ns = 1_000_000_000 * (u64::from(entry.node.0) + 1) * 37;
            let skew_ns = rng.random_range(0..50_000);
            let mut out = NodeOut {
                node: entry.node,
                ranks: entry.ranks.clone(),
                writer: NodeLogWriter::new(BufWriter::with_capacity(1 << 20, file))?,
                spans: Vec::with_capacity(SPANS_PER_RECORD),
                wall_minus_mono_ns: WALL_START_NS - mono_base_ns,
                skew_ns,
                next_sample_wall_ns: WALL_START_NS,
            };
            start_records(&mut out)?;
            nodes.push(out);
        }
        let ranks = manifest.nodes.iter().map(|n| n.ranks.len()).sum();
        let groups = manifest.nodes.len() + 1;
        Ok(Synth {
            nodes,
            free_at_ns: vec![WALL_START_NS + 1_000_000; ranks],
            rng,
            step: 0,
            seqs: vec![0; groups],
            spans: 0,
        })
    }

    /// One step on every rank: the layers, then the pipeline hand-off and the step all-reduce.
    fn step(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        for layer in 0..LAYERS {
            for n in 0..self.nodes.len() {
                self.layer(n, layer)?;
            }
        }
        for n in 0..self.nodes.len() {
            self.host_and_pipeline(n)?;
        }
        self.step_all_reduce()?;
        for n in 0..self.nodes.len() {
            self.samples(n)?;
        }
        self.step += 1;
        Ok(())
    }

    fn attrs(&self, layer: Option<u32>) -> SpanAttrs {
        SpanAttrs {
            layer,
            step: Some(self.step),
            ..SpanAttrs::default()
        }
    }

    /// Runs `op` on `rank` for about `mean_ns` from when the rank is free; returns its span.
    fn op(&mut self, rank: Rank, op: u32, mean_ns: u64, attrs: SpanAttrs) -> (u64, u64, Span) {
        let duration_ns = mean_ns + self.rng.random_range(0..mean_ns / 4 + 1);
        let gap_ns = self.rng.random_range(200..2_000);
        let start = self.free_at_ns[rank.0 as usize] + gap_ns;
        self.free_at_ns[rank.0 as usize] = start + duration_ns;
        let span = span(rank, op, start, duration_ns, attrs);
        (start, duration_ns, span)
    }

    fn layer(&mut self, n: usize, layer: u32) -> Result<(), Box<dyn std::error::Error>> {
        const COMPUTE: [(u64, u64, u64); 4] = [
            (40_000, 6_291_456, 3_145_728),
            (25_000, 2_097_152, 4_194_304),
            (15_000, 2_097_152, 1_048_576),
            (80_000, 16_777_216, 8_388_608),
        ];
        let ranks = self.nodes[n].ranks.clone();
        for &rank in &ranks {
            for (op, (mean_ns, flops, bytes)) in COMPUTE.iter().enumerate() {
                let attrs = SpanAttrs {
                    flops: Some(*flops),
                    bytes: Some(*bytes),
                    ..self.attrs(Some(layer))
                };
                let (_, _, s) = self.op(rank, op as u32, *mean_ns, attrs);
                self.emit(n, s)?;
            }
            let attrs = SpanAttrs {
                bytes: Some(262_144),
                ..self.attrs(Some(layer))
            };
            let (_, _, s) = self.op(rank, 4, 5_000, attrs);
            self.emit(n, s)?;
        }
        self.all_reduce(n, &ranks, 5, n, 65_536, Some(layer))
    }

    /// An all-reduce over `ranks` on group `group`: each arrives when free; all leave together
    /// after the last arrival plus the transfer.
    fn all_reduce(
        &mut self,
        n_of_first: usize,
        ranks: &[Rank],
        op: u32,
        group: usize,
        message_bytes: u64,
        layer: Option<u32>,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let seq = self.seqs[group];
        self.seqs[group] += 1;
        let arrivals: Vec<u64> = ranks
            .iter()
            .map(|r| self.free_at_ns[r.0 as usize] + self.rng.random_range(200..3_000))
            .collect();
        let last = arrivals.iter().copied().max().unwrap_or(0);
        let end = last + 10_000 + message_bytes / 10;
        let per_node = ranks.len().min(self.nodes[n_of_first].ranks.len());
        for (i, (&rank, &arrive)) in ranks.iter().zip(&arrivals).enumerate() {
            let leave = end + self.rng.random_range(0..500);
            self.free_at_ns[rank.0 as usize] = leave;
            let attrs = SpanAttrs {
                collective: Some(CollectiveAttrs {
                    kind: CollectiveKind::AllReduce,
                    group: group as u32,
                    seq,
                    participants: ranks.len() as u32,
                    peer: None,
                    message_bytes,
                    wait_ns: Some(last - arrive),
                }),
                ..self.attrs(layer)
            };
            let s = span(rank, op, arrive, leave - arrive, attrs);
            self.emit(n_of_first + i / per_node, s)?;
        }
        Ok(())
    }

    /// The host's scheduling span, then each rank sends to the same place on the next node and
    /// receives from the previous one (a ring of pipeline stages).
    fn host_and_pipeline(&mut self, n: usize) -> Result<(), Box<dyn std::error::Error>> {
        let count = self.nodes.len();
        let ranks = self.nodes[n].ranks.clone();
        for (i, &rank) in ranks.iter().enumerate() {
            let attrs = self.attrs(None);
            let (_, _, s) = self.op(rank, 6, 20_000, attrs);
            self.emit(n, s)?;
            let next = self.nodes[(n + 1) % count].ranks[i];
            let prev = self.nodes[(n + count - 1) % count].ranks[i];
            let seq = u64::from(self.step);
            for (op, kind, peer) in [
                (7, CollectiveKind::Send, next),
                (8, CollectiveKind::Recv, prev),
            ] {
                let attrs = SpanAttrs {
                    collective: Some(CollectiveAttrs {
                        kind,
                        group: 1_000 + rank.0.min(peer.0) * 1_000 + rank.0.max(peer.0),
                        seq,
                        participants: 2,
                        peer: Some(peer),
                        message_bytes: 1_048_576,
                        wait_ns: None,
                    }),
                    ..self.attrs(None)
                };
                let (_, _, s) = self.op(rank, op, 30_000, attrs);
                self.emit(n, s)?;
            }
        }
        Ok(())
    }

    fn step_all_reduce(&mut self) -> Result<(), Box<dyn std::error::Error>> {
        let ranks: Vec<Rank> = self.nodes.iter().flat_map(|n| n.ranks.clone()).collect();
        let group = self.nodes.len();
        self.all_reduce(0, &ranks, 9, group, 4_194_304, None)
    }

    /// The node's counters, every `SAMPLE_EVERY_NS` up to its ranks' latest time.
    fn samples(&mut self, n: usize) -> Result<(), Box<dyn std::error::Error>> {
        let node = &self.nodes[n];
        let until = node
            .ranks
            .iter()
            .map(|r| self.free_at_ns[r.0 as usize])
            .max()
            .unwrap_or(0);
        let mut samples = Vec::new();
        let mut at = node.next_sample_wall_ns;
        while at <= until {
            for (counter, value) in [(0, 70.0), (1, 2.5e9)] {
                samples.push(CounterSample {
                    node: node.node,
                    device: DeviceId(0),
                    counter: CounterId(counter),
                    time_ns: node.mono(at),
                    value: value * self.rng.factor(0.8, 1.2),
                });
            }
            at += SAMPLE_EVERY_NS;
        }
        let node = &mut self.nodes[n];
        node.next_sample_wall_ns = at;
        if !samples.is_empty() {
            node.writer.append(&Record::Samples(samples))?;
        }
        Ok(())
    }

    /// Files a span (in true wall time) on node `n`'s clock.
    fn emit(&mut self, n: usize, mut s: Span) -> Result<(), Box<dyn std::error::Error>> {
        let node = &mut self.nodes[n];
        s.start_ns = node.mono(s.start_ns);
        self.spans += 1;
        node.push(s)
    }

    /// Ends every rank and node; returns how many spans were written.
    fn finish(mut self) -> Result<u64, Box<dyn std::error::Error>> {
        for n in 0..self.nodes.len() {
            let end = self.nodes[n]
                .ranks
                .iter()
                .map(|r| self.free_at_ns[r.0 as usize])
                .max()
                .unwrap_or(0);
            let node = &mut self.nodes[n];
            node.flush_spans()?;
            let at_ns = node.mono(end + 1_000);
            for &rank in &node.ranks.clone() {
                node.writer.append(&Record::RankEnd {
                    rank,
                    exit: RankExit::Success,
                    at_ns,
                })?;
            }
            node.writer.append(&Record::NodeEnd { at_ns })?;
            node.writer.flush()?;
        }
        Ok(self.spans)
    }
}

fn span(rank: Rank, op: u32, start_ns: u64, duration_ns: u64, attrs: SpanAttrs) -> Span {
    Span {
        rank,
        lane: Lane(0),
        category: OPS[op as usize].1,
        op: OpId(op),
        start_ns,
        duration_ns,
        attrs,
    }
}

/// The node's and ranks' start records, op names and counter definitions.
fn start_records(out: &mut NodeOut) -> Result<(), Box<dyn std::error::Error>> {
    let anchor = ClockAnchor {
        mono_ns: out.mono(WALL_START_NS),
        wall_ns: WALL_START_NS + out.skew_ns,
        read_uncertainty_ns: 2_000,
    };
    out.writer.append(&Record::NodeStart {
        node: out.node,
        host: format!("synth{}", out.node.0),
        ranks: out.ranks.clone(),
        agent_pid: 100,
        anchor,
    })?;
    out.writer.append(&Record::Device(DeviceDef {
        id: DeviceId(0),
        name: "host".into(),
    }))?;
    for (id, name, unit) in [
        (0, "cpu.utilization", Unit::Percent),
        (1, "net.rx", Unit::BytesPerSecond),
    ] {
        out.writer.append(&Record::Counter(CounterDef {
            id: CounterId(id),
            name: name.into(),
            unit,
        }))?;
    }
    for &rank in &out.ranks {
        out.writer.append(&Record::RankStart {
            rank,
            pid: 1_000 + rank.0,
            anchor,
        })?;
        for (op, (name, _)) in OPS.iter().enumerate() {
            out.writer.append(&Record::OpName {
                rank,
                op: OpId(op as u32),
                name: (*name).into(),
            })?;
        }
    }
    Ok(())
}
