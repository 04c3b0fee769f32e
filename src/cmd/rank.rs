//! `pinch rank` (internal): one rank process. It reads the run's workload.json, finds its peers
//! through the coordinator's rendezvous, connects to the router when it leads a replica, serves
//! its part of the run, and streams its spans and finished requests to its agent on stdout.
//! Nothing else may write to stdout here: it carries framed records.

use crate::cli::RankArgs;
use anyhow::Context;
use pinch_collector::{RankStream, Recorder, recorder::DEFAULT_CAPACITY};
use pinch_traces::{Category, Lane, Rank, Record, SpanAttrs};
use pinch_workloads::comm::{LinkShaping, Mesh, MeshOptions, rendezvous};
use pinch_workloads::engine::{RankIo, ServeConfig, serve_rank};
use pinch_workloads::serving::RouterClient;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

/// How often the rank's spans are flushed to its agent.
const FLUSH_PERIOD: Duration = Duration::from_millis(50);
/// How long a rank waits for all its peers to show up.
const RENDEZVOUS_TIMEOUT: Duration = Duration::from_secs(60);

pub fn rank(args: RankArgs) -> anyhow::Result<()> {
    let config = read_plan(&args.plan)?;
    let rank = Rank(args.rank);
    apply_host_faults(&config, args.rank as usize)?;
    pinch_kernels::set_threads(config.threads);
    let (recorder, drain) = Recorder::new(rank, DEFAULT_CAPACITY);
    let stream = RankStream::start(drain, std::io::stdout(), FLUSH_PERIOD)
        .context("cannot start the span stream")?;
    let outcome = run_rank(&args, &config, &recorder, &stream);
    stream.finish().context("cannot flush the span stream")?;
    outcome.with_context(|| format!("rank {} failed", args.rank))
}

/// The run's `ServeConfig`, as the coordinator wrote it.
pub fn read_plan(path: &Path) -> anyhow::Result<ServeConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the workload plan '{}'", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("workload plan '{}' is not valid", path.display()))
}

fn run_rank(
    args: &RankArgs,
    config: &ServeConfig,
    recorder: &Recorder,
    stream: &RankStream,
) -> anyhow::Result<()> {
    let me = args.rank as usize;
    let mut mesh = connect(args, config, recorder)?;
    let coords = config.layout.coords(me);
    let leads = config.layout.ep > 1 || (coords.stage == 0 && coords.tp_rank == 0);
    let router = if leads {
        Some(RouterClient::connect(
            args.router,
            coords.replica,
            RENDEZVOUS_TIMEOUT,
        )?)
    } else {
        None
    };
    let rank = Rank(args.rank);
    let crash_step = config
        .faults
        .crash
        .filter(|&(r, _)| r == me)
        .map(|(_, s)| s);
    let total = config.requests.requests as u32;
    let mut finished = 0u32;
    let mut on_step = |done: u32| {
        if crash_step == Some(done) {
            crash(stream);
        }
    };
    let mut on_request = |request: pinch_traces::RequestRecord| {
        finished += 1;
        stream.send(Record::Progress {
            rank,
            done: finished,
            total,
        });
        stream.send(Record::Request { rank, request });
    };
    let mut on_expert_tokens = |tokens| stream.send(Record::ExpertTokens(tokens));
    let io = RankIo {
        mesh: &mut mesh,
        router,
        recorder,
        on_step: &mut on_step,
        on_request: &mut on_request,
        on_expert_tokens: &mut on_expert_tokens,
    };
    serve_rank(config, me, io)?;
    Ok(())
}

/// Meets the other ranks and connects the mesh; the time it takes is recorded as a wait span.
fn connect(args: &RankArgs, config: &ServeConfig, recorder: &Recorder) -> anyhow::Result<Mesh> {
    let op = recorder.intern("rendezvous");
    let start = recorder.stamp();
    let listener = TcpListener::bind("127.0.0.1:0").context("cannot listen on loopback")?;
    let my_addr = listener.local_addr()?;
    let rank = args.rank as usize;
    let world = config.layout.world();
    let peers = rendezvous(
        args.rendezvous,
        rank,
        world,
        args.node,
        my_addr,
        RENDEZVOUS_TIMEOUT,
    )?;
    let options = MeshOptions {
        shm: config.shm,
        shaping: config
            .faults
            .links
            .iter()
            .map(|l| LinkShaping {
                a: l.a,
                b: l.b,
                delay: Duration::from_micros(l.delay_us),
                rate_bytes_per_s: l.rate_bytes_per_s,
            })
            .collect(),
        ..MeshOptions::default()
    };
    let mesh = Mesh::connect(rank, &peers, listener, &options, RENDEZVOUS_TIMEOUT)?;
    recorder.finish(Lane(0), Category::Wait, op, start, SpanAttrs::default());
    Ok(mesh)
}

/// Faults applied to the process itself: pinning to fewer cores.
fn apply_host_faults(config: &ServeConfig, rank: usize) -> anyhow::Result<()> {
    if let Some((_, cores)) = config.faults.pin.as_ref().filter(|(r, _)| *r == rank) {
        pin_to(cores).with_context(|| format!("cannot pin rank {rank} to cores {cores:?}"))?;
    }
    Ok(())
}

fn pin_to(cores: &[usize]) -> std::io::Result<()> {
    // SAFETY: `set` is a plain bitmask owned by this frame; CPU_ZERO/CPU_SET only write inside
    // it, and sched_setaffinity reads `size_of::<cpu_set_t>()` bytes of it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        for &core in cores {
            libc::CPU_SET(core, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Injected fault: the process dies as a crash would, after what was recorded reached its agent.
fn crash(stream: &RankStream) -> ! {
    stream.flush_now();
    eprintln!("pinch rank: crashing on purpose (--crash-rank)");
    std::process::abort()
}
