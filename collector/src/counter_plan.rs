//! Which counter sources an agent reads, and how often each: `--counters procfs=1000,perf=100`.
//!
//! A source left out is not read (the manifest says so); a source named without a rate is read at
//! the run's default rate (`--sample-hz`); `none` reads no counters at all (spans only).

use crate::sampler::{SampleRate, SampleRateError};
use std::fmt;

/// Every counter source an agent knows, in the order they are opened.
pub const SOURCE_NAMES: [&str; 4] = ["procfs", "perf", "nvml", "infiniband"];

/// The sources to read, each with its rate, in `SOURCE_NAMES` order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CounterPlan {
    sources: Vec<(&'static str, SampleRate)>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CounterPlanError {
    #[error("counter source '{0}' is unknown (known: procfs, perf, nvml, infiniband, or none)")]
    UnknownSource(String),
    #[error("counter source '{0}' is named twice")]
    Repeated(String),
    #[error("counter source '{source_name}': {error}")]
    Rate {
        source_name: String,
        error: SampleRateError,
    },
    #[error("counter list '{0}' is empty; say 'none' to read no counters")]
    Empty(String),
}

impl CounterPlan {
    /// Every source at `rate`.
    pub fn all(rate: SampleRate) -> CounterPlan {
        CounterPlan {
            sources: SOURCE_NAMES.iter().map(|&name| (name, rate)).collect(),
        }
    }

    /// No counters: spans only.
    pub fn none() -> CounterPlan {
        CounterPlan {
            sources: Vec::new(),
        }
    }

    /// Parses `none` or `source[=rate],...`; a source without a rate gets `default_rate`.
    pub fn parse(spec: &str, default_rate: SampleRate) -> Result<CounterPlan, CounterPlanError> {
        let trimmed = spec.trim();
        if trimmed == "none" {
            return Ok(CounterPlan::none());
        }
        let mut sources: Vec<(&'static str, SampleRate)> = Vec::new();
        for item in trimmed.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (name, rate) = match item.split_once('=') {
                Some((name, rate)) => (name.trim(), Some(rate)),
                None => (item, None),
            };
            let known = SOURCE_NAMES
                .iter()
                .find(|&&known| known == name)
                .ok_or_else(|| CounterPlanError::UnknownSource(name.to_string()))?;
            if sources.iter().any(|(n, _)| n == known) {
                return Err(CounterPlanError::Repeated(name.to_string()));
            }
            let rate = match rate {
                Some(rate) => rate.parse().map_err(|error| CounterPlanError::Rate {
                    source_name: name.to_string(),
                    error,
                })?,
                None => default_rate,
            };
            sources.push((known, rate));
        }
        if sources.is_empty() {
            return Err(CounterPlanError::Empty(spec.to_string()));
        }
        sources.sort_by_key(|(name, _)| SOURCE_NAMES.iter().position(|n| n == name));
        Ok(CounterPlan { sources })
    }

    /// The rate of `source`, or `None` when it is not to be read.
    pub fn rate(&self, source: &str) -> Option<SampleRate> {
        self.sources
            .iter()
            .find(|(name, _)| *name == source)
            .map(|(_, rate)| *rate)
    }

    pub fn is_none(&self) -> bool {
        self.sources.is_empty()
    }

    /// The sources to read with their rates.
    pub fn sources(&self) -> &[(&'static str, SampleRate)] {
        &self.sources
    }
}

impl fmt::Display for CounterPlan {
    /// The spec `parse` reads back: `procfs=100,perf=100` or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sources.is_empty() {
            return f.write_str("none");
        }
        let items: Vec<String> = self
            .sources
            .iter()
            .map(|(name, rate)| format!("{name}={}", rate.hz()))
            .collect();
        f.write_str(&items.join(","))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hz(n: u32) -> SampleRate {
        SampleRate::new(n).unwrap()
    }

    #[test]
    fn sources_with_and_without_rates_in_a_fixed_order() {
        let plan = CounterPlan::parse("perf=100, procfs=1000Hz,nvml", hz(10)).unwrap();
        assert_eq!(
            plan.sources(),
            &[("procfs", hz(1000)), ("perf", hz(100)), ("nvml", hz(10))]
        );
        assert_eq!(plan.rate("infiniband"), None);
        assert_eq!(plan.to_string(), "procfs=1000,perf=100,nvml=10");
        assert_eq!(CounterPlan::parse(&plan.to_string(), hz(1)).unwrap(), plan);
    }

    #[test]
    fn none_and_all() {
        assert!(CounterPlan::parse("none", hz(10)).unwrap().is_none());
        assert_eq!(CounterPlan::none().to_string(), "none");
        let all = CounterPlan::all(hz(50));
        assert_eq!(all.sources().len(), SOURCE_NAMES.len());
        assert_eq!(all.rate("nvml"), Some(hz(50)));
    }

    #[test]
    fn bad_specs_name_the_bad_part() {
        let err = |spec: &str| CounterPlan::parse(spec, hz(10)).unwrap_err().to_string();
        assert_eq!(
            err("procfs,gpu=10"),
            "counter source 'gpu' is unknown (known: procfs, perf, nvml, infiniband, or none)"
        );
        assert_eq!(err("perf,perf=5"), "counter source 'perf' is named twice");
        assert_eq!(
            err("procfs=5000"),
            "counter source 'procfs': sample rate '5000' Hz is out of range 1..=1000"
        );
        assert_eq!(
            err("perf=fast"),
            "counter source 'perf': sample rate 'fast' is not a whole number of Hz"
        );
        assert_eq!(
            err(" , "),
            "counter list ' , ' is empty; say 'none' to read no counters"
        );
    }
}
