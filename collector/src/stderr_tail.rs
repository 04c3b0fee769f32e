//! A rank's stderr, passed through to the agent's and remembered: when a rank fails, its last
//! line (usually the error it died with) goes into the node log beside its exit status.

use pinch_traces::Rank;
use std::io::{BufRead, BufReader, Read, Write};
use std::sync::{Arc, Mutex};
use std::thread;

/// Keeps the last non-empty line a child wrote to stderr.
#[derive(Debug, Clone, Default)]
pub struct StderrTail {
    last: Arc<Mutex<Option<String>>>,
}

impl StderrTail {
    /// Starts a thread that copies `stderr` to this process's stderr line by line.
    pub fn follow(rank: Rank, stderr: impl Read + Send + 'static) -> StderrTail {
        let tail = StderrTail::default();
        let keeper = tail.clone();
        let spawned = thread::Builder::new()
            .name(format!("pinch-stderr-{}", rank.0))
            .spawn(move || keeper.copy(stderr));
        // Without the thread the child's stderr pipe just closes: its messages are lost, not
        // its run.
        drop(spawned);
        tail
    }

    fn copy(&self, stderr: impl Read) {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
            if !line.trim().is_empty() {
                *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(line);
            }
        }
    }

    /// The last non-empty line written so far.
    pub fn last_line(&self) -> Option<String> {
        self.last.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_non_empty_line() {
        let tail = StderrTail::default();
        tail.copy(&b"starting\nrank 1 closed its connection\n\n"[..]);
        assert_eq!(
            tail.last_line().as_deref(),
            Some("rank 1 closed its connection")
        );
        assert_eq!(StderrTail::default().last_line(), None);
    }
}
