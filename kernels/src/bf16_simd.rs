//! Fused bf16-weight matmul kernels for x86-64 with AVX2 and FMA, picked at run time: each
//! weight is read once from memory at 2 bytes, widened to f32 in a register (bf16 → f32 is
//! exact: the 16 bits move to the top of a 32-bit lane) and fed straight into an FMA, so no f32
//! copy of the weights is ever written.
//!
//! Two shapes of work, both on `w[k, n]` row-major (rows = inputs, columns = outputs):
//! - [`Simd::gemv`], one input row (decode): an axpy over weight rows into a block of `out`
//!   kept in cache, 8 rows per pass taken from 8 bands of the matrix, so the weights stream from
//!   memory in a few long sequential runs, which the hardware prefetchers follow best (see
//!   [`GEMV_BANDS`]);
//! - [`Simd::rows`], a few input rows: register tiles of up to 6 rows × 2–4 vectors of columns
//!   accumulate over a block of weight rows before touching `out`, so each weight vector,
//!   converted once, feeds one FMA per input row.
//!
//! The CPU is checked once per call (`is_x86_feature_detected!` caches its answer); other
//! architectures, and x86-64 CPUs without AVX2 and FMA, get no [`Simd`] and the caller falls
//! back to portable code.
//!
//! Why not AVX-512: its intrinsics are stable only from Rust 1.89, past the workspace's 1.85.
//! On Zen 4 it would not add FMA throughput (a 512-bit FMA takes both 256-bit pipes); an
//! AVX-512 build of these kernels streamed decode's weights at the same rate, and its wider
//! register tiles were faster on matrices in cache (m = 8: 93 against 75 GFLOP/s) but slower
//! on weights from memory (a decoder-layer stack at m = 8: 23 against 14 ms).

// Off x86-64 no level exists, so the generic kernels below are never instantiated.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use half::bf16;

/// Rows of `w` one [`Simd::gemv`] pass folds into `out`, one from each of this many bands of
/// consecutive rows, so `out` is loaded and stored once per this many weight vectors.
///
/// Why bands: a core streams from memory fastest through a few long sequential runs, which its
/// prefetchers follow. Folding rows one at a time is one such run, but then every weight costs a
/// load and a store of `out`, which keeps a Zen 4 core too busy to overlap the misses (about 16
/// GB/s of bf16 against 22 for f32 `gemm`, measured on the `small` preset's shapes). Folding
/// neighbouring rows together makes many short interleaved runs, `n · 2` bytes apart, that the
/// prefetchers lose (9–13 GB/s for `n` = 256 and 1024); prefetching the next 8 rows in software
/// helped only part of the way. Rows `k / 8` apart make 8 long runs, one per band, and streamed
/// at 23–25 GB/s on the same shapes, faster than f32; 4 bands were 1–2 GB/s slower on a
/// decoder layer and its LM head, 16 slower still.
///
/// Band `i` starts `i` rows into its band and wraps around at its end. Without that skew the 8
/// rows of a pass lie a multiple of the band's size apart, which for some shapes is a multiple
/// of 64 KiB, and the cache sets they share make a matrix that fits in L3 run at half speed
/// (2816 × 1024: 33 GB/s unskewed, 57 skewed); from memory the skew changes nothing measurable.
const GEMV_BANDS: usize = 8;

/// How far ahead of its reads, in weights, [`Simd::gemv`] asks for each band's next line: 256
/// bytes. On Zen 4 this lifted the `small` preset's shapes from 21–23 to 24–27 GB/s; 768
/// bytes and more were slower than none (18–20 GB/s).
const GEMV_PREFETCH_AHEAD: usize = 128;

/// bf16 weights per 64-byte cache line.
const LINE_ELEMENTS: usize = 32;

/// Widest block of output columns [`Simd::gemv`] accumulates at once: 32 KiB of `out`, kept
/// in L1/L2 while the weight rows stream past. Each band then reads 16 KiB runs; 8192 beat
/// 4096 and 2048 on a 4096 × 8192 matrix and a 1024 × 32768 LM head.
const GEMV_BLOCK_COLS: usize = 8192;

/// Weight rows one register tile of [`Simd::rows`] accumulates over before it is stored: the
/// matching block of `a` (512 bytes per row) stays in cache for every column tile, and `out` is
/// read and written once per block.
const ROWS_BLOCK_K: usize = 128;

/// Proof that this CPU has the instructions the kernels are compiled for (AVX2 and FMA).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Simd(Token);

#[cfg(target_arch = "x86_64")]
type Token = x86::Avx2;

/// Nothing to dispatch to off x86-64: an uninhabited token, so [`Simd::detect`] is always
/// `None` there and the methods are never called.
#[cfg(not(target_arch = "x86_64"))]
#[derive(Clone, Copy, Debug)]
enum Token {}

impl Simd {
    /// `Some` where the CPU has AVX2 and FMA.
    pub(crate) fn detect() -> Option<Simd> {
        #[cfg(target_arch = "x86_64")]
        return x86::Avx2::detect().map(Simd);
        #[cfg(not(target_arch = "x86_64"))]
        None
    }

    /// Columns `first_col .. first_col + out.len()` of `a[k] · w[k, n]` into `out` (overwritten),
    /// where `k = a.len()`.
    ///
    /// # Panics
    ///
    /// If `w` is shorter than `k · n` or the columns pass `n`.
    pub(crate) fn gemv(self, a: &[f32], w: &[bf16], n: usize, first_col: usize, out: &mut [f32]) {
        let job = Gemv { a, w, n, first_col };
        job.check(out.len());
        dispatch_gemv(self.0, &job, out);
    }

    /// Columns `first_col .. first_col + width` of `a[m, k] · w[k, n]` into `out`, one slice of
    /// `width` per row of `a` (overwritten), where `m = out.len()` and `k = a.len() / m`.
    ///
    /// # Panics
    ///
    /// If `a` is not `m` rows, `w` is shorter than `k · n`, the out rows differ in length or
    /// the columns pass `n`.
    pub(crate) fn rows(
        self,
        a: &[f32],
        w: &[bf16],
        n: usize,
        first_col: usize,
        out: &mut [&mut [f32]],
    ) {
        let job = Rows::new(a, w, n, first_col, out);
        dispatch_rows(self.0, &job, out);
    }
}

#[cfg(target_arch = "x86_64")]
fn dispatch_gemv(token: Token, job: &Gemv<'_>, out: &mut [f32]) {
    // SAFETY: the token proves the CPU has the features the function is compiled for.
    unsafe { x86::gemv_avx2(token, job, out) }
}

#[cfg(target_arch = "x86_64")]
fn dispatch_rows(token: Token, job: &Rows<'_>, out: &mut [&mut [f32]]) {
    // SAFETY: as above.
    unsafe { x86::rows_avx2(token, job, out) }
}

#[cfg(not(target_arch = "x86_64"))]
fn dispatch_gemv(token: Token, _job: &Gemv<'_>, _out: &mut [f32]) {
    match token {}
}

#[cfg(not(target_arch = "x86_64"))]
fn dispatch_rows(token: Token, _job: &Rows<'_>, _out: &mut [&mut [f32]]) {
    match token {}
}

/// One SIMD instruction set, as the generic kernels use it. Implemented by tokens that exist
/// only once the CPU is known to have the instructions, which is what makes the safe methods
/// sound; the kernels are inlined into functions compiled with the matching target features.
trait Lanes: Copy {
    /// f32 lanes per vector.
    const WIDTH: usize;
    /// Most rows of a register tile in [`Simd::rows`].
    const TILE_ROWS: usize;
    /// Vector registers a register tile may fill with its accumulators and converted weights,
    /// leaving the rest for the broadcast input and a temporary.
    const TILE_REGS: usize;
    type V: Copy;
    fn zero(self) -> Self::V;
    fn splat(self, x: f32) -> Self::V;
    /// `a · b + c`, rounded once.
    fn mul_add(self, a: Self::V, b: Self::V, c: Self::V) -> Self::V;
    /// # Safety
    /// `p .. p + WIDTH` must be readable.
    unsafe fn load(self, p: *const f32) -> Self::V;
    /// # Safety
    /// `p .. p + WIDTH` must be writable.
    unsafe fn store(self, p: *mut f32, v: Self::V);
    /// `WIDTH` bf16 values widened to f32.
    /// # Safety
    /// `p .. p + WIDTH` must be readable.
    unsafe fn load_bf16(self, p: *const bf16) -> Self::V;
    /// `2 · WIDTH` bf16 values widened to f32 without moving them across lanes: the
    /// even-indexed values in the first vector, the odd-indexed in the second.
    /// # Safety
    /// `p .. p + 2 · WIDTH` must be readable.
    unsafe fn load_bf16_pairs(self, p: *const bf16) -> (Self::V, Self::V);
    /// Asks for the cache line holding `p` ahead of its use; any address is allowed.
    fn prefetch(self, p: *const bf16);
}

/// The operands of [`Simd::gemv`].
struct Gemv<'a> {
    a: &'a [f32],
    w: &'a [bf16],
    n: usize,
    first_col: usize,
}

impl Gemv<'_> {
    fn check(&self, width: usize) {
        assert!(
            self.w.len() >= self.a.len() * self.n,
            "bf16 gemv: {} weights cannot be [{}, {}]",
            self.w.len(),
            self.a.len(),
            self.n
        );
        assert!(
            self.first_col + width <= self.n,
            "bf16 gemv: columns {}..{} are outside 0..{}",
            self.first_col,
            self.first_col + width,
            self.n
        );
    }
}

/// The body of [`Simd::gemv`], inlined into a function compiled for the level: blocks of at most [`GEMV_BLOCK_COLS`]
/// columns, each zeroed and then accumulated into by [`gemv_block`].
#[inline(always)]
fn gemv<L: Lanes>(l: L, job: &Gemv<'_>, out: &mut [f32]) {
    for (b, block) in out.chunks_mut(GEMV_BLOCK_COLS).enumerate() {
        block.fill(0.0);
        let c0 = job.first_col + b * GEMV_BLOCK_COLS;
        gemv_block::<L, GEMV_BANDS>(l, job, c0, block);
    }
}

/// Adds `a · w[.., c0 .. c0 + block.len()]` into `block`, `R` rows per pass taken from `R`
/// bands of consecutive rows (the `k mod R` rows left over one by one). Whole `2 · WIDTH`
/// chunks of the block are accumulated paired ([`axpy_pairs`]) and put back in order at the
/// end; the columns after them go through [`axpy_rows`].
#[inline(always)]
fn gemv_block<L: Lanes, const R: usize>(l: L, job: &Gemv<'_>, c0: usize, block: &mut [f32]) {
    let (n, k) = (job.n, job.a.len());
    let band = k / R;
    let paired = block.len() - block.len() % (2 * L::WIDTH);
    let (head, rest) = block.split_at_mut(paired);
    for j in 0..band {
        // Band i starts i rows in and wraps around (see `GEMV_BANDS`).
        let rows: [usize; R] = std::array::from_fn(|i| i * band + (j + i) % band);
        let a: [f32; R] = rows.map(|r| job.a[r]);
        let offsets = rows.map(|r| r * n + c0);
        axpy_pairs(l, &a, job.w, &offsets, head);
        let offsets = rows.map(|r| r * n + c0 + paired);
        axpy_rows(l, &a, job.w, &offsets, rest);
    }
    for r in band * R..k {
        axpy_pairs(l, &[job.a[r]], job.w, &[r * n + c0], head);
        axpy_rows(l, &[job.a[r]], job.w, &[r * n + c0 + paired], rest);
    }
    unpair::<L>(head);
}

/// Puts each `2 · WIDTH` chunk of `out`, held as [even columns, odd columns], back in order.
#[inline(always)]
fn unpair<L: Lanes>(out: &mut [f32]) {
    let mut chunk = [0.0f32; 64];
    for part in out.chunks_exact_mut(2 * L::WIDTH) {
        let chunk = &mut chunk[..part.len()];
        chunk.copy_from_slice(part);
        let (even, odd) = chunk.split_at(L::WIDTH);
        for (i, (&e, &o)) in even.iter().zip(odd).enumerate() {
            part[2 * i] = e;
            part[2 * i + 1] = o;
        }
    }
}

/// Like [`axpy_rows`] on a whole number of `2 · WIDTH` chunks, with `out` held paired, and
/// prefetching each row [`GEMV_PREFETCH_AHEAD`] weights ahead (past the end of a row that is
/// the start of the next row of its band).
#[inline(always)]
fn axpy_pairs<L: Lanes, const R: usize>(
    l: L,
    a: &[f32; R],
    w: &[bf16],
    rows: &[usize; R],
    out: &mut [f32],
) {
    let width = out.len();
    assert!(width.is_multiple_of(2 * L::WIDTH) && rows.iter().all(|&r| r + width <= w.len()));
    let scale = a.map(|x| l.splat(x));
    let rows = rows.map(|r| w[r..].as_ptr());
    let op = out.as_mut_ptr();
    for c in (0..width).step_by(2 * L::WIDTH) {
        if c % LINE_ELEMENTS == 0 {
            for &row in &rows {
                l.prefetch(row.wrapping_add(c + GEMV_PREFETCH_AHEAD));
            }
        }
        // SAFETY: c + 2 · WIDTH <= width = out.len(), and each row's lanes end at
        // r + c + 2 · WIDTH <= r + width <= w.len() (asserted above).
        unsafe {
            let mut even = l.load(op.add(c));
            let mut odd = l.load(op.add(c + L::WIDTH));
            for (&s, &row) in scale.iter().zip(&rows) {
                let (e, o) = l.load_bf16_pairs(row.add(c));
                even = l.mul_add(s, e, even);
                odd = l.mul_add(s, o, odd);
            }
            l.store(op.add(c), even);
            l.store(op.add(c + L::WIDTH), odd);
        }
    }
}

/// `out[c] += Σ_i a[i] · w[rows[i] + c]` for `c < out.len()`.
#[inline(always)]
fn axpy_rows<L: Lanes, const R: usize>(
    l: L,
    a: &[f32; R],
    w: &[bf16],
    rows: &[usize; R],
    out: &mut [f32],
) {
    let width = out.len();
    assert!(rows.iter().all(|&r| r + width <= w.len()));
    let scale = a.map(|x| l.splat(x));
    let vectors = width / L::WIDTH;
    let row_ptrs = rows.map(|r| w[r..].as_ptr());
    let op = out.as_mut_ptr();
    for v in 0..vectors {
        let c = v * L::WIDTH;
        // SAFETY: c + WIDTH <= width = out.len(), and each row's lanes end at
        // r + c + WIDTH <= r + width <= w.len() (asserted above).
        unsafe {
            let mut acc = l.load(op.add(c));
            for (&s, &row) in scale.iter().zip(&row_ptrs) {
                acc = l.mul_add(s, l.load_bf16(row.add(c)), acc);
            }
            l.store(op.add(c), acc);
        }
    }
    for c in vectors * L::WIDTH..width {
        for (&x, &r) in a.iter().zip(rows) {
            out[c] = x.mul_add(w[r + c].to_f32(), out[c]);
        }
    }
}

/// The operands of [`Simd::rows`].
struct Rows<'a> {
    a: &'a [f32],
    m: usize,
    k: usize,
    w: &'a [bf16],
    n: usize,
    first_col: usize,
    width: usize,
}

impl<'a> Rows<'a> {
    fn new(
        a: &'a [f32],
        w: &'a [bf16],
        n: usize,
        first_col: usize,
        out: &[&mut [f32]],
    ) -> Rows<'a> {
        let m = out.len();
        let width = out.first().map_or(0, |row| row.len());
        assert!(
            out.iter().all(|row| row.len() == width),
            "bf16 rows: out rows differ in length"
        );
        let k = a.len().checked_div(m).unwrap_or(0);
        assert_eq!(a.len(), m * k, "bf16 rows: a is not {m} rows");
        assert!(
            w.len() >= k * n && first_col + width <= n,
            "bf16 rows: columns {first_col}..{} of {} weights as [{k}, {n}] are out of range",
            first_col + width,
            w.len()
        );
        Rows {
            a,
            m,
            k,
            w,
            n,
            first_col,
            width,
        }
    }
}

/// The body of [`Simd::rows`], inlined into a function compiled for the level: for each block of weight rows, column tiles
/// across the width, and within each tile the rows of `a` in chunks of at most `TILE_ROWS`
/// (the tile's weights, just read, come from L1 for the later chunks). Columns left over after
/// the last whole vector are done in scalar code.
#[inline(always)]
fn rows<L: Lanes>(l: L, job: &Rows<'_>, out: &mut [&mut [f32]]) {
    if job.k == 0 {
        out.iter_mut().for_each(|row| row.fill(0.0));
        return;
    }
    let vectors = job.width / L::WIDTH;
    let wide = tile_vectors::<L>(job.m.min(L::TILE_ROWS));
    let out_rows: Vec<*mut f32> = out.iter_mut().map(|row| row.as_mut_ptr()).collect();
    for k0 in (0..job.k).step_by(ROWS_BLOCK_K) {
        let block = Block {
            k0,
            k1: (k0 + ROWS_BLOCK_K).min(job.k),
            first: k0 == 0,
        };
        let mut v = 0;
        while v < vectors {
            let t = if v + wide <= vectors { wide } else { 1 };
            for i0 in (0..job.m).step_by(L::TILE_ROWS) {
                let tile = Tile {
                    i0,
                    c: v * L::WIDTH,
                    block,
                };
                let rows = (job.m - i0).min(L::TILE_ROWS);
                // SAFETY: rows i0 .. i0 + rows are within m, columns c .. c + t · WIDTH within
                // the width (v + t <= vectors), and the block's weight rows within k.
                unsafe { tile_dispatch(l, job, &out_rows, &tile, rows, t) };
            }
            v += t;
        }
    }
    scalar_columns(job, vectors * L::WIDTH, out);
}

/// Vectors of columns per register tile for `rows` rows: the widest of 4, 3, 2, 1 whose
/// `rows · t` accumulators and `t` weight vectors fit the level's registers (one more spills:
/// a 4 × 3 tile ran at less than half the speed of 6 × 2).
fn tile_vectors<L: Lanes>(rows: usize) -> usize {
    [4, 3, 2, 1]
        .into_iter()
        .find(|&t| (rows + 1) * t <= L::TILE_REGS)
        .unwrap_or(1)
}

/// Columns `c0..width` of the product in plain f32 code (fewer than one vector's worth).
fn scalar_columns(job: &Rows<'_>, c0: usize, out: &mut [&mut [f32]]) {
    for (i, row) in out.iter_mut().enumerate() {
        let a = &job.a[i * job.k..][..job.k];
        for (c, o) in row.iter_mut().enumerate().skip(c0) {
            let col = job.first_col + c;
            *o = a.iter().enumerate().fold(0.0, |acc, (r, &x)| {
                x.mul_add(job.w[r * job.n + col].to_f32(), acc)
            });
        }
    }
}

/// The weight rows `k0..k1` one register tile accumulates over; `first` when no earlier block
/// has written `out` yet.
#[derive(Clone, Copy)]
struct Block {
    k0: usize,
    k1: usize,
    first: bool,
}

/// Where a register tile sits: rows from `i0`, columns from `c` (relative to `first_col`).
struct Tile {
    i0: usize,
    c: usize,
    block: Block,
}

/// Runs the register tile of `rows × t` vectors, monomorphized for each shape.
///
/// # Safety
///
/// As for [`tile`]: the tile lies inside the job.
#[inline(always)]
unsafe fn tile_dispatch<L: Lanes>(
    l: L,
    job: &Rows<'_>,
    out: &[*mut f32],
    at: &Tile,
    rows: usize,
    t: usize,
) {
    macro_rules! shapes {
        ($(($m:literal, $t:literal)),*) => {
            match (rows, t) {
                // SAFETY: the caller's contract, passed on.
                $(($m, $t) => unsafe { tile::<L, $m, $t>(l, job, out, at) },)*
                _ => unreachable!("bf16 rows: no {rows} × {t} tile"),
            }
        };
    }
    // Every shape `tile_vectors` can pick for AVX2 (`(rows + 1) · t <= 14`), and one-vector
    // tiles for the last columns.
    shapes!(
        (1, 1),
        (1, 2),
        (1, 3),
        (1, 4),
        (2, 1),
        (2, 2),
        (2, 3),
        (2, 4),
        (3, 1),
        (3, 2),
        (3, 3),
        (4, 1),
        (4, 2),
        (5, 1),
        (5, 2),
        (6, 1),
        (6, 2)
    )
}

/// `out[i0 + i][c + j] (+)= Σ_{r in block} a[i0 + i, r] · w[r, first_col + c + j]` for
/// `i < M` and `j < T · WIDTH`: `M × T` accumulators live in registers for the whole block,
/// each weight vector is converted once and used `M` times.
///
/// # Safety
///
/// Rows `i0 .. i0 + M` are rows of `a` and `out`, columns `c .. c + T · WIDTH` lie within the
/// job's width, and the block's rows lie within `k`; `out` holds pointers to the job's out
/// rows, which nothing else accesses meanwhile.
#[inline(always)]
unsafe fn tile<L: Lanes, const M: usize, const T: usize>(
    l: L,
    job: &Rows<'_>,
    out: &[*mut f32],
    at: &Tile,
) {
    let Tile { i0, c, block } = *at;
    let mut acc = [[l.zero(); T]; M];
    let (ap, wp) = (job.a.as_ptr(), job.w.as_ptr());
    // SAFETY (whole body): the contract keeps every row index below m (a row is k long), every
    // column below first_col + width <= n, and every weight row below k, so each pointer stays
    // inside `a` ([m, k]), `w` (at least k · n) or an out row (width long).
    unsafe {
        if !block.first {
            for (i, acc) in acc.iter_mut().enumerate() {
                for (t, acc) in acc.iter_mut().enumerate() {
                    *acc = l.load(out[i0 + i].add(c + t * L::WIDTH));
                }
            }
        }
        for r in block.k0..block.k1 {
            let wrow = wp.add(r * job.n + job.first_col + c);
            let wv: [L::V; T] = std::array::from_fn(|t| l.load_bf16(wrow.add(t * L::WIDTH)));
            for (i, acc) in acc.iter_mut().enumerate() {
                let x = l.splat(*ap.add((i0 + i) * job.k + r));
                for (acc, &wv) in acc.iter_mut().zip(&wv) {
                    *acc = l.mul_add(x, wv, *acc);
                }
            }
        }
        for (i, acc) in acc.iter().enumerate() {
            for (t, &acc) in acc.iter().enumerate() {
                l.store(out[i0 + i].add(c + t * L::WIDTH), acc);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The x86-64 levels: tokens proving the CPU has the instructions, and the entry points
    //! compiled with them.

    use std::arch::x86_64::*;

    use half::bf16;

    use super::{Gemv, Lanes, Rows};

    /// Proof that the CPU has AVX2 and FMA (8 f32 lanes, 16 vector registers).
    #[derive(Clone, Copy, Debug)]
    pub(super) struct Avx2(());

    impl Avx2 {
        pub(super) fn detect() -> Option<Avx2> {
            (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
                .then_some(Avx2(()))
        }
    }

    // SAFETY (every `unsafe` block in this impl): the token exists only if `detect` found the
    // features the intrinsic needs; pointer contracts are the caller's, as documented on
    // `Lanes`.
    impl Lanes for Avx2 {
        const WIDTH: usize = 8;
        const TILE_ROWS: usize = 6;
        const TILE_REGS: usize = 14;
        type V = __m256;

        #[inline(always)]
        fn zero(self) -> __m256 {
            unsafe { _mm256_setzero_ps() }
        }

        #[inline(always)]
        fn splat(self, x: f32) -> __m256 {
            unsafe { _mm256_set1_ps(x) }
        }

        #[inline(always)]
        fn mul_add(self, a: __m256, b: __m256, c: __m256) -> __m256 {
            unsafe { _mm256_fmadd_ps(a, b, c) }
        }

        #[inline(always)]
        unsafe fn load(self, p: *const f32) -> __m256 {
            unsafe { _mm256_loadu_ps(p) }
        }

        #[inline(always)]
        unsafe fn store(self, p: *mut f32, v: __m256) {
            unsafe { _mm256_storeu_ps(p, v) }
        }

        #[inline(always)]
        unsafe fn load_bf16(self, p: *const bf16) -> __m256 {
            unsafe {
                let halves = _mm_loadu_si128(p.cast());
                _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(halves)))
            }
        }

        #[inline(always)]
        unsafe fn load_bf16_pairs(self, p: *const bf16) -> (__m256, __m256) {
            unsafe {
                let x = _mm256_loadu_si256(p.cast());
                let even = _mm256_slli_epi32::<16>(x);
                let odd = _mm256_and_si256(x, _mm256_set1_epi32(-65536));
                (_mm256_castsi256_ps(even), _mm256_castsi256_ps(odd))
            }
        }

        #[inline(always)]
        fn prefetch(self, p: *const bf16) {
            // SAFETY: a prefetch never faults, whatever the address, and reads nothing the
            // program can observe (SSE, part of every x86-64).
            unsafe { _mm_prefetch::<_MM_HINT_T0>(p.cast()) }
        }
    }

    // The entry points: the generic kernels inlined into functions compiled for each level.
    // The token argument is what lets safe code call them.

    /// # Safety
    ///
    /// The CPU has AVX2 and FMA (an `Avx2` token proves it).
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn gemv_avx2(l: Avx2, job: &Gemv<'_>, out: &mut [f32]) {
        super::gemv(l, job, out);
    }

    /// # Safety
    ///
    /// As for [`gemv_avx2`].
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn rows_avx2(l: Avx2, job: &Rows<'_>, out: &mut [&mut [f32]]) {
        super::rows(l, job, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_close, fresh_rng, matmul_f64, random_vec, to_f64};

    /// bf16 weights `[k, n]` and their f64 values.
    fn weights(rng: &mut rand::rngs::StdRng, k: usize, n: usize) -> (Vec<bf16>, Vec<f64>) {
        let w: Vec<bf16> = random_vec(rng, k * n)
            .into_iter()
            .map(bf16::from_f32)
            .collect();
        let exact = w.iter().map(|x| f64::from(x.to_f32())).collect();
        (w, exact)
    }

    /// Columns `cols` of the f64 product, row by row.
    fn reference(a: &[f32], w: &[f64], m: usize, n: usize, cols: Range) -> Vec<f64> {
        let k = a.len() / m.max(1);
        let full = matmul_f64(&to_f64(a), w, m, k, n);
        full.chunks(n.max(1))
            .flat_map(|row| row[cols.0..cols.1].to_vec())
            .collect()
    }

    /// A column range as (start, end).
    type Range = (usize, usize);

    /// Checks [`Simd::rows`] (and [`Simd::gemv`] when `m = 1`) on columns `cols` of an
    /// `[m, k] · [k, n]` product, where the CPU has the instructions
    /// ([`this_x86_64_cpu_offers_the_kernels`] makes sure the test machines do).
    fn check(m: usize, k: usize, n: usize, cols: Range) {
        let (mut rng, seed) = fresh_rng();
        let a = random_vec(&mut rng, m * k);
        let (w, exact) = weights(&mut rng, k, n);
        let want = reference(&a, &exact, m, n, cols);
        let width = cols.1 - cols.0;
        if let Some(simd) = Simd::detect() {
            let what = format!("{m}x{k}x{n} columns {cols:?}");
            // NaN-filled output proves the kernels overwrite rather than accumulate.
            let mut out = vec![f32::NAN; m * width];
            let mut rows: Vec<&mut [f32]> = out.chunks_exact_mut(width.max(1)).collect();
            simd.rows(&a, &w, n, cols.0, &mut rows);
            if width > 0 {
                assert_close(&out, &want, 1e-6 * k as f64, 1e-4, seed, &what);
            }
            if m == 1 {
                let mut out = vec![f32::NAN; width];
                simd.gemv(&a, &w, n, cols.0, &mut out);
                assert_close(
                    &out,
                    &want,
                    1e-6 * k as f64,
                    1e-4,
                    seed,
                    &format!("gemv {what}"),
                );
            }
        }
    }

    #[test]
    fn gemv_covers_bands_leftover_rows_ragged_widths_and_blocks() {
        // k below, at and past 8 bands, with leftover rows; widths of whole pairs of vectors,
        // with one more vector, and with scalar columns after them.
        for k in [1, 7, 8, 9, 23, 300] {
            for n in [37, 50, 64] {
                check(1, k, n, (0, n));
            }
        }
        // A range starting mid-row; two column blocks (8192 + 9).
        check(1, 10, 4200, (17, 4150));
        check(1, 19, 8201, (0, 8201));
    }

    #[test]
    fn rows_cover_every_tile_shape_and_ragged_edges() {
        // Every row count up to two full tiles and a ragged third, on widths that need wide
        // tiles, single-vector tiles and scalar columns, over several blocks of k.
        for m in 1..=17 {
            check(m, 300, 203, (0, 203));
        }
        check(8, 129, 1024, (0, 1024));
        check(5, 3, 100, (31, 97));
    }

    #[test]
    fn an_empty_inner_dimension_or_width_writes_zeros_or_nothing() {
        if let Some(simd) = Simd::detect() {
            let mut out = vec![f32::NAN; 2 * 5];
            let mut rows: Vec<&mut [f32]> = out.chunks_exact_mut(5).collect();
            simd.rows(&[], &[], 5, 0, &mut rows);
            assert_eq!(out, [0.0; 10]);
            let mut out = vec![f32::NAN; 5];
            simd.gemv(&[], &[], 5, 0, &mut out);
            assert_eq!(out, [0.0; 5]);
            simd.gemv(&[1.0], &[bf16::ONE; 5], 5, 5, &mut []);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    #[should_panic(expected = "columns 3..7 are outside 0..5")]
    fn gemv_rejects_columns_past_the_end() {
        let simd = Simd::detect().unwrap();
        simd.gemv(&[1.0], &[bf16::ONE; 5], 5, 3, &mut [0.0; 4]);
    }

    /// The build and test machines have AVX2 at least; without a level, every other test here
    /// would check nothing.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn this_x86_64_cpu_offers_the_kernels() {
        if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
            assert!(Simd::detect().is_some());
        }
    }
}
