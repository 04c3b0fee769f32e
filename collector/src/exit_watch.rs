//! Whether a rank process has exited, asked on every sample by the samplers that read it.

use procfs::ProcError;
use procfs::process::Process;
use std::os::fd::OwnedFd;

/// Tells when a rank process has exited. A pidfd (Linux 5.3+) turns readable when the process
/// has exited, zombie or reaped, and asking costs one `poll` with no path walk; without one,
/// /proc is read.
#[derive(Debug)]
pub struct ExitWatch {
    pid: u32,
    pidfd: Option<OwnedFd>,
}

impl ExitWatch {
    pub fn new(pid: u32) -> ExitWatch {
        let raw = i32::try_from(pid).ok().filter(|&raw| raw > 0);
        let pidfd = raw
            .and_then(rustix::process::Pid::from_raw)
            .and_then(|pid| {
                rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
            });
        ExitWatch { pid, pidfd }
    }

    /// Whether the process has exited (a zombie not yet reaped counts as exited).
    pub fn has_exited(&self) -> bool {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let pid = self.pid;
        let Some(fd) = &self.pidfd else {
            return !process_lives(pid);
        };
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        match poll(&mut fds, Some(&now)) {
            Ok(ready) => ready > 0 && fds[0].revents().contains(PollFlags::IN),
            Err(_) => !process_lives(pid),
        }
    }
}

/// Whether the process still runs: not gone, not a zombie waiting to be reaped.
pub fn process_lives(pid: u32) -> bool {
    let stat = Process::new(pid as i32).and_then(|process| process.stat());
    match stat {
        Ok(stat) => stat.state != 'Z' && stat.state != 'X',
        Err(ProcError::NotFound(_) | ProcError::Incomplete(_)) => false,
        // Unreadable for another reason: keep counting, the perf reads will tell.
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn a_child_is_seen_to_exit_as_a_zombie_and_once_reaped() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let watch = ExitWatch::new(child.id());
        assert!(!watch.has_exited());
        child.kill().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !watch.has_exited() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(
            watch.has_exited(),
            "a killed child not yet reaped has exited"
        );
        child.wait().unwrap();
        assert!(watch.has_exited());
        assert!(!ExitWatch::new(std::process::id()).has_exited());
    }
}
