//! Exit codes and the one-line error a user sees.

use std::process::ExitCode;

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
    } else {
        ExitCode::from(1)
    }
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
}
