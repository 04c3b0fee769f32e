//! The roofline class of each op: against the ceilings `pinch calibrate` measured on the host
//! (carried in the manifest's `workload.parameters.calibration`), is the op bound by compute, by
//! memory bandwidth, or by neither (latency: launch, synchronization, too little work per call)?
//!
//! A rank's ceilings are its share of the host's: its matmul threads times the one-thread GEMM
//! rate (for the run's weight dtype), and its threads times the one-thread STREAM triad, each
//! capped by the all-thread figure split over the node's ranks, since ranks on one host share
//! its cores and its memory bus.

use crate::analysis::OpReport;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An op reaching less than this share of the roof at its arithmetic intensity is limited by
/// neither compute nor bandwidth.
const LATENCY_BOUND_BELOW_PCT: f64 = 10.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RooflineClass {
    ComputeBound,
    MemoryBound,
    LatencyBound,
}

/// One rank's roofs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ceilings {
    pub gflops: f64,
    pub gbps: f64,
}

impl Ceilings {
    /// The arithmetic intensity (flop/byte) where the two roofs meet.
    pub fn ridge_flops_per_byte(&self) -> f64 {
        self.gflops / self.gbps
    }
}

/// Where one op sits under the roofs.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpRoofline {
    /// Flops per byte moved, by the op's cost model.
    pub arithmetic_intensity: f64,
    /// The roof at that intensity: min(compute, intensity × bandwidth), GFLOP/s.
    pub roof_gflops: f64,
    /// Achieved GFLOP/s as a share of that roof.
    pub roof_pct: f64,
    pub class: RooflineClass,
}

/// A rank's ceilings from the run's parameters, for a node running `ranks_on_node` ranks;
/// `None` when the run carries no calibration.
pub fn rank_ceilings(
    parameters: &BTreeMap<String, serde_json::Value>,
    ranks_on_node: usize,
) -> Option<Ceilings> {
    let calibration = parameters.get("calibration")?;
    let dtype = parameters
        .get("dtype")
        .and_then(|d| d.as_str())
        .unwrap_or("f32");
    let threads = parameters.get("threads").and_then(|t| t.as_f64())?.max(1.0);
    let share = ranks_on_node.max(1) as f64;
    let gemm = calibration.get("gemm")?.as_array()?;
    let rates = gemm
        .iter()
        .find(|g| g.get("dtype").and_then(|d| d.as_str()) == Some(dtype))?
        .get("gflops")?;
    let triad = calibration.get("memory")?.get("triad_gbps")?;
    let per_rank = |rates: &serde_json::Value| -> Option<f64> {
        let one = rates.get("one_thread")?.as_f64()?;
        let all = rates.get("all_threads")?.as_f64()?;
        Some((one * threads).min(all / share)).filter(|v| *v > 0.0)
    };
    Some(Ceilings {
        gflops: per_rank(rates)?,
        gbps: per_rank(triad)?,
    })
}

/// The op's place under `ceilings`; `None` when it carries no flops, bytes or rate.
pub fn classify(op: &OpReport, ceilings: &Ceilings) -> Option<OpRoofline> {
    let (flops, bytes) = (op.flops? as f64, op.bytes? as f64);
    let achieved = op.achieved_gflops?;
    if flops <= 0.0 || bytes <= 0.0 {
        return None;
    }
    let intensity = flops / bytes;
    let roof = ceilings.gflops.min(intensity * ceilings.gbps);
    let roof_pct = 100.0 * achieved / roof;
    let class = if roof_pct < LATENCY_BOUND_BELOW_PCT {
        RooflineClass::LatencyBound
    } else if intensity < ceilings.ridge_flops_per_byte() {
        RooflineClass::MemoryBound
    } else {
        RooflineClass::ComputeBound
    };
    Some(OpRoofline {
        arithmetic_intensity: intensity,
        roof_gflops: roof,
        roof_pct,
        class,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinch_traces::Category;
    use serde_json::json;

    fn op(flops: u64, bytes: u64, achieved_gflops: f64) -> OpReport {
        OpReport {
            name: "matmul".into(),
            category: Category::Compute,
            count: 1,
            total_ns: 1,
            share_pct: 1.0,
            median_ns: 1,
            flops: Some(flops),
            bytes: Some(bytes),
            achieved_gflops: Some(achieved_gflops),
            achieved_gbps: None,
            roofline: None,
        }
    }

    fn parameters(threads: u32) -> BTreeMap<String, serde_json::Value> {
        let rates = |one: f64, all: f64| json!({"one_thread": one, "all_threads": all});
        let calibration = json!({
            "gemm": [
                {"dtype": "f32", "gflops": rates(100.0, 180.0)},
                {"dtype": "bf16", "gflops": rates(90.0, 170.0)},
            ],
            "memory": {"triad_gbps": rates(20.0, 30.0)},
        });
        [
            ("calibration", calibration),
            ("dtype", json!("bf16")),
            ("threads", json!(threads)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    #[test]
    fn a_rank_gets_its_threads_worth_capped_by_its_share_of_the_host() {
        let one_thread = rank_ceilings(&parameters(1), 2).unwrap();
        assert_eq!(
            one_thread,
            Ceilings {
                gflops: 85.0,
                gbps: 15.0
            }
        );
        let alone = rank_ceilings(&parameters(2), 1).unwrap();
        assert_eq!(
            alone,
            Ceilings {
                gflops: 170.0,
                gbps: 30.0
            }
        );
        let mut uncalibrated = parameters(1);
        uncalibrated.remove("calibration");
        assert_eq!(rank_ceilings(&uncalibrated, 1), None);
    }

    #[test]
    fn ops_fall_on_the_side_of_the_ridge_they_sit_on_unless_far_below_the_roof() {
        let roofs = Ceilings {
            gflops: 100.0,
            gbps: 10.0,
        };
        // A GEMV reads every weight once: 0.5 flop per byte, roof 5 GFLOP/s.
        let gemv = classify(&op(1_000, 2_000, 4.0), &roofs).unwrap();
        assert_eq!(gemv.class, RooflineClass::MemoryBound);
        assert_eq!((gemv.roof_gflops, gemv.roof_pct), (5.0, 80.0));
        let gemm = classify(&op(64_000, 1_000, 60.0), &roofs).unwrap();
        assert_eq!(
            (gemm.class, gemm.roof_gflops),
            (RooflineClass::ComputeBound, 100.0)
        );
        let tiny = classify(&op(64_000, 1_000, 5.0), &roofs).unwrap();
        assert_eq!(tiny.class, RooflineClass::LatencyBound);
        let mut no_bytes = op(1, 1, 1.0);
        no_bytes.bytes = None;
        assert_eq!(classify(&no_bytes, &roofs), None);
    }
}
