//! STREAM's four kernels (copy, scale, add, triad) over f32 arrays, on one thread or split over
//! several, measuring the memory bandwidth this machine offers, so that decode's achieved
//! bandwidth (weights streamed per second) can be put next to what the machine can do at all.

use std::hint::black_box;
use std::time::Instant;

use crate::cost::Cost;

/// Bytes STREAM counts per triad element: `b` and `c` read, `a` written, 4 bytes each (the
/// write-allocate read of `a` is not counted, as in STREAM).
const TRIAD_BYTES_PER_ELEMENT: u64 = 3 * 4;

/// One of STREAM's kernels. Bytes are counted as STREAM does: each array read or written once
/// per element (the write-allocate read of the destination is not counted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum StreamKernel {
    /// `c[i] = a[i]`: 2 × 4 bytes per element.
    Copy,
    /// `b[i] = s · c[i]`: 2 × 4 bytes per element.
    Scale,
    /// `c[i] = a[i] + b[i]`: 3 × 4 bytes per element.
    Add,
    /// `a[i] = b[i] + s · c[i]`: 3 × 4 bytes per element.
    Triad,
}

impl StreamKernel {
    /// All four, in STREAM's order.
    pub const ALL: [StreamKernel; 4] = [
        StreamKernel::Copy,
        StreamKernel::Scale,
        StreamKernel::Add,
        StreamKernel::Triad,
    ];

    /// STREAM's name for it: `copy`, `scale`, `add` or `triad`.
    pub fn name(self) -> &'static str {
        match self {
            StreamKernel::Copy => "copy",
            StreamKernel::Scale => "scale",
            StreamKernel::Add => "add",
            StreamKernel::Triad => "triad",
        }
    }

    /// Bytes counted per element.
    pub fn bytes_per_element(self) -> u64 {
        match self {
            StreamKernel::Copy | StreamKernel::Scale => 2 * 4,
            StreamKernel::Add | StreamKernel::Triad => TRIAD_BYTES_PER_ELEMENT,
        }
    }

    /// Runs the kernel once over equally long chunks of STREAM's arrays `a`, `b` and `c`.
    fn run(self, a: &mut [f32], b: &mut [f32], c: &mut [f32]) {
        const S: f32 = 3.0;
        match self {
            StreamKernel::Copy => c.copy_from_slice(a),
            StreamKernel::Scale => {
                for (bi, &ci) in b.iter_mut().zip(c.iter()) {
                    *bi = S * ci;
                }
            }
            StreamKernel::Add => {
                for (ci, (&ai, &bi)) in c.iter_mut().zip(a.iter().zip(b.iter())) {
                    *ci = ai + bi;
                }
            }
            StreamKernel::Triad => {
                triad(a, b, c, S);
            }
        }
    }
}

/// What [`stream`] measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StreamResult {
    pub kernel: StreamKernel,
    /// Elements per array (all threads together).
    pub elements: usize,
    /// Threads the arrays were split over.
    pub threads: usize,
    /// Timed passes.
    pub repeats: usize,
    /// Bytes counted per pass: `elements × kernel.bytes_per_element()`.
    pub bytes_per_pass: u64,
    /// Bandwidth of the fastest pass.
    pub best_rate_bytes_per_s: f64,
    /// Median bandwidth over the passes.
    pub median_rate_bytes_per_s: f64,
}

/// Runs `kernel` over three f32 arrays of `elements` each, split into `threads` contiguous
/// chunks that as many scoped threads work on together; `repeats` timed passes (from before the
/// threads start until the last one ends) after one untimed warm-up pass, which also faults in
/// the pages of the zero-filled array (calloc leaves them unmapped).
///
/// Pick `elements` well beyond the last-level cache (STREAM asks for 4× it) or the result is
/// cache bandwidth, not memory bandwidth.
///
/// # Panics
///
/// If `elements`, `repeats` or `threads` is 0, or `threads > elements`.
pub fn stream(
    kernel: StreamKernel,
    elements: usize,
    repeats: usize,
    threads: usize,
) -> StreamResult {
    assert!(elements > 0, "stream: elements is 0");
    assert!(repeats > 0, "stream: repeats is 0");
    assert!(
        threads > 0 && threads <= elements,
        "stream: threads is {threads} for {elements} elements"
    );
    let (mut a, mut b, mut c) = (
        vec![1.0f32; elements],
        vec![2.0f32; elements],
        vec![0.0f32; elements],
    );
    let bytes_per_pass = elements as u64 * kernel.bytes_per_element();
    let chunk = elements.div_ceil(threads);
    let mut pass = || {
        let start = Instant::now();
        std::thread::scope(|scope| {
            let chunks = a
                .chunks_mut(chunk)
                .zip(b.chunks_mut(chunk))
                .zip(c.chunks_mut(chunk));
            for ((a, b), c) in chunks {
                scope.spawn(move || kernel.run(black_box(a), black_box(b), black_box(c)));
            }
        });
        bytes_per_pass as f64 / start.elapsed().as_secs_f64()
    };
    pass();
    let mut rates: Vec<f64> = (0..repeats).map(|_| pass()).collect();
    black_box((&a, &b, &c));
    rates.sort_by(f64::total_cmp);
    StreamResult {
        kernel,
        elements,
        threads,
        repeats,
        bytes_per_pass,
        best_rate_bytes_per_s: rates[repeats - 1],
        median_rate_bytes_per_s: median_of_sorted(&rates),
    }
}

/// What [`stream_triad`] measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TriadResult {
    /// Elements per array.
    pub elements: usize,
    /// Timed passes.
    pub repeats: usize,
    /// Bytes counted per pass: `elements × 3 × 4`.
    pub bytes_per_pass: u64,
    /// Bandwidth of the fastest pass.
    pub best_rate_bytes_per_s: f64,
    /// Median bandwidth over the passes.
    pub median_rate_bytes_per_s: f64,
}

/// Runs `a[i] = b[i] + s · c[i]` over three f32 arrays of `elements` each, `repeats` timed
/// passes after one untimed warm-up pass (which also faults the pages in), on the calling thread.
///
/// Pick `elements` well beyond the last-level cache (STREAM asks for 4× it) or the result is
/// cache bandwidth, not memory bandwidth.
///
/// # Panics
///
/// If `elements` or `repeats` is 0.
pub fn stream_triad(elements: usize, repeats: usize) -> TriadResult {
    assert!(elements > 0, "stream_triad: elements is 0");
    assert!(repeats > 0, "stream_triad: repeats is 0");
    let (mut a, b, c) = (
        vec![0.0f32; elements],
        vec![1.0f32; elements],
        vec![2.0f32; elements],
    );
    let bytes_per_pass = elements as u64 * TRIAD_BYTES_PER_ELEMENT;
    // Warm-up: faults the pages in and brings the code into cache.
    triad(&mut a, &b, &c, 3.0);
    let mut rates: Vec<f64> = (0..repeats)
        .map(|_| {
            let start = Instant::now();
            triad(
                black_box(&mut a),
                black_box(&b),
                black_box(&c),
                black_box(3.0),
            );
            black_box(&a);
            bytes_per_pass as f64 / start.elapsed().as_secs_f64()
        })
        .collect();
    rates.sort_by(f64::total_cmp);
    TriadResult {
        elements,
        repeats,
        bytes_per_pass,
        best_rate_bytes_per_s: rates[repeats - 1],
        median_rate_bytes_per_s: median_of_sorted(&rates),
    }
}

/// One triad pass, `a[i] = b[i] + s · c[i]`, the unit [`stream_triad`] times.
///
/// Cost model: 2 flops per element (multiply, add); bytes as STREAM counts them, b and c read
/// and a written = 3 × 4 per element.
///
/// # Panics
///
/// If the three slices differ in length.
pub fn triad(a: &mut [f32], b: &[f32], c: &[f32], s: f32) -> Cost {
    assert!(
        a.len() == b.len() && b.len() == c.len(),
        "triad: arrays of {}, {} and {} elements differ",
        a.len(),
        b.len(),
        c.len()
    );
    for (ai, (&bi, &ci)) in a.iter_mut().zip(b.iter().zip(c)) {
        *ai = bi + s * ci;
    }
    Cost {
        flops: 2 * a.len() as u64,
        bytes: a.len() as u64 * TRIAD_BYTES_PER_ELEMENT,
    }
}

/// Median of a non-empty sorted slice (the mean of the middle two for an even length).
fn median_of_sorted(x: &[f64]) -> f64 {
    let mid = x.len() / 2;
    if x.len() % 2 == 1 {
        x[mid]
    } else {
        (x[mid - 1] + x[mid]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, fresh_rng, random_vec, to_f64};

    #[test]
    fn triad_matches_f64_reference() {
        let (mut rng, seed) = fresh_rng();
        let (b, c) = (random_vec(&mut rng, 33), random_vec(&mut rng, 33));
        let mut a = vec![f32::NAN; 33];
        let cost = triad(&mut a, &b, &c, 1.5);
        assert_eq!(
            cost,
            Cost {
                flops: 66,
                bytes: 33 * 12
            }
        );
        let want: Vec<f64> = to_f64(&b)
            .iter()
            .zip(to_f64(&c))
            .map(|(b, c)| b + 1.5 * c)
            .collect();
        assert_close(&a, &want, 1e-6, 1e-6, seed, "triad");
    }

    #[test]
    fn median_of_odd_and_even_lengths() {
        assert_eq!(median_of_sorted(&[1.0, 2.0, 7.0]), 2.0);
        assert_eq!(median_of_sorted(&[1.0, 2.0, 4.0, 7.0]), 3.0);
    }

    #[test]
    fn stream_triad_counts_three_arrays_and_best_is_at_least_the_median() {
        let r = stream_triad(1 << 12, 5);
        assert_eq!(
            (r.elements, r.repeats, r.bytes_per_pass),
            (4096, 5, 4096 * 12)
        );
        assert!(r.median_rate_bytes_per_s > 0.0 && r.median_rate_bytes_per_s.is_finite());
        assert!(r.best_rate_bytes_per_s >= r.median_rate_bytes_per_s);
    }

    #[test]
    fn stream_kernels_compute_what_stream_defines() {
        let (mut a, mut b, mut c) = (vec![1.0f32, 2.0], vec![10.0f32, 20.0], vec![0.0f32; 2]);
        StreamKernel::Copy.run(&mut a, &mut b, &mut c);
        assert_eq!(c, [1.0, 2.0]);
        StreamKernel::Scale.run(&mut a, &mut b, &mut c);
        assert_eq!(b, [3.0, 6.0]);
        StreamKernel::Add.run(&mut a, &mut b, &mut c);
        assert_eq!(c, [4.0, 8.0]);
        StreamKernel::Triad.run(&mut a, &mut b, &mut c);
        assert_eq!(a, [15.0, 30.0]);
    }

    #[test]
    fn threaded_stream_counts_every_array_and_best_is_at_least_the_median() {
        for kernel in StreamKernel::ALL {
            // 1001 elements over 3 threads: chunks of 334, 334 and 333.
            let r = stream(kernel, 1001, 3, 3);
            assert_eq!(r.bytes_per_pass, 1001 * kernel.bytes_per_element());
            assert_eq!((r.threads, r.repeats), (3, 3));
            assert!(r.median_rate_bytes_per_s > 0.0 && r.median_rate_bytes_per_s.is_finite());
            assert!(r.best_rate_bytes_per_s >= r.median_rate_bytes_per_s);
        }
        assert_eq!(StreamKernel::Copy.bytes_per_element(), 8);
        assert_eq!(StreamKernel::Triad.name(), "triad");
    }

    #[test]
    #[should_panic(expected = "threads is 0")]
    fn stream_rejects_zero_threads() {
        stream(StreamKernel::Add, 8, 1, 0);
    }

    #[test]
    #[should_panic(expected = "repeats is 0")]
    fn stream_triad_rejects_zero_repeats() {
        stream_triad(8, 0);
    }
}
