//! Decodes traces written by `PerfettoWriter` with the independent decoder in
//! support/pftrace.rs (written from the wire format and Perfetto's field numbers; it shares no
//! code with the writer), in both compression modes, and checks what a viewer relies on: every
//! slice once with a matching begin and end at its exact times (through each sequence's
//! incremental clock), slices on a track nested, every counter sample once, every track's
//! parent present, every flow started and ended once, every interned id resolved on its own
//! sequence and table, every sequence opened before its first event, every compressed batch
//! under Perfetto's 512 KiB packet limit.
//!
//! The input is a small synthetic run built below: three nodes (processes) of two ranks
//! (threads) each, a counter per node, a findings track, nested slices with arguments, flows
//! across ranks (pairs and one three-hop chain) and instants.

// Helpers outside #[test] functions unwrap too: a failure there is a test failure.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/pftrace.rs"]
mod pftrace;

use pftrace::{Decoded, Event, Value, decode};
use pinch_traces::counter::Unit;
use pinch_traces::export::perfetto::{Compression, PerfettoWriter};
use pinch_traces::export::{
    Arg, ArgValue, FlowId, Instant, Slice, TraceHeader, TraceSink, Track, TrackId, TrackKind,
};
use std::collections::{BTreeMap, HashMap};

/// Both ways the writer stores packets; every check runs on each.
const MODES: [Compression; 2] = [Compression::Deflate, Compression::None];

// ---- The synthetic run -----------------------------------------------------------------------

const ORIGIN_UNIX_NS: i128 = 1_780_000_000_000_000_000;
const NODES: u64 = 3;
const RANKS_PER_NODE: u64 = 2;
const STEPS: i64 = 20;
const STEP_NS: i64 = 10_000;

/// What was sent: slices by id (track, start, end), counter samples, flow ends.
#[derive(Default)]
struct Sent {
    slices: BTreeMap<u64, (u64, i64, i64)>,
    samples: Vec<(u64, i64, f64)>,
    instants: usize,
    flows: BTreeMap<u64, (usize, usize)>,
}

fn node_id(node: u64) -> u64 {
    node * 100
}
fn rank_id(node: u64, rank: u64) -> u64 {
    node * 100 + 1 + rank
}
fn counter_id(node: u64) -> u64 {
    node * 100 + 50
}
const FINDINGS: u64 = 9_999;

fn declare(sink: &mut impl TraceSink) {
    let units = [Some(Unit::Bytes), Some(Unit::Percent), None];
    for node in 0..NODES {
        let pid = node as u32 + 10;
        let track = |id, parent, name: String, kind| Track {
            id: TrackId(id),
            parent,
            name,
            kind,
        };
        sink.track(&track(
            node_id(node),
            None,
            format!("host{node}"),
            TrackKind::Process { pid },
        ))
        .unwrap();
        for rank in 0..RANKS_PER_NODE {
            let kind = TrackKind::Thread {
                pid,
                tid: pid * 10 + rank as u32,
            };
            let t = track(
                rank_id(node, rank),
                Some(TrackId(node_id(node))),
                format!("rank {rank}"),
                kind,
            );
            sink.track(&t).unwrap();
        }
        let kind = TrackKind::Counter {
            unit: units[node as usize],
        };
        sink.track(&track(
            counter_id(node),
            Some(TrackId(node_id(node))),
            "mem".into(),
            kind,
        ))
        .unwrap();
    }
    let findings = Track {
        id: TrackId(FINDINGS),
        parent: None,
        name: "findings".into(),
        kind: TrackKind::Instants,
    };
    sink.track(&findings).unwrap();
}

struct Emitter<'s, S: TraceSink> {
    sink: &'s mut S,
    sent: Sent,
    next_id: u64,
}

impl<S: TraceSink> Emitter<'_, S> {
    #[allow(clippy::too_many_arguments)]
    fn slice(
        &mut self,
        track: u64,
        name: &str,
        start_ns: i64,
        duration_ns: u64,
        flows: &[FlowId],
        ending: &[FlowId],
    ) {
        let id = self.next_id;
        self.next_id += 1;
        let label = format!("op-{id}");
        let args = [
            Arg {
                name: "id".into(),
                value: ArgValue::Uint(id),
            },
            Arg {
                name: "layer".into(),
                value: ArgValue::Int(-(id as i64)),
            },
            Arg {
                name: "gb_per_s".into(),
                value: ArgValue::Float(id as f64 / 4.0),
            },
            Arg {
                name: "op".into(),
                value: ArgValue::Str(&label),
            },
            Arg {
                name: "step".into(),
                value: ArgValue::Uint(id / 10),
            },
            // The event's name again, as a string value: it must be sent in both tables.
            Arg {
                name: "kind".into(),
                value: ArgValue::Str(name),
            },
        ];
        let slice = Slice {
            track: TrackId(track),
            name,
            category: "compute",
            start_ns,
            duration_ns,
            args: &args,
            flows,
            flows_ending: ending,
        };
        self.sink.slice(&slice).unwrap();
        self.sent
            .slices
            .insert(id, (track, start_ns, start_ns + duration_ns as i64));
        for f in flows {
            self.sent.flows.entry(f.0).or_default().0 += 1;
        }
        for f in ending {
            self.sent.flows.entry(f.0).or_default().1 += 1;
        }
    }

    /// One step on one rank: an outer slice, two touching children (the first with a
    /// grandchild), a zero-length marker, and the rank's part in the step's flows.
    fn step(&mut self, node: u64, rank: u64, step: i64) {
        let track = rank_id(node, rank);
        let t = step * STEP_NS + (node * 7 + rank) as i64;
        let pair = FlowId(step as u64 * 1000 + node * 10);
        let chain = FlowId(step as u64 * 1000 + 999);
        let global_rank = node * RANKS_PER_NODE + rank;
        let (flows, ending): (Vec<FlowId>, Vec<FlowId>) = match (rank, global_rank) {
            (_, 0) => (vec![pair, chain], vec![]),
            (0, _) => (vec![pair], vec![]),
            (_, 3) => (vec![chain], vec![pair]),
            (_, 5) => (vec![], vec![pair, chain]),
            _ => (vec![], vec![pair]),
        };
        self.slice(track, "step", t, 5_000, &[], &[]);
        self.slice(track, "matmul", t + 100, 200, &[], &[]);
        self.slice(track, "gelu", t + 150, 50, &[], &[]);
        self.slice(track, "all_reduce", t + 300, 1_000, &flows, &ending);
        self.slice(track, "marker", t + 2_000, 0, &[], &[]);
    }

    fn samples(&mut self, step: i64) {
        for node in 0..NODES {
            let (time_ns, value) = (step * STEP_NS + 500, (step * 3 + node as i64) as f64 * 1.5);
            self.sink
                .counter(TrackId(counter_id(node)), time_ns, value)
                .unwrap();
            self.sent.samples.push((counter_id(node), time_ns, value));
        }
    }

    fn instants(&mut self, step: i64) {
        let args = [Arg {
            name: "share".into(),
            value: ArgValue::Float(0.25),
        }];
        for track in [FINDINGS, rank_id(1, 0)] {
            let instant = Instant {
                track: TrackId(track),
                name: "straggler",
                category: "finding",
                time_ns: step * STEP_NS + 4_000,
                args: &args,
            };
            self.sink.instant(&instant).unwrap();
            self.sent.instants += 1;
        }
    }
}

fn write_run(compression: Compression, steps: i64) -> (Vec<u8>, Sent) {
    let header = TraceHeader {
        origin_unix_ns: ORIGIN_UNIX_NS,
        title: "synthetic".into(),
    };
    let mut writer = PerfettoWriter::with_compression(Vec::new(), &header, compression).unwrap();
    declare(&mut writer);
    let mut emitter = Emitter {
        sink: &mut writer,
        sent: Sent::default(),
        next_id: 1,
    };
    for step in 0..steps {
        for node in 0..NODES {
            for rank in 0..RANKS_PER_NODE {
                emitter.step(node, rank, step);
            }
        }
        emitter.samples(step);
        emitter.instants(step);
    }
    let sent = emitter.sent;
    writer.finish().unwrap();
    (writer.into_inner().unwrap(), sent)
}

/// The small run in each compression mode, decoded, with what was sent.
fn decoded_runs() -> Vec<(Compression, Decoded, Sent)> {
    MODES
        .into_iter()
        .map(|mode| {
            let (trace, sent) = write_run(mode, STEPS);
            (mode, decode(&trace), sent)
        })
        .collect()
}

/// A timeline time as written: offset by the BOOTTIME reading of the clock snapshot.
fn timestamp(decoded: &Decoded, time_ns: i64) -> u64 {
    (i128::from(decoded.base_boottime_ns()) + i128::from(time_ns)) as u64
}

/// The `id` argument every slice of the synthetic run carries.
fn slice_id(event: &Event) -> u64 {
    match event.args.iter().find(|(n, _)| n == "id") {
        Some((_, Value::Uint(id))) => *id,
        other => panic!("slice without id: {other:?}"),
    }
}

// ---- The checks ------------------------------------------------------------------------------

#[test]
fn every_slice_appears_once_with_a_matching_begin_and_end_and_nests() {
    for (mode, decoded, sent) in decoded_runs() {
        let uuid_of = uuids_by_name(&decoded);
        let mut matched: Vec<(u64, u64, u64, u64)> = pftrace::slices(&decoded)
            .iter()
            .map(|s| {
                let id = slice_id(&decoded.events[s.begin]);
                (s.track_uuid, id, s.start_boottime_ns, s.end_boottime_ns)
            })
            .collect();
        matched.sort_by_key(|&(_, id, _, _)| id);
        assert_eq!(matched.len(), sent.slices.len(), "{mode:?}");
        for ((uuid, id, begin, end), (sent_id, &(track, start_ns, end_ns))) in
            matched.iter().zip(&sent.slices)
        {
            assert_eq!(id, sent_id, "{mode:?}");
            assert_eq!(*uuid, uuid_of[&track], "{mode:?}");
            assert_eq!(
                (*begin, *end),
                (timestamp(&decoded, start_ns), timestamp(&decoded, end_ns)),
                "slice {id} ({mode:?})"
            );
        }
    }
}

/// Track uuids by the producer's track ids, found through the names and kinds written.
fn uuids_by_name(decoded: &Decoded) -> HashMap<u64, u64> {
    let mut out = HashMap::new();
    for (&uuid, desc) in &decoded.tracks {
        let parent_name = desc.parent.map(|p| decoded.tracks[&p].name.clone());
        let node = |s: &str| s.trim_start_matches("host").parse::<u64>().unwrap();
        let id = match (desc.kind, parent_name) {
            ("process", None) => node_id(node(&desc.name)),
            ("thread", Some(p)) => rank_id(
                node(&p),
                desc.name.trim_start_matches("rank ").parse().unwrap(),
            ),
            ("counter", Some(p)) => counter_id(node(&p)),
            ("plain", None) => FINDINGS,
            other => panic!("unexpected track {other:?}"),
        };
        out.insert(id, uuid);
    }
    out
}

#[test]
fn slice_names_categories_and_args_resolve() {
    for (mode, decoded, _) in decoded_runs() {
        let begins: Vec<&Event> = decoded.of_kind(pftrace::SLICE_BEGIN).collect();
        assert!(!begins.is_empty(), "{mode:?}");
        for e in begins {
            assert_eq!(e.category.as_deref(), Some("compute"));
            let name = e.name.clone().unwrap();
            assert!(["step", "matmul", "gelu", "all_reduce", "marker"].contains(&name.as_str()));
            let id = slice_id(e);
            let expected = vec![
                ("id".to_string(), Value::Uint(id)),
                ("layer".to_string(), Value::Int(-(id as i64))),
                ("gb_per_s".to_string(), Value::Float(id as f64 / 4.0)),
                ("op".to_string(), Value::Str(format!("op-{id}"))),
                ("step".to_string(), Value::Uint(id / 10)),
                ("kind".to_string(), Value::Str(name)),
            ];
            assert_eq!(e.args, expected, "{mode:?}");
        }
    }
}

#[test]
fn string_argument_values_resolve_to_the_text_sent_on_every_sequence() {
    for (mode, decoded, sent) in decoded_runs() {
        // Each "op-N" value goes once, on the sequence of slice N's track; the writer's iids
        // are trace-wide, so only a per-sequence table shows a string missing there.
        let mut sequences = std::collections::BTreeSet::new();
        let mut ops = 0;
        for e in decoded.of_kind(pftrace::SLICE_BEGIN) {
            let (_, op) = e.args.iter().find(|(n, _)| n == "op").unwrap();
            assert_eq!(op, &Value::Str(format!("op-{}", slice_id(e))), "{mode:?}");
            sequences.insert(e.sequence);
            ops += 1;
        }
        assert_eq!(ops, sent.slices.len(), "{mode:?}");
        assert_eq!(sequences.len(), (NODES * RANKS_PER_NODE) as usize);
    }
}

#[test]
fn every_sample_and_instant_appears_once() {
    for (mode, decoded, sent) in decoded_runs() {
        let uuid_of = uuids_by_name(&decoded);
        let mut got: Vec<(u64, u64, u64)> = decoded
            .of_kind(pftrace::COUNTER)
            .map(|e| {
                let value = e.counter.expect("counter value");
                (e.track_uuid, e.boottime_ns, value.to_bits())
            })
            .collect();
        let mut want: Vec<(u64, u64, u64)> = sent
            .samples
            .iter()
            .map(|&(track, t, v)| (uuid_of[&track], timestamp(&decoded, t), v.to_bits()))
            .collect();
        got.sort_unstable();
        want.sort_unstable();
        assert_eq!(got, want, "{mode:?}");
        let instants: Vec<&Event> = decoded.of_kind(pftrace::INSTANT).collect();
        assert_eq!(instants.len(), sent.instants, "{mode:?}");
        for (i, e) in instants.iter().enumerate() {
            assert_eq!(e.name.as_deref(), Some("straggler"));
            assert_eq!(e.args, [("share".to_string(), Value::Float(0.25))]);
            // Two instants a step, at 4 us into it, on an absolute clock.
            let step = (i / 2) as i64;
            assert_eq!(e.boottime_ns, timestamp(&decoded, step * STEP_NS + 4_000));
        }
    }
}

#[test]
fn every_track_parent_exists_and_counters_sit_on_counter_tracks() {
    for (mode, decoded, _) in decoded_runs() {
        assert_eq!(
            decoded.tracks.len(),
            (NODES * (RANKS_PER_NODE + 2) + 1) as usize
        );
        pftrace::check_tracks(&decoded);
        for e in &decoded.events {
            let desc = &decoded.tracks[&e.track_uuid];
            assert_eq!(
                e.kind == pftrace::COUNTER,
                desc.kind == "counter",
                "event {e:?} on {desc:?} ({mode:?})"
            );
        }
    }
}

#[test]
fn each_track_has_a_sequence_of_its_own_opened_before_its_first_event() {
    for (mode, decoded, _) in decoded_runs() {
        // The decoder fails on an event or interned string before its sequence's cleared-state
        // packet; here each track's events share one sequence, its uuid + 1.
        let mut sequence_of: HashMap<u64, u64> = HashMap::new();
        for e in &decoded.events {
            let seq = *sequence_of.entry(e.track_uuid).or_insert(e.sequence);
            assert_eq!(seq, e.sequence, "track {} on two sequences", e.track_uuid);
            assert_eq!(seq, e.track_uuid + 1, "{mode:?}");
        }
        assert_eq!(sequence_of.len(), decoded.tracks.len() - NODES as usize);
    }
}

/// The plain trace's packets with the first one off the global sequence (the one that opens the
/// first track's sequence) left out, so that the decoder must refuse what follows there.
fn without_sequence_opening(trace: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut dropped = false;
    for (_, packet) in pftrace::fields(trace) {
        let bytes = packet.bytes();
        let seq = pftrace::field(&pftrace::fields(bytes), 10).map(pftrace::Wire::varint);
        if seq != Some(pftrace::GLOBAL_SEQUENCE) && !dropped {
            dropped = true;
            continue;
        }
        out.push(0x0a);
        let mut len = bytes.len();
        while len >= 0x80 {
            out.push((len as u8) | 0x80);
            len >>= 7;
        }
        out.push(len as u8);
        out.extend_from_slice(bytes);
    }
    assert!(dropped);
    out
}

#[test]
#[should_panic(expected = "before it opens")]
fn the_decoder_refuses_a_sequence_used_before_it_opens() {
    let (trace, _) = write_run(Compression::None, 1);
    decode(&without_sequence_opening(&trace));
}

#[test]
fn every_flow_starts_once_and_ends_once_after_it_starts() {
    for (mode, decoded, sent) in decoded_runs() {
        let flows = pftrace::check_flows(&decoded);
        assert_eq!(flows.len(), sent.flows.len(), "{mode:?}");
        for (id, &(passes, endings)) in &sent.flows {
            assert_eq!(endings, 1, "flow {id} as sent");
            assert_eq!(flows[id].steps_ns.len(), passes, "flow {id} ({mode:?})");
        }
    }
}

#[test]
fn the_clock_snapshot_maps_the_timeline_to_wall_clock_time() {
    for (mode, decoded, _) in decoded_runs() {
        // BOOTTIME (6) at the timeline's zero, 2^50, and REALTIME (1) at the origin.
        assert_eq!(
            decoded.clocks,
            [
                (pftrace::CLOCK_BOOTTIME, 1 << 50),
                (pftrace::CLOCK_REALTIME, ORIGIN_UNIX_NS as u64)
            ],
            "{mode:?}"
        );
        // The earliest event, a slice at time 0, is stamped at the snapshot's BOOTTIME reading.
        let first = decoded.events.iter().map(|e| e.boottime_ns).min();
        assert_eq!(first, Some(decoded.clocks[0].1), "{mode:?}");
    }
}

#[test]
fn packets_are_deflated_in_batches_under_512_kib_that_expand_to_the_plain_packets() {
    // Enough steps for several batches.
    let steps = 1_500;
    let (deflated, sent) = write_run(Compression::Deflate, steps);
    let (plain, _) = write_run(Compression::None, steps);
    let (deflated, plain) = (decode(&deflated), decode(&plain));
    pftrace::check_batches(&deflated);
    assert!(
        deflated.file_packets.len() > 2,
        "{} batches",
        deflated.file_packets.len()
    );
    assert!(plain.file_packets.iter().all(|p| !p.compressed));
    assert_eq!(deflated.packets, plain.packets);
    assert_eq!(deflated.events, plain.events);
    assert_eq!(pftrace::slices(&deflated).len(), sent.slices.len());
}
