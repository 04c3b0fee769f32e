//! Runs a closure on a thread that has joined a named network namespace.
//!
//! A thread's network namespace is its own (setns affects only the calling thread), and a socket
//! stays in the namespace it was made in. So a closure that opens sockets inside a host can hand
//! them back to any thread of the test, without helper processes.

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;

use rustix::thread::{LinkNameSpaceType, move_into_link_name_space};

use crate::TestNetError;

/// Runs `f` on a new thread inside namespace `namespace` (a name under /run/netns) and returns
/// its result; a panic in `f` is resumed on the caller's thread.
pub(crate) fn run_in<T, F>(namespace: &str, f: F) -> Result<T, TestNetError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let enter_err = |source| TestNetError::Enter {
        namespace: namespace.to_owned(),
        source,
    };
    let file = File::open(Path::new("/run/netns").join(namespace)).map_err(enter_err)?;
    let joined = std::thread::scope(|scope| {
        scope
            .spawn(move || {
                move_into_link_name_space(file.as_fd(), Some(LinkNameSpaceType::Network))
                    .map_err(|errno| enter_err(errno.into()))?;
                Ok(f())
            })
            .join()
    });
    match joined {
        Ok(result) => result,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}
