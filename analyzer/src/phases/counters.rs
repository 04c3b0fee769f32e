//! Counter samples integrated over a phase's time.
//!
//! Every counter the phases read is a rate or a share measured over the interval that ends at its
//! sample (the collector differences two readings: CPU shares from /proc/stat ticks, interface
//! bytes per second from /proc/net/dev, NVML's utilization over its own sampling period). So a
//! sample's value holds from the previous sample of its series to its own time; the first sample
//! of a series is taken to cover one sampling period (the gap to the second). Over a set of
//! stretches, a series' mean is the time-weighted mean of the samples that overlap them, over
//! the time they cover; a stretch no sample covers contributes nothing, and with no overlap at all
//! the mean is unknown (`None`), never 0.

use crate::timeline::Series;

/// Sum of value × overlap (ns) and the overlap (ns) of one series with sorted, disjoint
/// stretches `[start, end)`; `None` when they do not overlap.
pub fn weighted(series: &Series, stretches: &[(i64, i64)]) -> Option<(f64, u64)> {
    let times = &series.times_ns;
    let (mut sum, mut covered_ns, mut first) = (0.0, 0u64, 0usize);
    for (i, (&t, &value)) in times.iter().zip(&series.values).enumerate() {
        let Some(from) = interval_start(times, i) else {
            continue;
        };
        if !value.is_finite() {
            continue;
        }
        // Stretches that end before this interval end before every later one too.
        first += stretches[first..].partition_point(|s| s.1 <= from);
        for &(start, end) in stretches[first..].iter().take_while(|s| s.0 < t) {
            let overlap = end.min(t).abs_diff(start.max(from));
            sum += value * overlap as f64;
            covered_ns += overlap;
        }
    }
    (covered_ns > 0).then_some((sum, covered_ns))
}

/// Where sample `i`'s interval starts: the previous sample, or for the first, one period back;
/// `None` for a series of one sample (no period to measure).
fn interval_start(times: &[i64], i: usize) -> Option<i64> {
    match i {
        0 => {
            let period = times.get(1)?.checked_sub(times[0])?;
            times[0].checked_sub(period)
        }
        _ => Some(times[i - 1]),
    }
}

/// The time-weighted mean of one series over the stretches.
pub fn mean(series: &Series, stretches: &[(i64, i64)]) -> Option<f64> {
    weighted(series, stretches).map(|(sum, ns)| sum / ns as f64)
}

/// The mean over several series (cores, GPUs) of each one's mean; `None` when none has one.
pub fn mean_of_means<'a>(
    series: impl Iterator<Item = &'a Series>,
    stretches: &[(i64, i64)],
) -> Option<f64> {
    let means: Vec<f64> = series.filter_map(|s| mean(s, stretches)).collect();
    (!means.is_empty()).then(|| means.iter().sum::<f64>() / means.len() as f64)
}

/// The sum over several series (interfaces) of each one's mean rate; `None` when none has one.
pub fn sum_of_means<'a>(
    series: impl Iterator<Item = &'a Series>,
    stretches: &[(i64, i64)],
) -> Option<f64> {
    series
        .filter_map(|s| mean(s, stretches))
        .reduce(|a, b| a + b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinch_traces::{NodeId, Unit};

    fn series(samples: &[(i64, f64)]) -> Series {
        Series {
            node: NodeId(0),
            counter: "cpu.utilization".into(),
            unit: Some(Unit::Percent),
            device: "cpu0".into(),
            times_ns: samples.iter().map(|s| s.0).collect(),
            values: samples.iter().map(|s| s.1).collect(),
        }
    }

    #[test]
    fn each_sample_holds_since_the_previous_one() {
        // Intervals: (0, 100] = 10, (100, 200] = 50, (200, 300] = 90.
        let s = series(&[(100, 10.0), (200, 50.0), (300, 90.0)]);
        assert_eq!(mean(&s, &[(0, 300)]), Some(50.0));
        // 50..100 at 10 and 100..150 at 50.
        assert_eq!(mean(&s, &[(50, 150)]), Some(30.0));
        // Two stretches: 150..200 at 50, 250..300 at 90.
        assert_eq!(mean(&s, &[(150, 200), (250, 300)]), Some(70.0));
        // A stretch inside one interval takes that sample's value.
        assert_eq!(mean(&s, &[(210, 220)]), Some(90.0));
    }

    #[test]
    fn time_no_sample_covers_is_unknown_not_zero() {
        let s = series(&[(100, 10.0), (200, 50.0)]);
        assert_eq!(mean(&s, &[(300, 400)]), None);
        assert_eq!(mean(&s, &[(-50, 0)]), None);
        // Half covered: the mean is over the covered half only.
        assert_eq!(mean(&s, &[(150, 250)]), Some(50.0));
        assert_eq!(mean(&series(&[(100, 10.0)]), &[(0, 200)]), None);
        assert_eq!(
            mean(&series(&[(100, f64::NAN), (200, 4.0)]), &[(0, 200)]),
            Some(4.0)
        );
    }

    #[test]
    fn several_series_average_or_add() {
        let a = series(&[(0, 10.0), (100, 10.0)]);
        let b = series(&[(0, 30.0), (100, 30.0)]);
        let both = [a, b];
        assert_eq!(mean_of_means(both.iter(), &[(0, 100)]), Some(20.0));
        assert_eq!(sum_of_means(both.iter(), &[(0, 100)]), Some(40.0));
        assert_eq!(sum_of_means(both.iter(), &[(500, 600)]), None);
    }
}
