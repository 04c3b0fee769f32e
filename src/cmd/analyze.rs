//! `pinch analyze RUN_DIR`: the report again, from the stored node logs.

use crate::cli::AnalyzeArgs;
use crate::exit::bad_input;
use crate::render;
use pinch_analyzer::{Report, RunData, analyze as analyze_run, load_run};
use std::path::Path;

pub fn analyze(args: AnalyzeArgs) -> anyhow::Result<()> {
    let report = report_of(&args.run_dir)?;
    render::print_report(&report, args.json)
}

/// Loads a run directory and analyzes it.
pub fn report_of(run_dir: &Path) -> anyhow::Result<Report> {
    Ok(analyze_run(&load(run_dir)?))
}

/// Reads a run directory's manifest and node logs. Problems with the directory itself are bad
/// input.
pub fn load(run_dir: &Path) -> anyhow::Result<RunData> {
    if !run_dir.is_dir() {
        return Err(bad_input(format!(
            "run directory '{}' does not exist",
            run_dir.display()
        )));
    }
    load_run(run_dir).map_err(bad_input)
}
