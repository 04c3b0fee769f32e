//! Half-open time intervals `[start_ns, end_ns)`: unions and overlaps, so time covered by several
//! spans at once is counted once.

/// One interval, start then end, in nanoseconds on the timeline.
pub type Interval = (i64, i64);

/// The union of intervals: sorted, disjoint, non-empty intervals covering the same time.
pub fn union(mut intervals: Vec<Interval>) -> Vec<Interval> {
    intervals.retain(|(start, end)| end > start);
    intervals.sort_unstable();
    let mut merged: Vec<Interval> = Vec::with_capacity(intervals.len());
    for (start, end) in intervals {
        match merged.last_mut() {
            Some(last) if start <= last.1 => last.1 = last.1.max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
}

/// The time a union covers.
pub fn length_ns(union: &[Interval]) -> u64 {
    union.iter().map(|(s, e)| e.abs_diff(*s)).sum()
}

/// The time two unions (each sorted and disjoint) cover together.
pub fn overlap_ns(a: &[Interval], b: &[Interval]) -> u64 {
    let (mut i, mut j, mut total) = (0, 0, 0u64);
    while i < a.len() && j < b.len() {
        let start = a[i].0.max(b[j].0);
        let end = a[i].1.min(b[j].1);
        if end > start {
            total += end.abs_diff(start);
        }
        if a[i].1 < b[j].1 {
            i += 1;
        } else {
            j += 1;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn union_merges_overlapping_and_touching_intervals() {
        let u = union(vec![(10, 20), (0, 5), (5, 8), (15, 30), (40, 40)]);
        assert_eq!(u, vec![(0, 8), (10, 30)]);
        assert_eq!(length_ns(&u), 28);
    }

    #[test]
    fn overlap_counts_shared_time_once() {
        let a = union(vec![(0, 10), (20, 30)]);
        let b = union(vec![(5, 25), (28, 100)]);
        assert_eq!(overlap_ns(&a, &b), 5 + 5 + 2);
        assert_eq!(overlap_ns(&a, &[]), 0);
    }
}
