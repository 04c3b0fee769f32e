//! The imbalance section of the text report: expert token counts (per expert, per rank, per
//! layer), the pipeline bubble of each stage, and the data-parallel replicas' queueing.

use crate::render::{fmt_ns, fmt_pct, table};
use comfy_table::{Cell, CellAlignment, Table};
use pinch_analyzer::{ExpertImbalance, ImbalanceReport, ReplicaImbalance, Spread, StageBubble};

/// The section, or `None` when the run has none of the three views.
pub fn imbalance_text(report: &ImbalanceReport) -> Option<String> {
    let mut parts = Vec::new();
    if let Some(experts) = &report.experts {
        parts.push(experts_text(experts));
    }
    if !report.stages.is_empty() {
        parts.push(stages_text(&report.stages));
    }
    if let Some(replicas) = report.replicas.as_ref().filter(|r| r.per_replica.len() > 1) {
        parts.push(replicas_text(replicas));
    }
    (!parts.is_empty()).then(|| parts.join("\n\n"))
}

fn right(text: String) -> Cell {
    Cell::new(text).set_alignment(CellAlignment::Right)
}

/// "max 812, mean 400 (2.03×)".
fn spread_text(s: &Spread, fmt: impl Fn(f64) -> String) -> String {
    let ratio = s.max_to_mean.map_or("-".into(), |r| format!("{r:.2}×"));
    format!("max {}, mean {} ({ratio})", fmt(s.max), fmt(s.mean))
}

fn count(v: f64) -> String {
    format!("{v:.0}")
}

fn experts_text(e: &ExpertImbalance) -> String {
    let mut per_expert = table(&["expert", "tokens", "share", "ranks"]);
    for x in &e.per_expert {
        let ranks: Vec<String> = x.ranks.iter().map(u32::to_string).collect();
        per_expert.add_row(vec![
            right(x.expert.to_string()),
            right(x.tokens.to_string()),
            right(fmt_pct(x.share_pct)),
            Cell::new(ranks.join(", ")),
        ]);
    }
    let mut per_rank = table(&["rank", "experts held", "tokens"]);
    for r in &e.per_rank {
        let held = match r.held {
            1 => r.first_expert.to_string(),
            n => format!("{}-{}", r.first_expert, r.first_expert + n - 1),
        };
        per_rank.add_row(vec![
            right(r.rank.to_string()),
            right(held),
            right(r.tokens.to_string()),
        ]);
    }
    format!(
        "Expert load: token slots (a token counts once per chosen expert) over {} steps\n  \
         over experts: {}; over ranks: {}\n{per_expert}\n{per_rank}\n{}",
        e.steps,
        spread_text(&e.expert_tokens, count),
        spread_text(&e.rank_tokens, count),
        layers_table(e),
    )
}

fn layers_table(e: &ExpertImbalance) -> Table {
    let mut t = table(&["layer", "tokens", "max/mean", "hottest expert"]);
    for l in &e.per_layer {
        t.add_row(vec![
            right(l.layer.to_string()),
            right(l.tokens.to_string()),
            right(
                l.expert_tokens
                    .max_to_mean
                    .map_or("-".into(), |r| format!("{r:.2}×")),
            ),
            right(l.hottest_expert.to_string()),
        ]);
    }
    t
}

fn stages_text(stages: &[StageBubble]) -> String {
    let mut t = table(&[
        "stage",
        "ranks",
        "wall",
        "recv wait",
        "idle",
        "bubble",
        "compute/rank",
        "layers",
        "micro-batches",
    ]);
    for s in stages {
        let ranks: Vec<String> = s.ranks.iter().map(u32::to_string).collect();
        let compute = s.compute_ns_per_rank();
        t.add_row(vec![
            right(s.stage.to_string()),
            Cell::new(ranks.join(", ")),
            right(fmt_ns(s.wall_ns)),
            right(fmt_ns(s.recv_wait_ns)),
            right(fmt_ns(s.idle_ns)),
            right(s.bubble_pct.map_or("-".into(), fmt_pct)),
            right(compute.map_or("-".into(), |c| fmt_ns(c.round() as u64))),
            right(s.layers.map_or("-".into(), |l| l.to_string())),
            right(s.micro_batches.map_or("-".into(), |m| m.to_string())),
        ]);
    }
    format!(
        "Pipeline bubble per stage (receive waiting plus idle time, over the stage's wall \
         time after loading its weights)\n{t}"
    )
}

fn replicas_text(r: &ReplicaImbalance) -> String {
    let mut t = table(&[
        "replica",
        "ranks",
        "requests",
        "output tokens",
        "queue mean",
        "queue max",
    ]);
    let ns = |v: Option<f64>| v.map_or("-".into(), |v| fmt_ns(v.round().max(0.0) as u64));
    for x in &r.per_replica {
        let ranks: Vec<String> = x.ranks.iter().map(u32::to_string).collect();
        t.add_row(vec![
            right(x.replica.to_string()),
            Cell::new(ranks.join(", ")),
            right(x.requests.to_string()),
            right(x.output_tokens.to_string()),
            right(ns(x.queue_ns_mean)),
            right(x.queue_ns_max.map_or("-".into(), fmt_ns)),
        ]);
    }
    let queue = r.queue_ns_mean.as_ref().map_or("-".into(), |s| {
        spread_text(s, |v| fmt_ns(v.round().max(0.0) as u64))
    });
    format!(
        "Replica load: requests {}; output tokens {}; queueing before the first step {}\n{t}",
        spread_text(&r.requests, count),
        spread_text(&r.output_tokens, count),
        queue,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinch_analyzer::{ReplicaLoad, StageBubble};

    fn spread(max: f64, mean: f64) -> Spread {
        Spread {
            max,
            mean,
            max_to_mean: Some(max / mean),
        }
    }

    #[test]
    fn stages_and_replicas_read_as_tables_and_nothing_shows_without_data() {
        assert_eq!(imbalance_text(&ImbalanceReport::default()), None);
        let report = ImbalanceReport {
            experts: None,
            stages: vec![StageBubble {
                stage: 1,
                ranks: vec![2, 3],
                wall_ns: 2_000_000,
                recv_wait_ns: 500_000,
                idle_ns: 100_000,
                bubble_ns: 600_000,
                bubble_pct: Some(30.0),
                startup_ns: 0,
                compute_ns: 2_400_000,
                layers: Some(4),
                micro_batches: Some(24),
                steps: Some(12),
            }],
            replicas: Some(ReplicaImbalance {
                per_replica: (0..2)
                    .map(|replica| ReplicaLoad {
                        replica,
                        ranks: vec![replica],
                        requests: 3,
                        output_tokens: 18,
                        queued_requests: 3,
                        queue_ns_mean: Some(2_000.0),
                        queue_ns_max: Some(4_000),
                        e2e_ns_mean: Some(1e6),
                    })
                    .collect(),
                requests: spread(3.0, 3.0),
                output_tokens: spread(18.0, 18.0),
                queue_ns_mean: Some(spread(2_000.0, 2_000.0)),
            }),
        };
        let text = imbalance_text(&report).unwrap_or_default();
        assert!(text.contains("Pipeline bubble per stage"), "{text}");
        assert!(text.contains("2, 3") && text.contains("30.0%"), "{text}");
        assert!(text.contains("1.20 ms") && text.contains("24"), "{text}");
        assert!(
            text.contains("Replica load: requests max 3, mean 3 (1.00×)"),
            "{text}"
        );
        assert!(text.contains("2.0 µs") && text.contains("4.0 µs"), "{text}");
    }
}
