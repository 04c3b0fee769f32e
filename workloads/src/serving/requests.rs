//! The request stream: how many requests, when they arrive, and how long their prompts and
//! outputs are, all drawn from a seed.
//!
//! Request `i` draws its lengths and prompt tokens from ChaCha8 stream `2i` of the seed and its
//! Poisson inter-arrival gap from stream `2i + 1`, so a request depends only on `(seed, i)`: every
//! layout (TP, DP, policy) and both arrival modes see the very same requests, and a run with more
//! requests starts with the requests of a shorter one.

use super::ServingError;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, LogNormal};
use serde::{Deserialize, Serialize};
use std::fmt;

/// How prompt or output lengths are distributed, in tokens. Every drawn length is at least 1.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum LengthDist {
    /// Always this length.
    Fixed(usize),
    /// Uniform over `min..=max`.
    Uniform { min: usize, max: usize },
    /// Log-normal around `median` with shape `sigma`, rounded, then clamped to `1..=max`; with
    /// median 200 and sigma 0.8 it has the long right tail of ShareGPT's conversations.
    LogNormal { median: f64, sigma: f64, max: usize },
}

impl LengthDist {
    /// Parses `"64"`, `"uniform:32-128"` or `"lognormal:200,0.8,1024"` (median, sigma, max).
    pub fn parse(s: &str) -> Result<LengthDist, ServingError> {
        let bad = |problem: &str| ServingError::BadLength {
            spec: s.to_string(),
            problem: problem.to_string(),
        };
        let dist = match s.split_once(':') {
            None => LengthDist::Fixed(parse_num(s).ok_or_else(|| bad("not a token count"))?),
            Some(("uniform", range)) => {
                let (min, max) = range
                    .split_once('-')
                    .ok_or_else(|| bad("expected 'uniform:MIN-MAX'"))?;
                LengthDist::Uniform {
                    min: parse_num(min).ok_or_else(|| bad("the minimum is not a token count"))?,
                    max: parse_num(max).ok_or_else(|| bad("the maximum is not a token count"))?,
                }
            }
            Some(("lognormal", args)) => parse_lognormal(args).ok_or_else(|| {
                bad("expected 'lognormal:MEDIAN,SIGMA,MAX', e.g. 'lognormal:200,0.8,1024'")
            })?,
            Some((kind, _)) => {
                return Err(bad(&format!(
                    "kind '{kind}' is unknown; known kinds: uniform, lognormal"
                )));
            }
        };
        dist.check().map_err(|problem| bad(&problem))?;
        Ok(dist)
    }

    /// The longest length this distribution can draw.
    pub fn max(&self) -> usize {
        match self {
            LengthDist::Fixed(n) => *n,
            LengthDist::Uniform { max, .. } | LengthDist::LogNormal { max, .. } => *max,
        }
    }

    /// Whether every drawn length will be at least 1; the problem otherwise.
    fn check(&self) -> Result<(), String> {
        match self {
            LengthDist::Fixed(0) => Err("a length must be at least 1".into()),
            LengthDist::Uniform { min, max } if *min == 0 || min > max => {
                Err("the range must satisfy 1 <= min <= max".into())
            }
            LengthDist::LogNormal { median, sigma, max } => {
                if !(median.is_finite() && *median > 0.0) {
                    Err("the median must be a positive number".into())
                } else if !(sigma.is_finite() && *sigma >= 0.0) {
                    Err("sigma must be a number >= 0".into())
                } else if *max == 0 {
                    Err("the maximum must be at least 1".into())
                } else {
                    Ok(())
                }
            }
            _ => Ok(()),
        }
    }

    /// Draws one length; a distribution that fails `check` draws its nearest valid length.
    fn sample(&self, rng: &mut ChaCha8Rng) -> usize {
        match *self {
            LengthDist::Fixed(n) => n.max(1),
            LengthDist::Uniform { min, max } => rng.random_range(min.max(1)..=max.max(min).max(1)),
            LengthDist::LogNormal { median, sigma, max } => {
                let drawn = LogNormal::new(median.ln(), sigma).map_or(median, |d| d.sample(rng));
                // `as` saturates: NaN becomes 0 and a huge draw usize::MAX, both then clamped.
                (drawn.round() as usize).clamp(1, max.max(1))
            }
        }
    }
}

fn parse_num<T: std::str::FromStr>(s: &str) -> Option<T> {
    s.trim().parse().ok()
}

fn parse_lognormal(args: &str) -> Option<LengthDist> {
    let mut parts = args.split(',');
    let dist = LengthDist::LogNormal {
        median: parse_num(parts.next()?)?,
        sigma: parse_num(parts.next()?)?,
        max: parse_num(parts.next()?)?,
    };
    parts.next().is_none().then_some(dist)
}

/// The form `parse` reads back.
impl fmt::Display for LengthDist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LengthDist::Fixed(n) => write!(f, "{n}"),
            LengthDist::Uniform { min, max } => write!(f, "uniform:{min}-{max}"),
            LengthDist::LogNormal { median, sigma, max } => {
                write!(f, "lognormal:{median},{sigma},{max}")
            }
        }
    }
}

/// When requests reach the router.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Arrivals {
    /// Open loop: exponential inter-arrival gaps at this mean rate.
    Poisson { rate_per_s: f64 },
    /// Closed loop: this many requests outstanding at any time.
    Concurrency(usize),
}

impl Arrivals {
    /// Parses `"poisson:4.5"` (requests per second) or `"concurrency:8"`.
    pub fn parse(s: &str) -> Result<Arrivals, ServingError> {
        let bad = |problem: &str| ServingError::BadArrivals {
            spec: s.to_string(),
            problem: problem.to_string(),
        };
        let arrivals = match s.split_once(':') {
            Some(("poisson", rate)) => Arrivals::Poisson {
                rate_per_s: parse_num(rate).ok_or_else(|| bad("the rate is not a number"))?,
            },
            Some(("concurrency", c)) => Arrivals::Concurrency(
                parse_num(c).ok_or_else(|| bad("the concurrency is not a count"))?,
            ),
            _ => return Err(bad("expected 'poisson:RATE_PER_S' or 'concurrency:N'")),
        };
        arrivals.check()?;
        Ok(arrivals)
    }

    fn check(&self) -> Result<(), ServingError> {
        match *self {
            Arrivals::Poisson { rate_per_s } if !(rate_per_s.is_finite() && rate_per_s > 0.0) => {
                Err(ServingError::BadRate { rate_per_s })
            }
            Arrivals::Concurrency(0) => Err(ServingError::ZeroSetting {
                what: "concurrency",
            }),
            _ => Ok(()),
        }
    }
}

/// The form `parse` reads back.
impl fmt::Display for Arrivals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Arrivals::Poisson { rate_per_s } => write!(f, "poisson:{rate_per_s}"),
            Arrivals::Concurrency(c) => write!(f, "concurrency:{c}"),
        }
    }
}

/// Everything that shapes a run's request stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RequestWorkload {
    pub requests: usize,
    pub arrivals: Arrivals,
    pub prompt_len: LengthDist,
    pub output_len: LengthDist,
    pub seed: u64,
    /// Prompt tokens are drawn uniformly from `0..vocab`.
    pub vocab: usize,
}

impl RequestWorkload {
    /// Checks every field; `generate` assumes a workload that passed.
    pub fn validate(&self) -> Result<(), ServingError> {
        if self.requests == 0 {
            return Err(ServingError::ZeroSetting { what: "requests" });
        }
        if self.vocab == 0 {
            return Err(ServingError::ZeroSetting { what: "vocab" });
        }
        self.arrivals.check()?;
        for dist in [&self.prompt_len, &self.output_len] {
            dist.check().map_err(|problem| ServingError::BadLength {
                spec: dist.to_string(),
                problem,
            })?;
        }
        Ok(())
    }
}

/// One request of the stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestSpec {
    pub id: u64,
    /// Poisson: when the router releases it, from the stream's start; Concurrency: 0.
    pub arrival_offset_ns: u64,
    pub prompt: Vec<u32>,
    /// Tokens to generate.
    pub output_len: usize,
}

/// The request stream of a workload, in id order (which is also arrival order). As with vLLM's
/// benchmark, request 0 arrives at offset 0 and request `i` one exponential gap after `i - 1`.
/// Call `RequestWorkload::validate` first: an invalid field is read as its nearest valid value
/// (a vocab of 0 as 1, a bad Poisson rate as every request at offset 0).
pub fn generate(w: &RequestWorkload) -> Vec<RequestSpec> {
    let gaps = match w.arrivals {
        Arrivals::Poisson { rate_per_s } => Exp::new(rate_per_s * 1e-9).ok(),
        Arrivals::Concurrency(_) => None,
    };
    let mut offset_ns = 0u64;
    (0..w.requests as u64)
        .map(|id| {
            let spec = request(w, id, offset_ns);
            if let Some(gap) = &gaps {
                let gap_ns: f64 = gap.sample(&mut stream(w.seed, 2 * id + 1));
                offset_ns = offset_ns.saturating_add(gap_ns.round() as u64);
            }
            spec
        })
        .collect()
}

fn request(w: &RequestWorkload, id: u64, arrival_offset_ns: u64) -> RequestSpec {
    let mut rng = stream(w.seed, 2 * id);
    let prompt_len = w.prompt_len.sample(&mut rng);
    let output_len = w.output_len.sample(&mut rng);
    let vocab = u32::try_from(w.vocab.max(1)).unwrap_or(u32::MAX);
    RequestSpec {
        id,
        arrival_offset_ns,
        prompt: (0..prompt_len)
            .map(|_| rng.random_range(0..vocab))
            .collect(),
        output_len,
    }
}

fn stream(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workload(requests: usize, arrivals: Arrivals) -> RequestWorkload {
        RequestWorkload {
            requests,
            arrivals,
            prompt_len: LengthDist::Uniform { min: 4, max: 40 },
            output_len: LengthDist::LogNormal {
                median: 20.0,
                sigma: 0.8,
                max: 64,
            },
            seed: 7,
            vocab: 100,
        }
    }

    #[test]
    fn length_specs_parse_and_print_back() -> Result<(), ServingError> {
        for s in ["64", "uniform:32-128", "lognormal:200,0.8,1024"] {
            assert_eq!(LengthDist::parse(s)?.to_string(), s);
        }
        assert_eq!(LengthDist::parse("64")?, LengthDist::Fixed(64));
        assert_eq!(
            LengthDist::parse("uniform:32-128")?,
            LengthDist::Uniform { min: 32, max: 128 }
        );
        assert_eq!(LengthDist::parse("lognormal:200,0.8,1024")?.max(), 1024);
        Ok(())
    }

    #[test]
    fn bad_length_specs_are_refused_and_quoted() {
        for s in [
            "0",
            "x",
            "uniform:0-4",
            "uniform:9-4",
            "uniform:4",
            "lognormal:200,0.8",
            "lognormal:-1,0.8,10",
            "lognormal:200,-1,10",
            "lognormal:200,0.8,0",
            "lognormal:200,0.8,10,4",
            "zipf:3",
        ] {
            let err = LengthDist::parse(s).map(|_| ()).unwrap_err().to_string();
            assert!(err.contains(&format!("'{s}'")), "{err}");
        }
    }

    #[test]
    fn arrivals_parse_and_refuse_nonsense() -> Result<(), ServingError> {
        assert_eq!(
            Arrivals::parse("poisson:4.5")?,
            Arrivals::Poisson { rate_per_s: 4.5 }
        );
        assert_eq!(Arrivals::parse("concurrency:8")?, Arrivals::Concurrency(8));
        assert_eq!(
            Arrivals::parse("concurrency:8")?.to_string(),
            "concurrency:8"
        );
        for s in [
            "poisson:0",
            "poisson:-2",
            "poisson:inf",
            "concurrency:0",
            "burst:3",
        ] {
            assert!(Arrivals::parse(s).is_err(), "{s}");
        }
        Ok(())
    }

    #[test]
    fn generation_is_seeded_and_lengths_stay_in_range() {
        let w = workload(200, Arrivals::Concurrency(4));
        let a = generate(&w);
        assert_eq!(a, generate(&w));
        assert_eq!(a.len(), 200);
        for (i, r) in a.iter().enumerate() {
            assert_eq!(r.id, i as u64);
            assert_eq!(r.arrival_offset_ns, 0);
            assert!((4..=40).contains(&r.prompt.len()), "{}", r.prompt.len());
            assert!((1..=64).contains(&r.output_len), "{}", r.output_len);
            assert!(r.prompt.iter().all(|t| *t < 100));
        }
        let other = generate(&RequestWorkload { seed: 8, ..w });
        assert_ne!(a, other);
    }

    #[test]
    fn a_request_depends_only_on_the_seed_and_its_index() {
        let closed = generate(&workload(50, Arrivals::Concurrency(2)));
        let open = generate(&workload(80, Arrivals::Poisson { rate_per_s: 3.0 }));
        for (c, o) in closed.iter().zip(&open) {
            assert_eq!(
                (c.id, &c.prompt, c.output_len),
                (o.id, &o.prompt, o.output_len)
            );
        }
        let shorter = generate(&workload(10, Arrivals::Poisson { rate_per_s: 3.0 }));
        assert_eq!(shorter[..], open[..10]);
    }

    #[test]
    fn poisson_offsets_start_at_zero_rise_and_match_the_rate() {
        let rate_per_s = 50.0;
        let n = 4000;
        let reqs = generate(&workload(n, Arrivals::Poisson { rate_per_s }));
        assert_eq!(reqs[0].arrival_offset_ns, 0);
        assert!(
            reqs.windows(2)
                .all(|w| w[0].arrival_offset_ns <= w[1].arrival_offset_ns)
        );
        // The mean gap of 3999 exponential draws is within a few percent of 1 / rate.
        let mean_gap_s = reqs[n - 1].arrival_offset_ns as f64 / 1e9 / (n - 1) as f64;
        assert!((mean_gap_s * rate_per_s - 1.0).abs() < 0.05, "{mean_gap_s}");
    }

    #[test]
    fn lognormal_lengths_center_on_the_median_and_respect_the_cap() {
        let dist = LengthDist::LogNormal {
            median: 200.0,
            sigma: 0.8,
            max: 1024,
        };
        let mut rng = stream(1, 0);
        let mut draws: Vec<usize> = (0..4001).map(|_| dist.sample(&mut rng)).collect();
        draws.sort_unstable();
        let median = draws[2000];
        assert!((180..=220).contains(&median), "{median}");
        assert!(draws.iter().all(|d| (1..=1024).contains(d)));
        assert_eq!(draws[4000], 1024, "the tail reaches the cap");
    }

    #[test]
    fn validate_names_the_bad_field() {
        let mut w = workload(1, Arrivals::Concurrency(1));
        assert!(w.validate().is_ok());
        w.vocab = 0;
        assert!(
            w.validate()
                .map(|_| ())
                .unwrap_err()
                .to_string()
                .contains("vocab")
        );
        w.vocab = 5;
        w.output_len = LengthDist::Fixed(0);
        assert!(w.validate().is_err());
        w.output_len = LengthDist::Fixed(1);
        w.arrivals = Arrivals::Poisson {
            rate_per_s: f64::NAN,
        };
        assert!(w.validate().is_err());
    }
}
