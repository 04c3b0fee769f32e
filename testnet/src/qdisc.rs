//! Turns a [`LinkShape`] into the `tc` commands that impose it on one end of a veth.
//!
//! A rate becomes a token bucket (`tbf`); delay and loss need `netem`, which then sits at the
//! root with the token bucket as its child, the layout netem's own documentation gives.

use crate::{LinkShape, TestNetError, tool};

/// Packets netem may hold; generous so that a long delay on a fast link never drops by itself.
const NETEM_LIMIT_PACKETS: u32 = 100_000;
/// The smallest bucket: larger than a 64 KiB GSO packet, so the bucket never has to split one.
const MIN_BURST_BYTES: u64 = 96 * 1024;
/// How long the bucket lets a queue grow before it drops, in milliseconds of the link rate.
const QUEUE_MS: u64 = 20;

/// One `tc qdisc add`, and the qdisc kind it needs from the kernel.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct QdiscAdd {
    pub(crate) kind: &'static str,
    pub(crate) args: Vec<String>,
}

/// Bytes the token bucket may send at once after an idle spell: 1 ms of the rate, at least
/// [`MIN_BURST_BYTES`]. Small, so short transfers cannot beat the rate by much.
pub(crate) fn burst_bytes(rate_bits_per_s: u64) -> u64 {
    (rate_bits_per_s / 8 / 1000).max(MIN_BURST_BYTES)
}

/// Bytes the token bucket queues before dropping: the burst plus [`QUEUE_MS`] of the rate.
pub(crate) fn queue_limit_bytes(rate_bits_per_s: u64) -> u64 {
    burst_bytes(rate_bits_per_s) + rate_bits_per_s / 8 * QUEUE_MS / 1000
}

/// The qdiscs that give device `dev` in namespace `ns` the shape; empty for an unshaped link.
pub(crate) fn plan(ns: &str, dev: &str, shape: &LinkShape) -> Vec<QdiscAdd> {
    let needs_netem = !shape.delay.is_zero() || shape.loss_percent > 0.0;
    let mut adds = Vec::new();
    if needs_netem {
        adds.push(QdiscAdd {
            kind: "netem",
            args: add_args(ns, dev, &["root", "handle", "1:"], &netem_params(shape)),
        });
    }
    if let Some(rate_bits_per_s) = shape.rate_bits_per_s {
        let parent: &[&str] = if needs_netem {
            &["parent", "1:1", "handle", "10:"]
        } else {
            &["root", "handle", "1:"]
        };
        adds.push(QdiscAdd {
            kind: "tbf",
            args: add_args(ns, dev, parent, &tbf_params(rate_bits_per_s)),
        });
    }
    adds
}

/// Replaces whatever shapes `dev` in `ns` with `shape`.
pub(crate) fn apply(ns: &str, dev: &str, shape: &LinkShape) -> Result<(), TestNetError> {
    // A fresh veth has no root qdisc to delete, so this failing is expected; a stale one that
    // refused to go would make the add below fail, which is reported.
    let _ = tool::tc(&["-n", ns, "qdisc", "del", "dev", dev, "root"]);
    for add in plan(ns, dev, shape) {
        tool::tc(&add.args).map_err(|err| missing_kind(err, &add))?;
    }
    Ok(())
}

/// Names the missing qdisc when `tc` says the kernel does not know its kind.
fn missing_kind(err: TestNetError, add: &QdiscAdd) -> TestNetError {
    match &err {
        TestNetError::Command { stderr, .. } if stderr.contains("qdisc kind is unknown") => {
            TestNetError::QdiscMissing {
                kind: add.kind,
                needed: match add.kind {
                    "netem" => "link delay and loss".to_owned(),
                    _ => "a link rate".to_owned(),
                },
            }
        }
        _ => err,
    }
}

fn add_args(ns: &str, dev: &str, position: &[&str], params: &[String]) -> Vec<String> {
    let head = ["-n", ns, "qdisc", "add", "dev", dev];
    head.iter()
        .chain(position)
        .map(|s| (*s).to_owned())
        .chain(params.iter().cloned())
        .collect()
}

fn netem_params(shape: &LinkShape) -> Vec<String> {
    let mut params = vec![
        "netem".to_owned(),
        "limit".to_owned(),
        NETEM_LIMIT_PACKETS.to_string(),
    ];
    if !shape.delay.is_zero() {
        params.extend(["delay".to_owned(), format!("{}us", shape.delay.as_micros())]);
    }
    if shape.loss_percent > 0.0 {
        params.extend([
            "loss".to_owned(),
            "random".to_owned(),
            format!("{}%", shape.loss_percent),
        ]);
    }
    params
}

fn tbf_params(rate_bits_per_s: u64) -> Vec<String> {
    vec![
        "tbf".to_owned(),
        "rate".to_owned(),
        format!("{rate_bits_per_s}bit"),
        "burst".to_owned(),
        burst_bytes(rate_bits_per_s).to_string(),
        "limit".to_owned(),
        queue_limit_bytes(rate_bits_per_s).to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn joined(adds: &[QdiscAdd]) -> Vec<String> {
        adds.iter().map(|add| add.args.join(" ")).collect()
    }

    #[test]
    fn an_unshaped_link_gets_no_qdisc() {
        assert!(plan("ns", "tn0", &LinkShape::default()).is_empty());
    }

    #[test]
    fn a_rate_alone_is_a_root_token_bucket() {
        let shape = LinkShape::rate(1_000_000_000);
        assert_eq!(
            joined(&plan("ns", "tn0", &shape)),
            [
                "-n ns qdisc add dev tn0 root handle 1: tbf rate 1000000000bit burst 125000 limit 2625000"
            ]
        );
    }

    #[test]
    fn delay_and_loss_put_netem_at_the_root_above_the_bucket() {
        let shape = LinkShape {
            rate_bits_per_s: Some(100_000_000),
            delay: Duration::from_millis(5),
            loss_percent: 0.5,
        };
        let adds = plan("ns", "tn0", &shape);
        assert_eq!(
            joined(&adds),
            [
                "-n ns qdisc add dev tn0 root handle 1: netem limit 100000 delay 5000us loss random 0.5%",
                "-n ns qdisc add dev tn0 parent 1:1 handle 10: tbf rate 100000000bit burst 98304 limit 348304",
            ]
        );
        assert_eq!(adds[0].kind, "netem");
        assert_eq!(adds[1].kind, "tbf");
    }

    #[test]
    fn the_burst_holds_a_whole_gso_packet_even_on_slow_links() {
        assert_eq!(burst_bytes(1_000_000), MIN_BURST_BYTES);
        assert!(burst_bytes(1_000_000) > 65_536);
        assert_eq!(burst_bytes(10_000_000_000), 1_250_000);
    }

    #[test]
    fn an_unknown_kind_is_named_as_missing() {
        let add = QdiscAdd {
            kind: "netem",
            args: Vec::new(),
        };
        let err = TestNetError::Command {
            command: "tc qdisc add".to_owned(),
            stderr: "Error: Specified qdisc kind is unknown.".to_owned(),
        };
        let err = missing_kind(err, &add);
        assert_eq!(
            err.to_string(),
            "qdisc 'netem' is missing from this kernel; it is needed for link delay and loss"
        );
    }
}
