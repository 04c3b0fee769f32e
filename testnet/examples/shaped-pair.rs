//! Runs one command per host on a shaped test network, the way `scripts/bench-shaped-link` runs
//! the two ranks of `pinch bench collectives` over a 1 Gbit/s link.
//!
//! In each argument, `{rank}` becomes the host's index, `{addr}` its address and `{addr0}` host
//! 0's address (where rank 0 serves the rendezvous). Host 0's stdout goes to stdout; every host's
//! stderr goes to stderr under a header. The exit status is 0 when every command succeeded.
//!
//! ```sh
//! shaped-pair --rate-bits-per-s 1000000000 -- pinch bench collectives --rank {rank} \
//!     --world 2 --rendezvous {addr0}:29500 --listen {addr} --json
//! ```

use std::io::Write;
use std::process::{Command, ExitCode};
use std::time::Duration;

use clap::Parser;
use pinch_testnet::{LinkShape, TestNet, run_together};

/// Runs COMMAND in each host of a fresh test network whose links are shaped alike.
#[derive(Debug, Parser)]
struct Args {
    /// Hosts to make, one command each.
    #[arg(long, default_value_t = 2)]
    hosts: usize,
    /// Cap of each host's link, each direction, in bits per second (layer 2); none if absent.
    #[arg(long)]
    rate_bits_per_s: Option<u64>,
    /// One-way delay added on each host's link, in microseconds (needs the kernel's netem).
    #[arg(long, default_value_t = 0)]
    delay_us: u64,
    /// Share of packets dropped on each host's link, each direction (needs netem).
    #[arg(long, default_value_t = 0.0)]
    loss_percent: f32,
    /// Seconds after which the commands still running are killed.
    #[arg(long, default_value_t = 900)]
    timeout_s: u64,
    /// The program and its arguments, with {rank}, {addr} and {addr0} filled in per host.
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("shaped-pair: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    TestNet::available().map_err(|reason| format!("no test network here: {reason}"))?;
    let shape = LinkShape {
        rate_bits_per_s: args.rate_bits_per_s,
        delay: Duration::from_micros(args.delay_us),
        loss_percent: args.loss_percent,
    };
    let (program, program_args) = args
        .command
        .split_first()
        .ok_or("no command to run was given")?;
    let net = TestNet::new(args.hosts, &shape).map_err(|err| err.to_string())?;
    let commands = (0..net.hosts())
        .map(|host| host_command(&net, host, program, program_args))
        .collect();
    let timeout = Duration::from_secs(args.timeout_s);
    let together = run_together(commands, timeout).map_err(|err| err.to_string())?;
    let mut all_ok = !together.timed_out;
    for (host, output) in together.outputs.iter().enumerate() {
        if host == 0 {
            std::io::stdout()
                .write_all(&output.stdout)
                .map_err(|err| format!("cannot write stdout: {err}"))?;
        }
        eprintln!("--- host {host} ({}): {}", net.addr(host), output.status);
        eprint!("{}", String::from_utf8_lossy(&output.stderr));
        all_ok &= output.status.success();
    }
    if together.timed_out {
        eprintln!("shaped-pair: killed after {} s", args.timeout_s);
    }
    Ok(if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `program args..` with the placeholders filled in for host `host`, run inside its namespace.
fn host_command(net: &TestNet, host: usize, program: &str, args: &[String]) -> Command {
    let fill = |arg: &str| {
        arg.replace("{rank}", &host.to_string())
            .replace("{addr0}", &net.addr(0).to_string())
            .replace("{addr}", &net.addr(host).to_string())
    };
    let mut command = net.command(host, fill(program));
    command.args(args.iter().map(|arg| fill(arg)));
    command
}
