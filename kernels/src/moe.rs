//! Mixture-of-experts helpers: the router's top-k gating and the weighted combine of expert
//! outputs.

use crate::cost::{Cost, f32_bytes};
use crate::elementwise::softmax_cost;

/// Bytes of one expert id.
const ID_BYTES: u64 = std::mem::size_of::<u32>() as u64;

/// Per token: softmax over `experts` router logits (`logits` is `[tokens, experts]`), keep the
/// top `k` (ties go to the lower expert id), and if `renormalize`, scale the kept weights to
/// sum to 1. `ids` and `weights` are `[tokens, k]`, best first.
///
/// Logits are ordered by [`f32::total_cmp`], so a row with a NaN logit (whose weights are all
/// NaN) still yields `k` distinct ids rather than an arbitrary selection.
///
/// Cost model per token: the softmax (5 × experts + 1), `k` selection passes of `experts`
/// comparisons each, and when renormalizing `k` adds, one reciprocal and `k` multiplies;
/// bytes = logits read + ids and weights written (4 bytes each).
///
/// # Panics
///
/// If `experts` is 0 or not a divisor of `logits.len()`, `k > experts`, or `ids`/`weights` are
/// not `[tokens, k]`.
pub fn top_k_gating(
    logits: &[f32],
    experts: usize,
    k: usize,
    renormalize: bool,
    ids: &mut [u32],
    weights: &mut [f32],
) -> Cost {
    let tokens = check_gating_shapes(logits, experts, k, ids, weights);
    let rows = logits.chunks_exact(experts);
    let id_rows = ids.chunks_exact_mut(k.max(1));
    let weight_rows = weights.chunks_exact_mut(k.max(1));
    if k > 0 {
        for (row, (ids, weights)) in rows.zip(id_rows.zip(weight_rows)) {
            gate_one(row, ids, weights, renormalize);
        }
    }
    gating_cost(tokens, experts, k, renormalize)
}

fn check_gating_shapes(
    logits: &[f32],
    experts: usize,
    k: usize,
    ids: &[u32],
    weights: &[f32],
) -> usize {
    assert!(
        experts > 0 && logits.len().is_multiple_of(experts),
        "top_k_gating: {} logits do not split into rows of {experts} experts",
        logits.len()
    );
    assert!(
        k <= experts,
        "top_k_gating: cannot keep {k} of {experts} experts"
    );
    let tokens = logits.len() / experts;
    assert_eq!(
        ids.len(),
        tokens * k,
        "top_k_gating: ids has {} elements, expected [{tokens}, {k}]",
        ids.len()
    );
    assert_eq!(
        weights.len(),
        tokens * k,
        "top_k_gating: weights has {} elements, expected [{tokens}, {k}]",
        weights.len()
    );
    tokens
}

/// One token's gating. Softmax is monotonic, so the experts are picked on the logits, and only
/// the kept ones are turned into probabilities. Selection is `k` passes, each taking the best
/// expert ranked strictly after the previous pick in (logit descending, id ascending) order, so
/// it needs no scratch and ties fall to the lower id.
fn gate_one(logits: &[f32], ids: &mut [u32], weights: &mut [f32], renormalize: bool) {
    let max = logits.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
    let total: f32 = logits.iter().map(|&x| (x - max).exp()).sum();
    let mut previous: Option<(f32, usize)> = None;
    for (id, weight) in ids.iter_mut().zip(weights.iter_mut()) {
        let after_previous = |c: &(f32, usize)| previous.is_none_or(|p| ranks_before(p, *c));
        let best = logits
            .iter()
            .enumerate()
            .map(|(e, &x)| (x, e))
            .filter(after_previous)
            .reduce(|best, c| if ranks_before(c, best) { c } else { best });
        let Some((logit, e)) = best else {
            unreachable!("k <= experts, so every pass finds an expert not yet taken")
        };
        (*id, *weight) = (e as u32, (logit - max).exp() / total);
        previous = best;
    }
    if renormalize {
        let inv_sum = 1.0 / weights.iter().sum::<f32>();
        weights.iter_mut().for_each(|w| *w *= inv_sum);
    }
}

/// Whether expert `a` (logit, id) comes before `b` in the selection order: higher logit first
/// ([`f32::total_cmp`], so NaN has a place too), then lower id.
fn ranks_before((la, ia): (f32, usize), (lb, ib): (f32, usize)) -> bool {
    la.total_cmp(&lb).then(ib.cmp(&ia)).is_gt()
}

fn gating_cost(tokens: usize, experts: usize, k: usize, renormalize: bool) -> Cost {
    let renorm_flops = if renormalize && k > 0 { 2 * k + 1 } else { 0 };
    let per_token = softmax_cost(experts).flops as usize + k * experts + renorm_flops;
    Cost {
        flops: (tokens * per_token) as u64,
        bytes: f32_bytes(tokens * experts) + (tokens * k) as u64 * (ID_BYTES + 4),
    }
}

/// `out += alpha * x`: combines one expert's output, scaled by its gate weight, into a
/// token's row.
///
/// Cost model: 2 flops per element (multiply, add); bytes = out read and written, x read =
/// 3 × 4 per element.
///
/// # Panics
///
/// If `out.len() != x.len()`.
pub fn scale_add(out: &mut [f32], x: &[f32], alpha: f32) -> Cost {
    assert_eq!(
        out.len(),
        x.len(),
        "scale_add: out has {} elements but x has {}",
        out.len(),
        x.len()
    );
    for (o, &xi) in out.iter_mut().zip(x) {
        *o += alpha * xi;
    }
    Cost {
        flops: 2 * out.len() as u64,
        bytes: f32_bytes(3 * out.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, fresh_rng, random_vec, to_f64};

    /// Top-k gating in f64 by sorting: ids and weights per token, best first.
    fn gating_f64(
        logits: &[f32],
        experts: usize,
        k: usize,
        renormalize: bool,
    ) -> (Vec<u32>, Vec<f64>) {
        let (mut ids, mut weights) = (Vec::new(), Vec::new());
        for row in to_f64(logits).chunks(experts) {
            let max = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let total: f64 = row.iter().map(|x| (x - max).exp()).sum();
            let mut order: Vec<usize> = (0..experts).collect();
            order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
            let kept: Vec<f64> = order[..k]
                .iter()
                .map(|&e| (row[e] - max).exp() / total)
                .collect();
            let norm = if renormalize { kept.iter().sum() } else { 1.0 };
            ids.extend(order[..k].iter().map(|&e| e as u32));
            weights.extend(kept.iter().map(|w| w / norm));
        }
        (ids, weights)
    }

    fn check_gating(tokens: usize, experts: usize, k: usize, renormalize: bool) {
        let (mut rng, seed) = fresh_rng();
        // Spread logits over [-4, 4) so the softmax is far from uniform.
        let logits: Vec<f32> = random_vec(&mut rng, tokens * experts)
            .iter()
            .map(|x| 4.0 * x)
            .collect();
        let mut ids = vec![u32::MAX; tokens * k];
        let mut weights = vec![f32::NAN; tokens * k];
        top_k_gating(&logits, experts, k, renormalize, &mut ids, &mut weights);
        let (want_ids, want_weights) = gating_f64(&logits, experts, k, renormalize);
        let what = format!("top {k} of {experts} (renormalize {renormalize})");
        assert_eq!(ids, want_ids, "{what} (seed {seed})");
        assert_close(&weights, &want_weights, 1e-6, 1e-5, seed, &what);
    }

    #[test]
    fn top_k_gating_matches_the_sorted_f64_reference() {
        for renormalize in [false, true] {
            check_gating(5, 8, 2, renormalize);
            check_gating(3, 64, 6, renormalize);
            check_gating(2, 4, 4, renormalize);
        }
    }

    #[test]
    fn top_k_gating_breaks_ties_toward_the_lower_id() {
        let logits = [1.0, 3.0, 3.0, 0.0, 3.0];
        let (mut ids, mut weights) = ([0u32; 3], [0.0f32; 3]);
        top_k_gating(&logits, 5, 3, true, &mut ids, &mut weights);
        assert_eq!(ids, [1, 2, 4]);
        assert!(
            weights.iter().all(|w| (w - 1.0 / 3.0).abs() < 1e-6),
            "{weights:?}"
        );
    }

    #[test]
    fn top_k_gating_with_k_zero_writes_nothing() {
        let cost = top_k_gating(&[1.0, 2.0], 2, 0, true, &mut [], &mut []);
        // Only the softmax: 5 × 2 + 1 flops; 2 logits read.
        assert_eq!(
            cost,
            Cost {
                flops: 11,
                bytes: 8
            }
        );
    }

    #[test]
    fn top_k_gating_cost_matches_hand_computed_value() {
        let (mut ids, mut weights) = ([0u32; 4], [0.0f32; 4]);
        let cost = top_k_gating(&[0.0; 8], 4, 2, true, &mut ids, &mut weights);
        // Per token: softmax 21 + selection 2 × 4 + renormalize 5 = 34; 2 tokens = 68 flops.
        // Bytes: 8 logits × 4 + 4 ids × 4 + 4 weights × 4 = 64.
        assert_eq!(
            cost,
            Cost {
                flops: 68,
                bytes: 64
            }
        );
        assert_eq!(ids, [0, 1, 0, 1]);
    }

    #[test]
    #[should_panic(expected = "cannot keep 5 of 4 experts")]
    fn top_k_gating_rejects_k_above_experts() {
        top_k_gating(&[0.0; 4], 4, 5, false, &mut [0; 5], &mut [0.0; 5]);
    }

    #[test]
    fn scale_add_matches_f64_reference() {
        let (mut rng, seed) = fresh_rng();
        let (mut out, x) = (random_vec(&mut rng, 37), random_vec(&mut rng, 37));
        let want: Vec<f64> = to_f64(&out)
            .iter()
            .zip(to_f64(&x))
            .map(|(o, xi)| o + 0.3 * xi)
            .collect();
        let cost = scale_add(&mut out, &x, 0.3);
        assert_close(&out, &want, 1e-6, 1e-6, seed, "scale_add");
        assert_eq!(
            cost,
            Cost {
                flops: 74,
                bytes: 37 * 12
            }
        );
    }

    #[test]
    #[should_panic(expected = "out has 2 elements but x has 3")]
    fn scale_add_rejects_mismatched_lengths() {
        scale_add(&mut [0.0; 2], &[0.0; 3], 1.0);
    }
}
