//! What the CUDA backend reports: a GPU's description and its measured copy and GEMM rates.
//!
//! Plain data, compiled with or without the `cuda` feature, so a calibration that carries GPU
//! ceilings reads back (and renders) on any build; only measuring them needs the feature
//! (`crate::cuda`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// A CUDA compute capability, `major.minor`; ordered the way NVIDIA's are (9.0 > 8.9 > 8.0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ComputeCapability {
    pub major: u32,
    pub minor: u32,
}

impl fmt::Display for ComputeCapability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// One GPU as the driver lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuDevice {
    /// The CUDA device ordinal (as `CUDA_VISIBLE_DEVICES` leaves them).
    pub ordinal: usize,
    pub name: String,
    pub compute_capability: ComputeCapability,
    pub memory_bytes: u64,
    /// Streaming multiprocessors; `None` when the driver did not say.
    pub sm_count: Option<u32>,
    /// The peak SM clock the driver reports; `None` when it did not say.
    pub max_clock_mhz: Option<u32>,
}

/// The element types a GEMM ceiling is measured for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpuDtype {
    /// f32 in, f32 out, f32 arithmetic (`cublasSgemm`'s contract).
    F32,
    /// f32 in and out, multiplied on tensor cores in TF32 (compute type `32F_FAST_TF32`).
    Tf32,
    /// bf16 in and out, accumulated in f32.
    Bf16,
    /// f16 in and out, accumulated in f32.
    F16,
}

impl GpuDtype {
    /// Every dtype, in the order they are measured and shown.
    pub const ALL: [GpuDtype; 4] = [GpuDtype::F32, GpuDtype::Tf32, GpuDtype::Bf16, GpuDtype::F16];

    pub fn name(self) -> &'static str {
        match self {
            GpuDtype::F32 => "f32",
            GpuDtype::Tf32 => "tf32",
            GpuDtype::Bf16 => "bf16",
            GpuDtype::F16 => "f16",
        }
    }

    /// Bytes of one input element as stored on the device (TF32 is stored as f32).
    pub fn element_bytes(self) -> usize {
        match self {
            GpuDtype::F32 | GpuDtype::Tf32 => 4,
            GpuDtype::Bf16 | GpuDtype::F16 => 2,
        }
    }

    /// The oldest compute capability cuBLAS runs this dtype's GEMM on: TF32 and bf16 came
    /// with Ampere (8.0), f16 arithmetic with 5.3.
    pub fn min_compute_capability(self) -> ComputeCapability {
        let (major, minor) = match self {
            GpuDtype::F32 => (3, 0),
            GpuDtype::F16 => (5, 3),
            GpuDtype::Tf32 | GpuDtype::Bf16 => (8, 0),
        };
        ComputeCapability { major, minor }
    }
}

impl fmt::Display for GpuDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Device-to-device copy bandwidth of one GPU.
///
/// Rates count every byte read and every byte written, `2 × bytes` per copy, the way NVIDIA's
/// `bandwidthTest` and `nvbandwidth` count a device-to-device copy, so they compare directly
/// with the memory bandwidth on the GPU's data sheet.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CopyRate {
    /// Size of the copied buffer.
    pub bytes: u64,
    /// Timed copies (after one warm-up copy).
    pub repeats: usize,
    /// GB/s (10⁹ bytes per second) of the fastest copy.
    pub best_gbps: f64,
    /// GB/s of the median copy.
    pub median_gbps: f64,
}

/// The GEMM rate of one dtype on one GPU through cuBLAS.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct GemmRate {
    pub dtype: GpuDtype,
    /// `C[m, n] = A[m, k] · B[k, n]`.
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// GEMM calls in the timed batch (after one warm-up call).
    pub calls: usize,
    /// TFLOP/s (10¹² flops per second, `2·m·n·k` per call) over the whole batch.
    pub tflops: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_capabilities_order_by_major_then_minor_and_print_dotted() {
        let cc = |major, minor| ComputeCapability { major, minor };
        assert!(cc(9, 0) > cc(8, 9) && cc(8, 9) > cc(8, 0) && cc(8, 0) > cc(7, 5));
        assert_eq!(cc(8, 6).to_string(), "8.6");
        assert!(cc(7, 5) < GpuDtype::Bf16.min_compute_capability());
        assert!(cc(7, 5) >= GpuDtype::F16.min_compute_capability());
    }

    #[test]
    fn gpu_types_round_trip_through_json() {
        let device = GpuDevice {
            ordinal: 1,
            name: "NVIDIA H100 80GB HBM3".into(),
            compute_capability: ComputeCapability { major: 9, minor: 0 },
            memory_bytes: 85_520_809_984,
            sm_count: Some(132),
            max_clock_mhz: None,
        };
        let text = serde_json::to_string(&device).unwrap();
        assert_eq!(serde_json::from_str::<GpuDevice>(&text).unwrap(), device);
        let gemm = GemmRate {
            dtype: GpuDtype::Tf32,
            m: 8192,
            n: 8192,
            k: 8192,
            calls: 20,
            tflops: 412.5,
        };
        let text = serde_json::to_string(&gemm).unwrap();
        assert!(text.contains(r#""dtype":"tf32""#), "{text}");
        assert_eq!(serde_json::from_str::<GemmRate>(&text).unwrap(), gemm);
        let copy = CopyRate {
            bytes: 1 << 30,
            repeats: 10,
            best_gbps: 2950.0,
            median_gbps: 2901.0,
        };
        let text = serde_json::to_string(&copy).unwrap();
        assert_eq!(serde_json::from_str::<CopyRate>(&text).unwrap(), copy);
    }

    #[test]
    fn every_dtype_has_a_distinct_name_and_a_size() {
        let names: Vec<&str> = GpuDtype::ALL.iter().map(|d| d.name()).collect();
        assert_eq!(names, ["f32", "tf32", "bf16", "f16"]);
        let bytes: Vec<usize> = GpuDtype::ALL.iter().map(|d| d.element_bytes()).collect();
        assert_eq!(bytes, [4, 4, 2, 2]);
    }
}
