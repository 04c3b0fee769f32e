//! On a machine with a GPU: every GPU's copy bandwidth and cuBLAS GEMM rate, at the quick
//! sizes, come out positive and within what real GPUs do. Elsewhere it prints why it skipped.
//!
//! Built only with the `cuda` feature. On a GPU machine without cargo, `scripts/gpu-check`
//! runs the prebuilt binary of this test.

use pinch_kernels::GpuDtype;
use pinch_kernels::cuda::{CudaError, copy_bandwidth, gemm_peak, probe};

/// The quick plan's sizes (as `pinch calibrate --quick` uses them).
const COPY_BYTES: usize = 64 << 20;
const COPY_REPEATS: usize = 5;
const GEMM_SIZE: usize = 1024;
const GEMM_REPEATS: usize = 10;

/// Any GPU since Kepler copies faster than the lower bound; none (yet) reaches the upper one,
/// so a rate above it means the timing is wrong.
const COPY_GBPS: std::ops::Range<f64> = 10.0..100_000.0;
const GEMM_TFLOPS: std::ops::Range<f64> = 1.0..100_000.0;

#[test]
fn every_gpu_copies_and_multiplies_at_plausible_rates() {
    let devices = match probe() {
        Ok(devices) if devices.is_empty() => return println!("skipped: no CUDA device"),
        Ok(devices) => devices,
        Err(CudaError::NoDriver) => return println!("skipped: {}", CudaError::NoDriver),
        Err(e) => panic!("the driver loads but the devices cannot be listed: {e}"),
    };
    for device in devices {
        println!("{device:?}");
        let copy = copy_bandwidth(device.ordinal, COPY_BYTES, COPY_REPEATS).unwrap();
        println!("  d2d copy: {copy:?}");
        assert!(COPY_GBPS.contains(&copy.best_gbps), "{copy:?}");
        assert!(copy.median_gbps <= copy.best_gbps, "{copy:?}");
        for dtype in GpuDtype::ALL {
            let (m, n, k) = (GEMM_SIZE, GEMM_SIZE, GEMM_SIZE);
            match gemm_peak(device.ordinal, dtype, m, n, k, GEMM_REPEATS) {
                Ok(gemm) => {
                    println!("  gemm: {gemm:?}");
                    assert!(GEMM_TFLOPS.contains(&gemm.tflops), "{gemm:?}");
                }
                Err(e @ (CudaError::NoCublas | CudaError::Unsupported { .. })) => {
                    println!("  skipped {dtype} gemm: {e}");
                }
                Err(e) => panic!("{e}"),
            }
        }
    }
}
