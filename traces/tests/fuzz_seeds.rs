//! The fuzzers' seeds (fuzz/seeds, see fuzz/seeds/README.md) are what they claim to be: whole
//! inputs the readers accept, and a cut node log the reader recovers from. A seed that stopped
//! parsing would leave the fuzzer starting from noise. Inputs the fuzzers found to break a
//! reader are kept here too, as tests named after what they broke (docs/fuzzing.md).

use pinch_traces::kineto::{KinetoTrace, parse_trace};
use pinch_traces::{Record, read_node_log};
use std::path::{Path, PathBuf};

fn seed(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/seeds")
        .join(path)
}

fn kineto(path: &str) -> KinetoTrace {
    let text = std::fs::read(seed(path)).expect("seed is readable");
    parse_trace(&text).unwrap_or_else(|e| panic!("{path}: {e:?}"))
}

#[test]
fn kineto_seeds_are_traces_with_device_and_host_events() {
    for path in ["kineto/small.json", "kineto/pretty.json"] {
        let trace = kineto(path);
        assert!(trace.device_event_count() > 0, "{path}");
        assert!(!trace.runtime.is_empty(), "{path}");
        assert!(!trace.flows.is_empty(), "{path}");
    }
    let pretty = kineto("kineto/pretty.json");
    assert_eq!(pretty.rank.map(|r| r.0), Some(0));
    let kernel = &pretty.streams[0].events[0];
    assert_eq!(
        kernel.collective.map(|c| pretty.names.get(c)),
        Some("allreduce")
    );
}

#[test]
fn the_node_log_seed_is_whole_and_its_cut_copy_is_recovered() {
    let whole = read_node_log(&seed("nodelog/run-1node-2req.pnl")).expect("whole log");
    assert_eq!(whole.truncation, None);
    assert!(matches!(
        whole.records.first(),
        Some(Record::NodeStart { .. })
    ));
    assert!(matches!(whole.records.last(), Some(Record::NodeEnd { .. })));
    let cut = read_node_log(&seed("nodelog/cut-2000.pnl")).expect("cut log");
    let truncation = cut.truncation.expect("the cut is reported");
    assert!(truncation.offset < 2000 && truncation.dropped_bytes > 0);
    assert_eq!(cut.records[..], whole.records[..cut.records.len()]);
}
