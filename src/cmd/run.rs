//! `pinch run`: the coordinator. It validates the layout, starts a rendezvous for the ranks and
//! one agent process per node, shows progress, then analyzes the node logs and prints the report.

use crate::cli::RunArgs;
use crate::cmd::analyze::load;
use crate::cmd::workload::tp_config;
use crate::exit::bad_input;
use crate::render;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use pinch_collector::{AgentEvent, SampleRate};
use pinch_traces::{
    NodeEntry, NodeId, Rank, RankExit, RunManifest, Versions, WorkloadSpec,
    manifest::MANIFEST_VERSION, wall_now_ns,
};
use pinch_workloads::{RendezvousServer, TpRunConfig};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long the rendezvous waits for every rank to register.
const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(120);

/// A validated `pinch run`: everything checked before anything starts.
struct Plan {
    config: TpRunConfig,
    nodes: Vec<NodeEntry>,
    sample_hz: u32,
    run_dir: PathBuf,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let plan = plan(&args)?;
    std::fs::create_dir_all(&plan.run_dir)
        .with_context(|| format!("cannot create run directory '{}'", plan.run_dir.display()))?;
    manifest(&plan, &args)?.store(&plan.run_dir)?;
    let agent_failures = execute(&plan, &args)?;
    // The node logs are read once: for the manifest's counter sources, the report and the
    // failures alike.
    let mut run = load(&plan.run_dir)?;
    run.manifest.counter_sources = run.nodes.iter().flat_map(|n| n.sources.clone()).collect();
    run.manifest.store(&plan.run_dir)?;
    let report = pinch_analyzer::analyze(&run);
    let failures = failures_cause_first(&run);
    render::write_report_json(&report, &plan.run_dir.join("report.json"))?;
    render::print_report(&report, args.json)?;
    if !args.json {
        eprintln!("run stored in {}", plan.run_dir.display());
    }
    let stored = plan.run_dir.display();
    match (failures.first(), agent_failures.first()) {
        (Some((_, _, rank, message)), _) => {
            let others = match failures.len() - 1 {
                0 => String::new(),
                n => format!("; {n} more rank(s) failed with it"),
            };
            anyhow::bail!("{rank} failed first: {message}{others} (run stored in {stored})")
        }
        (None, Some(failure)) => anyhow::bail!("{failure} (run stored in {stored})"),
        (None, None) => Ok(()),
    }
}

fn plan(args: &RunArgs) -> anyhow::Result<Plan> {
    if args.nodes == 0 {
        return Err(bad_input("node count '0' must be at least 1"));
    }
    SampleRate::new(args.sample_hz).map_err(bad_input)?;
    let config = tp_config(&args.workload, args.nodes as usize)?;
    let world = config.tp as u32;
    if world % args.nodes != 0 {
        return Err(bad_input(format!(
            "{} ranks (--tp {world}) cannot be spread evenly over '{}' nodes",
            world, args.nodes
        )));
    }
    let run_dir = match &args.out {
        Some(dir) => dir.clone(),
        None => default_run_dir(),
    };
    if run_dir.join(pinch_traces::manifest::MANIFEST_FILE).exists() {
        return Err(bad_input(format!(
            "output directory '{}' already holds a run",
            run_dir.display()
        )));
    }
    let nodes = place_ranks(args.nodes, world);
    Ok(Plan {
        config,
        nodes,
        sample_hz: args.sample_hz,
        run_dir,
    })
}

/// Ranks placed node-major: node 0 holds the first `world / nodes` ranks, and so on.
fn place_ranks(nodes: u32, world: u32) -> Vec<NodeEntry> {
    let per_node = world / nodes;
    (0..nodes)
        .map(|n| NodeEntry {
            node: NodeId(n),
            host: host_name(),
            ranks: (n * per_node..(n + 1) * per_node).map(Rank).collect(),
            log_file: format!("node-{n}.pnl"),
        })
        .collect()
}

fn default_run_dir() -> PathBuf {
    let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
    let base = Path::new("runs");
    let mut dir = base.join(&stamp);
    let mut n = 2;
    while dir.exists() {
        dir = base.join(format!("{stamp}-{n}"));
        n += 1;
    }
    dir
}

/// This machine's host name, as the kernel reports it.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

fn manifest(plan: &Plan, args: &RunArgs) -> anyhow::Result<RunManifest> {
    let w = &args.workload;
    let model = serde_json::to_value(&plan.config.model)?;
    let parameters: BTreeMap<String, serde_json::Value> = [
        ("preset", serde_json::json!(w.preset)),
        ("nodes", serde_json::json!(args.nodes)),
        ("tp", serde_json::json!(plan.config.tp)),
        ("batch", serde_json::json!(plan.config.batch)),
        ("prompt_len", serde_json::json!(plan.config.prompt_len)),
        (
            "decode_tokens",
            serde_json::json!(plan.config.decode_tokens),
        ),
        ("rounds", serde_json::json!(plan.config.rounds)),
        ("seed", serde_json::json!(plan.config.seed)),
        ("sample_hz", serde_json::json!(plan.sample_hz)),
        (
            "model_params",
            serde_json::json!(plan.config.model.param_count()),
        ),
        ("model", model),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let started = wall_now_ns();
    Ok(RunManifest {
        format_version: MANIFEST_VERSION,
        run_id: format!(
            "{}-{:04x}",
            chrono::Local::now().format("%Y%m%dT%H%M%S"),
            rand::random::<u16>()
        ),
        started_at_unix_ns: started,
        nodes: plan.nodes.clone(),
        workload: WorkloadSpec {
            name: "decode-tp".into(),
            model: w.preset.clone(),
            parameters,
        },
        versions: Versions::current(env!("CARGO_PKG_VERSION")),
        counter_sources: Vec::new(),
    })
}

/// Starts the rendezvous and the agents, follows their progress, and returns what failed.
fn execute(plan: &Plan, args: &RunArgs) -> anyhow::Result<Vec<String>> {
    let world = plan.config.tp;
    let server = RendezvousServer::bind("127.0.0.1:0").context("cannot start the rendezvous")?;
    let rendezvous = server.addr();
    let serving = std::thread::spawn(move || server.serve(world, RENDEZVOUS_TIMEOUT));
    let (events, received) = mpsc::channel();
    let mut agents = Vec::new();
    for node in &plan.nodes {
        agents.push(spawn_agent(plan, args, node, rendezvous, events.clone())?);
    }
    drop(events);
    let failures = follow(received, world as u32);
    let mut failures = failures;
    for (node, mut child) in agents {
        let status = child
            .wait()
            .with_context(|| format!("cannot wait for the agent of {node}"))?;
        if !status.success() && failures.is_empty() {
            failures.push(format!("the agent of {node} failed ({status})"));
        }
    }
    // A rendezvous that never completed already surfaced as rank failures.
    let _ = serving.join();
    Ok(failures)
}

fn spawn_agent(
    plan: &Plan,
    args: &RunArgs,
    node: &NodeEntry,
    rendezvous: std::net::SocketAddr,
    events: mpsc::Sender<AgentEvent>,
) -> anyhow::Result<(NodeId, Child)> {
    let exe = std::env::current_exe().context("cannot find the pinch executable")?;
    let ranks: Vec<String> = node.ranks.iter().map(|r| r.0.to_string()).collect();
    let mut child = Command::new(exe)
        .arg("agent")
        .arg(format!("--node={}", node.node.0))
        .arg(format!("--ranks={}", ranks.join(",")))
        .arg("--log")
        .arg(plan.run_dir.join(&node.log_file))
        .arg(format!("--sample-hz={}", plan.sample_hz))
        .arg(format!("--rendezvous={rendezvous}"))
        .arg(format!("--world={}", plan.config.tp))
        .args(args.workload.to_flags(plan.config.tp))
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start the agent of {}", node.node))?;
    let stdout = child.stdout.take().context("agent stdout is not piped")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(event) = AgentEvent::from_line(&line) {
                if events.send(event).is_err() {
                    break;
                }
            }
        }
    });
    Ok((node.node, child))
}

/// Shows progress until every agent closed its stdout; returns the rank failures reported.
fn follow(events: mpsc::Receiver<AgentEvent>, world: u32) -> Vec<String> {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} {msg} [{bar:30}] {pos}/{len} rank-steps ({elapsed})",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message(format!("running {world} ranks"));
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut done: BTreeMap<Rank, (u32, u32)> = BTreeMap::new();
    let mut failures = Vec::new();
    for event in events {
        match event {
            AgentEvent::Progress {
                rank,
                done: d,
                total,
            } => {
                done.insert(rank, (d, total));
                bar.set_length(u64::from(world) * u64::from(total));
                bar.set_position(done.values().map(|&(d, _)| u64::from(d)).sum());
            }
            AgentEvent::RankEnded { rank, ok, message } => {
                if !ok {
                    bar.println(format!("{rank} failed: {message}"));
                    failures.push(format!("{rank} failed: {message}"));
                }
            }
        }
    }
    bar.finish_and_clear();
    failures
}

/// Failed ranks, the cause first: ranks that failed on their own before ranks that lost a peer,
/// each group by wall-clock end: (lost a peer, end, rank, how it ended).
fn failures_cause_first(run: &pinch_analyzer::RunData) -> Vec<(bool, i128, Rank, String)> {
    let mut failures = Vec::new();
    for node in &run.nodes {
        for (&rank, life) in &node.ranks {
            let Some(RankExit::Failed { code, message, .. }) = &life.exit else {
                continue;
            };
            let wall_ns = node
                .anchor
                .zip(life.end_ns)
                .map_or(i128::MAX, |(a, t)| a.to_wall_ns(t));
            let lost_peer = code == &Some(crate::exit::PEER_LOST);
            failures.push((lost_peer, wall_ns, rank, message.clone()));
        }
    }
    failures.sort();
    failures
}
