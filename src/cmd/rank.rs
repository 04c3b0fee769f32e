//! `pinch rank` (internal): one rank process. It finds its peers through the coordinator's
//! rendezvous, runs its shard of the workload, and streams its spans to its agent on stdout.
//! Nothing else may write to stdout here: it carries framed records.

use crate::cli::RankArgs;
use crate::cmd::workload::tp_config;
use anyhow::Context;
use pinch_collector::{RankStream, Recorder, recorder::DEFAULT_CAPACITY};
use pinch_traces::{Category, Lane, Rank, Record, SpanAttrs};
use pinch_workloads::{Ring, TpRunConfig, rendezvous, run_tp_rank};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

/// How often the rank's spans are flushed to its agent.
const FLUSH_PERIOD: Duration = Duration::from_millis(50);
/// How long a rank waits for all its peers to show up.
const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(60);

pub fn rank(args: RankArgs) -> anyhow::Result<()> {
    let config = tp_config(&args.workload, args.world as usize)?;
    let rank = Rank(args.rank);
    let recorder = Arc::new(Recorder::new(rank, DEFAULT_CAPACITY));
    let stream = RankStream::start(recorder.clone(), std::io::stdout(), FLUSH_PERIOD)
        .context("cannot start the span stream")?;
    let outcome = run_rank(&args, &config, &recorder, &stream);
    if let Ok(tokens) = &outcome {
        stream.send(Record::Output {
            rank,
            tokens: tokens.clone(),
        });
    }
    stream.finish().context("cannot flush the span stream")?;
    outcome
        .map(|_| ())
        .with_context(|| format!("rank {} failed", args.rank))
}

fn run_rank(
    args: &RankArgs,
    config: &TpRunConfig,
    recorder: &Recorder,
    stream: &RankStream,
) -> anyhow::Result<Vec<Vec<u32>>> {
    let mut ring = connect(args, recorder)?;
    let crash_step = (args.workload.crash_rank == Some(args.rank))
        .then_some(args.workload.crash_at_step)
        .flatten();
    let rank = Rank(args.rank);
    let mut on_step = |done: u32, total: u32| {
        stream.send(Record::Progress { rank, done, total });
        if crash_step == Some(done) {
            crash(stream);
        }
    };
    let generation = run_tp_rank(
        config,
        args.rank as usize,
        &mut ring,
        recorder,
        &mut on_step,
    )?;
    Ok(generation.tokens)
}

/// Meets the other ranks and connects the ring; the time it takes is recorded as a wait span.
fn connect(args: &RankArgs, recorder: &Recorder) -> anyhow::Result<Ring> {
    let op = recorder.intern("rendezvous");
    let start_ns = recorder.now_ns();
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on loopback")?;
    let my_addr = listener.local_addr()?;
    let rank = args.rank as usize;
    let world = args.world as usize;
    // The ring ignores nodes; every rank registers as node 0 until it moves to the mesh.
    let peers = rendezvous(args.rendezvous, rank, world, 0, my_addr, RENDEZVOUS_TIMEOUT)?;
    let addrs: Vec<_> = peers.iter().map(|p| p.addr).collect();
    let ring = Ring::connect(rank, world, listener, &addrs, RENDEZVOUS_TIMEOUT)?;
    recorder.finish(Lane(0), Category::Wait, op, start_ns, SpanAttrs::default());
    Ok(ring)
}

/// Injected fault: the process dies as a crash would, after what was recorded reached its agent.
fn crash(stream: &RankStream) -> ! {
    stream.flush_now();
    eprintln!("pinch rank: crashing on purpose (--crash-rank)");
    std::process::abort()
}
