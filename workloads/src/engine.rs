//! A rank's serving loop: the same code on every rank of every layout.
//!
//! Each data-parallel replica has a leader (stage 0, tensor-parallel rank 0). The leader takes
//! requests from the router, keeps the replica's scheduler, and each step broadcasts the step's
//! plan to the rest of the replica; every rank then runs its stage of the forward pass. Pipeline
//! stages split the step's sequences into micro-batches: stage 0 embeds and sends micro-batch
//! after micro-batch, each stage receives, computes and sends on, and the last stage samples and
//! sends the tokens back to the leader, so the schedule (and its bubbles) shows in the spans.
//! The leader then commits the tokens, reports finished requests, and plans the next step.
//!
//! With expert parallelism every rank is its own replica but all of them must take part in
//! every step's all-to-alls: before each step they all-reduce whether anyone has work, and a
//! rank without requests runs the step with no rows (its experts still serve the others).

use crate::comm::{AllReduceAlgo, CommError, Group, Mesh};
use crate::config::ModelConfig;
use crate::error::WorkloadError;
use crate::layout::{GroupSpec, Layout, RankGroups};
use crate::model::{Batch, Comms, MoeOptions, SeqInput, StageModel};
use crate::serving::{
    RequestSpec, RequestWorkload, RoutePolicy, RouterClient, RouterEvent, Scheduler,
    SchedulerConfig, ServingError, StepPlan,
};
use crate::trace::{At, Issue, Tracer};
use crate::weights::{ShardSpec, ShardWeights, load_shard, synthetic_shard};
use pinch_collector::Recorder;
use pinch_kernels::Storage;
use pinch_traces::{CollectiveKind, ExpertTokens, Rank, RequestRecord};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;
use thiserror::Error;

/// How long an idle leader waits on the router before looking again.
const IDLE_WAIT: Duration = Duration::from_millis(20);
/// How long an idle expert-parallel rank waits before the next step's agreement.
const EP_IDLE_WAIT: Duration = Duration::from_millis(2);

/// Everything a serving run needs, the same on every rank (the coordinator writes it once).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ServeConfig {
    pub model: ModelConfig,
    /// A directory of safetensors to load; `None`: seeded synthetic weights.
    pub weights_dir: Option<PathBuf>,
    pub storage: Storage,
    pub layout: Layout,
    pub seed: u64,
    pub requests: RequestWorkload,
    pub route: RoutePolicy,
    /// Positions per KV-cache block.
    pub block_size: usize,
    /// KV-cache blocks per replica.
    pub kv_blocks: usize,
    pub max_seqs: usize,
    pub max_batch_tokens: usize,
    pub chunked_prefill: bool,
    /// Pipeline micro-batches per step (at most one per sequence).
    pub micro_batches: usize,
    pub capacity_factor: Option<f32>,
    pub all_reduce: AllReduceChoice,
    /// Threads each rank's matmuls may use.
    pub threads: usize,
    /// Shared memory between ranks of one node (else TCP everywhere).
    pub shm: bool,
    pub faults: Faults,
}

/// Which all-reduce algorithm the tensor-parallel groups use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllReduceChoice {
    Auto,
    Ring,
    OneShot,
}

/// Injected faults (docs/faults.md).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Faults {
    /// This rank's compute takes `factor` times as long.
    pub slow_rank: Option<(usize, f64)>,
    /// Skews expert routing towards low expert ids, Zipf-like with this exponent.
    pub expert_skew: Option<f64>,
    /// This rank aborts after this many steps.
    pub crash: Option<(usize, u32)>,
    /// This rank is pinned to these CPU cores.
    pub pin: Option<(usize, Vec<usize>)>,
    /// Links slowed down in software: (rank a, rank b, added delay in µs, rate cap in bytes/s).
    pub links: Vec<LinkFault>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkFault {
    pub a: usize,
    pub b: usize,
    pub delay_us: u64,
    pub rate_bytes_per_s: Option<u64>,
}

#[derive(Debug, Error)]
pub enum ServeError {
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    #[error(transparent)]
    Comm(#[from] CommError),
    #[error(transparent)]
    Serving(#[from] ServingError),
    #[error("rank {rank} received a plan it cannot decode: {reason}")]
    BadPlan { rank: usize, reason: String },
    #[error("the replica's leader expected {expected} sampled tokens but got '{got}'")]
    TokenCount { expected: usize, got: usize },
    #[error("the replica leader of rank {rank} was started without a router connection")]
    NoRouter { rank: usize },
}

/// What travels from a replica's leader to its other ranks each step.
#[derive(Debug, Serialize, Deserialize)]
enum Control {
    Step(StepPlan),
    Stop,
}

/// A rank's connections to the rest of the run and to its agent.
pub struct RankIo<'a> {
    pub mesh: &'a mut Mesh,
    /// The router, for a replica's leader.
    pub router: Option<RouterClient>,
    pub recorder: &'a Recorder,
    /// Called after each step with the number of steps done (the crash fault hooks in here).
    pub on_step: &'a mut dyn FnMut(u32),
    /// Called with every request the replica finished (leaders only).
    pub on_request: &'a mut dyn FnMut(RequestRecord),
    /// Called after each step in which this rank's experts processed tokens.
    pub on_expert_tokens: &'a mut dyn FnMut(ExpertTokens),
}

impl std::fmt::Debug for RankIo<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RankIo")
            .field("rank", &self.mesh.rank())
            .field("leads", &self.router.is_some())
            .finish_non_exhaustive()
    }
}

/// What a rank did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RankSummary {
    pub steps: u32,
    pub requests: usize,
    pub weight_bytes: u64,
    pub kv_pool_bytes: u64,
}

impl ServeConfig {
    pub fn algo(&self) -> AllReduceAlgo {
        match self.all_reduce {
            AllReduceChoice::Auto => AllReduceAlgo::Auto,
            AllReduceChoice::Ring => AllReduceAlgo::Ring,
            AllReduceChoice::OneShot => AllReduceAlgo::OneShot,
        }
    }

    fn shard_spec(&self, rank: usize) -> ShardSpec {
        let c = self.layout.coords(rank);
        let expert_parallel = self.layout.ep > 1;
        ShardSpec {
            tp_rank: c.tp_rank,
            tp: self.layout.tp,
            layers: self.model.stage_layers(c.stage, self.layout.pp),
            ep_rank: if expert_parallel { c.replica } else { 0 },
            ep: self.layout.ep,
            storage: self.storage,
        }
    }

    fn scheduler_config(&self, replica: usize) -> SchedulerConfig {
        SchedulerConfig {
            replica: replica as u32,
            block_size: self.block_size,
            blocks: self.kv_blocks,
            max_seqs: self.max_seqs,
            max_batch_tokens: self.max_batch_tokens,
            chunked_prefill: self.chunked_prefill,
        }
    }
}

/// The groups of one rank, as communicators.
struct Groups {
    tp: Group,
    replica: Group,
    next_stage: Option<Group>,
    prev_stage: Option<Group>,
    token_return: Option<Group>,
    experts: Option<Group>,
}

impl Groups {
    fn new(specs: RankGroups, rank: usize) -> Result<Groups, CommError> {
        let make = |spec: GroupSpec| Group::new(spec.id, spec.members, rank);
        let maybe = |spec: Option<GroupSpec>| spec.map(make).transpose();
        Ok(Groups {
            tp: make(specs.tp)?,
            replica: make(specs.replica)?,
            next_stage: maybe(specs.next_stage)?,
            prev_stage: maybe(specs.prev_stage)?,
            token_return: maybe(specs.token_return)?,
            experts: maybe(specs.experts)?,
        })
    }
}

/// One rank's whole run.
struct Engine<'a, 'r> {
    config: &'a ServeConfig,
    rank: usize,
    stage: usize,
    tracer: Tracer<'r>,
    model: StageModel,
    groups: Groups,
    step: u32,
    on_expert_tokens: &'a mut dyn FnMut(ExpertTokens),
}

/// Runs rank `rank`'s part of the serving run described by `config`.
pub fn serve_rank(
    config: &ServeConfig,
    rank: usize,
    io: RankIo,
) -> Result<RankSummary, ServeError> {
    let RankIo {
        mesh,
        router,
        recorder,
        on_step,
        on_request,
        on_expert_tokens,
    } = io;
    let factor = match config.faults.slow_rank {
        Some((slow, factor)) if slow == rank => factor,
        _ => 1.0,
    };
    let tracer = Tracer::new(recorder).with_compute_factor(factor);
    let weights = tracer.host(tracer.ops.weights_init, At::step(0), || {
        load_weights(config, rank)
    })?;
    let model = StageModel::new(
        &config.model,
        weights,
        config.kv_blocks,
        config.block_size,
        MoeOptions {
            capacity_factor: config.capacity_factor,
            skew: config.faults.expert_skew,
        },
    );
    let mut summary = RankSummary {
        weight_bytes: model.weight_bytes(),
        kv_pool_bytes: model.kv_pool_bytes(),
        ..RankSummary::default()
    };
    let mut engine = Engine {
        config,
        rank,
        stage: config.layout.coords(rank).stage,
        tracer,
        model,
        groups: Groups::new(config.layout.groups(rank), rank)?,
        step: 0,
        on_expert_tokens,
    };
    let leader = config.layout.coords(rank);
    let is_leader = leader.stage == 0 && leader.tp_rank == 0;
    if config.layout.ep > 1 {
        let router = router.ok_or(ServeError::NoRouter { rank })?;
        summary.requests = engine.run_expert_parallel(mesh, router, on_step, on_request)?;
    } else if is_leader {
        let router = router.ok_or(ServeError::NoRouter { rank })?;
        summary.requests = engine.lead(mesh, router, on_step, on_request)?;
    } else {
        engine.follow(mesh, on_step)?;
    }
    summary.steps = engine.step;
    Ok(summary)
}

fn load_weights(config: &ServeConfig, rank: usize) -> Result<ShardWeights, WorkloadError> {
    let spec = config.shard_spec(rank);
    match &config.weights_dir {
        Some(dir) => load_shard(dir, &config.model, &spec),
        None => synthetic_shard(&config.model, config.seed, &spec),
    }
}

/// A replica leader's view of the request stream.
struct Intake {
    router: RouterClient,
    scheduler: Scheduler,
    finished: usize,
}

impl Intake {
    /// Takes what the router has for this replica; when there is nothing to do, waits for it
    /// (as an idle span) up to `patience`.
    fn take(&mut self, tracer: &Tracer, step: u32, patience: Duration) -> Result<(), ServeError> {
        let arrived = self.router.poll()?;
        self.admit(tracer, arrived)?;
        if self.scheduler.is_idle() && !self.router.is_ended() {
            let event = tracer.wait(tracer.ops.idle, At::step(step), || {
                self.router.wait(patience)
            })?;
            if let Some(RouterEvent::Requests(arrived)) = event {
                self.admit(tracer, arrived)?;
            }
        }
        Ok(())
    }

    fn admit(&mut self, tracer: &Tracer, arrived: Vec<RequestSpec>) -> Result<(), ServeError> {
        let now = tracer.now_ns();
        for request in arrived {
            self.scheduler.add(request, now)?;
        }
        Ok(())
    }

    /// Nothing left to serve, and nothing more coming.
    fn is_done(&self) -> bool {
        self.scheduler.is_idle() && self.router.is_ended()
    }

    fn commit(
        &mut self,
        tracer: &Tracer,
        plan: &StepPlan,
        tokens: &[u32],
        on_request: &mut dyn FnMut(RequestRecord),
    ) -> Result<(), ServeError> {
        let done = self.scheduler.complete(plan, tokens, tracer.now_ns())?;
        for request in done {
            self.router.finished(request.id, request.tokens.len())?;
            self.finished += 1;
            on_request(request);
        }
        Ok(())
    }
}

impl Engine<'_, '_> {
    fn at(&self) -> At {
        At::step(self.step)
    }

    /// Reports the step's expert counts, then moves on to the next step.
    fn finish_step(&mut self, on_step: &mut dyn FnMut(u32)) {
        let rank = Rank(self.rank as u32);
        if let Some(tokens) = self.model.take_expert_tokens(rank, self.step) {
            (self.on_expert_tokens)(tokens);
        }
        self.step += 1;
        on_step(self.step);
    }

    fn intake(&self, router: RouterClient) -> Result<Intake, ServeError> {
        let replica = self.config.layout.coords(self.rank).replica;
        Ok(Intake {
            router,
            scheduler: Scheduler::new(self.config.scheduler_config(replica))?,
            finished: 0,
        })
    }

    /// The scheduler's next step, timed as host work.
    fn plan(&self, intake: &mut Intake) -> Option<StepPlan> {
        let at = self.at();
        let now_ns = self.tracer.now_ns();
        self.tracer.host(self.tracer.ops.schedule, at, || {
            intake.scheduler.plan_at(now_ns)
        })
    }

    /// The leader's loop: take requests, plan, broadcast, run, commit.
    fn lead(
        &mut self,
        mesh: &mut Mesh,
        router: RouterClient,
        on_step: &mut dyn FnMut(u32),
        on_request: &mut dyn FnMut(RequestRecord),
    ) -> Result<usize, ServeError> {
        let mut intake = self.intake(router)?;
        loop {
            intake.take(&self.tracer, self.step, IDLE_WAIT)?;
            if intake.is_done() {
                self.broadcast(mesh, Some(&Control::Stop))?;
                return Ok(intake.finished);
            }
            let Some(plan) = self.plan(&mut intake) else {
                continue;
            };
            self.broadcast(mesh, Some(&Control::Step(plan.clone())))?;
            let tokens = self.run_step(mesh, &plan)?;
            intake.commit(&self.tracer, &plan, &tokens, on_request)?;
            self.finish_step(on_step);
        }
    }

    /// A non-leader's loop: run each plan the leader broadcasts until it says stop.
    fn follow(&mut self, mesh: &mut Mesh, on_step: &mut dyn FnMut(u32)) -> Result<(), ServeError> {
        loop {
            match self.broadcast(mesh, None)? {
                Control::Stop => return Ok(()),
                Control::Step(plan) => {
                    self.run_step(mesh, &plan)?;
                    self.finish_step(on_step);
                }
            }
        }
    }

    /// Expert parallelism: every rank leads its own replica, and all step together.
    fn run_expert_parallel(
        &mut self,
        mesh: &mut Mesh,
        router: RouterClient,
        on_step: &mut dyn FnMut(u32),
        on_request: &mut dyn FnMut(RequestRecord),
    ) -> Result<usize, ServeError> {
        let mut intake = self.intake(router)?;
        loop {
            intake.take(&self.tracer, self.step, EP_IDLE_WAIT)?;
            let plan = self.plan(&mut intake);
            let (working, active) = self.agree(mesh, plan.is_some(), !intake.is_done())?;
            if !active {
                return Ok(intake.finished);
            }
            if !working {
                continue;
            }
            let empty = StepPlan {
                step: u64::from(self.step),
                seqs: Vec::new(),
            };
            let tokens = self.run_step(mesh, plan.as_ref().unwrap_or(&empty))?;
            if let Some(plan) = &plan {
                intake.commit(&self.tracer, plan, &tokens, on_request)?;
            }
            self.finish_step(on_step);
        }
    }

    /// All expert-parallel ranks learn whether any has work this step and whether any is still
    /// serving.
    fn agree(
        &mut self,
        mesh: &mut Mesh,
        working: bool,
        active: bool,
    ) -> Result<(bool, bool), ServeError> {
        let mut flags = [f32::from(u8::from(working)), f32::from(u8::from(active))];
        let Some(group) = self.groups.experts.as_mut() else {
            return Ok((working, active));
        };
        let issue = Issue {
            kind: CollectiveKind::AllReduce,
            peer: None,
            message_bytes: 8,
        };
        let at = At::step(self.step);
        self.tracer
            .collective(self.tracer.ops.step_sync, at, group, issue, |g| {
                mesh.all_reduce_sum(g, &mut flags, AllReduceAlgo::OneShot)
            })?;
        if flags[0] == 0.0 && flags[1] > 0.0 {
            self.tracer.idle(at, EP_IDLE_WAIT);
        }
        Ok((flags[0] > 0.0, flags[1] > 0.0))
    }

    /// The leader sends `control` to the replica; the others receive it. A replica of one
    /// skips the broadcast.
    fn broadcast(
        &mut self,
        mesh: &mut Mesh,
        control: Option<&Control>,
    ) -> Result<Control, ServeError> {
        let mut bytes = match control {
            Some(c) => serde_json::to_vec(c).map_err(|e| self.bad_plan(e))?,
            None => Vec::new(),
        };
        if self.groups.replica.size() > 1 {
            let issue = Issue {
                kind: CollectiveKind::Broadcast,
                peer: None,
                message_bytes: bytes.len() as u64,
            };
            let at = self.at();
            let data = &mut bytes;
            self.tracer.collective_sized(
                self.tracer.ops.broadcast_plan,
                at,
                &mut self.groups.replica,
                issue,
                |g| {
                    let outcome = mesh.broadcast(g, 0, data)?;
                    Ok((outcome, data.len() as u64))
                },
            )?;
        }
        serde_json::from_slice(&bytes).map_err(|e| self.bad_plan(e))
    }

    fn bad_plan(&self, e: serde_json::Error) -> ServeError {
        ServeError::BadPlan {
            rank: self.rank,
            reason: e.to_string(),
        }
    }

    /// Runs this rank's stage of one step; returns the sampled tokens on the replica's leader
    /// (and on last-stage ranks), empty elsewhere.
    fn run_step(&mut self, mesh: &mut Mesh, plan: &StepPlan) -> Result<Vec<u32>, ServeError> {
        let seqs: Vec<SeqInput> = plan
            .seqs
            .iter()
            .map(|s| SeqInput {
                tokens: &s.tokens,
                start_pos: s.start_pos,
                block_table: &s.block_table,
                samples: s.samples,
            })
            .collect();
        let pp = self.config.layout.pp;
        let parts = micro_batches(
            seqs.len(),
            if pp > 1 { self.config.micro_batches } else { 1 },
        );
        let mut tokens = Vec::new();
        for (mb, range) in parts.iter().enumerate() {
            let micro = (pp > 1).then_some(mb);
            let at = self.at().micro_batch(micro);
            let batch = Batch::new(seqs[range.clone()].to_vec());
            tokens.extend(self.run_micro_batch(mesh, at, &batch)?);
        }
        if pp > 1 && self.stage == 0 && self.groups.token_return.is_some() {
            tokens.clear();
            for mb in 0..parts.len() {
                let at = self.at().micro_batch(Some(mb));
                tokens.extend(self.receive_tokens(mesh, at)?);
            }
        }
        let expected = plan.seqs.iter().filter(|s| s.samples).count();
        let holds_tokens =
            self.stage + 1 == pp || self.stage == 0 && self.groups.token_return.is_some();
        if holds_tokens && tokens.len() != expected {
            return Err(ServeError::TokenCount {
                expected,
                got: tokens.len(),
            });
        }
        Ok(tokens)
    }

    /// One micro-batch through this stage: in, layers, out.
    fn run_micro_batch(
        &mut self,
        mesh: &mut Mesh,
        at: At,
        batch: &Batch,
    ) -> Result<Vec<u32>, ServeError> {
        let last = self.stage + 1 == self.config.layout.pp;
        let rows = batch.rows();
        let algo = self.config.algo();
        if self.stage == 0 {
            let mut comms = comms(mesh, &mut self.groups, algo);
            self.model.embed(&self.tracer, &mut comms, at, batch)?;
        } else {
            self.receive_activations(mesh, at, rows)?;
        }
        self.model.layers(
            &self.tracer,
            &mut comms(mesh, &mut self.groups, algo),
            at,
            batch,
        )?;
        if !last {
            self.send_activations(mesh, at, rows)?;
            return Ok(Vec::new());
        }
        let tokens = {
            let mut comms = comms(mesh, &mut self.groups, algo);
            self.model.sample(&self.tracer, &mut comms, at, batch)?
        };
        if let (true, Some(group)) = (self.stage > 0, self.groups.token_return.as_mut()) {
            let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_le_bytes()).collect();
            let issue = Issue {
                kind: CollectiveKind::Send,
                peer: Some(group.members()[0]),
                message_bytes: bytes.len() as u64,
            };
            self.tracer
                .collective(self.tracer.ops.send_tokens, at, group, issue, |g| {
                    mesh.send(g, 0, &bytes)
                })?;
        }
        Ok(tokens)
    }

    fn receive_activations(
        &mut self,
        mesh: &mut Mesh,
        at: At,
        rows: usize,
    ) -> Result<(), ServeError> {
        let group = self
            .groups
            .prev_stage
            .as_mut()
            .ok_or_else(|| stage_error(self.rank))?;
        let mut bytes = Vec::new();
        let issue = Issue {
            kind: CollectiveKind::Recv,
            peer: Some(group.members()[0]),
            message_bytes: (rows * self.config.model.hidden * 4) as u64,
        };
        self.tracer
            .collective(self.tracer.ops.recv_activations, at, group, issue, |g| {
                mesh.recv(g, 0, &mut bytes)
            })?;
        let hidden = self.model.hidden_mut(rows);
        if bytes.len() != hidden.len() * 4 {
            return Err(ServeError::BadPlan {
                rank: self.rank,
                reason: format!(
                    "received '{}' bytes of activations for {rows} rows",
                    bytes.len()
                ),
            });
        }
        for (x, b) in hidden.iter_mut().zip(bytes.chunks_exact(4)) {
            *x = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        }
        Ok(())
    }

    fn send_activations(&mut self, mesh: &mut Mesh, at: At, rows: usize) -> Result<(), ServeError> {
        let group = self
            .groups
            .next_stage
            .as_mut()
            .ok_or_else(|| stage_error(self.rank))?;
        let bytes: Vec<u8> = self
            .model
            .hidden(rows)
            .iter()
            .flat_map(|x| x.to_le_bytes())
            .collect();
        let issue = Issue {
            kind: CollectiveKind::Send,
            peer: Some(group.members()[1]),
            message_bytes: bytes.len() as u64,
        };
        self.tracer
            .collective(self.tracer.ops.send_activations, at, group, issue, |g| {
                mesh.send(g, 1, &bytes)
            })?;
        Ok(())
    }

    fn receive_tokens(&mut self, mesh: &mut Mesh, at: At) -> Result<Vec<u32>, ServeError> {
        let group = self
            .groups
            .token_return
            .as_mut()
            .ok_or_else(|| stage_error(self.rank))?;
        let mut bytes = Vec::new();
        let issue = Issue {
            kind: CollectiveKind::Recv,
            peer: Some(group.members()[1]),
            message_bytes: 0,
        };
        let data = &mut bytes;
        self.tracer
            .collective_sized(self.tracer.ops.recv_tokens, at, group, issue, |g| {
                let outcome = mesh.recv(g, 1, data)?;
                Ok((outcome, data.len() as u64))
            })?;
        Ok(bytes
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}

/// The communicators the model's forward pass uses.
fn comms<'m>(mesh: &'m mut Mesh, groups: &'m mut Groups, algo: AllReduceAlgo) -> Comms<'m> {
    Comms {
        mesh,
        tp: &mut groups.tp,
        experts: groups.experts.as_mut(),
        algo,
    }
}

fn stage_error(rank: usize) -> ServeError {
    ServeError::BadPlan {
        rank,
        reason: "the pipeline neighbour this stage needs is missing".to_string(),
    }
}

/// Splits `seqs` sequences into at most `parts` contiguous, near-equal micro-batches (none
/// empty, unless there are no sequences: then one empty batch).
pub fn micro_batches(seqs: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let parts = parts.clamp(1, seqs.max(1));
    let (base, extra) = (seqs / parts, seqs % parts);
    let mut start = 0;
    (0..parts)
        .map(|i| {
            let len = base + usize::from(i < extra);
            let range = start..start + len;
            start += len;
            range
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_batches_cover_every_sequence_once() {
        assert_eq!(micro_batches(5, 2), vec![0..3, 3..5]);
        assert_eq!(micro_batches(1, 4), vec![0..1]);
        assert_eq!(micro_batches(0, 4), vec![0..0]);
        assert_eq!(micro_batches(4, 1), vec![0..4]);
    }
}
