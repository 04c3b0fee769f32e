//! One rank's part of a tensor-parallel generation run: prefill a batch of seeded prompts, then
//! decode greedily for a fixed number of tokens.
//!
//! A run is `rounds` batches served one after another, each of `decode_tokens` steps. In a
//! round, step 0 is the prefill: it runs the whole prompt (positions `0..prompt_len`) and
//! samples the first generated token. Step `s` for `1 <= s < decode_tokens` is a decode step: it
//! feeds generated token `s-1` at position `prompt_len + s - 1` and samples token `s`. Every
//! sequence generates exactly `decode_tokens` tokens (no early stop). Steps are numbered across
//! the run (round `r`'s step `s` is step `r * decode_tokens + s` in the spans), and
//! `on_step(done, total)` is called after each with `done` = steps finished so far and
//! `total = rounds * decode_tokens`.

use crate::comm::Ring;
use crate::config::ModelConfig;
use crate::error::WorkloadError;
use crate::model::{Decoder, StepInput};
use crate::trace::{At, Tracer};
use crate::weights::ModelWeights;
use pinch_collector::Recorder;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// The ChaCha stream the prompts are drawn from, apart from every weight tensor's.
const PROMPT_STREAM: u64 = u64::MAX;

/// A tensor-parallel generation run, the same on every rank.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TpRunConfig {
    pub model: ModelConfig,
    /// Tensor-parallel degree: the number of ranks.
    pub tp: usize,
    /// Sequences generated together.
    pub batch: usize,
    /// Tokens in each (seeded, random) prompt.
    pub prompt_len: usize,
    /// Tokens generated per sequence.
    pub decode_tokens: usize,
    /// Batches served one after another, each with fresh prompts.
    pub rounds: usize,
    /// Seeds the weights and the prompts.
    pub seed: u64,
}

/// What a rank generated: per sequence (round-major), the generated tokens (not the prompt).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation {
    pub tokens: Vec<Vec<u32>>,
}

impl TpRunConfig {
    /// Checks the run can start: a sound model split `tp` ways, non-empty batch, prompt and
    /// generation, and sequences that fit the model's maximum length.
    pub fn validate(&self) -> Result<(), WorkloadError> {
        self.model.validate()?;
        self.model.validate_tp(self.tp)?;
        let counts = [
            ("batch size", self.batch),
            ("prompt length", self.prompt_len),
            ("decode token count", self.decode_tokens),
            ("round count", self.rounds),
        ];
        if let Some(&(what, _)) = counts.iter().find(|(_, count)| *count == 0) {
            return Err(WorkloadError::ZeroSetting { what });
        }
        let total = self.prompt_len.saturating_add(self.decode_tokens);
        if total > self.model.max_seq {
            return Err(WorkloadError::SequenceTooLong {
                prompt_len: self.prompt_len,
                decode_tokens: self.decode_tokens,
                total,
                max_seq: self.model.max_seq,
                preset: self.model.name.clone(),
            });
        }
        Ok(())
    }

    /// Round `round`'s prompts, `[batch, prompt_len]` row-major: the same on every rank for a
    /// seed, different from round to round.
    pub fn prompts(&self, round: usize) -> Vec<u32> {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(PROMPT_STREAM - round as u64);
        let vocab = self.model.vocab as u32;
        (0..self.batch * self.prompt_len)
            .map(|_| rng.random_range(0..vocab))
            .collect()
    }

    /// Steps of the whole run.
    pub fn steps(&self) -> u32 {
        (self.rounds * self.decode_tokens) as u32
    }
}

/// Runs rank `rank`'s shard of `config` over `ring`, recording every op into `recorder`, and
/// returns the generated tokens (the same on every rank).
pub fn run_tp_rank(
    config: &TpRunConfig,
    rank: usize,
    ring: &mut Ring,
    recorder: &Recorder,
    on_step: &mut dyn FnMut(u32, u32),
) -> Result<Generation, WorkloadError> {
    config.validate()?;
    if (ring.rank(), ring.world()) != (rank, config.tp) {
        return Err(WorkloadError::RingMismatch {
            ring_rank: ring.rank(),
            ring_world: ring.world(),
            rank,
            tp: config.tp,
        });
    }
    let tracer = Tracer::new(recorder);
    let weights = tracer.host(tracer.ops.weights_init, At::step(0), || {
        ModelWeights::generate(&config.model, config.seed).shard(rank, config.tp)
    })?;
    let max_seq = config.prompt_len + config.decode_tokens;
    let mut decoder = Decoder::new(
        &config.model,
        weights,
        config.batch,
        config.prompt_len,
        max_seq,
    );
    let mut generation = Generation {
        tokens: Vec::with_capacity(config.rounds * config.batch),
    };
    for round in 0..config.rounds {
        decoder.reset();
        let first_step = (round * config.decode_tokens) as u32;
        let mut input = tracer.host(tracer.ops.bookkeeping, At::step(first_step), || {
            prefill_input(config, round)
        });
        let mut round_tokens = vec![Vec::with_capacity(config.decode_tokens); config.batch];
        for s in 0..config.decode_tokens {
            let step = first_step + s as u32;
            let sampled = decoder.forward(&tracer, ring, &input, step)?;
            let position = config.prompt_len + s;
            tracer.host(tracer.ops.bookkeeping, At::step(step), || {
                record_and_feed(sampled, position, &mut round_tokens, &mut input);
            });
            on_step(step + 1, config.steps());
        }
        generation.tokens.extend(round_tokens);
    }
    Ok(generation)
}

/// A round's first input: every prompt, at positions `0..prompt_len`.
fn prefill_input(config: &TpRunConfig, round: usize) -> StepInput {
    let positions = (0..config.batch)
        .flat_map(|_| 0..config.prompt_len)
        .collect();
    StepInput {
        tokens: config.prompts(round),
        positions,
        new_tokens: config.prompt_len,
    }
}

/// Appends each sequence's sampled token to its output and makes it the next step's input, at
/// `position`. Reuses the input's buffers: no allocation.
fn record_and_feed(
    sampled: &[u32],
    position: usize,
    generation: &mut [Vec<u32>],
    input: &mut StepInput,
) {
    for (out, &token) in generation.iter_mut().zip(sampled) {
        out.push(token);
    }
    input.tokens.clear();
    input.tokens.extend_from_slice(sampled);
    input.positions.clear();
    input.positions.resize(sampled.len(), position);
    input.new_tokens = 1;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::CommError;
    use crate::config::preset;
    use pinch_traces::{Category, Rank, Span};
    use std::time::Duration;

    /// The end-to-end tests' small workload: quick even in the dev profile.
    fn small(tp: usize, seed: u64) -> TpRunConfig {
        TpRunConfig {
            model: preset("tiny").unwrap(),
            tp,
            batch: 2,
            prompt_len: 8,
            decode_tokens: 6,
            rounds: 1,
            seed,
        }
    }

    /// What one rank did: its outcome, its spans, and the progress it reported.
    struct RankRun {
        outcome: Result<Generation, WorkloadError>,
        spans: Vec<Span>,
        progress: Vec<(u32, u32)>,
    }

    /// Runs every rank of a group, one thread each, rank `r` with `configs[r]`.
    fn run_group(configs: &[TpRunConfig]) -> Vec<RankRun> {
        let rings = Ring::loopback_group(configs.len(), Duration::from_secs(10)).unwrap();
        std::thread::scope(|scope| {
            let ranks: Vec<_> = rings
                .into_iter()
                .zip(configs)
                .enumerate()
                .map(|(rank, (ring, config))| scope.spawn(move || run_rank(config, rank, ring)))
                .collect();
            ranks.into_iter().map(|r| r.join().unwrap()).collect()
        })
    }

    fn run_rank(config: &TpRunConfig, rank: usize, mut ring: Ring) -> RankRun {
        let recorder = Recorder::new(Rank(rank as u32), 1 << 16);
        let mut progress = Vec::new();
        let mut on_step = |done, total| progress.push((done, total));
        let outcome = run_tp_rank(config, rank, &mut ring, &recorder, &mut on_step);
        let mut spans = Vec::new();
        recorder.drain_into(&mut spans, usize::MAX);
        assert_eq!(recorder.dropped(), 0);
        RankRun {
            outcome,
            spans,
            progress,
        }
    }

    fn tokens(run: &RankRun) -> &Generation {
        run.outcome.as_ref().unwrap()
    }

    #[test]
    fn tp1_and_tp2_generate_the_same_tokens_and_the_seed_matters() {
        let one = run_group(&[small(1, 7)]);
        let two = run_group(&[small(2, 7), small(2, 7)]);
        let generated = tokens(&one[0]);
        assert_eq!(generated.tokens.len(), 2);
        assert!(generated.tokens.iter().all(|seq| seq.len() == 6));
        assert_eq!(tokens(&two[0]), generated);
        assert_eq!(tokens(&two[1]), generated);
        let four = run_group(&vec![small(4, 7); 4]);
        assert!(
            four.iter().all(|r| tokens(r) == generated),
            "KV heads replicated at TP=4"
        );
        let other_seed = run_group(&[small(1, 8)]);
        assert_ne!(tokens(&other_seed[0]), generated);
    }

    #[test]
    fn rounds_serve_fresh_prompts_one_after_another() {
        let single = run_group(&[small(1, 7)]);
        let config = TpRunConfig {
            rounds: 2,
            ..small(1, 7)
        };
        let double = run_group(&[config]);
        let generated = &tokens(&double[0]).tokens;
        assert_eq!(generated.len(), 4, "two rounds of a batch of two");
        assert_eq!(
            generated[..2],
            tokens(&single[0]).tokens[..],
            "round 0 is the one-round run"
        );
        assert_ne!(
            generated[..2],
            generated[2..],
            "round 1 has its own prompts"
        );
        let progress = &double[0].progress;
        assert_eq!(progress.last(), Some(&(12, 12)));
        let steps: std::collections::BTreeSet<u32> = double[0]
            .spans
            .iter()
            .filter_map(|s| s.attrs.step)
            .collect();
        assert_eq!(steps, (0..12).collect());
    }

    #[test]
    fn sequences_of_a_batch_are_generated_independently() {
        let one = run_group(&[small(1, 11)]);
        let generated = &tokens(&one[0]).tokens;
        assert_ne!(
            generated[0], generated[1],
            "different prompts, different outputs"
        );
        assert!(generated.iter().flatten().all(|&t| (t as usize) < 4096));
    }

    #[test]
    fn every_category_is_recorded_and_collectives_match_across_ranks() {
        let config = small(2, 7);
        let runs = run_group(&[config.clone(), config.clone()]);
        for run in &runs {
            let used = |c| run.spans.iter().any(|s| s.category == c);
            for category in [
                Category::Compute,
                Category::Memory,
                Category::Communication,
                Category::Host,
            ] {
                assert!(used(category), "no {category} span");
            }
            assert_eq!(
                run.progress,
                (1..=6).map(|done| (done, 6)).collect::<Vec<_>>()
            );
        }
        let collectives = |run: &RankRun| -> Vec<_> {
            run.spans
                .iter()
                .filter_map(|s| Some((s.attrs.collective?, s.attrs.step?, s.attrs.layer?)))
                .collect()
        };
        let (zero, one) = (collectives(&runs[0]), collectives(&runs[1]));
        assert_eq!(
            zero, one,
            "same collectives, same sequence numbers, on both ranks"
        );
        assert_eq!(zero.len(), 2 * config.model.layers * config.decode_tokens);
        let seqs: Vec<u64> = zero.iter().map(|(c, _, _)| c.seq).collect();
        assert_eq!(seqs, (0..zero.len() as u64).collect::<Vec<_>>());
        let prefill = zero[0].0;
        assert_eq!(
            (prefill.participants, prefill.message_bytes),
            (2, 2 * 8 * 512 * 4)
        );
        assert_eq!(zero.last().unwrap().0.message_bytes, 2 * 512 * 4);
    }

    #[test]
    fn every_op_of_every_layer_is_recorded_with_its_cost() {
        let recorder = Recorder::new(Rank(0), 1 << 16);
        let mut ring = Ring::solo();
        let config = TpRunConfig {
            decode_tokens: 2,
            rounds: 1,
            ..small(1, 3)
        };
        run_tp_rank(&config, 0, &mut ring, &recorder, &mut |_, _| {}).unwrap();
        let mut spans = Vec::new();
        recorder.drain_into(&mut spans, usize::MAX);
        let names = recorder.names_from(0);
        let name = |s: &Span| names[s.op.0 as usize].1.as_str();
        let in_layer_5_step_1 = spans
            .iter()
            .filter(|s| s.attrs.layer == Some(5) && s.attrs.step == Some(1))
            .map(name)
            .collect::<Vec<_>>();
        let expected = [
            "attn_norm",
            "matmul.qkv",
            "rope",
            "kv_cache.append",
            "attention",
            "matmul.o",
            "residual_add",
            "mlp_norm",
            "matmul.gate_up",
            "silu_mul",
            "matmul.down",
            "residual_add",
        ];
        assert_eq!(in_layer_5_step_1, expected, "tp=1 issues no all-reduce");
        let computed = spans.iter().filter(|s| s.category != Category::Host);
        assert!(
            computed
                .clone()
                .all(|s| s.attrs.flops.is_some() && s.attrs.bytes.is_some())
        );
        let lm_head = spans.iter().find(|s| name(s) == "lm_head").unwrap();
        assert_eq!(
            lm_head.attrs.flops,
            Some(2 * 2 * 512 * 4096),
            "batch × hidden × vocab"
        );
        let host: Vec<_> = spans
            .iter()
            .filter(|s| s.category == Category::Host)
            .map(name)
            .collect();
        assert_eq!(
            host,
            [
                "weights.init",
                "step.bookkeeping",
                "step.bookkeeping",
                "step.bookkeeping"
            ],
            "weights, the round's prompts, then each step's next input"
        );
    }

    #[test]
    fn a_rank_whose_peer_stops_fails_naming_it() {
        let early = TpRunConfig {
            decode_tokens: 3,
            rounds: 1,
            ..small(2, 7)
        };
        let runs = run_group(&[small(2, 7), early]);
        assert_eq!(tokens(&runs[1]).tokens[0].len(), 3);
        let err = runs[0].outcome.as_ref().unwrap_err();
        assert!(
            matches!(err, WorkloadError::Comm(CommError::PeerClosed { peer: 1 })),
            "{err}"
        );
        assert_eq!(runs[0].progress.last(), Some(&(3, 6)));
    }

    #[test]
    fn run_settings_are_validated_naming_the_value() {
        let zero_batch = TpRunConfig {
            batch: 0,
            ..small(1, 1)
        };
        assert_eq!(
            zero_batch.validate().unwrap_err().to_string(),
            "batch size '0' must be at least 1"
        );
        let zero_decode = TpRunConfig {
            decode_tokens: 0,
            rounds: 1,
            ..small(1, 1)
        };
        assert!(
            zero_decode
                .validate()
                .unwrap_err()
                .to_string()
                .contains("decode token count '0'")
        );
        let long = TpRunConfig {
            prompt_len: 200,
            decode_tokens: 100,
            rounds: 1,
            ..small(1, 1)
        };
        assert_eq!(
            long.validate().unwrap_err().to_string(),
            "prompt length 200 plus 100 decode tokens is '300' tokens, \
             more than the 256 that preset 'tiny' allows"
        );
        let bad_tp = small(3, 1);
        assert!(bad_tp.validate().unwrap_err().to_string().contains("'3'"));
        TpRunConfig {
            prompt_len: 250,
            decode_tokens: 6,
            rounds: 1,
            ..small(2, 1)
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn a_ring_that_does_not_match_the_run_is_refused() {
        let recorder = Recorder::new(Rank(0), 16);
        let err = run_tp_rank(
            &small(2, 1),
            0,
            &mut Ring::solo(),
            &recorder,
            &mut |_, _| {},
        );
        assert_eq!(
            err.unwrap_err().to_string(),
            "the ring connects rank 0 of 1 but this run is rank '0' of tensor-parallel degree 2"
        );
    }

    #[test]
    fn prompts_are_seeded_and_in_the_vocabulary() {
        let config = small(1, 5);
        let prompts = config.prompts(0);
        assert_eq!(prompts.len(), 2 * 8);
        assert_eq!(prompts, config.prompts(0));
        assert_ne!(prompts, small(1, 6).prompts(0));
        assert!(prompts.iter().all(|&t| t < 4096));
    }
}
