//! Weight matrices stored as `f32` or `bf16`, and the ops that read them: [`matmul_w`] and
//! [`embedding_w`].
//!
//! Decode is bound by the bytes of weights streamed from memory, so storing weights as bf16
//! halves its cost; computation stays f32 everywhere. Up to 64 rows of activations, a bf16
//! matmul converts weights in registers inside fused kernels ([`crate::bf16_simd`], AVX2 and
//! FMA picked at run time, with portable fallbacks); for more rows it converts one cache-sized
//! panel at a time into a reused f32 scratch buffer and hands it to `gemm`. Memory sees 2 bytes
//! per weight either way. The portable loops that convert are compiled per CPU feature level
//! through `pulp`, since they only vectorize well with SIMD enabled.

use std::cell::RefCell;
use std::ops::Range;

use half::bf16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use crate::bf16_simd::Simd;
use crate::cost::{Cost, f32_bytes};
use crate::threads::{parallelism, threads};

/// Bytes of one token id.
const TOKEN_BYTES: u64 = std::mem::size_of::<u32>() as u64;

/// f32 elements of one converted weight panel: 128 KiB, well inside a core's L2 cache together
/// with the bf16 it was read from and the output strip it accumulates into.
const PANEL_ELEMENTS: usize = 32 * 1024;

/// Widest panel, in output columns. Measured on a Zen 4 core for m = 8 and 64 against 512, 1024
/// and full-width panels: narrower strips keep each strip of `out` in L1/L2 while its panels
/// accumulate, and 256 was fastest or level.
const PANEL_MAX_COLS: usize = 256;

/// How weights are stored. Computation is always f32.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Storage {
    /// 4 bytes per weight.
    F32,
    /// 2 bytes per weight (bfloat16: f32's exponent range, 8 bits of mantissa).
    Bf16,
}

impl Storage {
    /// Bytes one stored element takes.
    pub fn bytes_per_element(self) -> usize {
        match self {
            Storage::F32 => std::mem::size_of::<f32>(),
            Storage::Bf16 => std::mem::size_of::<bf16>(),
        }
    }

    /// The name [`Storage::parse`] accepts: `f32` or `bf16`.
    pub fn name(self) -> &'static str {
        match self {
            Storage::F32 => "f32",
            Storage::Bf16 => "bf16",
        }
    }

    /// Parses `f32` or `bf16`; anything else is `None`.
    pub fn parse(s: &str) -> Option<Storage> {
        match s {
            "f32" => Some(Storage::F32),
            "bf16" => Some(Storage::Bf16),
            _ => None,
        }
    }
}

/// A row-major `[rows, cols]` weight matrix; for a linear layer rows = inputs, cols = outputs.
#[derive(Clone, Debug, PartialEq)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: MatrixData,
}

/// The elements of a [`Matrix`], in their storage type.
#[derive(Clone, Debug, PartialEq)]
pub enum MatrixData {
    /// f32 storage.
    F32(Vec<f32>),
    /// bf16 storage.
    Bf16(Vec<bf16>),
}

impl Matrix {
    /// A matrix holding `data` (row-major, `rows * cols` values) in `storage`; bf16 storage
    /// rounds each value to the nearest bf16 (ties to even).
    ///
    /// # Panics
    ///
    /// If `data.len() != rows * cols`.
    pub fn from_f32(rows: usize, cols: usize, data: Vec<f32>, storage: Storage) -> Matrix {
        check_len(rows, cols, data.len());
        let data = match storage {
            Storage::F32 => MatrixData::F32(data),
            Storage::Bf16 => MatrixData::Bf16(data.iter().map(|&x| bf16::from_f32(x)).collect()),
        };
        Matrix { rows, cols, data }
    }

    /// A bf16 matrix holding `data` (row-major, `rows * cols` values).
    ///
    /// # Panics
    ///
    /// If `data.len() != rows * cols`.
    pub fn from_bf16(rows: usize, cols: usize, data: Vec<bf16>) -> Matrix {
        check_len(rows, cols, data.len());
        Matrix {
            rows,
            cols,
            data: MatrixData::Bf16(data),
        }
    }

    /// Number of rows (inputs of a linear layer).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns (outputs of a linear layer).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// How the elements are stored.
    pub fn storage(&self) -> Storage {
        match self.data {
            MatrixData::F32(_) => Storage::F32,
            MatrixData::Bf16(_) => Storage::Bf16,
        }
    }

    /// The stored elements.
    pub fn data(&self) -> &MatrixData {
        &self.data
    }

    /// Bytes the elements take in their storage type.
    pub fn bytes(&self) -> u64 {
        (self.rows * self.cols * self.storage().bytes_per_element()) as u64
    }

    /// Writes row `r` into `out` as f32.
    ///
    /// # Panics
    ///
    /// If `r >= rows` or `out.len() != cols`.
    pub fn row_into(&self, r: usize, out: &mut [f32]) {
        assert!(
            r < self.rows,
            "matrix: row {r} is outside {} rows",
            self.rows
        );
        self.block_into(r..r + 1, 0..self.cols, out);
    }

    /// A copy of columns `cols` of every row, in the same storage.
    ///
    /// # Panics
    ///
    /// If `cols` is not within `0..self.cols()`.
    pub fn column_slice(&self, cols: Range<usize>) -> Matrix {
        check_range("column", &cols, self.cols);
        let width = cols.len();
        let data = match &self.data {
            MatrixData::F32(d) => MatrixData::F32(columns_of(d, self.cols, &cols)),
            MatrixData::Bf16(d) => MatrixData::Bf16(columns_of(d, self.cols, &cols)),
        };
        Matrix {
            rows: self.rows,
            cols: width,
            data,
        }
    }

    /// A copy of rows `rows`, in the same storage.
    ///
    /// # Panics
    ///
    /// If `rows` is not within `0..self.rows()`.
    pub fn row_slice(&self, rows: Range<usize>) -> Matrix {
        check_range("row", &rows, self.rows);
        let elements = rows.start * self.cols..rows.end * self.cols;
        let data = match &self.data {
            MatrixData::F32(d) => MatrixData::F32(d[elements].to_vec()),
            MatrixData::Bf16(d) => MatrixData::Bf16(d[elements].to_vec()),
        };
        Matrix {
            rows: rows.len(),
            cols: self.cols,
            data,
        }
    }

    /// All elements as f32, row-major.
    pub fn to_f32(&self) -> Vec<f32> {
        match &self.data {
            MatrixData::F32(d) => d.clone(),
            MatrixData::Bf16(d) => d.to_f32_vec(),
        }
    }

    /// Writes the block `rows × cols` into `out` (row-major, `cols.len()` wide) as f32.
    fn block_into(&self, rows: Range<usize>, cols: Range<usize>, out: &mut [f32]) {
        let width = cols.len();
        assert_eq!(
            out.len(),
            rows.len() * width,
            "matrix: out has {} elements, expected [{}, {width}]",
            out.len(),
            rows.len()
        );
        match &self.data {
            MatrixData::F32(d) => {
                for (r, out_row) in rows.zip(out.chunks_exact_mut(width.max(1))) {
                    let start = r * self.cols + cols.start;
                    out_row.copy_from_slice(&d[start..start + width]);
                }
            }
            MatrixData::Bf16(d) => {
                let first = rows.start * self.cols + cols.start;
                let convert = ConvertBlock {
                    src: &d[first..],
                    src_stride: self.cols,
                    width,
                    out,
                };
                pulp::Arch::new().dispatch(convert);
            }
        }
    }
}

/// Converts rows of bf16 (`width` wide, `src_stride` apart, starting at `src[0]`) into the
/// rows of `out`.
///
/// half converts element by element; compiled for the CPU's widest vectors (pulp picks AVX2
/// on x86-64 where present, at run time) the loop vectorizes, which bf16 matmuls depend on:
/// without it the conversion takes longer than the arithmetic.
struct ConvertBlock<'a> {
    src: &'a [bf16],
    src_stride: usize,
    width: usize,
    out: &'a mut [f32],
}

impl pulp::WithSimd for ConvertBlock<'_> {
    type Output = ();

    // Inlined into pulp's per-CPU entry points, which is what compiles it for their features.
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        let out_rows = self.out.chunks_exact_mut(self.width.max(1));
        for (r, out_row) in out_rows.enumerate() {
            let start = r * self.src_stride;
            self.src[start..start + self.width].convert_to_f32_slice(out_row);
        }
    }
}

fn check_len(rows: usize, cols: usize, len: usize) {
    assert_eq!(
        len,
        rows * cols,
        "matrix: {len} elements cannot fill [{rows}, {cols}]"
    );
}

fn check_range(what: &str, range: &Range<usize>, limit: usize) {
    assert!(
        range.start <= range.end && range.end <= limit,
        "matrix: {what}s {range:?} are outside 0..{limit}"
    );
}

/// Columns `cols` of every row of a row-major matrix `width` wide.
fn columns_of<T: Copy>(data: &[T], width: usize, cols: &Range<usize>) -> Vec<T> {
    if width == 0 {
        return Vec::new();
    }
    data.chunks_exact(width)
        .flat_map(|row| row[cols.clone()].iter().copied())
        .collect()
}

/// `out[m, w.cols] = a[m, w.rows] · w`; `out` is overwritten, not accumulated into.
///
/// f32 weights go to `gemm` in one call. bf16 weights are read at 2 bytes each, once:
/// - for one row (`m = 1`, decode), each weight is converted in registers and fused into the
///   accumulation (a bf16 GEMV, streaming the weights in long sequential runs);
/// - for up to 64 rows (a decode batch) on CPUs with AVX2 and FMA, likewise, by register tiles
///   that use each converted weight once per row;
/// - otherwise one panel (at most 128 KiB as f32) at a time is converted into a reused
///   per-thread f32 scratch buffer and its product accumulated into the matching strip of `out`
///   by `gemm`, so the arithmetic runs on `gemm`'s kernels.
///
/// Uses [`crate::threads`] threads: through `gemm`, or for the fused paths, by splitting the
/// columns.
///
/// Cost model: 2 · m · rows · cols flops; bytes = a read and out written as f32 + the weights
/// at their storage size (bf16 halves the weight bytes streamed).
///
/// # Panics
///
/// If `a.len() != m * w.rows()` or `out.len() != m * w.cols()`.
pub fn matmul_w(a: &[f32], m: usize, w: &Matrix, out: &mut [f32]) -> Cost {
    let (k, n) = (w.rows, w.cols);
    assert_eq!(
        a.len(),
        m * k,
        "matmul_w: a has {} elements, expected [{m}, {k}]",
        a.len()
    );
    assert_eq!(
        out.len(),
        m * n,
        "matmul_w: out has {} elements, expected [{m}, {n}]",
        out.len()
    );
    match &w.data {
        MatrixData::F32(b) => gemm_strip(
            Strip {
                m,
                k,
                n,
                a,
                a_stride: k,
                b,
                b_stride: n,
                read_out: false,
            },
            out,
            n,
        ),
        MatrixData::Bf16(b) if m == 1 => gemv_bf16(a, b, n, out),
        MatrixData::Bf16(b) => match Simd::detect() {
            Some(simd) if m <= FUSED_MAX_ROWS => rows_bf16(simd, a, m, b, n, out),
            _ => matmul_bf16(a, m, w, out),
        },
    }
    Cost {
        flops: 2 * (m * k * n) as u64,
        bytes: f32_bytes(m * k + m * n) + w.bytes(),
    }
}

/// Rows of `w` a [`GemvBf16`] pass folds into `out` at once: each pass loads and stores `out`
/// once for this many weight rows. The pass is written out for exactly 4.
const GEMV_ROWS: usize = 4;

/// Widest column block of a [`GemvBf16`] pass, so that the block of `out` stays in L1 cache.
const GEMV_MAX_COLS: usize = 4096;

/// Most rows of `a` that take the fused bf16 kernel ([`Simd::rows`]) rather than panel
/// conversion and `gemm`. The fused kernel converts each weight once per 6 rows and writes no
/// f32 copy; `gemm` on converted panels wins once there are enough rows for its cache blocking
/// to matter. Measured on Zen 4 (1024 × 1024, 1024 × 3072 and 2816 × 1024): fused 2–3× faster
/// at m = 8, 1.3–2.2× at 16–48, 1.0–1.3× at 64, 7 % slower at 128 and 27–50 % at 512.
const FUSED_MAX_ROWS: usize = 64;

/// Output columns per thread are a multiple of this: one 64-byte cache line of `out`, so
/// threads never share a line.
const THREAD_COLS: usize = 16;

/// `out[n] = a[k] · w[k, n]` on bf16 weights, for decode's single row (`m = 1`), where a panel
/// conversion would write and re-read every weight as f32 for one use. Each weight is converted
/// in registers and fused into the accumulation instead, so the weights are read once, at 2
/// bytes each: by [`Simd::gemv`] where the CPU has AVX2 and FMA, else by the portable
/// [`GemvBf16`]. With several threads each takes a contiguous range of columns.
fn gemv_bf16(a: &[f32], w: &[bf16], n: usize, out: &mut [f32]) {
    let simd = Simd::detect();
    let run = |first_col: usize, out: &mut [f32]| match simd {
        Some(simd) => simd.gemv(a, w, n, first_col, out),
        None => gemv_portable(a, w, n, first_col, out),
    };
    let threads = threads();
    if threads == 1 {
        run(0, out);
        return;
    }
    let cols_per_thread = thread_cols(n, threads);
    out.par_chunks_mut(cols_per_thread)
        .enumerate()
        .for_each(|(i, out)| run(i * cols_per_thread, out));
}

/// Columns per thread when `n` are split over `threads`: whole cache lines of `out`, at least
/// one.
fn thread_cols(n: usize, threads: usize) -> usize {
    n.div_ceil(threads).next_multiple_of(THREAD_COLS).max(1)
}

/// [`GemvBf16`] on the CPU's widest vectors `pulp` knows.
fn gemv_portable(a: &[f32], w: &[bf16], n: usize, first_col: usize, out: &mut [f32]) {
    pulp::Arch::new().dispatch(GemvBf16 {
        a,
        w,
        n,
        first_col,
        out,
    });
}

/// `out[m, n] = a[m, k] · w[k, n]` on bf16 weights for a few rows (decode of a small batch),
/// by [`Simd::rows`]: each weight is read once and converted in registers. With several
/// threads each takes a contiguous range of columns of every row.
fn rows_bf16(simd: Simd, a: &[f32], m: usize, w: &[bf16], n: usize, out: &mut [f32]) {
    let threads = threads();
    if threads == 1 || n == 0 {
        let mut rows: Vec<&mut [f32]> = out.chunks_exact_mut(n.max(1)).collect();
        simd.rows(a, w, n, 0, &mut rows);
        return;
    }
    // Each thread gets the same column range of every row: split every row, then deal the
    // pieces out by range.
    let cols_per_thread = thread_cols(n, threads);
    let mut parts: Vec<Vec<&mut [f32]>> = Vec::new();
    for row in out.chunks_exact_mut(n).take(m) {
        for (j, piece) in row.chunks_mut(cols_per_thread).enumerate() {
            if parts.len() <= j {
                parts.push(Vec::with_capacity(m));
            }
            parts[j].push(piece);
        }
    }
    parts
        .par_iter_mut()
        .enumerate()
        .for_each(|(j, rows)| simd.rows(a, w, n, j * cols_per_thread, rows));
}

/// Columns `first_col .. first_col + out.len()` of `a[k] · w[k, n]` into `out`: the portable
/// body of [`gemv_bf16`], for CPUs [`Simd`] does not cover. Like [`ConvertBlock`], it is
/// compiled per CPU feature level so the loop vectorizes.
struct GemvBf16<'a> {
    a: &'a [f32],
    w: &'a [bf16],
    n: usize,
    first_col: usize,
    out: &'a mut [f32],
}

impl pulp::WithSimd for GemvBf16<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        for (i, out) in self.out.chunks_mut(GEMV_MAX_COLS).enumerate() {
            let c0 = self.first_col + i * GEMV_MAX_COLS;
            let width = out.len();
            let row = |r: usize| &self.w[r * self.n + c0..][..width];
            out.fill(0.0);
            let groups = self.a.chunks_exact(GEMV_ROWS);
            let tail_start = self.a.len() - groups.remainder().len();
            for (g, a) in groups.enumerate() {
                let r = g * GEMV_ROWS;
                let w = [row(r), row(r + 1), row(r + 2), row(r + 3)];
                let weights = w[0].iter().zip(w[1]).zip(w[2].iter().zip(w[3]));
                for (o, ((w0, w1), (w2, w3))) in out.iter_mut().zip(weights) {
                    let acc = a[0].mul_add(w0.to_f32(), *o);
                    let acc = a[1].mul_add(w1.to_f32(), acc);
                    let acc = a[2].mul_add(w2.to_f32(), acc);
                    *o = a[3].mul_add(w3.to_f32(), acc);
                }
            }
            for (&a, r) in self.a[tail_start..].iter().zip(tail_start..) {
                for (o, w) in out.iter_mut().zip(row(r)) {
                    *o = a.mul_add(w.to_f32(), *o);
                }
            }
        }
    }
}

thread_local! {
    /// The converted weight panel of [`matmul_bf16`], kept so that steady-state calls never
    /// allocate.
    static PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// The bf16 path of [`matmul_w`] for many rows (or any rows without [`Simd`]): column strips
/// outside, row panels inside, so each strip of `out` stays in cache while the panels of its
/// columns accumulate into it.
fn matmul_bf16(a: &[f32], m: usize, w: &Matrix, out: &mut [f32]) {
    let (k, n) = (w.rows, w.cols);
    if k == 0 || m == 0 {
        out.fill(0.0);
        return;
    }
    let panel_cols = n.min(PANEL_MAX_COLS);
    let panel_rows = (PANEL_ELEMENTS / panel_cols.max(1)).clamp(1, k);
    PANEL.with_borrow_mut(|panel| {
        panel.resize(panel_rows * panel_cols, 0.0);
        for c0 in (0..n).step_by(panel_cols.max(1)) {
            let cols = c0..(c0 + panel_cols).min(n);
            for r0 in (0..k).step_by(panel_rows) {
                let rows = r0..(r0 + panel_rows).min(k);
                let block = &mut panel[..rows.len() * cols.len()];
                w.block_into(rows.clone(), cols.clone(), block);
                let strip = Strip {
                    m,
                    k: rows.len(),
                    n: cols.len(),
                    a: &a[r0..],
                    a_stride: k,
                    b: block,
                    b_stride: cols.len(),
                    read_out: r0 > 0,
                };
                gemm_strip(strip, &mut out[c0..], n);
            }
        }
    });
}

/// One `gemm` call: `out[m, n] (+)= a[m, k] · b[k, n]` on row-major operands with row strides.
struct Strip<'a> {
    m: usize,
    k: usize,
    n: usize,
    /// Starts at the first element used; rows are `a_stride` apart.
    a: &'a [f32],
    a_stride: usize,
    /// Starts at the first element used; rows are `b_stride` apart.
    b: &'a [f32],
    b_stride: usize,
    /// Accumulate into `out` rather than overwrite it.
    read_out: bool,
}

/// Runs `s` on `out`, whose rows are `out_stride` apart (a strip of a wider matrix).
fn gemm_strip(s: Strip<'_>, out: &mut [f32], out_stride: usize) {
    if s.m == 0 || s.n == 0 {
        return;
    }
    // Bounds: the last element each operand's pointer reaches, checked so the unsafe call
    // below stays inside the slices.
    assert!(s.k == 0 || s.a.len() >= (s.m - 1) * s.a_stride + s.k);
    assert!(s.k == 0 || s.b.len() >= (s.k - 1) * s.b_stride + s.n);
    assert!(out.len() >= (s.m - 1) * out_stride + s.n);
    // SAFETY: the asserts above keep every element gemm touches (row i at i × stride, columns
    // below the width) inside its slice; `out` is a unique borrow, so it aliases neither input.
    // Slice lengths never exceed isize::MAX, so the strides fit isize. With read_out false gemm
    // ignores alpha and writes out = beta · a · b; with it true, out = alpha · out + beta · a · b.
    unsafe {
        gemm::gemm(
            s.m,
            s.n,
            s.k,
            out.as_mut_ptr(),
            1,
            out_stride as isize,
            s.read_out,
            s.a.as_ptr(),
            1,
            s.a_stride as isize,
            s.b.as_ptr(),
            1,
            s.b_stride as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            parallelism(),
        );
    }
}

/// Copies the rows of `tokens` from `table`, the slice of a `[vocab, hidden]` embedding table
/// that starts at vocabulary row `first_row`, into `out` (`[tokens.len(), table.cols()]`) as f32.
/// Tokens outside `first_row .. first_row + table.rows()` get zero rows: with vocabulary-parallel
/// embedding each tensor-parallel rank holds a slice of the vocabulary, and an all-reduce of the
/// partial rows assembles the full ones.
///
/// Cost model: 0 flops; bytes = token ids read (4 each) + one table row read at its storage
/// size per token found in the slice + every out row written as f32.
///
/// # Panics
///
/// If `out.len() != tokens.len() * table.cols()`.
pub fn embedding_w(table: &Matrix, first_row: usize, tokens: &[u32], out: &mut [f32]) -> Cost {
    let hidden = table.cols;
    assert_eq!(
        out.len(),
        tokens.len() * hidden,
        "embedding_w: out has {} elements, expected [{}, {hidden}]",
        out.len(),
        tokens.len()
    );
    let mut rows_read = 0usize;
    for (&token, out_row) in tokens.iter().zip(out.chunks_exact_mut(hidden.max(1))) {
        match (token as usize).checked_sub(first_row) {
            Some(r) if r < table.rows => {
                table.row_into(r, out_row);
                rows_read += 1;
            }
            _ => out_row.fill(0.0),
        }
    }
    let row_bytes = (hidden * table.storage().bytes_per_element()) as u64;
    Cost {
        flops: 0,
        bytes: tokens.len() as u64 * TOKEN_BYTES
            + rows_read as u64 * row_bytes
            + f32_bytes(tokens.len() * hidden),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::testutil::{assert_close, fresh_rng, matmul_f64, random_vec, to_f64};

    #[test]
    fn storage_names_round_trip_and_unknown_names_are_none() {
        for s in [Storage::F32, Storage::Bf16] {
            assert_eq!(Storage::parse(s.name()), Some(s));
        }
        assert_eq!(Storage::parse("fp16"), None);
        assert_eq!(Storage::F32.bytes_per_element(), 4);
        assert_eq!(Storage::Bf16.bytes_per_element(), 2);
    }

    #[test]
    fn storage_serializes_in_snake_case() {
        let json = serde_json::to_string(&[Storage::F32, Storage::Bf16]).unwrap();
        assert_eq!(json, r#"["f32","bf16"]"#);
        let back: Vec<Storage> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, [Storage::F32, Storage::Bf16]);
    }

    #[test]
    fn bf16_storage_rounds_to_nearest_and_halves_the_bytes() {
        // 1 + 2^-8 lies halfway between bf16 neighbours 1 and 1 + 2^-7: ties go to even (1).
        // 1 + 3 * 2^-9 is nearer 1 + 2^-7.
        let values = vec![1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-9), -2.5, 0.0];
        let w = Matrix::from_f32(2, 2, values.clone(), Storage::Bf16);
        assert_eq!(w.to_f32(), [1.0, 1.0 + 2f32.powi(-7), -2.5, 0.0]);
        assert_eq!(w.storage(), Storage::Bf16);
        assert_eq!(w.bytes(), 8);
        assert_eq!(Matrix::from_f32(2, 2, values, Storage::F32).bytes(), 16);
    }

    #[test]
    #[should_panic(expected = "5 elements cannot fill [2, 3]")]
    fn from_f32_rejects_a_length_mismatch() {
        Matrix::from_f32(2, 3, vec![0.0; 5], Storage::F32);
    }

    #[test]
    fn slices_and_rows_copy_the_right_elements_in_both_storages() {
        // Small integers are exact in bf16, so both storages must agree exactly.
        let values: Vec<f32> = (0..12).map(|i| i as f32).collect();
        for storage in [Storage::F32, Storage::Bf16] {
            let w = Matrix::from_f32(3, 4, values.clone(), storage);
            let cols = w.column_slice(1..3);
            assert_eq!((cols.rows(), cols.cols(), cols.storage()), (3, 2, storage));
            assert_eq!(cols.to_f32(), [1.0, 2.0, 5.0, 6.0, 9.0, 10.0]);
            let rows = w.row_slice(1..3);
            assert_eq!((rows.rows(), rows.cols(), rows.storage()), (2, 4, storage));
            assert_eq!(rows.to_f32(), values[4..12]);
            let mut row = [0.0; 4];
            w.row_into(2, &mut row);
            assert_eq!(row, [8.0, 9.0, 10.0, 11.0]);
        }
    }

    #[test]
    #[should_panic(expected = "columns 2..5 are outside 0..4")]
    fn column_slice_rejects_a_range_past_the_end() {
        Matrix::from_f32(1, 4, vec![0.0; 4], Storage::Bf16).column_slice(2..5);
    }

    pub(crate) fn check_matmul_w(m: usize, k: usize, n: usize, storage: Storage) {
        let cost = check_product(m, k, n, storage, "matmul_w", matmul_w);
        let weight_bytes = (k * n * storage.bytes_per_element()) as u64;
        let want_cost = Cost {
            flops: 2 * (m * k * n) as u64,
            bytes: f32_bytes(m * k + m * n) + weight_bytes,
        };
        assert_eq!(cost, want_cost, "matmul_w {m}x{k}x{n} {}", storage.name());
    }

    /// Checks `product(a, m, w, out)` against the f64 reference on random `[m, k] · [k, n]`
    /// operands with weights in `storage`; returns what it returned.
    fn check_product<T>(
        m: usize,
        k: usize,
        n: usize,
        storage: Storage,
        name: &str,
        product: impl Fn(&[f32], usize, &Matrix, &mut [f32]) -> T,
    ) -> T {
        let (mut rng, seed) = fresh_rng();
        let a = random_vec(&mut rng, m * k);
        let w = Matrix::from_f32(k, n, random_vec(&mut rng, k * n), storage);
        // NaN-filled output proves the product overwrites rather than accumulates.
        let mut out = vec![f32::NAN; m * n];
        let result = product(&a, m, &w, &mut out);
        // The reference uses the stored (possibly rounded) weights, so only f32 arithmetic
        // error remains: at most ~6e-8 per term for inputs in [-1, 1), adding up over k terms.
        let want = matmul_f64(&to_f64(&a), &to_f64(&w.to_f32()), m, k, n);
        let what = format!("{name} {m}x{k}x{n} {}", storage.name());
        assert_close(&out, &want, 1e-6 * k as f64, 1e-4, seed, &what);
        result
    }

    /// The bf16 weights of `w`, for calling the bf16 paths directly.
    fn bf16_of(w: &Matrix) -> &[bf16] {
        match &w.data {
            MatrixData::Bf16(d) => d,
            MatrixData::F32(_) => panic!("the test built f32 weights"),
        }
    }

    #[test]
    fn matmul_w_matches_the_reference_on_small_shapes() {
        for storage in [Storage::F32, Storage::Bf16] {
            check_matmul_w(1, 1, 1, storage);
            check_matmul_w(3, 7, 5, storage);
            check_matmul_w(17, 64, 33, storage);
        }
    }

    #[test]
    fn matmul_w_bf16_takes_the_fused_kernel_up_to_64_rows_and_panels_past_it() {
        // Fused: 2, 9 and 64 rows (whole and ragged register tiles).
        for m in [2, 9, FUSED_MAX_ROWS] {
            check_matmul_w(m, 300, 1100, Storage::Bf16);
        }
        // Panels: 1100 columns make five column strips (the last partial); with 256-column
        // panels 128 rows fit a panel, so 300 rows make three row panels (the last partial).
        check_matmul_w(FUSED_MAX_ROWS + 1, 300, 1100, Storage::Bf16);
        check_matmul_w(70, 300, 129, Storage::F32);
    }

    #[test]
    fn the_portable_bf16_paths_match_the_reference() {
        // What a CPU without AVX2 runs: the pulp GEMV over two column blocks (4096 + 4) with
        // 7 rows (a group of 4 and a tail of 3), and panel conversion for a few rows.
        check_product(
            1,
            7,
            4100,
            Storage::Bf16,
            "gemv_portable",
            |a, _, w, out| gemv_portable(a, bf16_of(w), w.cols(), 0, out),
        );
        for m in [2, 9] {
            check_product(m, 300, 1100, Storage::Bf16, "matmul_bf16", matmul_bf16);
        }
    }

    #[test]
    fn matmul_w_bf16_single_row_covers_blocks_bands_and_leftover_rows() {
        // m = 1 takes the banded GEMV: 8201 columns make two column blocks (8192 + 9); 300
        // rows are 8 bands of 37 and 4 rows left over; 3 rows are all left over.
        check_matmul_w(1, 300, 8201, Storage::Bf16);
        check_matmul_w(1, 300, 1100, Storage::Bf16);
        check_matmul_w(1, 3, 5, Storage::Bf16);
    }

    #[test]
    fn matmul_w_with_an_empty_inner_dimension_writes_zeros() {
        for (storage, m) in [Storage::F32, Storage::Bf16].into_iter().zip([1, 2]) {
            let mut out = vec![f32::NAN; 3 * m];
            matmul_w(&[], m, &Matrix::from_f32(0, 3, vec![], storage), &mut out);
            assert_eq!(out, vec![0.0; 3 * m], "{} with m = {m}", storage.name());
        }
    }

    #[test]
    #[should_panic(expected = "a has 7 elements, expected [2, 4]")]
    fn matmul_w_rejects_mismatched_shapes() {
        let w = Matrix::from_f32(4, 3, vec![0.0; 12], Storage::Bf16);
        matmul_w(&[0.0; 7], 2, &w, &mut [0.0; 6]);
    }

    #[test]
    fn embedding_w_copies_rows_in_the_slice_and_zeroes_the_rest() {
        let (mut rng, seed) = fresh_rng();
        let (rows, hidden, first_row) = (5, 6, 10);
        let values = random_vec(&mut rng, rows * hidden);
        for storage in [Storage::F32, Storage::Bf16] {
            let table = Matrix::from_f32(rows, hidden, values.clone(), storage);
            let stored = table.to_f32();
            let tokens = [12u32, 3, 14, 10, 15];
            let mut out = vec![f32::NAN; tokens.len() * hidden];
            let cost = embedding_w(&table, first_row, &tokens, &mut out);
            for (t, &id) in tokens.iter().enumerate() {
                let got = &out[t * hidden..][..hidden];
                let want = match (id as usize).checked_sub(first_row) {
                    Some(r) if r < rows => stored[r * hidden..][..hidden].to_vec(),
                    _ => vec![0.0; hidden],
                };
                assert_eq!(got, want, "token {id} (seed {seed})");
            }
            // 3 of the 5 tokens are in rows 10..15: 5 ids + 3 rows read + 5 rows written.
            let row_bytes = (hidden * storage.bytes_per_element()) as u64;
            let want_bytes = 5 * 4 + 3 * row_bytes + f32_bytes(5 * hidden);
            assert_eq!(
                cost,
                Cost {
                    flops: 0,
                    bytes: want_bytes
                }
            );
        }
    }
}
