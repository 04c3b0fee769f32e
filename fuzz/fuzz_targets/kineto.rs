//! Fuzzes the Kineto reader: any bytes through `parse_trace`, and through the two-thread
//! parse (plain and gzipped), which must give the same trace as the one-thread parse.
#![no_main]

use flate2::Compression;
use flate2::write::GzEncoder;
use libfuzzer_sys::fuzz_target;
use pinch_traces::kineto::{KinetoTrace, parse_trace, split_parses_for_fuzzing};
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let whole = parse_trace(data);
    let mut gzip = GzEncoder::new(Vec::new(), Compression::fast());
    if gzip.write_all(data).is_err() {
        return;
    }
    let Ok(gzip) = gzip.finish() else { return };
    for split in split_parses_for_fuzzing(data, &gzip) {
        match &whole {
            Ok(trace) => assert_same(&split, trace),
            Err(e) => panic!("the split parse read a trace the whole parse refuses: {e:?}"),
        }
    }
});

fn assert_same(a: &KinetoTrace, b: &KinetoTrace) {
    assert!(a.names.iter().eq(b.names.iter()), "names differ");
    assert_eq!(a.streams, b.streams);
    assert_eq!(a.cpu_ops, b.cpu_ops);
    assert_eq!(a.runtime, b.runtime);
    assert_eq!(a.flows, b.flows);
    assert_eq!(a.comm_args, b.comm_args);
    assert_eq!(a.groups, b.groups);
    assert_eq!(a.skipped, b.skipped);
    assert_eq!((a.rank, a.world_size), (b.rank, b.world_size));
    assert_eq!(a.backend, b.backend);
}
