//! Whole serving runs in one process (every rank a thread, a real router and real meshes over
//! shared memory and TCP): every layout serves the same requests, dense layouts generate the
//! same tokens, and scheduling choices (chunked prefill, a KV cache small enough to preempt) do
//! not change what is generated.

// Test helpers panic with the value in view, as the tests themselves do.
#![allow(clippy::unwrap_used)]

use pinch_collector::Recorder;
use pinch_kernels::Storage;
use pinch_traces::{ExpertTokens, Rank, RequestRecord, Span};
use pinch_workloads::comm::{Mesh, MeshOptions};
use pinch_workloads::engine::{AllReduceChoice, Faults, RankIo, ServeConfig, serve_rank};
use pinch_workloads::layout::Layout;
use pinch_workloads::preset;
use pinch_workloads::serving::{
    Arrivals, LengthDist, RequestWorkload, RoutePolicy, RouterClient, RouterServer, generate,
};
use std::sync::Mutex;
use std::time::Duration;

const TIMEOUT: Duration = Duration::from_secs(120);

fn config(model: &str, layout: &str) -> ServeConfig {
    let model = preset(model).unwrap();
    ServeConfig {
        requests: RequestWorkload {
            requests: 6,
            arrivals: Arrivals::Concurrency(3),
            prompt_len: LengthDist::Uniform { min: 4, max: 12 },
            output_len: LengthDist::Uniform { min: 2, max: 6 },
            seed: 3,
            vocab: model.vocab,
        },
        storage: Storage::F32,
        layout: Layout::parse(layout).unwrap(),
        weights_dir: None,
        seed: 3,
        route: RoutePolicy::RoundRobin,
        block_size: 4,
        kv_blocks: 16,
        max_seqs: 4,
        max_batch_tokens: 64,
        chunked_prefill: false,
        micro_batches: 2,
        capacity_factor: None,
        all_reduce: AllReduceChoice::Auto,
        threads: 1,
        shm: true,
        faults: Faults::default(),
        model,
    }
}

/// Serves `config` with every rank on its own thread; returns the finished requests by id,
/// every rank's spans and every expert token count the ranks reported.
fn serve(config: &ServeConfig) -> (Vec<RequestRecord>, Vec<Vec<Span>>, Vec<ExpertTokens>) {
    let world = config.layout.world();
    // Two "nodes", so both transports carry traffic when there are two ranks or more.
    let nodes: Vec<u32> = (0..world).map(|r| (2 * r / world.max(2)) as u32).collect();
    let meshes = Mesh::loopback(&nodes, &MeshOptions::default()).unwrap();
    let router = RouterServer::start(
        generate(&config.requests),
        config.requests.arrivals.clone(),
        config.layout.dp,
        config.route,
        TIMEOUT,
    )
    .unwrap();
    let addr = router.addr();
    let records = Mutex::new(Vec::new());
    let experts = Mutex::new(Vec::new());
    let spans = std::thread::scope(|scope| {
        let handles: Vec<_> = meshes
            .into_iter()
            .enumerate()
            .map(|(rank, mut mesh)| {
                let (records, experts) = (&records, &experts);
                scope.spawn(move || {
                    let (recorder, mut spans_out) = Recorder::new(Rank(rank as u32), 1 << 20);
                    let c = config.layout.coords(rank);
                    let leads = config.layout.ep > 1 || (c.stage == 0 && c.tp_rank == 0);
                    let router =
                        leads.then(|| RouterClient::connect(addr, c.replica, TIMEOUT).unwrap());
                    let mut on_step = |_| {};
                    let mut on_request = |r| records.lock().unwrap().push(r);
                    let mut on_expert_tokens = |e| experts.lock().unwrap().push(e);
                    let io = RankIo {
                        mesh: &mut mesh,
                        router,
                        recorder: &recorder,
                        on_step: &mut on_step,
                        on_request: &mut on_request,
                        on_expert_tokens: &mut on_expert_tokens,
                    };
                    serve_rank(config, rank, io).unwrap();
                    let mut spans = Vec::new();
                    spans_out.drain_into(&mut spans, usize::MAX);
                    spans
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    router.join().unwrap();
    let mut records = records.into_inner().unwrap();
    records.sort_by_key(|r| r.id);
    (records, spans, experts.into_inner().unwrap())
}

fn tokens(records: &[RequestRecord]) -> Vec<(u64, Vec<u32>)> {
    records.iter().map(|r| (r.id, r.tokens.clone())).collect()
}

#[test]
fn every_dense_layout_generates_the_same_tokens() {
    let (reference, _, _) = serve(&config("tiny", "tp=1"));
    assert_eq!(reference.len(), 6);
    let expected = generate(&config("tiny", "tp=1").requests);
    for (record, spec) in reference.iter().zip(&expected) {
        assert_eq!(
            record.tokens.len(),
            spec.output_len,
            "request {}",
            record.id
        );
        assert_eq!(record.token_times_ns.len(), spec.output_len);
    }
    for layout in ["tp=2", "dp=2", "pp=2", "tp=2,pp=2", "dp=2,tp=2"] {
        let (records, _, _) = serve(&config("tiny", layout));
        assert_eq!(tokens(&records), tokens(&reference), "layout {layout}");
    }
}

#[test]
fn chunked_prefill_and_preemption_do_not_change_the_tokens() {
    let (reference, _, _) = serve(&config("tiny", "tp=1"));
    let mut chunked = config("tiny", "tp=1");
    chunked.chunked_prefill = true;
    chunked.max_batch_tokens = 8;
    let (records, _, _) = serve(&chunked);
    assert_eq!(tokens(&records), tokens(&reference), "chunked prefill");
    let mut tight = config("tiny", "tp=1");
    tight.kv_blocks = 5;
    let (records, _, _) = serve(&tight);
    assert_eq!(tokens(&records), tokens(&reference), "small KV cache");
}

#[test]
fn pipeline_stages_record_micro_batches_and_sends() {
    let (_, spans, _) = serve(&config("tiny", "pp=2"));
    let micro: Vec<u32> = spans[1]
        .iter()
        .filter_map(|s| s.attrs.micro_batch)
        .collect();
    assert!(
        micro.contains(&0) && micro.contains(&1),
        "two micro-batches"
    );
    let waits: Vec<_> = spans[0]
        .iter()
        .filter_map(|s| s.attrs.collective)
        .filter_map(|c| c.wait_ns)
        .collect();
    assert!(!waits.is_empty(), "collectives carry their waiting time");
}

#[test]
fn moe_serves_with_expert_and_tensor_parallelism() {
    let (reference, _, _) = serve(&config("moe-tiny", "tp=1"));
    assert_eq!(reference.len(), 6);
    for layout in ["ep=2", "tp=2"] {
        let (records, spans, _) = serve(&config("moe-tiny", layout));
        assert_eq!(records.len(), 6, "layout {layout}");
        let lengths: Vec<usize> = records.iter().map(|r| r.tokens.len()).collect();
        let expected: Vec<usize> = reference.iter().map(|r| r.tokens.len()).collect();
        assert_eq!(lengths, expected, "layout {layout}");
        if layout == "ep=2" {
            let all_to_all = spans[0]
                .iter()
                .filter_map(|s| s.attrs.collective)
                .any(|c| c.kind == pinch_traces::CollectiveKind::AllToAll);
            assert!(all_to_all, "experts exchange tokens by all-to-all");
        }
    }
}

#[test]
fn experts_count_every_routed_token_once_on_the_rank_holding_them() {
    let config = config("moe-tiny", "ep=2");
    let (records, _, experts) = serve(&config);
    let moe = config.model.moe.as_ref().unwrap();
    assert!(
        records.iter().all(|r| r.preemptions == 0),
        "no recompute to count"
    );
    // Every row fed (the prompt, then each generated token but the last) goes to k experts.
    let rows: u64 = records
        .iter()
        .map(|r| u64::from(r.prompt_tokens) + r.tokens.len() as u64 - 1)
        .sum();
    let layers = (config.model.layers - moe.dense_layers) as u64;
    let counted: u64 = experts
        .iter()
        .flat_map(|e| &e.tokens)
        .map(|&n| u64::from(n))
        .sum();
    assert_eq!(counted, rows * moe.top_k as u64 * layers);
    for e in &experts {
        assert_eq!((e.held, e.experts), (4, 8));
        assert_eq!(
            e.first_expert,
            4 * e.rank.0,
            "rank {} holds its half",
            e.rank.0
        );
        assert_eq!(e.tokens.len(), 4 * e.layers.len());
    }
    assert!(experts.iter().all(|e| e.tokens.iter().any(|&n| n > 0)));
}
