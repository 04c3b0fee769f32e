//! `pinch export RUN -o FILE`: a run (or Kineto traces) as a trace for timeline viewers:
//! Perfetto's protobuf (.pftrace) or Chrome's Trace Event Format (.json).
//!
//! The file is written under a temporary name beside the output and renamed when whole, so a
//! failure leaves nothing half-written behind.

use crate::cli::ExportArgs;
use crate::cmd::analyze::{Input, input_of, load};
use crate::exit::bad_input;
use anyhow::Context;
use pinch_analyzer::kineto_timeline::{kineto_timeline, report_of};
use pinch_analyzer::{
    Alignment, ExportLayout, ExportSummary, Finding, LogState, RunData, RunFacts, Timeline,
    export_run, merge_taking_spans, report_with_clocks, trace_header,
};
use pinch_traces::export::TraceSink;
use pinch_traces::export::chrome::ChromeJsonWriter;
use pinch_traces::export::perfetto::{Compression, PerfettoWriter};
use pinch_traces::kineto::read_run;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The trace formats `pinch export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Format {
    Pftrace(Compression),
    Json,
}

/// What is exported: the timeline, its findings, and how to lay it out.
struct Source {
    timeline: Timeline,
    findings: Vec<Finding>,
    layout: ExportLayout,
    title: String,
}

pub fn export(args: ExportArgs) -> anyhow::Result<()> {
    let format = format_of(args.format.as_deref(), &args.output)?;
    let format = with_compression(format, &args.compression)?;
    let dir = output_dir(&args.output)?;
    let source = match input_of(&args.paths)? {
        Input::Run(dir) => run_source(&dir)?,
        Input::Kineto(files) => kineto_source(&files)?,
    };
    let tmp = tempfile::Builder::new()
        .prefix(".pinch-export-")
        // As any new file (the umask applies), not the temporary file's private 0600.
        .permissions(std::fs::Permissions::from_mode(0o666))
        .tempfile_in(&dir)
        .map_err(|e| bad_input(format!("cannot write '{}': {e}", args.output.display())))?;
    let started = std::time::Instant::now();
    let summary = write(format, tmp.as_file(), &source)?;
    let seconds = started.elapsed().as_secs_f64();
    tmp.persist(&args.output).map_err(|e| {
        bad_input(format!(
            "cannot write '{}': {}",
            args.output.display(),
            e.error
        ))
    })?;
    let bytes = std::fs::metadata(&args.output).map_or(0, |m| m.len());
    // The trace is written: a reader that closed stdout early (`| head -1`) loses only these
    // lines, so a failed print is not an error (println! would panic on it).
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(
        stdout,
        "wrote {} ({bytes} bytes): {} slices on {} tracks, {} counter values, {} flows, {} finding events",
        args.output.display(),
        summary.slices,
        summary.tracks,
        summary.counter_values,
        summary.flows,
        summary.instants,
    );
    // The export alone, without reading and analyzing the run: what scripts/bench-export reads.
    let _ = writeln!(
        stdout,
        "exported {} events in {seconds:.3} s ({:.0} events/s)",
        summary.events(),
        summary.events() as f64 / seconds.max(1e-9)
    );
    Ok(())
}

/// Writes the source in `format` to `file`.
fn write(format: Format, file: &File, source: &Source) -> anyhow::Result<ExportSummary> {
    let header = trace_header(&source.timeline, &source.title);
    let mut sink: Box<dyn TraceSink + '_> = match format {
        Format::Json => Box::new(ChromeJsonWriter::new(file, &header)?),
        Format::Pftrace(compression) => Box::new(PerfettoWriter::with_compression(
            file.try_clone()?,
            &header,
            compression,
        )?),
    };
    export_run(
        &source.timeline,
        &source.findings,
        &source.layout,
        sink.as_mut(),
    )
    .context("cannot export the trace")
}

/// The format `--format` names, else the output's extension's.
fn format_of(flag: Option<&str>, output: &Path) -> anyhow::Result<Format> {
    let named = |name: &str| match name {
        "pftrace" | "perfetto-trace" | "perfetto" => Some(Format::Pftrace(Compression::default())),
        "json" => Some(Format::Json),
        _ => None,
    };
    if let Some(flag) = flag {
        return named(flag)
            .ok_or_else(|| bad_input(format!("format '{flag}' is unknown (pftrace, json)")));
    }
    let extension = output.extension().and_then(|e| e.to_str()).unwrap_or("");
    named(extension).ok_or_else(|| {
        bad_input(format!(
            "cannot tell the format of '{}' from its name: end it in .pftrace or .json, or give --format",
            output.display()
        ))
    })
}

/// `format` with `--compression` applied: a .pftrace's packets deflated or not; JSON has none.
fn with_compression(format: Format, compression: &str) -> anyhow::Result<Format> {
    let compression = match compression {
        "deflate" => Compression::Deflate,
        "none" => Compression::None,
        other => {
            return Err(bad_input(format!(
                "compression '{other}' is unknown (deflate, none)"
            )));
        }
    };
    match format {
        Format::Pftrace(_) => Ok(Format::Pftrace(compression)),
        Format::Json if compression == Compression::Deflate => Ok(Format::Json),
        Format::Json => Err(bad_input(
            "--compression applies to .pftrace output only".to_string(),
        )),
    }
}

/// The directory the output goes in, which must exist (the temporary file goes there too).
fn output_dir(output: &Path) -> anyhow::Result<PathBuf> {
    if output.is_dir() {
        return Err(bad_input(format!(
            "cannot write '{}': it is a directory",
            output.display()
        )));
    }
    let dir = match output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(bad_input(format!(
            "cannot write '{}': directory '{}' does not exist",
            output.display(),
            dir.display()
        )));
    }
    Ok(dir)
}

/// A pinch run: its timeline and its report's findings; warns of logs cut or missing.
fn run_source(dir: &Path) -> anyhow::Result<Source> {
    let mut run = load(dir)?;
    warn_of_lost_logs(&run);
    let layout = ExportLayout::of_run(&run);
    let (timeline, clocks) = merge_taking_spans(&mut run, Alignment::Collectives);
    let facts = RunFacts::from_run(&run);
    let report = report_with_clocks(&run, &timeline, &facts, &clocks);
    Ok(Source {
        timeline,
        findings: report.findings,
        layout,
        title: run.manifest.run_id.clone(),
    })
}

/// A warning line for each node whose log was not read whole: the trace shows what was read.
fn warn_of_lost_logs(run: &RunData) {
    for node in &run.nodes {
        match &node.log {
            LogState::Whole => {}
            LogState::Cut(cut) => eprintln!(
                "pinch: warning: node {}'s log '{}' is cut at byte {}: {} bytes after it are lost ({}); the trace has what came before",
                node.node.0, node.log_file, cut.offset, cut.dropped_bytes, cut.reason
            ),
            LogState::Missing { reason } => eprintln!(
                "pinch: warning: node {}'s log '{}' is lost ({reason}); its ranks have no spans in the trace",
                node.node.0, node.log_file
            ),
        }
    }
}

/// Kineto traces: every device and host event, with pinch's findings on the device view.
fn kineto_source(files: &[PathBuf]) -> anyhow::Result<Source> {
    let run = read_run(files).map_err(bad_input)?;
    for warning in &run.warnings {
        eprintln!("pinch: warning: {warning}");
    }
    let kt = kineto_timeline(&run, Alignment::Collectives);
    let findings = report_of(&kt).findings;
    let layout = ExportLayout::of_kineto(&kt, &run);
    Ok(Source {
        timeline: kt.timeline,
        findings,
        layout,
        title: format!("Kineto traces of {} ranks", run.ranks.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_then_the_extension_decides() {
        let json = Path::new("a.json");
        assert_eq!(format_of(None, json).unwrap(), Format::Json);
        let pftrace = Format::Pftrace(Compression::Deflate);
        assert_eq!(format_of(None, Path::new("a.pftrace")).unwrap(), pftrace);
        assert_eq!(
            format_of(None, Path::new("a.perfetto-trace")).unwrap(),
            pftrace
        );
        assert_eq!(format_of(Some("pftrace"), json).unwrap(), pftrace);
        let err = format_of(Some("xml"), json).unwrap_err().to_string();
        assert_eq!(err, "format 'xml' is unknown (pftrace, json)");
        assert!(format_of(None, Path::new("a.txt")).is_err());
    }

    #[test]
    fn compression_applies_to_pftrace_only() {
        let pftrace = Format::Pftrace(Compression::Deflate);
        assert_eq!(
            with_compression(pftrace, "none").unwrap(),
            Format::Pftrace(Compression::None)
        );
        assert_eq!(with_compression(pftrace, "deflate").unwrap(), pftrace);
        let err = with_compression(pftrace, "zstd").unwrap_err().to_string();
        assert_eq!(err, "compression 'zstd' is unknown (deflate, none)");
        assert_eq!(
            with_compression(Format::Json, "deflate").unwrap(),
            Format::Json
        );
        assert!(with_compression(Format::Json, "none").is_err());
    }
}
