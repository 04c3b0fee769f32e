//! The procfs sampler: per-core CPU time shares (user, system, iowait, steal), host memory
//! (available, page cache), the rank processes' memory and CPU, and network interface rates
//! (bytes, packets, drops, errors), read from /proc through the `procfs` crate.
//!
//! Cores are named by their /proc/stat label ("cpu3"), not their position: /proc/stat lists only
//! online cores, so with a core offline the position and the core number differ.
//!
//! Rates come from the difference of two readings, so the first reading of anything only primes
//! it: a rate is absent until there is an interval to measure, never a fake 0. The math is kept
//! apart from the I/O (`core_shares`, `rate_per_second`, `process_cpu_percent`) so it can be
//! tested on hand-made snapshots.

use crate::exit_watch::ExitWatch;
use crate::reread::RereadFile;
use crate::sampler::{CounterSpec, SampleSink, Sampler, SamplerError};
use pinch_traces::{Rank, Unit};
use procfs::process::{Stat, StatM};
use procfs::{FromBufReadSI, FromRead, KernelStats, ProcError};
use std::collections::HashMap;
use std::io;

pub const CPU_UTILIZATION: CounterSpec = CounterSpec::new("cpu.utilization", Unit::Percent);
pub const CPU_USER: CounterSpec = CounterSpec::new("cpu.user", Unit::Percent);
pub const CPU_SYSTEM: CounterSpec = CounterSpec::new("cpu.system", Unit::Percent);
pub const CPU_IOWAIT: CounterSpec = CounterSpec::new("cpu.iowait", Unit::Percent);
pub const CPU_STEAL: CounterSpec = CounterSpec::new("cpu.steal", Unit::Percent);
pub const MEM_AVAILABLE: CounterSpec = CounterSpec::new("mem.available", Unit::Bytes);
/// The page cache ("Cached" in /proc/meminfo).
pub const MEM_PAGE_CACHE: CounterSpec = CounterSpec::new("mem.page_cache", Unit::Bytes);
pub const PROCESS_RSS: CounterSpec = CounterSpec::new("process.rss", Unit::Bytes);
pub const PROCESS_CPU_TIME: CounterSpec = CounterSpec::new("process.cpu_time", Unit::Nanoseconds);
pub const PROCESS_CPU_UTILIZATION: CounterSpec =
    CounterSpec::new("process.cpu_utilization", Unit::Percent);
pub const NET_RX_BYTES: CounterSpec = CounterSpec::new("net.rx_bytes", Unit::BytesPerSecond);
pub const NET_TX_BYTES: CounterSpec = CounterSpec::new("net.tx_bytes", Unit::BytesPerSecond);
pub const NET_RX_PACKETS: CounterSpec = CounterSpec::new("net.rx_packets", Unit::PerSecond);
pub const NET_TX_PACKETS: CounterSpec = CounterSpec::new("net.tx_packets", Unit::PerSecond);
pub const NET_RX_DROPS: CounterSpec = CounterSpec::new("net.rx_drops", Unit::PerSecond);
pub const NET_TX_DROPS: CounterSpec = CounterSpec::new("net.tx_drops", Unit::PerSecond);
pub const NET_RX_ERRORS: CounterSpec = CounterSpec::new("net.rx_errors", Unit::PerSecond);
pub const NET_TX_ERRORS: CounterSpec = CounterSpec::new("net.tx_errors", Unit::PerSecond);

/// The interface counters, in `NetCounts` order.
const NET_COUNTERS: [CounterSpec; 8] = [
    NET_RX_BYTES,
    NET_TX_BYTES,
    NET_RX_PACKETS,
    NET_TX_PACKETS,
    NET_RX_DROPS,
    NET_TX_DROPS,
    NET_RX_ERRORS,
    NET_TX_ERRORS,
];

/// Every counter `ProcSampler` emits.
pub const PROC_COUNTERS: &[CounterSpec] = &[
    CPU_UTILIZATION,
    CPU_USER,
    CPU_SYSTEM,
    CPU_IOWAIT,
    CPU_STEAL,
    MEM_AVAILABLE,
    MEM_PAGE_CACHE,
    PROCESS_RSS,
    PROCESS_CPU_TIME,
    PROCESS_CPU_UTILIZATION,
    NET_RX_BYTES,
    NET_TX_BYTES,
    NET_RX_PACKETS,
    NET_TX_PACKETS,
    NET_RX_DROPS,
    NET_TX_DROPS,
    NET_RX_ERRORS,
    NET_TX_ERRORS,
];

/// Rates counted in clock ticks (10 ms each on most kernels) are measured over at least this
/// long, so one tick more or less does not swing them wildly at high sample rates.
const MIN_TICK_INTERVAL_NS: u64 = 20_000_000;

/// The clock ticks of one core from /proc/stat, grouped as the shares pinch reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTicks {
    /// user + nice (guest time is already inside these).
    pub user: u64,
    pub system: u64,
    pub idle: u64,
    /// `None` where the kernel does not report it.
    pub iowait: Option<u64>,
    /// irq + softirq.
    pub interrupts: u64,
    /// `None` where the kernel does not report it.
    pub steal: Option<u64>,
}

impl From<&procfs::CpuTime> for CpuTicks {
    fn from(time: &procfs::CpuTime) -> CpuTicks {
        CpuTicks {
            user: time.user + time.nice,
            system: time.system,
            idle: time.idle,
            iowait: time.iowait,
            interrupts: time.irq.unwrap_or(0) + time.softirq.unwrap_or(0),
            steal: time.steal,
        }
    }
}

/// Shares of one core's time over an interval, in percent.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CoreShares {
    /// (total − idle − iowait) / total.
    pub utilization: f64,
    pub user: f64,
    pub system: f64,
    /// `None` where the kernel does not report the field: absent, not zero.
    pub iowait: Option<f64>,
    pub steal: Option<f64>,
}

/// The shares of a core's time between two readings; `None` when no tick passed between them.
/// A field that went backwards (iowait may) counts as 0 ticks.
pub fn core_shares(before: &CpuTicks, after: &CpuTicks) -> Option<CoreShares> {
    let user = after.user.saturating_sub(before.user);
    let system = after.system.saturating_sub(before.system);
    let idle = after.idle.saturating_sub(before.idle);
    let delta = |a: Option<u64>, b: Option<u64>| Some(a?.saturating_sub(b?));
    let iowait = delta(after.iowait, before.iowait);
    let interrupts = after.interrupts.saturating_sub(before.interrupts);
    let steal = delta(after.steal, before.steal);
    // A field the kernel does not report adds no ticks to the total.
    let (iowait_ticks, steal_ticks) = (iowait.unwrap_or(0), steal.unwrap_or(0));
    let total = user + system + idle + iowait_ticks + interrupts + steal_ticks;
    if total == 0 {
        return None;
    }
    let percent = |ticks: u64| 100.0 * ticks as f64 / total as f64;
    Some(CoreShares {
        utilization: percent(total - idle - iowait_ticks),
        user: percent(user),
        system: percent(system),
        iowait: iowait.map(percent),
        steal: steal.map(percent),
    })
}

/// The rate of a cumulative counter per second; `None` without an interval or when the counter
/// went backwards (an interface that was reset).
pub fn rate_per_second(before: u64, after: u64, elapsed_ns: u64) -> Option<f64> {
    let delta = after.checked_sub(before)?;
    (elapsed_ns > 0).then(|| delta as f64 * 1e9 / elapsed_ns as f64)
}

/// The CPU a process used over an interval, in percent of one core.
pub fn process_cpu_percent(
    before_ticks: u64,
    after_ticks: u64,
    ticks_per_second: u64,
    elapsed_ns: u64,
) -> Option<f64> {
    let ticks_per_ns = rate_per_second(before_ticks, after_ticks, elapsed_ns)?;
    (ticks_per_second > 0).then(|| 100.0 * ticks_per_ns / ticks_per_second as f64)
}

/// Clock ticks as nanoseconds.
pub fn ticks_to_ns(ticks: u64, ticks_per_second: u64) -> Option<u64> {
    let ns = u128::from(ticks) * 1_000_000_000 / u128::from(ticks_per_second.max(1));
    u64::try_from(ns).ok().filter(|_| ticks_per_second > 0)
}

/// A reading kept to measure the next interval against.
#[derive(Clone, Debug)]
struct Baseline<T> {
    time_ns: u64,
    value: T,
}

/// Measures `value` against the baseline in `slot` and makes it the new baseline. The first
/// reading only primes; a reading less than `min_interval_ns` after the baseline is skipped and
/// the baseline kept, so the interval grows until it is long enough.
fn advance<T, R>(
    slot: &mut Option<Baseline<T>>,
    now_ns: u64,
    value: T,
    min_interval_ns: u64,
    measure: impl FnOnce(&T, &T, u64) -> Option<R>,
) -> Option<R> {
    let mut result = None;
    if let Some(base) = slot {
        let elapsed_ns = now_ns.saturating_sub(base.time_ns);
        if elapsed_ns < min_interval_ns {
            return None;
        }
        result = measure(&base.value, &value, elapsed_ns);
    }
    *slot = Some(Baseline {
        time_ns: now_ns,
        value,
    });
    result
}

/// Cumulative counts of one network interface, in `NET_COUNTERS` order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct NetCounts([u64; 8]);

/// The interfaces of a /proc/net/dev text with their counts, in the file's order; a line that
/// does not parse is skipped. Parsed here rather than by `procfs`, whose map of owned names
/// costs more than the kernel's own work at 1 kHz.
fn net_dev_counts(text: &str) -> impl Iterator<Item = (&str, NetCounts)> {
    text.lines().skip(2).filter_map(|line| {
        let (name, columns) = line.split_once(':')?;
        let mut values = [0u64; 16];
        let mut columns = columns.split_ascii_whitespace();
        for value in &mut values {
            *value = columns.next()?.parse().ok()?;
        }
        // Receive: bytes packets errs drop ...; transmit from column 8: bytes packets errs drop.
        let [
            rx_bytes,
            rx_packets,
            rx_errs,
            rx_drop,
            _,
            _,
            _,
            _,
            tx_bytes,
            tx_packets,
            tx_errs,
            tx_drop,
            ..,
        ] = values;
        let counts = NetCounts([
            rx_bytes, tx_bytes, rx_packets, tx_packets, rx_drop, tx_drop, rx_errs, tx_errs,
        ]);
        Some((name.trim(), counts))
    })
}

#[derive(Debug)]
struct RankProcess {
    pid: u32,
    device: String,
    exit_watch: ExitWatch,
    /// `/proc/<pid>/statm` (memory, every sample) and `/proc/<pid>/stat` (CPU time, counted in
    /// clock ticks, so read only every `MIN_TICK_INTERVAL_NS`); `None` once the process has
    /// exited.
    files: Option<RankFiles>,
    /// When `stat` was last read.
    stat_read_ns: Option<u64>,
    cpu: Option<Baseline<u64>>,
}

#[derive(Debug)]
struct RankFiles {
    statm: RereadFile,
    stat: RereadFile,
}

impl RankFiles {
    fn open(pid: u32) -> Option<RankFiles> {
        Some(RankFiles {
            statm: RereadFile::open(format!("/proc/{pid}/statm")).ok()?,
            stat: RereadFile::open(format!("/proc/{pid}/stat")).ok()?,
        })
    }
}

/// Samples /proc for one node: its cores, memory, network interfaces and rank processes.
///
/// Each file is opened once and read again on every sample ([`RereadFile`]). /proc/stat counts
/// in clock ticks, so it is read only once `MIN_TICK_INTERVAL_NS` has passed since the last
/// reading: at 1 kHz the other readings could only be skipped.
#[derive(Debug)]
pub struct ProcSampler {
    ranks: Vec<RankProcess>,
    ticks_per_second: u64,
    page_size_bytes: u64,
    stat: RereadFile,
    meminfo: RereadFile,
    net_dev: RereadFile,
    /// When /proc/stat was last read.
    cores_read_ns: Option<u64>,
    /// Keyed by the core's /proc/stat label.
    cores: HashMap<String, Option<Baseline<CpuTicks>>>,
    interfaces: Vec<(String, Option<Baseline<NetCounts>>)>,
}

impl ProcSampler {
    /// A sampler for this host and the given rank processes (rank, pid); fails when a host-wide
    /// file cannot be opened or parsed. A rank that has already exited is left out.
    pub fn open(ranks: &[(Rank, u32)]) -> Result<ProcSampler, SamplerError> {
        let ranks = ranks
            .iter()
            .map(|&(rank, pid)| RankProcess {
                pid,
                device: format!("rank{}", rank.0),
                exit_watch: ExitWatch::new(pid),
                files: RankFiles::open(pid),
                stat_read_ns: None,
                cpu: None,
            })
            .collect();
        let mut sampler = ProcSampler {
            ranks,
            ticks_per_second: procfs::ticks_per_second(),
            page_size_bytes: procfs::page_size(),
            stat: open_host_file("/proc/stat")?,
            meminfo: open_host_file("/proc/meminfo")?,
            net_dev: open_host_file("/proc/net/dev")?,
            cores_read_ns: None,
            cores: HashMap::new(),
            interfaces: Vec::new(),
        };
        sampler.read_cores()?;
        sampler
            .meminfo
            .read_text()
            .map_err(unreadable("/proc/meminfo"))?;
        sampler
            .net_dev
            .read_text()
            .map_err(unreadable("/proc/net/dev"))?;
        Ok(sampler)
    }

    fn sample_cores(&mut self, now_ns: u64, out: &mut SampleSink) -> Result<(), SamplerError> {
        let due = self
            .cores_read_ns
            .is_none_or(|t| now_ns.saturating_sub(t) >= MIN_TICK_INTERVAL_NS);
        if !due {
            return Ok(());
        }
        self.cores_read_ns = Some(now_ns);
        for (core, ticks) in self.read_cores()? {
            let slot = self.cores.entry(core.clone()).or_default();
            let shares = advance(slot, now_ns, ticks, MIN_TICK_INTERVAL_NS, |b, a, _| {
                core_shares(b, a)
            });
            if let Some(shares) = shares {
                push_core(out, &core, now_ns, &shares);
            }
        }
        Ok(())
    }

    fn sample_memory(&mut self, now_ns: u64, out: &mut SampleSink) -> Result<(), SamplerError> {
        let text = self
            .meminfo
            .read_text()
            .map_err(unreadable("/proc/meminfo"))?;
        for (counter, bytes) in memory_readings(text) {
            if let Some(bytes) = bytes {
                out.push(counter, "host", now_ns, bytes as f64);
            }
        }
        Ok(())
    }

    fn sample_ranks(&mut self, now_ns: u64, out: &mut SampleSink) -> Result<(), SamplerError> {
        let (page_size_bytes, ticks_per_second) = (self.page_size_bytes, self.ticks_per_second);
        for rank in &mut self.ranks {
            let Some(reading) = read_rank(rank, now_ns)? else {
                continue;
            };
            let device = rank.device.as_str();
            out.push(
                PROCESS_RSS,
                device,
                now_ns,
                (reading.rss_pages * page_size_bytes) as f64,
            );
            let Some(ticks) = reading.cpu_ticks else {
                continue;
            };
            if let Some(ns) = ticks_to_ns(ticks, ticks_per_second) {
                out.push(PROCESS_CPU_TIME, device, now_ns, ns as f64);
            }
            let percent = advance(
                &mut rank.cpu,
                now_ns,
                ticks,
                MIN_TICK_INTERVAL_NS,
                |b, a, dt| process_cpu_percent(*b, *a, ticks_per_second, dt),
            );
            if let Some(percent) = percent {
                out.push(PROCESS_CPU_UTILIZATION, device, now_ns, percent);
            }
        }
        Ok(())
    }

    fn sample_network(&mut self, now_ns: u64, out: &mut SampleSink) -> Result<(), SamplerError> {
        let text = self
            .net_dev
            .read_text()
            .map_err(unreadable("/proc/net/dev"))?;
        for (name, counts) in net_dev_counts(text) {
            let slot = interface_slot(&mut self.interfaces, name);
            if let Some(rates) = advance(slot, now_ns, counts, 0, |b, a, dt| {
                Some(net_rates(b, a, dt))
            }) {
                push_net(out, name, now_ns, rates);
            }
        }
        Ok(())
    }

    /// Every online core's ticks from /proc/stat, with its label.
    fn read_cores(&mut self) -> Result<Vec<(String, CpuTicks)>, SamplerError> {
        let text = self.stat.read_text().map_err(unreadable("/proc/stat"))?;
        labeled_cores(text, procfs::current_system_info()).map_err(proc_error("/proc/stat"))
    }
}

impl Sampler for ProcSampler {
    fn source(&self) -> &'static str {
        "procfs"
    }

    fn counters(&self) -> &'static [CounterSpec] {
        PROC_COUNTERS
    }

    /// Reads every part even when one fails, and returns the first failure.
    fn sample(&mut self, now_ns: u64, out: &mut SampleSink) -> Result<(), SamplerError> {
        let results = [
            self.sample_cores(now_ns, out),
            self.sample_memory(now_ns, out),
            self.sample_ranks(now_ns, out),
            self.sample_network(now_ns, out),
        ];
        results.into_iter().collect()
    }
}

fn proc_error(path: &'static str) -> impl FnOnce(ProcError) -> SamplerError {
    move |source| SamplerError::Proc { path, source }
}

/// The baseline of an interface, made on first sight.
fn interface_slot<'a>(
    interfaces: &'a mut Vec<(String, Option<Baseline<NetCounts>>)>,
    name: &str,
) -> &'a mut Option<Baseline<NetCounts>> {
    let index = match interfaces.iter().position(|(n, _)| n == name) {
        Some(i) => i,
        None => {
            interfaces.push((name.to_string(), None));
            interfaces.len() - 1
        }
    };
    &mut interfaces[index].1
}

fn open_host_file(path: &'static str) -> Result<RereadFile, SamplerError> {
    RereadFile::open(path).map_err(unreadable(path))
}

fn unreadable(path: &'static str) -> impl FnOnce(io::Error) -> SamplerError {
    move |e| SamplerError::Source {
        source_name: "procfs",
        message: format!("cannot read '{path}': {e}"),
    }
}

/// One reading of a rank process: its resident pages, and its CPU ticks (user + system) when
/// they were due.
struct RankReading {
    rss_pages: u64,
    cpu_ticks: Option<u64>,
}

/// Reads a live rank process; `None` once it has exited (gone, or a zombie not yet reaped),
/// after which its files are closed and it is read no more.
fn read_rank(rank: &mut RankProcess, now_ns: u64) -> Result<Option<RankReading>, SamplerError> {
    if rank.files.is_some() && rank.exit_watch.has_exited() {
        rank.files = None;
    }
    let Some(files) = rank.files.as_mut() else {
        return Ok(None);
    };
    let pid = rank.pid;
    let statm = parse_rank_file::<StatM>(&mut files.statm);
    let due = rank
        .stat_read_ns
        .is_none_or(|t| now_ns.saturating_sub(t) >= MIN_TICK_INTERVAL_NS);
    let stat = due.then(|| parse_rank_file::<Stat>(&mut files.stat));
    let reading = statm.and_then(|statm| {
        let cpu_ticks = stat.transpose()?.map(|stat| stat.utime + stat.stime);
        Ok(RankReading {
            rss_pages: statm.resident,
            cpu_ticks,
        })
    });
    match reading {
        Ok(reading) => {
            if due {
                rank.stat_read_ns = Some(now_ns);
            }
            Ok(Some(reading))
        }
        // The process exited between the check and the read.
        Err(ProcError::NotFound(_) | ProcError::Incomplete(_)) => {
            rank.files = None;
            Ok(None)
        }
        Err(source) => Err(SamplerError::Process { pid, source }),
    }
}

/// Reads and parses one of a rank's /proc files; a process that has been reaped answers ESRCH
/// on its open file, which is `NotFound` here.
fn parse_rank_file<T: FromRead>(file: &mut RereadFile) -> Result<T, ProcError> {
    match file.read() {
        Ok(bytes) => T::from_read(bytes),
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Err(ProcError::NotFound(None)),
        Err(e) => Err(ProcError::Io(e, Some(file.path().to_path_buf()))),
    }
}

fn push_core(out: &mut SampleSink, core: &str, now_ns: u64, shares: &CoreShares) {
    out.push(CPU_UTILIZATION, core, now_ns, shares.utilization);
    out.push(CPU_USER, core, now_ns, shares.user);
    out.push(CPU_SYSTEM, core, now_ns, shares.system);
    if let Some(iowait) = shares.iowait {
        out.push(CPU_IOWAIT, core, now_ns, iowait);
    }
    if let Some(steal) = shares.steal {
        out.push(CPU_STEAL, core, now_ns, steal);
    }
}

/// Per-second rates of one interface, in `NET_COUNTERS` order; each is absent if its counter
/// went backwards.
fn net_rates(before: &NetCounts, after: &NetCounts, elapsed_ns: u64) -> [Option<f64>; 8] {
    std::array::from_fn(|i| rate_per_second(before.0[i], after.0[i], elapsed_ns))
}

fn push_net(out: &mut SampleSink, interface: &str, now_ns: u64, rates: [Option<f64>; 8]) {
    for (counter, value) in NET_COUNTERS.into_iter().zip(rates) {
        if let Some(value) = value {
            out.push(counter, interface, now_ns, value);
        }
    }
}

/// The host memory readings of a /proc/meminfo text, in bytes; `None` where the kernel does not
/// report one.
fn memory_readings(meminfo: &str) -> [(CounterSpec, Option<u64>); 2] {
    [
        (MEM_AVAILABLE, meminfo_bytes(meminfo, "MemAvailable")),
        (MEM_PAGE_CACHE, meminfo_bytes(meminfo, "Cached")),
    ]
}

/// One /proc/meminfo field ("Cached:     400 kB") in bytes. Read here rather than through
/// `procfs`, which parses every field into a map on each call.
fn meminfo_bytes(meminfo: &str, field: &str) -> Option<u64> {
    meminfo.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let mut words = rest.split_ascii_whitespace();
        let value: u64 = words.next()?.parse().ok()?;
        match words.next() {
            Some("kB") => value.checked_mul(1024),
            None => Some(value),
            Some(_) => None,
        }
    })
}

/// The per-core lines of a /proc/stat text as (label, ticks): "cpu3" stays "cpu3" whatever its
/// position. The labels are taken from the same lines, in the same order, as `KernelStats` parses.
pub fn labeled_cores(
    text: &str,
    system: &procfs::SystemInfo,
) -> Result<Vec<(String, CpuTicks)>, ProcError> {
    let stats = KernelStats::from_buf_read(text.as_bytes(), system)?;
    let labels = text
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|label| label.starts_with("cpu") && *label != "cpu");
    Ok(labels
        .zip(&stats.cpu_time)
        .map(|(label, time)| (label.to_string(), CpuTicks::from(time)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::testkit::Names;
    use pinch_traces::{NodeId, monotonic_now_ns};
    use procfs::{ExplicitSystemInfo, FromBufReadSI};

    const SYSTEM: ExplicitSystemInfo = ExplicitSystemInfo {
        boot_time_secs: 0,
        ticks_per_second: 100,
        page_size: 4096,
        is_little_endian: true,
    };

    /// Two /proc/stat snapshots 1 s apart on a 2-core machine (fields: user nice system idle
    /// iowait irq softirq steal guest guest_nice). Over the interval cpu0 spent 50 ticks in
    /// user, 10 nice, 20 system, 10 idle, 5 iowait, 3 irq, 2 softirq, 0 steal (100 in all);
    /// cpu1 spent 10 user, 80 idle, 10 steal, and its iowait went back by 2 ticks.
    const BEFORE: &str = "cpu  2000 100 1000 50000 400 30 20 0 0 0
cpu0 1000 50 500 25000 200 15 10 0 0 0
cpu1 1000 50 500 25000 200 15 10 0 0 0
ctxt 1
btime 1
processes 1
";
    const AFTER: &str = "cpu  2060 110 1020 50090 403 33 22 10 0 0
cpu0 1050 60 520 25010 205 18 12 0 0 0
cpu1 1010 50 500 25080 198 15 10 10 0 0
ctxt 2
btime 1
processes 2
";

    fn cores(text: &str) -> Vec<CpuTicks> {
        let stats = KernelStats::from_buf_read(text.as_bytes(), &SYSTEM).unwrap();
        stats.cpu_time.iter().map(CpuTicks::from).collect()
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn fields_the_kernel_does_not_report_stay_absent() {
        let at = |busy, idle| CpuTicks {
            user: busy,
            system: 0,
            idle,
            iowait: None,
            interrupts: 0,
            steal: None,
        };
        let shares = core_shares(&at(0, 0), &at(30, 70)).unwrap();
        assert_eq!(
            (shares.utilization, shares.iowait, shares.steal),
            (30.0, None, None)
        );
    }

    #[test]
    fn core_shares_from_two_proc_stat_snapshots() {
        let (before, after) = (cores(BEFORE), cores(AFTER));
        assert_eq!(before.len(), 2);
        let cpu0 = core_shares(&before[0], &after[0]).unwrap();
        // busy = 100 − 10 idle − 5 iowait; user includes nice.
        assert!(close(cpu0.utilization, 85.0), "{cpu0:?}");
        assert!(
            close(cpu0.user, 60.0) && close(cpu0.system, 20.0),
            "{cpu0:?}"
        );
        assert!(
            cpu0.iowait == Some(5.0) && cpu0.steal == Some(0.0),
            "{cpu0:?}"
        );
        let cpu1 = core_shares(&before[1], &after[1]).unwrap();
        assert!(close(cpu1.utilization, 20.0), "{cpu1:?}");
        assert!(
            cpu1.steal == Some(10.0) && cpu1.iowait == Some(0.0),
            "{cpu1:?}"
        );
    }

    /// cpu1 is offline, so /proc/stat lists cpu0, cpu2 and cpu3 (an old kernel's four fields:
    /// no iowait, no steal).
    const OFFLINE_BEFORE: &str = "cpu  30 0 30 300
cpu0 10 0 10 100
cpu2 10 0 10 100
cpu3 10 0 10 100
ctxt 1
btime 1
processes 1
";
    const OFFLINE_AFTER: &str = "cpu  130 0 30 500
cpu0 10 0 10 200
cpu2 10 0 10 200
cpu3 110 0 10 100
ctxt 2
btime 1
processes 2
";

    #[test]
    fn cores_are_named_by_their_label_when_one_is_offline() {
        let before = labeled_cores(OFFLINE_BEFORE, &SYSTEM).unwrap();
        let after = labeled_cores(OFFLINE_AFTER, &SYSTEM).unwrap();
        let labels: Vec<&str> = after.iter().map(|(label, _)| label.as_str()).collect();
        assert_eq!(labels, ["cpu0", "cpu2", "cpu3"]);
        // The busy core is cpu3, the third line: not "cpu2".
        let shares = core_shares(&before[2].1, &after[2].1).unwrap();
        assert_eq!((after[2].0.as_str(), shares.utilization), ("cpu3", 100.0));
    }

    #[test]
    fn iowait_and_steal_a_kernel_does_not_report_are_not_emitted() {
        let before = labeled_cores(OFFLINE_BEFORE, &SYSTEM).unwrap();
        let after = labeled_cores(OFFLINE_AFTER, &SYSTEM).unwrap();
        let shares = core_shares(&before[0].1, &after[0].1).unwrap();
        let mut sink = SampleSink::new(NodeId(0));
        push_core(&mut sink, "cpu0", 1, &shares);
        let readings = Names::default().readings(&sink.take_records());
        let mut names: Vec<&str> = readings.keys().map(String::as_str).collect();
        names.sort();
        assert_eq!(names, ["cpu.system", "cpu.user", "cpu.utilization"]);
        assert_eq!(readings["cpu.utilization"], [("cpu0".to_string(), 0.0)]);
    }

    #[test]
    fn memory_available_and_page_cache_in_bytes() {
        let meminfo = "MemTotal: 1000 kB\nMemFree: 100 kB\nMemAvailable: 600 kB\n\
            Buffers: 10 kB\nCached: 400 kB\nSwapCached: 0 kB\nActive: 1 kB\nInactive: 1 kB\n\
            SwapTotal: 0 kB\nSwapFree: 0 kB\nDirty: 0 kB\nWriteback: 0 kB\nMapped: 0 kB\n\
            Slab: 0 kB\nCommitted_AS: 0 kB\nVmallocTotal: 0 kB\nVmallocUsed: 0 kB\n\
            VmallocChunk: 0 kB\n";
        assert_eq!(
            memory_readings(meminfo),
            [
                (MEM_AVAILABLE, Some(600 * 1024)),
                (MEM_PAGE_CACHE, Some(400 * 1024))
            ]
        );
        let old_kernel = meminfo.replace("MemAvailable: 600 kB\n", "");
        assert_eq!(memory_readings(&old_kernel)[0], (MEM_AVAILABLE, None));
        assert_eq!(meminfo_bytes("SwapCached: 7 kB\n", "Cached"), None);
        assert_eq!(
            meminfo_bytes("HugePages_Total: 3\n", "HugePages_Total"),
            Some(3)
        );
    }

    /// /proc/net/dev of one interface; each column holds a distinct value so a swapped column
    /// shows. The second snapshot is 2 s later.
    const NET_BEFORE: &str = "Inter-|   Receive |  Transmit
 face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed
  eth0: 1000 100 10 20 0 0 0 0 5000 500 30 40 0 0 0 0
";
    const NET_AFTER: &str = "Inter-|   Receive |  Transmit
 face |bytes packets errs drop fifo frame compressed multicast|bytes packets errs drop fifo colls carrier compressed
  eth0: 3000 300 12 26 0 0 0 0 9000 900 38 50 0 0 0 0
";

    fn eth0(text: &str) -> NetCounts {
        let mut interfaces = net_dev_counts(text);
        let (name, counts) = interfaces.next().unwrap();
        assert_eq!(name, "eth0");
        assert!(interfaces.next().is_none());
        counts
    }

    #[test]
    fn interface_bytes_packets_drops_and_errors_rates() {
        let rates = net_rates(&eth0(NET_BEFORE), &eth0(NET_AFTER), 2_000_000_000);
        let mut sink = SampleSink::new(NodeId(0));
        push_net(&mut sink, "eth0", 1, rates);
        let readings = Names::default().readings(&sink.take_records());
        let rate = |name: &str| readings[name][..].first().map(|(_, v)| *v);
        let expected = [
            ("net.rx_bytes", 1000.0),
            ("net.tx_bytes", 2000.0),
            ("net.rx_packets", 100.0),
            ("net.tx_packets", 200.0),
            ("net.rx_errors", 1.0),
            ("net.tx_errors", 4.0),
            ("net.rx_drops", 3.0),
            ("net.tx_drops", 5.0),
        ];
        for (name, value) in expected {
            assert_eq!(rate(name), Some(value), "{name}");
        }
        // A reset interface: every counter went backwards, so no rate at all.
        let reset = net_rates(&eth0(NET_AFTER), &eth0(NET_BEFORE), 2_000_000_000);
        assert_eq!(reset, [None; 8]);
    }

    #[test]
    fn no_tick_no_share() {
        let before = cores(BEFORE);
        assert_eq!(core_shares(&before[0], &before[0]), None);
    }

    #[test]
    fn rates_need_an_interval_and_a_counter_that_grew() {
        assert_eq!(rate_per_second(1_000, 3_000, 500_000_000), Some(4_000.0));
        assert_eq!(rate_per_second(1_000, 3_000, 0), None);
        assert_eq!(rate_per_second(3_000, 1_000, 1_000_000_000), None);
        // 25 ticks at 100 ticks/s over 0.5 s: half a core.
        assert_eq!(process_cpu_percent(100, 125, 100, 500_000_000), Some(50.0));
        assert_eq!(ticks_to_ns(250, 100), Some(2_500_000_000));
        assert_eq!(ticks_to_ns(250, 0), None);
    }

    #[test]
    fn first_reading_only_primes_and_short_intervals_keep_the_baseline() {
        let mut slot = None;
        let diff = |b: &u64, a: &u64, dt: u64| Some((a - b, dt));
        assert_eq!(advance(&mut slot, 100, 10, 50, diff), None);
        assert_eq!(advance(&mut slot, 120, 12, 50, diff), None);
        assert_eq!(advance(&mut slot, 160, 15, 50, diff), Some((5, 60)));
        assert_eq!(advance(&mut slot, 220, 21, 50, diff), Some((6, 60)));
    }

    /// Keeps this thread on a core for `ns`, so this process uses CPU between two samples.
    fn spin_for_ns(ns: u64) {
        let start = monotonic_now_ns();
        let mut x = 0u64;
        while monotonic_now_ns() - start < ns {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
    }

    #[test]
    fn sampling_this_machine_twice_gives_sane_counters() {
        let me = (Rank(0), std::process::id());
        let gone = (Rank(1), u32::MAX - 7);
        let mut sampler = ProcSampler::open(&[me, gone]).unwrap();
        let mut sink = SampleSink::new(NodeId(0));
        sampler.sample(monotonic_now_ns(), &mut sink).unwrap();
        let mut names = Names::default();
        let first = names.readings(&sink.take_records());
        assert!(
            !first.contains_key("cpu.utilization"),
            "the first sample only primes"
        );
        assert!(!first.contains_key("process.cpu_utilization"));
        spin_for_ns(50_000_000);
        sampler.sample(monotonic_now_ns(), &mut sink).unwrap();
        let second = names.readings(&sink.take_records());

        let cores = &second["cpu.utilization"];
        assert!(!cores.is_empty() && cores.iter().all(|(d, _)| d.starts_with("cpu")));
        for name in [
            "cpu.utilization",
            "cpu.user",
            "cpu.system",
            "cpu.iowait",
            "cpu.steal",
        ] {
            assert!(
                second[name].iter().all(|(_, v)| (0.0..=100.0).contains(v)),
                "{name}"
            );
        }
        let [(host, available)] = &second["mem.available"][..] else {
            panic!("{second:?}")
        };
        assert!(host == "host" && *available > 1e6, "{available}");
        let [(rank, rss)] = &second["process.rss"][..] else {
            panic!("{second:?}")
        };
        assert!(rank == "rank0" && *rss > 1e5, "{rss}");
        assert!(second["process.cpu_time"][0].1 > first["process.cpu_time"][0].1);
        let busy = second["process.cpu_utilization"][0].1;
        // The test binary runs other tests on its other threads, and /proc counts CPU time in
        // 10 ms ticks over this 50 ms interval: allow one core's worth of quantization.
        assert!(
            busy > 0.0 && busy <= 100.0 * (cores.len() + 1) as f64,
            "{busy}"
        );
        assert!(second.values().flatten().all(|(d, _)| d != "rank1"));
        for name in ["net.rx_bytes", "net.tx_drops", "net.rx_errors"] {
            assert!(
                second.contains_key(name),
                "every host has at least lo: {name}"
            );
        }
        let [(host, cache)] = &second["mem.page_cache"][..] else {
            panic!("{second:?}")
        };
        assert!(host == "host" && *cache > 0.0, "{cache}");
        let stat = std::fs::read_to_string("/proc/stat").unwrap();
        let labels = labeled_cores(&stat, procfs::current_system_info()).unwrap();
        let mut named: Vec<&str> = cores.iter().map(|(d, _)| d.as_str()).collect();
        named.sort();
        let mut listed: Vec<&str> = labels.iter().map(|(l, _)| l.as_str()).collect();
        listed.sort();
        assert_eq!(named, listed, "cores are named as /proc/stat labels them");
    }
}
