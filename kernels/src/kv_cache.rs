//! The per-layer key/value cache that lets decode steps attend to earlier positions without
//! recomputing them.

use crate::cost::{Cost, f32_bytes};
use crate::error::KernelError;

/// Per-layer KV cache for a batch of sequences that all have the same length.
///
/// Layout: `[batch, max_seq, n_kv_heads, head_dim]` for k and for v. Both are allocated in full
/// up front so appends in the decode loop never allocate.
#[derive(Debug, Clone)]
pub struct KvCache {
    k: Vec<f32>,
    v: Vec<f32>,
    batch: usize,
    max_seq: usize,
    n_kv_heads: usize,
    head_dim: usize,
    len: usize,
}

impl KvCache {
    /// An empty cache with room for `max_seq` positions of each of `batch` sequences.
    pub fn new(batch: usize, max_seq: usize, n_kv_heads: usize, head_dim: usize) -> KvCache {
        let elements = batch * max_seq * n_kv_heads * head_dim;
        KvCache {
            k: vec![0.0; elements],
            v: vec![0.0; elements],
            batch,
            max_seq,
            n_kv_heads,
            head_dim,
            len: 0,
        }
    }

    /// Positions filled (the same for every sequence).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no position has been filled yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the cache can hold (`max_seq`).
    pub fn capacity(&self) -> usize {
        self.max_seq
    }

    /// Sequences in the batch.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Key/value heads per position.
    pub fn n_kv_heads(&self) -> usize {
        self.n_kv_heads
    }

    /// Elements per head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Forgets every position so the cache can serve a new batch without reallocating.
    pub fn clear(&mut self) {
        self.len = 0;
    }

    /// Appends `new_tokens` positions after [`len`](Self::len). `k` and `v` are
    /// `[batch, new_tokens, n_kv_heads * head_dim]`.
    ///
    /// Cost model: 0 flops; bytes = k and v read and written once each =
    /// 2 × 2 × batch × new_tokens × n_kv_heads × head_dim × 4.
    ///
    /// # Errors
    ///
    /// [`KernelError::CacheFull`] if the cache would then hold more than `max_seq` positions;
    /// the cache is left unchanged.
    ///
    /// # Panics
    ///
    /// If `k` or `v` does not have `batch * new_tokens * n_kv_heads * head_dim` elements.
    pub fn append(&mut self, k: &[f32], v: &[f32], new_tokens: usize) -> Result<Cost, KernelError> {
        let row = self.row_len();
        let expected = self.batch * new_tokens * row;
        assert_eq!(
            k.len(),
            expected,
            "kv append: k has {} elements, expected [{}, {new_tokens}, {row}]",
            k.len(),
            self.batch
        );
        assert_eq!(
            v.len(),
            expected,
            "kv append: v has {} elements, expected [{}, {new_tokens}, {row}]",
            v.len(),
            self.batch
        );
        let requested = self.len + new_tokens;
        if requested > self.max_seq {
            return Err(KernelError::CacheFull {
                capacity: self.max_seq,
                requested,
            });
        }
        for b in 0..self.batch {
            let src = b * new_tokens * row..(b + 1) * new_tokens * row;
            let dst_start = (b * self.max_seq + self.len) * row;
            let dst = dst_start..dst_start + new_tokens * row;
            self.k[dst.clone()].copy_from_slice(&k[src.clone()]);
            self.v[dst].copy_from_slice(&v[src]);
        }
        self.len = requested;
        Ok(Cost {
            flops: 0,
            bytes: f32_bytes(2 * 2 * expected),
        })
    }

    /// Elements of one position of one sequence: `n_kv_heads * head_dim`.
    pub(crate) fn row_len(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Key of sequence `b`, position `pos`, kv head `head`.
    pub(crate) fn key(&self, b: usize, pos: usize, head: usize) -> &[f32] {
        &self.k[self.offset(b, pos, head)..][..self.head_dim]
    }

    /// Value of sequence `b`, position `pos`, kv head `head`.
    pub(crate) fn value(&self, b: usize, pos: usize, head: usize) -> &[f32] {
        &self.v[self.offset(b, pos, head)..][..self.head_dim]
    }

    fn offset(&self, b: usize, pos: usize, head: usize) -> usize {
        ((b * self.max_seq + pos) * self.n_kv_heads + head) * self.head_dim
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{fresh_rng, random_vec};

    #[test]
    fn append_places_each_sequences_positions_after_len() {
        let (mut rng, seed) = fresh_rng();
        let (batch, n_kv, head_dim) = (2, 3, 4);
        let row = n_kv * head_dim;
        let mut cache = KvCache::new(batch, 6, n_kv, head_dim);
        assert!(cache.is_empty());
        let (k1, v1) = (
            random_vec(&mut rng, batch * 2 * row),
            random_vec(&mut rng, batch * 2 * row),
        );
        let (k2, v2) = (
            random_vec(&mut rng, batch * row),
            random_vec(&mut rng, batch * row),
        );
        cache.append(&k1, &v1, 2).expect("2 of 6 positions fit");
        cache.append(&k2, &v2, 1).expect("3 of 6 positions fit");
        assert_eq!(
            (cache.len(), cache.capacity(), cache.is_empty()),
            (3, 6, false)
        );
        for b in 0..batch {
            for head in 0..n_kv {
                let at = |src: &[f32], tokens: usize, t: usize| {
                    src[((b * tokens + t) * n_kv + head) * head_dim..][..head_dim].to_vec()
                };
                assert_eq!(cache.key(b, 1, head), at(&k1, 2, 1), "seed {seed}");
                assert_eq!(cache.value(b, 0, head), at(&v1, 2, 0), "seed {seed}");
                assert_eq!(cache.key(b, 2, head), at(&k2, 1, 0), "seed {seed}");
                assert_eq!(cache.value(b, 2, head), at(&v2, 1, 0), "seed {seed}");
            }
        }
    }

    #[test]
    fn overflow_returns_cache_full_and_leaves_the_cache_unchanged() {
        let mut cache = KvCache::new(1, 3, 1, 2);
        cache
            .append(&[1.0; 4], &[1.0; 4], 2)
            .expect("2 of 3 positions fit");
        let err = cache
            .append(&[2.0; 4], &[2.0; 4], 2)
            .expect_err("4 positions exceed 3");
        assert_eq!(
            err,
            KernelError::CacheFull {
                capacity: 3,
                requested: 4
            }
        );
        assert_eq!(err.to_string(), "kv cache of 3 positions cannot take 4");
        assert_eq!(cache.len(), 2);
        cache.clear();
        assert!(cache.is_empty());
        cache
            .append(&[2.0; 6], &[2.0; 6], 3)
            .expect("a cleared cache takes its full capacity");
    }

    #[test]
    fn append_cost_matches_hand_computed_value() {
        let mut cache = KvCache::new(2, 4, 1, 2);
        // 2 sequences × 3 tokens × 2 elements = 12 per tensor; k and v each read and written:
        // 4 × 12 × 4 = 192 bytes.
        let cost = cache
            .append(&[0.0; 12], &[0.0; 12], 3)
            .expect("3 of 4 positions fit");
        assert_eq!(
            cost,
            Cost {
                flops: 0,
                bytes: 192
            }
        );
    }

    #[test]
    #[should_panic(expected = "k has 5 elements")]
    fn append_rejects_mismatched_shapes() {
        let mut cache = KvCache::new(1, 4, 1, 2);
        let _ = cache.append(&[0.0; 5], &[0.0; 4], 2);
    }
}
