//! `pinch calibrate`: this machine's ceilings for the analyzer's roofline (memory bandwidth,
//! GEMM FLOP/s, link latency and bandwidth; per GPU, copy bandwidth and cuBLAS GEMM FLOP/s),
//! measured once and then printed from the per-host cache until `--fresh` asks for a new
//! measurement.

use comfy_table::{Cell, CellAlignment};
use pinch_kernels::GpuDtype;
use pinch_workloads::calibrate::{
    Calibration, GpuCalibration, GpuCeilings, Host, LinkCeiling, Plan, ThreadRates, cache_root,
    load, measure, store,
};
use std::path::Path;

#[derive(Debug, clap::Args)]
pub struct CalibrateArgs {
    /// Print the calibration as JSON (notes go to stderr).
    #[arg(long)]
    pub json: bool,
    /// Measure again even when this host has a cached calibration.
    #[arg(long)]
    pub fresh: bool,
    /// A short rough run with small arrays and sweeps (for tests): not a ceiling to trust.
    #[arg(long)]
    pub quick: bool,
}

pub fn calibrate(args: CalibrateArgs) -> anyhow::Result<()> {
    let host = Host::detect();
    let plan = if args.quick {
        Plan::quick(host.cores)
    } else {
        Plan::full(host.cores)
    };
    let root = cache_root();
    let cached = match &root {
        Some(root) if !args.fresh => cached(root, &host.key(), &plan),
        _ => None,
    };
    let (calibration, note) = match cached {
        Some(c) => {
            let note = format!(
                "cached: measured at {} (pinch calibrate --fresh measures again)",
                c.measured_at
            );
            (c, note)
        }
        None => measure_and_store(&host, &plan, root.as_deref())?,
    };
    if args.json {
        eprintln!("{note}");
        println!("{}", serde_json::to_string_pretty(&calibration)?);
    } else {
        println!("{note}\n{}", render(&calibration));
    }
    Ok(())
}

/// This host's stored calibration if it answers `plan`; a file that cannot be read is
/// reported and measured over.
fn cached(root: &Path, host_key: &str, plan: &Plan) -> Option<Calibration> {
    match load(root, host_key) {
        Ok(c) => c.filter(|c| c.satisfies(plan)),
        Err(e) => {
            eprintln!("pinch: warning: {e}; measuring again");
            None
        }
    }
}

/// Measures (progress on stderr) and stores the result; a cache that cannot be written costs
/// only a warning.
fn measure_and_store(
    host: &Host,
    plan: &Plan,
    root: Option<&Path>,
) -> anyhow::Result<(Calibration, String)> {
    let c = measure(host, plan, |step| eprintln!("measuring {step}"))?;
    let note = match root.map(|root| store(root, &c)) {
        Some(Ok(path)) => format!(
            "measured at {}, stored in {}",
            c.measured_at,
            path.display()
        ),
        Some(Err(e)) => {
            eprintln!("pinch: warning: {e}");
            format!("measured at {} (not stored)", c.measured_at)
        }
        None => format!(
            "measured at {} (not stored: set PINCH_CACHE_DIR, XDG_CACHE_HOME or HOME)",
            c.measured_at
        ),
    };
    Ok((c, note))
}

/// The host line, the three CPU tables and the GPUs.
fn render(c: &Calibration) -> String {
    let memory = c
        .memory_bytes
        .map_or("memory unknown".into(), crate::render::fmt_bytes);
    let host = format!(
        "host {}: {}, {} cores, {memory}, kernel {}{}",
        c.host_key,
        c.cpu_model.as_deref().unwrap_or("unknown CPU"),
        c.cores,
        c.kernel_release.as_deref().unwrap_or("unknown"),
        if c.quick { " (quick run: rough)" } else { "" },
    );
    let gpus = gpu_section(&c.gpus);
    [host, memory_table(c), gemm_table(c), links_table(c), gpus].join("\n\n")
}

fn right(text: String) -> Cell {
    Cell::new(text).set_alignment(CellAlignment::Right)
}

fn rates_row(name: String, rates: &ThreadRates, unit: &str) -> Vec<Cell> {
    vec![
        Cell::new(name),
        right(format!("{:.1} {unit}", rates.one_thread)),
        right(format!("{:.1} {unit}", rates.all_threads)),
    ]
}

fn memory_table(c: &Calibration) -> String {
    let all = format!("{} threads", c.threads);
    let mut t = crate::render::table(&["STREAM", "1 thread", &all]);
    let m = &c.memory;
    for (name, rates) in [
        ("copy", &m.copy_gbps),
        ("scale", &m.scale_gbps),
        ("add", &m.add_gbps),
        ("triad", &m.triad_gbps),
    ] {
        t.add_row(rates_row(name.into(), rates, "GB/s"));
    }
    format!("Memory bandwidth (best pass)\n{t}")
}

fn gemm_table(c: &Calibration) -> String {
    let all = format!("{} threads", c.threads);
    let mut t = crate::render::table(&["GEMM weights", "1 thread", &all]);
    for g in &c.gemm {
        let [m, k, n] = g.shape;
        let name = format!("{} ({m}×{k}×{n})", g.dtype.name());
        t.add_row(rates_row(name, &g.gflops, "GFLOP/s"));
    }
    format!("Compute (best call)\n{t}")
}

fn links_table(c: &Calibration) -> String {
    let mut headers = vec!["bytes".to_string()];
    for link in &c.links {
        headers.push(format!("{} half RTT", link.transport));
        headers.push(format!("{} GB/s", link.transport));
    }
    let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
    let mut t = crate::render::table(&headers);
    let sizes = c.links.first().map_or(&[][..], |l| &l.sweep[..]);
    for (i, size) in sizes.iter().enumerate() {
        let mut row = vec![right(crate::render::fmt_bytes(size.bytes))];
        for link in &c.links {
            row.extend(link_cells(link, i));
        }
        t.add_row(row);
    }
    let summary: Vec<String> = c.links.iter().map(link_summary).collect();
    format!("Links, ping-pong (median)\n{}\n{t}", summary.join("\n"))
}

fn link_cells(link: &LinkCeiling, i: usize) -> [Cell; 2] {
    match link.sweep.get(i) {
        Some(r) => [
            right(fmt_us(r.half_round_trip_us)),
            right(format!("{:.3}", r.bandwidth_gbps)),
        ],
        None => [Cell::new(""), Cell::new("")],
    }
}

fn link_summary(link: &LinkCeiling) -> String {
    let largest = link.sweep.last().map_or(0, |r| r.bytes);
    format!(
        "  {}: latency {} (8 B), bandwidth {:.2} GB/s ({}), peak {:.2} GB/s",
        link.transport,
        fmt_us(link.latency_us),
        link.bandwidth_gbps,
        crate::render::fmt_bytes(largest),
        link.peak_bandwidth_gbps,
    )
}

/// The GPU table, or the one line saying why there is none.
fn gpu_section(gpus: &GpuCalibration) -> String {
    match gpus {
        GpuCalibration::NotMeasured(reason) => format!("GPUs: not measured: {reason}"),
        GpuCalibration::Measured(gpus) => gpu_table(gpus),
    }
}

/// One row per GPU; a ceiling not measured shows as "-" and its reason below the table.
fn gpu_table(gpus: &[GpuCeilings]) -> String {
    let gemm_headers: Vec<String> = GpuDtype::ALL.iter().map(|d| format!("{d} GEMM")).collect();
    let mut headers = vec!["GPU", "compute", "memory", "d2d copy"];
    headers.extend(gemm_headers.iter().map(String::as_str));
    let mut t = crate::render::table(&headers);
    let mut notes = String::new();
    for gpu in gpus {
        t.add_row(gpu_row(gpu));
        for line in &gpu.not_measured {
            notes += &format!("\n  GPU {}: {line}", gpu.device.ordinal);
        }
    }
    let shape = gpus
        .iter()
        .flat_map(|g| &g.gemm)
        .next()
        .map_or(String::new(), |g| {
            format!(", {}×{}×{} mean of {} calls", g.m, g.n, g.k, g.calls)
        });
    format!("GPUs (d2d copy: best, bytes read + written; GEMM: cuBLAS{shape})\n{t}{notes}")
}

fn gpu_row(gpu: &GpuCeilings) -> Vec<Cell> {
    let d = &gpu.device;
    let missing = || right("-".into());
    let mut row = vec![
        Cell::new(format!("{}: {}", d.ordinal, d.name)),
        right(d.compute_capability.to_string()),
        right(crate::render::fmt_bytes(d.memory_bytes)),
        gpu.copy
            .map_or_else(missing, |c| right(format!("{:.0} GB/s", c.best_gbps))),
    ];
    for dtype in GpuDtype::ALL {
        let rate = gpu.gemm.iter().find(|g| g.dtype == dtype);
        row.push(rate.map_or_else(missing, |g| right(format!("{:.1} TFLOP/s", g.tflops))));
    }
    row
}

/// Microseconds in the unit that reads best (ns, µs, ms).
fn fmt_us(us: f64) -> String {
    crate::render::fmt_ns((us * 1e3).round() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinch_kernels::{ComputeCapability, CopyRate, GemmRate, GpuDevice};

    fn t4_without_bf16() -> GpuCeilings {
        GpuCeilings {
            device: GpuDevice {
                ordinal: 1,
                name: "Tesla T4".into(),
                compute_capability: ComputeCapability { major: 7, minor: 5 },
                memory_bytes: 16 << 30,
                sm_count: Some(40),
                max_clock_mhz: Some(1590),
            },
            copy: Some(CopyRate {
                bytes: 1 << 30,
                repeats: 20,
                best_gbps: 241.6,
                median_gbps: 240.0,
            }),
            gemm: vec![GemmRate {
                dtype: GpuDtype::F16,
                m: 8192,
                n: 8192,
                k: 8192,
                calls: 20,
                tflops: 41.23,
            }],
            not_measured: vec!["bf16 gemm needs compute capability 8.0 or newer".into()],
        }
    }

    #[test]
    fn a_gpu_row_shows_what_was_measured_and_a_dash_with_a_reason_for_the_rest() {
        let text = gpu_section(&GpuCalibration::Measured(vec![t4_without_bf16()]));
        assert!(text.contains("8192×8192×8192 mean of 20 calls"), "{text}");
        for needle in [
            "1: Tesla T4",
            "7.5",
            "242 GB/s",
            "41.2 TFLOP/s",
            "bf16 GEMM",
        ] {
            assert!(text.contains(needle), "{needle} missing from\n{text}");
        }
        let row = text.lines().find(|l| l.contains("Tesla T4")).unwrap();
        assert_eq!(
            row.matches(" - ").count(),
            3,
            "f32, tf32, bf16 missing: {row}"
        );
        assert!(text.ends_with("GPU 1: bf16 gemm needs compute capability 8.0 or newer"));
    }

    #[test]
    fn no_gpus_is_one_line_with_the_reason() {
        let reason = "no CUDA driver: libcuda could not be loaded";
        let text = gpu_section(&GpuCalibration::NotMeasured(reason.into()));
        assert_eq!(text, format!("GPUs: not measured: {reason}"));
    }
}
