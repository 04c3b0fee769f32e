//! RMS normalization, the pre-attention and pre-MLP norm of Llama-style decoders.

use crate::cost::{Cost, f32_bytes};
use crate::elementwise::dot;

/// RMS norm of each row: `out = x / sqrt(mean(x²) + eps) * weight`, with
/// `rows = x.len() / weight.len()` rows of `weight.len()` elements.
///
/// Cost model for `rows` rows of `h` elements: 4 flops per element (square and add for the
/// mean, then scale and weight multiplies) plus 3 per row (divide by h, add eps, reciprocal
/// square root counted as one); bytes = x read + out written + weight read once (it stays in
/// cache across rows) = (2 × rows × h + h) × 4.
///
/// # Panics
///
/// If `weight` is empty, `x.len()` is not a multiple of `weight.len()`, or `out.len() != x.len()`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) -> Cost {
    let hidden = weight.len();
    assert!(hidden > 0, "rms_norm: weight is empty");
    assert_eq!(
        x.len() % hidden,
        0,
        "rms_norm: x has {} elements, not a multiple of weight's {hidden}",
        x.len()
    );
    assert_eq!(
        out.len(),
        x.len(),
        "rms_norm: out has {} elements, x has {}",
        out.len(),
        x.len()
    );
    for (x_row, out_row) in x.chunks_exact(hidden).zip(out.chunks_exact_mut(hidden)) {
        let mean_square = dot(x_row, x_row) / hidden as f32;
        let inv_rms = 1.0 / (mean_square + eps).sqrt();
        for ((o, &xi), &w) in out_row.iter_mut().zip(x_row).zip(weight) {
            *o = xi * inv_rms * w;
        }
    }
    rms_norm_cost(x.len() / hidden, hidden)
}

fn rms_norm_cost(rows: usize, hidden: usize) -> Cost {
    Cost {
        flops: (4 * rows * hidden + 3 * rows) as u64,
        bytes: f32_bytes(2 * rows * hidden + hidden),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, fresh_rng, random_vec, to_f64};

    #[test]
    fn rms_norm_matches_f64_reference() {
        let (mut rng, seed) = fresh_rng();
        let (rows, hidden, eps) = (3, 67, 1e-5f32);
        let x = random_vec(&mut rng, rows * hidden);
        let weight = random_vec(&mut rng, hidden);
        let mut want = Vec::new();
        for row in to_f64(&x).chunks(hidden) {
            let ms = row.iter().map(|v| v * v).sum::<f64>() / hidden as f64;
            let inv = 1.0 / (ms + f64::from(eps)).sqrt();
            want.extend(
                row.iter()
                    .zip(&weight)
                    .map(|(v, &w)| v * inv * f64::from(w)),
            );
        }
        let mut out = vec![0.0; rows * hidden];
        rms_norm(&x, &weight, eps, &mut out);
        assert_close(&out, &want, 1e-5, 1e-4, seed, "rms_norm");
    }

    #[test]
    fn rms_norm_cost_matches_hand_computed_value() {
        let mut out = [0.0f32; 8];
        // 2 rows of 4: 4 × 8 + 3 × 2 = 38 flops; (2 × 8 + 4) elements × 4 = 80 bytes.
        let cost = rms_norm(&[1.0; 8], &[1.0; 4], 1e-6, &mut out);
        assert_eq!(
            cost,
            Cost {
                flops: 38,
                bytes: 80
            }
        );
    }

    #[test]
    #[should_panic(expected = "not a multiple")]
    fn rms_norm_rejects_ragged_rows() {
        rms_norm(&[1.0; 7], &[1.0; 4], 1e-6, &mut [0.0; 7]);
    }
}
