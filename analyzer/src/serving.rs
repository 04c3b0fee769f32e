//! Serving metrics, with the definitions of vLLM's `benchmark_serving`: request and token
//! throughput, TTFT, TPOT, ITL and end-to-end latency, and goodput under a latency SLO.
//!
//! Each replica's leader records its requests on its own node's monotonic clock. Per-request
//! latencies are differences on one clock and need no alignment; the run's duration (first
//! arrival to last token, over every replica) is measured after mapping each node's times to
//! wall-clock time with the node's anchor, as the timeline does.
//!
//! Percentiles interpolate linearly between the two nearest ranks, as numpy's default (and so
//! vLLM's benchmark) does: the median of an even count is the mean of the middle two. The rest of
//! the report uses nearest-rank percentiles (`stats`); these follow vLLM so the numbers compare.

use crate::run::RunData;
use crate::timeline::node_anchor;
use pinch_traces::RequestRecord;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;

/// The workload parameter holding the SLO, e.g. `"ttft=200ms,tpot=50ms,e2e=2s"`.
pub const SLO_PARAMETER: &str = "slo";

/// Latency targets a request must all meet to count toward goodput; `None` sets no target.
#[derive(Clone, Debug, PartialEq)]
pub struct Slo {
    pub ttft_ms: Option<f64>,
    pub tpot_ms: Option<f64>,
    pub e2e_ms: Option<f64>,
}

#[derive(Debug, thiserror::Error)]
pub enum SloError {
    #[error("slo '{slo}' names no target; expected e.g. 'ttft=200ms,tpot=50ms,e2e=2s'")]
    Empty { slo: String },
    #[error("slo part '{part}' is not 'target=value'")]
    NotAPair { part: String },
    #[error("slo target '{target}' is unknown; known targets: ttft, tpot, e2e")]
    UnknownTarget { target: String },
    #[error("slo target '{target}' is given twice")]
    Repeated { target: String },
    #[error("slo value '{value}' is not a positive duration in us, ms or s")]
    BadValue { value: String },
}

impl Slo {
    /// Parses comma-separated `target=value` pairs; targets `ttft`, `tpot`, `e2e`, values a
    /// number with unit `us`, `ms` or `s` (`"ttft=200ms,tpot=50ms,e2e=2s"`).
    pub fn parse(s: &str) -> Result<Slo, SloError> {
        let mut slo = Slo {
            ttft_ms: None,
            tpot_ms: None,
            e2e_ms: None,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (target, value) = part.split_once('=').ok_or_else(|| SloError::NotAPair {
                part: part.to_string(),
            })?;
            let field = match target.trim() {
                "ttft" => &mut slo.ttft_ms,
                "tpot" => &mut slo.tpot_ms,
                "e2e" => &mut slo.e2e_ms,
                other => {
                    return Err(SloError::UnknownTarget {
                        target: other.to_string(),
                    });
                }
            };
            if field.is_some() {
                return Err(SloError::Repeated {
                    target: target.trim().to_string(),
                });
            }
            *field = Some(parse_ms(value.trim())?);
        }
        if slo.ttft_ms.is_none() && slo.tpot_ms.is_none() && slo.e2e_ms.is_none() {
            return Err(SloError::Empty { slo: s.to_string() });
        }
        Ok(slo)
    }

    /// Whether a request meets every target. Like vLLM, a request of one token meets any TPOT
    /// target (it has no time per output token); a request without a token meets none.
    pub fn is_met(&self, r: &RequestRecord) -> bool {
        let within = |target: Option<f64>, ns: Option<f64>| match (target, ns) {
            (None, _) => true,
            (Some(ms), Some(ns)) => ns / 1e6 <= ms,
            (Some(_), None) => false,
        };
        let tpot_ns = r.tpot_ns().or(r.ttft_ns().map(|_| 0.0));
        within(self.ttft_ms, r.ttft_ns().map(|ns| ns as f64))
            && within(self.tpot_ms, tpot_ns)
            && within(self.e2e_ms, r.e2e_ns().map(|ns| ns as f64))
    }
}

fn parse_ms(value: &str) -> Result<f64, SloError> {
    let bad = || SloError::BadValue {
        value: value.to_string(),
    };
    let (number, ms_per_unit) = if let Some(n) = value.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = value.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1e3)
    } else {
        return Err(bad());
    };
    let number: f64 = number.trim().parse().map_err(|_| bad())?;
    if number.is_finite() && number > 0.0 {
        Ok(number * ms_per_unit)
    } else {
        Err(bad())
    }
}

/// The form `parse` reads back, every value in milliseconds.
impl fmt::Display for Slo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            ("ttft", self.ttft_ms),
            ("tpot", self.tpot_ms),
            ("e2e", self.e2e_ms),
        ]
        .into_iter()
        .filter_map(|(name, ms)| ms.map(|ms| format!("{name}={ms}ms")))
        .collect();
        f.write_str(&parts.join(","))
    }
}

/// Mean and percentiles of one latency, milliseconds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub mean_ms: f64,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

impl LatencyStats {
    /// Over values in milliseconds; `None` for no values.
    pub fn from_ms(mut values: Vec<f64>) -> Option<LatencyStats> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        Some(LatencyStats {
            mean_ms: values.iter().sum::<f64>() / values.len() as f64,
            median_ms: percentile_linear(&values, 50.0),
            p90_ms: percentile_linear(&values, 90.0),
            p99_ms: percentile_linear(&values, 99.0),
        })
    }
}

/// numpy's default percentile of sorted, non-empty values: linear between the nearest ranks.
fn percentile_linear(sorted: &[f64], p: f64) -> f64 {
    let rank = p / 100.0 * (sorted.len() - 1) as f64;
    let (lo, hi) = (rank.floor() as usize, rank.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (rank - lo as f64)
}

/// The requests that met the SLO.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Goodput {
    /// The SLO, every target in milliseconds: `"ttft=200ms,tpot=50ms"`.
    pub slo: String,
    /// Requests that met every target.
    pub requests: usize,
    /// `requests` per second of the run's duration; `None` when the duration is unknown or 0.
    pub requests_per_s: Option<f64>,
    /// `requests` over all requests, 0 to 1.
    pub fraction: f64,
}

/// One replica's share of the requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaServing {
    pub replica: u32,
    pub requests: usize,
    pub output_tokens: u64,
}

/// The serving side of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServingReport {
    pub requests: usize,
    pub prompt_tokens: u64,
    pub output_tokens: u64,
    /// First arrival to last token over every replica, seconds; `None` without a token.
    pub duration_s: Option<f64>,
    pub request_throughput_per_s: Option<f64>,
    pub output_token_throughput_per_s: Option<f64>,
    pub total_token_throughput_per_s: Option<f64>,
    pub ttft: Option<LatencyStats>,
    pub tpot: Option<LatencyStats>,
    pub itl: Option<LatencyStats>,
    pub e2e: Option<LatencyStats>,
    pub goodput: Option<Goodput>,
    pub preemptions: u64,
    pub per_replica: Vec<ReplicaServing>,
    /// SHA-256, hex, over every request's (id, tokens) in id order.
    pub outputs_digest: String,
    /// Output tokens per second over the run's timeline; `None` where the report was made
    /// without one.
    #[serde(default)]
    pub output_rate: Option<OutputRate>,
}

/// A rate over time: equal bins from the timeline's origin to the run's last span end.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OutputRate {
    /// How long each bin is.
    pub bin_ns: u64,
    /// Output tokens per second in each bin; the last bin also counts tokens after the end.
    pub tokens_per_s: Vec<f64>,
}

/// How many bins `OutputRate` cuts a run into.
pub const OUTPUT_RATE_BINS: usize = 120;

impl OutputRate {
    /// The rate of tokens at `token_times_ns` (timeline ns) over a run ending at `end_ns`;
    /// `None` for a run that has not started.
    pub fn of(token_times_ns: impl IntoIterator<Item = i64>, end_ns: i64) -> Option<OutputRate> {
        let end_ns = u64::try_from(end_ns).ok().filter(|&e| e > 0)?;
        let bin_ns = end_ns.div_ceil(OUTPUT_RATE_BINS as u64);
        let mut counts = vec![0_u64; OUTPUT_RATE_BINS];
        for t in token_times_ns {
            if let Ok(t) = u64::try_from(t) {
                counts[((t / bin_ns) as usize).min(OUTPUT_RATE_BINS - 1)] += 1;
            }
        }
        let per_s = 1e9 / bin_ns as f64;
        Some(OutputRate {
            bin_ns,
            tokens_per_s: counts.iter().map(|&c| c as f64 * per_s).collect(),
        })
    }
}

/// The run's serving metrics; `None` when no request was recorded. The SLO comes from the
/// workload parameter `slo` when it holds one that parses.
pub fn serving_report(run: &RunData) -> Option<ServingReport> {
    let slo = run
        .manifest
        .workload
        .parameters
        .get(SLO_PARAMETER)
        .and_then(|v| v.as_str())
        .and_then(|s| Slo::parse(s).ok());
    let timed: Vec<TimedRequest> = run
        .nodes
        .iter()
        .flat_map(|node| {
            let anchor = node_anchor(node, &run.manifest);
            node.requests.iter().map(move |record| TimedRequest {
                record,
                arrival_wall_ns: anchor.to_wall_ns(record.arrival_ns),
                last_token_wall_ns: record.token_times_ns.last().map(|t| anchor.to_wall_ns(*t)),
            })
        })
        .collect();
    report_from_requests(&timed, slo.as_ref())
}

/// A request and its times on the common (wall-clock) time base.
#[derive(Clone, Copy, Debug)]
pub struct TimedRequest<'a> {
    pub record: &'a RequestRecord,
    pub arrival_wall_ns: i128,
    pub last_token_wall_ns: Option<i128>,
}

/// The metrics over requests already on one time base.
pub fn report_from_requests(
    requests: &[TimedRequest<'_>],
    slo: Option<&Slo>,
) -> Option<ServingReport> {
    if requests.is_empty() {
        return None;
    }
    let records: Vec<&RequestRecord> = requests.iter().map(|r| r.record).collect();
    let prompt_tokens: u64 = records.iter().map(|r| u64::from(r.prompt_tokens)).sum();
    let output_tokens: u64 = records.iter().map(|r| r.tokens.len() as u64).sum();
    let duration_s = duration_s(requests);
    let per_s = |count: f64| duration_s.filter(|d| *d > 0.0).map(|d| count / d);
    let ms = |ns: f64| ns / 1e6;
    Some(ServingReport {
        requests: records.len(),
        prompt_tokens,
        output_tokens,
        duration_s,
        request_throughput_per_s: per_s(records.len() as f64),
        output_token_throughput_per_s: per_s(output_tokens as f64),
        total_token_throughput_per_s: per_s((prompt_tokens + output_tokens) as f64),
        ttft: stats(&records, |r| {
            r.ttft_ns().map(|ns| ms(ns as f64)).into_iter().collect()
        }),
        tpot: stats(&records, |r| r.tpot_ns().map(ms).into_iter().collect()),
        itl: stats(&records, |r| r.itl_ns().map(|ns| ms(ns as f64)).collect()),
        e2e: stats(&records, |r| {
            r.e2e_ns().map(|ns| ms(ns as f64)).into_iter().collect()
        }),
        goodput: slo.map(|slo| goodput(slo, &records, duration_s)),
        preemptions: records.iter().map(|r| u64::from(r.preemptions)).sum(),
        per_replica: per_replica(&records),
        outputs_digest: outputs_digest(&records),
        output_rate: None,
    })
}

fn stats(
    records: &[&RequestRecord],
    values: impl Fn(&RequestRecord) -> Vec<f64>,
) -> Option<LatencyStats> {
    LatencyStats::from_ms(records.iter().flat_map(|r| values(r)).collect())
}

fn duration_s(requests: &[TimedRequest<'_>]) -> Option<f64> {
    let first_arrival = requests.iter().map(|r| r.arrival_wall_ns).min()?;
    let last_token = requests.iter().filter_map(|r| r.last_token_wall_ns).max()?;
    Some((last_token - first_arrival) as f64 / 1e9)
}

fn goodput(slo: &Slo, records: &[&RequestRecord], duration_s: Option<f64>) -> Goodput {
    let good = records.iter().filter(|r| slo.is_met(r)).count();
    Goodput {
        slo: slo.to_string(),
        requests: good,
        requests_per_s: duration_s.filter(|d| *d > 0.0).map(|d| good as f64 / d),
        fraction: good as f64 / records.len() as f64,
    }
}

fn per_replica(records: &[&RequestRecord]) -> Vec<ReplicaServing> {
    let mut replicas: BTreeMap<u32, ReplicaServing> = BTreeMap::new();
    for r in records {
        let entry = replicas.entry(r.replica).or_insert(ReplicaServing {
            replica: r.replica,
            requests: 0,
            output_tokens: 0,
        });
        entry.requests += 1;
        entry.output_tokens += r.tokens.len() as u64;
    }
    replicas.into_values().collect()
}

/// SHA-256 over each request's id, token count and tokens (little-endian), in id order: two runs
/// with the same digest generated the same tokens for the same requests, whatever the layout.
pub fn outputs_digest(records: &[&RequestRecord]) -> String {
    let mut sorted: Vec<&RequestRecord> = records.to_vec();
    sorted.sort_by_key(|r| (r.id, r.replica));
    let mut hasher = Sha256::new();
    for r in sorted {
        hasher.update(r.id.to_le_bytes());
        hasher.update((r.tokens.len() as u64).to_le_bytes());
        for t in &r.tokens {
            hasher.update(t.to_le_bytes());
        }
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit;
    use pinch_traces::ClockAnchor;

    const MS: u64 = 1_000_000;

    #[test]
    fn the_output_rate_counts_tokens_per_bin_per_second() {
        let end_ns = 120 * 500_000_000;
        let times = [0, 10, 1_500_000_000, 1_999_999_999, -5, end_ns + 7];
        let rate = OutputRate::of(times, end_ns).unwrap();
        assert_eq!(rate.bin_ns, 500_000_000);
        assert_eq!(rate.tokens_per_s.len(), OUTPUT_RATE_BINS);
        assert_eq!(rate.tokens_per_s[..4], [4.0, 0.0, 0.0, 4.0]);
        // Before the origin is left out; after the end counts in the last bin.
        assert_eq!(rate.tokens_per_s[OUTPUT_RATE_BINS - 1], 2.0);
        assert_eq!(OutputRate::of([1], 0), None);
    }

    fn record(
        id: u64,
        replica: u32,
        arrival_ms: u64,
        times_ms: &[u64],
        prompt: u32,
    ) -> RequestRecord {
        RequestRecord {
            id,
            replica,
            arrival_ns: arrival_ms * MS,
            scheduled_ns: None,
            token_times_ns: times_ms.iter().map(|t| t * MS).collect(),
            prompt_tokens: prompt,
            tokens: (0..times_ms.len() as u32)
                .map(|t| (id as u32 + 1) * 10 + t)
                .collect(),
            preemptions: 0,
        }
    }

    /// A: ttft 100, tpot 75, itl 50 and 100, e2e 250. B: one token, ttft = e2e = 200.
    /// C: ttft 300, tpot 20, itl 20 three times, e2e 360, preempted twice. All in ms.
    fn three() -> Vec<RequestRecord> {
        let mut c = record(2, 0, 100, &[400, 420, 440, 460], 5);
        c.preemptions = 2;
        vec![
            record(0, 0, 0, &[100, 150, 250], 10),
            record(1, 1, 50, &[250], 20),
            c,
        ]
    }

    fn on_one_clock(records: &[RequestRecord]) -> Vec<TimedRequest<'_>> {
        records
            .iter()
            .map(|record| TimedRequest {
                record,
                arrival_wall_ns: i128::from(record.arrival_ns),
                last_token_wall_ns: record.token_times_ns.last().map(|t| i128::from(*t)),
            })
            .collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    fn assert_stats(s: Option<&LatencyStats>, mean: f64, median: f64, p90: f64, p99: f64) {
        let s = s.expect("stats");
        let got = [s.mean_ms, s.median_ms, s.p90_ms, s.p99_ms];
        let want = [mean, median, p90, p99];
        assert!(
            got.iter().zip(want).all(|(g, w)| close(*g, w)),
            "{got:?} != {want:?}"
        );
    }

    #[test]
    fn counts_and_throughput_over_first_arrival_to_last_token() {
        let records = three();
        let r = report_from_requests(&on_one_clock(&records), None).expect("report");
        assert_eq!((r.requests, r.prompt_tokens, r.output_tokens), (3, 35, 8));
        assert!(close(r.duration_s.expect("duration"), 0.46));
        assert!(close(r.request_throughput_per_s.expect("rate"), 3.0 / 0.46));
        assert!(close(
            r.output_token_throughput_per_s.expect("rate"),
            8.0 / 0.46
        ));
        assert!(close(
            r.total_token_throughput_per_s.expect("rate"),
            43.0 / 0.46
        ));
        assert_eq!(r.preemptions, 2);
        assert_eq!(
            r.per_replica,
            vec![
                ReplicaServing {
                    replica: 0,
                    requests: 2,
                    output_tokens: 7
                },
                ReplicaServing {
                    replica: 1,
                    requests: 1,
                    output_tokens: 1
                },
            ]
        );
        assert_eq!(r.goodput, None);
    }

    #[test]
    fn latencies_follow_vllm_with_linear_percentiles() {
        let records = three();
        let r = report_from_requests(&on_one_clock(&records), None).expect("report");
        // TTFT 100, 200, 300: p90 at rank 1.8 is 200 + 0.8 * 100.
        assert_stats(r.ttft.as_ref(), 200.0, 200.0, 280.0, 298.0);
        // TPOT 20, 75 (B has one token and no TPOT): the median is their mean.
        assert_stats(r.tpot.as_ref(), 47.5, 47.5, 69.5, 74.45);
        // ITL 20, 20, 20, 50, 100: p90 at rank 3.6 is 50 + 0.6 * 50.
        assert_stats(r.itl.as_ref(), 42.0, 20.0, 80.0, 98.0);
        // E2E 200, 250, 360.
        assert_stats(r.e2e.as_ref(), 270.0, 250.0, 338.0, 357.8);
    }

    #[test]
    fn goodput_counts_requests_meeting_every_target() -> Result<(), SloError> {
        let records = three();
        let timed = on_one_clock(&records);
        // A misses TPOT (75 > 50), C misses TTFT (300 > 250), B has one token and meets TPOT.
        let slo = Slo::parse("ttft=250ms,tpot=50ms")?;
        let g = report_from_requests(&timed, Some(&slo))
            .and_then(|r| r.goodput)
            .expect("goodput");
        assert_eq!(g.slo, "ttft=250ms,tpot=50ms");
        assert_eq!(g.requests, 1);
        assert!(close(g.fraction, 1.0 / 3.0));
        assert!(close(g.requests_per_s.expect("rate"), 1.0 / 0.46));
        let e2e = Slo::parse("e2e=0.3s")?;
        let g = report_from_requests(&timed, Some(&e2e))
            .and_then(|r| r.goodput)
            .expect("goodput");
        assert_eq!(g.requests, 2);
        Ok(())
    }

    #[test]
    fn a_request_without_tokens_meets_no_slo() -> Result<(), SloError> {
        let slo = Slo::parse("e2e=1s")?;
        assert!(!slo.is_met(&record(0, 0, 0, &[], 1)));
        assert!(slo.is_met(&record(0, 0, 0, &[999], 1)));
        assert!(!slo.is_met(&record(0, 0, 0, &[1001], 1)));
        Ok(())
    }

    #[test]
    fn slo_strings_parse_with_units_and_print_back() -> Result<(), SloError> {
        let slo = Slo::parse("ttft=200ms, tpot=500us,e2e=2s")?;
        assert_eq!(slo.ttft_ms, Some(200.0));
        assert_eq!(slo.tpot_ms, Some(0.5));
        assert_eq!(slo.e2e_ms, Some(2000.0));
        assert_eq!(slo.to_string(), "ttft=200ms,tpot=0.5ms,e2e=2000ms");
        assert_eq!(Slo::parse(&slo.to_string())?, slo);
        Ok(())
    }

    #[test]
    fn bad_slo_strings_quote_the_bad_part() {
        for (s, quoted) in [
            ("", "''"),
            ("ttft", "'ttft'"),
            ("foo=1ms", "'foo'"),
            ("ttft=200", "'200'"),
            ("ttft=-1ms", "'-1ms'"),
            ("ttft=xms", "'xms'"),
            ("ttft=1ms,ttft=2ms", "'ttft'"),
        ] {
            let err = Slo::parse(s).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(quoted), "{s}: {err}");
        }
    }

    #[test]
    fn the_digest_depends_on_ids_and_tokens_not_on_order() {
        let records = three();
        let refs: Vec<&RequestRecord> = records.iter().collect();
        let digest = outputs_digest(&refs);
        // Python's hashlib.sha256 over the same bytes (struct "<QQ" then "<I" per token).
        assert_eq!(
            digest,
            "29137d0b6a37a3a7d5cbb484b0bd7000570cb9c1743f46ef30c558d659f1aa34"
        );
        let reversed: Vec<&RequestRecord> = records.iter().rev().collect();
        assert_eq!(outputs_digest(&reversed), digest);
        let mut changed = records.clone();
        changed[1].tokens[0] += 1;
        let changed_refs: Vec<&RequestRecord> = changed.iter().collect();
        assert_ne!(outputs_digest(&changed_refs), digest);
    }

    #[test]
    fn replicas_on_nodes_with_different_clocks_share_one_duration() {
        let mut run = testkit::run_data(&[&[0], &[1]]);
        let wall_ns = 1_700_000_000_000_000_000;
        run.nodes[0].anchor = Some(ClockAnchor {
            mono_ns: 1_000 * MS,
            wall_ns,
            read_uncertainty_ns: 0,
        });
        run.nodes[1].anchor = Some(ClockAnchor {
            mono_ns: 9_000 * MS,
            wall_ns,
            read_uncertainty_ns: 0,
        });
        // Node 0: arrives 10 ms after the anchor, last token at 110 ms. Node 1: arrives at 20 ms,
        // last token at 310 ms. Raw monotonic times would give a duration of about 8.3 s.
        run.nodes[0]
            .requests
            .push(record(0, 0, 1_010, &[1_060, 1_110], 4));
        run.nodes[1].requests.push(record(1, 1, 9_020, &[9_310], 4));
        run.manifest
            .workload
            .parameters
            .insert(SLO_PARAMETER.into(), "ttft=60ms".into());
        let r = serving_report(&run).expect("report");
        assert!(close(r.duration_s.expect("duration"), 0.3));
        let g = r.goodput.expect("goodput from the manifest's slo");
        assert_eq!(g.requests, 1, "node 0's ttft is 50 ms, node 1's 290 ms");
        assert_eq!(serving_report(&testkit::run_data(&[&[0]])), None);
    }
}
