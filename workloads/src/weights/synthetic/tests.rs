//! Tests that every shard layout cuts the same seeded model, and that dense models kept the
//! values of the first generator.

use super::*;
use crate::config::{test_model, test_moe_model};
use crate::weights::init::uniform;
use crate::weights::shard::{Ffn, LayerWeights, Mlp, MoeWeights};
use pinch_kernels::{Matrix, Storage};

fn whole(config: &ModelConfig, seed: u64) -> ShardWeights {
    synthetic_shard(config, seed, &ShardSpec::whole(config)).unwrap()
}

fn spec(config: &ModelConfig) -> ShardSpec {
    ShardSpec::whole(config)
}

fn moe(layer: &LayerWeights) -> &MoeWeights {
    match &layer.ffn {
        Ffn::Moe(moe) => moe,
        Ffn::Dense(_) => panic!("a dense layer where a MoE layer was expected"),
    }
}

fn dense(layer: &LayerWeights) -> &Mlp {
    match &layer.ffn {
        Ffn::Dense(mlp) => mlp,
        Ffn::Moe(_) => panic!("a MoE layer where a dense layer was expected"),
    }
}

/// Columns `cols` of a full matrix, as f32.
fn cols(m: &Matrix, cols: std::ops::Range<usize>) -> Vec<f32> {
    m.column_slice(cols).to_f32()
}

fn rows(m: &Matrix, rows: std::ops::Range<usize>) -> Vec<f32> {
    m.row_slice(rows).to_f32()
}

/// The first generator's tensors, written out with its literal stream numbers (0 embedding,
/// 1 final norm, 2 head, 16 + 16·layer + 0..9 for a layer's tensors) and scales: `tiny`'s
/// outputs depend on these exact values.
#[test]
fn a_dense_model_keeps_the_values_of_the_first_generator() {
    let config = test_model();
    let (h, q, kv, f, v) = (32, 32, 16, 48, 64);
    let w = whole(&config, 7);
    let std = |fan_in: usize| 1.0 / (fan_in as f32).sqrt();
    assert_eq!(
        w.embedding.as_ref().unwrap().to_f32(),
        uniform(7, 0, v * h, 1.0)
    );
    assert_eq!(w.final_norm.as_ref().unwrap(), &norm(7, 1, h));
    assert_eq!(
        w.lm_head.as_ref().unwrap().to_f32(),
        uniform(7, 2, h * v, std(h))
    );
    for (l, layer) in w.layers.iter().enumerate() {
        let s = 16 + 16 * l as u64;
        assert_eq!(layer.attn_norm, norm(7, s, h));
        assert_eq!(layer.wq.to_f32(), uniform(7, s + 1, h * q, std(h)));
        assert_eq!(layer.wk.to_f32(), uniform(7, s + 2, h * kv, std(h)));
        assert_eq!(layer.wv.to_f32(), uniform(7, s + 3, h * kv, std(h)));
        assert_eq!(layer.wo.to_f32(), uniform(7, s + 4, q * h, std(q)));
        assert_eq!(layer.mlp_norm, norm(7, s + 5, h));
        let mlp = dense(layer);
        assert_eq!(mlp.w_gate.to_f32(), uniform(7, s + 6, h * f, std(h)));
        assert_eq!(mlp.w_up.to_f32(), uniform(7, s + 7, h * f, std(h)));
        assert_eq!(mlp.w_down.to_f32(), uniform(7, s + 8, f * h, std(f)));
    }
}

#[test]
fn tp_shards_are_megatron_slices_of_the_whole_moe_model() {
    let config = test_moe_model();
    let full = whole(&config, 3);
    for rank in 0..2 {
        let shard = synthetic_shard(
            &config,
            3,
            &ShardSpec {
                tp_rank: rank,
                tp: 2,
                ..spec(&config)
            },
        )
        .unwrap();
        let l = &shard.layout;
        assert_eq!(shard.vocab_range, l.vocab_range());
        let (f, s) = (&full.layers[2], &shard.layers[2]);
        assert_eq!(s.wq.to_f32(), cols(&f.wq, l.q_range()));
        assert_eq!(s.wk.to_f32(), cols(&f.wk, l.kv_range()));
        assert_eq!(s.wo.to_f32(), rows(&f.wo, l.q_range()));
        let (fm, sm) = (moe(f), moe(s));
        assert_eq!(sm.router, fm.router, "the router is replicated");
        let width = l.expert_ffn_range().unwrap();
        for (fe, se) in fm.experts.iter().zip(&sm.experts) {
            let (fe, se) = (fe.as_ref().unwrap(), se.as_ref().unwrap());
            assert_eq!(se.w_gate.to_f32(), cols(&fe.w_gate, width.clone()));
            assert_eq!(se.w_up.to_f32(), cols(&fe.w_up, width.clone()));
            assert_eq!(se.w_down.to_f32(), rows(&fe.w_down, width.clone()));
        }
        let (fs, ss) = (fm.shared.as_ref().unwrap(), sm.shared.as_ref().unwrap());
        let shared = l.shared_ffn_range().unwrap();
        assert_eq!(ss.w_up.to_f32(), cols(&fs.w_up, shared.clone()));
        assert_eq!(ss.w_down.to_f32(), rows(&fs.w_down, shared));
        let vocab = shard.vocab_range.clone();
        let embedding = shard.embedding.as_ref().unwrap();
        assert_eq!(
            embedding.to_f32(),
            rows(full.embedding.as_ref().unwrap(), vocab.clone())
        );
        let head = shard.lm_head.as_ref().unwrap();
        assert_eq!(head.to_f32(), cols(full.lm_head.as_ref().unwrap(), vocab));
        let dense_slice = dense(&shard.layers[0]).w_gate.to_f32();
        assert_eq!(
            dense_slice,
            cols(&dense(&full.layers[0]).w_gate, l.ffn_range())
        );
    }
}

#[test]
fn ep_ranks_hold_their_own_experts_and_replicate_the_rest() {
    let config = test_moe_model();
    let full = whole(&config, 4);
    let ranks: Vec<ShardWeights> = (0..2)
        .map(|r| {
            synthetic_shard(
                &config,
                4,
                &ShardSpec {
                    ep_rank: r,
                    ep: 2,
                    ..spec(&config)
                },
            )
            .unwrap()
        })
        .collect();
    for (rank, shard) in ranks.iter().enumerate() {
        let (f, s) = (moe(&full.layers[1]), moe(&shard.layers[1]));
        let held: Vec<usize> = (0..4).filter(|&e| s.experts[e].is_some()).collect();
        assert_eq!(held, vec![2 * rank, 2 * rank + 1]);
        for e in held {
            assert_eq!(s.experts[e], f.experts[e]);
        }
        assert_eq!((&s.router, &s.shared), (&f.router, &f.shared));
        assert_eq!(
            shard.layers[1].wq, full.layers[1].wq,
            "attention is replicated"
        );
        assert_eq!(shard.embedding, full.embedding);
    }
    let experts_bytes = |s: &ShardWeights| {
        let moe_layers = s.layers[1..].iter().map(moe);
        moe_layers
            .flat_map(|m| m.experts.iter().flatten())
            .map(Mlp::bytes)
            .sum::<u64>()
    };
    assert_eq!(
        experts_bytes(&ranks[0]) + experts_bytes(&ranks[1]),
        experts_bytes(&full),
        "each expert is held once"
    );
}

#[test]
fn pipeline_stages_hold_their_layers_and_the_ends_hold_embedding_and_head() {
    let config = test_moe_model();
    let full = whole(&config, 5);
    let stage = |s: usize| {
        let layers = config.stage_layers(s, 2);
        synthetic_shard(
            &config,
            5,
            &ShardSpec {
                layers,
                ..spec(&config)
            },
        )
        .unwrap()
    };
    let (first, last) = (stage(0), stage(1));
    assert_eq!(first.layers[..], full.layers[..2]);
    assert_eq!(last.layers[..], full.layers[2..]);
    assert!(first.embedding.is_some() && first.lm_head.is_none() && first.final_norm.is_none());
    assert!(last.embedding.is_none() && last.lm_head.is_some() && last.final_norm.is_some());
    assert_eq!(last.lm_head, full.lm_head);
}

#[test]
fn bf16_storage_rounds_the_same_values_and_keeps_the_router_f32() {
    let config = test_moe_model();
    let full = whole(&config, 6);
    let bf16 = synthetic_shard(
        &config,
        6,
        &ShardSpec {
            storage: Storage::Bf16,
            ..spec(&config)
        },
    )
    .unwrap();
    let (f, b) = (&full.layers[1], &bf16.layers[1]);
    assert_eq!(b.wq.storage(), Storage::Bf16);
    let rounded = Matrix::from_f32(f.wq.rows(), f.wq.cols(), f.wq.to_f32(), Storage::Bf16);
    assert_eq!(b.wq, rounded);
    assert_eq!(moe(b).router.storage(), Storage::F32);
    assert_eq!(moe(b).router, moe(f).router);
}

#[test]
fn a_whole_shard_weighs_what_the_config_says() {
    for config in [test_model(), test_moe_model()] {
        for storage in [Storage::F32, Storage::Bf16] {
            let shard = synthetic_shard(
                &config,
                1,
                &ShardSpec {
                    storage,
                    ..spec(&config)
                },
            )
            .unwrap();
            assert_eq!(
                shard.bytes(),
                config.weight_bytes(storage),
                "{} {storage:?}",
                config.name
            );
        }
    }
}

#[test]
fn tp_shards_together_weigh_the_model_plus_their_replicas() {
    let config = test_moe_model();
    let shards: Vec<_> = (0..2)
        .map(|r| {
            synthetic_shard(
                &config,
                1,
                &ShardSpec {
                    tp_rank: r,
                    tp: 2,
                    ..spec(&config)
                },
            )
            .unwrap()
        })
        .collect();
    let h = config.hidden as u64;
    // Replicated: two norms per layer, the final norm, one router per MoE layer.
    let replicated_bytes = 4 * (2 * 3 * h + h + 2 * h * 4);
    let total: u64 = shards.iter().map(ShardWeights::bytes).sum();
    assert_eq!(total, config.weight_bytes(Storage::F32) + replicated_bytes);
}

#[test]
fn a_tied_head_is_the_embedding_transposed() {
    let config = ModelConfig {
        tie_embeddings: true,
        ..test_model()
    };
    let shard = synthetic_shard(
        &config,
        2,
        &ShardSpec {
            tp_rank: 1,
            tp: 2,
            ..spec(&config)
        },
    )
    .unwrap();
    let (embedding, head) = (shard.embedding.unwrap(), shard.lm_head.unwrap());
    assert_eq!(
        (head.rows(), head.cols()),
        (config.hidden, config.vocab / 2)
    );
    let (e, h) = (embedding.to_f32(), head.to_f32());
    let width = config.vocab / 2;
    assert_eq!(h[3 * width + 5], e[5 * config.hidden + 3]);
}

#[test]
fn seeds_layers_and_experts_draw_different_values() {
    let config = test_moe_model();
    let (a, b) = (whole(&config, 1), whole(&config, 2));
    assert_ne!(a.layers[1].wq, b.layers[1].wq);
    assert_ne!(a.layers[1].wq, a.layers[2].wq);
    let experts = &moe(&a.layers[1]).experts;
    assert_ne!(experts[0], experts[1]);
    assert_ne!(moe(&a.layers[1]).experts[0], moe(&a.layers[2]).experts[0]);
    assert_eq!(a, whole(&config, 1));
}

#[test]
fn specs_that_do_not_cut_the_model_are_refused() {
    let config = test_moe_model();
    let refuse = |spec: ShardSpec| synthetic_shard(&config, 1, &spec).unwrap_err().to_string();
    let err = refuse(ShardSpec {
        tp: 2,
        ep: 2,
        ..spec(&config)
    });
    assert_eq!(
        err,
        "expert-parallel degree 2 needs tensor-parallel degree 1, not '2' \
         (attention is data-parallel under expert parallelism)"
    );
    let err = refuse(ShardSpec {
        ep_rank: 2,
        ep: 2,
        ..spec(&config)
    });
    assert_eq!(
        err,
        "expert-parallel rank '2' is out of range for expert-parallel degree 2"
    );
    let err = refuse(ShardSpec {
        ep: 3,
        ..spec(&config)
    });
    assert!(err.contains("'3' does not divide the 4 experts"), "{err}");
    let err = refuse(ShardSpec {
        layers: 2..4,
        ..spec(&config)
    });
    assert!(err.starts_with("layers '2..4' are not"), "{err}");
    assert!(
        refuse(ShardSpec {
            layers: 1..1,
            ..spec(&config)
        })
        .contains("'1..1'")
    );
    assert!(
        refuse(ShardSpec {
            tp_rank: 2,
            tp: 2,
            ..spec(&config)
        })
        .contains("rank '2'")
    );
    let dense = test_model();
    let err = synthetic_shard(
        &dense,
        1,
        &ShardSpec {
            ep: 2,
            ..spec(&dense)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("needs a mixture-of-experts model"), "{err}");
}
