//! What one sample of each counter source costs the agent: `Sampler::sample` plus handing the
//! readings to the sink, with this benchmark's own process standing in for a rank. Sources this
//! host cannot read (no NVIDIA driver, no InfiniBand device) say why and are skipped.
//!
//! Run: `cargo bench -p pinch-collector --bench samplers`.

use divan::Bencher;
use pinch_collector::{IbSampler, NvmlSampler, PerfSampler, ProcSampler, SampleSink, Sampler};
use pinch_traces::{NodeId, Rank, monotonic_now_ns};

fn main() {
    divan::main();
}

fn ranks() -> [(Rank, u32); 1] {
    [(Rank(0), std::process::id())]
}

/// Samples `sampler` once per iteration; the sink is emptied outside the timing, as the agent
/// empties it every few dozen samples.
fn bench_sampler(bencher: Bencher, mut sampler: impl Sampler) {
    let mut sink = SampleSink::new(NodeId(0));
    bencher.bench_local(|| {
        let sampled = sampler.sample(monotonic_now_ns(), &mut sink);
        if sink.pending_samples() > 4096 {
            sink.take_records();
        }
        sampled
    });
}

fn skip(source: &str, reason: &str) {
    eprintln!("{source}: skipped: {reason}");
}

#[divan::bench]
fn procfs(bencher: Bencher) {
    match ProcSampler::open(&ranks()) {
        Ok(sampler) => bench_sampler(bencher, sampler),
        Err(e) => skip("procfs", &e.to_string()),
    }
}

#[divan::bench]
fn perf(bencher: Bencher) {
    match PerfSampler::open(&ranks()) {
        Ok(sampler) => bench_sampler(bencher, sampler),
        Err(e) => skip("perf", &e),
    }
}

#[divan::bench]
fn nvml(bencher: Bencher) {
    match NvmlSampler::open(&ranks()) {
        Ok(sampler) => bench_sampler(bencher, sampler),
        Err(e) => skip("nvml", &e),
    }
}

#[divan::bench]
fn infiniband(bencher: Bencher) {
    match IbSampler::open(&ranks()) {
        Ok(sampler) => bench_sampler(bencher, sampler),
        Err(e) => skip("infiniband", &e),
    }
}
