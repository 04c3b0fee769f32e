//! `pinch run`: the coordinator. It validates the workload into a `ServeConfig` (written to the
//! run directory as workload.json for every rank), starts the rendezvous, the request router and
//! one agent process per node, shows progress, then analyzes the node logs and prints the report.

use crate::cli::RunArgs;
use crate::cmd::analyze::load;
use crate::cmd::workload::serve_config;
use crate::exit::bad_input;
use crate::render;
use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use pinch_collector::{AgentEvent, CounterPlan, SampleRate};
use pinch_traces::{
    NodeEntry, NodeId, Rank, RankExit, RunManifest, Versions, WorkloadSpec,
    manifest::MANIFEST_VERSION, wall_now_ns,
};
use pinch_workloads::RendezvousServer;
use pinch_workloads::engine::ServeConfig;
use pinch_workloads::serving::{RouterServer, generate};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, IsTerminal};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

mod live;

/// How long the rendezvous waits for every rank to register.
const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the router waits for every replica's leader to connect.
const ROUTER_TIMEOUT: Duration = Duration::from_secs(300);
/// The run's `ServeConfig`, read by every agent and rank.
const PLAN_FILE: &str = "workload.json";

/// A validated `pinch run`: everything checked before anything starts.
struct Plan {
    config: ServeConfig,
    metrics_addr: Option<std::net::SocketAddr>,
    counters: CounterPlan,
    nodes: Vec<NodeEntry>,
    sample_hz: u32,
    run_dir: PathBuf,
}

pub fn run(args: RunArgs) -> anyhow::Result<()> {
    let plan = plan(&args)?;
    if args.tui && !std::io::stdout().is_terminal() {
        return Err(bad_input(
            "--tui draws on a terminal, and standard output is not one".to_string(),
        ));
    }
    std::fs::create_dir_all(&plan.run_dir)
        .with_context(|| format!("cannot create run directory '{}'", plan.run_dir.display()))?;
    manifest(&plan, &args)?.store(&plan.run_dir)?;
    let plan_text = serde_json::to_string_pretty(&plan.config)?;
    std::fs::write(plan.run_dir.join(PLAN_FILE), plan_text + "\n")
        .with_context(|| format!("cannot write {PLAN_FILE} in '{}'", plan.run_dir.display()))?;
    let agent_failures = if args.tui {
        live::execute_in_dashboard(&plan)?
    } else {
        execute(&plan, Progress::Bar)?
    };
    // The node logs are read once: for the manifest's counter sources, the report and the
    // failures alike.
    let mut run = load(&plan.run_dir)?;
    run.manifest.counter_sources = run.nodes.iter().flat_map(|n| n.sources.clone()).collect();
    run.manifest.store(&plan.run_dir)?;
    let report = analyze_and_store(&run, &plan.run_dir);
    let failures = failures_cause_first(&run);
    render::write_report_json(&report, &plan.run_dir.join(render::REPORT_FILE))?;
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

/// The run's report, with its Parquet tables written beside the manifest. Tables that cannot be
/// written cost a warning, not the report: the node logs hold everything they would.
pub fn analyze_and_store(run: &pinch_analyzer::RunData, dir: &Path) -> pinch_analyzer::Report {
    match pinch_analyzer::analyze_and_store(run, dir) {
        Ok((report, _tables)) => report,
        Err(e) => {
            eprintln!("pinch: warning: the run's tables are not stored: {e}");
            pinch_analyzer::analyze(run)
        }
    }
}

fn plan(args: &RunArgs) -> anyhow::Result<Plan> {
    if args.nodes == 0 {
        return Err(bad_input("node count '0' must be at least 1"));
    }
    let counters = counter_plan(args)?;
    let config = serve_config(&args.workload, args.nodes as usize)?;
    let world = config.layout.world() as u32;
    if let Some(slo) = &args.workload.slo {
        pinch_analyzer::Slo::parse(slo).map_err(bad_input)?;
    }
    if let Some(addr) = args.metrics_addr {
        check_metrics_addr(addr, args.nodes)?;
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
        metrics_addr: args.metrics_addr,
        counters,
        nodes,
        sample_hz: args.sample_hz,
        run_dir,
    })
}

/// The sources every agent reads and their rates, from `--counters`, `--sample-hz` and
/// `--no-counters`.
fn counter_plan(args: &RunArgs) -> anyhow::Result<CounterPlan> {
    let rate = SampleRate::new(args.sample_hz).map_err(bad_input)?;
    let plan = match (&args.counters, args.no_counters) {
        (_, true) => CounterPlan::none(),
        (Some(spec), false) => CounterPlan::parse(spec, rate).map_err(bad_input)?,
        (None, false) => CounterPlan::all(rate),
    };
    if plan.is_none() && args.metrics_addr.is_some() {
        return Err(bad_input(
            "--metrics-addr serves counters, and '--counters none' reads none",
        ));
    }
    Ok(plan)
}

/// The metrics endpoints must be on loopback, and every node's port must exist.
fn check_metrics_addr(addr: std::net::SocketAddr, nodes: u32) -> anyhow::Result<()> {
    if !addr.ip().is_loopback() {
        return Err(bad_input(format!(
            "metrics address '{addr}' is not loopback (the endpoint serves this host only)"
        )));
    }
    if u32::from(addr.port()) + nodes > u32::from(u16::MAX) + 1 || addr.port() == 0 {
        return Err(bad_input(format!(
            "metrics address '{addr}' leaves no port for each of the {nodes} nodes (node n \
             serves on port + n)"
        )));
    }
    Ok(())
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
    let c = &plan.config;
    let mut parameters: BTreeMap<String, serde_json::Value> = [
        ("model_name", serde_json::json!(c.model.name)),
        ("layout", serde_json::json!(c.layout.to_string())),
        ("dp", serde_json::json!(c.layout.dp)),
        ("tp", serde_json::json!(c.layout.tp)),
        ("pp", serde_json::json!(c.layout.pp)),
        ("ep", serde_json::json!(c.layout.ep)),
        ("nodes", serde_json::json!(args.nodes)),
        ("dtype", serde_json::json!(c.storage.name())),
        ("threads", serde_json::json!(c.threads)),
        ("requests", serde_json::to_value(&c.requests)?),
        ("route", serde_json::to_value(c.route)?),
        ("kv_blocks", serde_json::json!(c.kv_blocks)),
        ("block_size", serde_json::json!(c.block_size)),
        ("max_seqs", serde_json::json!(c.max_seqs)),
        ("max_batch_tokens", serde_json::json!(c.max_batch_tokens)),
        ("chunked_prefill", serde_json::json!(c.chunked_prefill)),
        ("micro_batches", serde_json::json!(c.micro_batches)),
        ("all_reduce", serde_json::to_value(c.all_reduce)?),
        ("shm", serde_json::json!(c.shm)),
        ("seed", serde_json::json!(c.seed)),
        ("sample_hz", serde_json::json!(plan.sample_hz)),
        ("counters", serde_json::json!(plan.counters.to_string())),
        ("model_params", serde_json::json!(c.model.param_count())),
        ("faults", serde_json::to_value(&c.faults)?),
        ("model", serde_json::to_value(&c.model)?),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(slo) = &args.workload.slo {
        parameters.insert("slo".to_string(), serde_json::json!(slo));
    }
    // The machine's measured ceilings, when `pinch calibrate` stored them for this host: the
    // analyzer's roofline reads them from here. A run never measures them itself.
    parameters.insert("calibration".to_string(), stored_calibration());
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
            name: "serve".into(),
            model: c.model.name.clone(),
            parameters,
        },
        versions: Versions::current(env!("CARGO_PKG_VERSION")),
        counter_sources: Vec::new(),
    })
}

/// This host's stored calibration as JSON, or `null` (with the reason on stderr when a stored
/// one cannot be read).
fn stored_calibration() -> serde_json::Value {
    use pinch_workloads::calibrate::{Host, cache_root, load};
    let Some(root) = cache_root() else {
        return serde_json::Value::Null;
    };
    match load(&root, &Host::detect().key()) {
        Ok(Some(calibration)) => serde_json::to_value(calibration).unwrap_or_default(),
        Ok(None) => serde_json::Value::Null,
        Err(e) => {
            eprintln!("pinch: the stored calibration is not used: {e}");
            serde_json::Value::Null
        }
    }
}

/// How the coordinator shows the run's progress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    /// A progress bar on stderr, the agents' stderr passed through.
    Bar,
    /// Nothing on the terminal (the dashboard has it): the agents' stderr goes to a file per
    /// node in the run directory.
    Quiet,
}

/// Starts the rendezvous and the agents, follows their progress, and returns what failed.
fn execute(plan: &Plan, progress: Progress) -> anyhow::Result<Vec<String>> {
    let world = plan.config.layout.world();
    let server = RendezvousServer::bind("127.0.0.1:0").context("cannot start the rendezvous")?;
    let rendezvous = server.addr();
    let serving = std::thread::spawn(move || server.serve(world, RENDEZVOUS_TIMEOUT));
    let c = &plan.config;
    let router = RouterServer::start(
        generate(&c.requests),
        c.requests.arrivals.clone(),
        c.layout.dp,
        c.route,
        ROUTER_TIMEOUT,
    )
    .context("cannot start the request router")?;
    let router_addr = router.addr();
    let (events, received) = mpsc::channel();
    let mut agents = Vec::new();
    for node in &plan.nodes {
        agents.push(spawn_agent(
            plan,
            node,
            (rendezvous, router_addr),
            events.clone(),
            progress,
        )?);
    }
    drop(events);
    let failures = follow(received, c.requests.requests as u64, progress);
    let mut failures = failures;
    for (node, mut child) in agents {
        let status = child
            .wait()
            .with_context(|| format!("cannot wait for the agent of {node}"))?;
        if !status.success() && failures.is_empty() {
            failures.push(format!("the agent of {node} failed ({status})"));
        }
    }
    // A rendezvous or router that never completed already surfaced as rank failures.
    let _ = serving.join();
    let _ = router.join();
    Ok(failures)
}

fn spawn_agent(
    plan: &Plan,
    node: &NodeEntry,
    (rendezvous, router): (std::net::SocketAddr, std::net::SocketAddr),
    events: mpsc::Sender<AgentEvent>,
    progress: Progress,
) -> anyhow::Result<(NodeId, Child)> {
    let exe = std::env::current_exe().context("cannot find the pinch executable")?;
    let stderr = match progress {
        Progress::Bar => Stdio::inherit(),
        Progress::Quiet => {
            let path = plan.run_dir.join(format!("agent-{}.stderr", node.node.0));
            let file = std::fs::File::create(&path)
                .with_context(|| format!("cannot create '{}'", path.display()))?;
            Stdio::from(file)
        }
    };
    let ranks: Vec<String> = node.ranks.iter().map(|r| r.0.to_string()).collect();
    let mut child = Command::new(exe)
        .arg("agent")
        .arg(format!("--node={}", node.node.0))
        .arg(format!("--ranks={}", ranks.join(",")))
        .arg("--log")
        .arg(plan.run_dir.join(&node.log_file))
        .arg(format!("--counters={}", plan.counters))
        .arg(format!("--rendezvous={rendezvous}"))
        .arg(format!("--router={router}"))
        .arg("--plan")
        .arg(plan.run_dir.join(PLAN_FILE))
        .args(plan.metrics_addr.map(|mut addr| {
            addr.set_port(addr.port() + node.node.0 as u16);
            format!("--metrics-addr={addr}")
        }))
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .with_context(|| format!("cannot start the agent of {}", node.node))?;
    let stdout = child.stdout.take().context("agent stdout is not piped")?;
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(event) = AgentEvent::from_line(&line)
                && events.send(event).is_err()
            {
                break;
            }
        }
    });
    Ok((node.node, child))
}

/// Shows progress (requests finished) until every agent closed its stdout; returns the rank
/// failures reported.
fn follow(events: mpsc::Receiver<AgentEvent>, requests: u64, progress: Progress) -> Vec<String> {
    let bar = match progress {
        Progress::Bar => ProgressBar::new(requests),
        Progress::Quiet => ProgressBar::hidden(),
    };
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} [{bar:30}] {pos}/{len} requests ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_message("serving");
    bar.enable_steady_tick(Duration::from_millis(120));
    let mut done: BTreeMap<Rank, u32> = BTreeMap::new();
    let mut failures = Vec::new();
    for event in events {
        match event {
            AgentEvent::Progress { rank, done: d, .. } => {
                done.insert(rank, d);
                bar.set_position(done.values().map(|&d| u64::from(d)).sum());
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
