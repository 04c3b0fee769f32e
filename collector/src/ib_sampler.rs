//! The InfiniBand / RoCE sampler: every port's traffic, congestion and error counters, read from
//! sysfs (`/sys/class/infiniband/<dev>/ports/<n>/counters/` and, where the driver offers them,
//! the port's `hw_counters/`).
//!
//! Each port is a device named "ib:<dev>/<port>". Every counter is cumulative, so it is reported
//! as a rate over the interval between two readings: absent on the first reading, and absent
//! whenever its file cannot be read (a counter that fails is left out and primes again once it
//! can be read; the others go on). The sysfs root is a parameter so tests run on a fake tree.

use crate::procfs_sampler::rate_per_second;
use crate::sampler::{CounterSpec, SampleSink, Sampler, SamplerError};
use pinch_traces::{Rank, Unit};
use std::path::{Path, PathBuf};

/// Where the kernel lists RDMA devices.
pub const DEFAULT_IB_ROOT: &str = "/sys/class/infiniband";

pub const IB_TX_BYTES: CounterSpec = CounterSpec::new("ib.tx_bytes", Unit::BytesPerSecond);
pub const IB_RX_BYTES: CounterSpec = CounterSpec::new("ib.rx_bytes", Unit::BytesPerSecond);
pub const IB_TX_PACKETS: CounterSpec = CounterSpec::new("ib.tx_packets", Unit::PerSecond);
pub const IB_RX_PACKETS: CounterSpec = CounterSpec::new("ib.rx_packets", Unit::PerSecond);
/// Ticks per second in which the port had data to send but no credit to send it.
pub const IB_XMIT_WAIT: CounterSpec = CounterSpec::new("ib.xmit_wait", Unit::PerSecond);
pub const IB_SYMBOL_ERRORS: CounterSpec = CounterSpec::new("ib.symbol_errors", Unit::PerSecond);
pub const IB_RX_ERRORS: CounterSpec = CounterSpec::new("ib.rx_errors", Unit::PerSecond);
pub const IB_RX_REMOTE_PHYSICAL_ERRORS: CounterSpec =
    CounterSpec::new("ib.rx_remote_physical_errors", Unit::PerSecond);
pub const IB_RX_SWITCH_RELAY_ERRORS: CounterSpec =
    CounterSpec::new("ib.rx_switch_relay_errors", Unit::PerSecond);
pub const IB_RX_CONSTRAINT_ERRORS: CounterSpec =
    CounterSpec::new("ib.rx_constraint_errors", Unit::PerSecond);
pub const IB_TX_DISCARDS: CounterSpec = CounterSpec::new("ib.tx_discards", Unit::PerSecond);
pub const IB_TX_CONSTRAINT_ERRORS: CounterSpec =
    CounterSpec::new("ib.tx_constraint_errors", Unit::PerSecond);
pub const IB_LINK_DOWNED: CounterSpec = CounterSpec::new("ib.link_downed", Unit::PerSecond);
pub const IB_LINK_ERROR_RECOVERY: CounterSpec =
    CounterSpec::new("ib.link_error_recovery", Unit::PerSecond);
pub const IB_LOCAL_LINK_INTEGRITY_ERRORS: CounterSpec =
    CounterSpec::new("ib.local_link_integrity_errors", Unit::PerSecond);
pub const IB_BUFFER_OVERRUN_ERRORS: CounterSpec =
    CounterSpec::new("ib.excessive_buffer_overrun_errors", Unit::PerSecond);
pub const IB_VL15_DROPPED: CounterSpec = CounterSpec::new("ib.vl15_dropped", Unit::PerSecond);
/// RoCE congestion notifications this port reacted to (it slowed its sending).
pub const IB_CNP_HANDLED: CounterSpec = CounterSpec::new("ib.cnp_handled", Unit::PerSecond);
/// RoCE congestion notifications this port sent to its peers.
pub const IB_CNP_SENT: CounterSpec = CounterSpec::new("ib.cnp_sent", Unit::PerSecond);
pub const IB_ECN_MARKED: CounterSpec = CounterSpec::new("ib.ecn_marked_packets", Unit::PerSecond);
/// Packets dropped because no receive buffer was posted.
pub const IB_OUT_OF_BUFFER: CounterSpec = CounterSpec::new("ib.out_of_buffer", Unit::PerSecond);
pub const IB_OUT_OF_SEQUENCE: CounterSpec = CounterSpec::new("ib.out_of_sequence", Unit::PerSecond);
pub const IB_PACKET_SEQ_ERRORS: CounterSpec =
    CounterSpec::new("ib.packet_seq_errors", Unit::PerSecond);
pub const IB_LOCAL_ACK_TIMEOUTS: CounterSpec =
    CounterSpec::new("ib.local_ack_timeouts", Unit::PerSecond);

/// One counter file of a port and how its value becomes a reading.
#[derive(Debug)]
struct PortFile {
    /// "counters" (the standard set) or "hw_counters" (the driver's own).
    dir: &'static str,
    file: &'static str,
    counter: CounterSpec,
    /// The file's unit in the counter's: `port_*_data` count 4-byte words.
    scale: f64,
}

const fn standard(file: &'static str, counter: CounterSpec) -> PortFile {
    PortFile {
        dir: "counters",
        file,
        counter,
        scale: 1.0,
    }
}

const fn hardware(file: &'static str, counter: CounterSpec) -> PortFile {
    PortFile {
        dir: "hw_counters",
        file,
        counter,
        scale: 1.0,
    }
}

/// Every file read, where a port has it.
const PORT_FILES: &[PortFile] = &[
    PortFile {
        scale: 4.0,
        ..standard("port_xmit_data", IB_TX_BYTES)
    },
    PortFile {
        scale: 4.0,
        ..standard("port_rcv_data", IB_RX_BYTES)
    },
    standard("port_xmit_packets", IB_TX_PACKETS),
    standard("port_rcv_packets", IB_RX_PACKETS),
    standard("port_xmit_wait", IB_XMIT_WAIT),
    standard("symbol_error", IB_SYMBOL_ERRORS),
    standard("port_rcv_errors", IB_RX_ERRORS),
    standard(
        "port_rcv_remote_physical_errors",
        IB_RX_REMOTE_PHYSICAL_ERRORS,
    ),
    standard("port_rcv_switch_relay_errors", IB_RX_SWITCH_RELAY_ERRORS),
    standard("port_rcv_constraint_errors", IB_RX_CONSTRAINT_ERRORS),
    standard("port_xmit_discards", IB_TX_DISCARDS),
    standard("port_xmit_constraint_errors", IB_TX_CONSTRAINT_ERRORS),
    standard("link_downed", IB_LINK_DOWNED),
    standard("link_error_recovery", IB_LINK_ERROR_RECOVERY),
    standard(
        "local_link_integrity_errors",
        IB_LOCAL_LINK_INTEGRITY_ERRORS,
    ),
    standard("excessive_buffer_overrun_errors", IB_BUFFER_OVERRUN_ERRORS),
    standard("VL15_dropped", IB_VL15_DROPPED),
    hardware("rp_cnp_handled", IB_CNP_HANDLED),
    hardware("np_cnp_sent", IB_CNP_SENT),
    hardware("np_ecn_marked_roce_packets", IB_ECN_MARKED),
    hardware("out_of_buffer", IB_OUT_OF_BUFFER),
    hardware("out_of_sequence", IB_OUT_OF_SEQUENCE),
    hardware("packet_seq_err", IB_PACKET_SEQ_ERRORS),
    hardware("local_ack_timeout_err", IB_LOCAL_ACK_TIMEOUTS),
];

/// Every counter `IbSampler` may emit, in `PORT_FILES` order.
pub const IB_COUNTERS: &[CounterSpec] = &[
    IB_TX_BYTES,
    IB_RX_BYTES,
    IB_TX_PACKETS,
    IB_RX_PACKETS,
    IB_XMIT_WAIT,
    IB_SYMBOL_ERRORS,
    IB_RX_ERRORS,
    IB_RX_REMOTE_PHYSICAL_ERRORS,
    IB_RX_SWITCH_RELAY_ERRORS,
    IB_RX_CONSTRAINT_ERRORS,
    IB_TX_DISCARDS,
    IB_TX_CONSTRAINT_ERRORS,
    IB_LINK_DOWNED,
    IB_LINK_ERROR_RECOVERY,
    IB_LOCAL_LINK_INTEGRITY_ERRORS,
    IB_BUFFER_OVERRUN_ERRORS,
    IB_VL15_DROPPED,
    IB_CNP_HANDLED,
    IB_CNP_SENT,
    IB_ECN_MARKED,
    IB_OUT_OF_BUFFER,
    IB_OUT_OF_SEQUENCE,
    IB_PACKET_SEQ_ERRORS,
    IB_LOCAL_ACK_TIMEOUTS,
];

/// One counter file of one port and its last reading (time_ns, raw value).
#[derive(Debug)]
struct Tracked {
    file: &'static PortFile,
    path: PathBuf,
    last: Option<(u64, u64)>,
}

/// One port: its device name and the counter files it had when the sampler opened.
#[derive(Debug)]
struct Port {
    device: String,
    counters: Vec<Tracked>,
}

/// Samples the counters of every InfiniBand / RoCE port of a node.
#[derive(Debug)]
pub struct IbSampler {
    root: PathBuf,
    ports: Vec<Port>,
    notes: Vec<String>,
}

impl IbSampler {
    /// A sampler for this node's ports under /sys/class/infiniband. The ports are node-wide, so
    /// the rank processes are not needed.
    pub fn open(_ranks: &[(Rank, u32)]) -> Result<IbSampler, String> {
        IbSampler::open_at(Path::new(DEFAULT_IB_ROOT))
    }

    /// A sampler for the ports under `root` (laid out like /sys/class/infiniband), or why there
    /// is nothing to read there.
    pub fn open_at(root: &Path) -> Result<IbSampler, String> {
        let shown = root.display();
        let devices = sorted_entries(root)
            .map_err(|_| format!("no InfiniBand or RoCE device ({shown} is absent)"))?;
        let mut sampler = IbSampler {
            root: root.to_path_buf(),
            ports: Vec::new(),
            notes: Vec::new(),
        };
        for (device, device_path) in devices {
            sampler.add_ports(&device, &device_path.join("ports"));
        }
        if sampler.ports.is_empty() {
            return Err(format!(
                "no InfiniBand or RoCE device ({shown} has no ports)"
            ));
        }
        Ok(sampler)
    }

    /// The names of the counters some port offers, in `IB_COUNTERS` order.
    pub fn read_counters(&self) -> Vec<String> {
        let offered = |counter: &CounterSpec| {
            self.ports
                .iter()
                .flat_map(|port| &port.counters)
                .any(|tracked| tracked.file.counter == *counter)
        };
        IB_COUNTERS
            .iter()
            .filter(|counter| offered(counter))
            .map(|counter| counter.name.to_string())
            .collect()
    }

    /// Counter files that exist but could not be read when the sampler opened.
    pub fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    /// The device names of the ports found ("ib:mlx5_0/1"), sorted.
    pub fn devices(&self) -> Vec<String> {
        self.ports.iter().map(|port| port.device.clone()).collect()
    }

    /// Adds every port under `ports_dir` that has at least one readable counter file.
    fn add_ports(&mut self, device: &str, ports_dir: &Path) {
        let Ok(ports) = sorted_entries(ports_dir) else {
            return;
        };
        for (port, port_path) in ports {
            let name = format!("ib:{device}/{port}");
            let counters = self.port_counters(&name, &port_path);
            if !counters.is_empty() {
                self.ports.push(Port {
                    device: name,
                    counters,
                });
            }
        }
    }

    /// The counter files a port has; a file that exists but cannot be read gets a note.
    fn port_counters(&mut self, device: &str, port_path: &Path) -> Vec<Tracked> {
        let mut counters = Vec::new();
        for file in PORT_FILES {
            let path = port_path.join(file.dir).join(file.file);
            if !path.exists() {
                continue;
            }
            match read_counter(&path) {
                Ok(_) => counters.push(Tracked {
                    file,
                    path,
                    last: None,
                }),
                Err(why) => self.notes.push(format!(
                    "{device}: counter '{}' cannot be read: {why}",
                    file.file
                )),
            }
        }
        counters
    }
}

impl Sampler for IbSampler {
    fn source(&self) -> &'static str {
        "infiniband"
    }

    fn counters(&self) -> &'static [CounterSpec] {
        IB_COUNTERS
    }

    /// Reads every counter file; one that fails is left out. Fails only when none could be read.
    fn sample(&mut self, now_ns: u64, out: &mut SampleSink) -> Result<(), SamplerError> {
        let mut read_any = false;
        for port in &mut self.ports {
            for tracked in &mut port.counters {
                read_any |= sample_counter(tracked, &port.device, now_ns, out);
            }
        }
        if read_any {
            return Ok(());
        }
        Err(SamplerError::Source {
            source_name: "infiniband",
            message: format!(
                "no port counter under '{}' could be read",
                self.root.display()
            ),
        })
    }
}

/// Reads one counter file and pushes its rate since the last reading; says whether it was read.
/// An unreadable file loses its baseline, so its next reading only primes.
fn sample_counter(tracked: &mut Tracked, device: &str, now_ns: u64, out: &mut SampleSink) -> bool {
    let Ok(value) = read_counter(&tracked.path) else {
        tracked.last = None;
        return false;
    };
    if let Some((time_ns, before)) = tracked.last {
        let elapsed_ns = now_ns.saturating_sub(time_ns);
        if let Some(rate) = rate_per_second(before, value, elapsed_ns) {
            let file = tracked.file;
            out.push(file.counter, device, now_ns, rate * file.scale);
        }
    }
    tracked.last = Some((now_ns, value));
    true
}

/// A sysfs counter file's value: one decimal number.
fn read_counter(path: &Path) -> Result<u64, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    text.trim()
        .parse::<u64>()
        .map_err(|_| format!("'{}' is not a count", text.trim()))
}

/// The entries of a directory as (name, path), sorted by name; entries that are not valid UTF-8
/// are skipped (the kernel names RDMA devices and ports in ASCII).
fn sorted_entries(dir: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let mut entries: Vec<(String, PathBuf)> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter_map(|entry| Some((entry.file_name().into_string().ok()?, entry.path())))
        .collect();
    entries.sort();
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::testkit::Names;
    use pinch_traces::NodeId;
    use std::fs;

    /// Writes `value` into `<root>/<dev>/ports/<port>/<dir>/<file>`, unless a test made that
    /// path a directory (a file that can no longer be read).
    fn write(root: &Path, dev: &str, port: &str, dir: &str, file: &str, value: u64) {
        let path = root.join(dev).join("ports").join(port).join(dir);
        fs::create_dir_all(&path).unwrap();
        let path = path.join(file);
        if !path.is_dir() {
            fs::write(path, format!("{value}\n")).unwrap();
        }
    }

    /// A fake sysfs tree: mlx5_0 with ports 1 and 2 (InfiniBand), mlx5_1 with port 1 (RoCE, with
    /// hw_counters). Every counter is `base` times a per-file factor, so a second call with a
    /// larger `base` makes them advance.
    fn fake_tree(root: &Path, base: u64) {
        for (dev, port) in [("mlx5_0", "1"), ("mlx5_0", "2"), ("mlx5_1", "1")] {
            write(root, dev, port, "counters", "port_xmit_data", base * 250);
            write(root, dev, port, "counters", "port_rcv_data", base * 500);
            write(root, dev, port, "counters", "port_xmit_packets", base * 2);
            write(root, dev, port, "counters", "port_rcv_packets", base * 3);
            write(root, dev, port, "counters", "symbol_error", 7);
        }
        write(root, "mlx5_1", "1", "hw_counters", "np_cnp_sent", base);
    }

    fn key(counter: &str, device: &str) -> (String, String) {
        (counter.to_string(), device.to_string())
    }

    #[test]
    fn an_absent_root_or_one_without_ports_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let absent = dir.path().join("infiniband");
        let err = IbSampler::open_at(&absent).unwrap_err();
        assert_eq!(
            err,
            format!(
                "no InfiniBand or RoCE device ({} is absent)",
                absent.display()
            )
        );
        fs::create_dir_all(absent.join("mlx5_0").join("ports")).unwrap();
        let err = IbSampler::open_at(&absent).unwrap_err();
        assert!(err.ends_with("has no ports)"), "{err}");
    }

    #[test]
    fn finds_every_port_and_the_counters_they_offer() {
        let dir = tempfile::tempdir().unwrap();
        fake_tree(dir.path(), 1);
        let sampler = IbSampler::open_at(dir.path()).unwrap();
        assert_eq!(
            sampler.devices(),
            ["ib:mlx5_0/1", "ib:mlx5_0/2", "ib:mlx5_1/1"]
        );
        assert_eq!(
            sampler.read_counters(),
            [
                "ib.tx_bytes",
                "ib.rx_bytes",
                "ib.tx_packets",
                "ib.rx_packets",
                "ib.symbol_errors",
                "ib.cnp_sent"
            ]
        );
        assert!(sampler.notes().is_empty(), "{:?}", sampler.notes());
    }

    #[test]
    fn counters_advance_into_rates_and_an_unreadable_one_is_left_out() {
        let dir = tempfile::tempdir().unwrap();
        fake_tree(dir.path(), 1_000);
        let mut sampler = IbSampler::open_at(dir.path()).unwrap();
        let mut sink = SampleSink::new(NodeId(0));
        let mut names = Names::default();
        sampler.sample(1_000_000_000, &mut sink).unwrap();
        let first = names.by_key(&sink.take_records());
        assert!(first.is_empty(), "the first reading only primes: {first:?}");

        // Half a second later every counter advanced by 1000 × its factor.
        fake_tree(dir.path(), 2_000);
        sampler.sample(1_500_000_000, &mut sink).unwrap();
        let second = names.by_key(&sink.take_records());
        for device in ["ib:mlx5_0/1", "ib:mlx5_0/2", "ib:mlx5_1/1"] {
            // 250 000 words of 4 bytes in 0.5 s.
            assert_eq!(second[&key("ib.tx_bytes", device)], 2_000_000.0);
            assert_eq!(second[&key("ib.rx_bytes", device)], 4_000_000.0);
            assert_eq!(second[&key("ib.tx_packets", device)], 4_000.0);
            assert_eq!(second[&key("ib.rx_packets", device)], 6_000.0);
            assert_eq!(second[&key("ib.symbol_errors", device)], 0.0);
        }
        assert_eq!(second[&key("ib.cnp_sent", "ib:mlx5_1/1")], 2_000.0);
        assert_eq!(second.len(), 16, "{second:?}");

        // A directory in place of the file: it can no longer be read, even by root.
        let rcv = dir.path().join("mlx5_0/ports/2/counters/port_rcv_data");
        fs::remove_file(&rcv).unwrap();
        fs::create_dir(&rcv).unwrap();
        fake_tree(dir.path(), 3_000);
        sampler.sample(2_000_000_000, &mut sink).unwrap();
        let third = names.by_key(&sink.take_records());
        assert!(!third.contains_key(&key("ib.rx_bytes", "ib:mlx5_0/2")));
        assert_eq!(third[&key("ib.tx_bytes", "ib:mlx5_0/2")], 2_000_000.0);
        assert_eq!(third[&key("ib.rx_bytes", "ib:mlx5_0/1")], 4_000_000.0);
        assert_eq!(third.len(), 15, "{third:?}");

        // Readable again: it primes once, then reports again.
        fs::remove_dir(&rcv).unwrap();
        fake_tree(dir.path(), 4_000);
        sampler.sample(2_500_000_000, &mut sink).unwrap();
        let fourth = names.by_key(&sink.take_records());
        assert!(!fourth.contains_key(&key("ib.rx_bytes", "ib:mlx5_0/2")));
        fake_tree(dir.path(), 5_000);
        sampler.sample(3_000_000_000, &mut sink).unwrap();
        let fifth = names.by_key(&sink.take_records());
        assert_eq!(fifth[&key("ib.rx_bytes", "ib:mlx5_0/2")], 4_000_000.0);
    }

    #[test]
    fn a_root_whose_counters_all_fail_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "mlx5_0", "1", "counters", "port_xmit_data", 1);
        let mut sampler = IbSampler::open_at(dir.path()).unwrap();
        fs::remove_dir_all(dir.path().join("mlx5_0")).unwrap();
        let mut sink = SampleSink::new(NodeId(0));
        let err = sampler.sample(1, &mut sink).unwrap_err().to_string();
        assert!(
            err.starts_with("infiniband: no port counter under"),
            "{err}"
        );
    }

    #[test]
    fn a_counter_file_that_is_not_a_number_gets_a_note() {
        let dir = tempfile::tempdir().unwrap();
        fake_tree(dir.path(), 1);
        let bad = dir.path().join("mlx5_1/ports/1/hw_counters/out_of_buffer");
        fs::write(&bad, "n/a\n").unwrap();
        let sampler = IbSampler::open_at(dir.path()).unwrap();
        assert_eq!(
            sampler.notes(),
            ["ib:mlx5_1/1: counter 'out_of_buffer' cannot be read: 'n/a' is not a count"]
        );
        assert!(!sampler.read_counters().contains(&"ib.out_of_buffer".into()));
    }
}
