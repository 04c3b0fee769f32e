//! Test hosts for pinch's network tests: each host is its own network namespace, joined to the
//! others through a bridge (in a namespace of its own) by one veth, and each host's link can be
//! shaped with `tc`: a rate, a delay, a loss share, in both directions.
//!
//! Everything lives in namespaces this crate makes and deletes; nothing is added to the root
//! namespace, so tests can only reach loopback and the hosts they built. A [`TestNet`] deletes
//! its namespaces when dropped (also while a test panics), and [`TestNet::new`] first deletes
//! namespaces left by processes of this harness that died without doing so.

mod enter;
mod error;
mod naming;
mod qdisc;
mod together;
mod tool;

use std::ffi::OsStr;
use std::net::Ipv4Addr;
use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

pub use error::TestNetError;
pub use together::{Together, run_together};

use naming::{BRIDGE_DEV, HOST_DEV, Names};

/// Hosts one /24 can number (.1 to .250), leaving the top of the range unused.
pub const MAX_HOSTS: usize = 250;

/// How one host's link is shaped; the same shape applies in each direction.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct LinkShape {
    /// The cap on layer-2 bytes (Ethernet header included) per second, in bits; `None` is
    /// unlimited. Payload throughput stays a few percent below it (TCP/IP headers).
    pub rate_bits_per_s: Option<u64>,
    /// Added one-way delay; a round trip over one shaped link gains twice this.
    pub delay: Duration,
    /// Share of packets dropped at random, per direction.
    pub loss_percent: f32,
}

impl LinkShape {
    /// A link capped at `rate_bits_per_s`, without delay or loss.
    pub fn rate(rate_bits_per_s: u64) -> LinkShape {
        LinkShape {
            rate_bits_per_s: Some(rate_bits_per_s),
            ..LinkShape::default()
        }
    }

    /// A link with `delay` each way, without a rate cap or loss.
    pub fn delay(delay: Duration) -> LinkShape {
        LinkShape {
            delay,
            ..LinkShape::default()
        }
    }

    fn validate(&self) -> Result<(), TestNetError> {
        if let Some(rate_bits_per_s @ 0) = self.rate_bits_per_s {
            return Err(TestNetError::ZeroRate { rate_bits_per_s });
        }
        if !(0.0..=100.0).contains(&self.loss_percent) {
            return Err(TestNetError::Loss {
                loss_percent: self.loss_percent,
            });
        }
        Ok(())
    }
}

/// Hosts in network namespaces on one bridged subnet 10.213.k.0/24 (host `i` is `.i+1`);
/// dropping it deletes the namespaces and with them the veths and the bridge.
#[derive(Debug)]
pub struct TestNet {
    names: Names,
    hosts: usize,
    /// Namespaces made so far, deleted on drop; filled step by step so that a net that fails
    /// half-way through [`TestNet::new`] still cleans up what it made.
    created: Vec<String>,
}

impl TestNet {
    /// Why tests using it must skip (not root, no `ip` or `tc`, netns unsupported), or Ok.
    /// The probe runs once per process.
    pub fn available() -> Result<(), String> {
        static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
        PROBE.get_or_init(probe).clone()
    }

    /// Builds `hosts` hosts, each with its link shaped to `shape`.
    pub fn new(hosts: usize, shape: &LinkShape) -> Result<TestNet, TestNetError> {
        if hosts == 0 || hosts > MAX_HOSTS {
            return Err(TestNetError::HostCount {
                hosts,
                max: MAX_HOSTS,
            });
        }
        shape.validate()?;
        naming::remove_stale();
        let mut net = TestNet {
            names: Names::next(),
            hosts,
            created: Vec::new(),
        };
        net.add_bridge()?;
        for host in 0..hosts {
            net.add_host(host)?;
            net.shape(host, shape)?;
        }
        Ok(net)
    }

    /// The number of hosts.
    pub fn hosts(&self) -> usize {
        self.hosts
    }

    /// The address of host `host`. Panics when `host` is out of range, like indexing does.
    pub fn addr(&self, host: usize) -> Ipv4Addr {
        assert!(host < self.hosts, "host {host} of {}", self.hosts);
        self.addr_unchecked(host)
    }

    /// The name of host `host`'s namespace, for `ip netns exec` and the like.
    /// Panics when `host` is out of range, like indexing does.
    pub fn namespace(&self, host: usize) -> String {
        assert!(host < self.hosts, "host {host} of {}", self.hosts);
        self.names.host(host)
    }

    /// Every namespace of the net: the hosts' and the bridge's.
    pub fn namespaces(&self) -> Vec<String> {
        self.created.clone()
    }

    /// A Command that runs `program` inside host `host`'s namespace (`ip netns exec`).
    /// Panics when `host` is out of range, like indexing does.
    pub fn command(&self, host: usize, program: impl AsRef<OsStr>) -> Command {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec"])
            .arg(self.namespace(host))
            .arg(program);
        command
    }

    /// Runs `f` on a thread inside host `host`'s namespace: sockets it opens belong to the host
    /// and may be used from any thread afterwards.
    pub fn enter<T, F>(&self, host: usize, f: F) -> Result<T, TestNetError>
    where
        T: Send,
        F: FnOnce() -> T + Send,
    {
        self.check_host(host)?;
        enter::run_in(&self.names.host(host), f)
    }

    /// Re-shapes host `host`'s link in both directions: the host's egress on its veth end and
    /// the bridge's egress towards the host.
    pub fn shape(&self, host: usize, shape: &LinkShape) -> Result<(), TestNetError> {
        self.check_host(host)?;
        shape.validate()?;
        qdisc::apply(&self.names.host(host), HOST_DEV, shape)?;
        qdisc::apply(&self.names.bridge(), &Names::port(host), shape)
    }

    fn check_host(&self, host: usize) -> Result<(), TestNetError> {
        if host < self.hosts {
            return Ok(());
        }
        Err(TestNetError::NoSuchHost {
            host,
            hosts: self.hosts,
        })
    }

    fn add_namespace(&mut self, name: String) -> Result<(), TestNetError> {
        tool::ip(&["netns", "add", &name])?;
        self.created.push(name.clone());
        tool::ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(())
    }

    fn add_bridge(&mut self) -> Result<(), TestNetError> {
        let ns = self.names.bridge();
        self.add_namespace(ns.clone())?;
        tool::ip(&["-n", &ns, "link", "add", BRIDGE_DEV, "type", "bridge"])?;
        tool::ip(&["-n", &ns, "link", "set", BRIDGE_DEV, "up"])?;
        Ok(())
    }

    /// Makes host `host`'s namespace and its veth: one end in the host, the other a port of the
    /// bridge. The pair is made in place, so its names never appear in the root namespace.
    fn add_host(&mut self, host: usize) -> Result<(), TestNetError> {
        let (ns, bridge_ns, port) = (
            self.names.host(host),
            self.names.bridge(),
            Names::port(host),
        );
        self.add_namespace(ns.clone())?;
        tool::ip(&[
            "-n", &bridge_ns, "link", "add", &port, "type", "veth", "peer", "name", HOST_DEV,
            "netns", &ns,
        ])?;
        tool::ip(&[
            "-n", &bridge_ns, "link", "set", &port, "master", BRIDGE_DEV, "up",
        ])?;
        let cidr = format!("{}/24", self.addr_unchecked(host));
        tool::ip(&["-n", &ns, "addr", "add", &cidr, "dev", HOST_DEV])?;
        tool::ip(&["-n", &ns, "link", "set", HOST_DEV, "up"])?;
        Ok(())
    }

    fn addr_unchecked(&self, host: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 213, self.names.subnet_octet(), host_octet(host))
    }
}

impl Drop for TestNet {
    /// Deletes the namespaces; the kernel then removes the veths and the bridge inside them.
    /// Processes still running in a host keep its (now nameless) namespace alive until they exit.
    fn drop(&mut self) {
        for ns in self.created.drain(..) {
            if let Err(err) = tool::ip(&["netns", "del", &ns]) {
                // Drop cannot fail; the next TestNet::new of a later process sweeps it.
                eprintln!("pinch-testnet: {err}");
            }
        }
    }
}

/// Last octet of host `host`'s address.
fn host_octet(host: usize) -> u8 {
    // MAX_HOSTS keeps this within .1..=.250.
    u8::try_from(host + 1).unwrap_or(u8::MAX)
}

/// Checks root, the tools and namespace support by making and deleting a probe namespace.
fn probe() -> Result<(), String> {
    if !rustix::process::geteuid().is_root() {
        return Err("not root: network namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN".into());
    }
    for tool in ["ip", "tc"] {
        tool::run(tool, &["-V"]).map_err(|err| format!("'{tool}' is unusable: {err}"))?;
    }
    let probe_ns = format!("{}{}-probe", naming::PREFIX, std::process::id());
    tool::ip(&["netns", "add", &probe_ns])
        .map_err(|err| format!("network namespaces are unsupported: {err}"))?;
    let veth = tool::ip(&[
        "-n", &probe_ns, "link", "add", "tnprobe0", "type", "veth", "peer", "name", "tnprobe1",
    ]);
    let deleted = tool::ip(&["netns", "del", &probe_ns]);
    veth.map_err(|err| format!("veth links are unsupported: {err}"))?;
    deleted.map_err(|err| format!("a probe namespace could not be deleted: {err}"))?;
    Ok(())
}
