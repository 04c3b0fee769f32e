//! The merged run as Parquet tables beside its manifest, for DuckDB, pandas or polars users:
//! `spans.parquet`, `counters.parquet`, `collectives.parquet` and `findings.parquet`
//! (docs/parquet.md has the schema). polars builds and writes them; no polars type leaves this
//! module.

use crate::analysis::AnalysisInput;
use crate::findings::Finding;
use crate::frames::{CollectiveFrame, Instance, SpanFrame};
use crate::report::{Report, report_from_input};
use crate::timeline::{TimedSpan, Timeline};
use crate::traffic::CommSettings;
use polars::io::parquet::write::BatchedWriter;
use polars::prelude::{
    Column, DataFrame, NamedFrom, ParquetCompression, ParquetWriter, PolarsError, Series,
};
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use thiserror::Error;

pub const SPANS_FILE: &str = "spans.parquet";
pub const COUNTERS_FILE: &str = "counters.parquet";
pub const COLLECTIVES_FILE: &str = "collectives.parquet";
pub const FINDINGS_FILE: &str = "findings.parquet";

#[derive(Debug, Error)]
pub enum StoreError {
    #[error("cannot create '{path}': {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write '{path}': {message}")]
    Write { path: PathBuf, message: String },
    #[error("cannot read '{path}': {message}")]
    Read { path: PathBuf, message: String },
}

/// spans.parquet's columns, in order (docs/parquet.md).
pub const SPANS_COLUMNS: [&str; 21] = [
    "node",
    "rank",
    "lane",
    "category",
    "op",
    "start_ns",
    "duration_ns",
    "start_unix_ns",
    "step",
    "layer",
    "micro_batch",
    "request_id",
    "flops",
    "bytes",
    "collective_kind",
    "collective_group",
    "collective_seq",
    "participants",
    "peer",
    "message_bytes",
    "wait_ns",
];

/// Rows in each row group of spans.parquet: a reader after one span decodes this many.
pub const ROW_GROUP_ROWS: usize = 1 << 16;

/// One table written: its file and how many rows it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredTable {
    pub path: PathBuf,
    pub rows: usize,
}

/// Writes the four tables of a run into `dir`.
pub fn store_tables(
    timeline: &Timeline,
    report: &Report,
    dir: &Path,
) -> Result<Vec<StoredTable>, StoreError> {
    match SpanFrame::build(timeline) {
        Ok(frame) => store_tables_with(timeline, &frame, report, dir),
        Err(e) => Err(StoreError::Write {
            path: dir.join(SPANS_FILE),
            message: e.to_string(),
        }),
    }
}

/// `store_tables` with the spans frame the analysis already built.
pub(crate) fn store_tables_with(
    timeline: &Timeline,
    frame: &SpanFrame,
    report: &Report,
    dir: &Path,
) -> Result<Vec<StoredTable>, StoreError> {
    let mut stored = vec![write_spans(&dir.join(SPANS_FILE), timeline, frame)?];
    let tables = [
        (COUNTERS_FILE, counters_table(timeline)),
        (COLLECTIVES_FILE, collectives_table(timeline)),
        (FINDINGS_FILE, findings_table(&report.findings)),
    ];
    for (file, table) in tables {
        stored.push(write_table(&dir.join(file), table)?);
    }
    Ok(stored)
}

/// Zstandard at polars' default level.
fn compression() -> ParquetCompression {
    ParquetCompression::Zstd(None)
}

fn create(path: &Path) -> Result<BufWriter<File>, StoreError> {
    let file = File::create(path).map_err(|source| StoreError::Create {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(BufWriter::new(file))
}

fn write_table(
    path: &Path,
    table: Result<DataFrame, PolarsError>,
) -> Result<StoredTable, StoreError> {
    let failed = |e: PolarsError| StoreError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let mut frame = table.map_err(failed)?;
    ParquetWriter::new(create(path)?)
        .with_compression(compression())
        .finish(&mut frame)
        .map_err(failed)?;
    Ok(StoredTable {
        path: path.to_path_buf(),
        rows: frame.height(),
    })
}

/// Writes the spans table one row group at a time: each is a slice of the analysis frame
/// widened by the reader-only columns of those rows, so the widened table is never whole in
/// memory. The next group is built while the last one is compressed.
fn write_spans(
    path: &Path,
    timeline: &Timeline,
    frame: &SpanFrame,
) -> Result<StoredTable, StoreError> {
    let failed = |e: PolarsError| StoreError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let rows = timeline.spans.len();
    let starts: Vec<usize> = (0..rows.max(1)).step_by(EXPORT_CHUNK_ROWS).collect();
    let mut batch = spans_batch(timeline, frame, 0).map_err(failed)?;
    let mut writer = ParquetWriter::new(create(path)?)
        .with_compression(compression())
        .batched(batch.schema())
        .map_err(failed)?;
    for next in starts.iter().skip(1) {
        let (written, built) = rayon::join(
            || write_row_groups(&mut writer, &batch),
            || spans_batch(timeline, frame, *next),
        );
        written.map_err(failed)?;
        batch = built.map_err(failed)?;
    }
    write_row_groups(&mut writer, &batch).map_err(failed)?;
    writer.finish().map_err(failed)?;
    Ok(StoredTable {
        path: path.to_path_buf(),
        rows,
    })
}

/// Writes a batch as row groups of `ROW_GROUP_ROWS`, so that a reader after a few rows decodes
/// little.
fn write_row_groups(
    writer: &mut BatchedWriter<BufWriter<File>>,
    batch: &DataFrame,
) -> Result<(), PolarsError> {
    for from in (0..batch.height()).step_by(ROW_GROUP_ROWS) {
        writer.write_batch(&batch.slice(from as i64, ROW_GROUP_ROWS))?;
    }
    Ok(())
}

/// A column from any values polars can name.
fn column<T, P>(name: &str, values: T) -> Column
where
    Series: NamedFrom<T, P>,
    P: ?Sized,
{
    Column::from(Series::new(name.into(), values))
}

/// Rows `from..` (at most `EXPORT_CHUNK_ROWS`) of the spans table: the analysis frame's
/// columns, widened by the ones only readers need, in the documented order.
fn spans_batch(
    timeline: &Timeline,
    frame: &SpanFrame,
    from: usize,
) -> Result<DataFrame, PolarsError> {
    let to = timeline.spans.len().min(from + EXPORT_CHUNK_ROWS);
    let spans = timeline.spans.get(from..to).unwrap_or_default();
    let extra = export_chunk(timeline, spans)?;
    let part = frame.frame.slice(from as i64, spans.len());
    let wide = part.hstack(extra.columns())?;
    // The analysis frame's category column holds codes; the names are beside them.
    let names = SPANS_COLUMNS.map(|c| if c == "category" { "category_name" } else { c });
    let mut table = wide.select(names)?;
    table.rename("category_name", "category".into())?;
    // The batched writer needs every column cut into the same chunks.
    table.align_chunks();
    Ok(table)
}

/// Rows of export columns built on one core at a time.
const EXPORT_CHUNK_ROWS: usize = 1 << 20;

/// The spans columns the analysis frame lacks, for one chunk of spans, in one pass.
fn export_chunk(timeline: &Timeline, spans: &[TimedSpan]) -> Result<DataFrame, PolarsError> {
    let origin_ns = i64::try_from(timeline.origin_unix_ns).unwrap_or(i64::MAX);
    let n = spans.len();
    let mut node = Vec::with_capacity(n);
    let mut lane = Vec::with_capacity(n);
    let mut category = Vec::with_capacity(n);
    let mut op = Vec::with_capacity(n);
    let mut start_unix = Vec::with_capacity(n);
    let (mut step, mut layer) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut micro_batch, mut request) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut kind, mut group) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut seq, mut participants) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let (mut peer, mut message_bytes) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut wait = Vec::with_capacity(n);
    for s in spans {
        let c = s.attrs.collective;
        node.push(s.node.0);
        lane.push(s.lane.0);
        category.push(s.category.name());
        op.push(timeline.name(s.name));
        start_unix.push(origin_ns.saturating_add(s.start_ns));
        step.push(s.attrs.step);
        layer.push(s.attrs.layer);
        micro_batch.push(s.attrs.micro_batch);
        request.push(s.attrs.request_id);
        kind.push(c.map(|c| c.kind.name()));
        group.push(c.map(|c| c.group));
        seq.push(c.map(|c| c.seq));
        participants.push(c.map(|c| c.participants));
        peer.push(c.and_then(|c| c.peer).map(|p| p.0));
        message_bytes.push(c.map(|c| c.message_bytes));
        wait.push(c.and_then(|c| c.wait_ns));
    }
    let columns = vec![
        column("node", node),
        column("lane", lane),
        column("category_name", category),
        column("op", op),
        column("start_unix_ns", start_unix),
        column("step", step),
        column("layer", layer),
        column("micro_batch", micro_batch),
        column("request_id", request),
        column("collective_kind", kind),
        column("collective_group", group),
        column("collective_seq", seq),
        column("participants", participants),
        column("peer", peer),
        column("message_bytes", message_bytes),
        column("wait_ns", wait),
    ];
    DataFrame::new(n, columns)
}

fn counters_table(timeline: &Timeline) -> Result<DataFrame, PolarsError> {
    let rows: usize = timeline.series.iter().map(|s| s.times_ns.len()).sum();
    let (mut node, mut counter, mut unit, mut device) = (
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
    );
    let (mut time_ns, mut value) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
    for series in &timeline.series {
        for (&t, &v) in series.times_ns.iter().zip(&series.values) {
            node.push(series.node.0);
            counter.push(series.counter.as_str());
            unit.push(series.unit.map(|u| u.symbol()));
            device.push(series.device.as_str());
            time_ns.push(t);
            value.push(v);
        }
    }
    let columns = vec![
        column("node", node),
        column("counter", counter),
        column("unit", unit),
        column("device", device),
        column("time_ns", time_ns),
        column("value", value),
    ];
    DataFrame::new(rows, columns)
}

/// Every collective instance, matched by (communicator, sequence number) in a polars group-by.
fn collective_instances(timeline: &Timeline) -> Result<Vec<Instance>, PolarsError> {
    CollectiveFrame::build(timeline)?.instances()
}

/// One time of a collective instance, wide enough for a difference of two `i64`s.
type InstanceField = dyn Fn(&Instance) -> Option<i128>;

fn collectives_table(timeline: &Timeline) -> Result<DataFrame, PolarsError> {
    let rows = collective_instances(timeline)?;
    let field = |name: &str, f: &InstanceField| {
        let values: Vec<Option<i64>> = rows
            .iter()
            .map(|i| f(i).and_then(|v| i64::try_from(v).ok()))
            .collect();
        column(name, values)
    };
    let columns = vec![
        column("group", rows.iter().map(|i| i.group).collect::<Vec<u32>>()),
        column("seq", rows.iter().map(|i| i.seq).collect::<Vec<u64>>()),
        column(
            "kind",
            rows.iter().map(|i| i.kind.name()).collect::<Vec<&str>>(),
        ),
        column(
            "message_bytes",
            rows.iter().map(|i| i.message_bytes).collect::<Vec<u64>>(),
        ),
        column(
            "participants",
            rows.iter().map(|i| i.participants).collect::<Vec<u32>>(),
        ),
        column(
            "ranks_seen",
            rows.iter().map(|i| i.ranks).collect::<Vec<u32>>(),
        ),
        field("first_start_ns", &|i| Some(i128::from(i.first_start_ns))),
        field("last_start_ns", &|i| Some(i128::from(i.last_start_ns))),
        field("arrival_skew_ns", &|i| {
            Some(i128::from(i.last_start_ns) - i128::from(i.first_start_ns))
        }),
        column(
            "last_arrival_rank",
            rows.iter().map(|i| i.last_rank).collect::<Vec<u32>>(),
        ),
        field("last_end_ns", &|i| Some(i128::from(i.last_end_ns))),
        field("wait_ns_total", &|i| i.wait_ns.map(i128::from)),
    ];
    DataFrame::new(rows.len(), columns)
}

fn findings_table(findings: &[Finding]) -> Result<DataFrame, PolarsError> {
    let joined = |values: &[u32]| {
        let parts: Vec<String> = values.iter().map(u32::to_string).collect();
        parts.join(",")
    };
    let text = |f: &dyn Fn(&Finding) -> String| findings.iter().map(f).collect::<Vec<String>>();
    let columns = vec![
        column(
            "position",
            (1..=findings.len() as u32).collect::<Vec<u32>>(),
        ),
        column("kind", text(&|f| enum_name(&f.kind))),
        column("level", text(&|f| enum_name(&f.level))),
        column(
            "severity",
            findings.iter().map(|f| f.severity).collect::<Vec<f64>>(),
        ),
        column("summary", text(&|f| f.summary.clone())),
        column("nodes", text(&|f| joined(&f.location.nodes))),
        column("ranks", text(&|f| joined(&f.location.ranks))),
        column("ops", text(&|f| f.location.ops.join(","))),
        column("links", text(&|f| f.location.links.join(","))),
        column(
            "evidence_json",
            text(&|f| serde_json::to_string(&f.evidence).unwrap_or_default()),
        ),
        column("suggestion", text(&|f| f.suggestion.clone())),
        column(
            "stretches_json",
            text(&|f| serde_json::to_string(&f.stretches).unwrap_or_default()),
        ),
    ];
    DataFrame::new(findings.len(), columns)
}

/// The snake_case name serde gives an enum variant ("communication_bound").
fn enum_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        _ => String::new(),
    }
}

/// Analyzes a run and writes its tables into `dir`: the report, and the tables written.
pub fn analyze_and_store(
    run: &crate::run::RunData,
    dir: &Path,
) -> Result<(Report, Vec<StoredTable>), StoreError> {
    let (timeline, clocks) = crate::timeline::merge_with(run, crate::align::Alignment::Collectives);
    let facts = crate::facts::RunFacts::from_run(run);
    let frame = SpanFrame::build(&timeline).map_err(|e| StoreError::Write {
        path: dir.join(SPANS_FILE),
        message: e.to_string(),
    })?;
    let input = AnalysisInput::with_frame(&timeline, &facts, Some(&frame), comm_settings(run));
    let report = report_from_input(run, &timeline, &facts, &clocks, input);
    let tables = store_tables_with(&timeline, &frame, &report, dir)?;
    Ok((report, tables))
}

/// When `analyze_run` writes the tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rewrite {
    Always,
    /// Only when a table is missing or older than the manifest or a node log: the tables are
    /// a pure function of those files, and rewriting tens of millions of rows costs more than
    /// the whole analysis.
    WhenStale,
}

/// What `analyze_run` did about the tables.
#[derive(Debug)]
pub enum TablesOutcome {
    Written(Vec<StoredTable>),
    /// Every table was newer than the run's files, so none was written.
    Current,
    Failed(StoreError),
}

/// Analyzes a run read from `dir`, consuming it (each node's spans are freed as they join the
/// timeline, so the run's spans and the timeline's are never both held whole), and writes its
/// tables into `dir` as `rewrite` says. The report does not depend on the tables.
pub fn analyze_run(
    mut run: crate::run::RunData,
    dir: &Path,
    rewrite: Rewrite,
) -> (Report, TablesOutcome) {
    let (timeline, clocks) =
        crate::timeline::merge_taking_spans(&mut run, crate::align::Alignment::Collectives);
    // After the merge, a node's ranks come from the few it remembers, not from its spans.
    let facts = crate::facts::RunFacts::from_run(&run);
    let frame = SpanFrame::build(&timeline);
    let input =
        AnalysisInput::with_frame(&timeline, &facts, frame.as_ref().ok(), comm_settings(&run));
    let report = report_from_input(&run, &timeline, &facts, &clocks, input);
    let outcome = if rewrite == Rewrite::WhenStale && tables_current(&run, dir) {
        TablesOutcome::Current
    } else {
        let stored = frame
            .map_err(|e| StoreError::Write {
                path: dir.join(SPANS_FILE),
                message: e.to_string(),
            })
            .and_then(|frame| store_tables_with(&timeline, &frame, &report, dir));
        match stored {
            Ok(tables) => TablesOutcome::Written(tables),
            Err(e) => TablesOutcome::Failed(e),
        }
    };
    // Unmapping the timeline takes a good part of a second that the report need not wait for.
    rayon::spawn(move || drop(timeline));
    (report, outcome)
}

/// Whether every table exists and is newer than the manifest and every node log.
fn tables_current(run: &crate::run::RunData, dir: &Path) -> bool {
    let tables = [SPANS_FILE, COUNTERS_FILE, COLLECTIVES_FILE, FINDINGS_FILE];
    crate::stored::stored_current(dir, &run.manifest, &tables)
}

/// How the run's comm layer was set up, from its manifest.
fn comm_settings(run: &crate::run::RunData) -> CommSettings {
    CommSettings::from_parameters(&run.manifest.workload.parameters)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;
    use polars::prelude::{ParquetReader, SerReader};

    fn read(path: &Path) -> DataFrame {
        ParquetReader::new(File::open(path).unwrap())
            .finish()
            .unwrap()
    }

    #[test]
    fn every_span_sample_and_collective_is_a_row_with_the_documented_columns() {
        let run = testkit::run_with_spans(&[&[0], &[1]]);
        let dir = tempfile::tempdir().unwrap();
        let (report, tables) = analyze_and_store(&run, dir.path()).unwrap();
        let timeline = crate::timeline::merge(&run);
        assert_eq!(tables.len(), 4);

        let spans = read(&dir.path().join(SPANS_FILE));
        assert_eq!(spans.height(), timeline.spans.len());
        assert!(spans.height() > 0);
        let names: Vec<String> = spans
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        for name in [
            "node",
            "rank",
            "category",
            "op",
            "start_ns",
            "duration_ns",
            "collective_seq",
        ] {
            assert!(names.contains(&name.to_string()), "{name} in {names:?}");
        }
        let durations = spans.column("duration_ns").unwrap();
        let total: u64 = durations.as_materialized_series().sum().unwrap();
        let expected: u64 = timeline.spans.iter().map(|s| s.duration_ns).sum();
        assert_eq!(total, expected);

        let counters = read(&dir.path().join(COUNTERS_FILE));
        let samples: usize = timeline.series.iter().map(|s| s.times_ns.len()).sum();
        assert_eq!(counters.height(), samples);

        let collectives = read(&dir.path().join(COLLECTIVES_FILE));
        assert_eq!(
            collectives.height(),
            collective_instances(&timeline).unwrap().len()
        );
        let findings = read(&dir.path().join(FINDINGS_FILE));
        assert_eq!(findings.height(), report.findings.len());
        let stretches = findings.column("stretches_json").unwrap().str().unwrap();
        for (text, finding) in stretches.iter().zip(&report.findings) {
            let read: Vec<crate::phases::Stretch> =
                serde_json::from_str(text.unwrap_or_default()).unwrap();
            assert_eq!(read, finding.stretches);
        }
    }

    #[test]
    fn analyze_run_writes_missing_tables_then_leaves_current_ones() {
        let run = testkit::run_with_spans(&[&[0], &[1]]);
        let dir = tempfile::tempdir().unwrap();
        run.manifest.store(dir.path()).unwrap();
        let (expected, _) = analyze_and_store(&run, tempfile::tempdir().unwrap().path()).unwrap();
        let (report, first) = analyze_run(run.clone(), dir.path(), Rewrite::WhenStale);
        assert_eq!(report, expected);
        assert!(matches!(first, TablesOutcome::Written(t) if t.len() == 4));
        let (_, second) = analyze_run(run.clone(), dir.path(), Rewrite::WhenStale);
        assert!(matches!(second, TablesOutcome::Current), "{second:?}");
        let (_, forced) = analyze_run(run, dir.path(), Rewrite::Always);
        assert!(matches!(forced, TablesOutcome::Written(_)));
    }

    #[test]
    fn the_spans_table_keeps_the_documented_column_order_and_names_ops() {
        let run = testkit::run_with_spans(&[&[0], &[1]]);
        let dir = tempfile::tempdir().unwrap();
        analyze_and_store(&run, dir.path()).unwrap();
        let spans = read(&dir.path().join(SPANS_FILE));
        let names: Vec<String> = spans
            .get_column_names()
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert_eq!(
            names[..6],
            ["node", "rank", "lane", "category", "op", "start_ns"]
        );
        assert_eq!(names.len(), 21);
        let timeline = crate::timeline::merge(&run);
        let ops: Vec<Option<&str>> = spans.column("op").unwrap().str().unwrap().iter().collect();
        let expected: Vec<Option<&str>> = timeline
            .spans
            .iter()
            .map(|s| Some(timeline.name(s.name)))
            .collect();
        assert_eq!(ops, expected);
    }

    #[test]
    fn an_unwritable_directory_is_named() {
        let run = testkit::run_with_spans(&[&[0]]);
        let err = analyze_and_store(&run, Path::new("/nonexistent/pinch/run"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/pinch/run/spans.parquet"),
            "{err}"
        );
    }
}
