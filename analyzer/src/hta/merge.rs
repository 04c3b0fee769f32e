//! HTA's merge of kernel intervals, kept exact so its sums come out the same.
//!
//! Sorted by start, an interval joins the group before it unless it starts after every end
//! seen so far; a group spans its first start to its latest end. With HTA's rounding a kernel
//! shorter than the microseconds it straddles ends before it starts; HTA keeps such inverted
//! intervals, and where one stands alone its group's length is negative and lowers the sums.

/// One `[start_ns, end_ns)` interval (inverted when `end_ns < start_ns`).
pub type Span = (i64, i64);

/// The groups of HTA's merge: sorted by start and disjoint.
pub fn merge(mut intervals: Vec<Span>) -> Vec<Span> {
    intervals.sort_unstable();
    let mut groups: Vec<Span> = Vec::with_capacity(intervals.len());
    let mut latest_end = i64::MIN;
    for (start, end) in intervals {
        match groups.last_mut() {
            Some(group) if start <= latest_end => group.1 = group.1.max(end),
            _ => groups.push((start, end)),
        }
        latest_end = latest_end.max(end);
    }
    groups
}

/// The summed length of the groups, as HTA sums it (inverted groups count negative).
/// Saturating, here and in the other sums: a crafted trace must not overflow them.
pub fn measure_ns(groups: &[Span]) -> i64 {
    groups.iter().fold(0i64, |sum, (start, end)| {
        sum.saturating_add(end.saturating_sub(*start))
    })
}

/// The groups that cover time, for sweeps that cannot take negative lengths.
pub fn proper(groups: &[Span]) -> Vec<Span> {
    groups.iter().copied().filter(|(s, e)| e > s).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touching_and_overlapping_intervals_join_one_group() {
        let groups = merge(vec![(10, 20), (0, 5), (5, 8), (15, 30), (40, 40)]);
        assert_eq!(groups, [(0, 8), (10, 30), (40, 40)]);
        assert_eq!(measure_ns(&groups), 28);
    }

    #[test]
    fn an_inverted_interval_alone_counts_negative() {
        let groups = merge(vec![(0, 10), (21, 20), (30, 35)]);
        assert_eq!(groups, [(0, 10), (21, 20), (30, 35)]);
        assert_eq!(measure_ns(&groups), 14);
        assert_eq!(proper(&groups), [(0, 10), (30, 35)]);
        // Inside another kernel it changes nothing.
        assert_eq!(merge(vec![(0, 10), (3, 2)]), [(0, 10)]);
    }
}
