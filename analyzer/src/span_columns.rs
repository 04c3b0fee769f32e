//! The timeline's spans as a viewer keeps them: 12 bytes a span (the `TimedSpan` takes 168),
//! grouped by rank and sorted by start, built from a `Timeline` or read back from spans.parquet
//! (`stored`). A span's arguments are not kept: `SpanRow` fetches one span whole when asked.

use crate::timeline::{NameId, Timeline};
use pinch_traces::{Category, Rank};
use std::collections::BTreeMap;
use std::ops::Range;
use thiserror::Error;

/// Why spans could not be kept in columns.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ColumnsError {
    #[error("span {index} (rank {rank}) is out of order: spans must be sorted by rank, then start")]
    OutOfOrder { index: usize, rank: u32 },
    #[error("span {index} names op {name}, past the {names} names of the table")]
    UnknownName {
        index: usize,
        name: u32,
        names: usize,
    },
    #[error("too many op names ({0}) to keep in columns")]
    TooManyNames(usize),
}

/// One rank's spans: a contiguous range of the columns.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpanTrack {
    pub rank: Rank,
    /// Its spans' indices (the same as their rows in spans.parquet and `Timeline::spans`).
    pub spans: Range<usize>,
    /// Its longest span: a span that ends after a time starts at most this long before it.
    pub longest_ns: u64,
    /// Where each run of starts sharing their high 32 bits begins: (first index, `start >> 32`).
    pages: Vec<(usize, i64)>,
}

impl SpanTrack {
    /// The high part of span `i`'s start.
    fn high_of(&self, i: usize) -> i64 {
        let at = self.pages.partition_point(|&(first, _)| first <= i);
        self.pages[at.saturating_sub(1)].1
    }

    /// Where the page after `page` begins.
    fn page_end(&self, page: usize) -> usize {
        self.pages.get(page + 1).map_or(self.spans.end, |p| p.0)
    }
}

/// One span as the columns hold it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanView {
    pub index: usize,
    pub rank: Rank,
    pub category: Category,
    pub name: NameId,
    /// Nanoseconds since the timeline's origin.
    pub start_ns: i64,
    pub duration_ns: u64,
}

impl SpanView {
    pub fn end_ns(&self) -> i64 {
        self.start_ns
            .saturating_add(i64::try_from(self.duration_ns).unwrap_or(i64::MAX))
    }
}

/// Every span of a run, by column.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SpanColumns {
    names: Vec<String>,
    tracks: Vec<SpanTrack>,
    /// The low 32 bits of each start; the high bits are its track's page.
    start_low: Vec<u32>,
    /// Durations below `u32::MAX`; `u32::MAX` marks one kept in `long_ns`.
    duration_ns: Vec<u32>,
    /// `name << CATEGORY_BITS | category`.
    kind: Vec<u32>,
    long_ns: BTreeMap<usize, u64>,
    end_ns: i64,
}

const CATEGORY_BITS: u32 = 3;
const LONG: u32 = u32::MAX;

fn category_code(category: Category) -> u32 {
    Category::ALL
        .iter()
        .position(|&c| c == category)
        .unwrap_or(0) as u32
}

fn split_start(start_ns: i64) -> (i64, u32) {
    (start_ns >> 32, (start_ns & 0xffff_ffff) as u32)
}

impl SpanColumns {
    /// The columns of a timeline's spans (which it keeps sorted by rank, then start).
    pub fn from_timeline(timeline: &Timeline) -> Result<SpanColumns, ColumnsError> {
        let mut builder = ColumnsBuilder::new(timeline.names.clone(), timeline.spans.len())?;
        for s in &timeline.spans {
            builder.push(s.rank, s.category, s.name, s.start_ns, s.duration_ns)?;
        }
        Ok(builder.finish())
    }

    pub fn len(&self) -> usize {
        self.start_low.len()
    }

    pub fn is_empty(&self) -> bool {
        self.start_low.is_empty()
    }

    pub fn names(&self) -> &[String] {
        &self.names
    }

    pub fn name(&self, id: NameId) -> &str {
        self.names.get(id.0 as usize).map_or("", String::as_str)
    }

    /// One track per rank with spans, in rank order.
    pub fn tracks(&self) -> &[SpanTrack] {
        &self.tracks
    }

    /// The latest span end (0 without spans).
    pub fn end_ns(&self) -> i64 {
        self.end_ns
    }

    /// Span `index`, `None` past the end.
    pub fn span(&self, index: usize) -> Option<SpanView> {
        let at = self.tracks.partition_point(|t| t.spans.end <= index);
        let track = self.tracks.get(at)?;
        track
            .spans
            .contains(&index)
            .then(|| self.view(track, track.high_of(index), index))
    }

    fn view(&self, track: &SpanTrack, high: i64, i: usize) -> SpanView {
        let kind = self.kind[i];
        let duration_ns = match self.duration_ns[i] {
            LONG => self.long_ns.get(&i).copied().unwrap_or(u64::from(LONG)),
            short => u64::from(short),
        };
        SpanView {
            index: i,
            rank: track.rank,
            category: Category::ALL[(kind & ((1 << CATEGORY_BITS) - 1)) as usize],
            name: NameId(kind >> CATEGORY_BITS),
            start_ns: (high << 32) | i64::from(self.start_low[i]),
            duration_ns,
        }
    }

    /// A track's spans in `range` (indices within its own range), in order.
    pub fn spans_of<'a>(
        &'a self,
        track: &'a SpanTrack,
        range: Range<usize>,
    ) -> impl Iterator<Item = SpanView> + 'a {
        let from = range.start.max(track.spans.start);
        let to = range.end.min(track.spans.end);
        let mut page = track.pages.partition_point(|&(first, _)| first <= from);
        page = page.saturating_sub(1);
        let mut page_end = track.page_end(page);
        (from..to).map(move |i| {
            while i >= page_end {
                page += 1;
                page_end = track.page_end(page);
            }
            self.view(track, track.pages[page].1, i)
        })
    }

    /// The first of a track's spans that starts at or after `t_ns` (its end if none does).
    pub fn first_starting_at(&self, track: &SpanTrack, t_ns: i64) -> usize {
        let (high, low) = split_start(t_ns);
        let page = track.pages.partition_point(|&(_, h)| h < high);
        let Some(&(first, page_high)) = track.pages.get(page) else {
            return track.spans.end;
        };
        if page_high > high {
            return first;
        }
        let end = track.page_end(page);
        first + self.start_low[first..end].partition_point(|&l| l < low)
    }

    /// Bytes the columns hold on the heap.
    pub fn heap_bytes(&self) -> usize {
        let names: usize = self.names.iter().map(|n| n.capacity() + 24).sum();
        let pages: usize = self.tracks.iter().map(|t| t.pages.capacity() * 16).sum();
        names
            + pages
            + self.tracks.capacity() * std::mem::size_of::<SpanTrack>()
            + self.start_low.capacity() * 4
            + self.duration_ns.capacity() * 4
            + self.kind.capacity() * 4
            + self.long_ns.len() * 48
    }
}

/// Builds columns from spans pushed in (rank, start) order.
#[derive(Debug)]
pub struct ColumnsBuilder {
    columns: SpanColumns,
}

impl ColumnsBuilder {
    /// A builder for spans naming ops in `names`; `capacity` spans are expected.
    pub fn new(names: Vec<String>, capacity: usize) -> Result<ColumnsBuilder, ColumnsError> {
        if names.len() >= 1 << (32 - CATEGORY_BITS) {
            return Err(ColumnsError::TooManyNames(names.len()));
        }
        Ok(ColumnsBuilder {
            columns: SpanColumns {
                names,
                start_low: Vec::with_capacity(capacity),
                duration_ns: Vec::with_capacity(capacity),
                kind: Vec::with_capacity(capacity),
                ..SpanColumns::default()
            },
        })
    }

    /// Adds an op name; spans pushed after it may name it by the id returned.
    pub fn add_name(&mut self, name: String) -> Result<NameId, ColumnsError> {
        let names = &mut self.columns.names;
        if names.len() + 1 >= 1 << (32 - CATEGORY_BITS) {
            return Err(ColumnsError::TooManyNames(names.len() + 1));
        }
        names.push(name);
        Ok(NameId(names.len() as u32 - 1))
    }

    /// Adds the next span; it must not come before the last one in (rank, start) order.
    pub fn push(
        &mut self,
        rank: Rank,
        category: Category,
        name: NameId,
        start_ns: i64,
        duration_ns: u64,
    ) -> Result<(), ColumnsError> {
        let c = &mut self.columns;
        let index = c.start_low.len();
        if name.0 as usize >= c.names.len() {
            return Err(ColumnsError::UnknownName {
                index,
                name: name.0,
                names: c.names.len(),
            });
        }
        let (high, low) = split_start(start_ns);
        let out_of_order = || ColumnsError::OutOfOrder {
            index,
            rank: rank.0,
        };
        match c.tracks.last_mut() {
            Some(track) if track.rank == rank => {
                let last = c.start_low[index - 1];
                let last_high = track.pages.last().map_or(high, |p| p.1);
                if (high, low) < (last_high, last) {
                    return Err(out_of_order());
                }
                if high != last_high {
                    track.pages.push((index, high));
                }
                track.spans.end = index + 1;
                track.longest_ns = track.longest_ns.max(duration_ns);
            }
            Some(track) if track.rank > rank => return Err(out_of_order()),
            _ => c.tracks.push(SpanTrack {
                rank,
                spans: index..index + 1,
                longest_ns: duration_ns,
                pages: vec![(index, high)],
            }),
        }
        c.start_low.push(low);
        if duration_ns >= u64::from(LONG) {
            c.long_ns.insert(index, duration_ns);
            c.duration_ns.push(LONG);
        } else {
            c.duration_ns.push(duration_ns as u32);
        }
        c.kind
            .push(name.0 << CATEGORY_BITS | category_code(category));
        let end_ns = start_ns.saturating_add(i64::try_from(duration_ns).unwrap_or(i64::MAX));
        c.end_ns = c.end_ns.max(end_ns);
        Ok(())
    }

    pub fn finish(mut self) -> SpanColumns {
        let c = &mut self.columns;
        c.start_low.shrink_to_fit();
        c.duration_ns.shrink_to_fit();
        c.kind.shrink_to_fit();
        self.columns
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::TimedSpan;
    use pinch_traces::{Lane, NodeId, SpanAttrs};

    fn span(rank: u32, name: u32, start_ns: i64, duration_ns: u64) -> TimedSpan {
        TimedSpan {
            rank: Rank(rank),
            node: NodeId(0),
            lane: Lane(0),
            category: if name == 1 {
                Category::Communication
            } else {
                Category::Compute
            },
            name: NameId(name),
            start_ns,
            duration_ns,
            attrs: SpanAttrs::default(),
        }
    }

    fn timeline(spans: Vec<TimedSpan>) -> Timeline {
        let names = vec!["matmul".to_string(), "all_reduce".to_string()];
        Timeline::from_parts(0, names, spans, Vec::new())
    }

    #[test]
    fn every_span_reads_back_as_the_timeline_has_it() {
        let t = timeline(vec![
            span(0, 0, 5, 10),
            span(0, 1, 1 << 33, 7),
            span(0, 0, (1 << 33) + 3, 1 << 40),
            span(2, 1, 0, 4),
            span(2, 0, (1 << 32) - 1, 2),
            span(2, 0, 1 << 32, 2),
        ]);
        let c = SpanColumns::from_timeline(&t).unwrap();
        assert_eq!(c.len(), 6);
        let tracks = c.tracks();
        assert_eq!(tracks.len(), 2);
        assert_eq!((tracks[0].rank, tracks[0].spans.clone()), (Rank(0), 0..3));
        assert_eq!(tracks[0].longest_ns, 1 << 40);
        for (i, s) in t.spans.iter().enumerate() {
            let v = c.span(i).unwrap();
            let got = (v.rank, v.category, v.name, v.start_ns, v.duration_ns);
            assert_eq!(
                got,
                (s.rank, s.category, s.name, s.start_ns, s.duration_ns),
                "{i}"
            );
        }
        let walked: Vec<i64> = tracks
            .iter()
            .flat_map(|t| c.spans_of(t, t.spans.clone()).map(|v| v.start_ns))
            .collect();
        let expected: Vec<i64> = t.spans.iter().map(|s| s.start_ns).collect();
        assert_eq!(walked, expected);
        assert_eq!(c.span(6), None);
        assert_eq!(c.end_ns(), (1 << 33) + 3 + (1 << 40));
        assert_eq!(c.name(NameId(1)), "all_reduce");
    }

    #[test]
    fn the_first_span_at_a_time_is_found_across_pages() {
        let t = timeline(vec![
            span(1, 0, 10, 1),
            span(1, 0, 20, 1),
            span(1, 0, (1 << 32) + 5, 1),
            span(1, 0, (3 << 32) + 5, 1),
        ]);
        let c = SpanColumns::from_timeline(&t).unwrap();
        let track = &c.tracks()[0];
        let at = |ns: i64| c.first_starting_at(track, ns);
        assert_eq!(at(0), 0);
        assert_eq!(at(10), 0);
        assert_eq!(at(11), 1);
        assert_eq!(at(21), 2);
        assert_eq!(at(1 << 32), 2);
        assert_eq!(at((1 << 32) + 6), 3);
        assert_eq!(at(2 << 32), 3);
        assert_eq!(at(4 << 32), 4);
    }

    #[test]
    fn spans_out_of_order_or_naming_no_op_are_refused() {
        let mut b = ColumnsBuilder::new(vec!["x".into()], 2).unwrap();
        b.push(Rank(1), Category::Host, NameId(0), 10, 1).unwrap();
        let err = b
            .push(Rank(1), Category::Host, NameId(0), 9, 1)
            .unwrap_err();
        assert_eq!(err, ColumnsError::OutOfOrder { index: 1, rank: 1 });
        let err = b
            .push(Rank(0), Category::Host, NameId(0), 20, 1)
            .unwrap_err();
        assert_eq!(err, ColumnsError::OutOfOrder { index: 1, rank: 0 });
        let err = b
            .push(Rank(2), Category::Host, NameId(3), 20, 1)
            .unwrap_err();
        assert!(err.to_string().contains("op 3"), "{err}");
    }

    #[test]
    fn a_span_takes_twelve_bytes() {
        let spans = (0..10_000).map(|i| span(i / 1000, 0, i64::from(i) * 10, 5));
        let c = SpanColumns::from_timeline(&timeline(spans.collect())).unwrap();
        let per_span = c.heap_bytes() as f64 / c.len() as f64;
        assert!((12.0..12.5).contains(&per_span), "{per_span}");
    }
}
