//! `pinch analyze TRACES`: PyTorch profiler (Kineto) traces through HTA's analyses, then pinch's own
//! on its timeline of the traces. Tables or
//! JSON on stdout, warnings on stderr, HTA's CSV files on request.

use crate::cli::AnalyzeArgs;
use crate::exit::bad_input;
use crate::render_kineto;
use anyhow::Context;
use pinch_analyzer::hta::{self, HtaOptions, HtaReport, TimeBase};
use pinch_analyzer::kineto_timeline::{KinetoPinchReport, pinch_report};
use pinch_traces::kineto::{KinetoRun, RankSource, read_run};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};

pub fn analyze(files: &[PathBuf], args: &AnalyzeArgs) -> anyhow::Result<()> {
    let run = read_run(files).map_err(bad_input)?;
    for warning in &run.warnings {
        eprintln!("pinch: warning: {warning}");
    }
    let options = HtaOptions {
        time_base: if args.exact_times {
            TimeBase::Exact
        } else {
            TimeBase::HtaMicros
        },
        ..HtaOptions::default()
    };
    // Independent of each other: HTA's analyses on a second thread while pinch's run here.
    let (report, pinch) = std::thread::scope(|scope| {
        let hta = scope.spawn(|| hta::analyze(&run, &options));
        let pinch = pinch_report(&run);
        let report = hta
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (report, pinch)
    });
    if let Some(dir) = &args.hta_csv {
        write_csv(dir, &report)?;
    }
    let text = if args.json {
        serde_json::to_string_pretty(&JsonOutput::new(&run, &report, &pinch))? + "\n"
    } else {
        render_kineto::render(&run, &report) + "\n" + &render_kineto::render_pinch(&pinch)
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    // The process ends right after this: freeing the traces and reports piece by piece would
    // only add to its run time (tens of thousands of events), and the OS takes the memory back.
    std::mem::forget((run, report, pinch, text));
    Ok(())
}

fn write_csv(dir: &Path, report: &HtaReport) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("cannot create CSV directory '{}'", dir.display()))?;
    for (name, text) in hta::csv::csv_files(report) {
        let path = dir.join(name);
        std::fs::write(&path, text)
            .with_context(|| format!("cannot write '{}'", path.display()))?;
    }
    Ok(())
}

/// `--json`: which file is which rank, the warnings, then the analyses.
#[derive(Serialize)]
struct JsonOutput<'a> {
    traces: Vec<TraceJson>,
    warnings: Vec<String>,
    #[serde(flatten)]
    analysis: &'a HtaReport,
    /// pinch's own analyses on its timeline of the traces.
    pinch: &'a KinetoPinchReport,
}

#[derive(Serialize)]
struct TraceJson {
    rank: u32,
    path: String,
    /// `distributed_info` or `file_order`.
    rank_from: &'static str,
    device_events: usize,
    host_events: usize,
    flows: usize,
}

impl<'a> JsonOutput<'a> {
    fn new(run: &KinetoRun, analysis: &'a HtaReport, pinch: &'a KinetoPinchReport) -> Self {
        let traces = run
            .ranks
            .iter()
            .map(|r| TraceJson {
                rank: r.rank.0,
                path: r.path.display().to_string(),
                rank_from: match r.rank_source {
                    RankSource::DistributedInfo => "distributed_info",
                    RankSource::FileOrder => "file_order",
                },
                device_events: r.trace.device_event_count(),
                host_events: r.trace.cpu_ops.len() + r.trace.runtime.len(),
                flows: r.trace.flows.len(),
            })
            .collect();
        Self {
            traces,
            warnings: run.warnings.iter().map(ToString::to_string).collect(),
            analysis,
            pinch,
        }
    }
}
