//! The CUDA backend's ceilings: lists the GPUs and measures, per GPU, device-to-device copy
//! bandwidth and cuBLAS GEMM FLOP/s, the two roofs of a GPU roofline.
//!
//! cudarc loads libcuda and libcublas at run time (its `dynamic-loading` feature), so a binary
//! built with this module starts on machines without CUDA. cudarc panics when a library or one
//! of its symbols is missing, so every entry point first checks that the library loads, and runs
//! its CUDA calls under `catch_unwind`: a driver older than the API cudarc was built against
//! comes back as [`CudaError::Panicked`] naming the symbol, not as the end of the process.
//!
//! Times come from CUDA events recorded on the stream around the GPU's work (events created
//! with timing; cudarc's default events cannot time), so host-side launch costs are left out.

use std::any::Any;
use std::ffi::{c_int, c_void};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use cudarc::cublas::{CudaBlas, result as blas_result, sys as blas_sys};
use cudarc::driver::{
    CudaContext, CudaSlice, CudaStream, DevicePtr, DevicePtrMut, DriverError, result, sys,
};

use crate::gpu::{ComputeCapability, CopyRate, GemmRate, GpuDevice, GpuDtype};

/// A GPU could not be listed or measured.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CudaError {
    /// libcuda (the driver's library) is not on the loader's path.
    #[error("no CUDA driver: libcuda could not be loaded")]
    NoDriver,
    /// libcublas (or the libcublasLt it needs) is not on the loader's path.
    #[error("no cuBLAS: libcublas could not be loaded")]
    NoCublas,
    /// Initializing the driver or counting the devices failed.
    #[error("cannot list CUDA devices: {call} failed: {detail}")]
    Probe { call: &'static str, detail: String },
    /// The ordinal is past the devices the driver lists.
    #[error("CUDA device {device} does not exist: the driver lists {count}")]
    NoSuchDevice { device: usize, count: usize },
    /// A driver call failed on a device.
    #[error("{call} failed on CUDA device {device}: {detail}")]
    Driver {
        device: usize,
        call: &'static str,
        detail: String,
    },
    /// A cuBLAS call failed on a device.
    #[error("cuBLAS {dtype} gemm failed on CUDA device {device}: {detail}")]
    Cublas {
        device: usize,
        dtype: GpuDtype,
        detail: String,
    },
    /// The device is too old for the dtype.
    #[error(
        "{dtype} gemm needs compute capability {needs} or newer; CUDA device {device} has {has}"
    )]
    Unsupported {
        device: usize,
        dtype: GpuDtype,
        needs: ComputeCapability,
        has: ComputeCapability,
    },
    /// A size or count of 0.
    #[error("{what} must be at least 1, not 0")]
    Zero { what: &'static str },
    /// A GEMM dimension or buffer beyond what cuBLAS's 32-bit dimensions or memory can hold.
    #[error("{what} {value} is too large for cuBLAS")]
    TooLarge { what: &'static str, value: usize },
    /// The work finished within the event timer's resolution, so no rate can be given.
    #[error("{what} on CUDA device {device} took no measurable time; use a larger size")]
    TooFast { what: &'static str, device: usize },
    /// cudarc panicked (a missing symbol in an older driver or cuBLAS, most likely).
    #[error("{what} panicked in cudarc: {message}")]
    Panicked { what: String, message: String },
}

/// Lists the GPUs the driver sees, in ordinal order; an empty list when the driver is there
/// but no device is. Creates no context.
pub fn probe() -> Result<Vec<GpuDevice>, CudaError> {
    // SAFETY: only tries to open the library (dlopen) and closes it again.
    if !unsafe { sys::is_culib_present() } {
        return Err(CudaError::NoDriver);
    }
    guarded("listing CUDA devices".into(), || {
        match result::init() {
            Err(DriverError(sys::CUresult::CUDA_ERROR_NO_DEVICE)) => return Ok(Vec::new()),
            other => other.map_err(probe_error("cuInit"))?,
        }
        let count = result::device::get_count().map_err(probe_error("cuDeviceGetCount"))?;
        (0..usize::try_from(count).unwrap_or(0))
            .map(describe)
            .collect()
    })
}

/// Device-to-device copy bandwidth of GPU `device`: copies a buffer of `bytes` within the
/// device `repeats` times after as many untimed copies (clocks ramp up), each timed alone.
/// Rates count `2 × bytes` per copy (read and write), as `bandwidthTest` and `nvbandwidth` do.
pub fn copy_bandwidth(device: usize, bytes: usize, repeats: usize) -> Result<CopyRate, CudaError> {
    at_least_one("copy bytes", bytes)?;
    at_least_one("copy repeats", repeats)?;
    device_info(device)?;
    guarded(format!("the copy on CUDA device {device}"), || {
        let stream = context(device)?.default_stream();
        let alloc = driver_error(device, "cuMemAlloc");
        let src = stream.alloc_zeros::<u8>(bytes).map_err(alloc)?;
        let mut dst = stream.alloc_zeros::<u8>(bytes).map_err(alloc)?;
        let copy = |dst: &mut CudaSlice<u8>| {
            stream
                .memcpy_dtod(&src, dst)
                .map_err(driver_error(device, "cuMemcpyDtoDAsync"))
        };
        for _ in 0..repeats {
            copy(&mut dst)?;
        }
        let mut seconds = Vec::with_capacity(repeats);
        for _ in 0..repeats {
            seconds.push(timed(&stream, device, || copy(&mut dst))?);
        }
        seconds.sort_by(f64::total_cmp);
        let gbps = |s: f64| rate(2.0 * bytes as f64, s, device, "the copy").map(|r| r / 1e9);
        Ok(CopyRate {
            bytes: bytes as u64,
            repeats,
            best_gbps: gbps(seconds[0])?,
            median_gbps: gbps(seconds[repeats / 2])?,
        })
    })
}

/// GEMM FLOP/s of `dtype` on GPU `device` through cuBLAS: `C[m, n] = A[m, k] · B[k, n]`
/// (column-major, no transposes), one untimed batch of `repeats` calls (cuBLAS picks and loads
/// its kernel on the first call; clocks ramp up), then a batch of `repeats` calls timed between
/// two events. Inputs hold small varied values: zeros would draw less power and flatter the
/// clocks. `2·m·n·k` flops per call.
pub fn gemm_peak(
    device: usize,
    dtype: GpuDtype,
    m: usize,
    n: usize,
    k: usize,
    repeats: usize,
) -> Result<GemmRate, CudaError> {
    let dims = [dimension(m)?, dimension(n)?, dimension(k)?];
    at_least_one("gemm repeats", repeats)?;
    let has = device_info(device)?.compute_capability;
    let needs = dtype.min_compute_capability();
    if has < needs {
        return Err(CudaError::Unsupported {
            device,
            dtype,
            needs,
            has,
        });
    }
    // SAFETY: only tries to open the library (dlopen) and closes it again.
    if !unsafe { blas_sys::is_culib_present() } {
        return Err(CudaError::NoCublas);
    }
    guarded(format!("the {dtype} gemm on CUDA device {device}"), || {
        run_gemm(device, dtype, dims, repeats)
    })
}

/// The description of device `ordinal` (the driver is initialized).
fn describe(ordinal: usize) -> Result<GpuDevice, CudaError> {
    use sys::CUdevice_attribute as A;
    let call = |name| driver_error(ordinal, name);
    let dev = result::device::get(ordinal as c_int).map_err(call("cuDeviceGet"))?;
    let name = result::device::get_name(dev).map_err(call("cuDeviceGetName"))?;
    // SAFETY: `dev` came from cuDeviceGet.
    let memory_bytes =
        unsafe { result::device::total_mem(dev) }.map_err(call("cuDeviceTotalMem"))?;
    // SAFETY: `dev` came from cuDeviceGet.
    let attribute = |a| unsafe { result::device::get_attribute(dev, a) };
    let count = |a| attribute(a).ok().and_then(|v| u32::try_from(v).ok());
    let get_cc = call("cuDeviceGetAttribute");
    let major = attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR).map_err(get_cc)?;
    let minor = attribute(A::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR).map_err(get_cc)?;
    Ok(GpuDevice {
        ordinal,
        name,
        compute_capability: ComputeCapability {
            major: major.max(0) as u32,
            minor: minor.max(0) as u32,
        },
        memory_bytes: memory_bytes as u64,
        sm_count: count(A::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT),
        // The driver reports kHz.
        max_clock_mhz: count(A::CU_DEVICE_ATTRIBUTE_CLOCK_RATE).map(|khz| khz / 1000),
    })
}

/// Device `device`'s description, or why it cannot be used.
fn device_info(device: usize) -> Result<GpuDevice, CudaError> {
    let mut devices = probe()?;
    let count = devices.len();
    if device >= count {
        return Err(CudaError::NoSuchDevice { device, count });
    }
    Ok(devices.swap_remove(device))
}

fn context(device: usize) -> Result<Arc<CudaContext>, CudaError> {
    CudaContext::new(device).map_err(driver_error(device, "creating the primary context"))
}

/// The timed part of [`gemm_peak`], once the arguments and the libraries are known good.
fn run_gemm(
    device: usize,
    dtype: GpuDtype,
    [m, n, k]: [c_int; 3],
    repeats: usize,
) -> Result<GemmRate, CudaError> {
    let (mu, nu, ku) = (m as usize, n as usize, k as usize);
    let stream = context(device)?.default_stream();
    let blas = CudaBlas::new(stream.clone()).map_err(cublas_error(device, dtype))?;
    let a = upload(&stream, device, &filler(dtype, elements(mu, ku)?))?;
    let b = upload(&stream, device, &filler(dtype, elements(ku, nu)?))?;
    let c_bytes = elements(mu, nu)?.saturating_mul(dtype.element_bytes());
    let mut c = stream
        .alloc_zeros::<u8>(c_bytes)
        .map_err(driver_error(device, "cuMemAlloc"))?;
    let (a_ptr, _a_sync) = a.device_ptr(&stream);
    let (b_ptr, _b_sync) = b.device_ptr(&stream);
    let (c_ptr, _c_sync) = c.device_ptr_mut(&stream);
    let call = || {
        // SAFETY: a, b and c hold m·k, k·n and m·n elements of dtype on this handle's
        // context, and live (with their sync guards) until after the last call.
        unsafe { gemm_ex(*blas.handle(), dtype, [m, n, k], [a_ptr, b_ptr, c_ptr]) }
            .map_err(cublas_error(device, dtype))
    };
    let batch = || (0..repeats).try_for_each(|_| call());
    batch()?;
    let seconds = timed(&stream, device, batch)?;
    let flops = 2.0 * mu as f64 * nu as f64 * ku as f64 * repeats as f64;
    Ok(GemmRate {
        dtype,
        m: mu,
        n: nu,
        k: ku,
        calls: repeats,
        tflops: rate(flops, seconds, device, "the gemm")? / 1e12,
    })
}

/// One `cublasGemmEx` call with f32 scalars, `C = A · B`, in the types of `dtype`.
///
/// # Safety
/// `ptrs` are device buffers of `m·k`, `k·n` and `m·n` elements of `dtype` on `handle`'s context.
unsafe fn gemm_ex(
    handle: blas_sys::cublasHandle_t,
    dtype: GpuDtype,
    [m, n, k]: [c_int; 3],
    [a, b, c]: [sys::CUdeviceptr; 3],
) -> Result<(), blas_result::CublasError> {
    use blas_sys::cublasComputeType_t as Compute;
    use blas_sys::cudaDataType as Data;
    let (data, compute) = match dtype {
        GpuDtype::F32 => (Data::CUDA_R_32F, Compute::CUBLAS_COMPUTE_32F),
        GpuDtype::Tf32 => (Data::CUDA_R_32F, Compute::CUBLAS_COMPUTE_32F_FAST_TF32),
        GpuDtype::Bf16 => (Data::CUDA_R_16BF, Compute::CUBLAS_COMPUTE_32F),
        GpuDtype::F16 => (Data::CUDA_R_16F, Compute::CUBLAS_COMPUTE_32F),
    };
    // Compute type 32F (plain or TF32) takes f32 alpha and beta.
    let (alpha, beta) = (1.0f32, 0.0f32);
    let no_transpose = blas_sys::cublasOperation_t::CUBLAS_OP_N;
    // SAFETY: the caller vouches for the buffers; the scalars outlive the call.
    unsafe {
        blas_result::gemm_ex(
            handle,
            no_transpose,
            no_transpose,
            m,
            n,
            k,
            (&raw const alpha).cast(),
            a as *const c_void,
            data,
            m,
            b as *const c_void,
            data,
            k,
            (&raw const beta).cast(),
            c as *mut c_void,
            data,
            m,
            compute,
            blas_sys::cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
        )
    }
}

/// `elements` little-endian values of `dtype`, small and varied: no denormals, nothing a
/// kernel could shortcut.
fn filler(dtype: GpuDtype, elements: usize) -> Vec<u8> {
    let value = |i: usize| (i % 17) as f32 * 0.01 - 0.08;
    let values = 0..elements;
    match dtype {
        GpuDtype::F32 | GpuDtype::Tf32 => values.flat_map(|i| value(i).to_le_bytes()).collect(),
        GpuDtype::Bf16 => values
            .flat_map(|i| half::bf16::from_f32(value(i)).to_le_bytes())
            .collect(),
        GpuDtype::F16 => values
            .flat_map(|i| half::f16::from_f32(value(i)).to_le_bytes())
            .collect(),
    }
}

fn upload(
    stream: &Arc<CudaStream>,
    device: usize,
    host: &[u8],
) -> Result<CudaSlice<u8>, CudaError> {
    stream
        .clone_htod(host)
        .map_err(driver_error(device, "uploading a gemm input"))
}

/// Seconds the GPU spent on `work`, between two timing events recorded on `stream`.
fn timed(
    stream: &CudaStream,
    device: usize,
    work: impl FnOnce() -> Result<(), CudaError>,
) -> Result<f64, CudaError> {
    let record = || {
        stream
            .record_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(driver_error(device, "cuEventRecord"))
    };
    let start = record()?;
    work()?;
    let end = record()?;
    let ms = start
        .elapsed_ms(&end)
        .map_err(driver_error(device, "cuEventElapsedTime"))?;
    Ok(f64::from(ms) / 1e3)
}

/// `amount` per second, unless the timer saw no time at all.
fn rate(amount: f64, seconds: f64, device: usize, what: &'static str) -> Result<f64, CudaError> {
    if seconds > 0.0 {
        Ok(amount / seconds)
    } else {
        Err(CudaError::TooFast { what, device })
    }
}

/// Runs `work`, turning a panic inside cudarc into [`CudaError::Panicked`].
fn guarded<T>(what: String, work: impl FnOnce() -> Result<T, CudaError>) -> Result<T, CudaError> {
    catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|payload| {
        Err(CudaError::Panicked {
            what,
            message: panic_message(payload.as_ref()),
        })
    })
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

fn at_least_one(what: &'static str, value: usize) -> Result<(), CudaError> {
    if value == 0 {
        return Err(CudaError::Zero { what });
    }
    Ok(())
}

/// A GEMM dimension as cuBLAS takes it (a positive `int`).
fn dimension(value: usize) -> Result<c_int, CudaError> {
    at_least_one("a gemm dimension", value)?;
    c_int::try_from(value).map_err(|_| CudaError::TooLarge {
        what: "gemm dimension",
        value,
    })
}

/// Elements of a `rows × cols` matrix, when a device buffer of them can exist at all.
fn elements(rows: usize, cols: usize) -> Result<usize, CudaError> {
    rows.checked_mul(cols)
        .filter(|e| e.checked_mul(4).is_some())
        .ok_or(CudaError::TooLarge {
            what: "gemm matrix of elements",
            value: rows.saturating_mul(cols),
        })
}

/// A driver error as text: the error's name and the driver's sentence for it.
fn describe_driver_error(e: DriverError) -> String {
    match e.error_string() {
        Ok(text) => format!("{:?} ({})", e.0, text.to_string_lossy()),
        Err(_) => format!("{:?}", e.0),
    }
}

fn probe_error(call: &'static str) -> impl Fn(DriverError) -> CudaError + Copy {
    move |e| CudaError::Probe {
        call,
        detail: describe_driver_error(e),
    }
}

fn driver_error(device: usize, call: &'static str) -> impl Fn(DriverError) -> CudaError + Copy {
    move |e| CudaError::Driver {
        device,
        call,
        detail: describe_driver_error(e),
    }
}

fn cublas_error(
    device: usize,
    dtype: GpuDtype,
) -> impl Fn(blas_result::CublasError) -> CudaError + Copy {
    move |e| CudaError::Cublas {
        device,
        dtype,
        detail: format!("{:?}", e.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether this machine has a loadable libcuda (CI machines and laptops usually do not).
    fn driver_present() -> bool {
        unsafe { sys::is_culib_present() }
    }

    #[test]
    fn without_a_driver_every_entry_point_says_so_instead_of_panicking() {
        if driver_present() {
            assert_ne!(probe().err(), Some(CudaError::NoDriver));
            return;
        }
        assert_eq!(probe(), Err(CudaError::NoDriver));
        assert_eq!(copy_bandwidth(0, 1 << 20, 2), Err(CudaError::NoDriver));
        let gemm = gemm_peak(0, GpuDtype::Bf16, 64, 64, 64, 2);
        assert_eq!(gemm, Err(CudaError::NoDriver));
        assert_eq!(
            CudaError::NoDriver.to_string(),
            "no CUDA driver: libcuda could not be loaded"
        );
    }

    #[test]
    fn bad_sizes_are_refused_before_any_cuda_call() {
        assert_eq!(
            copy_bandwidth(0, 0, 3),
            Err(CudaError::Zero { what: "copy bytes" })
        );
        let err = gemm_peak(0, GpuDtype::F32, 64, 1 << 31, 64, 1).unwrap_err();
        assert_eq!(
            err.to_string(),
            "gemm dimension 2147483648 is too large for cuBLAS"
        );
        let err = gemm_peak(0, GpuDtype::F32, 64, 64, 64, 0).unwrap_err();
        assert_eq!(err.to_string(), "gemm repeats must be at least 1, not 0");
        assert!(elements(1 << 62, 4).is_err() && elements(1 << 20, 1 << 20).is_ok());
    }

    #[test]
    fn a_panic_inside_becomes_an_error_naming_the_work() {
        let err = guarded::<()>("the f16 gemm on CUDA device 0".into(), || {
            panic!("Missing symbol cublasGemmEx")
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "the f16 gemm on CUDA device 0 panicked in cudarc: Missing symbol cublasGemmEx"
        );
    }

    #[test]
    fn fillers_hold_each_dtype_s_bytes_and_nonzero_values() {
        for dtype in GpuDtype::ALL {
            let bytes = filler(dtype, 34);
            assert_eq!(bytes.len(), 34 * dtype.element_bytes(), "{dtype}");
            assert!(bytes.iter().any(|&b| b != 0), "{dtype}");
        }
        let f32s = filler(GpuDtype::F32, 2);
        assert_eq!(f32s[..4], (-0.08f32).to_le_bytes());
        let bf16s = filler(GpuDtype::Bf16, 2);
        assert_eq!(bf16s[2..], half::bf16::from_f32(-0.07).to_le_bytes());
    }
}
