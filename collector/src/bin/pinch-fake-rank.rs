//! A synthetic rank for testing agents: it records spans the way a workload does and streams them
//! to its stdout with `RankStream`, like a real rank, without running a model.
//!
//! Usage: `pinch-fake-rank RANK STEPS [EXIT_CODE]`. Each step records a compute span on lane 0
//! and a communication span on lane 1, 2 ms apart, and reports progress every 10 steps; then the
//! rank sends its output and finishes its stream. With EXIT_CODE it then writes half a frame (a
//! stream cut mid-record) and exits with that code, as a rank that crashes mid-stream would.

use pinch_collector::{RankStream, Recorder, recorder::DEFAULT_CAPACITY};
use pinch_traces::{Category, Lane, Rank, Record, SpanAttrs};
use std::error::Error;
use std::io::Write;
use std::time::Duration;

struct Args {
    rank: Rank,
    steps: u32,
    exit_code: Option<i32>,
}

fn parse_args() -> Result<Args, Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || {
        format!(
            "usage: pinch-fake-rank RANK STEPS [EXIT_CODE], not '{}'",
            args.join(" ")
        )
    };
    let (Some(rank), Some(steps)) = (args.first(), args.get(1)) else {
        return Err(usage().into());
    };
    Ok(Args {
        rank: Rank(rank.parse().map_err(|_| usage())?),
        steps: steps.parse().map_err(|_| usage())?,
        exit_code: args
            .get(2)
            .map(|c| c.parse())
            .transpose()
            .map_err(|_| usage())?,
    })
}

fn main() -> Result<(), Box<dyn Error>> {
    let args = parse_args()?;
    let (recorder, drain) = Recorder::new(args.rank, DEFAULT_CAPACITY);
    let stream = RankStream::start(drain, std::io::stdout(), Duration::from_millis(5))?;
    let matmul = recorder.intern("matmul");
    let all_reduce = recorder.intern("all_reduce");
    for step in 0..args.steps {
        let attrs = SpanAttrs {
            step: Some(step),
            ..SpanAttrs::default()
        };
        let start = recorder.stamp();
        std::thread::sleep(Duration::from_millis(1));
        recorder.finish(Lane(0), Category::Compute, matmul, start, attrs);
        let start = recorder.stamp();
        std::thread::sleep(Duration::from_millis(1));
        recorder.finish(Lane(1), Category::Communication, all_reduce, start, attrs);
        if (step + 1) % 10 == 0 {
            let (done, total) = (step + 1, args.steps);
            stream.send(Record::Progress {
                rank: args.rank,
                done,
                total,
            });
        }
    }
    let tokens = vec![vec![args.rank.0, args.steps]];
    stream.send(Record::Output {
        rank: args.rank,
        tokens,
    });
    stream.finish()?;
    if let Some(code) = args.exit_code {
        // A frame header announcing 100 payload bytes, then only 10 of them.
        let mut stdout = std::io::stdout();
        stdout.write_all(&100u32.to_le_bytes())?;
        stdout.write_all(&[0u8; 4 + 10])?;
        stdout.flush()?;
        std::process::exit(code);
    }
    Ok(())
}
