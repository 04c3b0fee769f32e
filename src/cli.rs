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
    /// Run a tensor-parallel inference workload on local nodes, record it, and report its
    /// bottlenecks. With no options: 2 nodes on this machine, TP=2 across them, the tiny model.
    Run(RunArgs),
    /// Report again on a recorded run, from its node logs.
    Analyze(AnalyzeArgs),
    /// Measure the communication layer: `pinch bench collectives` sweeps every collective over
    /// message sizes.
    Bench(crate::cmd::bench::BenchArgs),
    /// (internal) The per-node agent: starts the node's ranks and writes its node log.
    #[command(hide = true)]
    Agent(AgentArgs),
    /// (internal) One rank of the workload; writes its spans to stdout for its agent.
    #[command(hide = true)]
    Rank(RankArgs),
}

/// The workload every rank runs; the same flags travel from `run` to each agent and rank.
#[derive(Debug, Clone, Args)]
pub struct WorkloadArgs {
    /// Model preset (`tiny`).
    #[arg(long, default_value = "tiny")]
    pub preset: String,
    /// Tensor-parallel degree: the number of ranks. Must divide the model's attention heads and
    /// MLP size; KV heads are split over the ranks, or replicated when ranks outnumber them.
    /// Defaults to the number of nodes (one rank per node).
    #[arg(long)]
    pub tp: Option<usize>,
    /// Prompts per batch.
    #[arg(long, default_value_t = 8)]
    pub batch: usize,
    /// Tokens per prompt (prefill length).
    #[arg(long, default_value_t = 64)]
    pub prompt_len: usize,
    /// Tokens generated per prompt by greedy decoding.
    #[arg(long, default_value_t = 192)]
    pub decode_tokens: usize,
    /// Batches served one after another, each prefilled with fresh prompts, then decoded.
    #[arg(long, default_value_t = 4)]
    pub rounds: usize,
    /// Seed of the synthetic weights and prompts.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Fault injection: make this rank crash (abort) after `--crash-at-step` steps.
    #[arg(long, requires = "crash_at_step")]
    pub crash_rank: Option<u32>,
    /// Fault injection: the step after which `--crash-rank` crashes.
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
    /// Counter sampling rate of each agent, in Hz (1 to 1000).
    #[arg(long, default_value_t = 10)]
    pub sample_hz: u32,
    /// Where to store the run (default: runs/<timestamp>). Must not already hold a run.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Print report.json's content instead of tables.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AnalyzeArgs {
    /// A run directory written by `pinch run` (holds manifest.json and node logs).
    pub run_dir: PathBuf,
    /// Print the report as JSON (the content of report.json) instead of tables.
    #[arg(long)]
    pub json: bool,
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
    #[arg(long)]
    pub sample_hz: u32,
    #[arg(long)]
    pub rendezvous: SocketAddr,
    #[arg(long)]
    pub world: u32,
    #[command(flatten)]
    pub workload: WorkloadArgs,
}

#[derive(Debug, Args)]
pub struct RankArgs {
    #[arg(long)]
    pub rank: u32,
    #[arg(long)]
    pub world: u32,
    #[arg(long)]
    pub rendezvous: SocketAddr,
    #[command(flatten)]
    pub workload: WorkloadArgs,
}

impl WorkloadArgs {
    /// The flags that reproduce these arguments on a child's command line.
    pub fn to_flags(&self, tp: usize) -> Vec<String> {
        let mut flags = vec![
            format!("--preset={}", self.preset),
            format!("--tp={tp}"),
            format!("--batch={}", self.batch),
            format!("--prompt-len={}", self.prompt_len),
            format!("--decode-tokens={}", self.decode_tokens),
            format!("--rounds={}", self.rounds),
            format!("--seed={}", self.seed),
        ];
        if let (Some(rank), Some(step)) = (self.crash_rank, self.crash_at_step) {
            flags.push(format!("--crash-rank={rank}"));
            flags.push(format!("--crash-at-step={step}"));
        }
        flags
    }
}
