//! `pinch tui RUN`: a recorded run in the terminal dashboard. Everything that can fail (a
//! missing or unreadable run, no terminal) fails before the screen is taken over.

use crate::cli::TuiArgs;
use crate::cmd::analyze::load;
use crate::exit::bad_input;
use anyhow::Context;
use pinch_analyzer::phases::replica_tokens;
use pinch_analyzer::{Alignment, RunData, RunFacts, merge_taking_spans, report_with_clocks};
use pinch_tui::{App, Dashboard, Replay};
use std::io::IsTerminal;

pub fn tui(args: TuiArgs) -> anyhow::Result<()> {
    let run = load(&args.run)?;
    if !std::io::stdout().is_terminal() {
        return Err(bad_input(
            "pinch tui draws on a terminal, and standard output is not one".to_string(),
        ));
    }
    let dash = dashboard_of(run);
    pinch_tui::term::run(App::new(dash), &mut Replay).context("the terminal failed")?;
    Ok(())
}

/// The dashboard of a loaded run: its timeline, its report and when its tokens came.
pub fn dashboard_of(mut run: RunData) -> Dashboard {
    let (timeline, clocks) = merge_taking_spans(&mut run, Alignment::Collectives);
    let facts = RunFacts::from_run(&run);
    let report = report_with_clocks(&run, &timeline, &facts, &clocks);
    let tokens: Vec<i64> = replica_tokens(&run, &timeline, &clocks)
        .iter()
        .flat_map(|r| r.tokens.iter().map(|t| t.0))
        .collect();
    Dashboard::new(&report, timeline, &tokens)
}
