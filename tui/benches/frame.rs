//! Benchmarks drawing one timeline frame: 64 ranks and 1 000 000 spans loaded (a step of five
//! nested spans, 15 625 per rank, 10 s of run), on a 200x80 terminal (every rank's row shows), the whole run in view
//! (every span painted) and zoomed to a millisecond. The target is 16 ms a frame.
//!
//! Run with `cargo bench -p pinch-tui --bench frame`; results go in BENCHMARKS.md
//! ("Dashboard").

use divan::Bencher;
use pinch_analyzer::{NameId, SpanColumns, TimedSpan, Timeline};
use pinch_traces::{Category, Lane, NodeId, Rank, SpanAttrs};
use pinch_tui::{App, Dashboard, View};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const RANKS: u32 = 64;
const SPANS: u32 = 1_000_000;
/// A step: an outer span holding four ops.
const PER_STEP: u32 = 5;
const STEP_NS: i64 = 10_000_000_000 / (SPANS / RANKS / PER_STEP) as i64;

fn main() {
    divan::main();
}

fn step(rank: u32, k: u32) -> [TimedSpan; PER_STEP as usize] {
    let t0 = i64::from(k) * STEP_NS + i64::from(rank) * 1_000;
    let span = |name: u32, category, start: i64, duration_ns: i64| TimedSpan {
        rank: Rank(rank),
        node: NodeId(rank / 8),
        lane: Lane(0),
        category,
        name: NameId(name),
        start_ns: t0 + start,
        duration_ns: duration_ns as u64,
        attrs: SpanAttrs {
            step: Some(k),
            ..SpanAttrs::default()
        },
    };
    let quarter = STEP_NS / 4;
    [
        span(0, Category::Host, 0, STEP_NS - 10),
        span(1, Category::Compute, 10, quarter),
        span(2, Category::Memory, quarter + 20, quarter / 2),
        span(3, Category::Compute, 2 * quarter, quarter),
        span(4, Category::Communication, 3 * quarter, quarter - 100),
    ]
}

fn dashboard() -> Dashboard {
    let spans = (0..RANKS)
        .flat_map(|r| (0..SPANS / RANKS / PER_STEP).flat_map(move |k| step(r, k)))
        .collect();
    let names = ["step", "matmul", "kv_copy", "attention", "all_reduce"]
        .map(String::from)
        .to_vec();
    let timeline = Timeline::from_parts(0, names, spans, Vec::new());
    Dashboard {
        spans: SpanColumns::from_timeline(&timeline).expect("sorted spans"),
        live: false,
        ..Dashboard::starting("bench".into())
    }
}

fn timeline_app() -> App {
    let mut app = App::new(dashboard());
    app.view = View::Timeline;
    app
}

#[divan::bench(sample_count = 20)]
fn whole_run(bencher: Bencher) {
    let app = timeline_app();
    let mut terminal = Terminal::new(TestBackend::new(200, 80)).expect("a test terminal");
    bencher.bench_local(|| {
        terminal
            .draw(|frame| pinch_tui::view::render(&app, frame))
            .expect("drawn");
    });
}

#[divan::bench(sample_count = 20)]
fn zoomed_to_a_millisecond(bencher: Bencher) {
    let mut app = timeline_app();
    app.timeline.start_ns = 5_000_000_000;
    app.timeline.width_ns = 1_000_000;
    let mut terminal = Terminal::new(TestBackend::new(200, 80)).expect("a test terminal");
    bencher.bench_local(|| {
        terminal
            .draw(|frame| pinch_tui::view::render(&app, frame))
            .expect("drawn");
    });
}
