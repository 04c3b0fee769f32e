//! The agent end to end: real rank processes (`pinch-fake-rank`, built with this crate) streaming
//! to a real agent that writes a node log, read back with `read_node_log`.

use pinch_collector::{AgentConfig, AgentEvent, AgentSummary, CounterPlan, SampleRate, run_agent};
use pinch_traces::{NodeId, NodeLog, Rank, RankExit, Record, SourceState, read_node_log};
use std::collections::{BTreeMap, HashMap};
use std::process::Command;

const STEPS: u32 = 40;

/// Runs an agent over fake ranks; `failing` ranks exit with code 3 after a cut stream.
fn run_node(ranks: &[Rank], failing: &[Rank]) -> (NodeLog, AgentSummary, Vec<AgentEvent>) {
    let dir = tempfile::tempdir().expect("a temp dir");
    let log_path = dir.path().join("node-0.pnl");
    let failing = failing.to_vec();
    let config = AgentConfig {
        node: NodeId(0),
        host: "test-host".into(),
        ranks: ranks.to_vec(),
        log_path: log_path.clone(),
        rank_command: Box::new(move |rank| {
            let mut command = Command::new(env!("CARGO_BIN_EXE_pinch-fake-rank"));
            command.arg(rank.0.to_string()).arg(STEPS.to_string());
            if failing.contains(&rank) {
                command.arg("3");
            }
            command
        }),
        metrics_addr: None,
        counters: CounterPlan::all(SampleRate::new(100).expect("100 Hz is a valid rate")),
    };
    let mut events = Vec::new();
    let summary = run_agent(config, &mut |e| events.push(e)).expect("the agent runs");
    let log = read_node_log(&log_path).expect("the node log reads back");
    (log, summary, events)
}

/// Per rank and lane, the steps of its spans in log order.
fn steps_by_lane(log: &NodeLog) -> BTreeMap<(u32, u32), Vec<u32>> {
    let mut steps: BTreeMap<(u32, u32), Vec<u32>> = BTreeMap::new();
    for record in &log.records {
        if let Record::Spans(batch) = record {
            for s in batch {
                steps
                    .entry((s.rank.0, s.lane.0))
                    .or_default()
                    .push(s.attrs.step.expect("fake ranks set the step"));
            }
        }
    }
    steps
}

fn position(log: &NodeLog, wanted: impl Fn(&Record) -> bool) -> usize {
    log.records
        .iter()
        .position(wanted)
        .expect("a matching record")
}

fn last_position(log: &NodeLog, wanted: impl Fn(&Record) -> bool) -> usize {
    log.records
        .iter()
        .rposition(wanted)
        .expect("a matching record")
}

fn rank_end(log: &NodeLog, rank: Rank) -> RankExit {
    let ends: Vec<&RankExit> = log
        .records
        .iter()
        .filter_map(|r| match r {
            Record::RankEnd { rank: r, exit, .. } if *r == rank => Some(exit),
            _ => None,
        })
        .collect();
    assert_eq!(ends.len(), 1, "{rank}: {ends:?}");
    ends[0].clone()
}

/// Checks that `rank` streamed everything, in order, and its end came after its spans.
fn assert_rank_complete(log: &NodeLog, rank: Rank) {
    let steps = steps_by_lane(log);
    for lane in 0..2 {
        assert_eq!(
            steps[&(rank.0, lane)],
            (0..STEPS).collect::<Vec<_>>(),
            "{rank} lane {lane}"
        );
    }
    let names: Vec<&str> = log
        .records
        .iter()
        .filter_map(|r| match r {
            Record::OpName { rank: r, name, .. } if *r == rank => Some(name.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(names, ["matmul", "all_reduce"]);
    let output = |r: &Record| matches!(r, Record::Output { rank: r, tokens } if *r == rank && tokens == &vec![vec![rank.0, STEPS]]);
    assert_eq!(log.records.iter().filter(|r| output(r)).count(), 1);
    let start = position(
        log,
        |r| matches!(r, Record::RankStart { rank: r, .. } if *r == rank),
    );
    let first_span = position(log, |r| matches!(r, Record::Spans(b) if b[0].rank == rank));
    let last_span = last_position(log, |r| matches!(r, Record::Spans(b) if b[0].rank == rank));
    let end = position(
        log,
        |r| matches!(r, Record::RankEnd { rank: r, .. } if *r == rank),
    );
    assert!(
        start < first_span && last_span < end,
        "{rank}: {start} {first_span} {last_span} {end}"
    );
}

/// Names of the counters that have samples, with the device names they were sampled on.
fn sampled_counters(log: &NodeLog) -> HashMap<String, Vec<String>> {
    let mut counters = HashMap::new();
    let mut devices = HashMap::new();
    let mut sampled: HashMap<String, Vec<String>> = HashMap::new();
    for record in &log.records {
        match record {
            Record::Counter(def) => drop(counters.insert(def.id, def.name.clone())),
            Record::Device(def) => drop(devices.insert(def.id, def.name.clone())),
            Record::Samples(samples) => {
                for s in samples {
                    let name = counters
                        .get(&s.counter)
                        .expect("counter defined before use");
                    let device = devices.get(&s.device).expect("device defined before use");
                    sampled
                        .entry(name.clone())
                        .or_default()
                        .push(device.clone());
                }
            }
            _ => {}
        }
    }
    sampled
}

#[test]
fn clean_two_rank_node() {
    let ranks = [Rank(0), Rank(1)];
    let (log, summary, events) = run_node(&ranks, &[]);
    assert_eq!(log.truncation, None);
    let Record::NodeStart {
        node,
        host,
        ranks: started,
        agent_pid,
        ..
    } = &log.records[0]
    else {
        panic!("first record: {:?}", log.records[0])
    };
    assert_eq!(
        (*node, host.as_str(), *agent_pid),
        (NodeId(0), "test-host", std::process::id())
    );
    assert_eq!(started, &ranks);
    let sources: HashMap<&str, &SourceState> = log
        .records
        .iter()
        .filter_map(|r| match r {
            Record::Source(s) => Some((s.source.as_str(), &s.state)),
            _ => None,
        })
        .collect();
    assert!(
        matches!(sources["procfs"], SourceState::Read { counters, .. } if counters.iter().any(|c| c == "cpu.utilization"))
    );
    assert!(sources.contains_key("nvml") && sources.contains_key("perf"));
    assert!(sources.contains_key("infiniband"));
    // Every source samples on its own thread: their counter ids must still be distinct.
    let mut ids = std::collections::HashMap::new();
    for record in &log.records {
        if let Record::Counter(def) = record {
            let name = ids.entry(def.id).or_insert_with(|| def.name.clone());
            assert_eq!(
                *name, def.name,
                "counter id {:?} names two counters",
                def.id
            );
        }
    }
    for rank in ranks {
        assert_rank_complete(&log, rank);
        assert_eq!(rank_end(&log, rank), RankExit::Success);
        assert!(events.contains(&AgentEvent::RankEnded {
            rank,
            ok: true,
            message: "exited cleanly".into()
        }));
        assert!(events.contains(&AgentEvent::Progress {
            rank,
            done: STEPS,
            total: STEPS
        }));
    }
    assert!(
        !log.records
            .iter()
            .any(|r| matches!(r, Record::Progress { .. })),
        "progress is not logged"
    );
    let sampled = sampled_counters(&log);
    assert!(sampled["mem.available"].iter().all(|d| d == "host"));
    assert!(
        sampled["cpu.utilization"]
            .iter()
            .all(|d| d.starts_with("cpu"))
    );
    assert!(sampled["process.rss"].iter().any(|d| d == "rank0"));
    assert!(sampled["process.rss"].iter().any(|d| d == "rank1"));
    assert!(matches!(log.records.last(), Some(Record::NodeEnd { .. })));
    assert!(
        summary.failed.is_empty() && summary.warnings.is_empty(),
        "{summary:?}"
    );
    assert_eq!(summary.dropped_spans, 0);
    assert_eq!(summary.records_written, log.records.len() as u64);
}

#[test]
fn rank_that_exits_with_code_3_mid_stream() {
    let (log, summary, events) = run_node(&[Rank(0), Rank(1)], &[Rank(1)]);
    assert_eq!(log.truncation, None, "the node log itself is whole");
    let RankExit::Failed {
        code,
        signal,
        message,
    } = rank_end(&log, Rank(1))
    else {
        panic!("rank 1 did not fail")
    };
    assert_eq!((code, signal), (Some(3), None));
    assert!(message.contains("exited with code 3"), "{message}");
    assert!(message.contains("cut at byte"), "{message}");
    assert_eq!(summary.failed, vec![(Rank(1), message.clone())]);
    assert!(events.contains(&AgentEvent::RankEnded {
        rank: Rank(1),
        ok: false,
        message
    }));
    // Everything the failed rank flushed before its crash is kept, and the other rank is whole.
    assert_rank_complete(&log, Rank(1));
    assert_rank_complete(&log, Rank(0));
    assert_eq!(rank_end(&log, Rank(0)), RankExit::Success);
    assert!(matches!(log.records.last(), Some(Record::NodeEnd { .. })));
}
