//! End-to-end on a shaped link: the two ranks of `pinch bench collectives` run in two test hosts
//! (network namespaces, `pinch-testnet`) whose links are capped at 1 Gbit/s, and the bus
//! bandwidth they report for 4 MiB and more is positive and stays within 5% of the link rate:
//! the shaping is in force and the collective counts payload bytes only. No timing targets.
//! Prints "skipped: <reason>" and passes where namespaces cannot be made (not root, no `ip`).

use std::process::Command;
use std::time::Duration;

use pinch_testnet::{LinkShape, TestNet, run_together};
use serde_json::Value;

const LINK_BITS_PER_S: u64 = 1_000_000_000;
const MIN_CHECKED_BYTES: u64 = 4 << 20;
/// Bounds the whole job, so a rank that hangs fails the test instead of hanging it.
const JOB_TIMEOUT: Duration = Duration::from_secs(300);

/// Rank `rank` of a two-rank all-reduce sweep, run inside host `rank`.
fn rank_command(net: &TestNet, rank: usize) -> Command {
    let rendezvous = format!("{}:29500", net.addr(0));
    let mut command = net.command(rank, env!("CARGO_BIN_EXE_pinch"));
    command
        .args(["bench", "collectives", "--world", "2", "--transport", "tcp"])
        .args(["--ops", "all_reduce", "--min-bytes", "4M"])
        .args(["--max-bytes", "8M"])
        .args(["--rank", &rank.to_string(), "--rendezvous", &rendezvous])
        .args(["--listen", &net.addr(rank).to_string(), "--json"]);
    command
}

#[test]
fn all_reduce_on_a_1_gbit_link_stays_under_the_link_rate() {
    if let Err(reason) = TestNet::available() {
        println!("skipped: {reason}");
        return;
    }
    let net = TestNet::new(2, &LinkShape::rate(LINK_BITS_PER_S)).unwrap();
    let commands = (0..2).map(|rank| rank_command(&net, rank)).collect();
    let together = run_together(commands, JOB_TIMEOUT).unwrap();
    for (rank, output) in together.outputs.iter().enumerate() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !together.timed_out,
            "killed after {JOB_TIMEOUT:?}; rank {rank}: {stderr}"
        );
        assert!(
            output.status.success(),
            "rank {rank}: {}\n{stderr}",
            output.status
        );
    }
    let rows: Vec<Value> = serde_json::from_slice(&together.outputs[0].stdout).unwrap();
    let checked: Vec<&Value> = rows
        .iter()
        .filter(|row| row["kind"] == "all_reduce")
        .filter(|row| row["bytes"].as_u64().unwrap() >= MIN_CHECKED_BYTES)
        .collect();
    assert!(
        !checked.is_empty(),
        "no all_reduce row of 4 MiB or more: {rows:?}"
    );
    for row in checked {
        // _gbps is gigabytes per second (docs/report.md).
        let busbw_bits_per_s = row["busbw_gbps"].as_f64().unwrap() * 8e9;
        println!("{} bytes: busbw {busbw_bits_per_s:.0} bit/s", row["bytes"]);
        assert!(busbw_bits_per_s > 0.0, "{row}");
        assert!(
            busbw_bits_per_s <= LINK_BITS_PER_S as f64 * 1.05,
            "busbw {busbw_bits_per_s:.0} bit/s beats a {LINK_BITS_PER_S} bit/s link: {row}"
        );
    }
}
