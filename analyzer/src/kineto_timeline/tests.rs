//! A small synthetic Kineto job with a known answer: two ranks, three steps; each step a
//! compute kernel, then an all-reduce on a stream of its own. Rank 1's compute kernel takes 3×
//! rank 0's, so rank 0's all-reduce kernel starts early and spins until rank 1's arrives.

use super::*;
use crate::findings::{Finding, FindingKind, Level};
use pinch_traces::kineto::{
    CommArgs, CommArgsId, DeviceStream, GroupId, KinetoTrace, KinetoWarning, NameId, ProcessGroup,
    RankSource, RankTrace,
};
use pinch_traces::{CollectiveKind, Rank};
use std::path::PathBuf;

const US: i64 = 1_000;
const STEP_NS: i64 = 1_000 * US;
/// Kineto's clock at the job's first event: Unix-epoch microseconds, in ns.
const T0_NS: i64 = 1_700_000_000_000_000 * US;

struct Builder {
    trace: KinetoTrace,
    correlation: u64,
}

impl Builder {
    fn new(rank: u32) -> Builder {
        let mut trace = KinetoTrace {
            rank: Some(Rank(rank)),
            world_size: Some(2),
            ..KinetoTrace::default()
        };
        for stream in [7, 13] {
            trace.streams.push(DeviceStream {
                device: Some(0),
                stream: Some(stream),
                events: Vec::new(),
            });
        }
        Builder {
            trace,
            correlation: 0,
        }
    }

    fn host(&mut self, kind: HostEventKind, name: &str, start_ns: i64, duration_ns: i64) {
        let event = HostEvent {
            name: self.trace.names.intern(name),
            kind,
            start_ns: T0_NS + start_ns,
            duration_ns: duration_ns as u64,
            pid: Some(1),
            tid: Some(2),
            correlation: (kind == HostEventKind::Runtime).then_some(self.correlation),
            external_id: None,
        };
        match kind {
            HostEventKind::Runtime => self.trace.runtime.push(event),
            _ => self.trace.cpu_ops.push(event),
        }
    }

    /// A kernel on stream index `stream`, launched 5 us before it starts.
    fn kernel(&mut self, stream: usize, name: &str, start_ns: i64, duration_ns: i64) {
        self.correlation += 1;
        self.host(
            HostEventKind::Runtime,
            "cudaLaunchKernel",
            start_ns - 5 * US,
            US,
        );
        let collective = name
            .starts_with("nccl")
            .then(|| self.trace.names.intern("allreduce"));
        let event = DeviceEvent {
            name: self.trace.names.intern(name),
            kind: DeviceEventKind::Kernel,
            start_ns: T0_NS + start_ns,
            duration_ns: duration_ns as u64,
            correlation: Some(self.correlation),
            collective,
            comm: None,
        };
        self.trace.streams[stream].events.push(event);
    }

    fn rank_trace(self, rank: u32) -> RankTrace {
        RankTrace {
            rank: Rank(rank),
            rank_source: RankSource::DistributedInfo,
            path: PathBuf::from(format!("rank{rank}.json")),
            trace: self.trace,
        }
    }
}

const ALL_REDUCE: &str = "ncclKernel_AllReduce_RING_LL_Sum_float(ncclDevComm*)";

/// Rank `rank` computes `compute_us` per step, then all-reduces until 350 us into the step.
fn rank(rank: u32, compute_us: i64) -> RankTrace {
    let mut b = Builder::new(rank);
    for step in 0..3 {
        let t0 = 10 * US + step * STEP_NS;
        b.host(
            HostEventKind::UserAnnotation,
            &format!("ProfilerStep#{}", step + 1),
            t0 - 10 * US,
            STEP_NS,
        );
        b.kernel(0, "volta_sgemm_128x64_nn", t0, compute_us * US);
        let arrive = t0 + compute_us * US;
        b.kernel(1, ALL_REDUCE, arrive, t0 + 350 * US - arrive);
    }
    b.trace.cpu_ops.sort_by_key(|e| e.start_ns);
    b.trace.runtime.sort_by_key(|e| e.start_ns);
    b.rank_trace(rank)
}

fn job(slow_us: i64) -> KinetoRun {
    KinetoRun {
        ranks: vec![rank(0, 100), rank(1, slow_us)],
        world_size: Some(2),
        warnings: Vec::<KinetoWarning>::new(),
    }
}

#[test]
fn streams_and_threads_become_lanes_with_categories_and_steps() {
    let kt = kineto_timeline(&job(300), Alignment::Collectives);
    let t = &kt.timeline;
    assert_eq!(t.ranks(), vec![Rank(0), Rank(1)]);
    // 3 steps × (2 kernels + 2 launches + 1 annotation) per rank.
    assert_eq!(t.spans_of(Rank(0)).len(), 15);
    let lanes: Vec<(u32, u32, LaneKind)> = kt
        .lanes
        .iter()
        .filter(|l| l.rank == 0)
        .map(|l| (l.rank, l.lane, l.kind))
        .collect();
    let stream = |s| LaneKind::Device {
        device: Some(0),
        stream: Some(s),
    };
    let thread = LaneKind::Host {
        pid: Some(1),
        tid: Some(2),
    };
    assert_eq!(
        lanes,
        vec![
            (0, 0, stream(7)),
            (0, 1, stream(13)),
            (0, HOST_LANE_BASE, thread)
        ]
    );
    let first = &t.spans_of(Rank(0))[0];
    assert_eq!((first.start_ns, first.category), (0, Category::Host));
    let kernels: Vec<(Category, Option<u32>, i64)> = t
        .spans_of(Rank(1))
        .iter()
        .filter(|s| is_device_lane(s.lane))
        .map(|s| (s.category, s.attrs.step, s.start_ns))
        .collect();
    assert_eq!(kernels.len(), 6);
    assert_eq!(kernels[0], (Category::Compute, Some(1), 10 * US));
    assert_eq!(kernels[1], (Category::Communication, Some(1), 310 * US));
    assert_eq!(kernels[5].1, Some(3));
    assert_eq!(t.origin_unix_ns, i128::from(T0_NS));
}

#[test]
fn all_reduces_match_across_ranks_by_sequence_number() {
    let kt = kineto_timeline(&job(300), Alignment::Collectives);
    let seqs: Vec<(u32, u64, CollectiveKind, u32)> = kt
        .timeline
        .spans
        .iter()
        .filter_map(|s| {
            s.attrs
                .collective
                .map(|c| (s.rank.0, c.seq, c.kind, c.group))
        })
        .collect();
    assert_eq!(seqs.len(), 6);
    assert!(
        seqs.iter()
            .all(|(_, _, k, g)| *k == CollectiveKind::AllReduce && *g == 0)
    );
    let rank1: Vec<u64> = seqs.iter().filter(|s| s.0 == 1).map(|s| s.1).collect();
    assert_eq!(rank1, vec![0, 1, 2]);
    // The all-reduces end together on both ranks: no clock correction is needed.
    assert!(
        kt.clocks.iter().all(|c| c.offset_ns == 0),
        "{:?}",
        kt.clocks
    );
}

/// `job`, its all-reduces carrying PyTorch 2.x's args: 1 Mi floats on group "7" of 2 ranks.
/// Rank 0 also names group "5" first, so the job's numbering must not be either rank's.
fn job_with_args(slow_us: i64) -> KinetoRun {
    let mut run = job(slow_us);
    for r in &mut run.ranks {
        let t = &mut r.trace;
        let names: &[&str] = if r.rank.0 == 0 { &["5", "7"] } else { &["7"] };
        t.groups = names
            .iter()
            .map(|name| ProcessGroup {
                name: (*name).into(),
                description: None,
                ranks: Some(vec![0, 1]),
            })
            .collect();
        t.comm_args.push(CommArgs {
            in_msg_nelems: Some(1 << 20),
            out_msg_nelems: Some(1 << 20),
            group_size: Some(2),
            element_bytes: Some(4),
            group: Some(GroupId(names.len() as u32 - 1)),
        });
        for e in &mut t.streams[1].events {
            e.comm = Some(CommArgsId(0));
        }
    }
    run
}

#[test]
fn collective_args_give_sizes_groups_and_bandwidths() {
    let run = job_with_args(300);
    let kt = kineto_timeline(&run, Alignment::Collectives);
    let attrs: Vec<(u32, CollectiveAttrs)> = kt
        .timeline
        .spans
        .iter()
        .filter_map(|s| Some((s.rank.0, s.attrs.collective?)))
        .collect();
    assert_eq!(attrs.len(), 6);
    for (rank, c) in &attrs {
        assert_eq!(
            (c.group, c.participants, c.message_bytes),
            (1, 2, 4 << 20),
            "group '7' is the job's second on rank {rank}"
        );
    }
    let seqs: Vec<(u32, u64)> = attrs.iter().map(|(r, c)| (*r, c.seq)).collect();
    assert_eq!(seqs, [(0, 0), (0, 1), (0, 2), (1, 0), (1, 1), (1, 2)]);
    let report = report::report_of(&kt);
    assert_eq!(report.collectives[0].message_bytes, Some(4 << 20));
    let c = &report.collectives[0].report;
    assert_eq!(c.message_bytes, 4 << 20);
    // 4 MiB in the median kernel's 50 us (rank 1's; rank 0's waits 250 us).
    let algbw = c.algbw_gbps.unwrap_or_default();
    assert!(algbw > 0.0, "{c:?}");
    assert_eq!(c.busbw_gbps, Some(algbw), "all-reduce on 2 ranks: factor 1");
}

#[test]
fn the_rank_with_three_times_the_compute_is_the_straggler() {
    let report = report::pinch_report(&job(300));
    let c = &report.collectives[0].report;
    assert_eq!(
        (c.kind, c.count, c.span_count, c.participants),
        (CollectiveKind::AllReduce, 3, 6, 2)
    );
    assert_eq!(c.last_arrival_rank, Some(1));
    assert_eq!(
        (c.algbw_gbps, c.busbw_gbps),
        (None, None),
        "sizes are unknown without collective args"
    );
    assert_eq!(report.collectives[0].message_bytes, None);
    let json = serde_json::to_value(&report.collectives[0]).unwrap_or_default();
    assert_eq!(
        (
            &json["message_bytes"],
            &json["size_class_bytes"],
            &json["count"]
        ),
        (
            &serde_json::Value::Null,
            &serde_json::Value::Null,
            &3.into()
        ),
        "{json}"
    );
    let back: KinetoCollective = serde_json::from_value(json).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(back, report.collectives[0]);
    let late = &report.stragglers.ranks[1];
    assert_eq!((late.rank, late.times_last), (1, 3));
    assert_eq!(late.mean_lateness_ns, Some(200_000.0));
    let stragglers: Vec<&Finding> = report
        .findings
        .iter()
        .filter(|f| f.kind == FindingKind::Straggler)
        .collect();
    let [straggler] = &stragglers[..] else {
        panic!("{:#?}", report.findings);
    };
    assert_eq!(straggler.location.ranks, vec![1]);
    assert_eq!(straggler.level, Level::Critical);
}

#[test]
fn balanced_ranks_have_no_straggler_and_the_breakdown_is_the_devices() {
    let report = report::pinch_report(&job(100));
    assert!(
        report
            .findings
            .iter()
            .all(|f| f.kind != FindingKind::Straggler),
        "{:#?}",
        report.findings
    );
    let r0 = &report.ranks[0];
    // Kernel span: 10 us to 2 × 1000 + 360 us; busy 350 us a step.
    let wall_ns = (2 * 1_000 + 350) as u64 * 1_000;
    assert_eq!(r0.wall_ns, Some(wall_ns));
    let b = r0.breakdown_ns.unwrap_or_default();
    assert_eq!((b.compute, b.communication), (300_000, 750_000));
    assert_eq!((b.host, b.wait, b.idle), (0, 0, wall_ns - 1_050_000));
    assert_eq!(r0.top_ops[0].name, ALL_REDUCE);
    // Idle for half the kernel span: the device finding names it.
    assert!(report.findings.iter().any(|f| f.kind == FindingKind::Idle));
    assert_eq!((report.device_spans, report.host_spans), (12, 18));
}

#[test]
fn a_rank_with_host_events_only_has_no_measurements() {
    let mut job = job(100);
    for s in &mut job.ranks[1].trace.streams {
        s.events.clear();
    }
    let report = report::pinch_report(&job);
    assert_eq!(report.ranks.len(), 2);
    assert_eq!(
        (report.ranks[1].wall_ns, report.ranks[1].span_count),
        (None, 0)
    );
    assert_eq!(report.collectives[0].report.ranks, vec![0]);
}

#[test]
fn names_resolve_through_each_rank_table() {
    let mut job = job(100);
    // Rank 1 interns its names in another order.
    let trace = &mut job.ranks[1].trace;
    let mut names = pinch_traces::kineto::Names::default();
    names.intern("padding");
    let remap: Vec<NameId> = (0..trace.names.len())
        .map(|i| names.intern(trace.names.get(NameId(i as u32))))
        .collect();
    for s in &mut trace.streams {
        for e in &mut s.events {
            e.name = remap[e.name.0 as usize];
            e.collective = e.collective.map(|c| remap[c.0 as usize]);
        }
    }
    for e in trace.cpu_ops.iter_mut().chain(trace.runtime.iter_mut()) {
        e.name = remap[e.name.0 as usize];
    }
    trace.names = names;
    let kt = kineto_timeline(&job, Alignment::Collectives);
    let t = &kt.timeline;
    let kernel = |rank| {
        t.spans_of(Rank(rank))
            .iter()
            .find(|s| s.category == Category::Compute)
            .map(|s| t.name(s.name).to_string())
    };
    assert_eq!(kernel(0), kernel(1));
    assert_eq!(kernel(1).as_deref(), Some("volta_sgemm_128x64_nn"));
}

#[test]
fn absurd_times_are_clamped_at_the_horizon_and_counted() {
    let mut job = job(100);
    let far = i64::MAX / 2;
    job.ranks[0].trace.streams[0].events[0].duration_ns = far as u64;
    job.ranks[0].trace.streams[0].events[1].start_ns = far;
    let report = report::pinch_report(&job);
    assert_eq!(report.clamped_spans, 2);
    let wall = report.ranks[0].wall_ns.unwrap_or_default();
    let horizon = i64::MAX.unsigned_abs() / 31;
    assert!(wall <= horizon, "{wall} past {horizon}");
}
