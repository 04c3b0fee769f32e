//! A paged KV cache (vLLM-style): fixed-size blocks in one pool per layer, handed out to
//! sequences through block tables, and causal attention that reads through them.
//!
//! A contiguous [`crate::KvCache`] reserves `max_seq` positions per sequence up front, so a
//! server running requests of mixed lengths wastes most of its cache memory; blocks let every
//! sequence hold only the positions it has, rounded up to one block. The same block id names
//! the same block in every layer's pool, so one block table per sequence serves all layers.

use std::ops::Range;

use crate::attention::attention_cost;
use crate::cost::{Cost, f32_bytes};
use crate::elementwise::{axpy, dot, softmax};
use crate::error::KernelError;

/// Keys and values of every layer, in blocks of `block_size` positions.
///
/// Layout: `[layers, blocks, block_size, kv_heads, head_dim]` for k and for v, allocated in full
/// up front so that writes in the decode loop never allocate.
#[derive(Clone, Debug)]
pub struct KvPool {
    k: Vec<f32>,
    v: Vec<f32>,
    layers: usize,
    blocks: usize,
    block_size: usize,
    kv_heads: usize,
    head_dim: usize,
}

impl KvPool {
    /// A pool of `blocks` blocks of `block_size` positions for each of `layers` layers.
    ///
    /// # Panics
    ///
    /// If `block_size` is 0.
    pub fn new(
        layers: usize,
        blocks: usize,
        block_size: usize,
        kv_heads: usize,
        head_dim: usize,
    ) -> KvPool {
        assert!(block_size > 0, "kv pool: block_size is 0");
        let elements = layers * blocks * block_size * kv_heads * head_dim;
        KvPool {
            k: vec![0.0; elements],
            v: vec![0.0; elements],
            layers,
            blocks,
            block_size,
            kv_heads,
            head_dim,
        }
    }

    /// Blocks per layer.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// Positions per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Layers the pool holds.
    pub fn layers(&self) -> usize {
        self.layers
    }

    /// Key/value heads per position.
    pub fn kv_heads(&self) -> usize {
        self.kv_heads
    }

    /// Elements per head.
    pub fn head_dim(&self) -> usize {
        self.head_dim
    }

    /// Bytes of k and v together.
    pub fn bytes(&self) -> u64 {
        f32_bytes(self.k.len() + self.v.len())
    }

    /// Checks that `block_table` covers `positions` and that every block it names for them is
    /// in the pool.
    ///
    /// # Errors
    ///
    /// [`KernelError::BlockTableTooShort`] if the table has fewer than
    /// `ceil(positions.end / block_size)` blocks; [`KernelError::BlockOutOfRange`] if a block
    /// holding one of `positions` is not below [`blocks`](Self::blocks).
    pub fn check_table(
        &self,
        block_table: &[u32],
        positions: Range<usize>,
    ) -> Result<(), KernelError> {
        if positions.is_empty() {
            return Ok(());
        }
        let needed = positions.end.div_ceil(self.block_size);
        if block_table.len() < needed {
            return Err(KernelError::BlockTableTooShort {
                blocks: block_table.len(),
                positions: positions.end,
                block_size: self.block_size,
            });
        }
        let used = &block_table[positions.start / self.block_size..needed];
        match used.iter().find(|&&b| b as usize >= self.blocks) {
            Some(&block) => Err(KernelError::BlockOutOfRange {
                block,
                blocks: self.blocks,
            }),
            None => Ok(()),
        }
    }

    /// Writes `n` new positions' k and v rows (`[n, kv_heads * head_dim]` each) of one sequence
    /// at positions `start_pos..start_pos + n`, through the sequence's block table: position p
    /// lives in block `block_table[p / block_size]` at slot `p % block_size`.
    ///
    /// Cost model: 0 flops; bytes = k and v read and written once each =
    /// 2 × 2 × n × kv_heads × head_dim × 4.
    ///
    /// # Errors
    ///
    /// Those of [`check_table`](Self::check_table); the pool is then left unchanged.
    ///
    /// # Panics
    ///
    /// If `layer` is not below [`layers`](Self::layers) or `k`/`v` are not
    /// `[n, kv_heads * head_dim]`.
    pub fn write(
        &mut self,
        layer: usize,
        block_table: &[u32],
        start_pos: usize,
        k: &[f32],
        v: &[f32],
        n: usize,
    ) -> Result<Cost, KernelError> {
        let row = self.row_len();
        assert!(
            layer < self.layers,
            "kv pool: layer {layer} is outside {} layers",
            self.layers
        );
        for (name, x) in [("k", k), ("v", v)] {
            assert_eq!(
                x.len(),
                n * row,
                "kv pool write: {name} has {} elements, expected [{n}, {row}]",
                x.len()
            );
        }
        self.check_table(block_table, start_pos..start_pos + n)?;
        let rows = k.chunks_exact(row.max(1)).zip(v.chunks_exact(row.max(1)));
        for (p, (k_row, v_row)) in (start_pos..).zip(rows) {
            let at = self.position_offset(layer, block_table, p);
            self.k[at..at + row].copy_from_slice(k_row);
            self.v[at..at + row].copy_from_slice(v_row);
        }
        Ok(Cost {
            flops: 0,
            bytes: f32_bytes(2 * 2 * n * row),
        })
    }

    /// Elements of one position: `kv_heads * head_dim`.
    fn row_len(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Where block `block` of `layer` starts in `k` and `v`.
    fn block_offset(&self, layer: usize, block: u32) -> usize {
        (layer * self.blocks + block as usize) * self.block_size * self.row_len()
    }

    /// Where position `p` of the sequence with `block_table` starts in `k` and `v`.
    fn position_offset(&self, layer: usize, block_table: &[u32], p: usize) -> usize {
        let block = block_table[p / self.block_size];
        self.block_offset(layer, block) + (p % self.block_size) * self.row_len()
    }

    /// Key or value rows (`[block_size, kv_heads * head_dim]`) of one block of one layer.
    fn block_rows<'a>(&'a self, x: &'a [f32], layer: usize, block: u32) -> &'a [f32] {
        let start = self.block_offset(layer, block);
        &x[start..start + self.block_size * self.row_len()]
    }
}

/// Causal grouped-query attention for one sequence through its block table.
///
/// `q` is `[n, heads * head_dim]` for positions `start_pos..start_pos + n`, whose k and v are
/// already written to `pool`; position p attends to positions `0..=p`. Query head h reads kv
/// head `h / (heads / kv_heads)`; scores are scaled by `1 / sqrt(head_dim)`. `out` has `q`'s
/// shape. `scratch` holds one score row: it grows to `start_pos + n` elements and is reused, so
/// a caller that keeps it never allocates.
///
/// Cost model: that of [`crate::attention`] for one sequence of `start_pos + n` positions with
/// `n` new ones.
///
/// # Panics
///
/// If `layer` is outside the pool, `heads` is not a positive multiple of the pool's kv heads,
/// `q`/`out` are not `[n, heads * head_dim]`, or the block table fails
/// [`KvPool::check_table`] for positions `0..start_pos + n`.
#[allow(clippy::too_many_arguments)] // the signature is the contract other crates code against
pub fn paged_attention(
    q: &[f32],
    pool: &KvPool,
    layer: usize,
    block_table: &[u32],
    start_pos: usize,
    n: usize,
    heads: usize,
    scratch: &mut Vec<f32>,
    out: &mut [f32],
) -> Cost {
    check_attention_args(q, pool, layer, block_table, start_pos + n, n, heads, out);
    let len = start_pos + n;
    if scratch.len() < len {
        scratch.resize(len, 0.0);
    }
    let d = pool.head_dim;
    let group = heads / pool.kv_heads;
    let view = SequenceView {
        pool,
        layer,
        block_table,
    };
    let q_rows = q.chunks_exact(heads * d);
    let out_rows = out.chunks_exact_mut(heads * d);
    for (p, (q_row, out_row)) in (start_pos..).zip(q_rows.zip(out_rows)) {
        let heads_of_row = q_row.chunks_exact(d).zip(out_row.chunks_exact_mut(d));
        for (h, (q_head, out_head)) in heads_of_row.enumerate() {
            view.attend(q_head, h / group, &mut scratch[..=p], out_head);
        }
    }
    attention_cost(1, n, heads, d, pool.kv_heads, len)
}

#[allow(clippy::too_many_arguments)] // mirrors paged_attention's arguments
fn check_attention_args(
    q: &[f32],
    pool: &KvPool,
    layer: usize,
    block_table: &[u32],
    len: usize,
    n: usize,
    heads: usize,
    out: &[f32],
) {
    assert!(
        layer < pool.layers,
        "paged_attention: layer {layer} is outside {} layers",
        pool.layers
    );
    assert!(
        pool.kv_heads > 0 && heads.is_multiple_of(pool.kv_heads) && pool.head_dim > 0,
        "paged_attention: {heads} query heads cannot share {} kv heads of dim {} evenly",
        pool.kv_heads,
        pool.head_dim
    );
    let expected = n * heads * pool.head_dim;
    for (name, x) in [("q", q), ("out", out)] {
        assert_eq!(
            x.len(),
            expected,
            "paged_attention: {name} has {} elements, expected [{n}, {heads} * {}]",
            x.len(),
            pool.head_dim
        );
    }
    if let Err(e) = pool.check_table(block_table, 0..len) {
        panic!("paged_attention: {e}");
    }
}

/// One sequence's positions in one layer of a pool.
struct SequenceView<'a> {
    pool: &'a KvPool,
    layer: usize,
    block_table: &'a [u32],
}

impl SequenceView<'_> {
    /// One query head over positions `0..scores.len()`, walking block by block so that each
    /// block's rows are contiguous.
    fn attend(&self, q_head: &[f32], kv_head: usize, scores: &mut [f32], out_head: &mut [f32]) {
        let (pool, d) = (self.pool, self.pool.head_dim);
        let row = pool.row_len();
        let scale = 1.0 / (d as f32).sqrt();
        let blocks = scores.chunks_mut(pool.block_size).zip(self.block_table);
        for (chunk, &block) in blocks {
            let keys = pool.block_rows(&pool.k, self.layer, block);
            for (s, key_row) in chunk.iter_mut().zip(keys.chunks_exact(row)) {
                *s = dot(q_head, &key_row[kv_head * d..][..d]) * scale;
            }
        }
        softmax(scores);
        out_head.fill(0.0);
        let blocks = scores.chunks(pool.block_size).zip(self.block_table);
        for (chunk, &block) in blocks {
            let values = pool.block_rows(&pool.v, self.layer, block);
            for (&w, value_row) in chunk.iter().zip(values.chunks_exact(row)) {
                axpy(out_head, w, &value_row[kv_head * d..][..d]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::attention;
    use crate::kv_cache::KvCache;
    use crate::testutil::{assert_close, fresh_rng, random_vec, to_f64};
    use rand::rngs::StdRng;
    use rand::seq::SliceRandom;

    struct Shape {
        heads: usize,
        kv_heads: usize,
        head_dim: usize,
        block_size: usize,
    }

    const GQA: Shape = Shape {
        heads: 8,
        kv_heads: 2,
        head_dim: 16,
        block_size: 4,
    };

    /// A shuffled table of `blocks` distinct block ids out of a pool of `pool_blocks`.
    fn shuffled_table(rng: &mut StdRng, pool_blocks: usize, blocks: usize) -> Vec<u32> {
        let mut ids: Vec<u32> = (0..pool_blocks as u32).collect();
        ids.shuffle(rng);
        ids.truncate(blocks);
        ids
    }

    /// Feeds the same k/v chunks to a contiguous cache and to layer 1 of a paged pool (layer 0
    /// holds unrelated values that must not leak in), attending each chunk in both, and
    /// compares every chunk's output.
    fn check_against_contiguous(s: &Shape, chunks: &[usize]) {
        let (mut rng, seed) = fresh_rng();
        let total: usize = chunks.iter().sum();
        let table = shuffled_table(&mut rng, 16, total.div_ceil(s.block_size));
        let row = s.kv_heads * s.head_dim;
        let mut pool = KvPool::new(2, 16, s.block_size, s.kv_heads, s.head_dim);
        let mut cache = KvCache::new(1, total, s.kv_heads, s.head_dim);
        let (junk_k, junk_v) = (vec![9.0; total * row], vec![-9.0; total * row]);
        pool.write(0, &table, 0, &junk_k, &junk_v, total)
            .expect("the table covers all");
        let mut scratch = Vec::new();
        let mut start_pos = 0;
        for &n in chunks {
            let (k, v) = (random_vec(&mut rng, n * row), random_vec(&mut rng, n * row));
            let q = random_vec(&mut rng, n * s.heads * s.head_dim);
            cache
                .append(&k, &v, n)
                .expect("the cache is sized for all chunks");
            pool.write(1, &table, start_pos, &k, &v, n)
                .expect("the table covers all");
            let mut want = vec![f32::NAN; q.len()];
            let want_cost = attention(&q, &cache, 1, n, s.heads, &mut want);
            let mut got = vec![f32::NAN; q.len()];
            let cost = paged_attention(
                &q,
                &pool,
                1,
                &table,
                start_pos,
                n,
                s.heads,
                &mut scratch,
                &mut got,
            );
            let what = format!("paged attention of {n} after {start_pos}");
            assert_close(&got, &to_f64(&want), 1e-5, 0.0, seed, &what);
            assert_eq!(cost, want_cost, "{what}");
            start_pos += n;
        }
    }

    #[test]
    fn prefill_matches_contiguous_attention() {
        check_against_contiguous(&GQA, &[11]);
    }

    #[test]
    fn chunked_prefill_in_two_chunks_matches_contiguous_attention() {
        // The first chunk ends inside a block, so the second starts mid-block.
        check_against_contiguous(&GQA, &[6, 7]);
    }

    #[test]
    fn decode_after_prefill_matches_contiguous_attention() {
        check_against_contiguous(&GQA, &[7, 1, 1]);
    }

    #[test]
    fn multi_head_attention_with_one_position_blocks_matches_contiguous_attention() {
        let mha = Shape {
            heads: 3,
            kv_heads: 3,
            head_dim: 8,
            block_size: 1,
        };
        check_against_contiguous(&mha, &[3, 1]);
    }

    #[test]
    fn write_puts_each_position_in_its_block_slot() {
        let (mut rng, seed) = fresh_rng();
        let (kv_heads, head_dim, block_size) = (2, 3, 4);
        let row = kv_heads * head_dim;
        let mut pool = KvPool::new(1, 5, block_size, kv_heads, head_dim);
        let table = [3u32, 0, 4];
        let (k, v) = (random_vec(&mut rng, 7 * row), random_vec(&mut rng, 7 * row));
        pool.write(0, &table, 2, &k, &v, 7)
            .expect("positions 2..9 fit 3 blocks");
        for t in 0..7 {
            let p = 2 + t;
            let at = (table[p / block_size] as usize * block_size + p % block_size) * row;
            assert_eq!(
                pool.k[at..at + row],
                k[t * row..][..row],
                "k of {p} (seed {seed})"
            );
            assert_eq!(
                pool.v[at..at + row],
                v[t * row..][..row],
                "v of {p} (seed {seed})"
            );
        }
        // Block 1 and 2 are in no table; slots 0 and 1 of block 3 precede start_pos.
        assert!(
            pool.k[row * block_size..3 * row * block_size]
                .iter()
                .all(|&x| x == 0.0)
        );
        assert!(
            pool.k[3 * row * block_size..][..2 * row]
                .iter()
                .all(|&x| x == 0.0)
        );
    }

    #[test]
    fn write_cost_counts_k_and_v_read_and_written() {
        let mut pool = KvPool::new(1, 2, 2, 1, 2);
        // 3 positions × 2 elements = 6 per tensor; k and v each read and written: 4 × 6 × 4.
        let cost = pool
            .write(0, &[1, 0], 0, &[0.0; 6], &[0.0; 6], 3)
            .expect("fits");
        assert_eq!(
            cost,
            Cost {
                flops: 0,
                bytes: 96
            }
        );
        assert_eq!(pool.bytes(), 2 * 2 * 2 * 2 * 4);
    }

    #[test]
    fn a_short_table_is_an_error_and_the_pool_is_unchanged() {
        let mut pool = KvPool::new(1, 4, 4, 1, 1);
        let err = pool
            .write(0, &[2, 1], 6, &[1.0; 3], &[1.0; 3], 3)
            .expect_err("position 8 needs a third block");
        assert_eq!(
            err,
            KernelError::BlockTableTooShort {
                blocks: 2,
                positions: 9,
                block_size: 4
            }
        );
        assert_eq!(
            err.to_string(),
            "block table of 2 blocks of 4 cannot hold 9 positions"
        );
        assert!(pool.k.iter().chain(&pool.v).all(|&x| x == 0.0));
    }

    #[test]
    fn a_block_id_outside_the_pool_is_an_error_and_the_pool_is_unchanged() {
        let mut pool = KvPool::new(1, 4, 2, 1, 1);
        let err = pool
            .write(0, &[0, 4], 1, &[1.0; 2], &[1.0; 2], 2)
            .expect_err("block 4 is not in a pool of 4");
        assert_eq!(
            err,
            KernelError::BlockOutOfRange {
                block: 4,
                blocks: 4
            }
        );
        assert_eq!(err.to_string(), "block id 4 is outside the pool's 4 blocks");
        assert!(pool.k.iter().chain(&pool.v).all(|&x| x == 0.0));
        // Blocks the written positions do not touch are not checked.
        pool.write(0, &[7, 1], 2, &[1.0; 2], &[1.0; 2], 2)
            .expect("positions 2..4 live in block 1 only");
    }

    #[test]
    #[should_panic(expected = "paged_attention: block id 9 is outside the pool's 2 blocks")]
    fn paged_attention_rejects_a_bad_table() {
        let pool = KvPool::new(1, 2, 2, 1, 1);
        let mut scratch = Vec::new();
        paged_attention(&[0.0], &pool, 0, &[9], 0, 1, 1, &mut scratch, &mut [0.0]);
    }

    #[test]
    fn scratch_is_not_reallocated_once_it_has_grown() {
        let mut pool = KvPool::new(1, 4, 2, 1, 2);
        let table = [2u32, 0, 3];
        pool.write(0, &table, 0, &[0.5; 10], &[0.25; 10], 5)
            .expect("fits");
        let mut scratch = Vec::new();
        let mut out = [0.0; 8];
        paged_attention(&[1.0; 8], &pool, 0, &table, 3, 2, 2, &mut scratch, &mut out);
        let (ptr, capacity) = (scratch.as_ptr(), scratch.capacity());
        paged_attention(&[1.0; 8], &pool, 0, &table, 0, 2, 2, &mut scratch, &mut out);
        assert_eq!((scratch.as_ptr(), scratch.capacity()), (ptr, capacity));
        // Every value row is 0.25, so any convex combination of them is too.
        assert_eq!(out, [0.25; 8]);
    }
}
