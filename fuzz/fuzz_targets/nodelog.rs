//! Fuzzes the node-log reader: any bytes as a whole log, and the same bytes as the payload of
//! one well-framed record (right header, length and checksum), so that the record decoder is
//! reached without the fuzzer having to forge a CRC.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pinch_traces::{NODE_LOG_VERSION, read_node_log_from};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.log");
    let _ = read_node_log_from(data, path);
    let mut framed = b"PINCHLOG".to_vec();
    framed.extend_from_slice(&NODE_LOG_VERSION.to_le_bytes());
    framed.extend_from_slice(&[0; 4]);
    let Ok(len) = u32::try_from(data.len()) else {
        return;
    };
    framed.extend_from_slice(&len.to_le_bytes());
    framed.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    framed.extend_from_slice(data);
    let _ = read_node_log_from(framed.as_slice(), path);
});
