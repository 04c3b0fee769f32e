//! Matmul throughput on the shapes of a decoder layer: `matmul_w` with f32 weights against a raw
//! `gemm::gemm` call with identical arguments (what the wrapper costs), `matmul_w` with bf16
//! weights (what halving the weight bytes buys), a stack of decoder layers too large for any
//! cache (decode's weights streaming from memory), and the STREAM triad (what memory allows).
//!
//! Run with `cargo bench -p pinch-kernels --bench matmul`. Counters: items are flops, bytes are
//! the weight bytes streamed per call.

use divan::counter::{BytesCount, ItemsCount};
use divan::{Bencher, black_box};
use pinch_kernels::{Matrix, Storage, matmul_w, triad};

fn main() {
    divan::main();
}

/// `out[m, n] = a[m, k] · w[k, n]`.
#[derive(Clone, Copy, Debug)]
struct Shape {
    m: usize,
    k: usize,
    n: usize,
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "m{}_k{}_n{}", self.m, self.k, self.n)
    }
}

/// Decode (m = 1), a small batch (8) and a prefill chunk (64) through a small Llama layer's
/// fused QKV (1024 → 3072), attention output (1024 → 1024) and MLP down (2816 → 1024).
const SHAPES: [Shape; 9] = {
    const fn s(m: usize, k: usize, n: usize) -> Shape {
        Shape { m, k, n }
    }
    [
        s(1, 1024, 3072),
        s(1, 1024, 1024),
        s(1, 2816, 1024),
        s(8, 1024, 3072),
        s(8, 1024, 1024),
        s(8, 2816, 1024),
        s(64, 1024, 3072),
        s(64, 1024, 1024),
        s(64, 2816, 1024),
    ]
};

/// Decode through a matrix far larger than the last-level cache (128 MiB as f32, 64 MiB as
/// bf16), where the weights must come from memory.
const LARGE: [Shape; 1] = [Shape {
    m: 1,
    k: 4096,
    n: 8192,
}];

/// One decoder layer of the `small` preset (hidden 1024, 16 query and 4 KV heads of 64, MLP
/// 3584) as `[in, out]` weight shapes: q, k, v, o, gate, up, down.
const SMALL_LAYER: [(usize, usize); 7] = [
    (1024, 1024),
    (1024, 256),
    (1024, 256),
    (1024, 1024),
    (1024, 3584),
    (1024, 3584),
    (3584, 1024),
];

/// Layers in the decode-stack benchmarks: 4 × 13.6 M weights, 109 MB as bf16, over three times
/// the 32 MiB L3, so every pass streams its weights from memory as decode does.
const STACK_LAYERS: usize = 4;

/// Deterministic values in [-1, 1): benchmarks need no randomness, only non-trivial data.
fn values(len: usize, salt: usize) -> Vec<f32> {
    (0..len)
        .map(|i| ((i * 7919 + salt * 104_729) % 2000) as f32 / 1000.0 - 1.0)
        .collect()
}

fn counters<'a, 'b>(b: Bencher<'a, 'b>, s: Shape, storage: Storage) -> Bencher<'a, 'b> {
    let flops = 2 * s.m * s.k * s.n;
    let weight_bytes = s.k * s.n * storage.bytes_per_element();
    b.counter(ItemsCount::new(flops))
        .counter(BytesCount::new(weight_bytes))
}

fn bench_matmul_w(b: Bencher, s: Shape, storage: Storage) {
    let a = values(s.m * s.k, 1);
    let w = Matrix::from_f32(s.k, s.n, values(s.k * s.n, 2), storage);
    let mut out = vec![0.0f32; s.m * s.n];
    counters(b, s, storage)
        .bench_local(|| matmul_w(black_box(&a), s.m, black_box(&w), black_box(&mut out)));
}

#[divan::bench(args = SHAPES)]
fn matmul_w_f32(b: Bencher, s: Shape) {
    bench_matmul_w(b, s, Storage::F32);
}

#[divan::bench(args = SHAPES)]
fn matmul_w_bf16(b: Bencher, s: Shape) {
    bench_matmul_w(b, s, Storage::Bf16);
}

#[divan::bench(args = LARGE, sample_count = 20)]
fn matmul_w_f32_large(b: Bencher, s: Shape) {
    bench_matmul_w(b, s, Storage::F32);
}

#[divan::bench(args = LARGE, sample_count = 20)]
fn matmul_w_bf16_large(b: Bencher, s: Shape) {
    bench_matmul_w(b, s, Storage::Bf16);
}

/// Decode of `m` rows through a stack of layers: every matmul of each layer in order (the
/// activations are not chained: only the weights' traffic matters here). Bytes are every weight
/// once, as decode streams them.
fn bench_stack(b: Bencher, m: usize, storage: Storage) {
    let layers: Vec<Matrix> = (0..STACK_LAYERS)
        .flat_map(|l| SMALL_LAYER.iter().map(move |&(k, n)| (l, k, n)))
        .map(|(l, k, n)| Matrix::from_f32(k, n, values(k * n, l + n), storage))
        .collect();
    let weight_bytes: u64 = layers.iter().map(Matrix::bytes).sum();
    let a = values(m * 3584, 1);
    let mut out = vec![0.0f32; m * 3584];
    b.counter(BytesCount::new(weight_bytes)).bench_local(|| {
        for w in &layers {
            let (k, n) = (w.rows(), w.cols());
            matmul_w(black_box(&a[..m * k]), m, w, black_box(&mut out[..m * n]));
        }
    });
}

#[divan::bench(args = [1, 8], sample_count = 20)]
fn decode_stack_f32(b: Bencher, m: usize) {
    bench_stack(b, m, Storage::F32);
}

#[divan::bench(args = [1, 8], sample_count = 20)]
fn decode_stack_bf16(b: Bencher, m: usize) {
    bench_stack(b, m, Storage::Bf16);
}

#[divan::bench(args = SHAPES)]
fn raw_gemm_f32(b: Bencher, s: Shape) {
    let a = values(s.m * s.k, 1);
    let w = values(s.k * s.n, 2);
    let mut out = vec![0.0f32; s.m * s.n];
    counters(b, s, Storage::F32).bench_local(|| {
        let (a, w, out) = (black_box(&a), black_box(&w), black_box(&mut out));
        // SAFETY: a is [m, k], w is [k, n] and out is [m, n], all row-major with the strides
        // given; out is a unique borrow distinct from the inputs.
        unsafe {
            gemm::gemm(
                s.m,
                s.n,
                s.k,
                out.as_mut_ptr(),
                1,
                s.n as isize,
                false,
                a.as_ptr(),
                1,
                s.k as isize,
                w.as_ptr(),
                1,
                s.n as isize,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::None,
            );
        }
    });
}

/// 2^24 f32 elements per array (64 MiB each, 192 MiB in all): far beyond any last-level cache.
const TRIAD_ELEMENTS: usize = 1 << 24;

/// One STREAM triad pass (the unit `stream_triad` times); bytes counted as STREAM does.
#[divan::bench(sample_count = 20, sample_size = 1)]
fn stream_triad_pass(b: Bencher) {
    let (mut a, x, y) = (
        vec![0.0f32; TRIAD_ELEMENTS],
        values(TRIAD_ELEMENTS, 3),
        values(TRIAD_ELEMENTS, 4),
    );
    triad(&mut a, &x, &y, 3.0);
    b.counter(BytesCount::new(TRIAD_ELEMENTS * 12))
        .bench_local(|| {
            triad(
                black_box(&mut a),
                black_box(&x),
                black_box(&y),
                black_box(3.0),
            )
        });
}
