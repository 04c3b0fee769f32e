//! `pinch bench collectives`: sweeps the communication layer's operations over message sizes,
//! nccl-tests style. By default the ranks are threads of this process over `Mesh::loopback`;
//! with `--rank/--world/--rendezvous/--listen` this process is one rank of a multi-process
//! world (rank 0 also serves the rendezvous, and only rank 0 prints).

use crate::exit::bad_input;
use anyhow::Context;
use clap::{Args, Subcommand};
use parse_size::Config;
use pinch_workloads::comm::bench::{BenchOp, BenchRow, Sweep, run_sweep};
use pinch_workloads::comm::{
    AllReduceAlgo, Group, Mesh, MeshOptions, RendezvousServer, rendezvous,
};
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::time::Duration;

/// How long ranks of a multi-process run wait for each other to start and connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    pub what: BenchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Measure every collective and send/recv over doubling message sizes: time, algorithm and
    /// bus bandwidth, and the share of time spent waiting for peers.
    Collectives(CollectivesArgs),
}

/// The raw arguments of `pinch bench collectives`; `plan` validates them.
#[derive(Debug, Args)]
pub struct CollectivesArgs {
    /// Smallest message size (bytes; K, M, G are powers of 1024).
    #[arg(long, default_value = "8")]
    pub min_bytes: String,
    /// Largest message size.
    #[arg(long, default_value = "256M")]
    pub max_bytes: String,
    /// Operations to measure, comma-separated.
    #[arg(
        long,
        default_value = "all_reduce,all_gather,reduce_scatter,all_to_all,broadcast,send_recv"
    )]
    pub ops: String,
    /// Ranks, as threads of this process (ignored with --world).
    #[arg(long, default_value_t = 2)]
    pub ranks: usize,
    /// Links between ranks of one node: shm or tcp.
    #[arg(long, default_value = "shm")]
    pub transport: String,
    /// All-reduce algorithm: auto, ring or one-shot.
    #[arg(long, default_value = "auto")]
    pub algo: String,
    /// Print a JSON array of rows instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Multi-process mode: this process's rank.
    #[arg(long, requires_all = ["world", "rendezvous", "listen"])]
    pub rank: Option<usize>,
    /// Multi-process mode: the number of ranks.
    #[arg(long, requires = "rank")]
    pub world: Option<usize>,
    /// Multi-process mode: where rank 0 serves the rendezvous (IP:PORT).
    #[arg(long, requires = "rank")]
    pub rendezvous: Option<String>,
    /// Multi-process mode: the IP this rank accepts its peers on (the port is picked).
    #[arg(long, requires = "rank")]
    pub listen: Option<String>,
    /// Multi-process mode: this rank's node id; ranks with equal ids use shared memory when
    /// --transport is shm.
    #[arg(long, default_value_t = 0)]
    pub node: u32,
}

pub fn bench(args: BenchArgs) -> anyhow::Result<()> {
    match args.what {
        BenchCommand::Collectives(args) => collectives(&args),
    }
}

/// Validated arguments: what to sweep and over which world.
#[derive(Debug)]
struct Plan {
    sweep: Sweep,
    options: MeshOptions,
    transport: &'static str,
    world: World,
    json: bool,
}

#[derive(Debug)]
enum World {
    Threads(usize),
    Process(ProcessRank),
}

#[derive(Debug)]
struct ProcessRank {
    rank: usize,
    world: usize,
    rendezvous: SocketAddr,
    listen: IpAddr,
    node: u32,
}

fn collectives(args: &CollectivesArgs) -> anyhow::Result<()> {
    let plan = plan(args).map_err(bad_input)?;
    match &plan.world {
        World::Threads(ranks) => in_threads(&plan, *ranks),
        World::Process(me) => as_process(&plan, me),
    }
}

fn plan(args: &CollectivesArgs) -> Result<Plan, String> {
    let min_bytes = parse_bytes(&args.min_bytes)?;
    let max_bytes = parse_bytes(&args.max_bytes)?;
    if min_bytes > max_bytes {
        return Err(format!(
            "--min-bytes '{}' exceeds --max-bytes '{}'",
            args.min_bytes, args.max_bytes
        ));
    }
    let transport = match args.transport.as_str() {
        "shm" => "shm",
        "tcp" => "tcp",
        other => return Err(format!("transport '{other}' is unknown; use shm or tcp")),
    };
    Ok(Plan {
        sweep: Sweep {
            ops: parse_ops(&args.ops)?,
            min_bytes,
            max_bytes,
            algo: parse_algo(&args.algo)?,
        },
        options: MeshOptions {
            shm: transport == "shm",
            ..MeshOptions::default()
        },
        transport,
        world: world(args)?,
        json: args.json,
    })
}

/// A byte count like `8`, `4K`, `256M` or `1G` (powers of 1024), at least 1.
fn parse_bytes(text: &str) -> Result<u64, String> {
    match Config::new().with_binary().parse_size(text) {
        Ok(0) => Err(format!("size '{text}' must be at least 1 byte")),
        Ok(bytes) => Ok(bytes),
        Err(_) => Err(format!(
            "size '{text}' is not a byte count like 8, 4K, 256M or 1G"
        )),
    }
}

fn parse_ops(text: &str) -> Result<Vec<BenchOp>, String> {
    let known = || {
        let names: Vec<&str> = BenchOp::ALL.iter().map(|op| op.name()).collect();
        names.join(", ")
    };
    let ops = text
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(|name| match name {
            "all" => Ok(BenchOp::ALL.to_vec()),
            _ => BenchOp::from_name(name)
                .map(|op| vec![op])
                .ok_or_else(|| format!("op '{name}' is unknown; known ops: all, {}", known())),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut ops: Vec<BenchOp> = ops.into_iter().flatten().collect();
    ops.dedup();
    if ops.is_empty() {
        return Err(format!("ops '{text}' names no op; known ops: {}", known()));
    }
    Ok(ops)
}

fn parse_algo(text: &str) -> Result<AllReduceAlgo, String> {
    match text {
        "auto" => Ok(AllReduceAlgo::Auto),
        "ring" => Ok(AllReduceAlgo::Ring),
        "one-shot" => Ok(AllReduceAlgo::OneShot),
        other => Err(format!(
            "all-reduce algorithm '{other}' is unknown; use auto, ring or one-shot"
        )),
    }
}

fn world(args: &CollectivesArgs) -> Result<World, String> {
    let (Some(rank), Some(world), Some(rendezvous), Some(listen)) =
        (args.rank, args.world, &args.rendezvous, &args.listen)
    else {
        return match args.ranks {
            0 => Err("ranks '0' must be at least 1".to_string()),
            ranks => Ok(World::Threads(ranks)),
        };
    };
    if world == 0 {
        return Err("world '0' must be at least 1".to_string());
    }
    if rank >= world {
        return Err(format!(
            "rank '{rank}' is out of range for a world of {world}"
        ));
    }
    Ok(World::Process(ProcessRank {
        rank,
        world,
        rendezvous: rendezvous
            .parse()
            .map_err(|_| format!("rendezvous '{rendezvous}' is not an IP:PORT address"))?,
        listen: listen
            .parse()
            .map_err(|_| format!("listen address '{listen}' is not an IP address"))?,
        node: args.node,
    }))
}

/// Every rank a thread of this process; rank 0 reports.
fn in_threads(plan: &Plan, ranks: usize) -> anyhow::Result<()> {
    let mut meshes =
        Mesh::loopback(&vec![0; ranks], &plan.options).context("cannot connect the ranks")?;
    let rank0 = meshes.remove(0);
    let everyone: Vec<usize> = (0..ranks).collect();
    let mut report = Report::new(plan, ranks, "threads", true);
    let rows = std::thread::scope(|scope| {
        let others: Vec<_> = meshes
            .into_iter()
            .map(|mut mesh| {
                let (sweep, everyone) = (&plan.sweep, everyone.clone());
                scope.spawn(move || {
                    let mut g = Group::new(0, everyone, mesh.rank())?;
                    run_sweep(&mut mesh, &mut g, sweep, |_| {})
                })
            })
            .collect();
        // Rank 0's mesh is dropped before joining, so a failure here fails the others fast.
        let rows = sweep_rank0(rank0, everyone.clone(), &plan.sweep, &mut report);
        for other in others {
            other
                .join()
                .map_err(|_| anyhow::anyhow!("a rank thread panicked"))??;
        }
        rows
    })?;
    report.finish(&rows)
}

fn sweep_rank0(
    mut mesh: Mesh,
    everyone: Vec<usize>,
    sweep: &Sweep,
    report: &mut Report,
) -> anyhow::Result<Vec<BenchRow>> {
    let mut g = Group::new(0, everyone, 0)?;
    Ok(run_sweep(&mut mesh, &mut g, sweep, |row| report.row(row))?)
}

/// This process is one rank of a multi-process world.
fn as_process(plan: &Plan, me: &ProcessRank) -> anyhow::Result<()> {
    let serving = (me.rank == 0)
        .then(|| {
            let server = RendezvousServer::bind(&me.rendezvous.to_string())?;
            let world = me.world;
            anyhow::Ok(std::thread::spawn(move || {
                server.serve(world, CONNECT_TIMEOUT)
            }))
        })
        .transpose()?;
    let listener = TcpListener::bind((me.listen, 0))
        .with_context(|| format!("cannot listen on '{}'", me.listen))?;
    let my_addr = listener.local_addr()?;
    let peers = rendezvous(
        me.rendezvous,
        me.rank,
        me.world,
        me.node,
        my_addr,
        CONNECT_TIMEOUT,
    )?;
    let mut mesh = Mesh::connect(me.rank, &peers, listener, &plan.options, CONNECT_TIMEOUT)?;
    if let Some(serving) = serving {
        serving
            .join()
            .map_err(|_| anyhow::anyhow!("the rendezvous thread panicked"))??;
    }
    let mut g = Group::new(0, (0..me.world).collect(), me.rank)?;
    let mut report = Report::new(plan, me.world, "processes", me.rank == 0);
    let rows = run_sweep(&mut mesh, &mut g, &plan.sweep, |row| report.row(row))?;
    report.finish(&rows)
}

/// Prints the rows: table lines as they come, or one JSON array at the end.
struct Report {
    /// Whether this process prints at all (only rank 0 does).
    print: bool,
    json: bool,
    out: std::io::Stdout,
    /// The first write error; later rows are dropped.
    failed: Option<std::io::Error>,
}

impl Report {
    fn new(plan: &Plan, ranks: usize, as_what: &str, print: bool) -> Report {
        let mut report = Report {
            print,
            json: plan.json,
            out: std::io::stdout(),
            failed: None,
        };
        if !plan.json {
            report.line(&format!(
                "# pinch bench collectives: {ranks} ranks ({as_what}), transport {}, \
                 all-reduce {:?}",
                plan.transport, plan.sweep.algo
            ));
            report.line(&format!(
                "# {:>14} {:>12} {:>12} {:>11} {:>11} {:>7}",
                "op", "size(B)", "time(us)", "algbw(GB/s)", "busbw(GB/s)", "wait"
            ));
        }
        report
    }

    fn row(&mut self, row: &BenchRow) {
        if !self.json {
            let name = match row.kind.name() {
                "send" => "send_recv",
                other => other,
            };
            self.line(&format!(
                "  {name:>14} {:>12} {:>12.1} {:>11.3} {:>11.3} {:>6.1}%",
                row.bytes,
                row.time_us,
                row.algbw_gbps,
                row.busbw_gbps,
                100.0 * row.wait_fraction
            ));
        }
    }

    fn line(&mut self, text: &str) {
        if self.print && self.failed.is_none() {
            let written = writeln!(self.out, "{text}").and_then(|()| self.out.flush());
            self.failed = written.err();
        }
    }

    fn finish(mut self, rows: &[BenchRow]) -> anyhow::Result<()> {
        if self.json {
            let text = serde_json::to_string_pretty(rows)?;
            self.line(&text);
        }
        match self.failed {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn plan_of(line: &str) -> Result<Plan, String> {
        let words = std::iter::once("pinch").chain(line.split_whitespace());
        let BenchCommand::Collectives(args) = Cli::try_parse_from(words).unwrap().args.what;
        plan(&args)
    }

    #[test]
    fn defaults_sweep_every_op_from_8_bytes_to_256_mib_on_two_threads() {
        let plan = plan_of("collectives").unwrap();
        assert_eq!(plan.sweep.ops, BenchOp::ALL.to_vec());
        assert_eq!((plan.sweep.min_bytes, plan.sweep.max_bytes), (8, 256 << 20));
        assert!(matches!(plan.world, World::Threads(2)));
        assert!(plan.options.shm);
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_bytes("8"), Ok(8));
        assert_eq!(parse_bytes("4K"), Ok(4096));
        assert_eq!(parse_bytes("256M"), Ok(256 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
    }

    #[test]
    fn bad_values_are_named() {
        let err = |line| plan_of(line).unwrap_err();
        assert!(err("collectives --max-bytes 12Q").contains("size '12Q'"));
        assert!(err("collectives --ops all_reduce,gossip").contains("op 'gossip' is unknown"));
        assert_eq!(err("collectives --ranks 0"), "ranks '0' must be at least 1");
        assert!(err("collectives --transport ib").contains("transport 'ib'"));
        assert!(err("collectives --min-bytes 1M --max-bytes 4K").contains("'1M' exceeds"));
        let multi = "collectives --rank 2 --world 2 --rendezvous 127.0.0.1:9 --listen 127.0.0.1";
        assert_eq!(err(multi), "rank '2' is out of range for a world of 2");
    }

    #[test]
    fn multi_process_mode_needs_every_address() {
        let line = "pinch collectives --rank 0 --world 2";
        assert!(Cli::try_parse_from(line.split_whitespace()).is_err());
        let plan = plan_of(
            "collectives --rank 1 --world 3 --rendezvous 10.0.0.1:7000 --listen 10.0.0.2 \
             --transport tcp",
        )
        .unwrap();
        let World::Process(me) = plan.world else {
            panic!("not a process rank");
        };
        assert_eq!((me.rank, me.world, me.node), (1, 3, 0));
        assert!(!plan.options.shm);
    }
}
