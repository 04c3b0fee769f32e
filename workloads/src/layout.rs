//! How a run's ranks are laid out: the parallel degrees (`--parallel tp=2,pp=2`), each rank's
//! coordinates, and the communicator groups the ranks form.
//!
//! Ranks are numbered with tensor parallelism innermost, then pipeline stages, then data-parallel
//! replicas: rank = (replica · pp + stage) · tp + tp_rank. Placed node-major, the ranks of one
//! tensor-parallel group (the chattiest) share a node whenever a node holds at least `tp` ranks.
//!
//! Expert parallelism runs as DeepSeek is served: attention data-parallel (every rank is its own
//! replica with its own requests) and the routed experts sharded over all `ep` ranks, which
//! exchange tokens with all-to-all. So `ep=N` means N single-rank replicas; `dp` may be given too
//! but must then equal `ep`.

use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;

/// The parallel degrees of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// Data-parallel replicas (each serves its own requests).
    pub dp: usize,
    /// Tensor-parallel degree within a stage.
    pub tp: usize,
    /// Pipeline stages.
    pub pp: usize,
    /// Expert-parallel degree (1: every rank holds its share of every expert).
    pub ep: usize,
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum LayoutError {
    #[error("parallel layout '{text}' is not of the form 'tp=2,pp=2' (keys dp, tp, pp, ep)")]
    Syntax { text: String },
    #[error("'{key}' is not a parallelism (known: dp, tp, pp, ep)")]
    UnknownKey { key: String },
    #[error("'{key}' is given twice in the parallel layout")]
    Duplicate { key: String },
    #[error("{key} degree '{value}' must be a whole number of at least 1")]
    BadDegree { key: String, value: String },
    #[error(
        "ep={ep} runs attention data-parallel, so it cannot be combined with {what}; \
         use ep alone (or dp={ep},ep={ep})"
    )]
    EpCombination { ep: usize, what: String },
    #[error("{world} ranks ({layout}) cannot be spread evenly over '{nodes}' nodes")]
    Nodes {
        world: usize,
        layout: String,
        nodes: usize,
    },
}

/// Where one rank sits in the layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coords {
    pub rank: usize,
    pub replica: usize,
    pub stage: usize,
    pub tp_rank: usize,
}

/// The groups one rank takes part in, each a list of global ranks in group order with an id
/// unique in the world (ids are what messages are matched by).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RankGroups {
    /// The rank's tensor-parallel group (its stage of its replica).
    pub tp: GroupSpec,
    /// Every rank of the replica; the leader (stage 0, tp rank 0) is first and broadcasts plans.
    pub replica: GroupSpec,
    /// The pair (this rank, same tp rank of the next stage); `None` on the last stage.
    pub next_stage: Option<GroupSpec>,
    /// The pair (same tp rank of the previous stage, this rank); `None` on the first stage.
    pub prev_stage: Option<GroupSpec>,
    /// The pair (leader, last stage's tp rank 0) that carries sampled tokens back to the leader;
    /// `None` unless pipelined and this rank is one of the two.
    pub token_return: Option<GroupSpec>,
    /// All ranks, for expert-parallel all-to-all; `None` without expert parallelism.
    pub experts: Option<GroupSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupSpec {
    pub id: u32,
    pub members: Vec<usize>,
}

impl Default for Layout {
    fn default() -> Layout {
        Layout {
            dp: 1,
            tp: 1,
            pp: 1,
            ep: 1,
        }
    }
}

impl Layout {
    /// Parses `tp=2,pp=2`-style text; absent keys are 1. Checks the combination is one pinch
    /// runs; whether the model fits it is the model's check.
    pub fn parse(text: &str) -> Result<Layout, LayoutError> {
        let mut layout = Layout::default();
        let mut seen = Vec::new();
        for part in text.split(',').map(str::trim) {
            let (key, value) = part.split_once('=').ok_or_else(|| LayoutError::Syntax {
                text: text.to_string(),
            })?;
            let (key, value) = (key.trim(), value.trim());
            if seen.contains(&key) {
                return Err(LayoutError::Duplicate { key: key.into() });
            }
            seen.push(key);
            let degree = parse_degree(key, value)?;
            match key {
                "dp" => layout.dp = degree,
                "tp" => layout.tp = degree,
                "pp" => layout.pp = degree,
                "ep" => layout.ep = degree,
                _ => unreachable_key(key)?,
            }
        }
        layout.normalized()
    }

    /// A tensor-parallel-only layout.
    pub fn tensor(tp: usize) -> Layout {
        Layout {
            tp,
            ..Layout::default()
        }
    }

    /// Checks the expert-parallel combination and makes `dp` equal `ep` when only `ep` is given.
    fn normalized(mut self) -> Result<Layout, LayoutError> {
        if self.ep > 1 {
            let clash = [
                (self.tp > 1, format!("tp={}", self.tp)),
                (self.pp > 1, format!("pp={}", self.pp)),
                (self.dp > 1 && self.dp != self.ep, format!("dp={}", self.dp)),
            ];
            if let Some((_, what)) = clash.into_iter().find(|(bad, _)| *bad) {
                return Err(LayoutError::EpCombination { ep: self.ep, what });
            }
            self.dp = self.ep;
        }
        Ok(self)
    }

    /// Ranks in the world.
    pub fn world(&self) -> usize {
        self.dp * self.pp * self.tp
    }

    /// Ranks per replica.
    pub fn replica_size(&self) -> usize {
        self.pp * self.tp
    }

    pub fn coords(&self, rank: usize) -> Coords {
        Coords {
            rank,
            replica: rank / self.replica_size(),
            stage: (rank / self.tp) % self.pp,
            tp_rank: rank % self.tp,
        }
    }

    pub fn rank_of(&self, replica: usize, stage: usize, tp_rank: usize) -> usize {
        (replica * self.pp + stage) * self.tp + tp_rank
    }

    /// The leader of `replica`: stage 0, tensor-parallel rank 0.
    pub fn leader(&self, replica: usize) -> usize {
        self.rank_of(replica, 0, 0)
    }

    /// Checks the world can be spread evenly over `nodes` nodes.
    pub fn check_nodes(&self, nodes: usize) -> Result<(), LayoutError> {
        if nodes == 0 || !self.world().is_multiple_of(nodes) {
            return Err(LayoutError::Nodes {
                world: self.world(),
                layout: self.to_string(),
                nodes,
            });
        }
        Ok(())
    }

    /// The groups `rank` belongs to. Ids: tp groups first, then replicas, stage pairs, token
    /// returns and the expert group, so every rank derives the same ids.
    pub fn groups(&self, rank: usize) -> RankGroups {
        let c = self.coords(rank);
        let world = self.world() as u32;
        let stage_base = self.rank_of(c.replica, c.stage, 0);
        let tp = GroupSpec {
            id: (stage_base / self.tp) as u32,
            members: (stage_base..stage_base + self.tp).collect(),
        };
        let replica_base = self.leader(c.replica);
        let replica = GroupSpec {
            id: world + c.replica as u32,
            members: (replica_base..replica_base + self.replica_size()).collect(),
        };
        let pair = |stage: usize| GroupSpec {
            // One id per (lower stage's rank): unique since each rank has one next stage.
            id: 2 * world + self.rank_of(c.replica, stage, c.tp_rank) as u32,
            members: vec![
                self.rank_of(c.replica, stage, c.tp_rank),
                self.rank_of(c.replica, stage + 1, c.tp_rank),
            ],
        };
        let last = self.rank_of(c.replica, self.pp - 1, 0);
        let token_return =
            (self.pp > 1 && (rank == replica_base || rank == last)).then(|| GroupSpec {
                id: 3 * world + c.replica as u32,
                members: vec![replica_base, last],
            });
        RankGroups {
            tp,
            replica,
            next_stage: (c.stage + 1 < self.pp).then(|| pair(c.stage)),
            prev_stage: (c.stage > 0).then(|| pair(c.stage - 1)),
            token_return,
            experts: (self.ep > 1).then(|| GroupSpec {
                id: 4 * world,
                members: (0..self.world()).collect(),
            }),
        }
    }
}

impl fmt::Display for Layout {
    /// `tp=2,pp=2`: the degrees above 1 (`tp=1` for a single rank); dp is implied by ep.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = [
            ("dp", self.dp, self.ep == 1),
            ("tp", self.tp, true),
            ("pp", self.pp, true),
            ("ep", self.ep, true),
        ]
        .into_iter()
        .filter(|&(_, degree, shown)| shown && degree > 1)
        .map(|(key, degree, _)| format!("{key}={degree}"))
        .collect();
        if parts.is_empty() {
            return f.write_str("tp=1");
        }
        f.write_str(&parts.join(","))
    }
}

fn parse_degree(key: &str, value: &str) -> Result<usize, LayoutError> {
    unreachable_key(key)?;
    value
        .parse::<usize>()
        .ok()
        .filter(|&d| d >= 1)
        .ok_or_else(|| LayoutError::BadDegree {
            key: key.to_string(),
            value: value.to_string(),
        })
}

fn unreachable_key(key: &str) -> Result<(), LayoutError> {
    match key {
        "dp" | "tp" | "pp" | "ep" => Ok(()),
        _ => Err(LayoutError::UnknownKey {
            key: key.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_degrees_and_defaults_the_rest_to_one() {
        let layout = Layout::parse("tp=2, pp=2").unwrap();
        assert_eq!((layout.dp, layout.tp, layout.pp, layout.ep), (1, 2, 2, 1));
        assert_eq!(layout.world(), 4);
        assert_eq!(layout.to_string(), "tp=2,pp=2");
        assert_eq!(Layout::parse("tp=1").unwrap().to_string(), "tp=1");
    }

    #[test]
    fn ep_alone_means_data_parallel_attention() {
        let layout = Layout::parse("ep=4").unwrap();
        assert_eq!((layout.dp, layout.ep, layout.world()), (4, 4, 4));
        assert_eq!(
            Layout::parse("dp=2,ep=2").unwrap(),
            Layout::parse("ep=2").unwrap()
        );
        assert_eq!(layout.to_string(), "ep=4");
    }

    #[test]
    fn bad_layouts_say_why() {
        let err = |t: &str| Layout::parse(t).unwrap_err().to_string();
        assert!(err("tp2").contains("'tp2'"));
        assert!(err("xp=2").contains("'xp'"));
        assert!(err("tp=0").contains("'0'"));
        assert!(err("tp=two").contains("'two'"));
        assert!(err("tp=2,tp=4").contains("twice"));
        assert!(err("ep=2,tp=2").contains("tp=2"));
        assert!(err("ep=2,dp=4").contains("dp=4"));
        assert!(
            Layout::parse("tp=2,pp=2")
                .unwrap()
                .check_nodes(3)
                .unwrap_err()
                .to_string()
                .contains("'3'")
        );
    }

    #[test]
    fn ranks_are_tp_innermost_then_stages_then_replicas() {
        let layout = Layout::parse("dp=2,tp=2,pp=2").unwrap();
        assert_eq!(
            layout.coords(5),
            Coords {
                rank: 5,
                replica: 1,
                stage: 0,
                tp_rank: 1
            }
        );
        assert_eq!(layout.rank_of(1, 1, 0), 6);
        assert_eq!(layout.leader(1), 4);
    }

    #[test]
    fn groups_agree_between_their_members_and_ids_are_unique() {
        let layout = Layout::parse("dp=2,tp=2,pp=2").unwrap();
        let mut ids = std::collections::BTreeMap::new();
        for rank in 0..layout.world() {
            let g = layout.groups(rank);
            let all = [
                Some(g.tp),
                Some(g.replica),
                g.next_stage,
                g.prev_stage,
                g.token_return,
                g.experts,
            ];
            for spec in all.into_iter().flatten() {
                assert!(spec.members.contains(&rank));
                let members = ids.entry(spec.id).or_insert_with(|| spec.members.clone());
                assert_eq!(*members, spec.members, "group {} differs", spec.id);
            }
        }
        let g = layout.groups(2);
        assert_eq!(g.prev_stage.unwrap().members, vec![0, 2]);
        assert_eq!(g.token_return.unwrap().members, vec![0, 2]);
        assert!(layout.groups(3).token_return.is_none());
    }
}
