//! Validates workload flags into the workloads crate's run configuration, before any work starts.

use crate::cli::WorkloadArgs;
use crate::exit::bad_input;
use pinch_workloads::{TpRunConfig, preset};

/// The tensor-parallel run the flags describe, or a one-line error naming the bad value.
pub fn tp_config(args: &WorkloadArgs, default_tp: usize) -> anyhow::Result<TpRunConfig> {
    let model = preset(&args.preset).map_err(bad_input)?;
    let tp = args.tp.unwrap_or(default_tp);
    model.validate_tp(tp).map_err(bad_input)?;
    let config = TpRunConfig {
        model,
        tp,
        batch: args.batch,
        prompt_len: args.prompt_len,
        decode_tokens: args.decode_tokens,
        rounds: args.rounds,
        seed: args.seed,
    };
    config.validate().map_err(bad_input)?;
    validate_fault(args, &config)?;
    Ok(config)
}

/// An injected crash must name a rank of the run and a step it reaches.
fn validate_fault(args: &WorkloadArgs, config: &TpRunConfig) -> anyhow::Result<()> {
    if let Some(rank) = args.crash_rank.filter(|&r| r as usize >= config.tp) {
        return Err(bad_input(format!(
            "crash rank '{rank}' is not a rank of this run (ranks 0 to {})",
            config.tp - 1
        )));
    }
    let steps = config.steps();
    if let Some(step) = args.crash_at_step.filter(|&s| s == 0 || s > steps) {
        return Err(bad_input(format!(
            "crash step '{step}' is not a step of this run (steps 1 to {steps})"
        )));
    }
    Ok(())
}
