//! Reading back what `store` wrote, for viewers that must not hold the whole run: the spans as
//! compact columns (a row group at a time), one span whole by its row, the counters as series,
//! and whether the stored files are newer than the run's. No polars type leaves this module.

use crate::span_columns::{ColumnsBuilder, SpanColumns};
use crate::store::{COUNTERS_FILE, SPANS_COLUMNS, SPANS_FILE, StoreError};
use crate::timeline::{NameId, Series, TimedSpan, Timeline};
use pinch_traces::manifest::{MANIFEST_FILE, RunManifest};
use pinch_traces::{
    Category, CollectiveAttrs, CollectiveKind, Lane, NodeId, Rank, SpanAttrs, Unit,
};
use polars::prelude::{
    ChunkedArray, DataFrame, DataType, ParquetReader, PolarsDataType, PolarsError, SerReader,
};
use rustc_hash::FxHashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Rows read at once: the stored row groups' size, so a read decodes one group.
pub const READ_ROWS: usize = crate::store::ROW_GROUP_ROWS;

/// One span whole: what spans.parquet holds in its row.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanRow {
    pub node: NodeId,
    pub rank: Rank,
    pub lane: Lane,
    pub category: Category,
    pub op: String,
    pub start_ns: i64,
    pub duration_ns: u64,
    pub attrs: SpanAttrs,
}

impl SpanRow {
    /// Span `index` of a timeline held in memory.
    pub fn of(timeline: &Timeline, index: usize) -> Option<SpanRow> {
        let s: &TimedSpan = timeline.spans.get(index)?;
        Some(SpanRow {
            node: s.node,
            rank: s.rank,
            lane: s.lane,
            category: s.category,
            op: timeline.name(s.name).to_string(),
            start_ns: s.start_ns,
            duration_ns: s.duration_ns,
            attrs: s.attrs,
        })
    }
}

fn read_error(path: &Path, message: impl ToString) -> StoreError {
    StoreError::Read {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

fn reader(path: &Path) -> Result<ParquetReader<File>, StoreError> {
    let file = File::open(path).map_err(|e| read_error(path, e))?;
    Ok(ParquetReader::new(file))
}

/// `columns` of rows `slice` (offset, count) of a Parquet file.
fn read_frame(
    path: &Path,
    columns: &[&str],
    slice: Option<(usize, usize)>,
) -> Result<DataFrame, StoreError> {
    let names = columns.iter().map(|c| c.to_string()).collect();
    reader(path)?
        .with_columns(Some(names))
        .with_slice(slice)
        .finish()
        .map_err(|e| read_error(path, e))
}

/// A column cast to the type it is read as.
fn typed<T: PolarsDataType>(
    frame: &DataFrame,
    name: &str,
    dtype: DataType,
    unpack: impl Fn(&polars::prelude::Series) -> Result<&ChunkedArray<T>, PolarsError>,
) -> Result<ChunkedArray<T>, PolarsError> {
    let series = frame.column(name)?.as_materialized_series().cast(&dtype)?;
    Ok(unpack(&series)?.clone())
}

/// The spans of a run's spans.parquet as compact columns, read one row group at a time so that
/// the whole table is never decoded at once.
pub fn read_span_columns(dir: &Path) -> Result<SpanColumns, StoreError> {
    let path = dir.join(SPANS_FILE);
    let rows = reader(&path)?
        .num_rows()
        .map_err(|e| read_error(&path, e))?;
    let mut builder = ColumnsBuilder::new(Vec::new(), rows).map_err(|e| read_error(&path, e))?;
    let mut names: FxHashMap<String, NameId> = FxHashMap::default();
    for from in (0..rows).step_by(READ_ROWS) {
        let frame = read_frame(
            &path,
            &["rank", "category", "op", "start_ns", "duration_ns"],
            Some((from, READ_ROWS.min(rows - from))),
        )?;
        push_rows(&mut builder, &mut names, &frame, from).map_err(|e| read_error(&path, e))?;
    }
    Ok(builder.finish())
}

/// Adds one slice of the spans table (rows from `first_row`) to the builder.
fn push_rows(
    builder: &mut ColumnsBuilder,
    names: &mut FxHashMap<String, NameId>,
    frame: &DataFrame,
    first_row: usize,
) -> Result<(), String> {
    let err = |e: PolarsError| e.to_string();
    let rank = typed(frame, "rank", DataType::UInt32, |s| s.u32()).map_err(err)?;
    let category = typed(frame, "category", DataType::String, |s| s.str()).map_err(err)?;
    let op = typed(frame, "op", DataType::String, |s| s.str()).map_err(err)?;
    let start = typed(frame, "start_ns", DataType::Int64, |s| s.i64()).map_err(err)?;
    let duration = typed(frame, "duration_ns", DataType::UInt64, |s| s.u64()).map_err(err)?;
    let rows = rank
        .iter()
        .zip(category.iter())
        .zip(op.iter())
        .zip(start.iter().zip(duration.iter()));
    for (k, (((rank, category), op), (start, duration))) in rows.enumerate() {
        let row = first_row + k;
        let (Some(rank), Some(category), Some(op), Some(start), Some(duration)) =
            (rank, category, op, start, duration)
        else {
            return Err(format!(
                "row {row} lacks one of rank, category, op, start_ns, duration_ns"
            ));
        };
        let category = Category::from_name(category)
            .ok_or_else(|| format!("row {row} has category '{category}'"))?;
        let name = match names.get(op) {
            Some(&id) => id,
            None => {
                let id = builder
                    .add_name(op.to_string())
                    .map_err(|e| e.to_string())?;
                names.insert(op.to_string(), id);
                id
            }
        };
        builder
            .push(Rank(rank), category, name, start, duration)
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Row `index` of a run's spans.parquet, whole (only its row group is decoded).
pub fn read_span_row(dir: &Path, index: usize) -> Result<SpanRow, StoreError> {
    let path = dir.join(SPANS_FILE);
    let frame = read_frame(&path, &SPANS_COLUMNS, Some((index, 1)))?;
    if frame.height() != 1 {
        return Err(read_error(&path, format!("it has no row {index}")));
    }
    span_row(&frame).map_err(|e| read_error(&path, format!("row {index}: {e}")))
}

/// The one row of `frame` as a span.
fn span_row(frame: &DataFrame) -> Result<SpanRow, String> {
    let err = |e: PolarsError| e.to_string();
    let u32_of = |name: &str| -> Result<Option<u32>, String> {
        Ok(typed(frame, name, DataType::UInt32, |s| s.u32())
            .map_err(err)?
            .get(0))
    };
    let u64_of = |name: &str| -> Result<Option<u64>, String> {
        Ok(typed(frame, name, DataType::UInt64, |s| s.u64())
            .map_err(err)?
            .get(0))
    };
    let text_of = |name: &str| -> Result<Option<String>, String> {
        Ok(typed(frame, name, DataType::String, |s| s.str())
            .map_err(err)?
            .get(0)
            .map(str::to_string))
    };
    // Columns every span has, and a collective's: a null there is a damaged table.
    let needed32 = |name: &str| u32_of(name)?.ok_or_else(|| format!("no {name}"));
    let needed64 = |name: &str| u64_of(name)?.ok_or_else(|| format!("no {name}"));
    let needed_text = |name: &str| text_of(name)?.ok_or_else(|| format!("no {name}"));
    let category = needed_text("category")?;
    let collective = match text_of("collective_kind")? {
        Some(kind) => Some(CollectiveAttrs {
            kind: CollectiveKind::from_name(&kind)
                .ok_or_else(|| format!("collective kind '{kind}'"))?,
            group: needed32("collective_group")?,
            seq: needed64("collective_seq")?,
            participants: needed32("participants")?,
            peer: u32_of("peer")?.map(Rank),
            message_bytes: needed64("message_bytes")?,
            wait_ns: u64_of("wait_ns")?,
        }),
        None => None,
    };
    let start = typed(frame, "start_ns", DataType::Int64, |s| s.i64()).map_err(err)?;
    Ok(SpanRow {
        node: NodeId(needed32("node")?),
        rank: Rank(needed32("rank")?),
        lane: Lane(needed32("lane")?),
        category: Category::from_name(&category).ok_or_else(|| format!("category '{category}'"))?,
        op: needed_text("op")?,
        start_ns: start.get(0).ok_or("no start_ns")?,
        duration_ns: needed64("duration_ns")?,
        attrs: SpanAttrs {
            flops: u64_of("flops")?,
            bytes: u64_of("bytes")?,
            layer: u32_of("layer")?,
            step: u32_of("step")?,
            request_id: u64_of("request_id")?,
            micro_batch: u32_of("micro_batch")?,
            collective,
        },
    })
}

/// A run's counters.parquet as series (its rows come a series at a time).
pub fn read_series(dir: &Path) -> Result<Vec<Series>, StoreError> {
    let path = dir.join(COUNTERS_FILE);
    let frame = read_frame(
        &path,
        &["node", "counter", "unit", "device", "time_ns", "value"],
        None,
    )?;
    series_of(&frame).map_err(|e| read_error(&path, e))
}

fn series_of(frame: &DataFrame) -> Result<Vec<Series>, PolarsError> {
    let node = typed(frame, "node", DataType::UInt32, |s| s.u32())?;
    let counter = typed(frame, "counter", DataType::String, |s| s.str())?;
    let unit = typed(frame, "unit", DataType::String, |s| s.str())?;
    let device = typed(frame, "device", DataType::String, |s| s.str())?;
    let time = typed(frame, "time_ns", DataType::Int64, |s| s.i64())?;
    let value = typed(frame, "value", DataType::Float64, |s| s.f64())?;
    let mut out: Vec<Series> = Vec::new();
    let keys = node
        .iter()
        .zip(counter.iter())
        .zip(unit.iter().zip(device.iter()));
    let samples = time.iter().zip(value.iter());
    for (((node, counter), (unit, device)), (time, value)) in keys.zip(samples) {
        let (Some(node), Some(counter), Some(device), Some(t), Some(v)) =
            (node, counter, device, time, value)
        else {
            continue;
        };
        let same = out.last().is_some_and(|s: &Series| {
            s.node.0 == node && s.counter == counter && s.device == device
        });
        if !same {
            out.push(Series {
                node: NodeId(node),
                counter: counter.to_string(),
                unit: unit.and_then(Unit::from_symbol),
                device: device.to_string(),
                times_ns: Vec::new(),
                values: Vec::new(),
            });
        }
        if let Some(series) = out.last_mut() {
            series.times_ns.push(t);
            series.values.push(v);
        }
    }
    Ok(out)
}

/// Whether every one of `files` in a run directory exists and is newer than its manifest and
/// every node log the manifest names: then they were written from this run as it is now.
pub fn stored_current(dir: &Path, manifest: &RunManifest, files: &[&str]) -> bool {
    let modified = |path: PathBuf| -> Option<SystemTime> {
        std::fs::metadata(path).and_then(|m| m.modified()).ok()
    };
    let mut inputs = vec![dir.join(MANIFEST_FILE)];
    inputs.extend(manifest.nodes.iter().map(|n| dir.join(&n.log_file)));
    let newest_input = inputs.into_iter().map(modified).max().flatten();
    let oldest_output = files.iter().map(|f| modified(dir.join(f))).min().flatten();
    match (newest_input, oldest_output) {
        (Some(input), Some(output)) => output > input,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{FINDINGS_FILE, analyze_and_store};
    use crate::testkit;

    fn stored_run() -> (tempfile::TempDir, Timeline) {
        let run = testkit::run_with_spans(&[&[0, 1], &[2]]);
        let dir = tempfile::tempdir().unwrap();
        run.manifest.store(dir.path()).unwrap();
        // File times move in ticks of a few milliseconds: the tables must come a tick later.
        std::thread::sleep(std::time::Duration::from_millis(20));
        analyze_and_store(&run, dir.path()).unwrap();
        (dir, crate::timeline::merge(&run))
    }

    #[test]
    fn the_stored_spans_read_back_as_the_timeline_has_them() {
        let (dir, timeline) = stored_run();
        let read = read_span_columns(dir.path()).unwrap();
        let built = SpanColumns::from_timeline(&timeline).unwrap();
        assert_eq!(read.len(), timeline.spans.len());
        assert_eq!(read.tracks(), built.tracks());
        for i in 0..read.len() {
            let (a, b) = (read.span(i).unwrap(), built.span(i).unwrap());
            assert_eq!(read.name(a.name), built.name(b.name));
            assert_eq!(
                (a.rank, a.category, a.start_ns, a.duration_ns),
                (b.rank, b.category, b.start_ns, b.duration_ns)
            );
        }
    }

    #[test]
    fn a_stored_row_is_the_span_whole() {
        let (dir, timeline) = stored_run();
        let collective = timeline
            .spans
            .iter()
            .position(|s| s.attrs.collective.is_some())
            .expect("the run has a collective");
        for index in [0, collective, timeline.spans.len() - 1] {
            let row = read_span_row(dir.path(), index).unwrap();
            assert_eq!(Some(row), SpanRow::of(&timeline, index), "{index}");
        }
        let past = read_span_row(dir.path(), timeline.spans.len()).unwrap_err();
        assert!(past.to_string().contains("no row"), "{past}");
    }

    #[test]
    fn the_stored_counters_read_back_as_series() {
        let (dir, timeline) = stored_run();
        let series = read_series(dir.path()).unwrap();
        let with_samples: Vec<&Series> = timeline
            .series
            .iter()
            .filter(|s| !s.times_ns.is_empty())
            .collect();
        assert_eq!(series.len(), with_samples.len());
        for (a, b) in series.iter().zip(with_samples) {
            assert_eq!(a, b);
        }
    }

    #[test]
    fn stored_files_are_current_until_a_log_is_newer() {
        let (dir, _) = stored_run();
        let manifest = RunManifest::load(dir.path()).unwrap();
        assert!(stored_current(
            dir.path(),
            &manifest,
            &[SPANS_FILE, FINDINGS_FILE]
        ));
        assert!(!stored_current(dir.path(), &manifest, &["report.json"]));
        std::thread::sleep(std::time::Duration::from_millis(20));
        manifest.store(dir.path()).unwrap();
        assert!(!stored_current(dir.path(), &manifest, &[SPANS_FILE]));
    }

    #[test]
    fn a_missing_table_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_span_columns(dir.path()).unwrap_err().to_string();
        assert!(err.contains("spans.parquet"), "{err}");
    }
}
