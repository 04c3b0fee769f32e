//! Times a tensor-parallel generation run of a preset, every rank a thread of this process on a
//! loopback ring, and prints what each rank recorded.
//!
//! `cargo run --release -p pinch-workloads --example tp_decode -- [tp] [batch] [prompt_len]
//! [decode_tokens] [seed]`; the defaults are the tiny preset at TP=2, batch 4, prompt 32,
//! 64 decode tokens, seed 7.

use pinch_collector::Recorder;
use pinch_traces::{Category, Rank, Span};
use pinch_workloads::{Generation, Ring, TpRunConfig, WorkloadError, preset, run_tp_rank};
use std::error::Error;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn Error>> {
    let config = config_from_args()?;
    config.validate()?;
    let started = Instant::now();
    let config = &config;
    let rings = Ring::loopback_group(config.tp, Duration::from_secs(30))?;
    let outcomes: Vec<(Result<Generation, WorkloadError>, Vec<Span>)> =
        std::thread::scope(|scope| {
            let ranks: Vec<_> = rings
                .into_iter()
                .enumerate()
                .map(|(rank, ring)| scope.spawn(move || run_rank(config, rank, ring)))
                .collect();
            ranks
                .into_iter()
                .map(|r| {
                    r.join()
                        .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                })
                .collect()
        });
    let elapsed = started.elapsed();
    for (rank, (outcome, spans)) in outcomes.iter().enumerate() {
        let generation = outcome.as_ref().map_err(|e| format!("rank {rank}: {e}"))?;
        println!(
            "rank {rank}: first sequence {:?}",
            generation.tokens.first()
        );
        print_breakdown(rank, spans);
    }
    let tokens = config.batch * config.decode_tokens;
    println!(
        "tp={} batch={} prompt={} decode={}: {:.2} s, {:.1} generated tokens/s",
        config.tp,
        config.batch,
        config.prompt_len,
        config.decode_tokens,
        elapsed.as_secs_f64(),
        tokens as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}

fn config_from_args() -> Result<TpRunConfig, Box<dyn Error>> {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse::<u64>())
        .collect::<Result<_, _>>()?;
    let arg = |i: usize, default: u64| args.get(i).copied().unwrap_or(default);
    Ok(TpRunConfig {
        model: preset("tiny")?,
        tp: arg(0, 2) as usize,
        batch: arg(1, 4) as usize,
        prompt_len: arg(2, 32) as usize,
        decode_tokens: arg(3, 64) as usize,
        rounds: 1,
        seed: arg(4, 7),
    })
}

fn run_rank(
    config: &TpRunConfig,
    rank: usize,
    mut ring: Ring,
) -> (Result<Generation, WorkloadError>, Vec<Span>) {
    let recorder = Recorder::new(Rank(rank as u32), 1 << 20);
    let outcome = run_tp_rank(config, rank, &mut ring, &recorder, &mut |_, _| {});
    let mut spans = Vec::new();
    recorder.drain_into(&mut spans, usize::MAX);
    (outcome, spans)
}

fn print_breakdown(rank: usize, spans: &[Span]) {
    let total_ns: u64 = spans.iter().map(|s| s.duration_ns).sum();
    for category in Category::ALL {
        let ns: u64 = spans
            .iter()
            .filter(|s| s.category == category)
            .map(|s| s.duration_ns)
            .sum();
        if ns > 0 {
            let share = 100.0 * ns as f64 / total_ns.max(1) as f64;
            println!(
                "  rank {rank} {category:>13}: {:8.1} ms ({share:4.1}%)",
                ns as f64 / 1e6
            );
        }
    }
}
