//! Small statistics over durations: nearest-rank percentiles and safe ratios.

/// The nearest-rank percentile `p` (0..=100) of sorted values; `None` for no values.
/// The median (p = 50) of an even count is the lower of the two middle values.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// The median of unsorted values.
pub fn median(mut values: Vec<u64>) -> Option<u64> {
    values.sort_unstable();
    percentile(&values, 50.0)
}

/// `part / whole * 100`, or `None` when `whole` is zero.
pub fn pct(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| part / whole * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<u64> = (1..=10).collect();
        assert_eq!(percentile(&v, 50.0), Some(5));
        assert_eq!(percentile(&v, 90.0), Some(9));
        assert_eq!(percentile(&v, 100.0), Some(10));
        assert_eq!(percentile(&v, 0.0), Some(1));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(median(vec![7, 1, 3]), Some(3));
    }

    #[test]
    fn pct_of_nothing_is_unknown() {
        assert_eq!(pct(1.0, 4.0), Some(25.0));
        assert_eq!(pct(1.0, 0.0), None);
    }
}
