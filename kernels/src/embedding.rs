//! Token embedding lookup: the first op of the decoder.

use crate::cost::{Cost, f32_bytes};

/// Bytes of one token id.
const TOKEN_BYTES: u64 = std::mem::size_of::<u32>() as u64;

/// Copies row `tokens[t]` of `table` (`[vocab, hidden]`) into row `t` of `out`
/// (`[tokens.len(), hidden]`).
///
/// Cost model: 0 flops; bytes = token ids read (4 each) + one table row read and one out row
/// written per token = (tokens + 2 × tokens × hidden) × 4.
///
/// # Panics
///
/// If `hidden` is 0, `table.len()` is not a multiple of `hidden`, `out.len()` is not
/// `tokens.len() * hidden`, or a token id is not below the vocabulary size `table.len() / hidden`.
pub fn embedding(table: &[f32], hidden: usize, tokens: &[u32], out: &mut [f32]) -> Cost {
    assert!(hidden > 0, "embedding: hidden is 0");
    assert_eq!(
        table.len() % hidden,
        0,
        "embedding: table has {} elements, not a multiple of hidden {hidden}",
        table.len()
    );
    assert_eq!(
        out.len(),
        tokens.len() * hidden,
        "embedding: out has {} elements, expected [{}, {hidden}]",
        out.len(),
        tokens.len()
    );
    let vocab = table.len() / hidden;
    for (&token, out_row) in tokens.iter().zip(out.chunks_exact_mut(hidden)) {
        let id = token as usize;
        assert!(
            id < vocab,
            "embedding: token {token} is outside the vocabulary of {vocab}"
        );
        out_row.copy_from_slice(&table[id * hidden..(id + 1) * hidden]);
    }
    Cost {
        flops: 0,
        bytes: tokens.len() as u64 * TOKEN_BYTES + f32_bytes(2 * tokens.len() * hidden),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{fresh_rng, random_vec};

    #[test]
    fn embedding_copies_the_rows_of_the_tokens() {
        let (mut rng, seed) = fresh_rng();
        let (vocab, hidden) = (11, 6);
        let table = random_vec(&mut rng, vocab * hidden);
        let tokens = [3u32, 0, 10, 3];
        let mut out = vec![0.0; tokens.len() * hidden];
        embedding(&table, hidden, &tokens, &mut out);
        for (t, &id) in tokens.iter().enumerate() {
            let want = &table[id as usize * hidden..][..hidden];
            assert_eq!(&out[t * hidden..][..hidden], want, "row {t} (seed {seed})");
        }
    }

    #[test]
    fn embedding_cost_matches_hand_computed_value() {
        let mut out = [0.0f32; 6];
        // 2 tokens of hidden 3: 0 flops; (2 ids + 2 × 2 × 3 elements) × 4 = 56 bytes.
        let cost = embedding(&[0.0; 12], 3, &[1, 2], &mut out);
        assert_eq!(
            cost,
            Cost {
                flops: 0,
                bytes: 56
            }
        );
    }

    #[test]
    #[should_panic(expected = "outside the vocabulary")]
    fn embedding_rejects_out_of_vocabulary_tokens() {
        embedding(&[0.0; 12], 3, &[4], &mut [0.0; 3]);
    }
}
