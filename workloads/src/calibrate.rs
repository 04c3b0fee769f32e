//! `pinch calibrate`'s measurements: the ceilings of this machine that the analyzer's roofline
//! compares achieved rates against, and the per-host cache that keeps them between runs.
//!
//! Three kinds of CPU ceiling, each on one thread and on all the threads the process may use:
//! - memory bandwidth: STREAM's copy, scale, add and triad over arrays far beyond the caches,
//!   best of several passes ([`pinch_kernels::stream`]);
//! - compute: GEMM FLOP/s of [`pinch_kernels::matmul_w`] per weight storage (f32, bf16), best of
//!   several calls on a large square-ish shape;
//! - links: a ping-pong between two ranks (as threads, over [`Mesh::loopback`]) across a sweep
//!   of message sizes, once with both on one node (shared memory) and once on two (TCP).
//!
//! Then, per GPU, the two roofs of a GPU roofline: device-to-device copy bandwidth and cuBLAS
//! GEMM FLOP/s per dtype ([`pinch_kernels::cuda`], with the `cuda` feature). When they cannot be
//! measured (no feature, no driver, no device, a failing call) the calibration says why and
//! keeps the CPU ceilings.
//!
//! A result is stored as JSON under `<cache>/calibration/<host_key>.json`, where the host key
//! hashes what makes the numbers this machine's (CPU model, cores, memory, kernel release, and
//! the GPUs when there are any), so a cache shared between machines (a home directory on NFS)
//! never hands one machine's ceilings to another.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pinch_kernels::{
    CopyRate, GemmRate, GpuDevice, Matrix, Storage, StreamKernel, matmul_w, set_threads, stream,
    threads,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::comm::{CommError, Group, Mesh, MeshOptions};

/// Version of the stored calibration; a file of another version is measured again.
/// 2: GPU ceilings (`gpus`).
pub const FORMAT_VERSION: u32 = 2;

/// Environment variable naming the cache root (instead of `$XDG_CACHE_HOME/pinch` or
/// `~/.cache/pinch`); tests point it at a temporary directory.
pub const CACHE_DIR_ENV: &str = "PINCH_CACHE_DIR";

/// Hex digits of the SHA-256 kept as the host key: 64 bits, plenty to tell a handful of hosts
/// apart, short enough for a file name a person can read.
const HOST_KEY_HEX_DIGITS: usize = 16;

/// A ping-pong's timed round trips move about this many bytes each way per size, within
/// `MIN/MAX_ROUND_TRIPS`.
const PINGPONG_BYTES: u64 = 64 << 20;
const MIN_ROUND_TRIPS: u64 = 3;
const MAX_ROUND_TRIPS: u64 = 100;
/// Warm-up round trips move about this many bytes each way per size, within 1 and
/// `MAX_WARMUP_ROUND_TRIPS`: the first few small messages over a fresh TCP link are several
/// times slower than the rest.
const WARMUP_BYTES: u64 = 16 << 20;
const MAX_WARMUP_ROUND_TRIPS: u64 = 20;
/// The smallest message of a link sweep; its half round trip is the link's latency.
const LATENCY_BYTES: u64 = 8;
/// A ping-pong peer silent this long is taken as hung.
const LINK_IO_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum CalibrationError {
    #[error("the ping-pong over {transport} failed: {source}")]
    Link {
        transport: &'static str,
        source: CommError,
    },

    #[error("a ping-pong rank over {transport} panicked")]
    RankPanicked { transport: &'static str },

    #[error("cannot read calibration '{path}': {source}")]
    Read { path: PathBuf, source: io::Error },

    #[error("calibration '{path}' does not parse: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },

    #[error("cannot write calibration '{path}': {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// What identifies this machine's ceilings. Fields this machine cannot report are `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Host {
    pub cpu_model: Option<String>,
    /// Threads this process may run at once (`available_parallelism`).
    pub cores: usize,
    pub memory_bytes: Option<u64>,
    pub kernel_release: Option<String>,
    /// The names of the GPUs the CUDA driver lists, in ordinal order; empty without GPUs, a
    /// driver or the `cuda` feature.
    pub gpus: Vec<String>,
}

impl Host {
    /// This machine, from `/proc`.
    pub fn detect() -> Host {
        use procfs::Current;
        let cpu_model = procfs::CpuInfo::current()
            .ok()
            .and_then(|info| info.model_name(0).map(str::to_string));
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let memory_bytes = procfs::Meminfo::current().ok().map(|m| m.mem_total);
        let kernel_release = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_string());
        Host {
            cpu_model,
            cores,
            memory_bytes,
            kernel_release,
            gpus: gpu_names(),
        }
    }

    /// A short hex hash of every field: equal hosts get equal keys, a change in any field a
    /// different one. A host without GPUs keeps the key it had before GPUs were part of it.
    pub fn key(&self) -> String {
        let or_unknown = |s: &Option<String>| s.clone().unwrap_or_else(|| "?".into());
        let mut text = format!(
            "cpu={}\ncores={}\nmemory={}\nkernel={}",
            or_unknown(&self.cpu_model),
            self.cores,
            self.memory_bytes.map_or("?".into(), |b| b.to_string()),
            or_unknown(&self.kernel_release),
        );
        if !self.gpus.is_empty() {
            text += &format!("\ngpus={}:{}", self.gpus.len(), self.gpus.join(";"));
        }
        let digest = Sha256::digest(text.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        hex[..HOST_KEY_HEX_DIGITS].to_string()
    }
}

/// How much to measure: the full plan gives ceilings, the quick one (tests) only exercises the
/// code paths.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub quick: bool,
    /// Elements of each of STREAM's three f32 arrays.
    pub stream_elements: usize,
    pub stream_repeats: usize,
    /// The GEMM shape: `[m, k] · [k, n]`.
    pub gemm_m: usize,
    pub gemm_k: usize,
    pub gemm_n: usize,
    pub gemm_repeats: usize,
    /// The link sweep doubles from 8 bytes up to this.
    pub link_max_bytes: u64,
    /// Threads of the "all threads" measurements.
    pub threads: usize,
    /// The buffer of each GPU's device-to-device copy, and its timed copies.
    pub gpu_copy_bytes: usize,
    pub gpu_copy_repeats: usize,
    /// The square GPU GEMM's `m = n = k`, and the calls of its timed batch.
    pub gpu_gemm_size: usize,
    pub gpu_gemm_repeats: usize,
}

impl Plan {
    /// Ceilings worth keeping: 3 × 128 MiB STREAM arrays, a 512 × 2048 × 2048 GEMM, links up to
    /// 64 MiB. About 5 s (release build) on 2 cores. On a GPU: 1 GiB copies, 8192³ GEMMs.
    pub fn full(threads: usize) -> Plan {
        Plan {
            quick: false,
            stream_elements: 32 << 20,
            stream_repeats: 5,
            gemm_m: 512,
            gemm_k: 2048,
            gemm_n: 2048,
            gemm_repeats: 3,
            link_max_bytes: 64 << 20,
            threads: threads.max(1),
            gpu_copy_bytes: 1 << 30,
            gpu_copy_repeats: 20,
            gpu_gemm_size: 8192,
            gpu_gemm_repeats: 20,
        }
    }

    /// Small enough for a debug build in a test: cache-sized arrays and shapes.
    pub fn quick(threads: usize) -> Plan {
        Plan {
            quick: true,
            stream_elements: 1 << 16,
            stream_repeats: 2,
            gemm_m: 32,
            gemm_k: 128,
            gemm_n: 128,
            gemm_repeats: 2,
            link_max_bytes: 64 << 10,
            gpu_copy_bytes: 64 << 20,
            gpu_copy_repeats: 5,
            gpu_gemm_size: 1024,
            gpu_gemm_repeats: 10,
            ..Plan::full(threads)
        }
    }
}

/// A rate on one thread and on all of [`Calibration::threads`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThreadRates {
    pub one_thread: f64,
    pub all_threads: f64,
}

/// STREAM bandwidths in GB/s (10⁹ bytes per second), best pass of each.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemoryBandwidth {
    pub copy_gbps: ThreadRates,
    pub scale_gbps: ThreadRates,
    pub add_gbps: ThreadRates,
    pub triad_gbps: ThreadRates,
}

/// The GEMM rate of one weight storage, in GFLOP/s (10⁹ flops per second), best call of each.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GemmPeak {
    pub dtype: Storage,
    /// `[m, k, n]` of the timed matmul.
    pub shape: [usize; 3],
    pub gflops: ThreadRates,
}

/// One size of a ping-pong sweep.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct PingPongRow {
    pub bytes: u64,
    /// Half a round trip, median over the timed round trips.
    pub half_round_trip_us: f64,
    /// Half of the fastest round trip.
    pub best_half_round_trip_us: f64,
    /// `bytes` over the median half round trip.
    pub bandwidth_gbps: f64,
}

/// The ceilings of one transport between two ranks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkCeiling {
    /// "shm" or "tcp", as the mesh names it.
    pub transport: String,
    /// Median half round trip of an 8-byte message.
    pub latency_us: f64,
    /// Bandwidth at the largest size of the sweep.
    pub bandwidth_gbps: f64,
    /// The highest bandwidth of any size (mid-sized messages can beat the largest, which
    /// overflow the caches).
    pub peak_bandwidth_gbps: f64,
    pub sweep: Vec<PingPongRow>,
}

/// The GPU ceilings of a calibration: per GPU, or why there are none. In JSON
/// `{"measured": [..]}` or `{"not_measured": "no CUDA driver: .."}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GpuCalibration {
    Measured(Vec<GpuCeilings>),
    NotMeasured(String),
}

/// The ceilings of one GPU; what could not be measured is absent and `not_measured` says why.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuCeilings {
    pub device: GpuDevice,
    /// Device-to-device copy, counting read and write bytes.
    pub copy: Option<CopyRate>,
    /// cuBLAS GEMM per dtype, in [`pinch_kernels::GpuDtype::ALL`]'s order.
    pub gemm: Vec<GemmRate>,
    /// One line per ceiling not measured on this GPU, with the reason.
    pub not_measured: Vec<String>,
}

/// Everything `pinch calibrate` measured on one host.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    pub format_version: u32,
    pub host_key: String,
    /// When it was measured, RFC 3339 in UTC.
    pub measured_at: String,
    /// Measured with the quick plan (tests): not a ceiling to trust.
    pub quick: bool,
    pub cpu_model: Option<String>,
    pub cores: usize,
    pub memory_bytes: Option<u64>,
    pub kernel_release: Option<String>,
    /// Threads of the "all threads" measurements.
    pub threads: usize,
    pub memory: MemoryBandwidth,
    pub gemm: Vec<GemmPeak>,
    pub links: Vec<LinkCeiling>,
    pub gpus: GpuCalibration,
}

impl Calibration {
    /// Whether this result answers a request for `plan`: a full one answers any, a quick one
    /// only a quick request.
    pub fn satisfies(&self, plan: &Plan) -> bool {
        !self.quick || plan.quick
    }
}

/// Measures every ceiling of `plan` on `host`, the CPU's first, then the GPUs'; `progress` hears
/// the name of each step as it starts. Leaves the matmul thread setting as it found it. GPU
/// failures do not fail the calibration: they are recorded in [`Calibration::gpus`].
pub fn measure(
    host: &Host,
    plan: &Plan,
    mut progress: impl FnMut(&str),
) -> Result<Calibration, CalibrationError> {
    progress("memory bandwidth (STREAM)");
    let memory = measure_memory(plan);
    progress("GEMM FLOP/s");
    let gemm = [Storage::F32, Storage::Bf16]
        .into_iter()
        .map(|dtype| measure_gemm(plan, dtype))
        .collect();
    let mut links = Vec::new();
    for (what, nodes) in [("shm", [0, 0]), ("tcp", [0, 1])] {
        progress(&format!("link ping-pong ({what})"));
        links.push(measure_link(what, nodes, plan.link_max_bytes)?);
    }
    progress("GPU ceilings (device-to-device copy, cuBLAS GEMM)");
    let gpus = measure_gpus(plan);
    Ok(Calibration {
        format_version: FORMAT_VERSION,
        host_key: host.key(),
        measured_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        quick: plan.quick,
        cpu_model: host.cpu_model.clone(),
        cores: host.cores,
        memory_bytes: host.memory_bytes,
        kernel_release: host.kernel_release.clone(),
        threads: plan.threads,
        memory,
        gemm,
        links,
        gpus,
    })
}

/// `x` to 4 significant digits: more than a measurement holds, and a short decimal reads back
/// from JSON as exactly the same f64.
fn sig4(x: f64) -> f64 {
    format!("{x:.3e}").parse().unwrap_or(x)
}

fn measure_memory(plan: &Plan) -> MemoryBandwidth {
    let rates = |kernel| {
        let gbps = |threads| {
            let r = stream(kernel, plan.stream_elements, plan.stream_repeats, threads);
            sig4(r.best_rate_bytes_per_s / 1e9)
        };
        ThreadRates {
            one_thread: gbps(1),
            all_threads: gbps(plan.threads),
        }
    };
    MemoryBandwidth {
        copy_gbps: rates(StreamKernel::Copy),
        scale_gbps: rates(StreamKernel::Scale),
        add_gbps: rates(StreamKernel::Add),
        triad_gbps: rates(StreamKernel::Triad),
    }
}

fn measure_gemm(plan: &Plan, dtype: Storage) -> GemmPeak {
    let (m, k, n) = (plan.gemm_m, plan.gemm_k, plan.gemm_n);
    // Small varied values: no denormals, nothing a kernel could shortcut.
    let weights: Vec<f32> = (0..k * n).map(|i| (i % 17) as f32 * 0.01 - 0.08).collect();
    let w = Matrix::from_f32(k, n, weights, dtype);
    let a: Vec<f32> = (0..m * k).map(|i| (i % 13) as f32 * 0.02 - 0.12).collect();
    let mut out = vec![0.0f32; m * n];
    let before = threads();
    let mut gflops = |t| {
        set_threads(t);
        matmul_w(&a, m, &w, &mut out);
        let best = (0..plan.gemm_repeats.max(1))
            .map(|_| {
                let start = Instant::now();
                let cost = matmul_w(&a, m, &w, std::hint::black_box(&mut out));
                cost.flops as f64 / start.elapsed().as_secs_f64() / 1e9
            })
            .fold(0.0, f64::max);
        sig4(best)
    };
    let rates = ThreadRates {
        one_thread: gflops(1),
        all_threads: gflops(plan.threads),
    };
    set_threads(before);
    GemmPeak {
        dtype,
        shape: [m, k, n],
        gflops: rates,
    }
}

/// The names of this machine's GPUs, for the host key; none when they cannot be listed (the
/// calibration itself records why).
#[cfg(feature = "cuda")]
fn gpu_names() -> Vec<String> {
    pinch_kernels::cuda::probe()
        .map(|devices| devices.into_iter().map(|d| d.name).collect())
        .unwrap_or_default()
}

#[cfg(not(feature = "cuda"))]
fn gpu_names() -> Vec<String> {
    Vec::new()
}

/// Each GPU's ceilings, or why there are none.
#[cfg(feature = "cuda")]
fn measure_gpus(plan: &Plan) -> GpuCalibration {
    match pinch_kernels::cuda::probe() {
        Ok(devices) if devices.is_empty() => {
            GpuCalibration::NotMeasured("no CUDA device: the driver lists none".into())
        }
        Ok(devices) => GpuCalibration::Measured(
            devices
                .into_iter()
                .map(|device| measure_gpu(plan, device))
                .collect(),
        ),
        Err(e) => GpuCalibration::NotMeasured(e.to_string()),
    }
}

#[cfg(not(feature = "cuda"))]
fn measure_gpus(_plan: &Plan) -> GpuCalibration {
    GpuCalibration::NotMeasured("built without the cuda feature".into())
}

/// The copy and every dtype's GEMM on one GPU; each failure becomes a `not_measured` line
/// (once: a missing cuBLAS fails every dtype the same way).
#[cfg(feature = "cuda")]
fn measure_gpu(plan: &Plan, device: GpuDevice) -> GpuCeilings {
    use pinch_kernels::{GpuDtype, cuda};
    let mut not_measured = Vec::new();
    let mut note = |line: String| {
        if !not_measured.contains(&line) {
            not_measured.push(line);
        }
    };
    let copy = cuda::copy_bandwidth(device.ordinal, plan.gpu_copy_bytes, plan.gpu_copy_repeats)
        .map_err(|e| note(e.to_string()))
        .ok()
        .map(|r| CopyRate {
            best_gbps: sig4(r.best_gbps),
            median_gbps: sig4(r.median_gbps),
            ..r
        });
    let size = plan.gpu_gemm_size;
    let gemm = GpuDtype::ALL
        .into_iter()
        .filter_map(|dtype| {
            cuda::gemm_peak(
                device.ordinal,
                dtype,
                size,
                size,
                size,
                plan.gpu_gemm_repeats,
            )
            .map_err(|e| note(e.to_string()))
            .ok()
        })
        .map(|r| GemmRate {
            tflops: sig4(r.tflops),
            ..r
        })
        .collect();
    GpuCeilings {
        device,
        copy,
        gemm,
        not_measured,
    }
}

/// The sizes of a link sweep: doubling from 8 bytes up to `max_bytes`.
fn link_sizes(max_bytes: u64) -> Vec<u64> {
    std::iter::successors(Some(LATENCY_BYTES), |b| b.checked_mul(2))
        .take_while(|&b| b <= max_bytes.max(LATENCY_BYTES))
        .collect()
}

/// Warm-up and timed round trips for a size; both ranks compute the same.
fn round_trips(bytes: u64) -> (u64, u64) {
    let warmup = (WARMUP_BYTES / bytes.max(1)).clamp(1, MAX_WARMUP_ROUND_TRIPS);
    let timed = (PINGPONG_BYTES / bytes.max(1)).clamp(MIN_ROUND_TRIPS, MAX_ROUND_TRIPS);
    (warmup, timed)
}

/// Ping-pongs between two ranks on `nodes` (equal ids share memory) over every size.
fn measure_link(
    what: &'static str,
    nodes: [u32; 2],
    max_bytes: u64,
) -> Result<LinkCeiling, CalibrationError> {
    let link_error = |source| CalibrationError::Link {
        transport: what,
        source,
    };
    let options = MeshOptions {
        io_timeout: LINK_IO_TIMEOUT,
        ..MeshOptions::default()
    };
    let mut meshes = Mesh::loopback(&nodes, &options).map_err(link_error)?;
    let transport = meshes[0].transport_to(1).to_string();
    let sizes = link_sizes(max_bytes);
    let echo_mesh = meshes.pop();
    let ping_mesh = meshes.pop();
    let (Some(ping_mesh), Some(echo_mesh)) = (ping_mesh, echo_mesh) else {
        return Err(link_error(CommError::ZeroWorld));
    };
    let (pinged, echoed) = std::thread::scope(|scope| {
        let sizes = &sizes;
        let echo = scope.spawn(move || echo_side(echo_mesh, sizes));
        let ping = scope.spawn(move || ping_side(ping_mesh, sizes));
        (ping.join(), echo.join())
    });
    let panicked = || CalibrationError::RankPanicked { transport: what };
    let sweep = pinged.map_err(|_| panicked())?.map_err(link_error)?;
    echoed.map_err(|_| panicked())?.map_err(link_error)?;
    let latency_us = sweep.first().map_or(f64::NAN, |r| r.half_round_trip_us);
    let bandwidth_gbps = sweep.last().map_or(f64::NAN, |r| r.bandwidth_gbps);
    let peak_bandwidth_gbps = sweep.iter().map(|r| r.bandwidth_gbps).fold(0.0, f64::max);
    Ok(LinkCeiling {
        transport,
        latency_us,
        bandwidth_gbps,
        peak_bandwidth_gbps,
        sweep,
    })
}

/// Rank 0: sends each message, waits for it to come back, and times the round trip.
fn ping_side(mut mesh: Mesh, sizes: &[u64]) -> Result<Vec<PingPongRow>, CommError> {
    let mut g = Group::new(0, vec![0, 1], mesh.rank())?;
    let mut back = Vec::new();
    sizes
        .iter()
        .map(|&bytes| {
            let message = vec![1u8; bytes as usize];
            let (warmup, timed) = round_trips(bytes);
            let mut times_ns = Vec::with_capacity(timed as usize);
            for i in 0..warmup + timed {
                let start = Instant::now();
                mesh.send(&mut g, 1, &message)?;
                mesh.recv(&mut g, 1, &mut back)?;
                if i >= warmup {
                    times_ns.push(start.elapsed().as_nanos() as f64);
                }
            }
            Ok(row(bytes, &mut times_ns))
        })
        .collect()
}

/// Rank 1: sends every message straight back.
fn echo_side(mut mesh: Mesh, sizes: &[u64]) -> Result<(), CommError> {
    let mut g = Group::new(0, vec![0, 1], mesh.rank())?;
    let mut message = Vec::new();
    for &bytes in sizes {
        let (warmup, timed) = round_trips(bytes);
        for _ in 0..warmup + timed {
            mesh.recv(&mut g, 0, &mut message)?;
            mesh.send(&mut g, 0, &message)?;
        }
    }
    Ok(())
}

/// The row of `bytes` from its round-trip times (non-empty; sorted here).
fn row(bytes: u64, round_trips_ns: &mut [f64]) -> PingPongRow {
    round_trips_ns.sort_by(f64::total_cmp);
    let half_us = |ns: f64| ns / 2.0 / 1e3;
    let median_ns = round_trips_ns[round_trips_ns.len() / 2];
    PingPongRow {
        bytes,
        half_round_trip_us: sig4(half_us(median_ns)),
        best_half_round_trip_us: sig4(half_us(round_trips_ns[0])),
        bandwidth_gbps: sig4(bytes as f64 / (median_ns / 2.0)),
    }
}

/// The cache root: `$PINCH_CACHE_DIR`, else `$XDG_CACHE_HOME/pinch`, else `~/.cache/pinch`;
/// `None` when none of them is set.
pub fn cache_root() -> Option<PathBuf> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    var(CACHE_DIR_ENV)
        .map(PathBuf::from)
        .or_else(|| var("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("pinch")))
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache").join("pinch")))
}

/// Where the calibration of `host_key` is stored under cache root `root`.
pub fn cache_path(root: &Path, host_key: &str) -> PathBuf {
    root.join("calibration").join(format!("{host_key}.json"))
}

/// The stored calibration of `host_key` under `root`: `None` when there is none, or when it
/// was written in another format version (to be measured again).
pub fn load(root: &Path, host_key: &str) -> Result<Option<Calibration>, CalibrationError> {
    let path = cache_path(root, host_key);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(CalibrationError::Read { path, source }),
    };
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|source| CalibrationError::Parse {
            path: path.clone(),
            source,
        })?;
    if value.get("format_version") != Some(&FORMAT_VERSION.into()) {
        return Ok(None);
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|source| CalibrationError::Parse { path, source })
}

/// Stores `calibration` under `root` (creating the directories) and returns its path. Writes a
/// temporary file and renames it, so a reader never sees half a file.
pub fn store(root: &Path, calibration: &Calibration) -> Result<PathBuf, CalibrationError> {
    let path = cache_path(root, &calibration.host_key);
    let write_error = |source| CalibrationError::Write {
        path: path.clone(),
        source,
    };
    let dir = root.join("calibration");
    std::fs::create_dir_all(&dir).map_err(write_error)?;
    let text = serde_json::to_string_pretty(calibration).map_err(io::Error::other);
    let text = text.map_err(write_error)? + "\n";
    let tmp = dir.join(format!(".{}.json.tmp", calibration.host_key));
    std::fs::write(&tmp, text).map_err(write_error)?;
    std::fs::rename(&tmp, &path).map_err(write_error)?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            cpu_model: Some("AMD EPYC 9654".into()),
            cores: 2,
            memory_bytes: Some(24 << 30),
            kernel_release: Some("6.8.0-49-generic".into()),
            gpus: Vec::new(),
        }
    }

    fn h100() -> GpuDevice {
        GpuDevice {
            ordinal: 0,
            name: "NVIDIA H100 80GB HBM3".into(),
            compute_capability: pinch_kernels::ComputeCapability { major: 9, minor: 0 },
            memory_bytes: 85_520_809_984,
            sm_count: Some(132),
            max_clock_mhz: Some(1980),
        }
    }

    #[test]
    fn the_host_key_is_short_hex_stable_and_changes_with_every_field() {
        let key = host().key();
        assert_eq!(key.len(), HOST_KEY_HEX_DIGITS);
        assert!(key.chars().all(|c| c.is_ascii_hexdigit()), "{key}");
        assert_eq!(key, host().key());
        let variants = [
            Host {
                cpu_model: None,
                ..host()
            },
            Host { cores: 4, ..host() },
            Host {
                memory_bytes: Some(16 << 30),
                ..host()
            },
            Host {
                kernel_release: Some("6.9.0".into()),
                ..host()
            },
            Host {
                gpus: vec![h100().name],
                ..host()
            },
            Host {
                gpus: vec![h100().name, h100().name],
                ..host()
            },
        ];
        for other in variants {
            assert_ne!(other.key(), key, "{other:?}");
        }
    }

    #[test]
    fn a_host_without_gpus_keeps_the_key_it_had_before_gpus_counted() {
        // The key format 1 gave this host; a cache stays a cache on machines without GPUs.
        assert_eq!(host().key(), "82929f82b8714969");
        let one = Host {
            gpus: vec![h100().name],
            ..host()
        };
        let two = Host {
            gpus: vec![h100().name, h100().name],
            ..host()
        };
        assert_ne!(one.key(), two.key());
    }

    #[test]
    fn gpu_ceilings_round_trip_through_json_in_either_form() {
        let measured = GpuCalibration::Measured(vec![GpuCeilings {
            device: h100(),
            copy: Some(CopyRate {
                bytes: 1 << 30,
                repeats: 20,
                best_gbps: 2987.0,
                median_gbps: 2975.0,
            }),
            gemm: vec![GemmRate {
                dtype: pinch_kernels::GpuDtype::Bf16,
                m: 8192,
                n: 8192,
                k: 8192,
                calls: 20,
                tflops: 712.3,
            }],
            not_measured: vec!["cuBLAS f16 gemm failed on CUDA device 0: ..".into()],
        }]);
        let missing =
            GpuCalibration::NotMeasured("no CUDA driver: libcuda could not be loaded".into());
        for gpus in [measured, missing] {
            let text = serde_json::to_string(&gpus).unwrap();
            assert_eq!(serde_json::from_str::<GpuCalibration>(&text).unwrap(), gpus);
        }
        let text = serde_json::to_value(GpuCalibration::NotMeasured("why".into())).unwrap();
        assert_eq!(text, serde_json::json!({"not_measured": "why"}));
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_the_cuda_feature_the_gpus_say_so() {
        let reason = GpuCalibration::NotMeasured("built without the cuda feature".into());
        assert_eq!(measure_gpus(&Plan::quick(1)), reason);
        assert!(Host::detect().gpus.is_empty());
    }

    #[cfg(feature = "cuda")]
    #[test]
    fn without_a_driver_the_gpus_give_the_reason() {
        use pinch_kernels::cuda::{CudaError, probe};
        match probe() {
            Err(CudaError::NoDriver) => {
                let reason = "no CUDA driver: libcuda could not be loaded";
                assert_eq!(
                    measure_gpus(&Plan::quick(1)),
                    GpuCalibration::NotMeasured(reason.into())
                );
                assert!(Host::detect().gpus.is_empty());
            }
            Ok(devices) => {
                let names: Vec<String> = devices.into_iter().map(|d| d.name).collect();
                assert_eq!(Host::detect().gpus, names);
            }
            Err(e) => assert!(Host::detect().gpus.is_empty(), "{e}"),
        }
    }

    #[test]
    fn this_host_is_detected() {
        let h = Host::detect();
        assert!(h.cores >= 1);
        assert!(h.memory_bytes.is_some_and(|b| b > 0), "{h:?}");
        assert!(h.kernel_release.is_some(), "{h:?}");
    }

    #[test]
    fn a_quick_calibration_measures_everything_and_round_trips_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path(), &host().key()).unwrap(), None);
        let mut steps = Vec::new();
        let c = measure(&host(), &Plan::quick(2), |s| steps.push(s.to_string())).unwrap();
        assert_eq!(steps.len(), 5, "{steps:?}");
        assert!(c.quick && c.satisfies(&Plan::quick(2)) && !c.satisfies(&Plan::full(2)));
        assert!(chrono::DateTime::parse_from_rfc3339(&c.measured_at).is_ok());
        assert!(c.memory.triad_gbps.one_thread > 0.0 && c.memory.copy_gbps.all_threads > 0.0);
        assert_eq!(c.gemm.len(), 2);
        assert!(c.gemm.iter().all(|g| g.gflops.all_threads > 0.0));
        let transports: Vec<&str> = c.links.iter().map(|l| l.transport.as_str()).collect();
        assert_eq!(transports, ["shm", "tcp"]);
        for link in &c.links {
            assert_eq!(link.sweep.first().map(|r| r.bytes), Some(8));
            assert_eq!(link.sweep.last().map(|r| r.bytes), Some(64 << 10));
            assert!(
                link.latency_us > 0.0 && link.bandwidth_gbps > 0.0,
                "{link:?}"
            );
        }
        match &c.gpus {
            GpuCalibration::NotMeasured(reason) => assert!(!reason.is_empty()),
            GpuCalibration::Measured(gpus) => {
                // Every ceiling of every GPU is either measured or explained.
                for gpu in gpus {
                    let dtypes = pinch_kernels::GpuDtype::ALL.len();
                    let missing = usize::from(gpu.copy.is_none()) + dtypes - gpu.gemm.len();
                    assert!(missing == 0 || !gpu.not_measured.is_empty(), "{gpu:?}");
                }
            }
        }
        let path = store(dir.path(), &c).unwrap();
        assert_eq!(path, cache_path(dir.path(), &host().key()));
        assert_eq!(load(dir.path(), &c.host_key).unwrap(), Some(c));
    }

    #[test]
    fn another_format_version_is_a_miss_and_garbage_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = cache_path(dir.path(), "abc");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, r#"{"format_version": 0}"#).unwrap();
        assert_eq!(load(dir.path(), "abc").unwrap(), None);
        std::fs::write(&path, "not json").unwrap();
        let err = load(dir.path(), "abc").unwrap_err();
        assert!(
            err.to_string().contains("abc.json' does not parse"),
            "{err}"
        );
    }

    #[test]
    fn link_sweeps_double_and_round_trips_are_bounded() {
        assert_eq!(link_sizes(64), vec![8, 16, 32, 64]);
        assert_eq!(link_sizes(1), vec![8]);
        assert_eq!(round_trips(8), (MAX_WARMUP_ROUND_TRIPS, MAX_ROUND_TRIPS));
        assert_eq!(round_trips(64 << 20), (1, MIN_ROUND_TRIPS));
        let r = row(100, &mut [4000.0, 2000.0, 3000.0]);
        assert_eq!(
            (r.half_round_trip_us, r.best_half_round_trip_us),
            (1.5, 1.0)
        );
        assert_eq!(r.bandwidth_gbps, 0.06667, "4 significant digits");
        assert_eq!(sig4(123456.0), 123500.0);
    }
}
