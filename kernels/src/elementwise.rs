//! Element-wise ops and row reductions: the residual add, the SiLU gate, softmax, and the dot
//! product that attention is built from.

use crate::cost::{Cost, f32_bytes};

/// Independent partial sums in [`dot`]: enough lanes for the compiler to vectorize the loop
/// (float addition is not associative, so it will not reorder one running sum by itself), and
/// shorter dependency chains round off less than one long running sum.
const LANES: usize = 8;

/// Residual add: `x[i] += y[i]`.
///
/// Cost model: 1 flop per element; bytes = x read + y read + x written = 3 × 4 bytes per element.
///
/// # Panics
///
/// If `x` and `y` differ in length.
pub fn add_in_place(x: &mut [f32], y: &[f32]) -> Cost {
    assert_eq!(
        x.len(),
        y.len(),
        "add_in_place: x has {} elements, y has {}",
        x.len(),
        y.len()
    );
    for (xi, &yi) in x.iter_mut().zip(y) {
        *xi += yi;
    }
    Cost {
        flops: x.len() as u64,
        bytes: f32_bytes(3 * x.len()),
    }
}

/// The gate of a SiLU-gated MLP: `out[i] = silu(gate[i]) * up[i]`, with
/// `silu(g) = g / (1 + exp(-g))`.
///
/// Cost model: 5 flops per element (negate, exp, add, divide, multiply); bytes = gate and up read,
/// out written = 3 × 4 bytes per element.
///
/// # Panics
///
/// If `gate`, `up` and `out` are not all the same length.
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) -> Cost {
    assert_eq!(
        gate.len(),
        up.len(),
        "silu_mul: gate has {} elements, up has {}",
        gate.len(),
        up.len()
    );
    assert_eq!(
        out.len(),
        gate.len(),
        "silu_mul: out has {} elements, gate has {}",
        out.len(),
        gate.len()
    );
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = silu(g) * u;
    }
    silu_mul_cost(gate.len())
}

/// [`silu_mul`] writing into `gate`, so the MLP needs one scratch buffer fewer.
pub(crate) fn silu_mul_in_place(gate: &mut [f32], up: &[f32]) -> Cost {
    assert_eq!(
        gate.len(),
        up.len(),
        "silu_mul: gate has {} elements, up has {}",
        gate.len(),
        up.len()
    );
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = silu(*g) * u;
    }
    silu_mul_cost(gate.len())
}

fn silu(g: f32) -> f32 {
    g / (1.0 + (-g).exp())
}

fn silu_mul_cost(elements: usize) -> Cost {
    Cost {
        flops: 5 * elements as u64,
        bytes: f32_bytes(3 * elements),
    }
}

/// Softmax of one row, in place. Numerically stable: the row's maximum is subtracted before
/// `exp`, so large logits (e.g. 1000.0) do not overflow to infinity.
///
/// Cost model for n elements: 5n + 1 flops (n comparisons for the max, n subtractions, n exps,
/// n adds for the sum, one reciprocal, n multiplies); bytes = the row read once and written once
/// (2 × 4 bytes per element; the later passes hit cache). An empty row costs nothing.
pub fn softmax(row: &mut [f32]) -> Cost {
    if row.is_empty() {
        return Cost::default();
    }
    let max = row.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let inv_sum = 1.0 / sum;
    for v in row.iter_mut() {
        *v *= inv_sum;
    }
    softmax_cost(row.len())
}

/// The [`softmax`] cost model for a row of `n` elements.
pub(crate) fn softmax_cost(n: usize) -> Cost {
    if n == 0 {
        return Cost::default();
    }
    Cost {
        flops: 5 * n as u64 + 1,
        bytes: f32_bytes(2 * n),
    }
}

/// Dot product of two equal-length vectors, summed in [`LANES`] partial sums.
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0.0f32; LANES];
    let a_chunks = a.chunks_exact(LANES);
    let b_chunks = b.chunks_exact(LANES);
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (ca, cb) in a_chunks.zip(b_chunks) {
        for lane in 0..LANES {
            acc[lane] += ca[lane] * cb[lane];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `acc[i] += w * x[i]`: accumulates one weighted value row in attention.
pub(crate) fn axpy(acc: &mut [f32], w: f32, x: &[f32]) {
    debug_assert_eq!(acc.len(), x.len());
    for (a, &xi) in acc.iter_mut().zip(x) {
        *a += w * xi;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, fresh_rng, random_vec, to_f64};

    fn silu_f64(g: f64) -> f64 {
        g / (1.0 + (-g).exp())
    }

    #[test]
    fn add_in_place_matches_f64_reference() {
        let (mut rng, seed) = fresh_rng();
        let mut x = random_vec(&mut rng, 37);
        let y = random_vec(&mut rng, 37);
        let want: Vec<f64> = x
            .iter()
            .zip(&y)
            .map(|(&a, &b)| f64::from(a) + f64::from(b))
            .collect();
        add_in_place(&mut x, &y);
        assert_close(&x, &want, 1e-6, 1e-6, seed, "add_in_place");
    }

    #[test]
    fn silu_mul_matches_f64_reference() {
        let (mut rng, seed) = fresh_rng();
        let gate: Vec<f32> = random_vec(&mut rng, 53).iter().map(|g| g * 8.0).collect();
        let up = random_vec(&mut rng, 53);
        let want: Vec<f64> = to_f64(&gate)
            .iter()
            .zip(to_f64(&up))
            .map(|(&g, u)| silu_f64(g) * u)
            .collect();
        let mut out = vec![0.0; 53];
        silu_mul(&gate, &up, &mut out);
        assert_close(&out, &want, 1e-6, 1e-5, seed, "silu_mul");
        let mut in_place = gate.clone();
        silu_mul_in_place(&mut in_place, &up);
        assert_eq!(
            in_place, out,
            "in-place and out-of-place silu_mul differ (seed {seed})"
        );
    }

    #[test]
    fn softmax_matches_f64_reference_and_sums_to_one() {
        let (mut rng, seed) = fresh_rng();
        let mut row: Vec<f32> = random_vec(&mut rng, 100).iter().map(|v| v * 10.0).collect();
        let x = to_f64(&row);
        let max = x.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let sum: f64 = x.iter().map(|v| (v - max).exp()).sum();
        let want: Vec<f64> = x.iter().map(|v| (v - max).exp() / sum).collect();
        softmax(&mut row);
        assert_close(&row, &want, 1e-7, 1e-5, seed, "softmax");
        let total: f64 = row.iter().map(|&v| f64::from(v)).sum();
        assert!(
            (total - 1.0).abs() < 1e-5,
            "softmax sums to {total} (seed {seed})"
        );
    }

    #[test]
    fn softmax_is_stable_for_large_inputs() {
        let mut row = [1000.0f32, 1000.0, 999.0, -1000.0];
        softmax(&mut row);
        assert!(
            row.iter().all(|v| v.is_finite()),
            "softmax overflowed: {row:?}"
        );
        let e = (-1.0f64).exp();
        let want = [1.0 / (2.0 + e), 1.0 / (2.0 + e), e / (2.0 + e), 0.0];
        assert_close(&row, &want, 1e-7, 1e-6, 0, "softmax of large logits");
    }

    #[test]
    fn dot_matches_f64_reference_across_lane_remainders() {
        let (mut rng, seed) = fresh_rng();
        for n in [0, 1, 7, 8, 9, 64, 131] {
            let a = random_vec(&mut rng, n);
            let b = random_vec(&mut rng, n);
            let want: f64 = to_f64(&a).iter().zip(to_f64(&b)).map(|(x, y)| x * y).sum();
            assert_close(
                &[dot(&a, &b)],
                &[want],
                1e-6 * n as f64,
                1e-5,
                seed,
                &format!("dot of {n}"),
            );
        }
    }

    #[test]
    fn costs_match_hand_computed_values() {
        let mut x = [0.0f32; 10];
        // 10 adds; (10 + 10 + 10) elements × 4 bytes.
        assert_eq!(
            add_in_place(&mut x, &[1.0; 10]),
            Cost {
                flops: 10,
                bytes: 120
            }
        );
        // 5 × 10 flops; 30 elements × 4 bytes.
        assert_eq!(
            silu_mul(&[0.5; 10], &[1.0; 10], &mut x),
            Cost {
                flops: 50,
                bytes: 120
            }
        );
        // 5 × 10 + 1 flops; 20 elements × 4 bytes.
        assert_eq!(
            softmax(&mut x),
            Cost {
                flops: 51,
                bytes: 80
            }
        );
        assert_eq!(softmax(&mut []), Cost::default());
    }
}
