//! Counter samples: a node's periodic readings (CPU, memory, network), each of a named counter
//! with a unit, on a named device, at a monotonic time.

use crate::ids::{CounterId, DeviceId, NodeId};
use serde::{Deserialize, Serialize};
use std::fmt;

/// The unit of a counter's values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Unit {
    Percent,
    Bytes,
    BytesPerSecond,
    PerSecond,
    Nanoseconds,
    Count,
    /// A frequency (a GPU's SM or memory clock).
    Hertz,
    /// Electrical power (a GPU's draw).
    Watts,
    /// A temperature (a GPU's die).
    Celsius,
    /// A dimensionless quotient of two counts or times (instructions per cycle, CPU-seconds per
    /// second).
    Ratio,
}

impl Unit {
    pub const ALL: [Unit; 10] = [
        Unit::Percent,
        Unit::Bytes,
        Unit::BytesPerSecond,
        Unit::PerSecond,
        Unit::Nanoseconds,
        Unit::Count,
        Unit::Hertz,
        Unit::Watts,
        Unit::Celsius,
        Unit::Ratio,
    ];

    /// The unit `symbol` writes as `text`.
    pub fn from_symbol(text: &str) -> Option<Unit> {
        Unit::ALL.into_iter().find(|u| u.symbol() == text)
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Unit::Percent => "%",
            Unit::Bytes => "B",
            Unit::BytesPerSecond => "B/s",
            Unit::PerSecond => "1/s",
            Unit::Nanoseconds => "ns",
            Unit::Count => "count",
            Unit::Hertz => "Hz",
            Unit::Watts => "W",
            Unit::Celsius => "°C",
            Unit::Ratio => "x",
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// The name and unit behind a `CounterId` (e.g. "cpu.utilization", percent).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterDef {
    pub id: CounterId,
    pub name: String,
    pub unit: Unit,
}

/// The name behind a `DeviceId` (e.g. "cpu3", "eth0", "rank1", "host").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceDef {
    pub id: DeviceId,
    pub name: String,
}

/// One reading of one counter.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct CounterSample {
    pub node: NodeId,
    pub device: DeviceId,
    pub counter: CounterId,
    /// The node's monotonic clock when the value was read, in nanoseconds.
    pub time_ns: u64,
    pub value: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_read_back_as_their_units() {
        for unit in Unit::ALL {
            assert_eq!(Unit::from_symbol(unit.symbol()), Some(unit));
        }
        assert_eq!(Unit::from_symbol("furlongs"), None);
    }
}
