//! The merged run as Parquet tables beside its manifest, for DuckDB, pandas or polars users:
//! `spans.parquet`, `counters.parquet`, `collectives.parquet` and `findings.parquet`
//! (docs/parquet.md has the schema). polars builds and writes them; no polars type leaves this
//! module.

use crate::findings::Finding;
use crate::report::Report;
use crate::timeline::{TimedSpan, Timeline};
use polars::prelude::{
    Column, DataFrame, NamedFrom, ParquetCompression, ParquetWriter, PolarsError, Series,
};
use std::collections::BTreeMap;
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
}

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
    let tables = [
        (SPANS_FILE, spans_table(timeline)),
        (COUNTERS_FILE, counters_table(timeline)),
        (COLLECTIVES_FILE, collectives_table(timeline)),
        (FINDINGS_FILE, findings_table(&report.findings)),
    ];
    tables
        .into_iter()
        .map(|(file, table)| write_table(&dir.join(file), table))
        .collect()
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
    let file = File::create(path).map_err(|source| StoreError::Create {
        path: path.to_path_buf(),
        source,
    })?;
    ParquetWriter::new(BufWriter::new(file))
        .with_compression(ParquetCompression::Zstd(None))
        .finish(&mut frame)
        .map_err(failed)?;
    Ok(StoredTable {
        path: path.to_path_buf(),
        rows: frame.height(),
    })
}

/// A column from any values polars can name.
fn column<T, P>(name: &str, values: T) -> Column
where
    Series: NamedFrom<T, P>,
    P: ?Sized,
{
    Column::from(Series::new(name.into(), values))
}

/// A column of one field of every span.
fn span_column<T, P>(spans: &[TimedSpan], name: &str, field: impl Fn(&TimedSpan) -> T) -> Column
where
    Series: NamedFrom<Vec<T>, P>,
    P: ?Sized,
{
    column(name, spans.iter().map(field).collect::<Vec<T>>())
}

fn spans_table(timeline: &Timeline) -> Result<DataFrame, PolarsError> {
    let spans = &timeline.spans;
    let origin_ns = i64::try_from(timeline.origin_unix_ns).unwrap_or(i64::MAX);
    let collective = |s: &TimedSpan| s.attrs.collective;
    let columns = vec![
        span_column(spans, "node", |s| s.node.0),
        span_column(spans, "rank", |s| s.rank.0),
        span_column(spans, "lane", |s| s.lane.0),
        span_column(spans, "category", |s| s.category.name()),
        span_column(spans, "op", |s| timeline.name(s.name).to_string()),
        span_column(spans, "start_ns", |s| s.start_ns),
        span_column(spans, "duration_ns", |s| s.duration_ns),
        span_column(spans, "start_unix_ns", |s| {
            origin_ns.saturating_add(s.start_ns)
        }),
        span_column(spans, "step", |s| s.attrs.step),
        span_column(spans, "layer", |s| s.attrs.layer),
        span_column(spans, "micro_batch", |s| s.attrs.micro_batch),
        span_column(spans, "request_id", |s| s.attrs.request_id),
        span_column(spans, "flops", |s| s.attrs.flops),
        span_column(spans, "bytes", |s| s.attrs.bytes),
        span_column(spans, "collective_kind", |s| {
            collective(s).map(|c| c.kind.name())
        }),
        span_column(spans, "collective_group", |s| {
            collective(s).map(|c| c.group)
        }),
        span_column(spans, "collective_seq", |s| collective(s).map(|c| c.seq)),
        span_column(spans, "participants", |s| {
            collective(s).map(|c| c.participants)
        }),
        span_column(spans, "peer", |s| {
            collective(s).and_then(|c| c.peer).map(|p| p.0)
        }),
        span_column(spans, "message_bytes", |s| {
            collective(s).map(|c| c.message_bytes)
        }),
        span_column(spans, "wait_ns", |s| collective(s).and_then(|c| c.wait_ns)),
    ];
    DataFrame::new(spans.len(), columns)
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

/// One collective as it ran: its participants' spans matched by (communicator, sequence number).
#[derive(Debug, Default)]
struct Instance {
    kind: &'static str,
    message_bytes: u64,
    participants: u32,
    ranks: u32,
    first_start_ns: i64,
    last_start_ns: i64,
    last_rank: u32,
    last_end_ns: i64,
    wait_ns: Option<u64>,
}

fn collective_instances(timeline: &Timeline) -> BTreeMap<(u32, u64), Instance> {
    let mut instances: BTreeMap<(u32, u64), Instance> = BTreeMap::new();
    for span in &timeline.spans {
        let Some(c) = span.attrs.collective else {
            continue;
        };
        let entry = instances.entry((c.group, c.seq));
        let instance = entry.or_insert_with(|| Instance {
            kind: c.kind.name(),
            message_bytes: c.message_bytes,
            participants: c.participants,
            first_start_ns: span.start_ns,
            last_start_ns: span.start_ns,
            last_rank: span.rank.0,
            last_end_ns: span.end_ns(),
            ..Instance::default()
        });
        instance.ranks += 1;
        instance.message_bytes = instance.message_bytes.max(c.message_bytes);
        instance.first_start_ns = instance.first_start_ns.min(span.start_ns);
        if span.start_ns > instance.last_start_ns {
            instance.last_start_ns = span.start_ns;
            instance.last_rank = span.rank.0;
        }
        instance.last_end_ns = instance.last_end_ns.max(span.end_ns());
        if let Some(wait) = c.wait_ns {
            *instance.wait_ns.get_or_insert(0) += wait;
        }
    }
    instances
}

/// One time of a collective instance, wide enough for a difference of two `i64`s.
type InstanceField = dyn Fn(&(u32, u64), &Instance) -> Option<i128>;

fn collectives_table(timeline: &Timeline) -> Result<DataFrame, PolarsError> {
    let instances = collective_instances(timeline);
    let rows: Vec<(&(u32, u64), &Instance)> = instances.iter().collect();
    let field = |name: &str, f: &InstanceField| {
        let values: Vec<Option<i64>> = rows
            .iter()
            .map(|(k, i)| f(k, i).and_then(|v| i64::try_from(v).ok()))
            .collect();
        column(name, values)
    };
    let columns = vec![
        column(
            "group",
            rows.iter().map(|((g, _), _)| *g).collect::<Vec<u32>>(),
        ),
        column(
            "seq",
            rows.iter().map(|((_, s), _)| *s).collect::<Vec<u64>>(),
        ),
        column(
            "kind",
            rows.iter().map(|(_, i)| i.kind).collect::<Vec<&str>>(),
        ),
        column(
            "message_bytes",
            rows.iter()
                .map(|(_, i)| i.message_bytes)
                .collect::<Vec<u64>>(),
        ),
        column(
            "participants",
            rows.iter()
                .map(|(_, i)| i.participants)
                .collect::<Vec<u32>>(),
        ),
        column(
            "ranks_seen",
            rows.iter().map(|(_, i)| i.ranks).collect::<Vec<u32>>(),
        ),
        field("first_start_ns", &|_, i| Some(i128::from(i.first_start_ns))),
        field("last_start_ns", &|_, i| Some(i128::from(i.last_start_ns))),
        field("arrival_skew_ns", &|_, i| {
            Some(i128::from(i.last_start_ns) - i128::from(i.first_start_ns))
        }),
        column(
            "last_arrival_rank",
            rows.iter().map(|(_, i)| i.last_rank).collect::<Vec<u32>>(),
        ),
        field("last_end_ns", &|_, i| Some(i128::from(i.last_end_ns))),
        field("wait_ns_total", &|_, i| i.wait_ns.map(i128::from)),
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
    let report = crate::report::report_with_clocks(run, &timeline, &facts, &clocks);
    let tables = store_tables(&timeline, &report, dir)?;
    Ok((report, tables))
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
        assert_eq!(collectives.height(), collective_instances(&timeline).len());
        let findings = read(&dir.path().join(FINDINGS_FILE));
        assert_eq!(findings.height(), report.findings.len());
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
