//! The process-wide number of threads the matmuls may use.
//!
//! A rank process is single-threaded by default so that per-rank profiles stay clean (a matmul
//! that spawned threads would steal cores from the other ranks on the node); a user who gives a
//! rank more cores (`--threads`) sets it here once at start-up.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Threads the matmuls use; always at least 1.
static THREADS: AtomicUsize = AtomicUsize::new(1);

/// Sets how many threads [`crate::matmul`] and [`crate::matmul_w`] may use; 0 is taken as 1.
pub fn set_threads(n: usize) {
    THREADS.store(n.max(1), Ordering::Relaxed);
}

/// How many threads the matmuls may use (1 unless [`set_threads`] said otherwise).
pub fn threads() -> usize {
    THREADS.load(Ordering::Relaxed)
}

/// The `gemm` parallelism for the current setting: one thread runs inline, more go to rayon.
pub(crate) fn parallelism() -> gemm::Parallelism {
    match threads() {
        1 => gemm::Parallelism::None,
        n => gemm::Parallelism::Rayon(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::Storage;
    use crate::matrix::tests::check_matmul_w;

    // One test owns the global setting so parallel tests never see each other's value (others
    // may run threaded meanwhile, which changes no result).
    #[test]
    fn set_threads_round_trips_maps_to_gemm_parallelism_and_threaded_matmuls_agree() {
        assert_eq!(threads(), 1, "the default is single-threaded");
        assert!(matches!(parallelism(), gemm::Parallelism::None));
        set_threads(3);
        assert_eq!(threads(), 3);
        assert!(matches!(parallelism(), gemm::Parallelism::Rayon(3)));
        // Every path of both matmuls, threaded: the fused bf16 paths (1 and 9 rows) split
        // their columns (1100 over 3 threads: 368 + 368 + 364), the others go through gemm.
        let paths = [
            (1, Storage::Bf16),
            (9, Storage::Bf16),
            (70, Storage::Bf16),
            (9, Storage::F32),
        ];
        for (m, storage) in paths {
            check_matmul_w(m, 300, 1100, storage);
        }
        check_matmul_w(1, 5, 2, Storage::Bf16);
        set_threads(0);
        assert_eq!(threads(), 1, "0 threads is taken as 1");
        assert!(matches!(parallelism(), gemm::Parallelism::None));
    }
}
