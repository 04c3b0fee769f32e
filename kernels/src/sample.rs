//! Greedy sampling: the next token is the highest logit of each row.

use crate::cost::{Cost, f32_bytes};

/// Bytes of one sampled token id.
const TOKEN_BYTES: u64 = std::mem::size_of::<u32>() as u64;

/// Writes the argmax of each `vocab`-long row of `logits` into `out`
/// (`rows = logits.len() / vocab`). Ties go to the lowest index; NaN never wins (if a row holds
/// nothing but NaN, index 0 is returned).
///
/// Cost model: one comparison (flop) per logit; bytes = logits read (4 each) + one token id
/// written (4) per row.
///
/// # Panics
///
/// If `vocab` is 0, `logits.len()` is not a multiple of `vocab`, `out.len()` is not the number of
/// rows, or `vocab` does not fit in `u32`.
pub fn greedy_sample(logits: &[f32], vocab: usize, out: &mut [u32]) -> Cost {
    assert!(vocab > 0, "greedy_sample: vocab is 0");
    assert!(
        u32::try_from(vocab).is_ok(),
        "greedy_sample: vocab {vocab} does not fit token ids of u32"
    );
    assert_eq!(
        logits.len() % vocab,
        0,
        "greedy_sample: logits has {} elements, not a multiple of vocab {vocab}",
        logits.len()
    );
    let rows = logits.len() / vocab;
    assert_eq!(
        out.len(),
        rows,
        "greedy_sample: out has {} slots for {rows} rows",
        out.len()
    );
    for (row, token) in logits.chunks_exact(vocab).zip(out.iter_mut()) {
        *token = argmax(row);
    }
    Cost {
        flops: logits.len() as u64,
        bytes: f32_bytes(logits.len()) + rows as u64 * TOKEN_BYTES,
    }
}

/// Index of the first maximum of `row`; the strict `>` keeps the lowest index on ties and
/// never lets NaN win.
fn argmax(row: &[f32]) -> u32 {
    let mut best_index = 0;
    let mut best = f32::NEG_INFINITY;
    for (i, &v) in row.iter().enumerate() {
        if v > best {
            best = v;
            best_index = i;
        }
    }
    // The caller checked that vocab fits in u32, so every index does.
    best_index as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{fresh_rng, random_vec};

    #[test]
    fn greedy_sample_picks_each_rows_argmax() {
        let (mut rng, seed) = fresh_rng();
        let (rows, vocab) = (4, 97);
        let logits = random_vec(&mut rng, rows * vocab);
        let mut out = vec![u32::MAX; rows];
        greedy_sample(&logits, vocab, &mut out);
        for (r, row) in logits.chunks(vocab).enumerate() {
            let best = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let first = row.iter().position(|&v| v == best);
            assert_eq!(Some(out[r] as usize), first, "row {r} (seed {seed})");
        }
    }

    #[test]
    fn greedy_ties_pick_the_lowest_index() {
        let logits = [0.0, 2.0, 1.0, 2.0, 5.0, 5.0, 5.0, -1.0];
        let mut out = [u32::MAX; 2];
        greedy_sample(&logits, 4, &mut out);
        assert_eq!(out, [1, 0]);
    }

    #[test]
    fn greedy_skips_nan() {
        let mut out = [u32::MAX; 1];
        greedy_sample(&[f32::NAN, -3.0, f32::NAN, -2.0], 4, &mut out);
        assert_eq!(out, [3]);
    }

    #[test]
    fn greedy_cost_matches_hand_computed_value() {
        let mut out = [0u32; 2];
        // 2 rows of 5: 10 comparisons; (10 logits + 2 ids) × 4 = 48 bytes.
        let cost = greedy_sample(&[0.0; 10], 5, &mut out);
        assert_eq!(
            cost,
            Cost {
                flops: 10,
                bytes: 48
            }
        );
    }
}
