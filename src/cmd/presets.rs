//! `pinch presets`: the model shapes pinch ships, with their sizes, as a table or as JSON.

use std::io::Write;

use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_FULL_CONDENSED};
use pinch_kernels::Storage;
use pinch_workloads::ModelConfig;
use pinch_workloads::config::presets as all_presets;

/// Arguments of `pinch presets`.
#[derive(Debug, clap::Args)]
pub struct PresetsArgs {
    /// Print the presets as JSON (each config with its parameter counts and weight bytes).
    #[arg(long)]
    pub json: bool,
}

/// Prints every preset. A closed stdout comes back as a broken-pipe error, which `exit` treats
/// as a quiet exit.
pub fn presets(args: PresetsArgs) -> anyhow::Result<()> {
    let configs = all_presets();
    let text = if args.json {
        serde_json::to_string_pretty(&json(&configs))?
    } else {
        table(&configs).to_string()
    };
    writeln!(std::io::stdout().lock(), "{text}")?;
    Ok(())
}

const HEADERS: [&str; 11] = [
    "preset",
    "family",
    "layers",
    "hidden",
    "heads/kv",
    "experts (top-k, shared)",
    "params",
    "active",
    "f32",
    "bf16",
    "max seq",
];

fn table(configs: &[ModelConfig]) -> Table {
    let mut t = Table::new();
    t.load_preset(UTF8_FULL_CONDENSED);
    t.set_header(HEADERS);
    for config in configs {
        t.add_row(row(config));
    }
    t
}

fn row(c: &ModelConfig) -> Vec<Cell> {
    let left = |text: String| Cell::new(text);
    let right = |text: String| Cell::new(text).set_alignment(CellAlignment::Right);
    vec![
        left(c.name.clone()),
        left(c.family.name().to_string()),
        right(c.layers.to_string()),
        right(c.hidden.to_string()),
        right(format!("{}/{}", c.heads, c.kv_heads)),
        right(experts(c)),
        right(count(c.param_count())),
        right(count(c.active_param_count())),
        right(gigabytes(c.weight_bytes(Storage::F32))),
        right(gigabytes(c.weight_bytes(Storage::Bf16))),
        right(c.max_seq.to_string()),
    ]
}

/// "8 (2, 0)" for a MoE model, "-" for a dense one.
fn experts(c: &ModelConfig) -> String {
    c.moe.as_ref().map_or("-".to_string(), |moe| {
        format!("{} ({}, {})", moe.experts, moe.top_k, moe.shared_experts)
    })
}

/// A parameter count with a unit: "28.0 M", "8.03 B".
fn count(n: u64) -> String {
    let n = n as f64;
    match n {
        n if n >= 1e11 => format!("{:.0} B", n / 1e9),
        n if n >= 1e10 => format!("{:.1} B", n / 1e9),
        n if n >= 1e9 => format!("{:.2} B", n / 1e9),
        n => format!("{:.1} M", n / 1e6),
    }
}

/// Bytes as decimal gigabytes.
fn gigabytes(bytes: u64) -> String {
    format!("{:.2} GB", bytes as f64 / 1e9)
}

fn json(configs: &[ModelConfig]) -> serde_json::Value {
    let entries = configs.iter().map(|c| {
        serde_json::json!({
            "config": c,
            "param_count": c.param_count(),
            "active_param_count": c.active_param_count(),
            "weight_bytes_f32": c.weight_bytes(Storage::F32),
            "weight_bytes_bf16": c.weight_bytes(Storage::Bf16),
        })
    });
    serde_json::Value::Array(entries.collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pinch_workloads::preset;

    #[test]
    fn counts_read_with_their_unit() {
        assert_eq!(count(28_049_920), "28.0 M");
        assert_eq!(count(8_030_261_248), "8.03 B");
        assert_eq!(count(46_702_792_704), "46.7 B");
        assert_eq!(count(405_853_388_800), "406 B");
        assert_eq!(gigabytes(16_060_522_496), "16.06 GB");
    }

    #[test]
    fn a_row_shows_the_shape_and_sizes_of_a_preset() {
        let cells: Vec<String> = row(&preset("mixtral-8x7b").unwrap())
            .iter()
            .map(|c| c.content())
            .collect();
        assert_eq!(
            cells,
            [
                "mixtral-8x7b",
                "mixtral",
                "32",
                "4096",
                "32/8",
                "8 (2, 0)",
                "46.7 B",
                "12.9 B",
                "186.81 GB",
                "93.41 GB",
                "32768"
            ]
        );
        let dense = row(&preset("tiny").unwrap());
        assert_eq!(dense[5].content(), "-");
    }

    #[test]
    fn the_table_lists_every_preset() {
        let configs = all_presets();
        let text = table(&configs).to_string();
        for c in &configs {
            assert!(text.contains(&c.name), "{} missing from\n{text}", c.name);
        }
        let value = json(&configs);
        assert_eq!(value.as_array().map(Vec::len), Some(configs.len()));
        assert_eq!(value[0]["config"]["name"], "tiny");
        assert_eq!(value[0]["param_count"], configs[0].param_count());
    }
}
