//! The `pinch` command line: a thin layer over the crates. It parses arguments, validates them
//! into the crates' types before any work starts, and maps failures to exit codes: 2 for bad
//! input (named in one line), 1 for a run that failed.

mod cli;
mod cmd;
mod exit;
mod render;
mod render_imbalance;
mod render_kineto;
mod render_paths;
mod render_phases;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    match cmd::dispatch(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => exit::report(&err),
    }
}
