//! `pinch bench decode`: decode's achieved memory bandwidth against a STREAM triad measured in
//! the same process, on one thread (as one rank runs).

use crate::exit::bad_input;
use clap::Args;
use pinch_kernels::Storage;
use pinch_workloads::decode_bench::{DecodeBench, measure_decode};
use pinch_workloads::preset;

#[derive(Debug, Args)]
pub struct DecodeArgs {
    /// A dense model preset.
    #[arg(long, default_value = "small")]
    pub model: String,
    /// Weight storage: f32 or bf16 (default: the preset's).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Sequences decoded together.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    #[arg(long, default_value_t = 16)]
    pub prompt_len: usize,
    /// Decode steps timed.
    #[arg(long, default_value_t = 16)]
    pub steps: usize,
    /// Elements of each STREAM triad array (default: 32 Mi, 128 MiB per array).
    #[arg(long, default_value_t = 32 << 20)]
    pub triad_elements: usize,
    #[arg(long)]
    pub json: bool,
}

pub fn decode(args: DecodeArgs) -> anyhow::Result<()> {
    let model = preset(&args.model).map_err(bad_input)?;
    if model.moe.is_some() {
        return Err(bad_input(format!(
            "model '{}' is a mixture of experts; the decode bandwidth benchmark needs a dense \
             model (every weight read once per step)",
            model.name
        )));
    }
    let storage = match &args.dtype {
        Some(text) => Storage::parse(text)
            .ok_or_else(|| bad_input(format!("dtype '{text}' is not f32 or bf16")))?,
        None => model.storage,
    };
    let bench = DecodeBench {
        model,
        storage,
        batch: args.batch,
        prompt_len: args.prompt_len,
        steps: args.steps,
        seed: 0,
        triad_elements: args.triad_elements,
    };
    let m = measure_decode(&bench).map_err(bad_input)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&m)?);
        return Ok(());
    }
    let mut table = crate::render::table(&[
        "model",
        "dtype",
        "batch",
        "weights",
        "step",
        "tokens/s",
        "decode",
        "triad",
        "decode/triad",
    ]);
    table.add_row(vec![
        m.model.clone(),
        m.dtype.clone(),
        m.batch.to_string(),
        format!("{:.2} GB", m.weight_bytes as f64 / 1e9),
        format!("{:.2} ms", m.step_ms),
        format!("{:.1}", m.tokens_per_s),
        format!("{:.2} GB/s", m.decode_gb_per_s),
        format!("{:.2} GB/s", m.triad_gb_per_s),
        format!("{:.0}%", 100.0 * m.fraction_of_triad),
    ]);
    println!(
        "decode streams every weight once per step (plus the KV cache read); triad: STREAM on \
         the same thread\n{table}"
    );
    Ok(())
}
