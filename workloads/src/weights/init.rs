//! The seeded generator every synthetic tensor comes from: one ChaCha stream per tensor, so a
//! tensor's values depend only on the seed and the tensor, and any block of it can be drawn
//! without drawing the rest (element `k` of a tensor is word `k` of its stream).
//!
//! Matrices are uniform with standard deviation `1/sqrt(fan_in)` (activations keep unit scale),
//! norm weights are 1 plus a little noise (a wrong slice or a skipped norm shows in the output),
//! embeddings have unit scale.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::ops::Range;

/// How far norm weights stray from 1, like a trained model's.
pub(crate) const NORM_SPREAD: f32 = 0.1;
/// Streams of the tensors outside the layers.
pub(crate) const EMBEDDING_STREAM: u64 = 0;
pub(crate) const FINAL_NORM_STREAM: u64 = 1;
pub(crate) const LM_HEAD_STREAM: u64 = 2;
/// Layer `l`'s tensors use streams `LAYER_STREAMS + LAYER_STRIDE * l + i`, `i < LAYER_STRIDE`.
pub(crate) const LAYER_STREAMS: u64 = 16;
pub(crate) const LAYER_STRIDE: u64 = 16;
/// Expert `e` of layer `l` uses streams `EXPERT_STREAMS + 4 * (l * MAX_EXPERTS + e) + t`, far
/// above every layer stream.
pub(crate) const EXPERT_STREAMS: u64 = 1 << 48;
pub(crate) const MAX_EXPERTS: u64 = 1 << 16;

/// The init scale that keeps activations at unit scale through a `[fan_in, _]` matrix.
pub(crate) fn fan_in_std(fan_in: usize) -> f32 {
    1.0 / (fan_in as f32).sqrt()
}

/// `len` values uniform on `[-a, a)` with standard deviation `std` (a = std·√3).
#[cfg(test)]
pub(crate) fn uniform(seed: u64, stream: u64, len: usize, std: f32) -> Vec<f32> {
    uniform_block(seed, stream, len, 0..1, 0..len, std)
}

/// The block `rows × cols` of the row-major matrix, `width` wide, that `uniform` would draw
/// whole: the same values, drawn by seeking to each row's first column.
pub(crate) fn uniform_block(
    seed: u64,
    stream: u64,
    width: usize,
    rows: Range<usize>,
    cols: Range<usize>,
    std: f32,
) -> Vec<f32> {
    let mut rng = stream_rng(seed, stream);
    let half_width = std * 3f32.sqrt();
    let mut out = Vec::with_capacity(rows.len() * cols.len());
    for row in rows {
        rng.set_word_pos((row * width + cols.start) as u128);
        out.extend((0..cols.len()).map(|_| (rng.random::<f32>() * 2.0 - 1.0) * half_width));
    }
    out
}

/// A norm weight: 1 plus a little noise.
pub(crate) fn norm(seed: u64, stream: u64, len: usize) -> Vec<f32> {
    let mut rng = stream_rng(seed, stream);
    (0..len)
        .map(|_| 1.0 + (rng.random::<f32>() * 2.0 - 1.0) * NORM_SPREAD)
        .collect()
}

fn stream_rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_holds_the_values_the_whole_matrix_has_there() {
        let (rows, cols) = (7, 13);
        let whole = uniform(3, 42, rows * cols, 0.5);
        let block = uniform_block(3, 42, cols, 2..5, 4..11, 0.5);
        let expected: Vec<f32> = (2..5)
            .flat_map(|r| whole[r * cols + 4..r * cols + 11].to_vec())
            .collect();
        assert_eq!(block, expected);
    }

    #[test]
    fn uniform_draws_the_stream_in_order_as_it_always_has() {
        // The first generator, written out: `tiny`'s outputs depend on these exact values.
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        rng.set_stream(17);
        let a = 0.25 * 3f32.sqrt();
        let first: Vec<f32> = (0..100)
            .map(|_| (rng.random::<f32>() * 2.0 - 1.0) * a)
            .collect();
        assert_eq!(uniform(9, 17, 100, 0.25), first);
    }

    #[test]
    fn streams_and_seeds_give_different_values() {
        let a = uniform(1, 5, 8, 1.0);
        assert_ne!(a, uniform(1, 6, 8, 1.0));
        assert_ne!(a, uniform(2, 5, 8, 1.0));
        assert_eq!(a, uniform(1, 5, 8, 1.0));
    }
}
