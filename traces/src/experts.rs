//! Expert routing counts: how many tokens each mixture-of-experts expert a rank holds processed
//! in one step, so the analyzer can measure expert and expert-parallel imbalance.
//!
//! A rank sends one `ExpertTokens` per step that routed anything, not one per token: the rank
//! tallies into a buffer it reuses and only this record's vector is allocated.

use crate::ids::Rank;
use serde::{Deserialize, Serialize};

/// Tokens processed by the experts one rank holds, per MoE layer of its stage, over one step
/// (all of the step's micro-batches).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpertTokens {
    pub rank: Rank,
    pub step: u32,
    /// Routed experts per MoE layer in the model (held here or not).
    pub experts: u32,
    /// The first expert id this rank holds; it holds `held` consecutive ids from here.
    pub first_expert: u32,
    pub held: u32,
    /// The global ids of the MoE layers on this rank's stage, in order.
    pub layers: Vec<u32>,
    /// `layers.len() × held` counts, layer-major: `tokens[i * held + j]` is the number of
    /// token slots expert `first_expert + j` of layer `layers[i]` processed.
    pub tokens: Vec<u32>,
}

impl ExpertTokens {
    /// Each (layer, expert id, tokens) of the record.
    pub fn counts(&self) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        let held = self.held.max(1) as usize;
        self.tokens.iter().enumerate().filter_map(move |(i, &n)| {
            let layer = *self.layers.get(i / held)?;
            Some((layer, self.first_expert + (i % held) as u32, n))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_name_layer_and_expert() {
        let r = ExpertTokens {
            rank: Rank(1),
            step: 3,
            experts: 8,
            first_expert: 4,
            held: 2,
            layers: vec![1, 2],
            tokens: vec![5, 0, 7, 1],
        };
        let all: Vec<(u32, u32, u32)> = r.counts().collect();
        assert_eq!(all, vec![(1, 4, 5), (1, 5, 0), (2, 4, 7), (2, 5, 1)]);
    }
}
