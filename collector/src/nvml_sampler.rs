//! The NVML sampler: each NVIDIA GPU's utilization, memory, clocks, power, temperature, throttle
//! reasons, PCIe and NVLink traffic, ECC errors and XID events, the Hopper+ GPM metrics (SM
//! activity, occupancy, tensor activity, DRAM bandwidth), and the GPU memory of each rank process.
//!
//! NVML is loaded at run time (nvml-wrapper), so the agent builds and runs on hosts without a
//! driver; `open` then says why there is nothing to read. Every reading is probed once per GPU at
//! `open`: what a GPU refuses is never read again, is left out of its samples (never 0) and is
//! named once in `notes()`.
//!
//! GPM metrics come from the difference of two GPM samples taken at least 100 ms apart: the older
//! sample is kept until the gap is long enough, so at high sample rates GPM values simply come
//! less often. NVLink per-link traffic is read through GPM too; GPUs without GPM (before Hopper)
//! give it as NVML field values addressed by link (`nvlink_fields`).

use crate::nvlink_fields::{self, LinkKib};
use crate::sampler::{CounterSpec, SampleSink, Sampler, SamplerError};
use nvml_wrapper::bitmasks::event::EventTypes;
use nvml_wrapper::enum_wrappers::device::{
    Clock, EccCounter, MemoryError, PcieUtilCounter, TemperatureSensor,
};
use nvml_wrapper::enums::device::UsedGpuMemory;
use nvml_wrapper::enums::gpm::GpmMetricId;
use nvml_wrapper::error::NvmlError;
use nvml_wrapper::gpm::gpm_metrics_get;
use nvml_wrapper::{Device, EventSet, GpmSample, Nvml};
use pinch_traces::{Rank, Unit};
use std::collections::HashMap;
use std::path::Path;
use std::sync::OnceLock;

pub const GPU_UTILIZATION: CounterSpec = CounterSpec::new("gpu.utilization", Unit::Percent);
pub const GPU_MEMORY_UTILIZATION: CounterSpec =
    CounterSpec::new("gpu.memory_utilization", Unit::Percent);
pub const GPU_MEMORY_USED: CounterSpec = CounterSpec::new("gpu.memory_used", Unit::Bytes);
pub const GPU_MEMORY_TOTAL: CounterSpec = CounterSpec::new("gpu.memory_total", Unit::Bytes);
pub const GPU_SM_CLOCK: CounterSpec = CounterSpec::new("gpu.sm_clock", Unit::Hertz);
pub const GPU_MEMORY_CLOCK: CounterSpec = CounterSpec::new("gpu.memory_clock", Unit::Hertz);
pub const GPU_POWER: CounterSpec = CounterSpec::new("gpu.power", Unit::Watts);
pub const GPU_TEMPERATURE: CounterSpec = CounterSpec::new("gpu.temperature", Unit::Celsius);
/// NVML's throttle-reason bitmask (`nvmlClocksThrottleReasons`), as a number.
pub const GPU_THROTTLE_REASONS: CounterSpec = CounterSpec::new("gpu.throttle_reasons", Unit::Count);
/// How many throttle reasons are active (GPU idle counts as one).
pub const GPU_THROTTLE_REASONS_ACTIVE: CounterSpec =
    CounterSpec::new("gpu.throttle_reasons_active", Unit::Count);
pub const GPU_PCIE_TX: CounterSpec = CounterSpec::new("gpu.pcie_tx", Unit::BytesPerSecond);
pub const GPU_PCIE_RX: CounterSpec = CounterSpec::new("gpu.pcie_rx", Unit::BytesPerSecond);
/// Volatile (since the driver loaded) corrected ECC errors.
pub const GPU_ECC_CORRECTED: CounterSpec = CounterSpec::new("gpu.ecc_corrected", Unit::Count);
/// Volatile (since the driver loaded) uncorrected ECC errors.
pub const GPU_ECC_UNCORRECTED: CounterSpec = CounterSpec::new("gpu.ecc_uncorrected", Unit::Count);
/// Critical XID events seen since the sampler opened.
pub const GPU_XID_EVENTS: CounterSpec = CounterSpec::new("gpu.xid_events", Unit::Count);
pub const GPU_SM_ACTIVITY: CounterSpec = CounterSpec::new("gpu.sm_activity", Unit::Percent);
pub const GPU_SM_OCCUPANCY: CounterSpec = CounterSpec::new("gpu.sm_occupancy", Unit::Percent);
pub const GPU_TENSOR_ACTIVITY: CounterSpec = CounterSpec::new("gpu.tensor_activity", Unit::Percent);
pub const GPU_DRAM_BANDWIDTH_UTILIZATION: CounterSpec =
    CounterSpec::new("gpu.dram_bandwidth_utilization", Unit::Percent);
/// One NVLink link's traffic, on device "gpu{index}.nvlink{link}".
pub const GPU_NVLINK_TX: CounterSpec = CounterSpec::new("gpu.nvlink_tx", Unit::BytesPerSecond);
pub const GPU_NVLINK_RX: CounterSpec = CounterSpec::new("gpu.nvlink_rx", Unit::BytesPerSecond);
/// The GPU memory a rank process holds, summed over GPUs, on device "rank{N}".
pub const GPU_PROCESS_MEMORY_USED: CounterSpec =
    CounterSpec::new("gpu.process_memory_used", Unit::Bytes);

/// Every counter `NvmlSampler` may emit.
pub const NVML_COUNTERS: &[CounterSpec] = &[
    GPU_UTILIZATION,
    GPU_MEMORY_UTILIZATION,
    GPU_MEMORY_USED,
    GPU_MEMORY_TOTAL,
    GPU_SM_CLOCK,
    GPU_MEMORY_CLOCK,
    GPU_POWER,
    GPU_TEMPERATURE,
    GPU_THROTTLE_REASONS,
    GPU_THROTTLE_REASONS_ACTIVE,
    GPU_PCIE_TX,
    GPU_PCIE_RX,
    GPU_ECC_CORRECTED,
    GPU_ECC_UNCORRECTED,
    GPU_XID_EVENTS,
    GPU_SM_ACTIVITY,
    GPU_SM_OCCUPANCY,
    GPU_TENSOR_ACTIVITY,
    GPU_DRAM_BANDWIDTH_UTILIZATION,
    GPU_NVLINK_TX,
    GPU_NVLINK_RX,
    GPU_PROCESS_MEMORY_USED,
];

/// NVML needs two GPM samples at least this far apart to compute metrics.
pub const GPM_MIN_GAP_NS: u64 = 100_000_000;
/// NVML_NVLINK_MAX_LINKS: the most NVLink links a GPU has (Hopper has 18).
const MAX_NVLINK_LINKS: u32 = 18;
/// XID events drained per GPU per sample, so a storm of them cannot stall sampling.
const MAX_XID_EVENTS_PER_SAMPLE: usize = 64;
const DRIVER_DIR: &str = "/proc/driver/nvidia";

/// One NVML query and the counters its values fill, in order.
#[derive(Debug)]
struct Probe {
    counters: &'static [CounterSpec],
    read: fn(&Device<'static>) -> Result<Vec<f64>, NvmlError>,
}

/// The per-GPU queries. PCIe comes last: on GPUs with GPM it is read from GPM instead, because
/// `nvmlDeviceGetPcieThroughput` waits about 20 ms per call.
const PROBES: &[Probe] = &[
    Probe {
        counters: &[GPU_UTILIZATION, GPU_MEMORY_UTILIZATION],
        read: |d| {
            let rates = d.utilization_rates()?;
            Ok(vec![rates.gpu.into(), rates.memory.into()])
        },
    },
    Probe {
        counters: &[GPU_MEMORY_USED, GPU_MEMORY_TOTAL],
        read: |d| {
            let memory = d.memory_info()?;
            Ok(vec![memory.used as f64, memory.total as f64])
        },
    },
    Probe {
        counters: &[GPU_SM_CLOCK],
        read: |d| Ok(vec![mhz_to_hz(d.clock_info(Clock::SM)?)]),
    },
    Probe {
        counters: &[GPU_MEMORY_CLOCK],
        read: |d| Ok(vec![mhz_to_hz(d.clock_info(Clock::Memory)?)]),
    },
    Probe {
        counters: &[GPU_POWER],
        read: |d| Ok(vec![f64::from(d.power_usage()?) / 1000.0]),
    },
    Probe {
        counters: &[GPU_TEMPERATURE],
        read: |d| Ok(vec![d.temperature(TemperatureSensor::Gpu)?.into()]),
    },
    Probe {
        counters: &[GPU_THROTTLE_REASONS, GPU_THROTTLE_REASONS_ACTIVE],
        read: |d| {
            let bits = d.current_throttle_reasons()?.bits();
            Ok(vec![bits as f64, bits.count_ones().into()])
        },
    },
    Probe {
        counters: &[GPU_ECC_CORRECTED],
        read: |d| {
            let count = d.total_ecc_errors(MemoryError::Corrected, EccCounter::Volatile)?;
            Ok(vec![count as f64])
        },
    },
    Probe {
        counters: &[GPU_ECC_UNCORRECTED],
        read: |d| {
            let count = d.total_ecc_errors(MemoryError::Uncorrected, EccCounter::Volatile)?;
            Ok(vec![count as f64])
        },
    },
    Probe {
        counters: &[GPU_PCIE_TX],
        read: |d| {
            Ok(vec![kib_to_bytes(
                d.pcie_throughput(PcieUtilCounter::Send)?,
            )])
        },
    },
    Probe {
        counters: &[GPU_PCIE_RX],
        read: |d| {
            Ok(vec![kib_to_bytes(
                d.pcie_throughput(PcieUtilCounter::Receive)?,
            )])
        },
    },
];

/// How many `PROBES` (from the end) read PCIe.
const PCIE_PROBES: usize = 2;

/// NVML reports clocks in MHz.
pub fn mhz_to_hz(mhz: u32) -> f64 {
    f64::from(mhz) * 1e6
}

/// NVML reports PCIe throughput in KB/s of 1024 bytes.
pub fn kib_to_bytes(kib: u32) -> f64 {
    f64::from(kib) * 1024.0
}

/// Bytes per second from a GPM rate in `unit` (NVML's header documents MiB/sec; an empty unit is
/// taken as that). `None` for a unit this does not know.
pub fn bytes_per_second(value: f64, unit: &str) -> Option<f64> {
    let unit = unit.trim();
    let size = unit
        .strip_suffix("/sec")
        .or_else(|| unit.strip_suffix("/s"))
        .unwrap_or(unit);
    let scale = match size.to_ascii_lowercase().as_str() {
        "" | "mib" => 1_048_576.0,
        "b" | "bytes" => 1.0,
        "kib" => 1024.0,
        "kb" => 1e3,
        "mb" => 1e6,
        "gib" => 1_073_741_824.0,
        "gb" => 1e9,
        _ => return None,
    };
    Some(value * scale)
}

/// The sentence `open` returns when NVML cannot be initialised.
pub fn unavailable_reason(error: &NvmlError, driver_present: bool) -> String {
    if driver_present {
        format!("NVML could not be loaded: {error}")
    } else {
        format!("no NVIDIA driver on this host ({DRIVER_DIR} is absent)")
    }
}

/// NVML, initialised once per process: devices, event sets and GPM samples borrow it, so it must
/// outlive every sampler, and NVML keeps one reference count per process anyway.
fn nvml() -> Result<&'static Nvml, NvmlError> {
    static NVML: OnceLock<Nvml> = OnceLock::new();
    if let Some(nvml) = NVML.get() {
        return Ok(nvml);
    }
    let fresh = Nvml::init()?;
    // Another thread may have won the race; its handle is as good as ours.
    Ok(NVML.get_or_init(|| fresh))
}

/// A GPM metric read between two GPM samples, the counter it fills and the device it lands on.
#[derive(Debug)]
struct GpmRead {
    metric: GpmMetricId,
    counter: CounterSpec,
    device: String,
}

/// The GPM state of one GPU.
#[derive(Debug)]
struct Gpm {
    reads: Vec<GpmRead>,
    /// The sample the next metrics are measured from, and when it was taken.
    previous: Option<(u64, GpmSample<'static>)>,
}

/// Per-link NVLink counters read as field values (GPUs without GPM).
#[derive(Debug)]
struct LinkFields {
    links: Vec<u32>,
    /// The last reading and when it was taken.
    last: Option<(u64, Vec<LinkKib>)>,
}

/// One GPU and what it can be asked.
#[derive(Debug)]
struct Gpu {
    index: u32,
    name: String,
    device: Device<'static>,
    probes: Vec<&'static Probe>,
    gpm: Option<Gpm>,
    link_fields: Option<LinkFields>,
    /// Critical XID events registered for this GPU, and how many were seen.
    xid: Option<(EventSet<'static>, u64)>,
    /// Whether the GPU lists its compute processes (for the ranks' memory).
    lists_processes: bool,
}

/// Reads NVIDIA GPUs through NVML.
#[derive(Debug)]
pub struct NvmlSampler {
    nvml: &'static Nvml,
    gpus: Vec<Gpu>,
    ranks: Vec<(Rank, u32)>,
    notes: Vec<String>,
}

impl NvmlSampler {
    /// Opens NVML for the node's GPUs and these rank processes (rank, pid), or says in one
    /// sentence why it cannot be read on this host.
    pub fn open(ranks: &[(Rank, u32)]) -> Result<NvmlSampler, String> {
        let nvml = nvml().map_err(|e| unavailable_reason(&e, Path::new(DRIVER_DIR).exists()))?;
        let count = nvml
            .device_count()
            .map_err(|e| format!("NVML could not count the GPUs: {e}"))?;
        if count == 0 {
            return Err("NVML found no GPU on this host".to_string());
        }
        let mut sampler = NvmlSampler {
            nvml,
            gpus: Vec::new(),
            ranks: ranks.to_vec(),
            notes: Vec::new(),
        };
        for index in 0..count {
            match nvml.device_by_index(index) {
                Ok(device) => {
                    let gpu = sampler.probe_gpu(index, device);
                    sampler.gpus.push(gpu);
                }
                Err(e) => sampler.note(format!("gpu{index} cannot be opened: {e}")),
            }
        }
        if sampler.gpus.is_empty() {
            return Err(format!("NVML could open none of the {count} GPUs"));
        }
        Ok(sampler)
    }

    /// The names of the counters it will read on this host.
    pub fn read_counters(&self) -> Vec<String> {
        let mut names = Vec::new();
        for gpu in &self.gpus {
            let probed = gpu.probes.iter().flat_map(|p| p.counters.iter());
            let gpm = gpu
                .gpm
                .iter()
                .flat_map(|g| g.reads.iter().map(|r| &r.counter));
            let xid = gpu.xid.iter().map(|_| &GPU_XID_EVENTS);
            let links = gpu
                .link_fields
                .iter()
                .flat_map(|_| [&GPU_NVLINK_TX, &GPU_NVLINK_RX]);
            let processes = gpu
                .lists_processes
                .then_some(&GPU_PROCESS_MEMORY_USED)
                .filter(|_| !self.ranks.is_empty());
            for counter in probed.chain(gpm).chain(links).chain(xid).chain(processes) {
                names.push(counter.name.to_string());
            }
        }
        names.sort();
        names.dedup();
        names
    }

    /// What was refused or degraded, one sentence each; empty when nothing was.
    pub fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn note(&mut self, text: String) {
        if !self.notes.contains(&text) {
            self.notes.push(text);
        }
    }

    /// Finds what one GPU answers, noting each query it refuses.
    fn probe_gpu(&mut self, index: u32, device: Device<'static>) -> Gpu {
        let name = format!("gpu{index}");
        let links = self.active_links(&name, &device);
        let gpm = self.probe_gpm(&name, &device, &links);
        let link_fields = match (&gpm, links.is_empty()) {
            (None, false) => self.probe_link_fields(&name, &device, links),
            _ => None,
        };
        // GPM reads PCIe without the 20 ms wait of the plain query.
        let plain = if gpm.is_some() {
            &PROBES[..PROBES.len() - PCIE_PROBES]
        } else {
            PROBES
        };
        let mut probes = Vec::new();
        for probe in plain {
            match (probe.read)(&device) {
                Ok(_) => probes.push(probe),
                Err(e) => self.note(unsupported(&name, probe.counters, &e)),
            }
        }
        let xid = self.probe_xid(&name, &device);
        let lists_processes = match device.running_compute_processes() {
            Ok(_) => true,
            Err(e) => {
                self.note(unsupported(&name, &[GPU_PROCESS_MEMORY_USED], &e));
                false
            }
        };
        Gpu {
            index,
            name,
            device,
            probes,
            gpm,
            link_fields,
            xid,
            lists_processes,
        }
    }

    /// GPM reads for a GPU that supports it (Hopper+), including its active NVLink links. A GPM
    /// sample is taken once here, because a GPU may claim GPM and still refuse it (in a VM).
    fn probe_gpm(&mut self, name: &str, device: &Device<'static>, links: &[u32]) -> Option<Gpm> {
        let refused = match device.gpm_support() {
            Ok(true) => device.gpm_sample().err().map(|e| e.to_string()),
            Ok(false) => Some("this GPU has no GPM: Hopper or newer is needed".to_string()),
            Err(e) => Some(e.to_string()),
        };
        let Some(why) = refused else {
            return Some(Gpm {
                reads: gpm_reads(name, links),
                previous: None,
            });
        };
        let activity = [
            GPU_SM_ACTIVITY,
            GPU_SM_OCCUPANCY,
            GPU_TENSOR_ACTIVITY,
            GPU_DRAM_BANDWIDTH_UTILIZATION,
        ];
        self.note(format!("{name}: {} not read ({why})", names(&activity)));
        None
    }

    /// Per-link NVLink traffic from NVML field values, for a GPU without GPM; notes why not.
    fn probe_link_fields(
        &mut self,
        name: &str,
        device: &Device<'static>,
        links: Vec<u32>,
    ) -> Option<LinkFields> {
        match nvlink_fields::read_links(self.nvml, device, &links) {
            Ok(_) => Some(LinkFields { links, last: None }),
            Err(e) => {
                self.note(unsupported(name, &[GPU_NVLINK_TX, GPU_NVLINK_RX], &e));
                None
            }
        }
    }

    /// The NVLink links that are up; notes why there are none.
    fn active_links(&mut self, name: &str, device: &Device<'static>) -> Vec<u32> {
        let mut links = Vec::new();
        for link in 0..MAX_NVLINK_LINKS {
            match device.link_wrapper_for(link).is_active() {
                Ok(true) => links.push(link),
                Ok(false) => {}
                Err(e) if link == 0 => {
                    self.note(format!("{name}: NVLink is not read ({e})"));
                    return links;
                }
                // Past the GPU's last link.
                Err(_) => break,
            }
        }
        if links.is_empty() {
            self.note(format!("{name}: no NVLink link is active"));
        }
        links
    }

    /// An event set that catches this GPU's critical XID errors without blocking.
    fn probe_xid(
        &mut self,
        name: &str,
        device: &Device<'static>,
    ) -> Option<(EventSet<'static>, u64)> {
        let refused = |e: &dyn std::fmt::Display| format!("{name}: XID events are not read ({e})");
        let supported = match device.supported_event_types() {
            Ok(types) => types.contains(EventTypes::CRITICAL_XID_ERROR),
            Err(e) => {
                self.note(refused(&e));
                return None;
            }
        };
        if !supported {
            self.note(refused(&"the GPU does not report them"));
            return None;
        }
        let registered = self
            .nvml
            .create_event_set()
            .map_err(|e| e.to_string())
            .and_then(|set| {
                device
                    .register_events(EventTypes::CRITICAL_XID_ERROR, set)
                    .map_err(|e| e.error.to_string())
            });
        match registered {
            Ok(set) => Some((set, 0)),
            Err(e) => {
                self.note(refused(&e));
                None
            }
        }
    }
}

/// The GPM metrics of one GPU: the activity metrics, PCIe, and each active link's traffic.
fn gpm_reads(name: &str, links: &[u32]) -> Vec<GpmRead> {
    let on_gpu = |metric, counter| GpmRead {
        metric,
        counter,
        device: name.to_string(),
    };
    let mut reads = vec![
        on_gpu(GpmMetricId::SmUtil, GPU_SM_ACTIVITY),
        on_gpu(GpmMetricId::SmOccupancy, GPU_SM_OCCUPANCY),
        on_gpu(GpmMetricId::AnyTensorUtil, GPU_TENSOR_ACTIVITY),
        on_gpu(GpmMetricId::DramBwUtil, GPU_DRAM_BANDWIDTH_UTILIZATION),
        on_gpu(GpmMetricId::PcieTxPerSec, GPU_PCIE_TX),
        on_gpu(GpmMetricId::PcieRxPerSec, GPU_PCIE_RX),
    ];
    for &link in links {
        let Some(&(rx, tx)) = NVLINK_METRICS.get(link as usize) else {
            continue;
        };
        let device = format!("{name}.nvlink{link}");
        reads.push(GpmRead {
            metric: rx,
            counter: GPU_NVLINK_RX,
            device: device.clone(),
        });
        reads.push(GpmRead {
            metric: tx,
            counter: GPU_NVLINK_TX,
            device,
        });
    }
    reads
}

/// GPM's per-link NVLink metrics (receive, transmit), by link.
const NVLINK_METRICS: [(GpmMetricId, GpmMetricId); MAX_NVLINK_LINKS as usize] = {
    use GpmMetricId::*;
    [
        (NvlinkL0RxPerSec, NvlinkL0TxPerSec),
        (NvlinkL1RxPerSec, NvlinkL1TxPerSec),
        (NvlinkL2RxPerSec, NvlinkL2TxPerSec),
        (NvlinkL3RxPerSec, NvlinkL3TxPerSec),
        (NvlinkL4RxPerSec, NvlinkL4TxPerSec),
        (NvlinkL5RxPerSec, NvlinkL5TxPerSec),
        (NvlinkL6RxPerSec, NvlinkL6TxPerSec),
        (NvlinkL7RxPerSec, NvlinkL7TxPerSec),
        (NvlinkL8RxPerSec, NvlinkL8TxPerSec),
        (NvlinkL9RxPerSec, NvlinkL9TxPerSec),
        (NvlinkL10RxPerSec, NvlinkL10TxPerSec),
        (NvlinkL11RxPerSec, NvlinkL11TxPerSec),
        (NvlinkL12RxPerSec, NvlinkL12TxPerSec),
        (NvlinkL13RxPerSec, NvlinkL13TxPerSec),
        (NvlinkL14RxPerSec, NvlinkL14TxPerSec),
        (NvlinkL15RxPerSec, NvlinkL15TxPerSec),
        (NvlinkL16RxPerSec, NvlinkL16TxPerSec),
        (NvlinkL17RxPerSec, NvlinkL17TxPerSec),
    ]
};

fn names(counters: &[CounterSpec]) -> String {
    let names: Vec<&str> = counters.iter().map(|c| c.name).collect();
    names.join(", ")
}

/// The note for a query a GPU refused.
fn unsupported(gpu: &str, counters: &[CounterSpec], error: &NvmlError) -> String {
    format!("{gpu}: {} not read ({error})", names(counters))
}

impl Sampler for NvmlSampler {
    fn source(&self) -> &'static str {
        "nvml"
    }

    fn counters(&self) -> &'static [CounterSpec] {
        NVML_COUNTERS
    }

    fn sample(&mut self, now_ns: u64, out: &mut SampleSink) -> Result<(), SamplerError> {
        let mut rank_memory: HashMap<Rank, u64> = HashMap::new();
        let mut late_notes = Vec::new();
        for gpu in &mut self.gpus {
            sample_probes(gpu, now_ns, out)?;
            late_notes.extend(sample_gpm(self.nvml, gpu, now_ns, out));
            late_notes.extend(sample_link_fields(self.nvml, gpu, now_ns, out));
            sample_xid(gpu, now_ns, out);
            if gpu.lists_processes {
                add_rank_memory(&gpu.device, &self.ranks, &mut rank_memory);
            }
        }
        for note in late_notes {
            self.note(note);
        }
        for (rank, bytes) in rank_memory {
            let device = format!("rank{}", rank.0);
            out.push(GPU_PROCESS_MEMORY_USED, &device, now_ns, bytes as f64);
        }
        Ok(())
    }
}

/// The plain queries of one GPU. A failed query is left out of this sample; a lost GPU is an error.
fn sample_probes(gpu: &Gpu, now_ns: u64, out: &mut SampleSink) -> Result<(), SamplerError> {
    for probe in &gpu.probes {
        match (probe.read)(&gpu.device) {
            Ok(values) => {
                for (counter, value) in probe.counters.iter().zip(values) {
                    out.push(*counter, &gpu.name, now_ns, value);
                }
            }
            Err(NvmlError::GpuLost) => {
                return Err(SamplerError::Source {
                    source_name: "nvml",
                    message: format!("gpu{} fell off the bus", gpu.index),
                });
            }
            Err(_) => {}
        }
    }
    Ok(())
}

/// NVLink per-link rates since the last field-value reading. A GPU that stops answering has
/// its links dropped for good; the note says why.
fn sample_link_fields(
    nvml: &'static Nvml,
    gpu: &mut Gpu,
    now_ns: u64,
    out: &mut SampleSink,
) -> Option<String> {
    let fields = gpu.link_fields.as_mut()?;
    let reading = match nvlink_fields::read_links(nvml, &gpu.device, &fields.links) {
        Ok(reading) => reading,
        Err(e) => {
            gpu.link_fields = None;
            return Some(unsupported(&gpu.name, &[GPU_NVLINK_TX, GPU_NVLINK_RX], &e));
        }
    };
    if let Some((last_ns, last)) = &fields.last {
        let rates = nvlink_fields::link_rates(last, &reading, now_ns.saturating_sub(*last_ns));
        for (link, (tx, rx)) in fields.links.iter().zip(rates) {
            let device = format!("{}.nvlink{link}", gpu.name);
            for (counter, rate) in [(GPU_NVLINK_TX, tx), (GPU_NVLINK_RX, rx)] {
                if let Some(rate) = rate {
                    out.push(counter, &device, now_ns, rate);
                }
            }
        }
    }
    fields.last = Some((now_ns, reading));
    None
}

/// Whether a GPM sample is due: none is kept yet, or the kept one is old enough to measure from.
pub fn gpm_due(kept_ns: Option<u64>, now_ns: u64) -> bool {
    kept_ns.is_none_or(|kept| now_ns.saturating_sub(kept) >= GPM_MIN_GAP_NS)
}

/// GPM metrics since the kept sample, once it is at least `GPM_MIN_GAP_NS` old. A metric the GPU
/// refuses, or in a unit this does not know, is dropped for good; the notes say which.
fn sample_gpm(
    nvml: &'static Nvml,
    gpu: &mut Gpu,
    now_ns: u64,
    out: &mut SampleSink,
) -> Vec<String> {
    let Some(gpm) = gpu.gpm.as_mut() else {
        return Vec::new();
    };
    if !gpm_due(gpm.previous.as_ref().map(|(kept_ns, _)| *kept_ns), now_ns) {
        return Vec::new();
    }
    let Ok(current) = gpu.device.gpm_sample() else {
        return Vec::new();
    };
    let Some((_, before)) = gpm.previous.replace((now_ns, current)) else {
        return Vec::new();
    };
    let Some((_, after)) = gpm.previous.as_ref() else {
        return Vec::new();
    };
    let ids: Vec<GpmMetricId> = gpm.reads.iter().map(|r| r.metric).collect();
    let Ok(results) = gpm_metrics_get(nvml, &before, after, &ids) else {
        return Vec::new();
    };
    let mut notes = Vec::new();
    let mut kept = Vec::with_capacity(gpm.reads.len());
    for (read, result) in std::mem::take(&mut gpm.reads).into_iter().zip(results) {
        let value = result
            .map_err(|e| e.to_string())
            .and_then(|r| gpm_value(read.counter, r.value, &r.metric_info.unit));
        match value {
            Ok(value) => {
                out.push(read.counter, &read.device, now_ns, value);
                kept.push(read);
            }
            Err(why) => notes.push(format!(
                "{}: {} not read (GPM: {why})",
                read.device, read.counter.name
            )),
        }
    }
    gpm.reads = kept;
    notes
}

/// A GPM metric's value in the counter's unit: rates become bytes per second.
fn gpm_value(counter: CounterSpec, value: f64, unit: &str) -> Result<f64, String> {
    if counter.unit != Unit::BytesPerSecond {
        return Ok(value);
    }
    bytes_per_second(value, unit).ok_or_else(|| format!("unit '{unit}' is unknown"))
}

/// Counts the XID events that arrived since the last sample, without waiting.
fn sample_xid(gpu: &mut Gpu, now_ns: u64, out: &mut SampleSink) {
    let Some((set, seen)) = gpu.xid.as_mut() else {
        return;
    };
    for _ in 0..MAX_XID_EVENTS_PER_SAMPLE {
        // A 0 ms wait answers Timeout at once when no event is pending.
        match set.wait(0) {
            Ok(_) => *seen += 1,
            Err(_) => break,
        }
    }
    out.push(GPU_XID_EVENTS, &gpu.name, now_ns, *seen as f64);
}

/// Adds the GPU memory of each rank process on this GPU. NVML reports host PIDs, so ranks in
/// another PID namespace than the driver's find no match and stay absent.
fn add_rank_memory(
    device: &Device<'static>,
    ranks: &[(Rank, u32)],
    memory: &mut HashMap<Rank, u64>,
) {
    let Ok(processes) = device.running_compute_processes() else {
        return;
    };
    for process in processes {
        let UsedGpuMemory::Used(bytes) = process.used_gpu_memory else {
            continue;
        };
        for (rank, _) in ranks.iter().filter(|(_, pid)| *pid == process.pid) {
            *memory.entry(*rank).or_insert(0) += bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinch_traces::{NodeId, Record};
    use std::time::Duration;

    #[test]
    fn units_convert_to_si() {
        assert_eq!(mhz_to_hz(1980), 1.98e9);
        assert_eq!(kib_to_bytes(2), 2048.0);
        assert_eq!(bytes_per_second(2.0, "MiB/sec"), Some(2_097_152.0));
        assert_eq!(bytes_per_second(2.0, ""), Some(2_097_152.0));
        assert_eq!(bytes_per_second(3.0, "B/s"), Some(3.0));
        assert_eq!(bytes_per_second(1.0, "GB/sec"), Some(1e9));
        assert_eq!(bytes_per_second(1.0, "%"), None);
    }

    #[test]
    fn gpm_waits_100_ms_between_samples() {
        assert!(gpm_due(None, 5));
        assert!(!gpm_due(Some(1_000_000_000), 1_099_999_999));
        assert!(gpm_due(Some(1_000_000_000), 1_100_000_000));
        // A clock that stepped back is not an interval.
        assert!(!gpm_due(Some(2_000_000_000), 1_000_000_000));
    }

    #[test]
    fn gpm_reads_put_each_active_link_on_its_own_device() {
        let reads = gpm_reads("gpu2", &[0, 17]);
        let on = |device: &str| reads.iter().filter(|r| r.device == device).count();
        assert_eq!(on("gpu2"), 6);
        let link17: Vec<_> = reads
            .iter()
            .filter(|r| r.device == "gpu2.nvlink17")
            .collect();
        assert_eq!(link17.len(), 2);
        assert_eq!(link17[0].metric, GpmMetricId::NvlinkL17RxPerSec);
        assert_eq!(link17[0].counter, GPU_NVLINK_RX);
        assert_eq!(link17[1].metric, GpmMetricId::NvlinkL17TxPerSec);
        assert_eq!(on("gpu2.nvlink0"), 2);
    }

    #[test]
    fn gpm_rates_become_bytes_and_unknown_units_are_refused() {
        assert_eq!(gpm_value(GPU_SM_ACTIVITY, 42.0, "%"), Ok(42.0));
        assert_eq!(gpm_value(GPU_PCIE_TX, 1.0, "MiB/sec"), Ok(1_048_576.0));
        let refused = gpm_value(GPU_NVLINK_RX, 1.0, "furlongs").unwrap_err();
        assert_eq!(refused, "unit 'furlongs' is unknown");
    }

    #[test]
    fn unavailable_reason_names_the_driver_or_the_library() {
        let error = NvmlError::Uninitialized;
        let no_driver = unavailable_reason(&error, false);
        assert_eq!(
            no_driver,
            "no NVIDIA driver on this host (/proc/driver/nvidia is absent)"
        );
        let no_library = unavailable_reason(&error, true);
        assert!(
            no_library.starts_with("NVML could not be loaded: "),
            "{no_library}"
        );
    }

    /// Runs everywhere: without a driver `open` says which part is missing; with one it opens
    /// and names what it reads.
    #[test]
    fn nvml_open_says_why_or_reads_something() {
        match NvmlSampler::open(&[]) {
            Err(reason) => {
                println!("nvml unavailable: {reason}");
                let names_cause = reason.contains("no NVIDIA driver")
                    || reason.starts_with("NVML could not be loaded")
                    || reason.contains("no GPU");
                assert!(names_cause, "{reason}");
                if !Path::new(DRIVER_DIR).exists() {
                    assert!(reason.contains(DRIVER_DIR), "{reason}");
                }
            }
            Ok(sampler) => assert!(!sampler.read_counters().is_empty()),
        }
    }

    /// Decodes records into (device, counter, unit, value) rows.
    fn rows(records: &[Record]) -> Vec<(String, String, Unit, f64)> {
        let mut counters = HashMap::new();
        let mut devices = HashMap::new();
        let mut rows = Vec::new();
        for record in records {
            match record {
                Record::Counter(def) => {
                    counters.insert(def.id, (def.name.clone(), def.unit));
                }
                Record::Device(def) => {
                    devices.insert(def.id, def.name.clone());
                }
                Record::Samples(samples) => {
                    for s in samples {
                        let (name, unit) = counters[&s.counter].clone();
                        rows.push((devices[&s.device].clone(), name, unit, s.value));
                    }
                }
                _ => {}
            }
        }
        rows
    }

    /// Needs a GPU: run as `cargo test -p pinch-collector nvml -- --nocapture`. Skips, saying why,
    /// where NVML is absent.
    #[test]
    fn nvml_gpu_samples_twice_with_sane_values() {
        let me = (Rank(0), std::process::id());
        let mut sampler = match NvmlSampler::open(&[me]) {
            Ok(sampler) => sampler,
            Err(reason) => {
                println!("skipping the GPU test: {reason}");
                return;
            }
        };
        println!("reads: {:?}", sampler.read_counters());
        for note in sampler.notes() {
            println!("note: {note}");
        }
        let mut sink = SampleSink::new(NodeId(0));
        let start = std::time::Instant::now();
        sampler.sample(1_000_000_000, &mut sink).unwrap();
        println!("first sample took {:?}", start.elapsed());
        std::thread::sleep(Duration::from_millis(250));
        sampler.sample(1_250_000_000, &mut sink).unwrap();
        let rows = rows(&sink.take_records());
        for (device, counter, unit, value) in &rows {
            println!("{device:>14} {counter:<32} {value:>16.3} {unit}");
        }
        let value = |device: &str, counter: &str| {
            rows.iter()
                .rev()
                .find(|r| r.0 == device && r.1 == counter)
                .map(|r| r.3)
        };
        let reads = sampler.read_counters();
        for gpu in &sampler.gpus {
            let name = gpu.name.as_str();
            let utilization = value(name, "gpu.utilization").unwrap();
            assert!((0.0..=100.0).contains(&utilization), "{utilization}");
            let used = value(name, "gpu.memory_used").unwrap();
            let total = value(name, "gpu.memory_total").unwrap();
            assert!(total > 1e9 && used <= total, "{used} of {total}");
            let watts = value(name, "gpu.power").unwrap();
            assert!(watts > 1.0 && watts < 2000.0, "{watts} W");
            if reads.contains(&"gpu.sm_activity".to_string()) {
                let sm = value(name, "gpu.sm_activity").unwrap();
                assert!((0.0..=100.0).contains(&sm), "{sm}");
            }
        }
        for note in sampler.notes() {
            println!("note after sampling: {note}");
        }
    }
}
