//! The harness against the real kernel: hosts reach each other, a shaped link is capped in both
//! directions, a delay shows in the round trip, and nothing is left behind. Each test prints
//! "skipped: <reason>" and passes where namespaces cannot be made (not root, no `ip`).

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use pinch_testnet::{LinkShape, TestNet, TestNetError};

/// Bounds every socket wait, so a broken link fails the test instead of hanging it.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

fn skip_reason() -> Option<String> {
    TestNet::available().err()
}

macro_rules! require_netns {
    () => {
        if let Some(reason) = skip_reason() {
            println!("skipped: {reason}");
            return;
        }
    };
}

/// A listener inside host `host`, on an ephemeral port of the host's address.
fn listen(net: &TestNet, host: usize) -> (TcpListener, SocketAddr) {
    let addr = net.addr(host);
    let listener = net
        .enter(host, move || TcpListener::bind((addr, 0)))
        .expect("the host's namespace can be entered")
        .expect("the host's address can be bound");
    let local = listener
        .local_addr()
        .expect("a bound listener has an address");
    (listener, local)
}

/// A connection from inside host `host` to `to`, with bounded waits and no Nagle delay.
fn connect(net: &TestNet, host: usize, to: SocketAddr) -> TcpStream {
    let stream = net
        .enter(host, move || TcpStream::connect_timeout(&to, IO_TIMEOUT))
        .expect("the host's namespace can be entered")
        .expect("the peer host accepts connections");
    bound_waits(&stream);
    stream.set_nodelay(true).expect("TCP_NODELAY can be set");
    stream
}

fn bound_waits(stream: &TcpStream) {
    let set = stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .and_then(|()| stream.set_write_timeout(Some(IO_TIMEOUT)));
    set.expect("socket timeouts can be set");
}

/// Accepts one connection and echoes it until EOF; returns the peer's address.
fn echo_once(listener: TcpListener) -> thread::JoinHandle<SocketAddr> {
    thread::spawn(move || {
        let (mut stream, peer) = listener.accept().expect("the client connects");
        bound_waits(&stream);
        let mut reader = stream.try_clone().expect("a socket can be cloned");
        io::copy(&mut reader, &mut stream).expect("the echo runs until EOF");
        peer
    })
}

fn round_trip(stream: &mut TcpStream, message: &[u8]) -> Duration {
    let started = Instant::now();
    stream.write_all(message).expect("the message is sent");
    let mut back = vec![0; message.len()];
    stream.read_exact(&mut back).expect("the echo comes back");
    let elapsed = started.elapsed();
    assert_eq!(back, message);
    elapsed
}

/// Payload bits per second of a `bytes` transfer from host `from` to host `to`, timed from the
/// first byte sent to the receiver's acknowledgement that it has read them all.
fn throughput_bits_per_s(net: &TestNet, from: usize, to: usize, bytes: usize) -> f64 {
    let (listener, addr) = listen(net, to);
    let sink = thread::spawn(move || {
        let (mut stream, _) = listener.accept().expect("the sender connects");
        bound_waits(&stream);
        let received = io::copy(&mut stream, &mut io::sink()).expect("the transfer arrives");
        stream.write_all(&[1]).expect("the acknowledgement is sent");
        received
    });
    let mut stream = connect(net, from, addr);
    let payload = vec![0x5a; bytes];
    let started = Instant::now();
    stream.write_all(&payload).expect("the transfer is sent");
    stream
        .shutdown(std::net::Shutdown::Write)
        .expect("the sender can close its half");
    let mut ack = [0];
    stream
        .read_exact(&mut ack)
        .expect("the receiver acknowledges");
    let elapsed = started.elapsed();
    let received = sink.join().expect("the receiver does not panic");
    assert_eq!(received, bytes as u64);
    bytes as f64 * 8.0 / elapsed.as_secs_f64()
}

fn netns_exists(name: &str) -> bool {
    Path::new("/run/netns").join(name).exists()
}

/// The root namespace's links, one a line.
fn root_links() -> String {
    let output = Command::new("ip")
        .args(["-o", "link", "show"])
        .output()
        .expect("ip runs");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn three_hosts_reach_each_other() {
    require_netns!();
    let net = TestNet::new(3, &LinkShape::default()).unwrap();
    for to in 0..3 {
        for from in (0..3).filter(|&from| from != to) {
            let (listener, addr) = listen(&net, to);
            let server = echo_once(listener);
            let mut stream = connect(&net, from, addr);
            round_trip(&mut stream, format!("{from} to {to}").as_bytes());
            drop(stream);
            assert_eq!(server.join().unwrap().ip(), net.addr(from));
        }
    }
}

#[test]
fn hosts_have_distinct_addresses_on_one_subnet() {
    require_netns!();
    let net = TestNet::new(3, &LinkShape::default()).unwrap();
    let addrs: Vec<Ipv4Addr> = (0..3).map(|host| net.addr(host)).collect();
    assert_eq!(addrs[0].octets()[..3], addrs[2].octets()[..3]);
    assert_ne!(addrs[0], addrs[1]);
    assert_eq!(addrs[0].octets()[..2], [10, 213]);
}

#[test]
fn command_runs_inside_the_host() {
    require_netns!();
    let net = TestNet::new(2, &LinkShape::default()).unwrap();
    let output = net
        .command(1, "ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let shown = String::from_utf8(output.stdout).unwrap();
    assert!(shown.contains(&net.addr(1).to_string()), "{shown}");
    assert!(!shown.contains(&net.addr(0).to_string()), "{shown}");
}

#[test]
fn a_shaped_link_is_capped_in_both_directions() {
    require_netns!();
    let net = TestNet::new(2, &LinkShape::default()).unwrap();
    let cap_bits_per_s = 100_000_000;
    net.shape(1, &LinkShape::rate(cap_bits_per_s)).unwrap();
    // 8 MB keeps the token buckets' initial bursts (two of 96 KiB) under 2.5% of the transfer,
    // and payload is at most 1448/1514 of what the bucket counts, so the cap holds as measured.
    let bytes = 8_000_000;
    for (from, to) in [(0, 1), (1, 0)] {
        let measured = throughput_bits_per_s(&net, from, to, bytes);
        println!("{from} -> {to}: {measured:.0} bit/s under a {cap_bits_per_s} bit/s cap");
        assert!(
            measured <= cap_bits_per_s as f64,
            "{from} -> {to}: {measured:.0} bit/s over a {cap_bits_per_s} bit/s cap"
        );
    }
}

#[test]
fn reshaping_to_unshaped_removes_the_qdiscs() {
    require_netns!();
    let net = TestNet::new(2, &LinkShape::rate(50_000_000)).unwrap();
    let qdiscs = |ns: &str| {
        let args = ["-n", ns, "qdisc", "show", "dev", "tn0"];
        String::from_utf8(Command::new("tc").args(args).output().unwrap().stdout).unwrap()
    };
    assert!(qdiscs(&net.namespace(0)).contains("tbf"));
    net.shape(0, &LinkShape::default()).unwrap();
    assert!(!qdiscs(&net.namespace(0)).contains("tbf"));
    assert!(qdiscs(&net.namespace(1)).contains("tbf"));
}

/// Shapes host 1 with `shape`, or says why this kernel cannot (netem missing).
fn shape_or_skip(net: &TestNet, shape: &LinkShape) -> bool {
    match net.shape(1, shape) {
        Ok(()) => true,
        Err(err @ TestNetError::QdiscMissing { .. }) => {
            println!("skipped: {err}");
            false
        }
        Err(err) => panic!("{err}"),
    }
}

#[test]
fn a_delay_shows_in_the_round_trip() {
    require_netns!();
    let net = TestNet::new(2, &LinkShape::default()).unwrap();
    let delay = Duration::from_millis(20);
    if !shape_or_skip(&net, &LinkShape::delay(delay)) {
        return;
    }
    let (listener, addr) = listen(&net, 1);
    let server = echo_once(listener);
    let mut stream = connect(&net, 0, addr);
    let fastest = (0..5)
        .map(|_| round_trip(&mut stream, b"ping"))
        .min()
        .unwrap();
    drop(stream);
    server.join().unwrap();
    // Only host 1's link is delayed, once each way.
    assert!(
        fastest >= 2 * delay,
        "round trip {fastest:?} with {delay:?} each way"
    );
}

#[test]
fn total_loss_drops_every_datagram() {
    require_netns!();
    let net = TestNet::new(2, &LinkShape::default()).unwrap();
    let lossy = LinkShape {
        loss_percent: 100.0,
        ..LinkShape::default()
    };
    if !shape_or_skip(&net, &lossy) {
        return;
    }
    let to = net.addr(1);
    let receiver = net
        .enter(1, move || UdpSocket::bind((to, 0)))
        .unwrap()
        .unwrap();
    receiver
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let dest = receiver.local_addr().unwrap();
    let from = net.addr(0);
    let sender = net
        .enter(0, move || UdpSocket::bind((from, 0)))
        .unwrap()
        .unwrap();
    for _ in 0..10 {
        sender.send_to(b"lost", dest).unwrap();
    }
    let mut buf = [0; 16];
    assert!(
        receiver.recv_from(&mut buf).is_err(),
        "a datagram got through"
    );
}

#[test]
fn teardown_leaves_nothing_behind() {
    require_netns!();
    let net = TestNet::new(3, &LinkShape::rate(10_000_000)).unwrap();
    let names = net.namespaces();
    assert_eq!(names.len(), 4, "three hosts and the bridge: {names:?}");
    assert!(names.iter().all(|name| netns_exists(name)));
    drop(net);
    assert!(names.iter().all(|name| !netns_exists(name)), "{names:?}");
    let links = root_links();
    assert!(!links.contains("tnbr") && !links.contains("tn0"), "{links}");
}

#[test]
fn a_panicking_test_still_tears_down() {
    require_netns!();
    let (names_tx, names_rx) = std::sync::mpsc::channel();
    let panicked = thread::spawn(move || {
        let net = TestNet::new(2, &LinkShape::default()).unwrap();
        names_tx.send(net.namespaces()).unwrap();
        panic!("on purpose, with the net alive");
    })
    .join();
    assert!(panicked.is_err());
    let names = names_rx.recv().unwrap();
    assert!(names.iter().all(|name| !netns_exists(name)), "{names:?}");
}

#[test]
fn namespaces_of_dead_processes_are_swept() {
    require_netns!();
    // No process can have a pid above pid_max, so this owner is dead for certain.
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stale = format!("pinchtn-{}-0-h0", pid_max + 1);
    let added = Command::new("ip")
        .args(["netns", "add", &stale])
        .status()
        .unwrap();
    assert!(added.success());
    let net = TestNet::new(1, &LinkShape::default()).unwrap();
    assert!(!netns_exists(&stale), "{stale} survived the sweep");
    assert!(net.namespaces().iter().all(|name| netns_exists(name)));
}

#[test]
fn bad_shapes_and_hosts_are_named() {
    let err = TestNet::new(0, &LinkShape::default()).unwrap_err();
    assert_eq!(err.to_string(), "host count '0' is outside 1..=250");
    let lossy = LinkShape {
        loss_percent: 150.0,
        ..LinkShape::default()
    };
    let err = TestNet::new(2, &lossy).unwrap_err();
    assert_eq!(err.to_string(), "loss '150%' is outside 0..=100");
    let err = TestNet::new(2, &LinkShape::rate(0)).unwrap_err();
    assert_eq!(err.to_string(), "link rate '0' bit/s is not positive");
    require_netns!();
    let net = TestNet::new(2, &LinkShape::default()).unwrap();
    let err = net.shape(2, &LinkShape::rate(1_000_000)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "host '2' does not exist: the net has 2 hosts"
    );
}
