//! Command-line arguments, as parsed (raw). Validation into the crates' types happens in `cmd`.

use clap::{Args, Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;

/// pinch finds the choke points of distributed LLM inference: it runs a reference workload on
/// several ranks, records every op, collective and counter on every node, and names what holds
/// the run back.
#[derive(Debug, Parser)]
#[command(name = "pinch", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve a stream of requests with a reference model on local nodes, record every rank, and
    /// report the serving metrics and the bottlenecks. With no options: 2 nodes on this machine,
    /// TP=2 across them, the tiny model, 32 requests kept 8 in flight.
    Run(Box<RunArgs>),
    /// Report again on a recorded run, from its node logs; or analyze PyTorch profiler
    /// (Kineto) traces as Holistic Trace Analysis does.
    Analyze(AnalyzeArgs),
    /// Write a recorded run (or Kineto traces) as a trace for timeline viewers: Perfetto's
    /// protobuf (.pftrace, for ui.perfetto.dev) or Chrome JSON (.json, for chrome://tracing).
    Export(ExportArgs),
    /// Open a recorded run (or PyTorch profiler traces) in the terminal dashboard: overview,
    /// timeline, findings, ops, communication and serving views (keys 1-6, ? for help, q to
    /// quit).
    Tui(TuiArgs),
    /// List the model presets with their shapes, parameter counts and weight sizes.
    Presets(crate::cmd::presets::PresetsArgs),
    /// Microbenchmarks: collectives (nccl-tests style) and decode memory bandwidth.
    #[command(subcommand)]
    Bench(BenchCommand),
    /// Measure this machine's ceilings for the roofline: memory bandwidth (STREAM), GEMM FLOP/s
    /// and link latency and bandwidth (shm and TCP). Cached per host; --fresh measures again.
    Calibrate(crate::cmd::calibrate::CalibrateArgs),
    /// (internal) The per-node agent: starts the node's ranks and writes its node log.
    #[command(hide = true)]
    Agent(AgentArgs),
    /// (internal) One rank of the workload; writes its spans to stdout for its agent.
    #[command(hide = true)]
    Rank(RankArgs),
}

/// The workload: model, layout, request stream, scheduler and injected faults. Validated into
/// the workloads crate's `ServeConfig` by the coordinator, which hands it to every rank.
#[derive(Debug, Clone, Args)]
pub struct WorkloadArgs {
    /// Model preset (see `pinch presets`).
    #[arg(long, alias = "preset", default_value = "tiny")]
    pub model: String,
    /// A Hugging Face config.json to take the model's shape from (instead of --model).
    #[arg(long, conflicts_with = "model")]
    pub model_config: Option<PathBuf>,
    /// A directory of safetensors to load weights from (else seeded synthetic weights).
    #[arg(long)]
    pub weights: Option<PathBuf>,
    /// How weights are stored: f32 or bf16 (computation is f32). Default: the preset's.
    #[arg(long)]
    pub dtype: Option<String>,
    /// Parallel layout, e.g. `tp=2`, `dp=2,tp=2`, `tp=2,pp=2`, `ep=2`. Default: tp = nodes.
    #[arg(long)]
    pub parallel: Option<String>,
    /// Requests in the stream.
    #[arg(long, default_value_t = 32)]
    pub requests: usize,
    /// Poisson arrivals at this many requests per second (default: closed loop, --concurrency).
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<f64>,
    /// Requests kept in flight (closed loop); the default when no --rate is given.
    #[arg(long)]
    pub concurrency: Option<usize>,
    /// Prompt lengths: `64`, `uniform:32-128` or `lognormal:MEDIAN,SIGMA,MAX`.
    #[arg(long, default_value = "64")]
    pub prompt_len: String,
    /// Output lengths, same forms as --prompt-len.
    #[arg(long, default_value = "64")]
    pub output_len: String,
    /// Data-parallel routing: round-robin or least-tokens.
    #[arg(long, default_value = "round-robin")]
    pub route: String,
    /// Positions per KV-cache block.
    #[arg(long, default_value_t = 16)]
    pub block_size: usize,
    /// KV-cache blocks per replica (default: room for --max-seqs of the longest requests).
    #[arg(long)]
    pub kv_blocks: Option<usize>,
    /// Sequences a replica batches together at most.
    #[arg(long, default_value_t = 8)]
    pub max_seqs: usize,
    /// Tokens a step processes at most (prefill chunks included).
    #[arg(long, default_value_t = 512)]
    pub max_batch_tokens: usize,
    /// Split long prompts over several steps, next to decodes.
    #[arg(long)]
    pub chunked_prefill: bool,
    /// Pipeline micro-batches per step.
    #[arg(long, default_value_t = 2)]
    pub micro_batches: usize,
    /// MoE capacity factor: tokens an expert takes per step as a multiple of an even share
    /// (overflow is dropped). Default: no limit.
    #[arg(long)]
    pub capacity_factor: Option<f32>,
    /// All-reduce algorithm: auto, ring or one-shot.
    #[arg(long, default_value = "auto")]
    pub all_reduce: String,
    /// Threads each rank's matmuls may use.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Use TCP between ranks of one node too (default: shared memory).
    #[arg(long)]
    pub no_shm: bool,
    /// Service-level objectives for goodput, e.g. `ttft=200ms,tpot=50ms`.
    #[arg(long)]
    pub slo: Option<String>,
    /// Seed of the synthetic weights and the request stream.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fault: slow one rank's compute, `RANK=FACTOR` (e.g. `1=2.5`).
    #[arg(long)]
    pub slow_rank: Option<String>,
    /// Fault: skew expert routing (Zipf exponent over experts, e.g. `1.2`).
    #[arg(long)]
    pub expert_skew: Option<f64>,
    /// Fault: pin a rank to cores, `RANK=CORES` (e.g. `0=0` or `1=0-1`).
    #[arg(long)]
    pub pin_rank: Option<String>,
    /// Fault: delay a link, `A-B=DELAY` (e.g. `0-1=2ms`).
    #[arg(long)]
    pub link_delay: Vec<String>,
    /// Fault: cap a link's rate, `A-B=RATE` (e.g. `0-1=100mbit`).
    #[arg(long)]
    pub link_rate: Vec<String>,
    /// Fault: make this rank crash (abort) after `--crash-at-step` steps.
    #[arg(long, requires = "crash_at_step")]
    pub crash_rank: Option<u32>,
    /// Fault: the step after which `--crash-rank` crashes.
    #[arg(long, requires = "crash_rank")]
    pub crash_at_step: Option<u32>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Number of nodes: one agent process each, all on this machine. Ranks are placed
    /// node-major (node 0 gets the first ranks).
    #[arg(long, default_value_t = 2)]
    pub nodes: u32,
    #[command(flatten)]
    pub workload: WorkloadArgs,
    /// Counter sampling rate of each agent, in Hz (1 to 1000): the rate of every source that
    /// `--counters` gives no rate of its own.
    #[arg(long, default_value_t = 10)]
    pub sample_hz: u32,
    /// The counter sources to read and their rates, e.g. `procfs=1000,perf=100,nvml`
    /// (sources: procfs, perf, nvml, infiniband; a source left out is not read), or `none`.
    /// Default: every source at --sample-hz.
    #[arg(long, conflicts_with = "no_counters")]
    pub counters: Option<String>,
    /// Where to store the run (default: runs/<timestamp>). Must not already hold a run.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print report.json's content instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Watch the run in the terminal dashboard as it goes (refreshed each second), and stay on
    /// its result at the end; q leaves it, and the report prints as usual.
    #[arg(long, conflicts_with = "json")]
    pub tui: bool,
    /// Serve each node's latest counters in Prometheus' text format, at /metrics: node n on
    /// this address's port + n. Loopback only. Off by default.
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
    /// Read no counters (spans only): to measure what counter collection costs. The same as
    /// `--counters none`.
    #[arg(long, conflicts_with = "metrics_addr")]
    pub no_counters: bool,
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// A run directory written by `pinch run` (holds manifest.json and node logs), or PyTorch
    /// profiler (Kineto) traces: .json or .json.gz files, one per rank, or a directory of them.
    #[arg(required = true, value_name = "RUN_DIR|TRACES")]
    pub paths: Vec<PathBuf>,
    /// Print the report as JSON instead of tables (for a run: the content of report.json).
    #[arg(long)]
    pub json: bool,
    /// Kineto traces: also write HTA's CSV files (temporal_breakdown.csv, comm_comp_overlap.csv,
    /// idle_time_breakdown.csv, gpu_kernel_breakdown_by_type.csv) into this directory.
    #[arg(long, value_name = "DIR")]
    pub hta_csv: Option<PathBuf>,
    /// Kineto traces: keep times to the nanosecond instead of rounding them to whole
    /// microseconds as HTA does (starts up, ends down).
    #[arg(long)]
    pub exact_times: bool,
}

#[derive(Debug, Args)]
pub struct TuiArgs {
    /// A run directory written by `pinch run`, or PyTorch profiler (Kineto) traces: a trace
    /// file or a directory of them (.json, .json.gz), one per rank.
    #[arg(value_name = "RUN_DIR|TRACES")]
    pub run: PathBuf,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// A run directory written by `pinch run`, or PyTorch profiler (Kineto) traces: .json or
    /// .json.gz files, one per rank, or a directory of them.
    #[arg(required = true, value_name = "RUN_DIR|TRACES")]
    pub paths: Vec<PathBuf>,
    /// The trace file to write.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// pftrace (Perfetto's protobuf) or json (Chrome's Trace Event Format). Default: from the
    /// output's extension (.pftrace or .perfetto-trace, .json).
    #[arg(long)]
    pub format: Option<String>,
    /// How a .pftrace stores its packets: deflate (batches deflated into `compressed_packets`,
    /// which Perfetto expands as it loads) or none (for readers that do not expand them).
    #[arg(long, value_name = "deflate|none", default_value = "deflate")]
    pub compression: String,
}

#[derive(Debug, Args)]
pub struct AgentArgs {
    #[arg(long)]
    pub node: u32,
    /// The ranks this node starts, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub ranks: Vec<u32>,
    #[arg(long)]
    pub log: PathBuf,
    /// The counter sources and their rates (`CounterPlan`'s spec), or `none`.
    #[arg(long)]
    pub counters: String,
    #[arg(long)]
    pub rendezvous: SocketAddr,
    #[arg(long)]
    pub router: SocketAddr,
    /// The run's workload.json (a `ServeConfig`).
    #[arg(long)]
    pub plan: PathBuf,
    /// Serve the node's counters for Prometheus here (loopback only).
    #[arg(long)]
    pub metrics_addr: Option<SocketAddr>,
}

#[derive(Debug, Args)]
pub struct RankArgs {
    #[arg(long)]
    pub rank: u32,
    #[arg(long)]
    pub node: u32,
    #[arg(long)]
    pub rendezvous: SocketAddr,
    #[arg(long)]
    pub router: SocketAddr,
    #[arg(long)]
    pub plan: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// An nccl-tests-style sweep of every collective over message sizes: time, algbw, busbw.
    Collectives(crate::cmd::bench::CollectivesArgs),
    /// Decode's achieved memory bandwidth against a STREAM triad on this machine.
    Decode(crate::cmd::decode_bench::DecodeArgs),
}
