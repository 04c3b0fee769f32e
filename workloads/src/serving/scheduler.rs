//! Continuous batching over paged KV-cache blocks, one `Scheduler` per data-parallel replica,
//! after vLLM's scheduler.
//!
//! The KV cache is `blocks` blocks of `block_size` token positions. A sequence's tokens are its
//! prompt then what it has generated; position `p` lives in block `block_table[p / block_size]`.
//! Each step (`plan`, then `complete` once the model ran it) is built in this order:
//!
//! 1. **Decodes.** Every running sequence with one token left to feed decodes it, oldest
//!    admission first. A decode that needs a new block when none is free *preempts* the most
//!    recently admitted running request (possibly itself): its blocks are freed and it goes back
//!    to the front of the queue, its generated tokens now part of its prompt, to be recomputed.
//!    Its token times are kept, and `preemptions` counts it.
//! 2. **Prefill continuations** (chunked prefill only): running sequences whose prompt was split
//!    get their next chunk, as far as the token budget allows.
//! 3. **Admissions**, unless this step preempted (readmitting at once would only thrash):
//!    waiting requests in arrival order (FCFS: the head is never overtaken) while the batch has a
//!    sequence slot (`max_seqs` running) and token budget (`max_batch_tokens` this step) left and
//!    the blocks for the head's whole prompt are free; those blocks are taken at admission, so a
//!    prefill never waits for blocks halfway. With `chunked_prefill` a prompt takes what budget
//!    is left and continues in later steps; without it a prompt goes whole, and one longer than
//!    `max_batch_tokens` is still admitted, alone in a step with nothing else scheduled.
//!
//! A sequence samples its next token in the step that feeds its last known token. The last output
//! token is never fed back, so a request needs `prompt + output - 1` positions; one that needs
//! more blocks than the replica has is refused at `add`.

use super::ServingError;
use super::requests::RequestSpec;
use pinch_traces::RequestRecord;
use serde::{Deserialize, Serialize};
use std::collections::{HashSet, VecDeque};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SchedulerConfig {
    /// The data-parallel replica this scheduler serves (stamped on its records).
    pub replica: u32,
    /// Token positions per KV-cache block.
    pub block_size: usize,
    /// KV-cache blocks in all.
    pub blocks: usize,
    /// Most sequences running at once.
    pub max_seqs: usize,
    /// Most tokens fed in one step (see the module doc for the one exception).
    pub max_batch_tokens: usize,
    pub chunked_prefill: bool,
}

/// One sequence's share of a step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeqWork {
    pub request_id: u64,
    /// The tokens fed this step.
    pub tokens: Vec<u32>,
    /// The position of `tokens[0]`: the positions before it are already in the KV cache.
    pub start_pos: usize,
    /// The blocks of positions `0..start_pos + tokens.len()`, in order.
    pub block_table: Vec<u32>,
    /// Whether this step yields the request's next token.
    pub samples: bool,
}

/// One forward pass of the replica's model.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepPlan {
    pub step: u64,
    pub seqs: Vec<SeqWork>,
}

/// A request the scheduler holds, waiting or running.
#[derive(Debug)]
struct Seq {
    id: u64,
    /// The prompt, then every token generated so far.
    tokens: Vec<u32>,
    prompt_len: usize,
    output_len: usize,
    /// Positions `0..computed` are in the KV cache.
    computed: usize,
    blocks: Vec<u32>,
    arrival_ns: u64,
    /// When it was first admitted to a step; kept across preemptions.
    scheduled_ns: Option<u64>,
    token_times_ns: Vec<u64>,
    preemptions: u32,
}

impl Seq {
    fn generated(&self) -> usize {
        self.tokens.len() - self.prompt_len
    }

    /// Tokens still to feed before the next sample: 1 for a decode.
    fn pending(&self) -> usize {
        self.tokens.len() - self.computed
    }

    fn into_record(self, replica: u32) -> RequestRecord {
        RequestRecord {
            id: self.id,
            replica,
            arrival_ns: self.arrival_ns,
            scheduled_ns: self.scheduled_ns,
            prompt_tokens: u32::try_from(self.prompt_len).unwrap_or(u32::MAX),
            tokens: self.tokens[self.prompt_len..].to_vec(),
            token_times_ns: self.token_times_ns,
            preemptions: self.preemptions,
        }
    }
}

/// One replica's scheduler: see the module doc for its policy.
#[derive(Debug)]
pub struct Scheduler {
    config: SchedulerConfig,
    /// Free blocks; the next one handed out is the last.
    free: Vec<u32>,
    waiting: VecDeque<Seq>,
    /// In admission order: the most recently admitted is last.
    running: Vec<Seq>,
    /// The ids of every request waiting or running.
    live: HashSet<u64>,
    next_step: u64,
    /// The step planned and not yet completed.
    in_flight: Option<u64>,
    preemptions: u64,
}

impl Scheduler {
    pub fn new(config: SchedulerConfig) -> Result<Scheduler, ServingError> {
        for (what, value) in [
            ("block size", config.block_size),
            ("blocks", config.blocks),
            ("max seqs", config.max_seqs),
            ("max batch tokens", config.max_batch_tokens),
        ] {
            if value == 0 {
                return Err(ServingError::ZeroSetting { what });
            }
        }
        if config.max_batch_tokens < config.max_seqs {
            return Err(ServingError::BatchTooSmall {
                max_batch_tokens: config.max_batch_tokens,
                max_seqs: config.max_seqs,
            });
        }
        let blocks = u32::try_from(config.blocks).unwrap_or(u32::MAX);
        Ok(Scheduler {
            free: (0..blocks).rev().collect(),
            config,
            waiting: VecDeque::new(),
            running: Vec::new(),
            live: HashSet::new(),
            next_step: 0,
            in_flight: None,
            preemptions: 0,
        })
    }

    /// Queues a request that reached this replica at `arrival_ns` (node monotonic clock).
    pub fn add(&mut self, request: RequestSpec, arrival_ns: u64) -> Result<(), ServingError> {
        self.check_request(&request)?;
        self.live.insert(request.id);
        self.waiting.push_back(Seq {
            id: request.id,
            prompt_len: request.prompt.len(),
            tokens: request.prompt,
            output_len: request.output_len,
            computed: 0,
            blocks: Vec::new(),
            arrival_ns,
            scheduled_ns: None,
            token_times_ns: Vec::new(),
            preemptions: 0,
        });
        Ok(())
    }

    fn check_request(&self, request: &RequestSpec) -> Result<(), ServingError> {
        let id = request.id;
        if request.prompt.is_empty() {
            return Err(ServingError::EmptyRequest { id, what: "prompt" });
        }
        if request.output_len == 0 {
            return Err(ServingError::EmptyRequest { id, what: "output" });
        }
        if self.live.contains(&id) {
            return Err(ServingError::DuplicateRequest { id });
        }
        let tokens = request.prompt.len() + request.output_len - 1;
        let blocks_needed = self.blocks_for(tokens);
        if blocks_needed > self.config.blocks {
            return Err(ServingError::RequestTooLarge {
                id,
                tokens,
                blocks_needed,
                blocks: self.config.blocks,
                replica: self.config.replica,
            });
        }
        Ok(())
    }

    pub fn is_idle(&self) -> bool {
        self.waiting.is_empty() && self.running.is_empty()
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// Preemptions so far, over all requests.
    pub fn preemptions(&self) -> u64 {
        self.preemptions
    }

    pub fn config(&self) -> &SchedulerConfig {
        &self.config
    }

    fn blocks_for(&self, positions: usize) -> usize {
        positions.div_ceil(self.config.block_size)
    }

    /// The next step; `None` when nothing can run: the scheduler is idle, or a step is in flight
    /// (every step must be `complete`d before the next is planned).
    pub fn plan(&mut self) -> Option<StepPlan> {
        self.plan_timed(None)
    }

    /// `plan`, noting `now_ns` (node monotonic clock) as the scheduling time of every request
    /// admitted for the first time, so its queueing time is known.
    pub fn plan_at(&mut self, now_ns: u64) -> Option<StepPlan> {
        self.plan_timed(Some(now_ns))
    }

    fn plan_timed(&mut self, now_ns: Option<u64>) -> Option<StepPlan> {
        if self.in_flight.is_some() {
            return None;
        }
        let mut batch = Batch {
            budget: self.config.max_batch_tokens,
            seqs: Vec::new(),
        };
        let preempted = self.schedule_decodes(&mut batch);
        self.schedule_prefill_chunks(&mut batch);
        if !preempted {
            self.admit(&mut batch, now_ns);
        }
        if batch.seqs.is_empty() {
            return None;
        }
        let step = self.next_step;
        self.next_step += 1;
        self.in_flight = Some(step);
        Some(StepPlan {
            step,
            seqs: batch.seqs,
        })
    }

    /// Phase 1: one token for every running sequence that is decoding; returns whether it had to
    /// preempt.
    fn schedule_decodes(&mut self, batch: &mut Batch) -> bool {
        let mut preempted = false;
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].pending() != 1 {
                i += 1;
                continue;
            }
            let needed = self.blocks_for(self.running[i].computed + 1);
            while self.running[i].blocks.len() < needed {
                match self.free.pop() {
                    Some(block) => self.running[i].blocks.push(block),
                    None => {
                        self.preempt_newest();
                        preempted = true;
                        if i == self.running.len() {
                            // The sequence preempted itself: nothing newer was left to evict.
                            return preempted;
                        }
                    }
                }
            }
            batch.push(self.work(i, 1));
            i += 1;
        }
        preempted
    }

    /// Evicts the most recently admitted running request to the front of the queue.
    fn preempt_newest(&mut self) {
        if let Some(mut seq) = self.running.pop() {
            self.free.extend(seq.blocks.drain(..).rev());
            seq.computed = 0;
            seq.preemptions += 1;
            self.preemptions += 1;
            self.waiting.push_front(seq);
        }
    }

    /// Phase 2: the next chunk of every running prompt split by chunked prefill.
    fn schedule_prefill_chunks(&mut self, batch: &mut Batch) {
        for i in 0..self.running.len() {
            let pending = self.running[i].pending();
            if pending > 1 && batch.budget > 0 {
                batch.push(self.work(i, pending.min(batch.budget)));
            }
        }
    }

    /// Phase 3: FCFS admissions while a slot, budget and the head's blocks are free.
    fn admit(&mut self, batch: &mut Batch, now_ns: Option<u64>) {
        while let Some(head) = self.waiting.front() {
            let prompt = head.tokens.len();
            let needed = self.blocks_for(prompt);
            if self.running.len() >= self.config.max_seqs
                || batch.budget == 0
                || needed > self.free.len()
            {
                return;
            }
            let tokens = if self.config.chunked_prefill {
                prompt.min(batch.budget)
            } else if prompt <= batch.budget || batch.seqs.is_empty() {
                prompt
            } else {
                return;
            };
            let Some(mut seq) = self.waiting.pop_front() else {
                return;
            };
            let at = self.free.len() - needed;
            seq.blocks.extend(self.free.drain(at..).rev());
            seq.scheduled_ns = seq.scheduled_ns.or(now_ns);
            self.running.push(seq);
            batch.push(self.work(self.running.len() - 1, tokens));
        }
    }

    /// The next `tokens` tokens of running sequence `i`, whose blocks already cover them.
    fn work(&self, i: usize, tokens: usize) -> SeqWork {
        let seq = &self.running[i];
        let end = seq.computed + tokens;
        SeqWork {
            request_id: seq.id,
            tokens: seq.tokens[seq.computed..end].to_vec(),
            start_pos: seq.computed,
            block_table: seq.blocks[..self.blocks_for(end)].to_vec(),
            samples: end == seq.tokens.len(),
        }
    }

    /// Records that `plan` ran: `sampled[i]` is the token of the i-th sequence of `plan` whose
    /// `samples` is true, produced at `now_ns` (node monotonic clock). Returns the requests that
    /// finished (output length reached), in plan order; their blocks are free again.
    pub fn complete(
        &mut self,
        plan: &StepPlan,
        sampled: &[u32],
        now_ns: u64,
    ) -> Result<Vec<RequestRecord>, ServingError> {
        self.check_completion(plan, sampled)?;
        self.in_flight = None;
        let mut sampled = sampled.iter();
        let mut finished = Vec::new();
        for work in &plan.seqs {
            let Some(i) = self.running.iter().position(|s| s.id == work.request_id) else {
                continue; // checked above: every sequence of the plan is running
            };
            let seq = &mut self.running[i];
            seq.computed += work.tokens.len();
            if let (true, Some(token)) = (work.samples, sampled.next()) {
                seq.tokens.push(*token);
                seq.token_times_ns.push(now_ns);
            }
            if seq.generated() >= seq.output_len {
                finished.push(self.finish(i));
            }
        }
        Ok(finished)
    }

    fn check_completion(&self, plan: &StepPlan, sampled: &[u32]) -> Result<(), ServingError> {
        if self.in_flight != Some(plan.step) {
            return Err(ServingError::StaleStep {
                got: plan.step,
                expected: self.in_flight.map_or("none".into(), |s| s.to_string()),
            });
        }
        let expected = plan.seqs.iter().filter(|s| s.samples).count();
        if sampled.len() != expected {
            return Err(ServingError::SampledCount {
                step: plan.step,
                expected,
                got: sampled.len(),
            });
        }
        let running = |id| self.running.iter().any(|s| s.id == id);
        match plan.seqs.iter().find(|w| !running(w.request_id)) {
            Some(w) => Err(ServingError::NotRunning {
                step: plan.step,
                id: w.request_id,
            }),
            None => Ok(()),
        }
    }

    fn finish(&mut self, i: usize) -> RequestRecord {
        let mut seq = self.running.remove(i);
        self.free.extend(seq.blocks.drain(..).rev());
        self.live.remove(&seq.id);
        seq.into_record(self.config.replica)
    }
}

/// The step being built.
#[derive(Debug)]
struct Batch {
    /// Tokens that may still be fed this step.
    budget: usize,
    seqs: Vec<SeqWork>,
}

impl Batch {
    fn push(&mut self, work: SeqWork) {
        self.budget = self.budget.saturating_sub(work.tokens.len());
        self.seqs.push(work);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(
        blocks: usize,
        max_seqs: usize,
        max_batch_tokens: usize,
        chunked: bool,
    ) -> SchedulerConfig {
        SchedulerConfig {
            replica: 3,
            block_size: 4,
            blocks,
            max_seqs,
            max_batch_tokens,
            chunked_prefill: chunked,
        }
    }

    fn request(id: u64, prompt_len: usize, output_len: usize) -> RequestSpec {
        RequestSpec {
            id,
            arrival_offset_ns: 0,
            prompt: (0..prompt_len as u32).map(|t| 1000 + t).collect(),
            output_len,
        }
    }

    /// The token a deterministic model samples after feeding position `pos` of request `id`:
    /// recomputing a preempted request must give back the very same tokens.
    fn model_token(id: u64, pos: usize) -> u32 {
        (id as u32) * 100 + pos as u32
    }

    /// A fake model that checks every plan against what it has cached.
    #[derive(Default)]
    struct Model {
        /// Per request, the tokens whose KV it holds, by position.
        kv: HashMap<u64, Vec<u32>>,
        /// Which request each block's contents belong to.
        owner: HashMap<u32, u64>,
        block_size: usize,
    }

    impl Model {
        fn run(&mut self, plan: &StepPlan) -> Vec<u32> {
            let mut in_step = HashSet::new();
            let mut sampled = Vec::new();
            for w in &plan.seqs {
                assert!(in_step.insert(w.request_id), "a request twice in a step");
                let kv = self.kv.entry(w.request_id).or_default();
                if w.start_pos == 0 {
                    kv.clear(); // a first prefill, or a recompute after preemption
                }
                assert_eq!(
                    w.start_pos,
                    kv.len(),
                    "request {} skips or repeats",
                    w.request_id
                );
                let end = w.start_pos + w.tokens.len();
                assert_eq!(w.block_table.len(), end.div_ceil(self.block_size));
                // The blocks of cached positions must still be this request's.
                for b in &w.block_table[..w.start_pos.div_ceil(self.block_size)] {
                    assert_eq!(
                        self.owner.get(b),
                        Some(&w.request_id),
                        "block {b} was reused"
                    );
                }
                for b in &w.block_table {
                    self.owner.insert(*b, w.request_id);
                }
                kv.extend(&w.tokens);
                if w.samples {
                    sampled.push(model_token(w.request_id, end));
                }
            }
            sampled
        }
    }

    /// Steps the scheduler until idle, checking block accounting after every step.
    fn drive(s: &mut Scheduler, plans: &mut Vec<StepPlan>) -> Vec<RequestRecord> {
        let mut model = Model {
            block_size: s.config.block_size,
            ..Model::default()
        };
        drive_with(s, &mut model, plans)
    }

    fn drive_with(
        s: &mut Scheduler,
        model: &mut Model,
        plans: &mut Vec<StepPlan>,
    ) -> Vec<RequestRecord> {
        let mut done = Vec::new();
        let mut now_ns = 1_000;
        while let Some(plan) = s.plan_at(now_ns) {
            assert!(plans.len() < 10_000, "no progress");
            now_ns += 10;
            let sampled = model.run(&plan);
            done.extend(s.complete(&plan, &sampled, now_ns).expect("complete"));
            assert_blocks_balance(s);
            plans.push(plan);
        }
        assert!(s.is_idle());
        assert_eq!(s.free_blocks(), s.config.blocks);
        done
    }

    fn assert_blocks_balance(s: &Scheduler) {
        let held: Vec<u32> = s
            .running
            .iter()
            .flat_map(|q| q.blocks.iter().copied())
            .collect();
        assert_eq!(held.len() + s.free.len(), s.config.blocks, "blocks leak");
        let mut all: Vec<u32> = held.into_iter().chain(s.free.iter().copied()).collect();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), s.config.blocks, "a block is held twice");
        assert!(s.waiting.iter().all(|q| q.blocks.is_empty()));
    }

    fn assert_model_tokens(r: &RequestRecord) {
        let expected: Vec<u32> = (0..r.tokens.len())
            .map(|j| model_token(r.id, r.prompt_tokens as usize + j))
            .collect();
        assert_eq!(r.tokens, expected, "request {}", r.id);
    }

    #[test]
    fn settings_of_zero_and_a_batch_smaller_than_max_seqs_are_refused() {
        assert!(Scheduler::new(config(0, 1, 1, false)).is_err());
        let mut c = config(4, 1, 8, false);
        c.block_size = 0;
        assert!(Scheduler::new(c).is_err());
        let err = Scheduler::new(config(4, 8, 4, false))
            .map(|_| ())
            .unwrap_err();
        assert!(err.to_string().contains("'4'"), "{err}");
    }

    #[test]
    fn a_request_larger_than_the_cache_is_refused_at_add() {
        let mut s = Scheduler::new(config(3, 4, 64, false)).expect("scheduler");
        // 10 + 4 - 1 = 13 positions need 4 blocks of 4; the replica has 3.
        let err = s
            .add(request(9, 10, 4), 0)
            .map(|_| ())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("request 9") && err.contains("'4'") && err.contains("only 3"),
            "{err}"
        );
        // 9 + 4 - 1 = 12 positions fit exactly.
        assert!(s.add(request(8, 9, 4), 0).is_ok());
        assert!(s.add(request(8, 9, 4), 0).is_err(), "duplicate id");
        assert!(s.add(request(7, 0, 4), 0).is_err());
        assert!(s.add(request(6, 3, 0), 0).is_err());
    }

    #[test]
    fn one_request_prefills_then_decodes_and_finishes() -> Result<(), ServingError> {
        let mut s = Scheduler::new(config(10, 4, 64, false))?;
        s.add(request(1, 5, 3), 7)?;
        let p0 = s.plan().expect("prefill");
        assert_eq!(p0.step, 0);
        assert_eq!(p0.seqs.len(), 1);
        let w = &p0.seqs[0];
        assert_eq!((w.start_pos, w.tokens.len(), w.samples), (0, 5, true));
        assert_eq!(w.block_table.len(), 2);
        assert_eq!(s.free_blocks(), 8);
        assert!(s.plan().is_none(), "a step is in flight");
        assert!(s.complete(&p0, &[50], 100)?.is_empty());
        let p1 = s.plan().expect("decode");
        assert_eq!(p1.seqs[0].tokens, vec![50]);
        assert_eq!(p1.seqs[0].start_pos, 5);
        assert!(s.complete(&p1, &[51], 200)?.is_empty());
        let p2 = s.plan().expect("decode");
        assert_eq!((p2.seqs[0].start_pos, p2.seqs[0].block_table.len()), (6, 2));
        let done = s.complete(&p2, &[52], 300)?;
        assert_eq!(done.len(), 1);
        let r = &done[0];
        assert_eq!(
            (r.id, r.replica, r.arrival_ns, r.prompt_tokens),
            (1, 3, 7, 5)
        );
        assert_eq!(r.tokens, vec![50, 51, 52]);
        assert_eq!(r.token_times_ns, vec![100, 200, 300]);
        assert_eq!(r.scheduled_ns, None, "planned without a time");
        assert!(s.is_idle() && s.plan().is_none());
        assert_eq!(s.free_blocks(), 10);
        Ok(())
    }

    #[test]
    fn a_one_token_request_finishes_at_prefill() -> Result<(), ServingError> {
        let mut s = Scheduler::new(config(4, 2, 16, false))?;
        s.add(request(4, 3, 1), 0)?;
        let plan = s.plan().expect("prefill");
        let done = s.complete(&plan, &[9], 5)?;
        assert_eq!(done[0].tokens, vec![9]);
        assert_eq!(s.free_blocks(), 4);
        Ok(())
    }

    #[test]
    fn completion_checks_the_step_and_the_sample_count() -> Result<(), ServingError> {
        let mut s = Scheduler::new(config(10, 4, 64, false))?;
        s.add(request(1, 5, 3), 0)?;
        let plan = s.plan().expect("prefill");
        assert!(s.complete(&plan, &[], 1).is_err());
        assert!(s.complete(&plan, &[1, 2], 1).is_err());
        let stale = StepPlan {
            step: 9,
            seqs: plan.seqs.clone(),
        };
        assert!(s.complete(&stale, &[1], 1).is_err());
        s.complete(&plan, &[1], 1)?;
        assert!(s.complete(&plan, &[1], 1).is_err(), "completed twice");
        Ok(())
    }

    #[test]
    fn chunked_prefill_splits_a_prompt_after_the_decodes() -> Result<(), ServingError> {
        let mut s = Scheduler::new(config(20, 4, 8, true))?;
        s.add(request(1, 2, 10), 0)?;
        let mut model = Model {
            block_size: 4,
            ..Model::default()
        };
        let p = s.plan().expect("step");
        s.complete(&p, &model.run(&p), 1)?;
        s.add(request(2, 20, 2), 0)?;
        let mut chunks = Vec::new();
        for t in 2..6 {
            let p = s.plan().expect("step");
            // Request 1's decode comes first and takes one token of the budget of 8.
            assert_eq!(p.seqs[0].request_id, 1);
            assert_eq!(p.seqs[0].tokens.len(), 1);
            let total: usize = p.seqs.iter().map(|w| w.tokens.len()).sum();
            assert!(total <= 8);
            if let Some(w) = p.seqs.iter().find(|w| w.request_id == 2) {
                chunks.push((w.start_pos, w.tokens.len(), w.samples));
            }
            s.complete(&p, &model.run(&p), t)?;
        }
        assert_eq!(
            chunks,
            vec![(0, 7, false), (7, 7, false), (14, 6, true), (20, 1, true)]
        );
        Ok(())
    }

    #[test]
    fn without_chunking_a_long_prompt_waits_to_run_alone() -> Result<(), ServingError> {
        let mut s = Scheduler::new(config(20, 4, 8, false))?;
        s.add(request(1, 2, 3), 0)?;
        s.add(request(2, 20, 2), 0)?;
        let mut plans = Vec::new();
        let done = drive(&mut s, &mut plans);
        let long: Vec<&StepPlan> = plans
            .iter()
            .filter(|p| p.seqs.iter().any(|w| w.request_id == 2 && w.start_pos == 0))
            .collect();
        assert_eq!(long.len(), 1);
        assert_eq!(long[0].seqs.len(), 1, "alone");
        assert_eq!(long[0].seqs[0].tokens.len(), 20, "whole");
        assert_eq!(done.iter().map(|r| r.id).collect::<Vec<_>>(), vec![1, 2]);
        done.iter().for_each(assert_model_tokens);
        Ok(())
    }

    #[test]
    fn admission_is_fcfs_and_the_head_is_never_overtaken() -> Result<(), ServingError> {
        // 8 blocks. Request 0 holds 6 (prompt 24); request 1 (prompt 12, 3 blocks) must wait, and
        // request 2 (prompt 4, 1 block), though it would fit, must wait behind it.
        let mut s = Scheduler::new(config(8, 4, 64, false))?;
        s.add(request(0, 24, 2), 0)?;
        s.add(request(1, 12, 2), 0)?;
        s.add(request(2, 4, 2), 0)?;
        let mut plans = Vec::new();
        let done = drive(&mut s, &mut plans);
        let ids = |p: &StepPlan| p.seqs.iter().map(|w| w.request_id).collect::<Vec<_>>();
        assert_eq!(ids(&plans[0]), vec![0]);
        let first_seen = |id: u64| {
            plans
                .iter()
                .position(|p| p.seqs.iter().any(|w| w.request_id == id))
        };
        assert!(first_seen(1) <= first_seen(2));
        assert_eq!(done.len(), 3);
        Ok(())
    }

    #[test]
    fn max_seqs_caps_the_running_set() -> Result<(), ServingError> {
        let mut s = Scheduler::new(config(64, 2, 64, false))?;
        for id in 0..5 {
            s.add(request(id, 3, 4), 0)?;
        }
        let mut plans = Vec::new();
        let done = drive(&mut s, &mut plans);
        assert!(plans.iter().all(|p| p.seqs.len() <= 2));
        assert_eq!(done.len(), 5);
        done.iter().for_each(assert_model_tokens);
        Ok(())
    }

    #[test]
    fn preemption_evicts_the_newest_and_recomputes_it_consistently() -> Result<(), ServingError> {
        // 4 blocks of 4. Two requests of prompt 4 each take one block; both decode for 8 tokens,
        // so each needs 3 blocks in the end: the cache runs out and request 1 is evicted.
        let mut s = Scheduler::new(config(4, 4, 64, false))?;
        s.add(request(0, 4, 8), 0)?;
        s.add(request(1, 4, 8), 0)?;
        let mut plans = Vec::new();
        let done = drive(&mut s, &mut plans);
        assert_eq!(done.len(), 2);
        let by_id = |id: u64| done.iter().find(|r| r.id == id).expect("finished");
        assert_eq!(by_id(0).preemptions, 0);
        assert_eq!(by_id(1).preemptions, 1);
        assert_eq!(s.preemptions(), 1);
        done.iter().for_each(assert_model_tokens);
        // Request 1 came back with prompt and generated tokens as one prefill.
        let recompute = plans
            .iter()
            .flat_map(|p| &p.seqs)
            .filter(|w| w.request_id == 1 && w.start_pos == 0)
            .nth(1)
            .expect("a recompute");
        assert!(recompute.tokens.len() > 4);
        assert_eq!(recompute.tokens[..4], request(1, 4, 8).prompt[..]);
        // Token times are kept across the preemption: one per token, never decreasing.
        let r1 = by_id(1);
        assert_eq!(r1.token_times_ns.len(), 8);
        assert!(r1.token_times_ns.windows(2).all(|w| w[0] < w[1]));
        // Its queueing ended when it was first scheduled, not at its recompute.
        assert_eq!(r1.scheduled_ns, Some(1_000));
        Ok(())
    }

    #[test]
    fn a_request_queued_behind_a_full_batch_is_scheduled_when_a_slot_frees()
    -> Result<(), ServingError> {
        // One sequence at a time: request 1 waits for request 0's two steps.
        let mut s = Scheduler::new(config(10, 1, 64, false))?;
        s.add(request(0, 4, 2), 500)?;
        s.add(request(1, 4, 2), 600)?;
        let done = drive(&mut s, &mut Vec::new());
        let by_id = |id: u64| done.iter().find(|r| r.id == id).expect("finished");
        assert_eq!(by_id(0).queued_ns(), Some(500));
        // Steps are planned at 1000, 1010, then request 1 at 1020.
        assert_eq!(by_id(1).scheduled_ns, Some(1_020));
        assert_eq!(by_id(1).queued_ns(), Some(420));
        Ok(())
    }

    #[test]
    fn a_decode_with_nothing_newer_to_evict_preempts_itself() -> Result<(), ServingError> {
        // 3 blocks of 4. Request 0 (prompt 6, output 3) needs positions 0..8: its 2 blocks
        // suffice. Request 1 (prompt 4) takes the third block; its first decode, at position 4,
        // needs another block, and it is itself the newest running request.
        let mut s = Scheduler::new(config(3, 4, 64, false))?;
        s.add(request(0, 6, 3), 0)?;
        s.add(request(1, 4, 3), 0)?;
        let mut model = Model {
            block_size: 4,
            ..Model::default()
        };
        let p0 = s.plan().expect("both prefill");
        assert_eq!(p0.seqs.len(), 2);
        s.complete(&p0, &model.run(&p0), 1)?;
        let p1 = s.plan().expect("a decode");
        assert_eq!(
            p1.seqs.iter().map(|w| w.request_id).collect::<Vec<_>>(),
            vec![0]
        );
        assert_eq!((s.waiting(), s.running(), s.preemptions()), (1, 1, 1));
        assert_blocks_balance(&s);
        s.complete(&p1, &model.run(&p1), 2)?;
        let mut plans = Vec::new();
        let done = drive_with(&mut s, &mut model, &mut plans);
        assert_eq!(done.iter().map(|r| r.id).collect::<Vec<_>>(), vec![0, 1]);
        done.iter().for_each(assert_model_tokens);
        assert_eq!(done[1].preemptions, 1);
        Ok(())
    }

    #[test]
    fn a_heavy_mixed_load_never_leaks_and_keeps_every_token_list() -> Result<(), ServingError> {
        for chunked in [false, true] {
            let mut s = Scheduler::new(config(24, 6, 16, chunked))?;
            let mut expected_len = HashMap::new();
            for id in 0..40u64 {
                let (p, o) = (1 + (id as usize * 7) % 30, 1 + (id as usize * 5) % 40);
                expected_len.insert(id, o);
                s.add(request(id, p, o), id * 3)?;
            }
            let mut plans = Vec::new();
            let done = drive(&mut s, &mut plans);
            assert_eq!(done.len(), 40);
            for r in &done {
                assert_eq!(r.tokens.len(), expected_len[&r.id]);
                assert_eq!(r.token_times_ns.len(), r.tokens.len());
                assert_model_tokens(r);
            }
            assert!(
                s.preemptions() > 0,
                "the load is meant to preempt (chunked: {chunked})"
            );
            assert!(plans.iter().all(|p| p.seqs.len() <= 6));
            if chunked {
                assert!(
                    plans
                        .iter()
                        .all(|p| p.seqs.iter().map(|w| w.tokens.len()).sum::<usize>() <= 16)
                );
            }
        }
        Ok(())
    }
}
