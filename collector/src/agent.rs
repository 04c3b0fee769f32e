//! The per-node agent: starts its node's ranks, gathers their streams and the node's counter
//! samples, and writes the node log.
//!
//! One thread per rank reads that rank's stdout (a framed record stream, see `stream.rs`) and a
//! sampler thread reads /proc at the configured rate; both send what they read over one channel
//! to the single writer loop on the calling thread, which appends to the node log and flushes
//! after each batch, so a crash of anything loses at most the last unflushed batch. Progress
//! records are not logged: they become `AgentEvent`s for the coordinator. When a rank fails the
//! others get `FAILURE_GRACE` to end on their own (they normally fail fast once their peer's
//! connection drops) and are then killed.

use crate::counter_plan::CounterPlan;
use crate::error::CollectorError;
use crate::prometheus::MetricsServer;
use crate::sampler::{SampleRate, SampleSink};
use crate::sources::{OpenedSource, open_sources};
use crate::stderr_tail::StderrTail;
use pinch_traces::nodelog::Frame;
use pinch_traces::{
    ClockAnchor, CounterSourceStatus, FrameReader, NodeId, NodeLogWriter, Rank, RankExit, Record,
    SourceState, monotonic_now_ns,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::fs::File;
use std::io::{BufRead, BufReader, BufWriter};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long the other ranks of a node get to end on their own after one rank failed.
pub const FAILURE_GRACE: Duration = Duration::from_secs(10);
/// How long after a rank exited the agent keeps reading its stdout (which a child of the rank may
/// still hold open) before it records the rank's end without the rest of its stream.
const STREAM_GRACE: Duration = Duration::from_secs(5);
/// How often the writer loop checks its children when no record arrives.
const POLL: Duration = Duration::from_millis(20);
/// The most channel messages written between two flushes.
const MAX_BATCH: usize = 256;
/// A sampler thread hands its readings to the writer this often (or after every sample when
/// it samples less often): readings reach the log and the metrics endpoint within this delay.
const SEND_INTERVAL: Duration = Duration::from_millis(50);

/// What one agent runs: its node, its ranks, and where its log goes.
pub struct AgentConfig {
    pub node: NodeId,
    pub host: String,
    pub ranks: Vec<Rank>,
    pub log_path: PathBuf,
    /// The command that starts one rank; the agent pipes its stdout and nulls its stdin.
    pub rank_command: Box<dyn Fn(Rank) -> Command + Send>,
    /// Where to serve the latest counter values in Prometheus' text format (loopback only);
    /// `None`: no endpoint.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// The counter sources to read and the rate of each; none to read spans only.
    pub counters: CounterPlan,
}

impl fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AgentConfig")
            .field("node", &self.node)
            .field("host", &self.host)
            .field("ranks", &self.ranks)
            .field("log_path", &self.log_path)
            .field("counters", &self.counters)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

/// What the agent tells its coordinator while it runs, one JSON object per line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AgentEvent {
    Progress {
        rank: Rank,
        done: u32,
        total: u32,
    },
    /// `message` says how the rank ended ("exited cleanly", "exited with code 3; ...").
    RankEnded {
        rank: Rank,
        ok: bool,
        message: String,
    },
}

impl AgentEvent {
    /// The event as one line of JSON, without the newline.
    pub fn to_line(&self) -> String {
        serde_json::to_string(self)
            .expect("an AgentEvent has only numbers and strings, which always serialize")
    }

    /// Parses a line written by `to_line`; `None` for any other line.
    pub fn from_line(line: &str) -> Option<AgentEvent> {
        serde_json::from_str(line.trim()).ok()
    }
}

/// How a node's run went.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentSummary {
    /// The ranks that did not end cleanly, with how they ended.
    pub failed: Vec<(Rank, String)>,
    /// Spans the ranks' recorders dropped, all ranks together.
    pub dropped_spans: u64,
    /// Records written to the node log.
    pub records_written: u64,
    pub warnings: Vec<String>,
}

/// Starts the node's ranks, writes its log until every rank has ended, and returns how it went.
pub fn run_agent(
    config: AgentConfig,
    on_event: &mut dyn FnMut(AgentEvent),
) -> Result<AgentSummary, CollectorError> {
    run_agent_with_grace(config, FAILURE_GRACE, on_event)
}

fn run_agent_with_grace(
    config: AgentConfig,
    failure_grace: Duration,
    on_event: &mut dyn FnMut(AgentEvent),
) -> Result<AgentSummary, CollectorError> {
    let mut log = LogFile::create(&config.log_path)?;
    log.append(&Record::NodeStart {
        node: config.node,
        host: config.host.clone(),
        ranks: config.ranks.clone(),
        agent_pid: std::process::id(),
        anchor: ClockAnchor::now(),
    })?;
    log.flush()?;
    let metrics = config
        .metrics_addr
        .map(|addr| MetricsServer::start(addr, config.node))
        .transpose()?;
    let (inbox_tx, inbox) = mpsc::channel();
    let mut agent = Supervisor::new(config.node, log, inbox, failure_grace, on_event);
    agent.metrics = metrics;
    agent.start_ranks(&config.ranks, config.rank_command.as_ref(), &inbox_tx)?;
    let (sources, statuses) = match config.counters.is_none() {
        false => open_sources(config.node, &agent.pids(), &config.counters),
        true => (Vec::new(), Vec::new()),
    };
    for status in statuses {
        agent.log.append(&Record::Source(status))?;
    }
    let samplers = sampler_groups(config.node, sources)
        .into_iter()
        .map(|group| SamplerThread::start(group, inbox_tx.clone()))
        .collect::<Result<Vec<_>, _>>()?;
    drop(inbox_tx);
    agent.supervise()?;
    for sampler in samplers {
        sampler.stop()?;
    }
    agent.finish()
}

/// The node log file, its path for errors, and a handle to sync it at the end.
struct LogFile {
    path: PathBuf,
    writer: NodeLogWriter<BufWriter<File>>,
    sync_handle: File,
    records: u64,
}

impl LogFile {
    fn create(path: &Path) -> Result<LogFile, CollectorError> {
        let create_error = |source| CollectorError::CreateLog {
            path: path.to_path_buf(),
            source,
        };
        let file = File::create(path).map_err(create_error)?;
        let sync_handle = file.try_clone().map_err(create_error)?;
        let writer =
            NodeLogWriter::new(BufWriter::with_capacity(1 << 16, file)).map_err(|source| {
                CollectorError::WriteLog {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        Ok(LogFile {
            path: path.to_path_buf(),
            writer,
            sync_handle,
            records: 0,
        })
    }

    fn append(&mut self, record: &Record) -> Result<(), CollectorError> {
        self.writer
            .append(record)
            .map_err(|source| CollectorError::WriteLog {
                path: self.path.clone(),
                source,
            })?;
        self.records += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<(), CollectorError> {
        self.writer
            .flush()
            .map_err(|source| CollectorError::WriteLog {
                path: self.path.clone(),
                source,
            })
    }

    /// Flushes and syncs the file to disk.
    fn close(mut self) -> Result<u64, CollectorError> {
        self.flush()?;
        self.sync_handle
            .sync_all()
            .map_err(|source| CollectorError::SyncLog {
                path: self.path.clone(),
                source,
            })?;
        Ok(self.records)
    }
}

/// What the reader and sampler threads send to the writer loop.
enum Inbound {
    FromRank(Rank, Record),
    /// A rank's stdout reached its end; `problem` says why its stream ended early, if it did.
    StreamClosed {
        rank: Rank,
        problem: Option<String>,
    },
    Samples(Vec<Record>),
    /// A source's sampler failed at `at_ns` and stopped; the others go on.
    SamplerFailed {
        source: &'static str,
        counters: Vec<String>,
        reason: String,
        at_ns: u64,
    },
}

/// Where a rank's stream stands.
#[derive(Clone, Debug, PartialEq, Eq)]
enum StreamState {
    Open,
    Closed,
    Broken(String),
}

/// How a rank process ended, as far as the agent saw it.
struct ExitSeen {
    status: Result<ExitStatus, String>,
    at_ns: u64,
    seen: Instant,
}

/// One rank of the node: its process, its stream, and whether its end is written.
struct RankSlot {
    rank: Rank,
    child: Option<Child>,
    exit: Option<ExitSeen>,
    stream: StreamState,
    /// Why the agent killed it, if it did.
    killed: Option<String>,
    /// What it wrote to stderr last.
    stderr: StderrTail,
    ended: bool,
    dropped_spans: u64,
}

impl RankSlot {
    fn new(rank: Rank) -> RankSlot {
        RankSlot {
            rank,
            child: None,
            exit: None,
            stream: StreamState::Open,
            killed: None,
            stderr: StderrTail::default(),
            ended: false,
            dropped_spans: 0,
        }
    }

    /// Notes the exit of a child that has ended, without blocking.
    fn poll_exit(&mut self) {
        let (Some(child), None) = (self.child.as_mut(), self.exit.as_ref()) else {
            return;
        };
        let status = match child.try_wait() {
            Ok(None) => return,
            Ok(Some(status)) => Ok(status),
            Err(e) => Err(format!("cannot wait for it: {e}")),
        };
        self.exit = Some(ExitSeen {
            status,
            at_ns: monotonic_now_ns(),
            seen: Instant::now(),
        });
    }

    /// Whether its end can be written: it exited, and its stream is done or overdue.
    fn ready_to_end(&self) -> bool {
        match &self.exit {
            Some(exit) if !self.ended => {
                self.stream != StreamState::Open || exit.seen.elapsed() >= STREAM_GRACE
            }
            _ => false,
        }
    }

    fn is_running(&self) -> bool {
        self.child.is_some() && self.exit.is_none()
    }
}

impl Drop for RankSlot {
    /// A rank still running when the agent stops (on an error) is killed and reaped, never orphaned.
    fn drop(&mut self) {
        if self.exit.is_some() {
            return;
        }
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// How a rank ended, from its exit status, its stream and the agent's own action.
fn rank_exit(
    exit: &ExitSeen,
    stream: &StreamState,
    killed: Option<&str>,
    last_words: Option<String>,
) -> RankExit {
    let mut problems = Vec::new();
    let (code, signal) = match &exit.status {
        Ok(status) => {
            if !status.success() {
                problems.push(describe_status(status));
            }
            (status.code(), status.signal())
        }
        Err(e) => {
            problems.push(e.clone());
            (None, None)
        }
    };
    problems.extend(killed.map(str::to_string));
    match stream {
        StreamState::Open => problems.push(format!(
            "its stdout was still open {} s after it exited; the rest of its stream is lost",
            STREAM_GRACE.as_secs()
        )),
        StreamState::Broken(problem) => problems.push(problem.clone()),
        StreamState::Closed => {}
    }
    if problems.is_empty() {
        return RankExit::Success;
    }
    problems.extend(last_words.map(|line| format!("its last words: '{line}'")));
    RankExit::Failed {
        code,
        signal,
        message: problems.join("; "),
    }
}

fn describe_status(status: &ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) if status.core_dumped() => {
            format!("killed by signal {signal} (core dumped)")
        }
        (None, Some(signal)) => format!("killed by signal {signal}"),
        (None, None) => format!("ended with status '{status}'"),
    }
}

/// The writer loop and everything it owns.
struct Supervisor<'a> {
    node: NodeId,
    log: LogFile,
    /// The Prometheus endpoint, fed every batch of samples.
    metrics: Option<MetricsServer>,
    inbox: Receiver<Inbound>,
    slots: Vec<RankSlot>,
    failure_grace: Duration,
    /// When the first rank failed, and which.
    first_failure: Option<(Instant, Rank)>,
    on_event: &'a mut dyn FnMut(AgentEvent),
    summary: AgentSummary,
}

impl<'a> Supervisor<'a> {
    fn new(
        node: NodeId,
        log: LogFile,
        inbox: Receiver<Inbound>,
        failure_grace: Duration,
        on_event: &'a mut dyn FnMut(AgentEvent),
    ) -> Supervisor<'a> {
        Supervisor {
            node,
            log,
            metrics: None,
            inbox,
            slots: Vec::new(),
            failure_grace,
            first_failure: None,
            on_event,
            summary: AgentSummary::default(),
        }
    }

    /// Starts every rank; a rank that cannot start is recorded as failed at once.
    fn start_ranks(
        &mut self,
        ranks: &[Rank],
        command: &dyn Fn(Rank) -> Command,
        inbox: &Sender<Inbound>,
    ) -> Result<(), CollectorError> {
        for &rank in ranks {
            let mut slot = RankSlot::new(rank);
            match spawn_rank(rank, command, inbox) {
                Ok((child, stderr)) => {
                    let pid = child.id();
                    slot.child = Some(child);
                    slot.stderr = stderr;
                    let anchor = ClockAnchor::now();
                    self.log.append(&Record::RankStart { rank, pid, anchor })?;
                }
                Err(message) => {
                    slot.ended = true;
                    self.end_rank(
                        rank,
                        RankExit::Failed {
                            code: None,
                            signal: None,
                            message,
                        },
                    )?;
                }
            }
            self.slots.push(slot);
        }
        self.log.flush()
    }

    fn pids(&self) -> Vec<(Rank, u32)> {
        let pid = |s: &RankSlot| s.child.as_ref().map(|c| (s.rank, c.id()));
        self.slots.iter().filter_map(pid).collect()
    }

    /// Runs the writer loop until every rank's end is written.
    fn supervise(&mut self) -> Result<(), CollectorError> {
        while self.slots.iter().any(|s| !s.ended) {
            self.write_inbox(Some(POLL))?;
            for slot in &mut self.slots {
                slot.poll_exit();
            }
            self.write_ended_ranks()?;
            self.enforce_failure_grace();
        }
        Ok(())
    }

    /// Writes the last samples, then `NodeEnd`; flushes and syncs the log.
    fn finish(mut self) -> Result<AgentSummary, CollectorError> {
        self.write_inbox(None)?;
        self.log.append(&Record::NodeEnd {
            at_ns: monotonic_now_ns(),
        })?;
        let mut summary = std::mem::take(&mut self.summary);
        summary.dropped_spans = self.slots.iter().map(|s| s.dropped_spans).sum();
        summary.records_written = self.log.close()?;
        Ok(summary)
    }

    /// Waits up to `wait` for a message (not at all when `None`), writes it and whatever else
    /// is queued (up to a batch), then flushes.
    fn write_inbox(&mut self, wait: Option<Duration>) -> Result<(), CollectorError> {
        let first = match wait {
            Some(wait) => self.inbox.recv_timeout(wait),
            None => self.inbox.try_recv().map_err(|_| RecvTimeoutError::Timeout),
        };
        let Ok(first) = first else {
            return Ok(());
        };
        self.handle(first)?;
        for _ in 1..MAX_BATCH {
            match self.inbox.try_recv() {
                Ok(message) => self.handle(message)?,
                Err(_) => break,
            }
        }
        self.log.flush()
    }

    fn handle(&mut self, message: Inbound) -> Result<(), CollectorError> {
        match message {
            Inbound::FromRank(rank, record) => self.handle_rank_record(rank, record),
            Inbound::StreamClosed { rank, problem } => {
                if let Some(slot) = self.slots.iter_mut().find(|s| s.rank == rank) {
                    slot.stream = problem.map_or(StreamState::Closed, StreamState::Broken);
                }
                Ok(())
            }
            Inbound::Samples(records) => {
                if let Some(metrics) = &self.metrics {
                    metrics.observe_records(&records);
                }
                records.iter().try_for_each(|r| self.log.append(r))
            }
            Inbound::SamplerFailed {
                source,
                counters,
                reason,
                at_ns,
            } => {
                self.warn(format!("{source} sampling failed and stopped: {reason}"));
                self.log.append(&Record::Source(CounterSourceStatus {
                    node: self.node,
                    source: source.to_string(),
                    state: SourceState::Failed {
                        counters,
                        reason,
                        at_ns,
                    },
                }))
            }
        }
    }

    /// Logs what a rank sent, except progress (an event) and records only an agent writes.
    fn handle_rank_record(&mut self, rank: Rank, record: Record) -> Result<(), CollectorError> {
        let Some(slot) = self.slots.iter_mut().find(|s| s.rank == rank && !s.ended) else {
            return Ok(());
        };
        match record {
            Record::Progress { done, total, .. } => {
                (self.on_event)(AgentEvent::Progress { rank, done, total });
                Ok(())
            }
            Record::Dropped { spans, .. } => {
                slot.dropped_spans = spans;
                self.log.append(&record)
            }
            Record::OpName { .. }
            | Record::Spans(_)
            | Record::Output { .. }
            | Record::Request { .. }
            | Record::ExpertTokens(_) => self.log.append(&record),
            other => {
                let kind = agent_record_kind(&other);
                self.warn(format!(
                    "{rank} sent a '{kind}' record, which only an agent writes; it was left out"
                ));
                Ok(())
            }
        }
    }

    /// Writes `RankEnd` for every rank that exited and whose stream is done.
    fn write_ended_ranks(&mut self) -> Result<(), CollectorError> {
        for index in 0..self.slots.len() {
            let slot = &mut self.slots[index];
            if !slot.ready_to_end() {
                continue;
            }
            let Some(exit) = slot.exit.as_ref() else {
                continue;
            };
            let (rank, at_ns) = (slot.rank, exit.at_ns);
            let last_words = slot.stderr.last_line();
            let how = rank_exit(exit, &slot.stream, slot.killed.as_deref(), last_words);
            let killed = slot.killed.is_some();
            slot.ended = true;
            self.log.append(&Record::RankEnd {
                rank,
                exit: how.clone(),
                at_ns,
            })?;
            self.report_end(rank, how, killed);
        }
        self.log.flush()
    }

    /// Writes a `RankEnd` for a rank that never ran, and reports it.
    fn end_rank(&mut self, rank: Rank, exit: RankExit) -> Result<(), CollectorError> {
        let at_ns = monotonic_now_ns();
        self.log.append(&Record::RankEnd {
            rank,
            exit: exit.clone(),
            at_ns,
        })?;
        self.report_end(rank, exit, false);
        Ok(())
    }

    /// Tells the coordinator how a rank ended; a failure the agent did not cause starts the
    /// grace period of the others.
    fn report_end(&mut self, rank: Rank, exit: RankExit, killed_by_agent: bool) {
        let (ok, message) = match exit {
            RankExit::Success => (true, "exited cleanly".to_string()),
            RankExit::Failed { message, .. } => (false, message),
        };
        if !ok {
            self.summary.failed.push((rank, message.clone()));
            if !killed_by_agent && self.first_failure.is_none() {
                self.first_failure = Some((Instant::now(), rank));
            }
        }
        (self.on_event)(AgentEvent::RankEnded { rank, ok, message });
    }

    /// Kills the ranks still running once the grace period after the first failure is over.
    fn enforce_failure_grace(&mut self) {
        let Some((failed_at, failed_rank)) = self.first_failure else {
            return;
        };
        if failed_at.elapsed() < self.failure_grace {
            return;
        }
        let reason = format!(
            "stopped by the agent {:.1} s after {failed_rank} failed",
            self.failure_grace.as_secs_f64()
        );
        for slot in self
            .slots
            .iter_mut()
            .filter(|s| s.is_running() && s.killed.is_none())
        {
            if let Some(child) = slot.child.as_mut() {
                // An error means it has just exited by itself; `poll_exit` will see that.
                let _ = child.kill();
            }
            slot.killed = Some(reason.clone());
        }
    }

    /// Keeps something the user should know that did not stop the node (a sampler that failed).
    fn warn(&mut self, message: String) {
        self.summary.warnings.push(message);
    }
}

/// The name of a record kind that only an agent writes (for the warning when a rank sends one).
fn agent_record_kind(record: &Record) -> &'static str {
    match record {
        Record::NodeStart { .. } => "NodeStart",
        Record::RankStart { .. } => "RankStart",
        Record::Device(_) => "Device",
        Record::Counter(_) => "Counter",
        Record::Source(_) => "Source",
        Record::Samples(_) => "Samples",
        Record::RankEnd { .. } => "RankEnd",
        Record::NodeEnd { .. } => "NodeEnd",
        Record::OpName { .. }
        | Record::Spans(_)
        | Record::Dropped { .. }
        | Record::Progress { .. }
        | Record::Output { .. }
        | Record::Request { .. }
        | Record::ExpertTokens(_) => "rank",
    }
}

/// Starts one rank with its stdout piped to a new reader thread and its stderr passed through.
fn spawn_rank(
    rank: Rank,
    command: &dyn Fn(Rank) -> Command,
    inbox: &Sender<Inbound>,
) -> Result<(Child, StderrTail), String> {
    let mut command = command(rank);
    command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let program = command.get_program().to_string_lossy().into_owned();
    let mut child = command
        .spawn()
        .map_err(|e| format!("cannot start '{program}': {e}"))?;
    let started = child
        .stdout
        .take()
        .ok_or_else(|| "its stdout was not piped".to_string())
        .and_then(|stdout| spawn_reader(rank, stdout, inbox.clone()));
    if let Err(message) = started {
        let _ = child.kill();
        let _ = child.wait();
        return Err(message);
    }
    let stderr = child
        .stderr
        .take()
        .map(|e| StderrTail::follow(rank, e))
        .unwrap_or_default();
    Ok((child, stderr))
}

fn spawn_reader(rank: Rank, stdout: ChildStdout, inbox: Sender<Inbound>) -> Result<(), String> {
    let name = format!("pinch-reader-{}", rank.0);
    thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let problem = forward_stream(rank, stdout, &inbox).err();
            // A send error means the writer loop is gone: nothing is left to tell.
            let _ = inbox.send(Inbound::StreamClosed { rank, problem });
        })
        .map(drop)
        .map_err(|e| format!("cannot start thread '{name}': {e}"))
}

/// Sends every record of a rank's stream to the writer loop; says why if the stream broke.
fn forward_stream(rank: Rank, stdout: ChildStdout, inbox: &Sender<Inbound>) -> Result<(), String> {
    let mut input = BufReader::with_capacity(1 << 16, stdout);
    let empty = input
        .fill_buf()
        .map_err(|e| format!("cannot read its stdout: {e}"))?
        .is_empty();
    if empty {
        return Err("it wrote no record stream to stdout".to_string());
    }
    let source = PathBuf::from(format!("stdout of rank {}", rank.0));
    let mut reader = FrameReader::new(input, &source).map_err(|e| e.to_string())?;
    loop {
        match reader.next_frame() {
            Ok(Frame::Record(record)) => {
                if inbox.send(Inbound::FromRank(rank, record)).is_err() {
                    return Ok(());
                }
            }
            Ok(Frame::End) => return Ok(()),
            Ok(Frame::Cut(cut)) => {
                return Err(format!(
                    "its stream was cut at byte {} ({}; {} bytes lost)",
                    cut.offset, cut.reason, cut.dropped_bytes
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// A source and the sink that numbers its counters and devices.
type SourceWithSink = (OpenedSource, SampleSink);

/// Sources sampled together on one thread, at one rate.
struct SamplerGroup {
    rate: SampleRate,
    sources: Vec<SourceWithSink>,
}

/// Gives each source its sink, and groups them into threads: the sources whose reads never
/// block (kernel files and syscalls) and share a rate share one thread, so at 1 kHz the agent
/// wakes once per sample rather than once per source; a source that may block (a driver call)
/// gets a thread of its own, so it can hold back no other.
fn sampler_groups(node: NodeId, sources: Vec<OpenedSource>) -> Vec<SamplerGroup> {
    let mut groups: Vec<SamplerGroup> = Vec::new();
    for (i, source) in sources.into_iter().enumerate() {
        // Each source's sink numbers its counters and devices in a range of its own.
        let sink = SampleSink::with_id_base(node, (i as u32) << 20);
        let shares = |group: &&mut SamplerGroup| {
            let shareable = |s: &SourceWithSink| s.0.never_blocks;
            source.never_blocks && group.rate == source.rate && group.sources.iter().all(shareable)
        };
        match groups.iter_mut().find(shares) {
            Some(group) => group.sources.push((source, sink)),
            None => groups.push(SamplerGroup {
                rate: source.rate,
                sources: vec![(source, sink)],
            }),
        }
    }
    groups
}

/// A thread that samples one or more sources at the configured rate.
struct SamplerThread {
    name: String,
    stop: Sender<()>,
    handle: JoinHandle<()>,
}

impl SamplerThread {
    /// Samples a group of sources of one rate (`sampler_groups`).
    fn start(group: SamplerGroup, inbox: Sender<Inbound>) -> Result<SamplerThread, CollectorError> {
        let SamplerGroup { rate, sources } = group;
        let period = rate.period();
        let (stop, stop_rx) = mpsc::channel();
        let names: Vec<&str> = sources.iter().map(|(source, _)| source.name).collect();
        let name = format!("pinch-{}", names.join("+"));
        let handle = thread::Builder::new()
            .name(name.clone())
            .spawn(move || run_samplers(sources, period, &inbox, &stop_rx))
            .map_err(|source| CollectorError::Thread {
                name: name.clone(),
                source,
            })?;
        Ok(SamplerThread { name, stop, handle })
    }

    fn stop(self) -> Result<(), CollectorError> {
        // A send error means the thread already ended.
        let _ = self.stop.send(());
        self.handle
            .join()
            .map_err(|_| CollectorError::ThreadPanicked { name: self.name })
    }
}

/// Samples every source every `period` (first at once, then on the multiples of `period` of the
/// node's monotonic clock, so the samplers of every agent on a host wake together: ranks in
/// lock step lose one interruption per period, not one per agent, and their samples line up)
/// until told to stop. A failed reading
/// stops that source alone: its failure and time are reported, and the others go on.
///
/// Readings are handed to the writer at most every `SEND_INTERVAL`, not after every sample: at
/// 1 kHz a message per sample would wake the writer a thousand times a second.
fn run_samplers(
    mut sources: Vec<SourceWithSink>,
    period: Duration,
    inbox: &Sender<Inbound>,
    stop: &Receiver<()>,
) {
    let period_ns = period.as_nanos().max(1) as u64;
    // Let the kernel fire this thread's timer up to a twentieth of a period late, so that it
    // can share an interrupt with another timer instead of waking the host for it alone.
    let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(period_ns / 20));
    let mut last_sent = Instant::now();
    while !sources.is_empty() {
        let at_ns = monotonic_now_ns();
        let send_due = last_sent.elapsed() >= SEND_INTERVAL;
        let mut writer_gone = false;
        sources.retain_mut(|(source, sink)| {
            let sampled = source.sampler.sample(at_ns, sink);
            if (send_due || sampled.is_err()) && !send_samples(sink, inbox) {
                writer_gone = true;
            }
            let Err(e) = sampled else {
                return true;
            };
            let _ = inbox.send(Inbound::SamplerFailed {
                source: source.name,
                counters: std::mem::take(&mut source.counters),
                reason: e.to_string(),
                at_ns,
            });
            false
        });
        if writer_gone {
            return;
        }
        if send_due {
            last_sent = Instant::now();
        }
        // The next multiple of the period on the monotonic clock: after a stall this carries
        // on from now rather than sampling in a burst to catch up.
        let now_ns = monotonic_now_ns();
        let wait_ns = period_ns - now_ns % period_ns;
        match stop.recv_timeout(Duration::from_nanos(wait_ns)) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                for (_, sink) in &mut sources {
                    send_samples(sink, inbox);
                }
                return;
            }
        }
    }
}

/// Hands what the sink holds to the writer; false when the writer has gone.
fn send_samples(sink: &mut SampleSink, inbox: &Sender<Inbound>) -> bool {
    let records = sink.take_records();
    records.is_empty() || inbox.send(Inbound::Samples(records)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::{CounterSpec, Sampler, SamplerError};
    use pinch_traces::{NodeLog, Unit, read_node_log};

    const TICKS: CounterSpec = CounterSpec::new("test.ticks", Unit::Count);

    /// Counts its samples; fails on sample `fail_at` when set.
    struct Ticker {
        taken: u32,
        fail_at: Option<u32>,
    }

    impl Sampler for Ticker {
        fn source(&self) -> &'static str {
            "ticker"
        }

        fn counters(&self) -> &'static [CounterSpec] {
            std::slice::from_ref(&TICKS)
        }

        fn sample(&mut self, now_ns: u64, out: &mut SampleSink) -> Result<(), SamplerError> {
            self.taken += 1;
            if Some(self.taken) == self.fail_at {
                return Err(SamplerError::Source {
                    source_name: "ticker",
                    message: "the device went away".into(),
                });
            }
            out.push(TICKS, "dev", now_ns, f64::from(self.taken));
            Ok(())
        }
    }

    fn ticker(name: &'static str, fail_at: Option<u32>, id_base: u32) -> SourceWithSink {
        let source = OpenedSource {
            name,
            sampler: Box::new(Ticker { taken: 0, fail_at }),
            counters: vec!["test.ticks".into()],
            never_blocks: true,
            rate: SampleRate::new(500).unwrap(),
        };
        (source, SampleSink::with_id_base(NodeId(0), id_base))
    }

    #[test]
    fn a_source_that_fails_mid_run_stops_alone_and_its_neighbour_goes_on() {
        let (inbox_tx, inbox) = mpsc::channel();
        let (stop_tx, stop) = mpsc::channel();
        let group = vec![
            ticker("healthy", None, 0),
            ticker("flaky", Some(3), 1 << 20),
        ];
        let before_ns = monotonic_now_ns();
        let thread =
            thread::spawn(move || run_samplers(group, Duration::from_millis(2), &inbox_tx, &stop));
        thread::sleep(Duration::from_millis(200));
        stop_tx.send(()).unwrap();
        thread.join().unwrap();

        let (mut failures, mut samples_by_base) = (Vec::new(), [0usize; 2]);
        for message in inbox.try_iter() {
            match message {
                Inbound::SamplerFailed {
                    source,
                    reason,
                    at_ns,
                    counters,
                } => failures.push((source, reason, at_ns, counters)),
                Inbound::Samples(records) => {
                    for record in records {
                        if let Record::Samples(samples) = record {
                            for sample in samples {
                                samples_by_base[(sample.counter.0 >> 20) as usize] += 1;
                            }
                        }
                    }
                }
                _ => panic!("a sampler sends only samples and failures"),
            }
        }
        let [(source, reason, at_ns, counters)] = &failures[..] else {
            panic!("{failures:?}")
        };
        assert_eq!(
            (*source, reason.as_str()),
            ("flaky", "ticker: the device went away")
        );
        assert!(*at_ns >= before_ns && counters == &["test.ticks".to_string()]);
        assert_eq!(
            samples_by_base[1], 2,
            "the flaky source's readings before it failed"
        );
        assert!(
            samples_by_base[0] > 10,
            "the healthy one went on: {samples_by_base:?}"
        );
    }

    #[test]
    fn sources_that_never_block_share_a_thread_and_the_others_get_their_own() {
        let source = |name, never_blocks, hz| OpenedSource {
            name,
            sampler: Box::new(Ticker {
                taken: 0,
                fail_at: None,
            }),
            counters: Vec::new(),
            never_blocks,
            rate: SampleRate::new(hz).unwrap(),
        };
        let groups = sampler_groups(
            NodeId(0),
            vec![
                source("procfs", true, 100),
                source("perf", true, 100),
                source("nvml", false, 100),
                source("infiniband", false, 100),
                source("other", true, 10),
            ],
        );
        let names: Vec<Vec<&str>> = groups
            .iter()
            .map(|g| g.sources.iter().map(|(s, _)| s.name).collect())
            .collect();
        assert_eq!(
            names,
            vec![
                vec!["procfs", "perf"],
                vec!["nvml"],
                vec!["infiniband"],
                vec!["other"]
            ]
        );
    }

    fn config(dir: &Path, ranks: &[Rank], command: fn(Rank) -> Command) -> AgentConfig {
        AgentConfig {
            node: NodeId(2),
            host: "h".into(),
            ranks: ranks.to_vec(),
            log_path: dir.join("node-2.pnl"),
            rank_command: Box::new(command),
            metrics_addr: None,
            counters: CounterPlan::all(SampleRate::new(50).unwrap()),
        }
    }

    fn ends(log: &NodeLog) -> Vec<(Rank, RankExit)> {
        let end = |r: &Record| match r {
            Record::RankEnd { rank, exit, .. } => Some((*rank, exit.clone())),
            _ => None,
        };
        log.records.iter().filter_map(end).collect()
    }

    #[test]
    fn agent_events_are_json_lines() {
        let event = AgentEvent::Progress {
            rank: Rank(1),
            done: 2,
            total: 5,
        };
        let line = event.to_line();
        assert_eq!(line, r#"{"event":"progress","rank":1,"done":2,"total":5}"#);
        assert_eq!(AgentEvent::from_line(&format!("{line}\n")), Some(event));
        let ended = AgentEvent::RankEnded {
            rank: Rank(0),
            ok: false,
            message: "exited with code 3".into(),
        };
        assert_eq!(AgentEvent::from_line(&ended.to_line()), Some(ended));
        assert_eq!(AgentEvent::from_line("Compiling pinch"), None);
    }

    #[test]
    fn log_that_cannot_be_created_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), &[Rank(0)], |_| Command::new("true"));
        cfg.log_path = dir.path().join("missing").join("node.pnl");
        let err = run_agent(cfg, &mut |_| {}).unwrap_err().to_string();
        assert!(
            err.contains("cannot create node log") && err.contains("missing/node.pnl"),
            "{err}"
        );
    }

    #[test]
    fn rank_that_cannot_start_is_recorded_as_failed() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), &[Rank(0)], |_| {
            Command::new("/nonexistent/pinch-rank")
        });
        let log_path = cfg.log_path.clone();
        let summary = run_agent(cfg, &mut |_| {}).unwrap();
        assert_eq!(summary.failed.len(), 1);
        assert!(
            summary.failed[0]
                .1
                .contains("cannot start '/nonexistent/pinch-rank'")
        );
        let log = read_node_log(&log_path).unwrap();
        let [
            (
                Rank(0),
                RankExit::Failed {
                    code: None,
                    signal: None,
                    message,
                },
            ),
        ] = &ends(&log)[..]
        else {
            panic!("{:?}", ends(&log))
        };
        assert_eq!(message, &summary.failed[0].1);
        assert!(
            !log.records
                .iter()
                .any(|r| matches!(r, Record::RankStart { .. }))
        );
        assert!(matches!(log.records.last(), Some(Record::NodeEnd { .. })));
    }

    #[test]
    fn survivors_are_killed_after_the_grace_period() {
        let dir = tempfile::tempdir().unwrap();
        // Rank 0 would run for 30 s; rank 1 fails at once without writing a stream.
        let cfg = config(dir.path(), &[Rank(0), Rank(1)], |rank| {
            let (program, args): (&str, &[&str]) = match rank.0 {
                0 => ("sleep", &["30"]),
                _ => ("sh", &["-c", "exit 3"]),
            };
            let mut command = Command::new(program);
            command.args(args);
            command
        });
        let log_path = cfg.log_path.clone();
        let started = Instant::now();
        let mut events = Vec::new();
        let summary =
            run_agent_with_grace(cfg, Duration::from_millis(200), &mut |e| events.push(e)).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "it waited for the sleeper"
        );
        let log = read_node_log(&log_path).unwrap();
        let ends = ends(&log);
        let [
            (
                Rank(1),
                RankExit::Failed {
                    code: Some(3),
                    message: failed,
                    ..
                },
            ),
            (
                Rank(0),
                RankExit::Failed {
                    code: None,
                    signal: Some(9),
                    message: killed,
                },
            ),
        ] = &ends[..]
        else {
            panic!("{ends:?}")
        };
        assert!(failed.contains("wrote no record stream"), "{failed}");
        assert!(
            killed.contains("stopped by the agent 0.2 s after rank 1 failed"),
            "{killed}"
        );
        assert_eq!(summary.failed.len(), 2);
        let starts = log
            .records
            .iter()
            .filter(|r| matches!(r, Record::RankStart { .. }));
        assert_eq!(starts.count(), 2);
        let failures = events
            .iter()
            .filter(|e| matches!(e, AgentEvent::RankEnded { ok: false, .. }));
        assert_eq!(failures.count(), 2);
    }
}
