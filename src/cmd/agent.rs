//! `pinch agent` (internal): one node's agent. It starts the node's ranks as `pinch rank`
//! processes, writes the node log, and reports progress to the coordinator as JSON lines on stdout.

use crate::cli::AgentArgs;
use crate::cmd::rank::read_plan;
use crate::exit::bad_input;
use anyhow::Context;
use pinch_collector::{AgentConfig, CounterPlan, SampleRate, run_agent};
use pinch_traces::{NodeId, Rank};
use std::io::Write;
use std::process::Command;

pub fn agent(args: AgentArgs) -> anyhow::Result<()> {
    // Read once here so a bad plan fails the node before any rank starts.
    read_plan(&args.plan)?;
    let counters = CounterPlan::parse(&args.counters, SampleRate::DEFAULT).map_err(bad_input)?;
    let exe = std::env::current_exe().context("cannot find the pinch executable")?;
    let (node, rendezvous, router, plan) =
        (args.node, args.rendezvous, args.router, args.plan.clone());
    let rank_command = move |rank: Rank| {
        let mut cmd = Command::new(&exe);
        cmd.arg("rank")
            .arg(format!("--rank={}", rank.0))
            .arg(format!("--node={node}"))
            .arg(format!("--rendezvous={rendezvous}"))
            .arg(format!("--router={router}"))
            .arg("--plan")
            .arg(&plan);
        cmd
    };
    let agent_config = AgentConfig {
        node: NodeId(args.node),
        host: crate::cmd::run::host_name(),
        ranks: args.ranks.iter().map(|&r| Rank(r)).collect(),
        log_path: args.log.clone(),
        rank_command: Box::new(rank_command),
        metrics_addr: args.metrics_addr,
        counters,
    };
    let mut stdout = std::io::stdout().lock();
    let mut on_event = |event: pinch_collector::AgentEvent| {
        // The coordinator may be gone; the node log is what matters, so keep going.
        let _ = writeln!(stdout, "{}", event.to_line()).and_then(|()| stdout.flush());
    };
    let summary = run_agent(agent_config, &mut on_event)?;
    match summary.failed.first() {
        None => Ok(()),
        Some((rank, message)) => anyhow::bail!("{rank} failed on node {}: {message}", args.node),
    }
}
