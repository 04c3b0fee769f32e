//! Validates workload flags into the workloads crate's `ServeConfig`, before any work starts:
//! every bad value becomes one line naming it (exit code 2).

use crate::cli::WorkloadArgs;
use crate::exit::bad_input;
use pinch_kernels::Storage;
use pinch_workloads::engine::{AllReduceChoice, Faults, LinkFault, ServeConfig};
use pinch_workloads::layout::Layout;
use pinch_workloads::serving::{Arrivals, LengthDist, RequestWorkload, RoutePolicy};
use pinch_workloads::weights::check_checkpoint;
use pinch_workloads::{ModelConfig, from_hf_config, preset};

/// Bytes of memory a run may plan to use for weights, as a share of this machine's memory.
const MEMORY_SHARE: f64 = 0.75;

/// The serving run the flags describe on `nodes` nodes, or a one-line error naming the bad value.
pub fn serve_config(args: &WorkloadArgs, nodes: usize) -> anyhow::Result<ServeConfig> {
    let model = model(args)?;
    if let Some(dir) = &args.weights {
        check_checkpoint(dir, &model).map_err(bad_input)?;
    }
    let layout = match &args.parallel {
        Some(text) => Layout::parse(text).map_err(bad_input)?,
        None => Layout::tensor(nodes),
    };
    check_layout(&model, &layout, nodes)?;
    let storage = match &args.dtype {
        Some(text) => Storage::parse(text)
            .ok_or_else(|| bad_input(format!("dtype '{text}' is not f32 or bf16")))?,
        None => model.storage,
    };
    check_memory(&model, storage, &layout)?;
    let requests = request_workload(args, &model)?;
    let longest = requests.prompt_len.max() + requests.output_len.max();
    if longest > model.max_seq {
        return Err(bad_input(format!(
            "the longest request ({} prompt + {} output tokens) exceeds the maximum sequence \
             length {} of model '{}'",
            requests.prompt_len.max(),
            requests.output_len.max(),
            model.max_seq,
            model.name
        )));
    }
    positive("block size", args.block_size)?;
    positive("max sequences", args.max_seqs)?;
    positive("max batch tokens", args.max_batch_tokens)?;
    positive("micro-batch count", args.micro_batches)?;
    positive("thread count", args.threads)?;
    let blocks_per_request = longest.div_ceil(args.block_size);
    let kv_blocks = match args.kv_blocks {
        Some(blocks) if blocks < blocks_per_request => {
            return Err(bad_input(format!(
                "kv blocks '{blocks}' cannot hold the longest request ({longest} positions need \
                 {blocks_per_request} blocks of {})",
                args.block_size
            )));
        }
        Some(blocks) => blocks,
        None => blocks_per_request * args.max_seqs,
    };
    let config = ServeConfig {
        route: route(&args.route)?,
        all_reduce: all_reduce(&args.all_reduce)?,
        faults: faults(args, &layout, &model)?,
        capacity_factor: capacity(args.capacity_factor)?,
        model,
        weights_dir: args.weights.clone(),
        storage,
        layout,
        seed: args.seed,
        requests,
        block_size: args.block_size,
        kv_blocks,
        max_seqs: args.max_seqs,
        max_batch_tokens: args.max_batch_tokens,
        chunked_prefill: args.chunked_prefill,
        micro_batches: args.micro_batches,
        threads: args.threads,
        shm: !args.no_shm,
    };
    Ok(config)
}

fn model(args: &WorkloadArgs) -> anyhow::Result<ModelConfig> {
    let model = match &args.model_config {
        Some(path) => from_hf_config(path).map_err(bad_input)?,
        None => preset(&args.model).map_err(bad_input)?,
    };
    model.validate().map_err(bad_input)?;
    Ok(model)
}

fn check_layout(model: &ModelConfig, layout: &Layout, nodes: usize) -> anyhow::Result<()> {
    model.validate_tp(layout.tp).map_err(bad_input)?;
    model.validate_pp(layout.pp).map_err(bad_input)?;
    if layout.ep > 1 {
        model.validate_ep(layout.ep).map_err(bad_input)?;
    }
    layout.check_nodes(nodes).map_err(bad_input)
}

/// Refuses a model whose weights would not fit this machine (the published shapes are configs
/// for GPU nodes).
fn check_memory(model: &ModelConfig, storage: Storage, layout: &Layout) -> anyhow::Result<()> {
    let Some(total_bytes) = memory_bytes() else {
        return Ok(());
    };
    let per_replica = model.weight_bytes(storage) as f64;
    let planned = per_replica * layout.dp as f64;
    if planned > total_bytes as f64 * MEMORY_SHARE {
        return Err(bad_input(format!(
            "model '{}' needs {:.1} GB of {} weights per replica ({} replica(s)), more than this \
             machine's {:.1} GB of memory can hold; pick a smaller preset (see `pinch presets`)",
            model.name,
            per_replica / 1e9,
            storage.name(),
            layout.dp,
            total_bytes as f64 / 1e9
        )));
    }
    Ok(())
}

fn memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn request_workload(args: &WorkloadArgs, model: &ModelConfig) -> anyhow::Result<RequestWorkload> {
    positive("request count", args.requests)?;
    let arrivals = match (args.rate, args.concurrency) {
        (Some(rate), _) if !(rate.is_finite() && rate > 0.0) => {
            return Err(bad_input(format!("request rate '{rate}' must be above 0")));
        }
        (Some(rate), _) => Arrivals::Poisson { rate_per_s: rate },
        (None, Some(0)) => return Err(bad_input("concurrency '0' must be at least 1")),
        (None, Some(c)) => Arrivals::Concurrency(c),
        (None, None) => Arrivals::Concurrency(args.max_seqs.max(1)),
    };
    Ok(RequestWorkload {
        requests: args.requests,
        arrivals,
        prompt_len: LengthDist::parse(&args.prompt_len).map_err(bad_input)?,
        output_len: LengthDist::parse(&args.output_len).map_err(bad_input)?,
        seed: args.seed,
        vocab: model.vocab,
    })
}

fn positive(what: &str, value: usize) -> anyhow::Result<()> {
    if value == 0 {
        return Err(bad_input(format!("{what} '0' must be at least 1")));
    }
    Ok(())
}

fn route(text: &str) -> anyhow::Result<RoutePolicy> {
    RoutePolicy::parse(text).map_err(bad_input)
}

fn all_reduce(text: &str) -> anyhow::Result<AllReduceChoice> {
    match text {
        "auto" => Ok(AllReduceChoice::Auto),
        "ring" => Ok(AllReduceChoice::Ring),
        "one-shot" => Ok(AllReduceChoice::OneShot),
        _ => Err(bad_input(format!(
            "all-reduce algorithm '{text}' is not auto, ring or one-shot"
        ))),
    }
}

fn capacity(factor: Option<f32>) -> anyhow::Result<Option<f32>> {
    match factor {
        Some(f) if !(f.is_finite() && f > 0.0) => {
            Err(bad_input(format!("capacity factor '{f}' must be above 0")))
        }
        other => Ok(other),
    }
}

/// The injected faults, each checked against the layout (a rank must exist, a link must join
/// two different ranks).
fn faults(args: &WorkloadArgs, layout: &Layout, model: &ModelConfig) -> anyhow::Result<Faults> {
    let world = layout.world();
    let mut faults = Faults::default();
    if let Some(text) = &args.slow_rank {
        let (rank, factor) = split_eq(text, "slow rank", "RANK=FACTOR")?;
        let rank = rank_in(rank, world, "slow rank")?;
        let factor: f64 = factor
            .parse()
            .ok()
            .filter(|f: &f64| f.is_finite() && *f >= 1.0)
            .ok_or_else(|| {
                bad_input(format!("slow-down factor '{factor}' must be a number >= 1"))
            })?;
        faults.slow_rank = Some((rank, factor));
    }
    if let Some(skew) = args.expert_skew {
        if model.moe.is_none() {
            return Err(bad_input(format!(
                "--expert-skew needs a mixture-of-experts model, and '{}' is dense",
                model.name
            )));
        }
        if !(skew.is_finite() && skew >= 0.0) {
            return Err(bad_input(format!("expert skew '{skew}' must be >= 0")));
        }
        faults.expert_skew = Some(skew);
    }
    if let Some(text) = &args.pin_rank {
        let (rank, cores) = split_eq(text, "pinned rank", "RANK=CORES")?;
        let cores = cpu_list(cores)?;
        check_cores_exist(&cores)?;
        faults.pin = Some((rank_in(rank, world, "pinned rank")?, cores));
    }
    if let (Some(rank), Some(step)) = (args.crash_rank, args.crash_at_step) {
        let rank = rank_in(&rank.to_string(), world, "crash rank")?;
        if step == 0 {
            return Err(bad_input("crash step '0' must be at least 1"));
        }
        faults.crash = Some((rank, step));
    }
    for text in &args.link_delay {
        let (a, b, value) = link(text, world, "A-B=DELAY")?;
        let delay = parse_duration_us(value)
            .ok_or_else(|| bad_input(format!("link delay '{value}' is not a duration like 2ms")))?;
        upsert_link(&mut faults.links, a, b).delay_us = delay;
    }
    for text in &args.link_rate {
        let (a, b, value) = link(text, world, "A-B=RATE")?;
        let rate = parse_rate_bytes(value)
            .ok_or_else(|| bad_input(format!("link rate '{value}' is not a rate like 100mbit")))?;
        upsert_link(&mut faults.links, a, b).rate_bytes_per_s = Some(rate);
    }
    Ok(faults)
}

fn split_eq<'t>(text: &'t str, what: &str, form: &str) -> anyhow::Result<(&'t str, &'t str)> {
    text.split_once('=')
        .ok_or_else(|| bad_input(format!("{what} '{text}' is not of the form {form}")))
}

fn rank_in(text: &str, world: usize, what: &str) -> anyhow::Result<usize> {
    text.trim()
        .parse::<usize>()
        .ok()
        .filter(|&r| r < world)
        .ok_or_else(|| {
            bad_input(format!(
                "{what} '{text}' is not a rank of this run (ranks 0 to {})",
                world - 1
            ))
        })
}

fn link<'t>(text: &'t str, world: usize, form: &str) -> anyhow::Result<(usize, usize, &'t str)> {
    let (pair, value) = split_eq(text, "link", form)?;
    let (a, b) = pair
        .split_once('-')
        .ok_or_else(|| bad_input(format!("link '{pair}' is not of the form A-B")))?;
    let (a, b) = (
        rank_in(a, world, "link rank")?,
        rank_in(b, world, "link rank")?,
    );
    if a == b {
        return Err(bad_input(format!("link '{pair}' joins a rank to itself")));
    }
    Ok((a.min(b), a.max(b), value))
}

fn upsert_link(links: &mut Vec<LinkFault>, a: usize, b: usize) -> &mut LinkFault {
    let index = match links.iter().position(|l| (l.a, l.b) == (a, b)) {
        Some(i) => i,
        None => {
            links.push(LinkFault {
                a,
                b,
                delay_us: 0,
                rate_bytes_per_s: None,
            });
            links.len() - 1
        }
    };
    &mut links[index]
}

/// `0`, `0,2` or `0-3` (and mixes) into core ids.
fn cpu_list(text: &str) -> anyhow::Result<Vec<usize>> {
    let bad = || bad_input(format!("core list '{text}' is not like 0 or 0-1 or 0,2"));
    let mut cores = Vec::new();
    for part in text.split(',') {
        match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi): (usize, usize) = (
                    lo.parse().map_err(|_| bad())?,
                    hi.parse().map_err(|_| bad())?,
                );
                if lo > hi {
                    return Err(bad());
                }
                cores.extend(lo..=hi);
            }
            None => cores.push(part.parse().map_err(|_| bad())?),
        }
    }
    Ok(cores)
}

/// Pinning to a core this machine does not have would only fail once the rank starts.
fn check_cores_exist(cores: &[usize]) -> anyhow::Result<()> {
    // SAFETY: sysconf only reads a system constant.
    let configured = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_CONF) };
    let Ok(configured) = usize::try_from(configured) else {
        return Ok(());
    };
    match cores.iter().find(|&&core| core >= configured) {
        Some(core) => Err(bad_input(format!(
            "core '{core}' does not exist on this machine (cores 0 to {})",
            configured.saturating_sub(1)
        ))),
        None => Ok(()),
    }
}

/// `250us`, `2ms`, `1s` into microseconds.
pub fn parse_duration_us(text: &str) -> Option<u64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e6)
    } else {
        return None;
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value >= 0.0).then(|| (value * scale).round() as u64)
}

/// `100mbit`, `1gbit`, `500kbit`, `10mbyte` into bytes per second.
pub fn parse_rate_bytes(text: &str) -> Option<u64> {
    let units = [
        ("gbit", 1e9 / 8.0),
        ("mbit", 1e6 / 8.0),
        ("kbit", 1e3 / 8.0),
        ("gbyte", 1e9),
        ("mbyte", 1e6),
        ("kbyte", 1e3),
    ];
    let lower = text.to_ascii_lowercase();
    let (number, scale) = units
        .iter()
        .find_map(|(unit, scale)| lower.strip_suffix(unit).map(|n| (n.to_string(), *scale)))?;
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value > 0.0).then(|| (value * scale).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_rates_parse_with_units() {
        assert_eq!(parse_duration_us("2ms"), Some(2000));
        assert_eq!(parse_duration_us("250us"), Some(250));
        assert_eq!(parse_duration_us("1.5s"), Some(1_500_000));
        assert_eq!(parse_duration_us("2"), None);
        assert_eq!(parse_rate_bytes("100mbit"), Some(12_500_000));
        assert_eq!(parse_rate_bytes("1Gbit"), Some(125_000_000));
        assert_eq!(parse_rate_bytes("fast"), None);
    }

    #[test]
    fn core_lists_expand_ranges() {
        assert_eq!(cpu_list("0-2,5").unwrap(), vec![0, 1, 2, 5]);
        assert!(cpu_list("2-1").is_err());
        assert!(cpu_list("x").is_err());
    }
}
