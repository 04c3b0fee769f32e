//! `pinch run --tui`: the run in the dashboard while it goes. The run executes on one thread,
//! and another reads what the node logs hold so far each second (a log being written reads as
//! a cut one) and sends the dashboard of it; the dashboard owns the terminal on this thread.
//! When the run ends, the last dashboard is the whole run's, and stays until the user leaves.

use super::{Plan, Progress, execute};
use crate::cmd::analyze::load;
use crate::cmd::tui::dashboard_of;
use anyhow::Context;
use pinch_tui::{App, Dashboard, Live, LiveSender, SourceEvent};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// How often the dashboard of the run so far is rebuilt.
const REFRESH: Duration = Duration::from_secs(1);

/// `execute`, with the dashboard on the terminal instead of a progress bar; returns what
/// failed once the run ended and the user left the dashboard.
pub(super) fn execute_in_dashboard(plan: &Plan) -> anyhow::Result<Vec<String>> {
    let (news, mut source) = Live::new();
    let done = AtomicBool::new(false);
    let title = format!(
        "pinch run {}: starting",
        plan.run_dir.file_name().map_or_else(
            || plan.run_dir.display().to_string(),
            |n| n.to_string_lossy().into_owned()
        )
    );
    std::thread::scope(|scope| {
        let runner = scope.spawn(|| {
            let failures = execute(plan, Progress::Quiet);
            done.store(true, Ordering::Release);
            failures
        });
        scope.spawn(|| follow_logs(&plan.run_dir, &done, &news));
        let shown = pinch_tui::term::run(App::new(Dashboard::starting(title)), &mut source);
        // No one reads the news any more: the logs' follower stops at its next send.
        drop(source);
        // Leaving the dashboard does not stop the run: its report prints when it ends.
        let failures = runner
            .join()
            .map_err(|_| anyhow::anyhow!("the run's thread panicked"))?;
        shown.context("the terminal failed")?;
        failures
    })
}

/// Sends the dashboard of what the logs hold each `REFRESH` until the run is done, then the
/// whole run's.
fn follow_logs(run_dir: &Path, done: &AtomicBool, news: &LiveSender) {
    yield_to_the_run();
    let mut next = Instant::now() + REFRESH;
    while !done.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(50));
        if Instant::now() < next {
            continue;
        }
        next = Instant::now() + REFRESH;
        // A log too short to read yet: the next refresh tries again.
        if let Ok(run) = load(run_dir) {
            let mut dash = dashboard_of(run);
            dash.live = true;
            if news.send(SourceEvent::Update(Box::new(dash))).is_err() {
                return;
            }
        }
    }
    if let Ok(run) = load(run_dir) {
        let _ = news.send(SourceEvent::Finished(Box::new(dashboard_of(run))));
    }
}

/// Puts this thread (and the threads it starts: the analysis's pools) in the idle scheduling
/// class: it runs only on a core no rank wants, and a rank that wakes takes the core back at
/// once. A lower nice value alone is not enough: a rank woken by a collective then waits for
/// the scheduler's next tick, which costs decode steps milliseconds.
fn yield_to_the_run() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: 0 names the calling thread, and `param` outlives the call. A failure leaves the
    // thread as it was, which costs the run some throughput and nothing else.
    let _ = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
}
