//! End-to-end: the dashboard driven in tmux as a user would: open a recorded run, switch to
//! every view, open a finding's evidence and jump to it on the timeline, open the help, quit,
//! and find the shell's screen back; and `pinch run --tui`, which ends on the run's result and
//! prints the report after; and PyTorch profiler traces opened the same way. Plus the failures
//! that must come before the screen is taken over.
//! The tmux tests skip, and say why, where tmux is missing.

mod common;

use common::{kineto_trace, pinch, run, stderr_of};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

/// A tmux server of the test's own (its own socket: tests run side by side), killed when
/// dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn new(test: &str) -> Tmux {
        Tmux {
            socket: format!("pinch-test-{}-{test}", std::process::id()),
        }
    }

    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("tmux runs")
    }

    /// Opens `run_dir` with `pinch tui` in a new session; the shell says how it exited after.
    fn open(&self, run_dir: &Path) {
        let bin = assert_cmd::cargo::cargo_bin("pinch");
        self.start(&format!(
            "'{}' tui '{}'; echo dashboard exited $?; sleep 30",
            bin.display(),
            run_dir.display()
        ));
    }

    /// Runs `shell` in a 100x30 pane of a new session.
    fn start(&self, shell: &str) {
        let started = self.cmd(&[
            "new-session",
            "-d",
            "-s",
            "t",
            "-x",
            "100",
            "-y",
            "30",
            shell,
        ]);
        assert!(started.status.success(), "{started:?}");
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "t"]).stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        self.cmd(&["send-keys", "-t", "t", keys]);
    }

    /// Waits (up to 60 s: a debug build loads the run slowly) for `text` on the screen.
    fn wait_for(&self, text: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                Instant::now() < deadline,
                "'{text}' never showed; the screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        self.cmd(&["kill-server"]);
    }
}

/// A tmux server of the test's own, or `None`, saying why, where tmux is missing.
fn tmux_or_skip(test: &str) -> Option<Tmux> {
    if !has_tmux() {
        eprintln!("skipped: tmux is not installed (.ci/run installs it)");
        return None;
    }
    Some(Tmux::new(test))
}

fn has_tmux() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn the_dashboard_shows_every_view_and_a_finding_on_the_timeline_in_tmux() {
    let Some(tmux) = tmux_or_skip("views") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    run(&out, &[]).success();
    tmux.open(&out);

    let overview = tmux.wait_for("ranks: share of wall time");
    assert!(
        overview.contains("[recorded]") && overview.contains("node 0"),
        "{overview}"
    );
    tmux.keys("2");
    tmux.wait_for("selected span");
    tmux.keys("c");
    let timeline = tmux.wait_for("participants");
    assert!(timeline.contains("rank 0"), "{timeline}");
    tmux.keys("3");
    tmux.wait_for("findings (");
    tmux.keys("Enter");
    let evidence = tmux.wait_for("suggestion:");
    assert!(evidence.contains("evidence:"), "{evidence}");
    tmux.keys("Enter");
    let jumped = tmux.wait_for("selected span");
    assert!(
        !jumped.contains("none: n or Enter"),
        "a span is selected:\n{jumped}"
    );
    for (key, text) in [
        ("4", "ops, all ranks"),
        ("5", "collectives"),
        ("6", "output tokens per second"),
        ("Tab", "ranks: share of wall time"),
        ("?", "any key closes it"),
    ] {
        tmux.keys(key);
        tmux.wait_for(text);
    }
    tmux.keys("Escape");
    tmux.wait_for("ranks: share of wall time");
    // A left click on the fourth tab, as a terminal reports it (SGR, 1-based column and row).
    tmux.cmd(&["send-keys", "-t", "t", "-l", "\x1b[<0;44;2M"]);
    tmux.wait_for("ops, all ranks");
    tmux.keys("q");
    let after = tmux.wait_for("dashboard exited");
    assert!(after.contains("dashboard exited 0"), "{after}");
    assert!(
        !after.contains("ranks: share of wall time"),
        "the alternate screen is gone:\n{after}"
    );
}

#[test]
fn pinch_run_tui_shows_the_run_then_stays_on_its_result_and_prints_the_report() {
    let Some(tmux) = tmux_or_skip("live") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let bin = assert_cmd::cargo::cargo_bin("pinch");
    let shell = format!(
        "'{}' run --tui {} --out '{}'; echo run exited $?; sleep 30",
        bin.display(),
        common::SMALL.join(" "),
        out.display()
    );
    tmux.start(&shell);
    // The last dashboard is the whole run's, and it stays until q.
    let result = tmux.wait_for("[recorded]");
    assert!(result.contains("2 nodes, 2 ranks"), "{result}");
    std::thread::sleep(Duration::from_millis(500));
    assert!(tmux.screen().contains("[recorded]"), "the dashboard stays");
    tmux.keys("q");
    let after = tmux.wait_for("run exited");
    assert!(after.contains("run exited 0"), "{after}");
    assert!(
        after.contains("run stored in"),
        "the report follows:\n{after}"
    );
    assert!(out.join("report.json").is_file());
    assert!(
        out.join("agent-0.stderr").is_file(),
        "the agents' stderr kept off the screen"
    );
}

#[test]
fn pinch_run_tui_without_a_terminal_fails_in_one_line_before_running() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let assert = pinch()
        .args(["run", "--tui", "--out"])
        .arg(&out)
        .assert()
        .code(2);
    let stderr = stderr_of(&assert);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--tui"), "{stderr}");
    assert!(!out.exists(), "nothing ran");
}

#[test]
fn a_run_with_only_its_logs_is_analysed_once_and_its_files_stored() {
    let Some(tmux) = tmux_or_skip("logs-only") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    run(&out, &[]).success();
    let stored = ["report.json", "spans.parquet", "counters.parquet"];
    for file in stored {
        std::fs::remove_file(out.join(file)).unwrap();
    }
    tmux.open(&out);
    tmux.wait_for("ranks: share of wall time");
    for file in stored {
        assert!(out.join(file).is_file(), "{file} stored again");
    }
    // A span's arguments now come from the stored spans table.
    tmux.keys("2");
    tmux.wait_for("selected span");
    tmux.keys("c");
    tmux.wait_for("participants");
    tmux.keys("q");
    let after = tmux.wait_for("dashboard exited");
    assert!(after.contains("dashboard exited 0"), "{after}");
}

#[test]
fn pytorch_profiler_traces_open_in_the_dashboard() {
    let Some(tmux) = tmux_or_skip("kineto") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for rank in 0..2 {
        let path = dir.path().join(format!("rank-{rank}.json"));
        std::fs::write(path, kineto_trace(Some(rank), 2)).unwrap();
    }
    tmux.open(dir.path());
    let overview = tmux.wait_for("ranks: share of wall time");
    assert!(overview.contains("PyTorch profiler traces"), "{overview}");
    tmux.keys("2");
    tmux.wait_for("selected span");
    tmux.keys("c");
    let timeline = tmux.wait_for("ncclDevKernel_AllReduce");
    assert!(timeline.contains("all_reduce"), "{timeline}");
    tmux.keys("q");
    let after = tmux.wait_for("dashboard exited");
    assert!(after.contains("dashboard exited 0"), "{after}");
}

/// The one line a failed `pinch tui` prints, and that it exited with 2.
fn one_line_failure(args: &[&std::ffi::OsStr]) -> String {
    let assert = pinch().arg("tui").args(args).assert().code(2);
    let stderr = stderr_of(&assert);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    stderr
}

#[test]
fn a_missing_run_is_named_in_one_line_before_the_screen_is_taken() {
    let stderr = one_line_failure(&[Path::new("no/such/run").as_os_str()]);
    assert!(stderr.contains("'no/such/run' does not exist"), "{stderr}");
}

#[test]
fn without_a_terminal_it_says_so_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    run(&out, &[]).success();
    // assert_cmd gives the child a pipe, not a terminal, for stdout.
    let stderr = one_line_failure(&[out.as_os_str()]);
    assert!(stderr.contains("not one"), "{stderr}");
}
