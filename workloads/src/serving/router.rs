//! The data-parallel router: a `RouterServer` in the coordinator process hands the request stream
//! to the replicas, whose leader ranks each hold a `RouterClient` connected over TCP on loopback.
//!
//! Requests are released once every replica has connected: with Poisson arrivals each at its
//! arrival offset from that moment, with `Concurrency(c)` `c` at once and then one more each
//! time a replica reports a request finished (a closed loop, as in vLLM's benchmark with a
//! concurrency limit). When every request has been released the router tells each replica
//! `End`, then waits for the last finish reports. A replica that disconnects while it still owes
//! finish reports, or before the stream has ended, fails the router (and so every other
//! replica's connection) instead of hanging it.
//!
//! Wire format: frames of `[payload bytes u32 LE][postcard payload]`; a replica opens with a
//! hello carrying `HELLO_MAGIC` and its index. Connections that do not open with one are dropped.

use super::ServingError;
use super::requests::{Arrivals, RequestSpec};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Opens a replica's hello, so a stray connection is told apart from a replica ("PNRT").
const HELLO_MAGIC: u32 = 0x504e_5254;
/// The largest frame either side accepts; a larger length means a corrupt or foreign stream.
const MAX_FRAME_BYTES: usize = 64 << 20;
/// How long to wait between polls of the listener or retries of a refused connection.
const POLL: Duration = Duration::from_millis(5);
/// How long a new connection may take to say hello; a replica sends it right after connecting,
/// and a silent stranger must not hold up the others for long.
const HELLO_WAIT: Duration = Duration::from_secs(1);

/// How the router picks a replica for each request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoutePolicy {
    /// Replicas in turn.
    RoundRobin,
    /// The replica with the fewest (prompt + output) tokens of requests routed to it and not yet
    /// reported finished; ties go to the lowest replica.
    LeastOutstandingTokens,
}

impl RoutePolicy {
    /// Parses `"round-robin"` or `"least-tokens"`.
    pub fn parse(s: &str) -> Result<RoutePolicy, ServingError> {
        match s {
            "round-robin" => Ok(RoutePolicy::RoundRobin),
            "least-tokens" => Ok(RoutePolicy::LeastOutstandingTokens),
            _ => Err(ServingError::UnknownPolicy { name: s.into() }),
        }
    }
}

/// The form `parse` reads back.
impl fmt::Display for RoutePolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RoutePolicy::RoundRobin => "round-robin",
            RoutePolicy::LeastOutstandingTokens => "least-tokens",
        })
    }
}

/// What one replica was given and reported.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSummary {
    pub replica: usize,
    /// Requests routed to it.
    pub requests: usize,
    /// Requests it reported finished.
    pub finished: usize,
    /// Output tokens over its finish reports.
    pub output_tokens: u64,
}

/// How the request stream was spread over the replicas, one entry per replica in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterSummary {
    pub replicas: Vec<ReplicaSummary>,
}

/// What a replica sends the router.
#[derive(Debug, Serialize, Deserialize)]
enum ToRouter {
    Hello { magic: u32, replica: u32 },
    Finished { request_id: u64, output_tokens: u64 },
}

/// What the router sends a replica.
#[derive(Debug, Serialize, Deserialize)]
enum ToReplica {
    Requests(Vec<RequestSpec>),
    End,
}

fn write_frame<T: Serialize>(stream: &mut TcpStream, msg: &T) -> io::Result<()> {
    let payload =
        postcard::to_stdvec(msg).map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
    let len = u32::try_from(payload.len())
        .map_err(|_| io::Error::new(ErrorKind::InvalidData, "frame too large"))?;
    let mut frame = Vec::with_capacity(4 + payload.len());
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&payload);
    stream.write_all(&frame)
}

/// The next frame; `None` when the peer closed the connection between frames.
fn read_frame<T: DeserializeOwned>(stream: &mut TcpStream) -> io::Result<Option<T>> {
    let mut len = [0u8; 4];
    match stream.read_exact(&mut len) {
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(None),
        other => other?,
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME_BYTES {
        let problem = format!("frame of '{len}' bytes exceeds {MAX_FRAME_BYTES}");
        return Err(io::Error::new(ErrorKind::InvalidData, problem));
    }
    let mut payload = vec![0u8; len];
    stream.read_exact(&mut payload)?;
    postcard::from_bytes(&payload)
        .map(Some)
        .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))
}

/// Turns an i/o error with `peer` into the matching `ServingError`.
fn wire_error(peer: String, e: io::Error) -> ServingError {
    match e.kind() {
        ErrorKind::InvalidData => ServingError::Protocol {
            peer,
            problem: e.to_string(),
        },
        _ => ServingError::Io { peer, source: e },
    }
}

fn timed_out(waiting_for: String, after: Duration) -> ServingError {
    ServingError::Timeout {
        waiting_for,
        after_ms: u64::try_from(after.as_millis()).unwrap_or(u64::MAX),
    }
}

/// The router, serving from a thread of its own.
#[derive(Debug)]
pub struct RouterServer {
    addr: SocketAddr,
    thread: JoinHandle<Result<RouterSummary, ServingError>>,
}

impl RouterServer {
    /// Binds 127.0.0.1:0 and serves `requests` to `replicas` replicas from a thread. `timeout`
    /// bounds the wait for every replica to connect and any wait for a finish report.
    pub fn start(
        requests: Vec<RequestSpec>,
        arrivals: Arrivals,
        replicas: usize,
        policy: RoutePolicy,
        timeout: Duration,
    ) -> Result<RouterServer, ServingError> {
        if replicas == 0 {
            return Err(ServingError::ZeroSetting { what: "replicas" });
        }
        let addr_text = "127.0.0.1:0";
        let bind_error = |source| ServingError::Bind {
            addr: addr_text.into(),
            source,
        };
        let listener = TcpListener::bind(addr_text).map_err(bind_error)?;
        let addr = listener.local_addr().map_err(bind_error)?;
        let thread = std::thread::Builder::new()
            .name("pinch-router".into())
            .spawn(move || {
                let conns = Connections::accept(&listener, replicas, timeout)?;
                let mut router = Router::new(conns, policy, timeout);
                router.serve(requests, &arrivals)?;
                Ok(router.summary())
            })
            .map_err(|source| ServingError::Io {
                peer: "the router thread".into(),
                source,
            })?;
        Ok(RouterServer { addr, thread })
    }

    /// The address replicas connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Waits for the router to finish serving.
    pub fn join(self) -> Result<RouterSummary, ServingError> {
        self.thread
            .join()
            .map_err(|_| ServingError::RouterPanicked)?
    }
}

/// What a replica's reader thread tells the router.
#[derive(Debug)]
enum Inbound {
    Finished {
        replica: usize,
        request_id: u64,
        output_tokens: u64,
    },
    /// The connection ended (cleanly or not); `problem` says why when not.
    Closed {
        replica: usize,
        problem: Option<ServingError>,
    },
}

/// Every replica's connection and reader thread; dropping it closes them all.
#[derive(Debug)]
struct Connections {
    streams: Vec<TcpStream>,
    readers: Vec<JoinHandle<()>>,
    events: Receiver<Inbound>,
}

impl Connections {
    /// Waits for `replicas` replicas to say hello, then starts a reader for each.
    fn accept(
        listener: &TcpListener,
        replicas: usize,
        timeout: Duration,
    ) -> Result<Connections, ServingError> {
        let deadline = Instant::now() + timeout;
        let mut slots: Vec<Option<TcpStream>> = (0..replicas).map(|_| None).collect();
        listener
            .set_nonblocking(true)
            .map_err(|source| ServingError::Accept { source })?;
        while slots.iter().any(Option::is_none) {
            let now = Instant::now();
            if now >= deadline {
                let missing = slots.iter().filter(|s| s.is_none()).count();
                let waiting_for = format!("{missing} of {replicas} replicas to connect");
                return Err(timed_out(waiting_for, timeout));
            }
            match listener.accept() {
                Ok((stream, _)) => {
                    if let Some((replica, stream)) = hello(stream, deadline - now) {
                        place(&mut slots, replica, stream)?;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => std::thread::sleep(POLL),
                Err(source) => return Err(ServingError::Accept { source }),
            }
        }
        let streams: Vec<TcpStream> = slots.into_iter().flatten().collect();
        Connections::start_readers(streams, timeout)
    }

    fn start_readers(
        streams: Vec<TcpStream>,
        timeout: Duration,
    ) -> Result<Connections, ServingError> {
        let (tx, events) = channel();
        let mut conns = Connections {
            streams: Vec::new(),
            readers: Vec::new(),
            events,
        };
        for (replica, stream) in streams.into_iter().enumerate() {
            let io_error = |source| ServingError::Io {
                peer: format!("replica {replica}"),
                source,
            };
            stream.set_write_timeout(Some(timeout)).map_err(io_error)?;
            let incoming = stream.try_clone().map_err(io_error)?;
            conns.streams.push(stream);
            let tx = tx.clone();
            let reader = std::thread::Builder::new()
                .name(format!("pinch-router-replica-{replica}"))
                .spawn(move || read_reports(incoming, replica, &tx))
                .map_err(io_error)?;
            conns.readers.push(reader);
        }
        Ok(conns)
    }
}

impl Drop for Connections {
    fn drop(&mut self) {
        for stream in &self.streams {
            // Unblocks the reader threads; the peer may be gone already, which is fine.
            let _ = stream.shutdown(Shutdown::Both);
        }
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
    }
}

/// Reads a new connection's hello; `None` for a connection that does not speak the protocol.
fn hello(mut stream: TcpStream, within: Duration) -> Option<(usize, TcpStream)> {
    stream.set_nonblocking(false).ok()?;
    stream.set_read_timeout(Some(within.min(HELLO_WAIT))).ok()?;
    match read_frame::<ToRouter>(&mut stream) {
        Ok(Some(ToRouter::Hello { magic, replica })) if magic == HELLO_MAGIC => {
            stream.set_read_timeout(None).ok()?;
            Some((replica as usize, stream))
        }
        _ => None,
    }
}

fn place(
    slots: &mut [Option<TcpStream>],
    replica: usize,
    stream: TcpStream,
) -> Result<(), ServingError> {
    let replicas = slots.len();
    match slots.get_mut(replica) {
        None => Err(ServingError::ReplicaOutOfRange { replica, replicas }),
        Some(Some(_)) => Err(ServingError::DuplicateReplica { replica }),
        Some(slot) => {
            *slot = Some(stream);
            Ok(())
        }
    }
}

/// A replica's reader thread: forwards its finish reports until the connection ends.
fn read_reports(mut stream: TcpStream, replica: usize, tx: &Sender<Inbound>) {
    loop {
        let event = match read_frame::<ToRouter>(&mut stream) {
            Ok(Some(ToRouter::Finished {
                request_id,
                output_tokens,
            })) => Inbound::Finished {
                replica,
                request_id,
                output_tokens,
            },
            Ok(Some(ToRouter::Hello { .. })) => closed_with(replica, "a second hello".into()),
            Ok(None) => Inbound::Closed {
                replica,
                problem: None,
            },
            Err(e) => Inbound::Closed {
                replica,
                problem: Some(wire_error(format!("replica {replica}"), e)),
            },
        };
        let last = matches!(event, Inbound::Closed { .. });
        if tx.send(event).is_err() || last {
            return;
        }
    }
}

fn closed_with(replica: usize, problem: String) -> Inbound {
    Inbound::Closed {
        replica,
        problem: Some(ServingError::Protocol {
            peer: format!("replica {replica}"),
            problem,
        }),
    }
}

/// The router's bookkeeping while it serves.
#[derive(Debug)]
struct Router {
    conns: Connections,
    policy: RoutePolicy,
    timeout: Duration,
    next_round_robin: usize,
    /// Per replica, the tokens of each request routed to it and not reported finished.
    outstanding: Vec<HashMap<u64, u64>>,
    outstanding_tokens: Vec<u64>,
    summary: Vec<ReplicaSummary>,
    /// Whether `End` went out.
    ended: bool,
}

impl Router {
    fn new(conns: Connections, policy: RoutePolicy, timeout: Duration) -> Router {
        let replicas = conns.streams.len();
        Router {
            conns,
            policy,
            timeout,
            next_round_robin: 0,
            outstanding: vec![HashMap::new(); replicas],
            outstanding_tokens: vec![0; replicas],
            summary: (0..replicas)
                .map(|replica| ReplicaSummary {
                    replica,
                    requests: 0,
                    finished: 0,
                    output_tokens: 0,
                })
                .collect(),
            ended: false,
        }
    }

    fn serve(
        &mut self,
        requests: Vec<RequestSpec>,
        arrivals: &Arrivals,
    ) -> Result<(), ServingError> {
        match *arrivals {
            Arrivals::Poisson { .. } => self.release_on_schedule(requests)?,
            Arrivals::Concurrency(c) => self.release_closed_loop(requests, c)?,
        }
        self.end()?;
        while self.outstanding.iter().any(|o| !o.is_empty()) {
            self.next_event("the last finish reports")?;
        }
        Ok(())
    }

    /// Open loop: each request at its arrival offset from now.
    fn release_on_schedule(&mut self, mut requests: Vec<RequestSpec>) -> Result<(), ServingError> {
        requests.sort_by_key(|r| r.arrival_offset_ns);
        let start = Instant::now();
        for request in requests {
            let due = start + Duration::from_nanos(request.arrival_offset_ns);
            while let Some(left) = due.checked_duration_since(Instant::now()) {
                match self.conns.events.recv_timeout(left) {
                    Ok(event) => self.handle(event)?,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                }
            }
            self.route(request)?;
        }
        Ok(())
    }

    /// Closed loop: `concurrency` at once, then one per finish report.
    fn release_closed_loop(
        &mut self,
        requests: Vec<RequestSpec>,
        concurrency: usize,
    ) -> Result<(), ServingError> {
        let mut requests = requests.into_iter();
        for request in requests.by_ref().take(concurrency) {
            self.route(request)?;
        }
        for request in requests {
            while !self.next_event("a replica to report a finished request")? {}
            self.route(request)?;
        }
        Ok(())
    }

    /// Handles the next event; returns whether it was a finish report.
    fn next_event(&mut self, waiting_for: &str) -> Result<bool, ServingError> {
        match self.conns.events.recv_timeout(self.timeout) {
            Ok(event) => {
                let finished = matches!(event, Inbound::Finished { .. });
                self.handle(event)?;
                Ok(finished)
            }
            Err(_) => Err(timed_out(waiting_for.into(), self.timeout)),
        }
    }

    fn handle(&mut self, event: Inbound) -> Result<(), ServingError> {
        match event {
            Inbound::Finished {
                replica,
                request_id,
                output_tokens,
            } => {
                let tokens = self.outstanding[replica].remove(&request_id).ok_or(
                    ServingError::UnknownFinished {
                        replica,
                        id: request_id,
                    },
                )?;
                self.outstanding_tokens[replica] -= tokens;
                self.summary[replica].finished += 1;
                self.summary[replica].output_tokens += output_tokens;
                Ok(())
            }
            Inbound::Closed { replica, problem } => {
                let outstanding = self.outstanding[replica].len();
                // After `End`, a replica that owes nothing may leave however it likes.
                if self.ended && outstanding == 0 {
                    return Ok(());
                }
                Err(problem.unwrap_or(ServingError::ReplicaClosed {
                    replica,
                    outstanding,
                }))
            }
        }
    }

    fn pick(&mut self) -> usize {
        let replicas = self.outstanding.len();
        match self.policy {
            RoutePolicy::RoundRobin => {
                let replica = self.next_round_robin;
                self.next_round_robin = (replica + 1) % replicas;
                replica
            }
            RoutePolicy::LeastOutstandingTokens => (0..replicas)
                .min_by_key(|r| (self.outstanding_tokens[*r], *r))
                .unwrap_or(0),
        }
    }

    fn route(&mut self, request: RequestSpec) -> Result<(), ServingError> {
        let replica = self.pick();
        let tokens = (request.prompt.len() + request.output_len) as u64;
        self.outstanding[replica].insert(request.id, tokens);
        self.outstanding_tokens[replica] += tokens;
        self.summary[replica].requests += 1;
        self.send(replica, &ToReplica::Requests(vec![request]))
    }

    fn end(&mut self) -> Result<(), ServingError> {
        self.ended = true;
        for replica in 0..self.conns.streams.len() {
            self.send(replica, &ToReplica::End)?;
        }
        Ok(())
    }

    fn send(&mut self, replica: usize, msg: &ToReplica) -> Result<(), ServingError> {
        write_frame(&mut self.conns.streams[replica], msg)
            .map_err(|e| wire_error(format!("replica {replica}"), e))
    }

    fn summary(&self) -> RouterSummary {
        RouterSummary {
            replicas: self.summary.clone(),
        }
    }
}

/// What a replica learns from the router.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RouterEvent {
    /// Newly released requests, in release order.
    Requests(Vec<RequestSpec>),
    /// No more requests will come.
    End,
}

/// A replica's connection to the router. Messages are read by a thread of its own, so `poll`
/// never blocks the replica's step loop.
#[derive(Debug)]
pub struct RouterClient {
    stream: TcpStream,
    inbox: Receiver<Result<ToReplica, ServingError>>,
    reader: Option<JoinHandle<()>>,
    ended: bool,
}

impl RouterClient {
    /// Connects as replica `replica`, retrying a refused connection until `timeout`.
    pub fn connect(
        addr: SocketAddr,
        replica: usize,
        timeout: Duration,
    ) -> Result<RouterClient, ServingError> {
        let mut stream = connect_until(addr, Instant::now() + timeout, timeout)?;
        let io_error = |source| ServingError::Io {
            peer: "the router".into(),
            source,
        };
        stream.set_write_timeout(Some(timeout)).map_err(io_error)?;
        let hello = ToRouter::Hello {
            magic: HELLO_MAGIC,
            replica: u32::try_from(replica).unwrap_or(u32::MAX),
        };
        write_frame(&mut stream, &hello).map_err(io_error)?;
        let incoming = stream.try_clone().map_err(io_error)?;
        let (tx, inbox) = channel();
        let reader = std::thread::Builder::new()
            .name(format!("pinch-router-client-{replica}"))
            .spawn(move || read_releases(incoming, &tx))
            .map_err(io_error)?;
        Ok(RouterClient {
            stream,
            inbox,
            reader: Some(reader),
            ended: false,
        })
    }

    /// Every request released to this replica since the last call, without blocking.
    pub fn poll(&mut self) -> Result<Vec<RequestSpec>, ServingError> {
        let mut requests = Vec::new();
        loop {
            match self.inbox.try_recv() {
                Ok(msg) => self.take(msg?, &mut requests),
                Err(TryRecvError::Empty) => return Ok(requests),
                Err(TryRecvError::Disconnected) if self.ended => return Ok(requests),
                Err(TryRecvError::Disconnected) => return Err(ServingError::RouterClosed),
            }
        }
    }

    /// Blocks until requests come (then returns them with any others already there), the stream
    /// ends, or `timeout` passes (`None`).
    pub fn wait(&mut self, timeout: Duration) -> Result<Option<RouterEvent>, ServingError> {
        if self.ended {
            return Ok(Some(RouterEvent::End));
        }
        let mut requests = Vec::new();
        match self.inbox.recv_timeout(timeout) {
            Ok(msg) => self.take(msg?, &mut requests),
            Err(RecvTimeoutError::Timeout) => return Ok(None),
            Err(RecvTimeoutError::Disconnected) => return Err(ServingError::RouterClosed),
        }
        requests.extend(self.poll()?);
        if requests.is_empty() {
            Ok(Some(RouterEvent::End))
        } else {
            Ok(Some(RouterEvent::Requests(requests)))
        }
    }

    fn take(&mut self, msg: ToReplica, requests: &mut Vec<RequestSpec>) {
        match msg {
            ToReplica::Requests(batch) => requests.extend(batch),
            ToReplica::End => self.ended = true,
        }
    }

    /// Whether the router said no more requests will come.
    pub fn is_ended(&self) -> bool {
        self.ended
    }

    /// Reports a request finished, with the tokens it generated.
    pub fn finished(&mut self, request_id: u64, output_tokens: usize) -> Result<(), ServingError> {
        let report = ToRouter::Finished {
            request_id,
            output_tokens: output_tokens as u64,
        };
        write_frame(&mut self.stream, &report).map_err(|e| wire_error("the router".into(), e))
    }
}

impl Drop for RouterClient {
    fn drop(&mut self) {
        // Unblocks the reader thread; the router may be gone already, which is fine.
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn connect_until(
    addr: SocketAddr,
    deadline: Instant,
    timeout: Duration,
) -> Result<TcpStream, ServingError> {
    loop {
        match TcpStream::connect(addr) {
            Ok(stream) => return Ok(stream),
            Err(e) if e.kind() == ErrorKind::ConnectionRefused && Instant::now() < deadline => {
                std::thread::sleep(POLL);
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                return Err(timed_out(format!("the router at '{addr}'"), timeout));
            }
            Err(source) => return Err(ServingError::Connect { addr, source }),
        }
    }
}

/// A replica's reader thread: forwards the router's messages until `End` or the connection ends.
fn read_releases(mut stream: TcpStream, tx: &Sender<Result<ToReplica, ServingError>>) {
    loop {
        let msg = match read_frame::<ToReplica>(&mut stream) {
            Ok(Some(msg)) => Ok(msg),
            Ok(None) => Err(ServingError::RouterClosed),
            Err(e) => Err(wire_error("the router".into(), e)),
        };
        let last = !matches!(msg, Ok(ToReplica::Requests(_)));
        if tx.send(msg).is_err() || last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const TIMEOUT: Duration = Duration::from_secs(20);

    fn requests(sizes: &[(usize, usize)]) -> Vec<RequestSpec> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &(prompt, output_len))| RequestSpec {
                id: i as u64,
                arrival_offset_ns: 0,
                prompt: vec![1; prompt],
                output_len,
            })
            .collect()
    }

    /// Serves one replica: receives until `End`, calling `on_request` with each request, and
    /// reports each finished right away unless `hold_until_end`. Returns the ids received.
    fn replica_loop(
        addr: SocketAddr,
        replica: usize,
        hold_until_end: bool,
        on_request: impl Fn(&RequestSpec),
    ) -> Result<Vec<u64>, ServingError> {
        let mut client = RouterClient::connect(addr, replica, TIMEOUT)?;
        let mut ids = Vec::new();
        let mut held = Vec::new();
        loop {
            match client.wait(TIMEOUT)? {
                Some(RouterEvent::Requests(batch)) => {
                    for r in batch {
                        on_request(&r);
                        ids.push(r.id);
                        if hold_until_end {
                            held.push(r);
                        } else {
                            client.finished(r.id, r.output_len)?;
                        }
                    }
                }
                Some(RouterEvent::End) => break,
                None => return Err(timed_out("a test request".into(), TIMEOUT)),
            }
        }
        assert!(client.is_ended());
        for r in held {
            client.finished(r.id, r.output_len)?;
        }
        Ok(ids)
    }

    fn spawn_replica(
        addr: SocketAddr,
        replica: usize,
        hold_until_end: bool,
    ) -> JoinHandle<Result<Vec<u64>, ServingError>> {
        std::thread::spawn(move || replica_loop(addr, replica, hold_until_end, |_| {}))
    }

    #[test]
    fn policies_parse_and_print_back() -> Result<(), ServingError> {
        for name in ["round-robin", "least-tokens"] {
            assert_eq!(RoutePolicy::parse(name)?.to_string(), name);
        }
        let err = RoutePolicy::parse("random").map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("'random'"));
        Ok(())
    }

    #[test]
    fn round_robin_deals_requests_in_turn() -> Result<(), ServingError> {
        let reqs = requests(&[(2, 3); 7]);
        let server = RouterServer::start(
            reqs,
            Arrivals::Concurrency(7),
            2,
            RoutePolicy::RoundRobin,
            TIMEOUT,
        )?;
        let replicas: Vec<_> = (0..2)
            .map(|r| spawn_replica(server.addr(), r, false))
            .collect();
        let got: Vec<Vec<u64>> = replicas
            .into_iter()
            .map(|h| h.join().expect("replica thread"))
            .collect::<Result<_, _>>()?;
        assert_eq!(got, vec![vec![0, 2, 4, 6], vec![1, 3, 5]]);
        let summary = server.join()?;
        let counts: Vec<(usize, usize, u64)> = summary
            .replicas
            .iter()
            .map(|s| (s.requests, s.finished, s.output_tokens))
            .collect();
        assert_eq!(counts, vec![(4, 4, 12), (3, 3, 9)]);
        Ok(())
    }

    #[test]
    fn least_tokens_goes_to_the_lightest_replica_and_ties_to_the_lowest() -> Result<(), ServingError>
    {
        // Tokens: r0 = 10, r1 = 2, r2 = 3, r3 = 4. r0 -> 0 (tie), r1 -> 1 (0 < 10), r2 -> 1
        // (2 < 10). Replica 0 holds its reports until the end, replica 1 reports at once, so r3,
        // released by a finish report of replica 1, finds replica 1 lighter (at most 3 < 10).
        let reqs = requests(&[(6, 4), (1, 1), (2, 1), (3, 1)]);
        let server = RouterServer::start(
            reqs,
            Arrivals::Concurrency(3),
            2,
            RoutePolicy::LeastOutstandingTokens,
            TIMEOUT,
        )?;
        let heavy = spawn_replica(server.addr(), 0, true);
        let light = spawn_replica(server.addr(), 1, false);
        assert_eq!(heavy.join().expect("replica 0")?, vec![0]);
        assert_eq!(light.join().expect("replica 1")?, vec![1, 2, 3]);
        let summary = server.join()?;
        assert_eq!(summary.replicas[1].output_tokens, 3);
        Ok(())
    }

    #[test]
    fn poisson_requests_are_released_at_their_offsets() -> Result<(), ServingError> {
        let offsets_ms = [0u64, 30, 40, 120, 200, 210, 300];
        let mut reqs = requests(&[(1, 1); 7]);
        for (r, ms) in reqs.iter_mut().zip(offsets_ms) {
            r.arrival_offset_ns = ms * 1_000_000;
        }
        // The router's clock starts after this instant and no later than the first delivery.
        let before = Instant::now();
        let server = RouterServer::start(
            reqs,
            Arrivals::Poisson { rate_per_s: 20.0 },
            1,
            RoutePolicy::RoundRobin,
            TIMEOUT,
        )?;
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        let addr = server.addr();
        let replica = std::thread::spawn(move || {
            replica_loop(addr, 0, false, |r| {
                if let Ok(mut log) = log.lock() {
                    log.push((r.id, Instant::now()));
                }
            })
        });
        replica.join().expect("replica")?;
        server.join()?;
        let seen = seen.lock().map(|s| s.clone()).unwrap_or_default();
        assert_eq!(seen.len(), 7);
        let first = seen[0].1;
        for (id, at) in &seen {
            let due_ms = offsets_ms[*id as usize] as f64;
            let ms_since = |t: Instant| at.duration_since(t).as_secs_f64() * 1e3;
            assert!(ms_since(before) >= due_ms, "request {id} came early");
            assert!(
                ms_since(first) <= due_ms + 150.0,
                "request {id} came {} ms after the first, due at {due_ms}",
                ms_since(first)
            );
        }
        Ok(())
    }

    #[test]
    fn closed_loop_concurrency_never_exceeds_its_limit() -> Result<(), ServingError> {
        let c = 3;
        let reqs = requests(&[(4, 2); 24]);
        let server = RouterServer::start(
            reqs,
            Arrivals::Concurrency(c),
            3,
            RoutePolicy::RoundRobin,
            TIMEOUT,
        )?;
        let outstanding = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let replicas: Vec<_> = (0..3)
            .map(|replica| {
                let (addr, outstanding, most) =
                    (server.addr(), Arc::clone(&outstanding), Arc::clone(&most));
                std::thread::spawn(move || -> Result<usize, ServingError> {
                    let mut client = RouterClient::connect(addr, replica, TIMEOUT)?;
                    let mut served = 0;
                    while let Some(RouterEvent::Requests(batch)) = client.wait(TIMEOUT)? {
                        for r in batch {
                            let now = outstanding.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            std::thread::sleep(Duration::from_millis(1 + r.id % 3));
                            // Counted down before the report, which is what releases the next.
                            outstanding.fetch_sub(1, Ordering::SeqCst);
                            client.finished(r.id, r.output_len)?;
                            served += 1;
                        }
                    }
                    Ok(served)
                })
            })
            .collect();
        let served: usize = replicas
            .into_iter()
            .map(|h| h.join().expect("replica thread"))
            .sum::<Result<usize, _>>()?;
        assert_eq!(served, 24);
        assert!(most.load(Ordering::SeqCst) <= c);
        let summary = server.join()?;
        assert_eq!(
            summary.replicas.iter().map(|s| s.finished).sum::<usize>(),
            24
        );
        Ok(())
    }

    #[test]
    fn a_replica_that_disconnects_early_fails_the_router_instead_of_hanging_it()
    -> Result<(), ServingError> {
        let reqs = requests(&[(1, 1); 6]);
        let server = RouterServer::start(
            reqs,
            Arrivals::Concurrency(2),
            2,
            RoutePolicy::RoundRobin,
            TIMEOUT,
        )?;
        let addr = server.addr();
        let quitter = std::thread::spawn(move || -> Result<(), ServingError> {
            let mut client = RouterClient::connect(addr, 1, TIMEOUT)?;
            client.wait(TIMEOUT)?; // takes a request and leaves without reporting it
            Ok(())
        });
        let steady = std::thread::spawn(move || replica_loop(addr, 0, false, |_| {}));
        let started = Instant::now();
        let err = server.join().map(|_| ()).unwrap_err();
        assert!(
            started.elapsed() < TIMEOUT / 2,
            "the router waited for its timeout"
        );
        // Usually `ReplicaClosed`; an i/o error if a release to it raced its goodbye.
        assert!(err.to_string().contains("replica 1"), "{err}");
        quitter.join().expect("quitter")?;
        // The steady replica learns the router is gone rather than waiting forever.
        assert!(matches!(
            steady.join().expect("steady"),
            Err(ServingError::RouterClosed)
        ));
        Ok(())
    }

    #[test]
    fn a_replica_that_never_connects_times_out_and_strangers_are_ignored()
    -> Result<(), ServingError> {
        let timeout = Duration::from_millis(300);
        let server = RouterServer::start(
            requests(&[(1, 1)]),
            Arrivals::Concurrency(1),
            2,
            RoutePolicy::RoundRobin,
            timeout,
        )?;
        let mut stranger =
            TcpStream::connect(server.addr()).map_err(|source| ServingError::Connect {
                addr: server.addr(),
                source,
            })?;
        let _ = stranger.write_all(b"GET / HTTP/1.0\r\n\r\n");
        let _client = RouterClient::connect(server.addr(), 0, timeout)?;
        let err = server.join().map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("1 of 2 replicas"), "{err}");
        Ok(())
    }

    #[test]
    fn a_replica_index_out_of_range_is_refused() -> Result<(), ServingError> {
        let server = RouterServer::start(
            requests(&[(1, 1)]),
            Arrivals::Concurrency(1),
            1,
            RoutePolicy::RoundRobin,
            TIMEOUT,
        )?;
        let _client = RouterClient::connect(server.addr(), 5, TIMEOUT)?;
        let err = server.join().map(|_| ()).unwrap_err();
        assert!(err.to_string().contains("'5'"), "{err}");
        Ok(())
    }
}
