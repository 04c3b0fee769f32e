//! Counter samplers: what reads a node's counters (CPU, memory, network, rank processes) at a
//! fixed rate, and the sink that turns their readings into node-log records.
//!
//! A sampler names counters and devices by string; the sink interns them per node, emits each
//! `Record::Counter` / `Record::Device` definition once, before the first sample that uses it,
//! and batches the readings into `Record::Samples`.

use pinch_traces::{
    CounterDef, CounterId, CounterSample, DeviceDef, DeviceId, NodeId, Record, Unit,
};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A source of counters, sampled periodically by the agent.
pub trait Sampler {
    /// The source's name in the run manifest ("procfs").
    fn source(&self) -> &'static str;
    /// Every counter this sampler may emit.
    fn counters(&self) -> &'static [CounterSpec];
    /// Reads the counters at `now_ns` (the node's monotonic clock) into `out`. A counter that
    /// cannot be read or has no value yet (a rate's first reading) is left out, never set to 0.
    fn sample(&mut self, now_ns: u64, out: &mut SampleSink) -> Result<(), SamplerError>;
}

/// A counter's name and unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CounterSpec {
    pub name: &'static str,
    pub unit: Unit,
}

impl CounterSpec {
    pub const fn new(name: &'static str, unit: Unit) -> CounterSpec {
        CounterSpec { name, unit }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SamplerError {
    #[error("cannot read '{path}': {source}")]
    Proc {
        path: &'static str,
        source: procfs::ProcError,
    },
    #[error("cannot read '/proc/{pid}/stat': {source}")]
    Process { pid: u32, source: procfs::ProcError },
    /// Any other source's failure, in its own words.
    #[error("{source_name}: {message}")]
    Source {
        source_name: &'static str,
        message: String,
    },
}

/// Interns counters and devices of one node and collects records for the node log.
#[derive(Debug)]
pub struct SampleSink {
    node: NodeId,
    /// The first counter and device id this sink hands out: sinks of one node sampling on
    /// different threads get disjoint ranges, so their ids never collide in the node log.
    id_base: u32,
    counters: HashMap<&'static str, CounterId>,
    devices: HashMap<String, DeviceId>,
    definitions: Vec<Record>,
    samples: Vec<CounterSample>,
}

impl SampleSink {
    pub fn new(node: NodeId) -> SampleSink {
        SampleSink::with_id_base(node, 0)
    }

    /// A sink whose ids start at `id_base`; give each of a node's sinks its own range (e.g.
    /// `source index << 20`).
    pub fn with_id_base(node: NodeId, id_base: u32) -> SampleSink {
        SampleSink {
            node,
            id_base,
            counters: HashMap::new(),
            devices: HashMap::new(),
            definitions: Vec::new(),
            samples: Vec::new(),
        }
    }

    /// Adds one reading. A non-finite value is not a reading and is left out.
    pub fn push(&mut self, counter: CounterSpec, device: &str, time_ns: u64, value: f64) {
        if !value.is_finite() {
            return;
        }
        let counter = self.counter_id(counter);
        let device = self.device_id(device);
        self.samples.push(CounterSample {
            node: self.node,
            device,
            counter,
            time_ns,
            value,
        });
    }

    /// Readings held until the next `take_records`.
    pub fn pending_samples(&self) -> usize {
        self.samples.len()
    }

    /// New definitions, then the readings as one `Record::Samples`; empties the sink.
    pub fn take_records(&mut self) -> Vec<Record> {
        let mut records = std::mem::take(&mut self.definitions);
        if !self.samples.is_empty() {
            records.push(Record::Samples(std::mem::take(&mut self.samples)));
        }
        records
    }

    fn counter_id(&mut self, counter: CounterSpec) -> CounterId {
        if let Some(id) = self.counters.get(counter.name) {
            return *id;
        }
        let id = CounterId(self.id_base + self.counters.len() as u32);
        self.counters.insert(counter.name, id);
        self.definitions.push(Record::Counter(CounterDef {
            id,
            name: counter.name.to_string(),
            unit: counter.unit,
        }));
        id
    }

    fn device_id(&mut self, device: &str) -> DeviceId {
        if let Some(id) = self.devices.get(device) {
            return *id;
        }
        let id = DeviceId(self.id_base + self.devices.len() as u32);
        self.devices.insert(device.to_string(), id);
        self.definitions.push(Record::Device(DeviceDef {
            id,
            name: device.to_string(),
        }));
        id
    }
}

/// How often the agent samples counters, in Hz: 1 to 1000.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SampleRate(u32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SampleRateError {
    #[error("sample rate '{0}' Hz is out of range {min}..={max}", min = SampleRate::MIN_HZ, max = SampleRate::MAX_HZ)]
    OutOfRange(u32),
    #[error("sample rate '{0}' is not a whole number of Hz")]
    NotANumber(String),
}

impl SampleRate {
    pub const MIN_HZ: u32 = 1;
    pub const MAX_HZ: u32 = 1000;
    /// The rate used when none is asked for.
    pub const DEFAULT: SampleRate = SampleRate(10);

    pub fn new(hz: u32) -> Result<SampleRate, SampleRateError> {
        if (Self::MIN_HZ..=Self::MAX_HZ).contains(&hz) {
            Ok(SampleRate(hz))
        } else {
            Err(SampleRateError::OutOfRange(hz))
        }
    }

    pub fn hz(self) -> u32 {
        self.0
    }

    /// The time between two samples.
    pub fn period(self) -> Duration {
        Duration::from_nanos(1_000_000_000 / u64::from(self.0))
    }
}

impl Default for SampleRate {
    fn default() -> SampleRate {
        SampleRate::DEFAULT
    }
}

impl FromStr for SampleRate {
    type Err = SampleRateError;

    /// Parses "100" or "100Hz".
    fn from_str(text: &str) -> Result<SampleRate, SampleRateError> {
        let trimmed = text.trim();
        let digits = trimmed.strip_suffix("Hz").unwrap_or(trimmed).trim_end();
        let hz = digits
            .parse::<u32>()
            .map_err(|_| SampleRateError::NotANumber(text.to_string()))?;
        SampleRate::new(hz)
    }
}

impl fmt::Display for SampleRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} Hz", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOAD: CounterSpec = CounterSpec {
        name: "cpu.utilization",
        unit: Unit::Percent,
    };
    const FREE: CounterSpec = CounterSpec {
        name: "mem.available",
        unit: Unit::Bytes,
    };

    #[test]
    fn sample_rate_accepts_1_to_1000_hz() {
        assert_eq!(SampleRate::new(1).map(SampleRate::hz), Ok(1));
        assert_eq!("1000".parse::<SampleRate>().map(SampleRate::hz), Ok(1000));
        assert_eq!(" 50Hz ".parse::<SampleRate>().map(SampleRate::hz), Ok(50));
        assert_eq!(
            SampleRate::new(100).unwrap().period(),
            Duration::from_millis(10)
        );
    }

    #[test]
    fn sample_rate_out_of_range_names_the_value() {
        let zero = SampleRate::new(0).unwrap_err().to_string();
        assert_eq!(zero, "sample rate '0' Hz is out of range 1..=1000");
        let high = "1001".parse::<SampleRate>().unwrap_err().to_string();
        assert_eq!(high, "sample rate '1001' Hz is out of range 1..=1000");
        let text = "fast".parse::<SampleRate>().unwrap_err().to_string();
        assert_eq!(text, "sample rate 'fast' is not a whole number of Hz");
        assert!("-5".parse::<SampleRate>().is_err());
    }

    #[test]
    fn sink_defines_each_counter_and_device_once_before_use() {
        let mut sink = SampleSink::new(NodeId(4));
        sink.push(LOAD, "cpu0", 10, 50.0);
        sink.push(LOAD, "cpu1", 10, 25.0);
        let first = sink.take_records();
        assert_eq!(first.len(), 4, "{first:?}");
        assert!(
            matches!(&first[0], Record::Counter(d) if d.name == "cpu.utilization" && d.unit == Unit::Percent)
        );
        assert!(matches!(&first[1], Record::Device(d) if d.name == "cpu0" && d.id == DeviceId(0)));
        assert!(matches!(&first[2], Record::Device(d) if d.name == "cpu1" && d.id == DeviceId(1)));
        let Record::Samples(samples) = &first[3] else {
            panic!("{first:?}")
        };
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[1].device, DeviceId(1));
        assert_eq!(samples[1].node, NodeId(4));

        sink.push(LOAD, "cpu1", 20, 30.0);
        sink.push(FREE, "host", 20, 1e9);
        sink.push(FREE, "host", 20, f64::NAN);
        let second = sink.take_records();
        assert!(matches!(&second[0], Record::Counter(d) if d.id == CounterId(1)));
        assert!(matches!(&second[1], Record::Device(d) if d.name == "host"));
        assert!(matches!(&second[2], Record::Samples(s) if s.len() == 2));
        assert!(sink.take_records().is_empty());
    }
}

/// Reading a sink's records back by name, for the samplers' tests.
#[cfg(test)]
pub(crate) mod testkit {
    use pinch_traces::{CounterId, DeviceId, Record};
    use std::collections::HashMap;

    /// The counter and device names defined so far in a sink's records.
    #[derive(Default)]
    pub(crate) struct Names {
        counters: HashMap<CounterId, String>,
        devices: HashMap<DeviceId, String>,
    }

    impl Names {
        /// (device, value) readings per counter name.
        pub(crate) fn readings(
            &mut self,
            records: &[Record],
        ) -> HashMap<String, Vec<(String, f64)>> {
            let mut out: HashMap<String, Vec<(String, f64)>> = HashMap::new();
            for record in records {
                match record {
                    Record::Counter(def) => drop(self.counters.insert(def.id, def.name.clone())),
                    Record::Device(def) => drop(self.devices.insert(def.id, def.name.clone())),
                    Record::Samples(samples) => {
                        for s in samples {
                            let entry = out.entry(self.counters[&s.counter].clone()).or_default();
                            entry.push((self.devices[&s.device].clone(), s.value));
                        }
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            out
        }

        /// (counter, device) -> value of the readings in `records`.
        pub(crate) fn by_key(&mut self, records: &[Record]) -> HashMap<(String, String), f64> {
            let mut out = HashMap::new();
            for (counter, readings) in self.readings(records) {
                for (device, value) in readings {
                    out.insert((counter.clone(), device), value);
                }
            }
            out
        }
    }
}
