//! The timeline as polars frames, built once in one pass over the spans (a chunk per core at a
//! time), and the group-bys the analyses take from them: the per-op table (count, total, median,
//! flops and bytes per (rank, op)) and the per-collective-instance table (per (communicator,
//! sequence number): who took part, who arrived last, how long they waited). `store` widens the
//! same spans frame with the columns only readers need and writes it as `spans.parquet`.
//!
//! Two frames, not one: collective columns are null on most spans, and at tens of millions of
//! spans full-length null columns would cost gigabytes that no group-by reads. No polars type
//! leaves the crate.

use crate::timeline::{NameId, TimedSpan, Timeline};
use pinch_traces::{Category, CollectiveKind, Rank};
use polars::prelude::{
    Column, DataFrame, DataType, Int64Chunked, IntoLazy, IntoSeries, NamedFrom, PolarsResult,
    QuantileMethod, Series, UInt32Chunked, UInt64Chunked, col, len, lit, when,
};
use polars_arrow::bitmap::Bitmap;
use rayon::prelude::*;

/// Rows built on one core at a time; a frame is these chunks stacked (polars keeps them as
/// chunks, no copy).
const CHUNK_ROWS: usize = 1 << 20;

/// Every collective kind, in the order of the codes the collectives frame stores.
const KINDS: [CollectiveKind; 7] = CollectiveKind::ALL;

/// The spans as columns, in timeline order: rank, name (a `NameId`), category (an index into
/// `Category::ALL`), start_ns, duration_ns, flops, bytes.
#[derive(Debug)]
pub(crate) struct SpanFrame {
    pub(crate) frame: DataFrame,
}

/// The collective spans as columns, in timeline order: rank, group, seq, kind (an index into
/// `KINDS`), participants, message_bytes, start_ns, end_ns, wait_ns.
#[derive(Debug)]
pub(crate) struct CollectiveFrame {
    frame: DataFrame,
}

/// One op on one rank, as the per-op group-by measured it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct OpStats {
    pub rank: Rank,
    pub name: NameId,
    /// The category of the op's first span on the rank.
    pub category: Category,
    pub count: u64,
    pub total_ns: u64,
    /// Nearest-rank median (the lower middle value of an even count), as `stats::median`.
    pub median_ns: u64,
    /// Summed flops and the time of the spans that carried them; `None` when none did.
    pub flops: Option<(u64, u64)>,
    pub bytes: Option<(u64, u64)>,
}

/// One collective instance: its participants' spans matched by (communicator, sequence number).
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Instance {
    pub group: u32,
    pub seq: u64,
    /// The kind of its first span.
    pub kind: CollectiveKind,
    pub message_bytes: u64,
    pub participants: u32,
    /// Spans seen (one per rank when nothing was lost).
    pub ranks: u32,
    pub first_start_ns: i64,
    pub last_start_ns: i64,
    /// The first rank (in timeline order) that started at `last_start_ns`.
    pub last_rank: u32,
    pub last_end_ns: i64,
    pub wait_ns: Option<u64>,
}

impl SpanFrame {
    /// One pass over the spans on every core, each core filling its rows of every column; the
    /// columns are single chunks, so no query has to rechunk them.
    pub(crate) fn build(timeline: &Timeline) -> PolarsResult<SpanFrame> {
        let n = timeline.spans.len();
        let mut columns = SpanColumns::zeroed(n);
        columns
            .chunks_mut()
            .into_par_iter()
            .zip(timeline.spans.par_chunks(CHUNK_ROWS))
            .for_each(|(mut out, spans)| out.fill(spans));
        Ok(SpanFrame {
            frame: columns.into_frame()?,
        })
    }

    /// Per (rank, op): count, total, median, and flops and bytes over the spans that carry them;
    /// by rank, then op id.
    pub(crate) fn op_stats(&self) -> PolarsResult<Vec<OpStats>> {
        // Durations of the spans that carry a count, null elsewhere: summed per group, the
        // time the counts were measured over.
        let known = |c: &str| {
            when(col(c).is_not_null())
                .then(col("duration_ns"))
                .otherwise(lit(polars::prelude::Null {}))
                .alias(format!("{c}_ns"))
        };
        // One u64 key per (rank, op): a single-column group-by hashes integers instead of
        // encoding rows.
        let key = (col("rank").cast(DataType::UInt64) * lit(1u64 << 32)
            + col("name").cast(DataType::UInt64))
        .alias("key");
        let out = self
            .frame
            .clone()
            .lazy()
            .with_columns([key, known("flops"), known("bytes")])
            .group_by([col("key")])
            .agg([
                col("rank").first().alias("rank"),
                col("name").first().alias("name"),
                col("category").first().alias("category"),
                len().cast(DataType::UInt64).alias("count"),
                col("duration_ns").sum().alias("total_ns"),
                col("duration_ns")
                    .quantile(lit(0.5), QuantileMethod::Lower)
                    .cast(DataType::UInt64)
                    .alias("median_ns"),
                col("flops").sum().alias("flops"),
                col("flops").count().cast(DataType::UInt64).alias("flops_n"),
                col("flops_ns").sum().alias("flops_ns"),
                col("bytes").sum().alias("bytes"),
                col("bytes").count().cast(DataType::UInt64).alias("bytes_n"),
                col("bytes_ns").sum().alias("bytes_ns"),
            ])
            .sort(["key"], Default::default())
            .collect()?;
        op_rows(&out)
    }
}

impl CollectiveFrame {
    pub(crate) fn build(timeline: &Timeline) -> PolarsResult<CollectiveFrame> {
        let chunks = timeline
            .spans
            .par_chunks(CHUNK_ROWS)
            .map(collective_chunk)
            .collect::<PolarsResult<Vec<DataFrame>>>()?;
        Ok(CollectiveFrame {
            frame: stack(chunks, collective_chunk(&[])?)?,
        })
    }

    /// Every collective instance, by (group, seq).
    pub(crate) fn instances(&self) -> PolarsResult<Vec<Instance>> {
        let waited = col("wait_ns").count().gt(lit(0));
        let out = self
            .frame
            .clone()
            .lazy()
            .group_by([col("group"), col("seq")])
            .agg([
                col("kind").first().alias("kind"),
                col("message_bytes").max().alias("message_bytes"),
                col("participants").first().alias("participants"),
                len().cast(DataType::UInt32).alias("ranks"),
                col("start_ns").min().alias("first_start_ns"),
                col("start_ns").max().alias("last_start_ns"),
                // arg_max names the first row holding the maximum: the first in timeline order.
                col("rank")
                    .get(col("start_ns").arg_max(), false)
                    .alias("last_rank"),
                col("end_ns").max().alias("last_end_ns"),
                when(waited)
                    .then(col("wait_ns").sum())
                    .otherwise(lit(polars::prelude::Null {}))
                    .alias("wait_ns"),
            ])
            .sort(["group", "seq"], Default::default())
            .collect()?;
        instance_rows(&out)
    }
}

/// Stacks chunks into one frame; `empty` stands in when there are none.
fn stack(chunks: Vec<DataFrame>, empty: DataFrame) -> PolarsResult<DataFrame> {
    let mut chunks = chunks.into_iter();
    let Some(mut frame) = chunks.next() else {
        return Ok(empty);
    };
    for chunk in chunks {
        frame.vstack_mut(&chunk)?;
    }
    Ok(frame)
}

fn column<T, P>(name: &str, values: T) -> Column
where
    Series: NamedFrom<T, P>,
    P: ?Sized,
{
    Column::from(Series::new(name.into(), values))
}

/// The index of a category in `Category::ALL`.
fn category_code(category: Category) -> u32 {
    Category::ALL
        .iter()
        .position(|c| *c == category)
        .unwrap_or_default() as u32
}

fn kind_code(kind: CollectiveKind) -> u32 {
    KINDS.iter().position(|k| *k == kind).unwrap_or_default() as u32
}

/// The spans frame's columns as plain vectors, zeroed (untouched pages) until filled.
struct SpanColumns {
    rank: Vec<u32>,
    name: Vec<u32>,
    category: Vec<u32>,
    start: Vec<i64>,
    duration: Vec<u64>,
    flops: Vec<u64>,
    bytes: Vec<u64>,
    /// Validity bits of `flops` and `bytes`, least significant bit first, as arrow lays them.
    flops_valid: Vec<u8>,
    bytes_valid: Vec<u8>,
}

/// One core's rows of every column.
struct ColumnsChunk<'a> {
    rank: &'a mut [u32],
    name: &'a mut [u32],
    category: &'a mut [u32],
    start: &'a mut [i64],
    duration: &'a mut [u64],
    flops: &'a mut [u64],
    bytes: &'a mut [u64],
    flops_valid: &'a mut [u8],
    bytes_valid: &'a mut [u8],
}

impl SpanColumns {
    fn zeroed(n: usize) -> SpanColumns {
        let bits = n.div_ceil(8);
        SpanColumns {
            rank: vec![0; n],
            name: vec![0; n],
            category: vec![0; n],
            start: vec![0; n],
            duration: vec![0; n],
            flops: vec![0; n],
            bytes: vec![0; n],
            flops_valid: vec![0; bits],
            bytes_valid: vec![0; bits],
        }
    }

    /// The columns cut into `CHUNK_ROWS` rows (a multiple of 8, so validity bytes split too).
    fn chunks_mut(&mut self) -> Vec<ColumnsChunk<'_>> {
        const BITS: usize = CHUNK_ROWS / 8;
        let mut columns = (
            self.rank.chunks_mut(CHUNK_ROWS),
            self.name.chunks_mut(CHUNK_ROWS),
            self.category.chunks_mut(CHUNK_ROWS),
            self.start.chunks_mut(CHUNK_ROWS),
            self.duration.chunks_mut(CHUNK_ROWS),
            self.flops.chunks_mut(CHUNK_ROWS),
            self.bytes.chunks_mut(CHUNK_ROWS),
            self.flops_valid.chunks_mut(BITS),
            self.bytes_valid.chunks_mut(BITS),
        );
        std::iter::from_fn(|| {
            Some(ColumnsChunk {
                rank: columns.0.next()?,
                name: columns.1.next()?,
                category: columns.2.next()?,
                start: columns.3.next()?,
                duration: columns.4.next()?,
                flops: columns.5.next()?,
                bytes: columns.6.next()?,
                flops_valid: columns.7.next()?,
                bytes_valid: columns.8.next()?,
            })
        })
        .collect()
    }

    fn into_frame(self) -> PolarsResult<DataFrame> {
        let n = self.rank.len();
        let nullable = |name: &str, values: Vec<u64>, valid: Vec<u8>| {
            let validity = Bitmap::from_u8_vec(valid, n);
            let validity = (validity.unset_bits() > 0).then_some(validity);
            Column::from(
                UInt64Chunked::from_vec_validity(name.into(), values, validity).into_series(),
            )
        };
        let columns = vec![
            Column::from(UInt32Chunked::from_vec("rank".into(), self.rank).into_series()),
            Column::from(UInt32Chunked::from_vec("name".into(), self.name).into_series()),
            Column::from(UInt32Chunked::from_vec("category".into(), self.category).into_series()),
            Column::from(Int64Chunked::from_vec("start_ns".into(), self.start).into_series()),
            Column::from(
                UInt64Chunked::from_vec("duration_ns".into(), self.duration).into_series(),
            ),
            nullable("flops", self.flops, self.flops_valid),
            nullable("bytes", self.bytes, self.bytes_valid),
        ];
        DataFrame::new(n, columns)
    }
}

impl ColumnsChunk<'_> {
    fn fill(&mut self, spans: &[TimedSpan]) {
        for (i, s) in spans.iter().enumerate() {
            self.rank[i] = s.rank.0;
            self.name[i] = s.name.0;
            self.category[i] = category_code(s.category);
            self.start[i] = s.start_ns;
            self.duration[i] = s.duration_ns;
            let bit = 1u8 << (i % 8);
            if let Some(flops) = s.attrs.flops {
                self.flops[i] = flops;
                self.flops_valid[i / 8] |= bit;
            }
            if let Some(bytes) = s.attrs.bytes {
                self.bytes[i] = bytes;
                self.bytes_valid[i / 8] |= bit;
            }
        }
    }
}

/// One pass over a chunk of spans, keeping the collective ones.
fn collective_chunk(spans: &[TimedSpan]) -> PolarsResult<DataFrame> {
    let mut rank = Vec::new();
    let (mut group, mut seq, mut kind) = (Vec::new(), Vec::new(), Vec::new());
    let (mut participants, mut message_bytes) = (Vec::new(), Vec::new());
    let (mut start, mut end, mut wait) = (Vec::new(), Vec::new(), Vec::new());
    for s in spans {
        let Some(c) = s.attrs.collective else {
            continue;
        };
        rank.push(s.rank.0);
        group.push(c.group);
        seq.push(c.seq);
        kind.push(kind_code(c.kind));
        participants.push(c.participants);
        message_bytes.push(c.message_bytes);
        start.push(s.start_ns);
        end.push(s.end_ns());
        wait.push(c.wait_ns);
    }
    let rows = rank.len();
    let columns = vec![
        column("rank", rank),
        column("group", group),
        column("seq", seq),
        column("kind", kind),
        column("participants", participants),
        column("message_bytes", message_bytes),
        column("start_ns", start),
        column("end_ns", end),
        column("wait_ns", wait),
    ];
    DataFrame::new(rows, columns)
}

/// A sum and the time behind it, when any span carried the quantity.
fn known(sum: Option<u64>, spans: Option<u64>, ns: Option<u64>) -> Option<(u64, u64)> {
    match spans {
        Some(n) if n > 0 => Some((sum.unwrap_or(0), ns.unwrap_or(0))),
        _ => None,
    }
}

fn op_rows(out: &DataFrame) -> PolarsResult<Vec<OpStats>> {
    let u32s = |name: &str| -> PolarsResult<Vec<Option<u32>>> {
        Ok(out.column(name)?.u32()?.iter().collect())
    };
    let u64s = |name: &str| -> PolarsResult<Vec<Option<u64>>> {
        Ok(out.column(name)?.u64()?.iter().collect())
    };
    let (rank, name, category) = (u32s("rank")?, u32s("name")?, u32s("category")?);
    let (count, total, median) = (u64s("count")?, u64s("total_ns")?, u64s("median_ns")?);
    let (flops, flops_n, flops_ns) = (u64s("flops")?, u64s("flops_n")?, u64s("flops_ns")?);
    let (bytes, bytes_n, bytes_ns) = (u64s("bytes")?, u64s("bytes_n")?, u64s("bytes_ns")?);
    Ok((0..out.height())
        .map(|i| OpStats {
            rank: Rank(rank[i].unwrap_or_default()),
            name: NameId(name[i].unwrap_or_default()),
            category: Category::ALL[category[i].unwrap_or_default() as usize % Category::ALL.len()],
            count: count[i].unwrap_or_default(),
            total_ns: total[i].unwrap_or_default(),
            median_ns: median[i].unwrap_or_default(),
            flops: known(flops[i], flops_n[i], flops_ns[i]),
            bytes: known(bytes[i], bytes_n[i], bytes_ns[i]),
        })
        .collect())
}

fn instance_rows(out: &DataFrame) -> PolarsResult<Vec<Instance>> {
    let u32s = |name: &str| -> PolarsResult<Vec<Option<u32>>> {
        Ok(out.column(name)?.u32()?.iter().collect())
    };
    let u64s = |name: &str| -> PolarsResult<Vec<Option<u64>>> {
        Ok(out.column(name)?.u64()?.iter().collect())
    };
    let i64s = |name: &str| -> PolarsResult<Vec<Option<i64>>> {
        Ok(out.column(name)?.i64()?.iter().collect())
    };
    let (group, seq, kind) = (u32s("group")?, u64s("seq")?, u32s("kind")?);
    let (message_bytes, participants) = (u64s("message_bytes")?, u32s("participants")?);
    let (ranks, last_rank) = (u32s("ranks")?, u32s("last_rank")?);
    let (first_start, last_start) = (i64s("first_start_ns")?, i64s("last_start_ns")?);
    let (last_end, wait) = (i64s("last_end_ns")?, u64s("wait_ns")?);
    Ok((0..out.height())
        .map(|i| Instance {
            group: group[i].unwrap_or_default(),
            seq: seq[i].unwrap_or_default(),
            kind: KINDS[kind[i].unwrap_or_default() as usize % KINDS.len()],
            message_bytes: message_bytes[i].unwrap_or_default(),
            participants: participants[i].unwrap_or_default(),
            ranks: ranks[i].unwrap_or_default(),
            first_start_ns: first_start[i].unwrap_or_default(),
            last_start_ns: last_start[i].unwrap_or_default(),
            last_rank: last_rank[i].unwrap_or_default(),
            last_end_ns: last_end[i].unwrap_or_default(),
            wait_ns: wait[i],
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{collective, span, timeline};

    #[test]
    fn columns_filled_chunk_by_chunk_keep_every_value_and_null() {
        // More rows than one chunk, and a count that is not a multiple of 8.
        let n = CHUNK_ROWS + 13;
        let spans: Vec<TimedSpan> = (0..n)
            .map(|i| {
                let mut s = span(0, Category::Compute, i as i64, 1);
                s.attrs.flops = (i % 3 == 0).then_some(i as u64);
                s
            })
            .collect();
        let frame = SpanFrame::build(&timeline(spans)).unwrap().frame;
        let flops = frame.column("flops").unwrap().u64().unwrap().clone();
        assert_eq!(flops.len(), n);
        let expected: Vec<Option<u64>> = (0..n).map(|i| (i % 3 == 0).then_some(i as u64)).collect();
        assert!(flops.iter().eq(expected.into_iter()));
        let bytes = frame.column("bytes").unwrap();
        assert_eq!(bytes.null_count(), n);
        let starts = frame.column("start_ns").unwrap().i64().unwrap().clone();
        assert_eq!(starts.get(n - 1), Some(n as i64 - 1));
    }

    #[test]
    fn an_instance_names_its_first_last_arrival_and_sums_known_waits() {
        let mut spans = vec![
            collective(0, 1, 100, 50, 64),
            collective(1, 1, 130, 20, 128),
            collective(2, 1, 130, 25, 64),
            collective(0, 2, 300, 10, 64),
            collective(1, 2, 290, 20, 64),
        ];
        for (s, wait) in spans.iter_mut().zip([Some(30), None, Some(5), None, None]) {
            if let Some(c) = s.attrs.collective.as_mut() {
                c.wait_ns = wait;
            }
        }
        let t = timeline(spans);
        let got = CollectiveFrame::build(&t).unwrap().instances().unwrap();
        let first = &got[0];
        assert_eq!((first.seq, first.ranks, first.message_bytes), (1, 3, 128));
        assert_eq!((first.first_start_ns, first.last_start_ns), (100, 130));
        // Ranks 1 and 2 both started last; rank 1 comes first in the timeline.
        assert_eq!(first.last_rank, 1);
        assert_eq!((first.last_end_ns, first.wait_ns), (155, Some(35)));
        let second = &got[1];
        assert_eq!((second.last_rank, second.wait_ns), (0, None));
        assert_eq!(second.kind, CollectiveKind::AllReduce);
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn an_empty_timeline_has_no_ops_and_no_instances() {
        let t = timeline(Vec::new());
        assert!(SpanFrame::build(&t).unwrap().op_stats().unwrap().is_empty());
        let instances = CollectiveFrame::build(&t).unwrap().instances().unwrap();
        assert!(instances.is_empty());
    }
}
