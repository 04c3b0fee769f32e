//! CPU compute kernels of a Llama-style decoder, each reporting what it cost.
//!
//! pinch profiles distributed LLM inference; the workloads it runs are built from these ops
//! (embedding, RMS norm, RoPE, matmul, grouped-query attention over a contiguous or a paged KV
//! cache, the SiLU-gated MLP, mixture-of-experts gating, softmax, greedy sampling). Every op
//! returns a [`Cost`], flops and bytes from its documented cost model, so a measured time can be
//! turned into achieved FLOP/s and bandwidth, and [`stream_triad`] measures the bandwidth the
//! machine offers to compare against. Activations are row-major `f32` slices; weights are a
//! [`Matrix`] stored as f32 or bf16 and always computed on in f32. Shape mismatches are
//! programming errors and panic.
//!
//! # Why `gemm`
//!
//! Matmuls dominate the decoder, so they go through the `gemm` crate: pure Rust and well kept
//! (by faer's author; early faer was built on it), with BLAS-class single-thread speed from kernels that pick the
//! CPU's best SIMD (AVX/AVX2/FMA on x86-64, NEON on aarch64) at run time. The alternatives cost
//! more: a system BLAS (OpenBLAS, MKL through `blas-src`) must be installed or built from C on
//! every machine the agent runs on; faer brings the same kernels with a whole linear-algebra
//! library on top, a much heavier build for the one routine we need; `matrixmultiply` is light
//! but slower on large shapes. Each rank is a single-threaded process by default, so `gemm` runs
//! with `Parallelism::None` unless [`set_threads`] gives the process more threads (then rayon).
//!
//! # CUDA
//!
//! The `cuda` feature adds [`cuda`]: the GPU's ceilings (device-to-device copy bandwidth, cuBLAS
//! GEMM FLOP/s per dtype) through cudarc, which loads libcuda and libcublas at run time, so a
//! build with the feature still runs on machines without CUDA. What it reports ([`GpuDevice`],
//! [`CopyRate`], [`GemmRate`]) is plain data compiled either way. CUDA versions of the ops will
//! come behind the same feature; the CPU ops and their cost models here are their reference.

mod attention;
mod bf16_simd;
mod cost;
#[cfg(feature = "cuda")]
pub mod cuda;
mod elementwise;
mod embedding;
mod error;
mod gpu;
mod kv_cache;
mod matmul;
mod matrix;
mod membw;
mod mlp;
mod moe;
mod norm;
mod paged;
mod rope;
mod sample;
#[cfg(test)]
mod testutil;
mod threads;

pub use attention::{attention, attention_with_scratch};
pub use cost::Cost;
pub use elementwise::{add_in_place, silu_mul, softmax};
pub use embedding::embedding;
pub use error::KernelError;
pub use gpu::{ComputeCapability, CopyRate, GemmRate, GpuDevice, GpuDtype};
pub use kv_cache::KvCache;
pub use matmul::matmul;
pub use matrix::{Matrix, MatrixData, Storage, embedding_w, matmul_w};
pub use membw::{StreamKernel, StreamResult, TriadResult, stream, stream_triad, triad};
pub use mlp::{MlpScratch, mlp};
pub use moe::{scale_add, top_k_gating};
pub use norm::rms_norm;
pub use paged::{KvPool, paged_attention};
pub use rope::rope;
pub use sample::greedy_sample;
pub use threads::{set_threads, threads};
