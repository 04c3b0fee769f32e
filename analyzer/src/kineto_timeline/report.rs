//! pinch's own analyses of a Kineto job: the per-rank breakdown and top kernels, collectives,
//! stragglers and findings, measured on the device view of `KinetoTimeline` so that they read
//! as HTA's do on GPU traces (wall time = first kernel start to last kernel end; idle = no
//! device event on any stream).
//!
//! Detectors that need what Kineto traces do not carry are skipped, and the report says which
//! and why (`SkippedDetector`).

use super::{KinetoTimeline, LaneInfo, is_device_lane, kineto_device_timeline};
use crate::align::{Alignment, NodeClockReport};
use crate::analysis::{AnalysisInput, RankReport};
use crate::collectives::CollectiveReport;
use crate::findings::{
    Detector, Finding, FindingKind, GpuIdle, LoadImbalance, ShareDetector, Straggler, detect_with,
};
use crate::stragglers::StragglerReport;
use crate::timeline::Timeline;
use pinch_traces::CollectiveKind;
use pinch_traces::kineto::KinetoRun;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

/// pinch's analyses of a Kineto job (the `pinch` section of `pinch analyze TRACES --json`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KinetoPinchReport {
    /// Per rank, on its device lanes: breakdown, overlap and top kernels.
    pub ranks: Vec<RankReport>,
    /// Communication kernels matched across ranks by (process group, sequence number).
    pub collectives: Vec<KinetoCollective>,
    /// Who started each collective's kernel last.
    pub stragglers: StragglerReport,
    pub findings: Vec<Finding>,
    /// The detectors not run on Kineto data, and why.
    pub skipped_detectors: Vec<SkippedDetector>,
    /// How each rank's clock was put on the job's time base (node = rank).
    pub clocks: Vec<NodeClockReport>,
    /// What each rank's lanes are: device streams and host threads.
    pub lanes: Vec<LaneInfo>,
    /// Spans on device lanes and on host lanes, over all ranks.
    pub device_spans: u64,
    pub host_spans: u64,
    /// Spans cut short at the timeline's horizon (absurd times only; see `kineto_timeline`).
    pub clamped_spans: u64,
}

/// A collective group of a Kineto job: pinch's `CollectiveReport`, and its size where the
/// traces give one. In JSON, the report's fields with `message_bytes` and `size_class_bytes`
/// null (never 0) for an unknown size.
#[derive(Clone, Debug, PartialEq)]
pub struct KinetoCollective {
    /// The group; its `message_bytes` and `size_class_bytes` are 0 where `message_bytes` below
    /// is `None`, as the timeline's spans hold sizes as plain numbers.
    pub report: CollectiveReport,
    /// nccl-tests' size from the kernels' args (`report.message_bytes`); `None` when a kernel of
    /// the group has no size args (traces older than PyTorch 2.x's), and then it has no
    /// bandwidths either.
    pub message_bytes: Option<u64>,
}

/// The JSON fields an unknown size makes null.
const SIZE_FIELDS: [&str; 2] = ["message_bytes", "size_class_bytes"];

impl Serialize for KinetoCollective {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut value = serde_json::to_value(&self.report).map_err(serde::ser::Error::custom)?;
        if let (None, Some(fields)) = (self.message_bytes, value.as_object_mut()) {
            for field in SIZE_FIELDS {
                fields.insert(field.to_string(), serde_json::Value::Null);
            }
        }
        value.serialize(s)
    }
}

impl<'de> Deserialize<'de> for KinetoCollective {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut value = serde_json::Value::deserialize(d)?;
        let message_bytes = value.get("message_bytes").and_then(|b| b.as_u64());
        if let (None, Some(fields)) = (message_bytes, value.as_object_mut()) {
            for field in SIZE_FIELDS {
                fields.insert(field.to_string(), 0.into());
            }
        }
        let report = serde_json::from_value(value).map_err(serde::de::Error::custom)?;
        Ok(KinetoCollective {
            report,
            message_bytes,
        })
    }
}

/// A detector pinch does not run on Kineto traces.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkippedDetector {
    pub kind: FindingKind,
    pub reason: String,
}

/// The detectors that make sense on a device timeline: where time goes (compute,
/// communication, device idle), stragglers at collectives, and compute imbalance.
pub fn kineto_detectors() -> Vec<Box<dyn Detector>> {
    vec![
        Box::new(ShareDetector::communication()),
        Box::new(ShareDetector::compute()),
        Box::new(GpuIdle),
        Box::new(Straggler),
        Box::new(LoadImbalance),
    ]
}

/// The detectors `kineto_detectors` leaves out, and why.
fn skipped_detectors() -> Vec<SkippedDetector> {
    let skipped = |kind, reason: &str| SkippedDetector {
        kind,
        reason: reason.to_string(),
    };
    vec![
        skipped(
            FindingKind::HostBound,
            "host work is on host lanes, not in the device breakdown; a device starved by its \
             host shows as idle",
        ),
        skipped(
            FindingKind::WaitBound,
            "device synchronizations are short waits of the device itself, not peers' lateness",
        ),
        skipped(
            FindingKind::PipelineBubble,
            "Kineto kernels do not tell waiting for a peer from moving data",
        ),
        skipped(
            FindingKind::MemoryBandwidthBound,
            "Kineto kernels carry no flop or byte counts and no roofs are calibrated",
        ),
        skipped(
            FindingKind::IncompleteRun,
            "a Kineto trace that cannot be read whole is refused by the reader",
        ),
        skipped(
            FindingKind::DroppedSpans,
            "Kineto traces do not count dropped events",
        ),
    ]
}

/// Builds the timeline (ranks aligned by their collectives) and runs pinch's analyses on it.
pub fn pinch_report(run: &KinetoRun) -> KinetoPinchReport {
    report_of(&kineto_device_timeline(run, Alignment::Collectives))
}

/// pinch's analyses of a Kineto job already on the timeline.
pub fn report_of(kt: &KinetoTimeline) -> KinetoPinchReport {
    let device = device_view(kt);
    let mut input = AnalysisInput::new(&device, &kt.facts);
    let unknown = unknown_size_groups(&device, kt);
    let collectives = input
        .collectives
        .iter_mut()
        .map(|c| with_size(c, &unknown))
        .collect();
    let findings = detect_with(&kineto_detectors(), &input);
    KinetoPinchReport {
        device_spans: device.spans.len() as u64,
        host_spans: kt.host_spans,
        clamped_spans: kt.clamped_spans,
        ranks: input.ranks,
        collectives,
        stragglers: input.stragglers,
        findings,
        skipped_detectors: skipped_detectors(),
        clocks: kt.clocks.clone(),
        lanes: kt.lanes.clone(),
    }
}

/// The device spans of the timeline: itself when it holds no others (`kineto_device_timeline`).
pub(super) fn device_view(kt: &KinetoTimeline) -> Cow<'_, Timeline> {
    if kt.timeline.spans.iter().all(|s| is_device_lane(s.lane)) {
        Cow::Borrowed(&kt.timeline)
    } else {
        Cow::Owned(kt.device_timeline())
    }
}

/// The (kind, participants) of the collective groups of size class 0 that hold a span of
/// unknown size: `collective_reports` groups by (kind, size class, participants), and an
/// unknown size is 0 on the span.
fn unknown_size_groups(device: &Timeline, kt: &KinetoTimeline) -> Vec<(CollectiveKind, u32)> {
    if kt.unknown_sizes.is_empty() {
        return Vec::new();
    }
    let mut groups: Vec<(CollectiveKind, u32)> = device
        .spans
        .iter()
        .filter_map(|s| Some((s.rank, s.attrs.collective?)))
        .filter(|(rank, c)| {
            c.message_bytes == 0 && kt.unknown_sizes.contains(&(*rank, c.group, c.seq))
        })
        .map(|(_, c)| (c.kind, c.participants))
        .collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// A group as the Kineto report gives it: with no size and no bandwidths where a span's size is
/// unknown (a bandwidth would read 0 GB/s).
fn with_size(c: &mut CollectiveReport, unknown: &[(CollectiveKind, u32)]) -> KinetoCollective {
    let known = c.size_class_bytes != 0 || !unknown.contains(&(c.kind, c.participants));
    if !known {
        c.algbw_gbps = None;
        c.busbw_gbps = None;
    }
    KinetoCollective {
        report: c.clone(),
        message_bytes: known.then_some(c.message_bytes),
    }
}
