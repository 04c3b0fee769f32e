//! Runs several processes at once (one per host, typically the ranks of one job) and collects
//! their outputs, with a deadline so that a hung rank cannot hang the test that started it.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

use crate::TestNetError;

/// How often the children are polled for exit.
const POLL: Duration = Duration::from_millis(10);

/// What [`run_together`] saw.
#[derive(Debug)]
pub struct Together {
    /// One output per command, in the order given. A child that was stopped has a status
    /// without an exit code (it died of SIGKILL).
    pub outputs: Vec<Output>,
    /// Whether the deadline passed with some child still running.
    pub timed_out: bool,
}

/// Starts every command with piped stdout and stderr, waits until all have exited or `timeout`
/// has passed, and kills whatever still runs then. When one child fails, the rest are killed
/// at once: in a collective job its peers would only wait for it until the deadline.
/// Each command leads a process group of its own, and killing means SIGKILL to the whole group,
/// so a child's own children cannot outlive it holding its pipes open.
pub fn run_together(commands: Vec<Command>, timeout: Duration) -> Result<Together, TestNetError> {
    let mut running = Vec::with_capacity(commands.len());
    for command in commands {
        match Running::start(command) {
            Ok(child) => running.push(child),
            Err(err) => {
                running.iter_mut().for_each(Running::kill);
                return Err(err);
            }
        }
    }
    let timed_out = wait_all(&mut running, Instant::now() + timeout);
    let outputs = running
        .into_iter()
        .map(Running::finish)
        .collect::<Result<_, _>>()?;
    Ok(Together { outputs, timed_out })
}

/// Polls until every child has exited (false) or the deadline passes (true); kills the rest
/// in either case where one failed or the time ran out.
fn wait_all(running: &mut [Running], deadline: Instant) -> bool {
    loop {
        let mut any_running = false;
        let mut any_failed = false;
        for child in running.iter_mut() {
            match child.poll() {
                None => any_running = true,
                Some(status) => any_failed |= !status.success(),
            }
        }
        if !any_running {
            return false;
        }
        let timed_out = Instant::now() >= deadline;
        if any_failed || timed_out {
            running.iter_mut().for_each(Running::kill);
            return timed_out;
        }
        std::thread::sleep(POLL);
    }
}

/// A started child and the threads draining its pipes (so a chatty child never blocks on a
/// full pipe while we wait for it).
struct Running {
    program: String,
    child: Child,
    status: Option<ExitStatus>,
    stdout: JoinHandle<Vec<u8>>,
    stderr: JoinHandle<Vec<u8>>,
}

impl Running {
    fn start(mut command: Command) -> Result<Running, TestNetError> {
        let program = command.get_program().to_string_lossy().into_owned();
        let mut child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| TestNetError::Spawn {
                program: program.clone(),
                source,
            })?;
        let stdout = drain(child.stdout.take());
        let stderr = drain(child.stderr.take());
        Ok(Running {
            program,
            child,
            status: None,
            stdout,
            stderr,
        })
    }

    /// The exit status, once the child has exited.
    fn poll(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    fn kill(&mut self) {
        if self.poll().is_none() {
            // The group id is the child's pid (process_group(0)). The child may exit between
            // the poll and the kill; then there is nothing left to stop, so failure is fine.
            let group = Pid::from_child(&self.child);
            let _ = kill_process_group(group, Signal::KILL);
        }
    }

    /// Reaps the child (killed already if it was still running) and gathers its output.
    fn finish(mut self) -> Result<Output, TestNetError> {
        let status = match self.status {
            Some(status) => status,
            None => self.child.wait().map_err(|source| TestNetError::Spawn {
                program: self.program,
                source,
            })?,
        };
        Ok(Output {
            status,
            stdout: self.stdout.join().unwrap_or_default(),
            stderr: self.stderr.join().unwrap_or_default(),
        })
    }
}

fn drain(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            // A read error ends the capture early; what was read so far is still worth showing.
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut command = Command::new("sh");
        command.args(["-c", script]);
        command
    }

    #[test]
    fn outputs_come_back_in_order() {
        let together = run_together(
            vec![sh("echo one"), sh("echo two >&2")],
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(!together.timed_out);
        assert_eq!(together.outputs[0].stdout, b"one\n");
        assert_eq!(together.outputs[1].stderr, b"two\n");
        assert!(together.outputs.iter().all(|o| o.status.success()));
    }

    #[test]
    fn a_child_past_the_deadline_is_killed() {
        let together = run_together(vec![sh("sleep 30")], Duration::from_millis(200)).unwrap();
        assert!(together.timed_out);
        assert_eq!(together.outputs[0].status.code(), None);
    }

    #[test]
    fn a_failing_child_stops_its_peers() {
        let started = Instant::now();
        let together =
            run_together(vec![sh("exit 3"), sh("sleep 30")], Duration::from_secs(20)).unwrap();
        assert!(!together.timed_out);
        assert_eq!(together.outputs[0].status.code(), Some(3));
        assert_eq!(together.outputs[1].status.code(), None);
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}
