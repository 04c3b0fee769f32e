//! The SiLU-gated MLP block of a Llama-style decoder layer.

use crate::cost::Cost;
use crate::elementwise::silu_mul_in_place;
use crate::matmul::matmul;

/// Caller-owned intermediate buffers for [`mlp`], so the decode loop does not allocate.
///
/// [`mlp`] grows them to `m * inter` elements each when needed and never shrinks them: reuse one
/// scratch per thread across layers and steps and it settles at the largest shape seen.
#[derive(Debug, Default)]
pub struct MlpScratch {
    gate: Vec<f32>,
    up: Vec<f32>,
}

/// `out[m, hidden] = (silu(x · w_gate) * (x · w_up)) · w_down`, with `w_gate` and `w_up`
/// `[hidden, inter]` and `w_down` `[inter, hidden]`, all row-major.
///
/// Cost model: the sum of its parts: two [`matmul`]s `[m, hidden] · [hidden, inter]`, one
/// [`crate::silu_mul`] over `m * inter` elements and one [`matmul`] `[m, inter] · [inter, hidden]`:
/// flops = 6 × m × hidden × inter + 5 × m × inter; bytes = each part's bytes (x is counted for
/// both up-projections, as each matmul reads it).
///
/// # Panics
///
/// If `x` is not `[m, hidden]`, a weight has the wrong number of elements, or `out` is not
/// `[m, hidden]`.
#[allow(clippy::too_many_arguments)] // the signature other crates code against
pub fn mlp(
    x: &[f32],
    w_gate: &[f32],
    w_up: &[f32],
    w_down: &[f32],
    m: usize,
    hidden: usize,
    inter: usize,
    scratch: &mut MlpScratch,
    out: &mut [f32],
) -> Cost {
    check_shape("x", x.len(), m, hidden);
    check_shape("w_gate", w_gate.len(), hidden, inter);
    check_shape("w_up", w_up.len(), hidden, inter);
    check_shape("w_down", w_down.len(), inter, hidden);
    check_shape("out", out.len(), m, hidden);
    let elements = m * inter;
    scratch.gate.resize(elements.max(scratch.gate.len()), 0.0);
    scratch.up.resize(elements.max(scratch.up.len()), 0.0);
    let gate = &mut scratch.gate[..elements];
    let up = &mut scratch.up[..elements];
    let mut cost = matmul(x, w_gate, m, hidden, inter, gate);
    cost += matmul(x, w_up, m, hidden, inter, up);
    cost += silu_mul_in_place(gate, up);
    cost += matmul(gate, w_down, m, inter, hidden, out);
    cost
}

fn check_shape(name: &str, elements: usize, rows: usize, cols: usize) {
    assert_eq!(
        elements,
        rows * cols,
        "mlp: {name} has {elements} elements, expected [{rows}, {cols}]"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, fresh_rng, matmul_f64, random_vec, to_f64};

    fn mlp_f64(
        x: &[f32],
        w_gate: &[f32],
        w_up: &[f32],
        w_down: &[f32],
        m: usize,
        hidden: usize,
        inter: usize,
    ) -> Vec<f64> {
        let x = to_f64(x);
        let gate = matmul_f64(&x, &to_f64(w_gate), m, hidden, inter);
        let up = matmul_f64(&x, &to_f64(w_up), m, hidden, inter);
        let act: Vec<f64> = gate
            .iter()
            .zip(&up)
            .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
            .collect();
        matmul_f64(&act, &to_f64(w_down), m, inter, hidden)
    }

    #[test]
    fn mlp_matches_f64_reference_and_reuses_scratch_across_shapes() {
        let (mut rng, seed) = fresh_rng();
        let (hidden, inter) = (16, 40);
        let w_gate = random_vec(&mut rng, hidden * inter);
        let w_up = random_vec(&mut rng, hidden * inter);
        let w_down = random_vec(&mut rng, inter * hidden);
        let mut scratch = MlpScratch::default();
        // A prefill-sized call, then a smaller decode-sized one with the same scratch.
        for m in [5, 2] {
            let x = random_vec(&mut rng, m * hidden);
            let mut out = vec![f32::NAN; m * hidden];
            mlp(
                &x,
                &w_gate,
                &w_up,
                &w_down,
                m,
                hidden,
                inter,
                &mut scratch,
                &mut out,
            );
            let want = mlp_f64(&x, &w_gate, &w_up, &w_down, m, hidden, inter);
            // The down projection sums `inter` terms whose size grows with `hidden`.
            let abs_tol = 1e-6 * (hidden * inter) as f64;
            assert_close(
                &out,
                &want,
                abs_tol,
                1e-4,
                seed,
                &format!("mlp with m = {m}"),
            );
        }
        assert_eq!(
            scratch.gate.len(),
            5 * inter,
            "scratch keeps its largest size"
        );
    }

    #[test]
    fn mlp_cost_matches_hand_computed_value() {
        // m = 1, hidden = 2, inter = 3. Gate and up: 2 × 1 × 2 × 3 = 12 flops and
        // (2 + 6 + 3) × 4 = 44 bytes each; silu_mul: 15 flops, 9 × 4 = 36 bytes;
        // down: 12 flops, (3 + 6 + 2) × 4 = 44 bytes. Total 51 flops, 168 bytes.
        let mut out = [0.0f32; 2];
        let cost = mlp(
            &[1.0; 2],
            &[1.0; 6],
            &[1.0; 6],
            &[1.0; 6],
            1,
            2,
            3,
            &mut MlpScratch::default(),
            &mut out,
        );
        assert_eq!(
            cost,
            Cost {
                flops: 51,
                bytes: 168
            }
        );
    }

    #[test]
    #[should_panic(expected = "w_down has 5 elements")]
    fn mlp_rejects_mismatched_weights() {
        mlp(
            &[1.0; 2],
            &[1.0; 6],
            &[1.0; 6],
            &[1.0; 5],
            1,
            2,
            3,
            &mut MlpScratch::default(),
            &mut [0.0; 2],
        );
    }
}
