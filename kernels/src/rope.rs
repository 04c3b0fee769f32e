//! Rotary position embedding (RoPE) in the Hugging Face Llama "rotate half" convention.

use crate::cost::{Cost, f32_bytes};

/// Bytes of one position index.
const POSITION_BYTES: u64 = std::mem::size_of::<usize>() as u64;

/// Rotates the heads of `x` (`[positions.len(), n_heads * head_dim]`) in place by their positions.
///
/// Hugging Face Llama convention ("rotate half"): for `i < head_dim / 2`,
/// `freq = theta^(-2i / head_dim)` and the pair `(x[i], x[i + head_dim / 2])` of each head is
/// rotated by the angle `pos * freq`. Angles are computed in f64 so that long positions lose no
/// precision before being rounded to f32 sines and cosines.
///
/// Cost model: 6 flops per rotated pair (4 multiplies, 2 adds), i.e. 3 per element, plus 4 per
/// (position, frequency) for the angle (power, multiply, sine, cosine; shared by all heads);
/// bytes = positions read (8 each) + x read and written (2 × 4 bytes per element).
///
/// # Panics
///
/// If `head_dim` is odd or `x.len() != positions.len() * n_heads * head_dim`.
pub fn rope(
    x: &mut [f32],
    positions: &[usize],
    n_heads: usize,
    head_dim: usize,
    theta: f32,
) -> Cost {
    assert_eq!(head_dim % 2, 0, "rope: head_dim {head_dim} is odd");
    let row_len = n_heads * head_dim;
    assert_eq!(
        x.len(),
        positions.len() * row_len,
        "rope: x has {} elements, expected [{}, {n_heads} * {head_dim}]",
        x.len(),
        positions.len()
    );
    if row_len == 0 {
        return Cost::default();
    }
    let half = head_dim / 2;
    for (row, &pos) in x.chunks_exact_mut(row_len).zip(positions) {
        for i in 0..half {
            let freq = f64::from(theta).powf(-2.0 * i as f64 / head_dim as f64);
            let (sin, cos) = (pos as f64 * freq).sin_cos();
            rotate_pair_in_heads(row, head_dim, i, sin as f32, cos as f32);
        }
    }
    rope_cost(positions.len(), n_heads, head_dim)
}

/// Rotates pair `(i, i + head_dim / 2)` of every head in one row.
fn rotate_pair_in_heads(row: &mut [f32], head_dim: usize, i: usize, sin: f32, cos: f32) {
    let half = head_dim / 2;
    for head in row.chunks_exact_mut(head_dim) {
        let (a, b) = (head[i], head[i + half]);
        head[i] = a * cos - b * sin;
        head[i + half] = b * cos + a * sin;
    }
}

fn rope_cost(rows: usize, n_heads: usize, head_dim: usize) -> Cost {
    let elements = rows * n_heads * head_dim;
    Cost {
        flops: (3 * elements + 4 * rows * (head_dim / 2)) as u64,
        bytes: rows as u64 * POSITION_BYTES + f32_bytes(2 * elements),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, fresh_rng, random_vec, to_f64};

    /// Hugging Face's formulation: `x * cos + rotate_half(x) * sin` per head, in f64.
    fn rope_f64(
        x: &[f64],
        positions: &[usize],
        n_heads: usize,
        head_dim: usize,
        theta: f64,
    ) -> Vec<f64> {
        let half = head_dim / 2;
        let mut out = x.to_vec();
        for (r, &pos) in positions.iter().enumerate() {
            for h in 0..n_heads {
                let base = (r * n_heads + h) * head_dim;
                for j in 0..head_dim {
                    let angle = pos as f64 * theta.powf(-2.0 * (j % half) as f64 / head_dim as f64);
                    let rotated = if j < half {
                        -x[base + j + half]
                    } else {
                        x[base + j - half]
                    };
                    out[base + j] = x[base + j] * angle.cos() + rotated * angle.sin();
                }
            }
        }
        out
    }

    #[test]
    fn rope_matches_f64_reference() {
        let (mut rng, seed) = fresh_rng();
        let (n_heads, head_dim, theta) = (3, 16, 10_000.0f32);
        let positions = [0usize, 1, 5, 77, 4095];
        let mut x = random_vec(&mut rng, positions.len() * n_heads * head_dim);
        let want = rope_f64(&to_f64(&x), &positions, n_heads, head_dim, f64::from(theta));
        rope(&mut x, &positions, n_heads, head_dim, theta);
        assert_close(&x, &want, 1e-6, 1e-5, seed, "rope");
    }

    #[test]
    fn rope_at_position_zero_is_identity() {
        let (mut rng, seed) = fresh_rng();
        let x = random_vec(&mut rng, 2 * 4 * 8);
        let mut rotated = x.clone();
        rope(&mut rotated, &[0, 0], 4, 8, 500_000.0);
        assert_eq!(rotated, x, "seed {seed}");
    }

    #[test]
    fn rope_rotates_half_pairs_by_hand_computed_angles() {
        // head_dim 4, theta 100, position 1: pair (x0, x2) turns by 1 rad, pair (x1, x3) by
        // 100^(-1/2) = 0.1 rad.
        let mut x = [1.0f32, 1.0, 0.0, 0.0];
        rope(&mut x, &[1], 1, 4, 100.0);
        let want = [1f64.cos(), 0.1f64.cos(), 1f64.sin(), 0.1f64.sin()];
        assert_close(&x, &want, 1e-7, 1e-6, 0, "rope by hand");
    }

    #[test]
    fn rope_cost_matches_hand_computed_value() {
        let mut x = [0.0f32; 16];
        // 2 positions × 2 heads × 4: 3 × 16 + 4 × 2 × 2 = 64 flops;
        // 2 positions × 8 bytes + 2 × 16 elements × 4 = 144 bytes.
        let cost = rope(&mut x, &[3, 4], 2, 4, 10_000.0);
        assert_eq!(
            cost,
            Cost {
                flops: 64,
                bytes: 144
            }
        );
    }
}
