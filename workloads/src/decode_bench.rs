//! How close decode gets to the machine's memory bandwidth: one rank holding the whole model
//! decodes a batch token by token, and the bytes each step must stream (every weight once, plus
//! the KV cache read by attention) over the step's time give the achieved bandwidth, to compare
//! with a STREAM triad measured in the same process.

use crate::comm::{AllReduceAlgo, CommError, Group, Mesh};
use crate::config::ModelConfig;
use crate::error::WorkloadError;
use crate::model::{Batch, Comms, MoeOptions, SeqInput, StageModel};
use crate::trace::{At, Tracer};
use crate::weights::{ShardSpec, synthetic_shard};
use pinch_collector::Recorder;
use pinch_kernels::{Storage, stream_triad};
use pinch_traces::Rank;
use serde::Serialize;
use std::time::Instant;

/// Positions per KV block in the benchmark's pool.
const BLOCK_SIZE: usize = 16;

/// What to measure.
#[derive(Clone, Debug)]
pub struct DecodeBench {
    pub model: ModelConfig,
    pub storage: Storage,
    pub batch: usize,
    pub prompt_len: usize,
    /// Decode steps timed (after one untimed warm-up step).
    pub steps: usize,
    pub seed: u64,
    /// f32 elements per triad array.
    pub triad_elements: usize,
}

/// The measurement: medians over the timed steps.
#[derive(Clone, Debug, Serialize)]
pub struct DecodeMeasurement {
    pub model: String,
    pub dtype: String,
    pub batch: usize,
    pub weight_bytes: u64,
    /// Median time of one decode step.
    pub step_ms: f64,
    pub tokens_per_s: f64,
    /// Weights plus the KV cache read, per step.
    pub bytes_per_step: u64,
    pub decode_gb_per_s: f64,
    pub triad_gb_per_s: f64,
    /// decode_gb_per_s / triad_gb_per_s.
    pub fraction_of_triad: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeBenchError {
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    #[error(transparent)]
    Comm(#[from] CommError),
    #[error("the benchmark needs a batch, a prompt and steps, but one of them is '0'")]
    Empty,
    #[error("{positions} positions exceed model '{model}''s maximum of {max_seq}")]
    TooLong {
        positions: usize,
        model: String,
        max_seq: usize,
    },
}

/// Runs the triad, then prefill and `steps + 1` decode steps of the whole model on this thread.
pub fn measure_decode(bench: &DecodeBench) -> Result<DecodeMeasurement, DecodeBenchError> {
    if bench.batch == 0 || bench.prompt_len == 0 || bench.steps == 0 {
        return Err(DecodeBenchError::Empty);
    }
    let positions = bench.prompt_len + bench.steps + 1;
    if positions > bench.model.max_seq {
        return Err(DecodeBenchError::TooLong {
            positions,
            model: bench.model.name.clone(),
            max_seq: bench.model.max_seq,
        });
    }
    let triad = stream_triad(bench.triad_elements, 5);
    let spec = ShardSpec {
        tp_rank: 0,
        tp: 1,
        layers: 0..bench.model.layers,
        ep_rank: 0,
        ep: 1,
        storage: bench.storage,
    };
    let weights = synthetic_shard(&bench.model, bench.seed, &spec)?;
    let weight_bytes = weights.bytes();
    let blocks_per_seq = positions.div_ceil(BLOCK_SIZE);
    let mut model = StageModel::new(
        &bench.model,
        weights,
        blocks_per_seq * bench.batch,
        BLOCK_SIZE,
        MoeOptions::default(),
    );
    let (recorder, mut spans_out) = Recorder::new(Rank(0), 1 << 16);
    let tracer = Tracer::new(&recorder);
    let mut mesh = Mesh::solo();
    let mut group = Group::new(0, vec![0], 0)?;
    let tables: Vec<Vec<u32>> = (0..bench.batch)
        .map(|s| ((s * blocks_per_seq) as u32..((s + 1) * blocks_per_seq) as u32).collect())
        .collect();
    let prompt: Vec<u32> = (0..bench.prompt_len)
        .map(|i| (i * 7 % bench.model.vocab) as u32)
        .collect();
    let mut comms = Comms {
        mesh: &mut mesh,
        tp: &mut group,
        experts: None,
        algo: AllReduceAlgo::Auto,
    };
    let prompts: Vec<&[u32]> = vec![&prompt; bench.batch];
    let mut next = step(&mut model, &tracer, &mut comms, &prompts, 0, &tables)?;
    let mut times_ns = Vec::with_capacity(bench.steps);
    for s in 0..=bench.steps {
        let inputs: Vec<[u32; 1]> = next.iter().map(|&t| [t]).collect();
        let rows: Vec<&[u32]> = inputs.iter().map(|t| &t[..]).collect();
        let started = Instant::now();
        next = step(
            &mut model,
            &tracer,
            &mut comms,
            &rows,
            bench.prompt_len + s,
            &tables,
        )?;
        if s > 0 {
            times_ns.push(started.elapsed().as_nanos() as u64);
        }
        let mut drained = Vec::new();
        spans_out.drain_into(&mut drained, usize::MAX);
    }
    times_ns.sort_unstable();
    let median_ns = times_ns[times_ns.len() / 2] as f64;
    let kv_bytes = kv_read_bytes(
        &bench.model,
        bench.batch,
        bench.prompt_len + bench.steps / 2,
    );
    let bytes_per_step = weight_bytes + kv_bytes;
    let decode_gb_per_s = bytes_per_step as f64 / median_ns;
    let triad_gb_per_s = triad.best_rate_bytes_per_s / 1e9;
    Ok(DecodeMeasurement {
        model: bench.model.name.clone(),
        dtype: bench.storage.name().to_string(),
        batch: bench.batch,
        weight_bytes,
        step_ms: median_ns / 1e6,
        tokens_per_s: bench.batch as f64 / (median_ns / 1e9),
        bytes_per_step,
        decode_gb_per_s,
        triad_gb_per_s,
        fraction_of_triad: decode_gb_per_s / triad_gb_per_s,
    })
}

/// One forward step of every sequence (`tokens[s]` at positions from `start_pos`), sampled.
fn step(
    model: &mut StageModel,
    tracer: &Tracer,
    comms: &mut Comms,
    tokens: &[&[u32]],
    start_pos: usize,
    tables: &[Vec<u32>],
) -> Result<Vec<u32>, WorkloadError> {
    let seqs = tokens
        .iter()
        .zip(tables)
        .map(|(tokens, table)| SeqInput {
            tokens,
            start_pos,
            block_table: table,
            samples: true,
        })
        .collect();
    let batch = Batch::new(seqs);
    let at = At::step(0);
    model.embed(tracer, comms, at, &batch)?;
    model.layers(tracer, comms, at, &batch)?;
    model.sample(tracer, comms, at, &batch)
}

/// Bytes of K and V attention reads in one decode step at `positions` cached positions.
fn kv_read_bytes(model: &ModelConfig, batch: usize, positions: usize) -> u64 {
    (2 * model.layers * model.kv_dim() * positions * batch * 4) as u64
}
