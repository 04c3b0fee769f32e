//! Causal grouped-query attention over a [`KvCache`], for prefill and decode alike.

use std::cell::RefCell;

use crate::cost::{Cost, f32_bytes};
use crate::elementwise::{axpy, dot, softmax};
use crate::kv_cache::KvCache;

thread_local! {
    /// The score row of [`attention`], kept so that calls through the scratch-less entry point
    /// do not allocate once it has grown.
    static SCORES: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// [`attention_with_scratch`] with a per-thread score buffer, for callers that keep none.
pub fn attention(
    q: &[f32],
    cache: &KvCache,
    batch: usize,
    new_tokens: usize,
    n_heads: usize,
    out: &mut [f32],
) -> Cost {
    SCORES.with_borrow_mut(|scores| {
        attention_with_scratch(q, cache, batch, new_tokens, n_heads, scores, out)
    })
}

/// Grouped-query attention of `new_tokens` query positions per sequence over everything in the
/// cache, causal.
///
/// The queries are the last `new_tokens` positions of the cache (positions
/// `cache.len() - new_tokens .. cache.len()`); a query at position p sees positions `0..=p`.
/// `q` is `[batch, new_tokens, n_heads * head_dim]` and `out` has the same shape. Query head h
/// reads kv head `h / (n_heads / n_kv_heads)`; scores are scaled by `1 / sqrt(head_dim)`.
/// Works for prefill (`new_tokens` = prompt length) and decode (`new_tokens` = 1).
///
/// `scores` is scratch for one score row; it grows to `cache.len()` elements and is reused, so
/// a caller that keeps it across calls never allocates.
///
/// Cost model: with `A` = positions attended summed over the queries of one sequence
/// (`new_tokens × (len - new_tokens) + new_tokens × (new_tokens + 1) / 2`), each query head
/// does per attended position a `head_dim` dot product (2 × head_dim flops), a scale (1) and a
/// weighted `head_dim` sum (2 × head_dim), plus a softmax over its row (5 per position + 1):
/// flops = batch × n_heads × (A × (4 × head_dim + 6) + new_tokens). Bytes = q read and out
/// written (2 × 4 per element) + the cached k and v of positions `0..len` read once per
/// sequence (a kv head's query group reuses them from cache).
///
/// # Panics
///
/// If `batch` differs from the cache's, the cache's `head_dim` is 0, `n_heads` is not a multiple of the cache's `n_kv_heads`,
/// the cache holds fewer than `new_tokens` positions, or `q`/`out` are not
/// `[batch, new_tokens, n_heads * head_dim]`.
pub fn attention_with_scratch(
    q: &[f32],
    cache: &KvCache,
    batch: usize,
    new_tokens: usize,
    n_heads: usize,
    scores: &mut Vec<f32>,
    out: &mut [f32],
) -> Cost {
    check_shapes(q, cache, batch, new_tokens, n_heads, out);
    let head_dim = cache.head_dim();
    let q_row = n_heads * head_dim;
    let start = cache.len() - new_tokens;
    if scores.len() < cache.len() {
        scores.resize(cache.len(), 0.0);
    }
    for b in 0..batch {
        for t in 0..new_tokens {
            let row = (b * new_tokens + t) * q_row;
            let q_heads = q[row..row + q_row].chunks_exact(head_dim);
            let out_heads = out[row..row + q_row].chunks_exact_mut(head_dim);
            for (h, (q_head, out_head)) in q_heads.zip(out_heads).enumerate() {
                let seen = &mut scores[..=start + t];
                attend_one(
                    q_head,
                    cache,
                    b,
                    h / (n_heads / cache.n_kv_heads()),
                    seen,
                    out_head,
                );
            }
        }
    }
    attention_cost(
        batch,
        new_tokens,
        n_heads,
        head_dim,
        cache.n_kv_heads(),
        cache.len(),
    )
}

fn check_shapes(
    q: &[f32],
    cache: &KvCache,
    batch: usize,
    new_tokens: usize,
    n_heads: usize,
    out: &[f32],
) {
    assert_eq!(
        batch,
        cache.batch(),
        "attention: batch {batch} but the cache holds {} sequences",
        cache.batch()
    );
    let n_kv = cache.n_kv_heads();
    assert!(cache.head_dim() > 0, "attention: the cache's head_dim is 0");
    assert!(
        n_kv > 0 && n_heads.is_multiple_of(n_kv),
        "attention: {n_heads} query heads cannot share {n_kv} kv heads evenly"
    );
    assert!(
        new_tokens <= cache.len(),
        "attention: {new_tokens} new tokens but the cache holds {}",
        cache.len()
    );
    let expected = batch * new_tokens * n_heads * cache.head_dim();
    let shape = format!("[{batch}, {new_tokens}, {n_heads} * {}]", cache.head_dim());
    assert_eq!(
        q.len(),
        expected,
        "attention: q has {} elements, expected {shape}",
        q.len()
    );
    assert_eq!(
        out.len(),
        expected,
        "attention: out has {} elements, expected {shape}",
        out.len()
    );
}

/// One query head of one query position: `scores` has one slot per position it may see.
fn attend_one(
    q_head: &[f32],
    cache: &KvCache,
    b: usize,
    kv_head: usize,
    scores: &mut [f32],
    out_head: &mut [f32],
) {
    let scale = 1.0 / (q_head.len() as f32).sqrt();
    for (pos, s) in scores.iter_mut().enumerate() {
        *s = dot(q_head, cache.key(b, pos, kv_head)) * scale;
    }
    softmax(scores);
    out_head.fill(0.0);
    for (pos, &w) in scores.iter().enumerate() {
        axpy(out_head, w, cache.value(b, pos, kv_head));
    }
}

/// The [`attention_with_scratch`] cost model for sequences of `len` positions.
pub(crate) fn attention_cost(
    batch: usize,
    new_tokens: usize,
    n_heads: usize,
    head_dim: usize,
    n_kv_heads: usize,
    len: usize,
) -> Cost {
    let start = len - new_tokens;
    let attended = new_tokens * start + new_tokens * (new_tokens + 1) / 2;
    // A softmax over n > 0 scores costs 5n + 1; every query sees at least its own position.
    let softmax_flops = 5 * attended + new_tokens;
    let per_head = attended * (4 * head_dim + 1) + softmax_flops;
    let q_elements = batch * new_tokens * n_heads * head_dim;
    let kv_elements = 2 * batch * len * n_kv_heads * head_dim;
    Cost {
        flops: (batch * n_heads * per_head) as u64,
        bytes: f32_bytes(2 * q_elements + kv_elements),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, fresh_rng, random_vec, to_f64};
    use rand::rngs::StdRng;

    struct Shape {
        batch: usize,
        n_heads: usize,
        n_kv: usize,
        head_dim: usize,
    }

    /// Causal GQA in f64 over `k`/`v` = `[batch, len, n_kv * head_dim]` (all positions so far)
    /// for queries `q` = `[batch, new, n_heads * head_dim]` at the last `new` positions.
    fn attention_f64(
        q: &[f64],
        k: &[f64],
        v: &[f64],
        s: &Shape,
        new: usize,
        len: usize,
    ) -> Vec<f64> {
        let (d, group) = (s.head_dim, s.n_heads / s.n_kv);
        let mut out = vec![0.0; q.len()];
        for b in 0..s.batch {
            for t in 0..new {
                let p = len - new + t;
                for h in 0..s.n_heads {
                    let qh = &q[((b * new + t) * s.n_heads + h) * d..][..d];
                    let kv_at = |pos: usize| ((b * len + pos) * s.n_kv + h / group) * d;
                    let scores: Vec<f64> = (0..=p)
                        .map(|pos| {
                            qh.iter()
                                .zip(&k[kv_at(pos)..])
                                .map(|(a, b)| a * b)
                                .sum::<f64>()
                                / (d as f64).sqrt()
                        })
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f64 = weights.iter().sum();
                    let oh = &mut out[((b * new + t) * s.n_heads + h) * d..][..d];
                    for (pos, w) in weights.iter().enumerate() {
                        for (o, vi) in oh.iter_mut().zip(&v[kv_at(pos)..]) {
                            *o += w / total * vi;
                        }
                    }
                }
            }
        }
        out
    }

    /// Random k/v for `tokens` positions: `[batch, tokens, n_kv * head_dim]`.
    fn random_kv(rng: &mut StdRng, s: &Shape, tokens: usize) -> (Vec<f32>, Vec<f32>) {
        let n = s.batch * tokens * s.n_kv * s.head_dim;
        (random_vec(rng, n), random_vec(rng, n))
    }

    /// Concatenates two `[batch, tokens, row]` tensors along the token axis.
    fn concat_tokens(
        a: &[f32],
        a_tokens: usize,
        b: &[f32],
        b_tokens: usize,
        batch: usize,
    ) -> Vec<f32> {
        let row = a.len() / (batch * a_tokens);
        (0..batch)
            .flat_map(|i| {
                a[i * a_tokens * row..(i + 1) * a_tokens * row]
                    .iter()
                    .chain(&b[i * b_tokens * row..(i + 1) * b_tokens * row])
            })
            .copied()
            .collect()
    }

    fn run(q: &[f32], cache: &KvCache, s: &Shape, new: usize) -> Vec<f32> {
        let mut out = vec![f32::NAN; q.len()];
        // A stale scratch longer than needed and full of NaN proves only the needed prefix is
        // used and every slot of it is written before it is read.
        let mut scores = vec![f32::NAN; cache.len() + 3];
        attention_with_scratch(q, cache, s.batch, new, s.n_heads, &mut scores, &mut out);
        assert_eq!(
            scores.len(),
            cache.len() + 3,
            "a long enough scratch is not resized"
        );
        out
    }

    #[test]
    fn prefill_matches_f64_reference() {
        let (mut rng, seed) = fresh_rng();
        let s = Shape {
            batch: 2,
            n_heads: 4,
            n_kv: 2,
            head_dim: 8,
        };
        let new = 5;
        let (k, v) = random_kv(&mut rng, &s, new);
        let q = random_vec(&mut rng, s.batch * new * s.n_heads * s.head_dim);
        let mut cache = KvCache::new(s.batch, 8, s.n_kv, s.head_dim);
        cache.append(&k, &v, new).expect("5 of 8 positions fit");
        let want = attention_f64(&to_f64(&q), &to_f64(&k), &to_f64(&v), &s, new, new);
        assert_close(
            &run(&q, &cache, &s, new),
            &want,
            1e-5,
            1e-4,
            seed,
            "prefill attention",
        );
    }

    #[test]
    fn prefill_is_causal() {
        let (mut rng, seed) = fresh_rng();
        let s = Shape {
            batch: 2,
            n_heads: 2,
            n_kv: 1,
            head_dim: 4,
        };
        let new = 4;
        let (k, v) = random_kv(&mut rng, &s, new);
        let q = random_vec(&mut rng, s.batch * new * s.n_heads * s.head_dim);
        let (mut k2, mut v2) = (k.clone(), v.clone());
        // Change only the last position of each sequence: earlier queries must not notice.
        let row = s.n_kv * s.head_dim;
        for b in 0..s.batch {
            let last = (b * new + new - 1) * row..(b * new + new) * row;
            k2[last.clone()].iter_mut().for_each(|x| *x += 1.0);
            v2[last].iter_mut().for_each(|x| *x -= 3.0);
        }
        let mut cache = KvCache::new(s.batch, new, s.n_kv, s.head_dim);
        let mut cache2 = cache.clone();
        cache.append(&k, &v, new).expect("fits exactly");
        cache2.append(&k2, &v2, new).expect("fits exactly");
        let (out, out2) = (run(&q, &cache, &s, new), run(&q, &cache2, &s, new));
        let q_row = s.n_heads * s.head_dim;
        for (i, (row, row2)) in out.chunks(q_row).zip(out2.chunks(q_row)).enumerate() {
            let last = i % new == new - 1;
            assert_eq!(
                row != row2,
                last,
                "query row {i}: changed = {} (seed {seed})",
                row != row2
            );
        }
    }

    /// Prefills `prompt` positions, then attends `new` more positions (decode when `new` = 1).
    fn check_after_prefill(s: &Shape, prompt: usize, new: usize) {
        let (mut rng, seed) = fresh_rng();
        let (k1, v1) = random_kv(&mut rng, s, prompt);
        let (k2, v2) = random_kv(&mut rng, s, new);
        let q = random_vec(&mut rng, s.batch * new * s.n_heads * s.head_dim);
        let mut cache = KvCache::new(s.batch, prompt + new + 2, s.n_kv, s.head_dim);
        cache.append(&k1, &v1, prompt).expect("prompt fits");
        cache.append(&k2, &v2, new).expect("new tokens fit");
        let k = concat_tokens(&k1, prompt, &k2, new, s.batch);
        let v = concat_tokens(&v1, prompt, &v2, new, s.batch);
        let want = attention_f64(&to_f64(&q), &to_f64(&k), &to_f64(&v), s, new, prompt + new);
        let what = format!("attention of {new} after {prompt}");
        assert_close(&run(&q, &cache, s, new), &want, 1e-5, 1e-4, seed, &what);
    }

    #[test]
    fn decode_with_gqa_and_batch_matches_f64_reference() {
        let s = Shape {
            batch: 3,
            n_heads: 8,
            n_kv: 2,
            head_dim: 16,
        };
        check_after_prefill(&s, 6, 1);
    }

    #[test]
    fn chunked_prefill_after_cached_positions_matches_f64_reference() {
        let s = Shape {
            batch: 2,
            n_heads: 8,
            n_kv: 2,
            head_dim: 16,
        };
        check_after_prefill(&s, 5, 3);
    }

    #[test]
    fn attention_cost_matches_hand_computed_value() {
        // 1 cached position, then 2 new; 2 query heads share 1 kv head of dim 4.
        // Query at position 1 sees 2 positions: dots 2 × 8 + scales 2 + weighted sums 2 × 8
        // + softmax 5 × 2 + 1 = 45 flops; at position 2 sees 3: 24 + 3 + 24 + 16 = 67.
        // (45 + 67) × 2 heads = 224 flops. Bytes: q and out 2 × 16 elements, k and v of 3
        // positions 2 × 3 × 4 elements: 56 × 4 = 224.
        let mut cache = KvCache::new(1, 3, 1, 4);
        cache.append(&[0.5; 4], &[0.5; 4], 1).expect("fits");
        cache.append(&[0.5; 8], &[0.5; 8], 2).expect("fits");
        let cost = attention(&[1.0; 16], &cache, 1, 2, 2, &mut [0.0; 16]);
        assert_eq!(
            cost,
            Cost {
                flops: 224,
                bytes: 224
            }
        );
    }

    #[test]
    #[should_panic(expected = "cannot share")]
    fn attention_rejects_uneven_head_groups() {
        let mut cache = KvCache::new(1, 2, 2, 4);
        cache.append(&[0.0; 8], &[0.0; 8], 1).expect("fits");
        attention(&[0.0; 12], &cache, 1, 1, 3, &mut [0.0; 12]);
    }
}
