//! Dense matrix multiply through the `gemm` crate.

use crate::cost::{Cost, f32_bytes};

/// `out[m, n] = a[m, k] · b[k, n]`, all row-major; `out` is overwritten, not accumulated into.
///
/// Runs on `gemm` with [`crate::threads`] threads, 1 unless the process said otherwise: each
/// rank of a profiled workload is its own process doing one core's worth of work by default,
/// so a matmul that spawned threads would steal cores from the other ranks and blur the
/// per-rank profile.
///
/// Cost model: 2mkn flops (one multiply and one add per term); bytes = a and b read, out
/// written = (mk + kn + mn) × 4 (weights included: for a linear layer `b` is the weight).
///
/// # Panics
///
/// If `a.len() != m * k`, `b.len() != k * n` or `out.len() != m * n`.
pub fn matmul(a: &[f32], b: &[f32], m: usize, k: usize, n: usize, out: &mut [f32]) -> Cost {
    assert_eq!(
        a.len(),
        m * k,
        "matmul: a has {} elements, expected [{m}, {k}]",
        a.len()
    );
    assert_eq!(
        b.len(),
        k * n,
        "matmul: b has {} elements, expected [{k}, {n}]",
        b.len()
    );
    assert_eq!(
        out.len(),
        m * n,
        "matmul: out has {} elements, expected [{m}, {n}]",
        out.len()
    );
    // SAFETY: the asserts above make every pointer valid for the row-major shapes and strides
    // passed (row stride = row length, column stride = 1); `out` is a unique borrow, so it
    // aliases neither input. Slice lengths never exceed isize::MAX, so the strides fit isize.
    // With read_dst = false gemm ignores alpha and writes out = beta · a · b = a · b.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0f32,
            1.0f32,
            false,
            false,
            false,
            crate::threads::parallelism(),
        );
    }
    matmul_cost(m, k, n)
}

/// The [`matmul`] cost model.
pub(crate) fn matmul_cost(m: usize, k: usize, n: usize) -> Cost {
    Cost {
        flops: 2 * (m * k * n) as u64,
        bytes: f32_bytes(m * k + k * n + m * n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, fresh_rng, matmul_f64, random_vec, to_f64};

    fn check_against_reference(m: usize, k: usize, n: usize) {
        let (mut rng, seed) = fresh_rng();
        let a = random_vec(&mut rng, m * k);
        let b = random_vec(&mut rng, k * n);
        // NaN-filled output proves matmul overwrites rather than accumulates.
        let mut out = vec![f32::NAN; m * n];
        matmul(&a, &b, m, k, n, &mut out);
        let want = matmul_f64(&to_f64(&a), &to_f64(&b), m, k, n);
        // Inputs are in [-1, 1): each term's rounding error is at most ~6e-8 and they add up
        // over k terms.
        assert_close(
            &out,
            &want,
            1e-6 * k as f64,
            1e-4,
            seed,
            &format!("matmul {m}x{k}x{n}"),
        );
    }

    #[test]
    fn matmul_1x1x1() {
        check_against_reference(1, 1, 1);
    }

    #[test]
    fn matmul_3x7x5() {
        check_against_reference(3, 7, 5);
    }

    #[test]
    fn matmul_17x64x33() {
        check_against_reference(17, 64, 33);
    }

    #[test]
    fn matmul_large_enough_to_use_packed_kernels() {
        check_against_reference(70, 300, 129);
    }

    #[test]
    fn matmul_with_empty_inner_dimension_writes_zeros() {
        let mut out = [f32::NAN; 6];
        matmul(&[], &[], 2, 0, 3, &mut out);
        assert_eq!(out, [0.0; 6]);
    }

    #[test]
    fn matmul_cost_matches_hand_computed_value() {
        let mut out = [0.0f32; 6];
        // m = 2, k = 4, n = 3: 2 × 2 × 4 × 3 = 48 flops; (8 + 12 + 6) × 4 = 104 bytes.
        let cost = matmul(&[1.0; 8], &[1.0; 12], 2, 4, 3, &mut out);
        assert_eq!(
            cost,
            Cost {
                flops: 48,
                bytes: 104
            }
        );
        assert_eq!(out, [4.0; 6]);
    }

    #[test]
    #[should_panic(expected = "b has 11 elements, expected [4, 3]")]
    fn matmul_rejects_mismatched_shapes() {
        matmul(&[1.0; 8], &[1.0; 11], 2, 4, 3, &mut [0.0; 6]);
    }
}
