//! End-to-end: `pinch bench collectives` sweeps every operation in threads or as one rank of a
//! multi-process world, and refuses bad values naming them.

mod common;

use common::{pinch, stderr_of};
use serde_json::Value;
use std::net::TcpListener;
use std::process::{Command, Stdio};

fn rows_of(stdout: &[u8]) -> Vec<Value> {
    let rows: Value = serde_json::from_slice(stdout).expect("stdout is JSON");
    rows.as_array().expect("a JSON array").clone()
}

/// The sizes of the rows of `kind`, in order.
fn sizes(rows: &[Value], kind: &str) -> Vec<u64> {
    rows.iter()
        .filter(|r| r["kind"] == kind)
        .map(|r| r["bytes"].as_u64().expect("bytes"))
        .collect()
}

#[test]
fn a_threaded_sweep_reports_every_op_at_every_size() {
    let assert = pinch()
        .args([
            "bench",
            "collectives",
            "--ranks=3",
            "--max-bytes=1K",
            "--json",
        ])
        .assert()
        .success();
    let rows = rows_of(&assert.get_output().stdout);
    assert_eq!(
        sizes(&rows, "all_reduce"),
        vec![8, 16, 32, 64, 128, 256, 512, 1024]
    );
    assert_eq!(
        sizes(&rows, "send"),
        vec![8, 16, 32, 64, 128, 256, 512, 1024]
    );
    assert_eq!(
        sizes(&rows, "all_gather")[..3],
        [12, 24, 36],
        "multiples of 3 ranks"
    );
    for kind in ["reduce_scatter", "all_to_all", "broadcast"] {
        assert_eq!(sizes(&rows, kind).len(), 8, "{kind}");
    }
    for row in &rows {
        let (algbw, busbw) = (row["algbw_gbps"].as_f64(), row["busbw_gbps"].as_f64());
        assert!(algbw.is_some_and(|a| a > 0.0), "{row}");
        if row["kind"] == "all_reduce" {
            let factor = 2.0 * 2.0 / 3.0;
            assert!(
                (busbw.unwrap() - algbw.unwrap() * factor).abs() < 1e-12,
                "{row}"
            );
        }
    }
}

#[test]
fn the_table_names_each_op() {
    let assert = pinch()
        .args([
            "bench",
            "collectives",
            "--ops=send_recv,broadcast",
            "--max-bytes=16",
        ])
        .args(["--transport=tcp"])
        .assert()
        .success();
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).to_string();
    assert!(
        stdout.starts_with("# pinch bench collectives: 2 ranks"),
        "{stdout}"
    );
    assert!(stdout.contains("transport tcp"), "{stdout}");
    let lines: Vec<&str> = stdout.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    assert!(lines[0].trim_start().starts_with("send_recv"), "{stdout}");
    assert!(lines[3].trim_start().starts_with("broadcast"), "{stdout}");
}

#[test]
fn bad_values_exit_2_naming_them() {
    for (flag, names) in [
        ("--max-bytes=12Q", "'12Q'"),
        ("--ops=all_reduce,gossip", "'gossip'"),
        ("--ranks=0", "'0'"),
        ("--transport=carrier-pigeon", "'carrier-pigeon'"),
    ] {
        let assert = pinch()
            .args(["bench", "collectives", flag])
            .assert()
            .code(2);
        let stderr = stderr_of(&assert);
        assert!(stderr.contains(names), "{flag}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{flag}: {stderr}");
    }
}

#[test]
fn ranks_in_separate_processes_meet_at_rank_0s_rendezvous() {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let rendezvous = format!("--rendezvous=127.0.0.1:{port}");
    let common = [
        "bench",
        "collectives",
        "--world=2",
        "--listen=127.0.0.1",
        "--max-bytes=64",
    ];
    let rank1 = Command::new(assert_cmd::cargo::cargo_bin("pinch"))
        .args(common)
        .args(["--rank=1", &rendezvous, "--json", "--transport=tcp"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let rank0 = pinch()
        .args(common)
        .args(["--rank=0", &rendezvous, "--json", "--transport=tcp"])
        .assert()
        .success();
    let rank1 = rank1.wait_with_output().unwrap();
    assert!(rank1.status.success());
    assert!(rank1.stdout.is_empty(), "only rank 0 prints");
    let rows = rows_of(&rank0.get_output().stdout);
    assert_eq!(sizes(&rows, "all_to_all"), vec![8, 16, 32, 64]);
}
