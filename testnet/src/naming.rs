//! Names of a net's namespaces and interfaces, and the sweep that removes namespaces left behind
//! by processes that died before they could tear their net down.

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::tool;

/// Every namespace the harness makes starts with this, so a sweep can find them.
pub(crate) const PREFIX: &str = "pinchtn-";
/// Where `ip netns add` pins named namespaces.
const NETNS_DIR: &str = "/run/netns";
/// The bridge inside the bridge namespace.
pub(crate) const BRIDGE_DEV: &str = "tnbr";
/// A host's end of its veth, inside the host's namespace.
pub(crate) const HOST_DEV: &str = "tn0";

/// Counts nets made by this process, so that parallel tests get distinct names.
static NEXT_SEQ: AtomicU32 = AtomicU32::new(0);

/// The names of one net: `pinchtn-<pid>-<seq>-h<i>` per host and `pinchtn-<pid>-<seq>-br`.
/// The owner's pid in the name lets a later process tell a stale namespace from a live one.
#[derive(Debug, Clone)]
pub(crate) struct Names {
    stem: String,
    subnet_octet: u8,
}

impl Names {
    /// Fresh names for a new net of this process.
    pub(crate) fn next() -> Names {
        let pid = std::process::id();
        let seq = NEXT_SEQ.fetch_add(1, Ordering::Relaxed);
        // Nets alive at once get different subnets (barring 256 of them), which keeps addresses
        // in logs unambiguous; the namespaces keep their traffic apart regardless.
        let subnet_octet = (pid.wrapping_add(seq) % 256) as u8;
        Names {
            stem: format!("{PREFIX}{pid}-{seq}"),
            subnet_octet,
        }
    }

    /// The namespace of host `host`.
    pub(crate) fn host(&self, host: usize) -> String {
        format!("{}-h{host}", self.stem)
    }

    /// The namespace that holds the bridge.
    pub(crate) fn bridge(&self) -> String {
        format!("{}-br", self.stem)
    }

    /// The bridge port that leads to host `host`, inside the bridge namespace.
    pub(crate) fn port(host: usize) -> String {
        format!("tnp{host}")
    }

    /// `k` of the net's subnet 10.213.k.0/24.
    pub(crate) fn subnet_octet(&self) -> u8 {
        self.subnet_octet
    }
}

/// The pid of the process that made namespace `name`, if `name` is one of the harness's.
pub(crate) fn owner_pid(name: &str) -> Option<u32> {
    let rest = name.strip_prefix(PREFIX)?;
    let (pid, _) = rest.split_once('-')?;
    pid.parse().ok()
}

/// The harness's namespaces that exist now, whoever made them.
pub(crate) fn existing() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        // No directory: nobody has named a namespace since boot.
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.starts_with(PREFIX))
        .collect()
}

/// Deletes the harness's namespaces whose owner process is gone, and returns their names.
/// Namespaces of live processes (this one included) are left alone.
pub(crate) fn remove_stale() -> Vec<String> {
    let stale: Vec<String> = existing()
        .into_iter()
        .filter(|name| owner_pid(name).is_some_and(|pid| !process_alive(pid)))
        .collect();
    // Another process may sweep the same names at the same moment; losing that race is harmless.
    stale
        .into_iter()
        .filter(|name| tool::ip(&["netns", "del", name]).is_ok())
        .collect()
}

fn process_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_reads_the_pid_after_the_prefix() {
        assert_eq!(owner_pid("pinchtn-4242-7-h0"), Some(4242));
        assert_eq!(owner_pid("pinchtn-4242-7-br"), Some(4242));
        assert_eq!(owner_pid("pinchtn-x-7-br"), None);
        assert_eq!(owner_pid("other-4242-7-h0"), None);
    }

    #[test]
    fn names_of_one_net_share_the_owner_and_differ_between_nets() {
        let first = Names::next();
        let second = Names::next();
        assert_eq!(owner_pid(&first.host(0)), Some(std::process::id()));
        assert_eq!(owner_pid(&first.bridge()), Some(std::process::id()));
        assert_ne!(first.host(0), second.host(0));
        assert_ne!(first.host(0), first.host(1));
    }

    #[test]
    fn interface_names_fit_the_kernel_limit() {
        // IFNAMSIZ is 16 including the terminating NUL.
        assert!(Names::port(249).len() <= 15);
        assert!(BRIDGE_DEV.len() <= 15 && HOST_DEV.len() <= 15);
    }
}
