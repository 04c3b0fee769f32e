//! One module per subcommand; `dispatch` routes to them.

mod agent;
mod analyze;
pub mod bench;
pub mod calibrate;
pub mod decode_bench;
mod export;
mod kineto;
pub mod presets;
mod rank;
mod run;
mod tui;
mod workload;

use crate::cli::{BenchCommand, Cli, Command};

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run::run(*args),
        Command::Analyze(args) => analyze::analyze(args),
        Command::Export(args) => export::export(args),
        Command::Tui(args) => tui::tui(args),
        Command::Presets(args) => presets::presets(args),
        Command::Bench(BenchCommand::Collectives(args)) => bench::bench(bench::BenchArgs {
            what: bench::BenchCommand::Collectives(args),
        }),
        Command::Bench(BenchCommand::Decode(args)) => decode_bench::decode(args),
        Command::Calibrate(args) => calibrate::calibrate(args),
        Command::Agent(args) => agent::agent(args),
        Command::Rank(args) => rank::rank(args),
    }
}
