//! Megatron-style tensor parallelism: which slice of each weight a rank owns.
//!
//! Attention is split by heads: rank `r` of `tp` owns query heads `[r*h/tp, (r+1)*h/tp)` and KV
//! heads `[r*kv/tp, (r+1)*kv/tp)`, so its queries still find their own KV group locally. With
//! more ranks than KV heads, each KV head is replicated on `tp/kv` consecutive ranks (rank `r`
//! holds KV head `r / (tp/kv)`), as Megatron does: the query heads of those ranks are exactly
//! that KV head's group, so attention stays local. The MLP
//! is split by intermediate columns, and so is every expert and the shared expert of a MoE
//! layer, each over its own width (the router is replicated). The projections back into the
//! residual stream (`wo`, `w_down`) are row-parallel: each rank produces a partial sum,
//! completed by one all-reduce. The embedding and LM head are vocab-parallel: rank `r` holds
//! vocabulary rows `[r*vocab/tp, (r+1)*vocab/tp)`.

use crate::config::ModelConfig;
use crate::error::WorkloadError;
use std::ops::Range;

/// The part of the model one rank of a tensor-parallel group computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TpLayout {
    pub rank: usize,
    pub tp: usize,
    /// Query heads on this rank.
    pub heads: usize,
    /// Key-value heads on this rank.
    pub kv_heads: usize,
    /// On how many ranks each of this rank's KV heads is held (1 unless replicated).
    pub kv_replicas: usize,
    pub head_dim: usize,
    /// MLP intermediate columns on this rank.
    pub ffn: usize,
    /// Intermediate columns of each routed expert on this rank; `None` for a dense model.
    pub expert_ffn: Option<usize>,
    /// Intermediate columns of the shared experts on this rank; `None` without shared experts.
    pub shared_ffn: Option<usize>,
    /// Vocabulary rows of the embedding (columns of the LM head) on this rank.
    pub vocab: usize,
}

impl TpLayout {
    /// The layout of `rank` in a group of `tp`; refuses degrees that do not split the model.
    pub fn new(model: &ModelConfig, rank: usize, tp: usize) -> Result<TpLayout, WorkloadError> {
        model.validate_tp(tp)?;
        if rank >= tp {
            return Err(WorkloadError::RankOutOfRange { rank, tp });
        }
        Ok(TpLayout {
            rank,
            tp,
            heads: model.heads / tp,
            kv_heads: (model.kv_heads / tp).max(1),
            kv_replicas: (tp / model.kv_heads).max(1),
            head_dim: model.head_dim,
            ffn: model.ffn / tp,
            expert_ffn: model.moe.as_ref().map(|moe| moe.expert_ffn / tp),
            shared_ffn: model
                .moe
                .as_ref()
                .filter(|moe| moe.shared_ffn > 0)
                .map(|moe| moe.shared_ffn / tp),
            vocab: model.vocab / tp,
        })
    }

    /// Width of this rank's query heads.
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Width of this rank's key (or value) heads.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Columns of the full `wq` (and rows of the full `wo`) this rank owns.
    pub fn q_range(&self) -> Range<usize> {
        own(self.rank, self.q_dim())
    }

    /// Columns of the full `wk` and `wv` this rank owns (or holds a replica of).
    pub fn kv_range(&self) -> Range<usize> {
        own(self.rank / self.kv_replicas, self.kv_dim())
    }

    /// Columns of the full `w_gate` and `w_up` (and rows of the full `w_down`) this rank owns.
    pub fn ffn_range(&self) -> Range<usize> {
        own(self.rank, self.ffn)
    }

    /// Columns of each full expert's `w_gate` and `w_up` (rows of its `w_down`) this rank owns.
    pub fn expert_ffn_range(&self) -> Option<Range<usize>> {
        self.expert_ffn.map(|width| own(self.rank, width))
    }

    /// Columns of the full shared expert's `w_gate` and `w_up` (rows of its `w_down`) this
    /// rank owns.
    pub fn shared_ffn_range(&self) -> Option<Range<usize>> {
        self.shared_ffn.map(|width| own(self.rank, width))
    }

    /// Rows of the full embedding (columns of the full LM head) this rank owns.
    pub fn vocab_range(&self) -> Range<usize> {
        own(self.rank, self.vocab)
    }
}

/// The `rank`-th of equal parts of width `width`.
fn own(rank: usize, width: usize) -> Range<usize> {
    rank * width..(rank + 1) * width
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::preset;

    #[test]
    fn ranks_own_disjoint_slices_that_cover_the_model() {
        let tiny = preset("tiny").unwrap();
        let zero = TpLayout::new(&tiny, 0, 2).unwrap();
        let one = TpLayout::new(&tiny, 1, 2).unwrap();
        assert_eq!((zero.heads, zero.kv_heads, zero.ffn), (4, 1, 768));
        assert_eq!(zero.q_range(), 0..256);
        assert_eq!(one.q_range(), 256..512);
        assert_eq!(one.kv_range(), 64..128);
        assert_eq!(one.ffn_range(), 768..1536);
    }

    #[test]
    fn kv_heads_are_replicated_when_ranks_outnumber_them() {
        let tiny = preset("tiny").unwrap();
        let layouts: Vec<TpLayout> = (0..8)
            .map(|r| TpLayout::new(&tiny, r, 8).unwrap())
            .collect();
        let kv: Vec<_> = layouts.iter().map(TpLayout::kv_range).collect();
        assert_eq!(kv[..4], vec![0..64; 4][..], "ranks 0-3 hold KV head 0");
        assert_eq!(kv[4..], vec![64..128; 4][..], "ranks 4-7 hold KV head 1");
        // Rank 5's query head (5 of 8) belongs to KV head 5 / (8/2) = 1: local, as held.
        assert_eq!((layouts[5].heads, layouts[5].q_range()), (1, 320..384));
    }

    #[test]
    fn the_whole_model_is_rank_zero_of_one() {
        let tiny = preset("tiny").unwrap();
        let solo = TpLayout::new(&tiny, 0, 1).unwrap();
        assert_eq!(solo.q_range(), 0..tiny.q_dim());
        assert_eq!(solo.kv_range(), 0..tiny.kv_dim());
        assert_eq!(solo.ffn_range(), 0..tiny.ffn);
    }

    #[test]
    fn experts_shared_experts_and_vocabulary_split_by_rank() {
        let model = crate::config::test_moe_model();
        let one = TpLayout::new(&model, 1, 2).unwrap();
        assert_eq!(one.expert_ffn_range(), Some(8..16));
        assert_eq!(one.shared_ffn_range(), Some(12..24));
        assert_eq!(one.vocab_range(), 32..64);
        let dense = TpLayout::new(&preset("tiny").unwrap(), 0, 2).unwrap();
        assert_eq!(
            (dense.expert_ffn_range(), dense.shared_ffn_range()),
            (None, None)
        );
        assert_eq!(dense.vocab_range(), 0..2048);
    }

    #[test]
    fn a_rank_outside_the_group_is_named() {
        let tiny = preset("tiny").unwrap();
        let err = TpLayout::new(&tiny, 2, 2).unwrap_err().to_string();
        assert_eq!(err, "rank '2' is out of range for tensor-parallel degree 2");
    }
}
