//! Runs the `ip` and `tc` tools and turns their failures into errors that quote the command line.

use std::process::Command;

use crate::TestNetError;

/// Runs `program args..` to completion and returns its stdout; a non-zero exit becomes
/// [`TestNetError::Command`] carrying the command line and what the tool wrote to stderr.
pub(crate) fn run<S: AsRef<str>>(program: &str, args: &[S]) -> Result<String, TestNetError> {
    let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
    let output = Command::new(program)
        .args(&args)
        .output()
        .map_err(|source| TestNetError::Spawn {
            program: program.to_owned(),
            source,
        })?;
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    Err(TestNetError::Command {
        command: format!("{program} {}", args.join(" ")),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
    })
}

/// Runs `ip args..`.
pub(crate) fn ip<S: AsRef<str>>(args: &[S]) -> Result<String, TestNetError> {
    run("ip", args)
}

/// Runs `tc args..`.
pub(crate) fn tc<S: AsRef<str>>(args: &[S]) -> Result<String, TestNetError> {
    run("tc", args)
}
