//! `pinch analyze`: the report again, from a run's stored node logs (with its Parquet tables
//! written again); or, given PyTorch profiler (Kineto) traces, HTA's analyses of them
//! (`cmd::kineto`).

use crate::cli::AnalyzeArgs;
use crate::cmd::kineto;
use crate::exit::bad_input;
use crate::render;
use pinch_analyzer::{Report, Rewrite, RunData, TablesOutcome, analyze_run, load_run};
use pinch_traces::kineto::{is_trace_name, trace_files};
use std::path::{Path, PathBuf};

/// What the arguments name.
pub(crate) enum Input {
    /// A directory written by `pinch run`.
    Run(PathBuf),
    /// Kineto trace files (directories already listed).
    Kineto(Vec<PathBuf>),
}

pub fn analyze(args: AnalyzeArgs) -> anyhow::Result<()> {
    match input_of(&args.paths)? {
        Input::Run(dir) => {
            if args.hta_csv.is_some() || args.exact_times {
                return Err(bad_input(format!(
                    "'{}' is a pinch run; --hta-csv and --exact-times apply to Kineto traces",
                    dir.display()
                )));
            }
            render::print_report(&report_of(&dir)?, args.json)
        }
        Input::Kineto(files) => kineto::analyze(&files, &args),
    }
}

/// A lone directory with a manifest is a pinch run; anything else must be Kineto traces.
pub(crate) fn input_of(paths: &[PathBuf]) -> anyhow::Result<Input> {
    for path in paths {
        if !path.exists() {
            return Err(bad_input(format!("'{}' does not exist", path.display())));
        }
    }
    if let [dir] = paths {
        if dir.join("manifest.json").is_file() {
            return Ok(Input::Run(dir.clone()));
        }
        if dir.is_dir() && !has_traces(dir) {
            return Err(bad_input(format!(
                "'{}' holds neither a pinch run (manifest.json) nor Kineto traces (.json, .json.gz)",
                dir.display()
            )));
        }
    }
    let mut files = Vec::new();
    for path in paths {
        files.extend(trace_files(path).map_err(bad_input)?);
    }
    Ok(Input::Kineto(files))
}

fn has_traces(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|entries| {
        entries
            .filter_map(Result::ok)
            .any(|e| is_trace_name(&e.path()))
    })
}

/// Loads a run directory and analyzes it, writing its Parquet tables beside the manifest where
/// they are missing or older than the run's files, and report.json (a warning, not a failure,
/// where the directory is read-only). `pinch tui` opens a run from these files.
pub fn report_of(run_dir: &Path) -> anyhow::Result<Report> {
    let (report, tables) = analyze_run(load(run_dir)?, run_dir, Rewrite::WhenStale);
    let stored = match tables {
        TablesOutcome::Failed(e) => Err(anyhow::Error::new(e)),
        TablesOutcome::Written(_) | TablesOutcome::Current => {
            render::write_report_json(&report, &run_dir.join(render::REPORT_FILE))
        }
    };
    if let Err(e) = stored {
        eprintln!("pinch: warning: the run's tables are not stored: {e:#}");
    }
    Ok(report)
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
