//! Exit codes and the one-line error a user sees: 2 for bad input, 3 for a rank that stopped
//! because a peer failed before it (so the coordinator can tell the first failure from its
//! consequences), 1 for any other failure.

use pinch_workloads::{CommError, WorkloadError};
use std::process::ExitCode;

/// The exit code of a rank whose peer failed first.
pub const PEER_LOST: i32 = 3;

/// Bad input from the user: a value that names nothing or does not fit. Exits with code 2.
#[derive(Debug)]
pub struct BadInput(pub String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// Wraps any error as bad input, keeping its message.
pub fn bad_input(err: impl std::fmt::Display) -> anyhow::Error {
    anyhow::Error::new(BadInput(err.to_string()))
}

/// Prints the error on one line and picks the exit code. A closed stdout (a pager quit early)
/// is not an error.
pub fn report(err: &anyhow::Error) -> ExitCode {
    if is_broken_pipe(err) {
        return ExitCode::SUCCESS;
    }
    eprintln!("pinch: {err:#}");
    if err.chain().any(|e| e.is::<BadInput>()) {
        ExitCode::from(2)
    } else if err.chain().any(is_peer_lost) {
        ExitCode::from(PEER_LOST as u8)
    } else {
        ExitCode::from(1)
    }
}

fn is_peer_lost(err: &(dyn std::error::Error + 'static)) -> bool {
    let peer_closed = |c: &CommError| matches!(c, CommError::PeerClosed { .. });
    err.downcast_ref::<CommError>().is_some_and(peer_closed)
        || matches!(err.downcast_ref::<WorkloadError>(), Some(WorkloadError::Comm(c)) if peer_closed(c))
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
