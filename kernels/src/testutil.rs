//! Helpers the unit tests share: reproducible random inputs and f32-versus-f64 comparisons.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A generator seeded from a fresh seed; the seed goes into every failure message so a failing
/// run can be replayed with [`rng_from`].
pub(crate) fn fresh_rng() -> (StdRng, u64) {
    let seed: u64 = rand::rng().random();
    (rng_from(seed), seed)
}

pub(crate) fn rng_from(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `n` values drawn uniformly from `[-1, 1)`.
pub(crate) fn random_vec(rng: &mut StdRng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

pub(crate) fn to_f64(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| f64::from(v)).collect()
}

/// Asserts `|got - want| <= abs_tol + rel_tol * |want|` element-wise.
pub(crate) fn assert_close(
    got: &[f32],
    want: &[f64],
    abs_tol: f64,
    rel_tol: f64,
    seed: u64,
    what: &str,
) {
    assert_eq!(
        got.len(),
        want.len(),
        "{what}: lengths differ (seed {seed})"
    );
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (f64::from(g) - w).abs();
        assert!(
            err <= abs_tol + rel_tol * w.abs(),
            "{what}: element {i} is {g}, reference {w} (error {err:e}; seed {seed})"
        );
    }
}

/// Row-major `a[m, k] · b[k, n]` in f64.
pub(crate) fn matmul_f64(a: &[f64], b: &[f64], m: usize, k: usize, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
        }
    }
    out
}
