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
    Ok(config)
}
