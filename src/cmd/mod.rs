//! One module per subcommand; `dispatch` routes to them.

mod agent;
mod analyze;
pub mod bench;
mod rank;
mod run;
mod workload;

use crate::cli::{Cli, Command};

pub fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run::run(args),
        Command::Analyze(args) => analyze::analyze(args),
        Command::Agent(args) => agent::agent(args),
        Command::Rank(args) => rank::rank(args),
        Command::Bench(args) => bench::bench(args),
    }
}
