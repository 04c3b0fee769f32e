//! `pinch tui RUN`: a recorded run (or PyTorch profiler traces) in the terminal dashboard.
//! Everything that can fail (a missing or unreadable run, no terminal) fails before the screen
//! is taken over.
//!
//! A run opens from what `pinch run` and `pinch analyze` stored beside its logs (report.json
//! and the Parquet tables), so the dashboard holds compact span columns and reads a span's
//! arguments only when it is selected. Where those files are missing or older than the logs,
//! the run is analysed once and they are written for the next time.

use crate::cli::TuiArgs;
use crate::cmd::analyze::{Input, input_of, load, report_of};
use crate::exit::bad_input;
use crate::render::REPORT_FILE;
use anyhow::Context;
use pinch_analyzer::kineto_timeline::as_run::as_run_report;
use pinch_analyzer::store::{COUNTERS_FILE, SPANS_FILE};
use pinch_analyzer::{
    Alignment, REPORT_SCHEMA_VERSION, Report, RunData, RunFacts, merge_taking_spans, read_series,
    read_span_columns, report_with_clocks, stored_current,
};
use pinch_traces::kineto::read_run;
use pinch_traces::manifest::RunManifest;
use pinch_tui::{App, Dashboard, Details, Replay};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// What `pinch tui` was given, checked.
enum Opened {
    Run(RunManifest, PathBuf),
    Traces(Vec<PathBuf>),
}

pub fn tui(args: TuiArgs) -> anyhow::Result<()> {
    // A run's manifest is read first: an unreadable one is named before anything else.
    let opened = match input_of(std::slice::from_ref(&args.run))? {
        Input::Run(dir) => Opened::Run(RunManifest::load(&dir).map_err(bad_input)?, dir),
        Input::Kineto(files) => Opened::Traces(files),
    };
    if !std::io::stdout().is_terminal() {
        return Err(bad_input(
            "pinch tui draws on a terminal, and standard output is not one".to_string(),
        ));
    }
    let dash = match opened {
        Opened::Run(manifest, dir) => recorded_dashboard(&dir, &manifest)?,
        Opened::Traces(files) => kineto_dashboard(&args.run, &files)?,
    };
    pinch_tui::term::run(App::new(dash), &mut Replay).context("the terminal failed")?;
    Ok(())
}

/// The dashboard of PyTorch profiler traces: pinch's analyses of their device timeline, one
/// node per rank; the timeline is held whole (the traces are read whole anyway).
fn kineto_dashboard(path: &Path, files: &[PathBuf]) -> anyhow::Result<Dashboard> {
    let run = read_run(files).map_err(bad_input)?;
    for warning in &run.warnings {
        eprintln!("pinch: warning: {warning}");
    }
    let (report, timeline) = as_run_report(&run, &path.display().to_string());
    let spans = timeline.spans.len();
    let mut dash = Dashboard::of_timeline(&report, timeline);
    dash.title = format!(
        "PyTorch profiler traces '{}': {} ranks, {spans} device spans",
        path.display(),
        report.ranks.len()
    );
    Ok(dash)
}

/// The dashboard of a recorded run: from its stored files where they are current, else from its
/// logs, storing the files on the way.
fn recorded_dashboard(dir: &Path, manifest: &RunManifest) -> anyhow::Result<Dashboard> {
    if let Some(dash) = stored_dashboard(dir, manifest) {
        return Ok(dash);
    }
    // Analysing the run stores its tables and report, as `pinch analyze` does.
    report_of(dir)?;
    if let Some(dash) = stored_dashboard(dir, manifest) {
        return Ok(dash);
    }
    // Without stored tables, the dashboard keeps the whole timeline.
    Ok(dashboard_of(load(dir)?))
}

/// The dashboard from the run's report.json, spans.parquet and counters.parquet; `None` when
/// one of them is missing, older than the logs, unreadable or of another schema.
fn stored_dashboard(dir: &Path, manifest: &RunManifest) -> Option<Dashboard> {
    if !stored_current(dir, manifest, &[REPORT_FILE, SPANS_FILE, COUNTERS_FILE]) {
        return None;
    }
    let text = std::fs::read(dir.join(REPORT_FILE)).ok()?;
    let report: Report = serde_json::from_slice(&text).ok()?;
    // A report of an older pinch lacks the serving rate the dashboard draws.
    let rate_missing = report
        .serving
        .as_ref()
        .is_some_and(|s| s.output_rate.is_none());
    if report.schema_version != REPORT_SCHEMA_VERSION || rate_missing {
        return None;
    }
    let spans = read_span_columns(dir).ok()?;
    let series = read_series(dir).ok()?;
    let details = Details::Stored(dir.to_path_buf());
    Some(Dashboard::new(&report, spans, &series, details))
}

/// The dashboard of a run analysed here, keeping its timeline (a live run's logs so far).
pub fn dashboard_of(mut run: RunData) -> Dashboard {
    let (timeline, clocks) = merge_taking_spans(&mut run, Alignment::Collectives);
    let facts = RunFacts::from_run(&run);
    let report = report_with_clocks(&run, &timeline, &facts, &clocks);
    Dashboard::of_timeline(&report, timeline)
}
