//! Mixture-of-experts numerics across layouts: the logits of the same prompts agree within 1e-4
//! (relative to the largest logit) whether the experts sit on one rank, are split over two by
//! expert parallelism (all-to-all), or are sliced by tensor parallelism (all-reduce).

// Test helpers panic with the value in view, as the tests themselves do.
#![allow(clippy::unwrap_used)]

use pinch_collector::Recorder;
use pinch_kernels::Storage;
use pinch_traces::Rank;
use pinch_workloads::comm::{AllReduceAlgo, Group, Mesh, MeshOptions};
use pinch_workloads::model::{Batch, Comms, MoeOptions, SeqInput, StageModel};
use pinch_workloads::trace::{At, Tracer};
use pinch_workloads::weights::{ShardSpec, synthetic_shard};
use pinch_workloads::{ModelConfig, preset};

const PROMPTS: [&[u32]; 2] = [&[5, 17, 99, 3, 250, 7], &[1, 2, 3, 4, 11, 12, 13, 14, 15]];

fn spec(model: &ModelConfig, tp: (usize, usize), ep: (usize, usize)) -> ShardSpec {
    ShardSpec {
        tp_rank: tp.0,
        tp: tp.1,
        layers: 0..model.layers,
        ep_rank: ep.0,
        ep: ep.1,
        storage: Storage::F32,
    }
}

/// The prefill logits of `prompts` on one rank of a world, `[prompts, vocab slice]`.
fn logits(
    model: &ModelConfig,
    spec: &ShardSpec,
    mesh: &mut Mesh,
    tp: &mut Group,
    experts: Option<&mut Group>,
    prompts: &[&[u32]],
) -> Vec<f32> {
    let weights = synthetic_shard(model, 11, spec).unwrap();
    let mut stage = StageModel::new(model, weights, 8, 4, MoeOptions::default());
    let (recorder, _spans) = Recorder::new(Rank(0), 1 << 16);
    let tracer = Tracer::new(&recorder);
    let tables: Vec<Vec<u32>> = (0..prompts.len() as u32)
        .map(|i| vec![3 * i, 3 * i + 1, 3 * i + 2])
        .collect();
    let seqs = prompts
        .iter()
        .zip(&tables)
        .map(|(p, t)| SeqInput {
            tokens: p,
            start_pos: 0,
            block_table: t,
            samples: true,
        })
        .collect();
    let batch = Batch::new(seqs);
    let mut comms = Comms {
        mesh,
        tp,
        experts,
        algo: AllReduceAlgo::Auto,
    };
    let at = At::step(0);
    stage.embed(&tracer, &mut comms, at, &batch).unwrap();
    stage.layers(&tracer, &mut comms, at, &batch).unwrap();
    stage.sample(&tracer, &mut comms, at, &batch).unwrap();
    stage.logits().to_vec()
}

fn assert_close(a: &[f32], b: &[f32], what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    let scale = a.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    let worst = a
        .iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    assert!(
        worst <= 1e-4 * scale,
        "{what}: differs by {worst} at scale {scale}"
    );
}

fn single_rank(model: &ModelConfig) -> Vec<f32> {
    let mut mesh = Mesh::solo();
    let mut tp = Group::new(0, vec![0], 0).unwrap();
    logits(
        model,
        &spec(model, (0, 1), (0, 1)),
        &mut mesh,
        &mut tp,
        None,
        &PROMPTS,
    )
}

fn two_ranks(run: impl Fn(usize, Mesh) -> Vec<f32> + Sync) -> Vec<Vec<f32>> {
    let meshes = Mesh::loopback(&[0, 0], &MeshOptions::default()).unwrap();
    std::thread::scope(|s| {
        let handles: Vec<_> = meshes
            .into_iter()
            .enumerate()
            .map(|(rank, mesh)| {
                let run = &run;
                s.spawn(move || run(rank, mesh))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn expert_parallel_logits_match_one_rank() {
    for name in ["moe-tiny", "deepseek-tiny"] {
        let model = preset(name).unwrap();
        let reference = single_rank(&model);
        let per_rank = two_ranks(|rank, mut mesh| {
            let mut solo = Group::new(10 + rank as u32, vec![rank], rank).unwrap();
            let mut experts = Group::new(20, vec![0, 1], rank).unwrap();
            let spec = spec(&model, (0, 1), (rank, 2));
            logits(
                &model,
                &spec,
                &mut mesh,
                &mut solo,
                Some(&mut experts),
                &PROMPTS[rank..=rank],
            )
        });
        assert_close(&per_rank.concat(), &reference, name);
    }
}

#[test]
fn tensor_parallel_logits_match_one_rank() {
    let model = preset("moe-tiny").unwrap();
    let reference = single_rank(&model);
    let per_rank = two_ranks(|rank, mut mesh| {
        let mut tp = Group::new(0, vec![0, 1], rank).unwrap();
        let spec = spec(&model, (rank, 2), (0, 1));
        logits(&model, &spec, &mut mesh, &mut tp, None, &PROMPTS)
    });
    // Each rank holds half the vocabulary: row r of the full logits is the two halves side by side.
    let half = model.vocab / 2;
    let joined: Vec<f32> = (0..PROMPTS.len())
        .flat_map(|r| {
            let a = &per_rank[0][r * half..(r + 1) * half];
            let b = &per_rank[1][r * half..(r + 1) * half];
            a.iter().chain(b).copied().collect::<Vec<_>>()
        })
        .collect();
    assert_close(&joined, &reference, "moe-tiny tp=2");
}
