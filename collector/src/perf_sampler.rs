//! The perf-event sampler: each rank process's hardware counters (cycles, instructions, cache
//! and branch misses, stalled cycles) and software counters (task clock, context switches, CPU
//! migrations, page faults), read through `perf_event_open(2)` with the `perf-event2` crate.
//!
//! Every thread a rank has when it is opened gets its own counter groups, inherited by the
//! threads it starts later, and a rank's value is the sum over its threads. Hardware counters
//! may be refused (no PMU in a VM: ENOENT; paranoid level: EACCES), so they are optional: the
//! software set stands alone and `notes` says what was refused and why.
//!
//! The kernel multiplexes hardware counters when more are asked for than the PMU has; a group
//! then runs only part of the time it is enabled, and its counts are scaled up by
//! enabled / running over each interval (`scaled_deltas`, kept apart from the I/O so it can be
//! tested on hand-made readings). Rates need two readings: the first one only primes.

use crate::exit_watch::ExitWatch;
use crate::sampler::{CounterSpec, SampleSink, Sampler, SamplerError};
use perf_event::events::{Hardware, Software};
use perf_event::{Builder, Counter, Group};
use pinch_traces::{Rank, Unit};
use procfs::ProcError;
use procfs::process::Process;
use std::fmt;
use std::io;

pub const PERF_CYCLES: CounterSpec = CounterSpec::new("perf.cycles_per_s", Unit::PerSecond);
pub const PERF_INSTRUCTIONS: CounterSpec =
    CounterSpec::new("perf.instructions_per_s", Unit::PerSecond);
pub const PERF_CACHE_REFERENCES: CounterSpec =
    CounterSpec::new("perf.cache_references_per_s", Unit::PerSecond);
pub const PERF_CACHE_MISSES: CounterSpec =
    CounterSpec::new("perf.cache_misses_per_s", Unit::PerSecond);
pub const PERF_BRANCH_MISSES: CounterSpec =
    CounterSpec::new("perf.branch_misses_per_s", Unit::PerSecond);
pub const PERF_STALLED_FRONTEND: CounterSpec =
    CounterSpec::new("perf.stalled_cycles_frontend_per_s", Unit::PerSecond);
pub const PERF_STALLED_BACKEND: CounterSpec =
    CounterSpec::new("perf.stalled_cycles_backend_per_s", Unit::PerSecond);
/// Instructions per cycle, when both are counted.
pub const PERF_IPC: CounterSpec = CounterSpec::new("perf.ipc", Unit::Ratio);
/// CPU-seconds the rank's threads ran per second: 2.0 is two busy cores.
pub const PERF_TASK_CLOCK_RATIO: CounterSpec =
    CounterSpec::new("perf.task_clock_ratio", Unit::Ratio);
pub const PERF_CONTEXT_SWITCHES: CounterSpec =
    CounterSpec::new("perf.context_switches_per_s", Unit::PerSecond);
pub const PERF_CPU_MIGRATIONS: CounterSpec =
    CounterSpec::new("perf.cpu_migrations_per_s", Unit::PerSecond);
pub const PERF_PAGE_FAULTS: CounterSpec =
    CounterSpec::new("perf.page_faults_per_s", Unit::PerSecond);

/// Every counter `PerfSampler` may emit.
pub const PERF_COUNTERS: &[CounterSpec] = &[
    PERF_CYCLES,
    PERF_INSTRUCTIONS,
    PERF_IPC,
    PERF_CACHE_REFERENCES,
    PERF_CACHE_MISSES,
    PERF_BRANCH_MISSES,
    PERF_STALLED_FRONTEND,
    PERF_STALLED_BACKEND,
    PERF_TASK_CLOCK_RATIO,
    PERF_CONTEXT_SWITCHES,
    PERF_CPU_MIGRATIONS,
    PERF_PAGE_FAULTS,
];

#[derive(Clone, Copy)]
enum EventKind {
    Hardware(Hardware),
    Software(Software),
}

/// One event pinch counts, and the counter its rate is reported as.
struct PerfEvent {
    /// perf's own name for it ("cycles"), used in notes.
    name: &'static str,
    kind: EventKind,
    counter: CounterSpec,
    /// What one count is worth in the counter's numerator (task-clock counts nanoseconds, and
    /// its ratio is in seconds per second).
    value_per_count: f64,
    /// Counted only in kernel context: with kernel counting excluded it would read a fake 0.
    needs_kernel: bool,
}

const fn event(name: &'static str, kind: EventKind, counter: CounterSpec) -> PerfEvent {
    PerfEvent {
        name,
        kind,
        counter,
        value_per_count: 1.0,
        needs_kernel: false,
    }
}

const fn hardware(name: &'static str, event_kind: Hardware, counter: CounterSpec) -> PerfEvent {
    event(name, EventKind::Hardware(event_kind), counter)
}

static HARDWARE_EVENTS: [PerfEvent; 7] = [
    hardware("cycles", Hardware::CPU_CYCLES, PERF_CYCLES),
    hardware("instructions", Hardware::INSTRUCTIONS, PERF_INSTRUCTIONS),
    hardware(
        "cache-references",
        Hardware::CACHE_REFERENCES,
        PERF_CACHE_REFERENCES,
    ),
    hardware("cache-misses", Hardware::CACHE_MISSES, PERF_CACHE_MISSES),
    hardware("branch-misses", Hardware::BRANCH_MISSES, PERF_BRANCH_MISSES),
    hardware(
        "stalled-cycles-frontend",
        Hardware::STALLED_CYCLES_FRONTEND,
        PERF_STALLED_FRONTEND,
    ),
    hardware(
        "stalled-cycles-backend",
        Hardware::STALLED_CYCLES_BACKEND,
        PERF_STALLED_BACKEND,
    ),
];

static SOFTWARE_EVENTS: [PerfEvent; 4] = [
    PerfEvent {
        value_per_count: 1e-9,
        ..event(
            "task-clock",
            EventKind::Software(Software::TASK_CLOCK),
            PERF_TASK_CLOCK_RATIO,
        )
    },
    PerfEvent {
        needs_kernel: true,
        ..event(
            "context-switches",
            EventKind::Software(Software::CONTEXT_SWITCHES),
            PERF_CONTEXT_SWITCHES,
        )
    },
    PerfEvent {
        needs_kernel: true,
        ..event(
            "cpu-migrations",
            EventKind::Software(Software::CPU_MIGRATIONS),
            PERF_CPU_MIGRATIONS,
        )
    },
    event(
        "page-faults",
        EventKind::Software(Software::PAGE_FAULTS),
        PERF_PAGE_FAULTS,
    ),
];

/// One reading of a counter group: how long it was enabled and running, and each member's raw
/// count, all cumulative since the group was opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupReading {
    pub time_enabled_ns: u64,
    pub time_running_ns: u64,
    pub counts: Vec<u64>,
}

/// Each member's count over the interval between two readings, scaled to the whole time the
/// group was enabled when the kernel multiplexed it and it ran only part of that time.
///
/// A thread that was not scheduled at all has no enabled time and counted nothing: 0. A group
/// that was enabled but never ran, times that went backwards and counts that did: unknown.
pub fn scaled_deltas(before: &GroupReading, after: &GroupReading) -> Vec<Option<f64>> {
    let enabled_ns = after.time_enabled_ns.checked_sub(before.time_enabled_ns);
    let running_ns = after.time_running_ns.checked_sub(before.time_running_ns);
    let scale = match (enabled_ns, running_ns) {
        (Some(0), Some(_)) => Some(1.0),
        (Some(_), Some(0)) | (None, _) | (_, None) => None,
        (Some(enabled), Some(running)) => Some(enabled as f64 / running as f64),
    };
    let delta = |(b, a): (&u64, &u64)| Some(a.checked_sub(*b)? as f64 * scale?);
    before.counts.iter().zip(&after.counts).map(delta).collect()
}

/// Sums the threads' scaled counts of each event; one unknown makes the sum unknown.
fn sum_known(total: &mut [Option<f64>], thread: &[Option<f64>]) {
    for (sum, value) in total.iter_mut().zip(thread) {
        *sum = sum.zip(*value).map(|(s, v)| s + v);
    }
}

/// The counter groups of one thread (and of the threads it starts later).
struct ThreadGroup {
    tid: u32,
    group: Group,
    members: Vec<Counter>,
    last: Option<GroupReading>,
}

impl ThreadGroup {
    fn read(&mut self) -> io::Result<GroupReading> {
        let data = self.group.read()?;
        let missing = || io::Error::other("the group read lacks a value");
        let nanos = |d: Option<std::time::Duration>| d.map(|d| d.as_nanos() as u64);
        let counts = self.members.iter().map(|member| data.get(member));
        Ok(GroupReading {
            time_enabled_ns: nanos(data.time_enabled()).ok_or_else(missing)?,
            time_running_ns: nanos(data.time_running()).ok_or_else(missing)?,
            counts: counts
                .map(|entry| entry.map(|e| e.value()).ok_or_else(missing))
                .collect::<io::Result<_>>()?,
        })
    }

    /// The scaled counts since the last reading; `None` on the first one.
    fn advance(&mut self) -> io::Result<Option<Vec<Option<f64>>>> {
        let reading = self.read()?;
        let deltas = self.last.as_ref().map(|last| scaled_deltas(last, &reading));
        self.last = Some(reading);
        Ok(deltas)
    }
}

/// The same events counted on each of a rank's threads.
struct EventSet {
    events: Vec<&'static PerfEvent>,
    threads: Vec<ThreadGroup>,
}

impl EventSet {
    /// Each event's count over the threads since the last call; `None` before any interval.
    /// A thread whose counters cannot be read any more is dropped; the error is returned only
    /// while the thread still exists.
    fn advance(&mut self, pid: u32) -> Result<Vec<Option<f64>>, String> {
        let mut total = vec![Some(0.0); self.events.len()];
        let (mut measured, mut failure) = (false, None);
        self.threads.retain_mut(|thread| match thread.advance() {
            Ok(Some(deltas)) => {
                measured = true;
                sum_known(&mut total, &deltas);
                true
            }
            Ok(None) => true,
            Err(e) => {
                if thread_exists(pid, thread.tid) {
                    failure = Some(format!("thread {} of pid {pid}: {e}", thread.tid));
                }
                false
            }
        });
        match failure {
            Some(message) => Err(message),
            None if measured => Ok(total),
            None => Ok(vec![None; self.events.len()]),
        }
    }

    fn counts(&self, counter: CounterSpec) -> bool {
        self.events.iter().any(|e| e.counter == counter)
    }
}

/// A rank process's counters.
struct RankCounters {
    pid: u32,
    exit_watch: ExitWatch,
    device: String,
    sets: Vec<EventSet>,
    last_time_ns: Option<u64>,
}

impl RankCounters {
    /// Pushes the rank's rates since the last call. A process that has exited (or is a zombie)
    /// has its counters closed and is read no more.
    fn sample(&mut self, now_ns: u64, out: &mut SampleSink) -> Result<(), String> {
        if self.sets.is_empty() {
            return Ok(());
        }
        if self.exit_watch.has_exited() {
            self.sets.clear();
            return Ok(());
        }
        let elapsed_ns = self.last_time_ns.map(|t| now_ns.saturating_sub(t));
        self.last_time_ns = Some(now_ns);
        let (mut readings, mut failure) = (Vec::new(), None);
        for set in &mut self.sets {
            // A set that fails is left out of this interval; the others are still pushed.
            match set.advance(self.pid) {
                Ok(counts) => readings.extend(set.events.iter().copied().zip(counts)),
                Err(message) => failure = failure.or(Some(message)),
            }
        }
        if let Some(elapsed_ns) = elapsed_ns.filter(|&ns| ns > 0) {
            push_rates(out, &self.device, now_ns, elapsed_ns, &readings);
        }
        failure.map_or(Ok(()), Err)
    }

    fn counts(&self, counter: CounterSpec) -> bool {
        self.sets.iter().any(|set| set.counts(counter))
    }
}

/// Pushes each event's rate per second, and instructions per cycle when both are known.
fn push_rates(
    out: &mut SampleSink,
    device: &str,
    now_ns: u64,
    elapsed_ns: u64,
    readings: &[(&'static PerfEvent, Option<f64>)],
) {
    let elapsed_s = elapsed_ns as f64 * 1e-9;
    for (event, count) in readings {
        if let Some(count) = count {
            let rate = count * event.value_per_count / elapsed_s;
            out.push(event.counter, device, now_ns, rate);
        }
    }
    let count_of = |counter| {
        let found = readings.iter().find(|(e, _)| e.counter == counter);
        found.and_then(|(_, count)| *count)
    };
    if let (Some(instructions), Some(cycles)) = (count_of(PERF_INSTRUCTIONS), count_of(PERF_CYCLES))
        && cycles > 0.0
    {
        out.push(PERF_IPC, device, now_ns, instructions / cycles);
    }
}

/// Samples perf events of one node's rank processes.
pub struct PerfSampler {
    ranks: Vec<RankCounters>,
    notes: Vec<String>,
}

impl fmt::Debug for PerfSampler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PerfSampler")
            .field("ranks", &self.ranks.len())
            .field("counters", &self.read_counters())
            .field("notes", &self.notes)
            .finish()
    }
}

impl PerfSampler {
    /// Opens the counters of these rank processes (rank, pid), or says in one lowercase
    /// sentence why perf events cannot be read on this host. A rank that cannot be opened while
    /// others can is left out, and a note says why.
    pub fn open(ranks: &[(Rank, u32)]) -> Result<PerfSampler, String> {
        if ranks.is_empty() {
            probe_self()?;
        }
        let mut notes = Vec::new();
        let mut opened = Vec::new();
        let mut refusals = Vec::new();
        for &(rank, pid) in ranks {
            match open_rank(rank, pid, &mut notes) {
                Ok(counters) => opened.push(counters),
                Err(reason) => refusals.push(reason),
            }
        }
        if opened.is_empty() && !refusals.is_empty() {
            return Err(refusals.join("; "));
        }
        notes.extend(refusals);
        Ok(PerfSampler {
            ranks: opened,
            notes,
        })
    }

    /// The names of the counters it will read on this host.
    pub fn read_counters(&self) -> Vec<String> {
        let counted = |c: &CounterSpec| self.ranks.iter().any(|r| r.counts(*c));
        let ipc = counted(&PERF_CYCLES) && counted(&PERF_INSTRUCTIONS);
        let read = |c: &&CounterSpec| counted(c) || (ipc && **c == PERF_IPC);
        PERF_COUNTERS
            .iter()
            .filter(read)
            .map(|c| c.name.to_string())
            .collect()
    }

    /// What was refused or degraded without stopping the source, one sentence each.
    pub fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }
}

impl Sampler for PerfSampler {
    fn source(&self) -> &'static str {
        "perf"
    }

    fn counters(&self) -> &'static [CounterSpec] {
        PERF_COUNTERS
    }

    /// Reads every rank even when one fails, and returns the first failure.
    fn sample(&mut self, now_ns: u64, out: &mut SampleSink) -> Result<(), SamplerError> {
        let mut first_failure = None;
        for rank in &mut self.ranks {
            if let Err(message) = rank.sample(now_ns, out) {
                first_failure.get_or_insert(message);
            }
        }
        match first_failure {
            None => Ok(()),
            Some(message) => Err(SamplerError::Source {
                source_name: "perf",
                message,
            }),
        }
    }
}

/// Whether perf software events can be opened at all, on this process.
fn probe_self() -> Result<(), String> {
    let pid = std::process::id();
    match open_thread(&[&SOFTWARE_EVENTS[0]], pid, false) {
        Ok((_, refused)) if refused.is_empty() => Ok(()),
        Ok((_, refused)) => Err(format!(
            "perf events are refused: {}",
            describe_refusals(&refused)
        )),
        Err(e) => Err(format!("perf events are refused: {}", explain(&e))),
    }
}

fn open_rank(rank: Rank, pid: u32, notes: &mut Vec<String>) -> Result<RankCounters, String> {
    let label = format!("rank {} (pid {pid})", rank.0);
    let tids =
        thread_ids(pid).map_err(|e| format!("the threads of {label} cannot be listed: {e}"))?;
    let software = open_set(&SOFTWARE_EVENTS, &tids, &label, notes)
        .map_err(|reason| format!("software perf events refused for {label}: {reason}"))?;
    let mut sets = vec![software];
    match open_set(&HARDWARE_EVENTS, &tids, &label, notes) {
        Ok(hardware) => sets.push(hardware),
        Err(reason) => notes.push(format!("hardware events refused for {label}: {reason}")),
    }
    Ok(RankCounters {
        pid,
        exit_watch: ExitWatch::new(pid),
        device: format!("rank{}", rank.0),
        sets,
        last_time_ns: None,
    })
}

/// Opens the events on every thread. The first thread (the process's main one) decides which
/// events are offered; the rest count those. Returns why none could be opened.
fn open_set(
    events: &'static [PerfEvent],
    tids: &[u32],
    label: &str,
    notes: &mut Vec<String>,
) -> Result<EventSet, String> {
    let (&main_tid, others) = tids
        .split_first()
        .ok_or_else(|| "it has no threads".to_string())?;
    let (first, offered, count_kernel) = open_main_thread(events, main_tid, label, notes)?;
    let mut threads = vec![first];
    for &tid in others {
        let not_counted = |why: String| format!("thread {tid} of {label} is not counted: {why}");
        match open_thread(&offered, tid, count_kernel) {
            Ok((thread, refused)) if refused.is_empty() => threads.push(thread),
            Ok((_, refused)) => notes.push(not_counted(describe_refusals(&refused))),
            // The thread ended since it was listed.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(e) => notes.push(not_counted(explain(&e))),
        }
    }
    for thread in &mut threads {
        thread.group.enable().map_err(|e| explain(&e))?;
    }
    Ok(EventSet {
        events: offered,
        threads,
    })
}

/// A thread's group, the events it offers, and whether kernel work is counted.
type MainThread = (ThreadGroup, Vec<&'static PerfEvent>, bool);

/// Opens the events on the main thread, counting kernel work too unless that is refused;
/// notes the events the host does not offer.
fn open_main_thread(
    events: &'static [PerfEvent],
    tid: u32,
    label: &str,
    notes: &mut Vec<String>,
) -> Result<MainThread, String> {
    let all: Vec<&'static PerfEvent> = events.iter().collect();
    let (thread, refused, offered, count_kernel) = match open_thread(&all, tid, true) {
        Err(e) if is_permission(&e) => {
            let (user_only, dropped): (Vec<_>, Vec<_>) =
                all.into_iter().partition(|e| !e.needs_kernel);
            let (thread, refused) = open_thread(&user_only, tid, false).map_err(|e| explain(&e))?;
            notes.push(user_only_note(label, &e, &dropped));
            (thread, refused, user_only, false)
        }
        Err(e) => return Err(explain(&e)),
        Ok((thread, refused)) => (thread, refused, all, true),
    };
    if thread.members.is_empty() {
        return Err(describe_refusals(&refused));
    }
    if !refused.is_empty() {
        notes.push(format!(
            "perf events not offered for {label}: {}",
            describe_refusals(&refused)
        ));
    }
    let refused_names: Vec<&str> = refused.iter().map(|(e, _)| e.name).collect();
    let offered = offered
        .into_iter()
        .filter(|e| !refused_names.contains(&e.name))
        .collect();
    Ok((thread, offered, count_kernel))
}

fn user_only_note(label: &str, error: &io::Error, dropped: &[&PerfEvent]) -> String {
    let mut note = format!(
        "kernel-side perf counting refused for {label} ({}): counting user space only",
        explain(error)
    );
    if !dropped.is_empty() {
        let names: Vec<&str> = dropped.iter().map(|e| e.name).collect();
        note.push_str(&format!(", without {}", names.join(", ")));
    }
    note
}

/// Opens a group on one thread with each event that the host accepts; the refused ones come
/// back with their errors. Fails only when the group itself cannot be opened.
fn open_thread(
    events: &[&'static PerfEvent],
    tid: u32,
    count_kernel: bool,
) -> io::Result<(ThreadGroup, Vec<(&'static PerfEvent, io::Error)>)> {
    let mut leader = Group::builder();
    configure(&mut leader, tid, count_kernel)
        .build_group()
        .map(|group| {
            let mut thread = ThreadGroup {
                tid,
                group,
                members: Vec::new(),
                last: None,
            };
            let mut refused = Vec::new();
            for &event in events {
                let mut builder = builder_for(event.kind);
                match configure(&mut builder, tid, count_kernel).build_with_group(&mut thread.group)
                {
                    Ok(counter) => thread.members.push(counter),
                    Err(e) => refused.push((event, e)),
                }
            }
            (thread, refused)
        })
}

fn builder_for(kind: EventKind) -> Builder<'static> {
    match kind {
        EventKind::Hardware(event) => Builder::new(event),
        EventKind::Software(event) => Builder::new(event),
    }
}

/// Watches one thread on any CPU, and the threads it starts later.
fn configure<'a, 'b>(
    builder: &'a mut Builder<'b>,
    tid: u32,
    count_kernel: bool,
) -> &'a mut Builder<'b> {
    builder
        .observe_pid(tid as libc::pid_t)
        .any_cpu()
        .inherit(true)
        .exclude_kernel(!count_kernel)
}

fn is_permission(error: &io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EACCES | libc::EPERM))
}

/// The error, and for a permission error what would lift it.
fn explain(error: &io::Error) -> String {
    if !is_permission(error) {
        return error.to_string();
    }
    let paranoid = std::fs::read_to_string("/proc/sys/kernel/perf_event_paranoid");
    let level = paranoid.map_or_else(|_| "unreadable".to_string(), |s| s.trim().to_string());
    format!("{error}; kernel.perf_event_paranoid is {level}: lower it or grant CAP_PERFMON")
}

/// "cycles: No such file or directory (os error 2)", or the distinct errors each with the
/// events they refused.
fn describe_refusals(refused: &[(&'static PerfEvent, io::Error)]) -> String {
    let mut by_error: Vec<(String, Vec<&str>)> = Vec::new();
    for (event, error) in refused {
        let text = explain(error);
        match by_error.iter_mut().find(|(t, _)| *t == text) {
            Some((_, names)) => names.push(event.name),
            None => by_error.push((text, vec![event.name])),
        }
    }
    let parts: Vec<String> = by_error
        .iter()
        .map(|(text, names)| format!("{}: {text}", names.join(", ")))
        .collect();
    parts.join("; ")
}

/// The process's thread ids, its main thread first.
fn thread_ids(pid: u32) -> Result<Vec<u32>, ProcError> {
    let mut tids: Vec<u32> = Process::new(pid as i32)?
        .tasks()?
        .filter_map(|task| task.ok().map(|t| t.tid as u32))
        .filter(|&tid| tid != pid)
        .collect();
    tids.sort_unstable();
    tids.insert(0, pid);
    Ok(tids)
}

fn thread_exists(pid: u32, tid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}/task/{tid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::testkit::Names;
    use pinch_traces::{NodeId, monotonic_now_ns};
    use std::collections::HashMap;
    use std::process::{Child, Command};
    use std::time::Duration;

    fn reading(enabled_ns: u64, running_ns: u64, counts: &[u64]) -> GroupReading {
        GroupReading {
            time_enabled_ns: enabled_ns,
            time_running_ns: running_ns,
            counts: counts.to_vec(),
        }
    }

    #[test]
    fn counts_of_a_group_that_always_ran_are_not_scaled() {
        let before = reading(1_000, 1_000, &[10, 200]);
        let after = reading(3_000, 3_000, &[40, 200]);
        assert_eq!(scaled_deltas(&before, &after), [Some(30.0), Some(0.0)]);
    }

    #[test]
    fn multiplexed_counts_are_scaled_by_enabled_over_running_in_the_interval() {
        // Over the interval the group was enabled 4 µs and ran 1 µs: counts × 4. Scaling by
        // the cumulative times (8 / 4) would give × 2 and be wrong for this interval.
        let before = reading(4_000, 3_000, &[100, 7]);
        let after = reading(8_000, 4_000, &[350, 9]);
        assert_eq!(scaled_deltas(&before, &after), [Some(1_000.0), Some(8.0)]);
    }

    #[test]
    fn a_thread_that_never_ran_counted_nothing() {
        let same = reading(5_000, 2_500, &[10, 20]);
        assert_eq!(scaled_deltas(&same, &same), [Some(0.0), Some(0.0)]);
    }

    #[test]
    fn a_group_enabled_but_never_scheduled_is_unknown_not_zero() {
        let before = reading(1_000, 500, &[10]);
        let after = reading(2_000, 500, &[10]);
        assert_eq!(scaled_deltas(&before, &after), [None]);
    }

    #[test]
    fn values_that_went_backwards_are_unknown() {
        let before = reading(2_000, 2_000, &[10, 50]);
        assert_eq!(
            scaled_deltas(&before, &reading(3_000, 3_000, &[20, 40])),
            [Some(10.0), None]
        );
        assert_eq!(
            scaled_deltas(&before, &reading(1_000, 3_000, &[20, 60])),
            [None, None]
        );
    }

    #[test]
    fn one_unknown_thread_makes_the_sum_unknown() {
        let mut total = vec![Some(0.0); 2];
        sum_known(&mut total, &[Some(3.0), Some(1.0)]);
        sum_known(&mut total, &[Some(4.0), None]);
        assert_eq!(total, [Some(7.0), None]);
    }

    #[test]
    fn rates_are_per_second_and_ipc_needs_both_counts() {
        let readings = [
            (&HARDWARE_EVENTS[0], Some(2_000.0)),
            (&HARDWARE_EVENTS[1], Some(3_000.0)),
            (&SOFTWARE_EVENTS[0], Some(250_000_000.0)),
            (&SOFTWARE_EVENTS[1], None),
        ];
        let mut sink = SampleSink::new(NodeId(0));
        push_rates(&mut sink, "rank0", 7, 500_000_000, &readings);
        let values = Names::default().readings(&sink.take_records());
        assert_eq!(
            values["perf.cycles_per_s"],
            [("rank0".to_string(), 4_000.0)]
        );
        assert_eq!(values["perf.instructions_per_s"][0].1, 6_000.0);
        assert_eq!(values["perf.ipc"][0].1, 1.5);
        assert_eq!(values["perf.task_clock_ratio"][0].1, 0.5);
        assert!(!values.contains_key("perf.context_switches_per_s"));

        let mut sink = SampleSink::new(NodeId(0));
        push_rates(&mut sink, "rank0", 7, 500_000_000, &readings[1..]);
        let values = Names::default().readings(&sink.take_records());
        assert!(!values.contains_key("perf.ipc"), "{values:?}");
    }

    /// Whether this host lets this process count cycles: the hardware branch of the test.
    fn hardware_offered() -> bool {
        Builder::new(Hardware::CPU_CYCLES).build().is_ok()
    }

    fn spinning_child() -> Child {
        Command::new("sh")
            .args(["-c", "while :; do :; done"])
            .spawn()
            .unwrap()
    }

    fn sample(sampler: &mut PerfSampler, names: &mut Names) -> HashMap<String, Vec<(String, f64)>> {
        let mut sink = SampleSink::new(NodeId(0));
        sampler.sample(monotonic_now_ns(), &mut sink).unwrap();
        names.readings(&sink.take_records())
    }

    #[test]
    fn a_busy_child_is_counted_and_refused_hardware_is_noted() {
        let mut child = spinning_child();
        let mut sampler = PerfSampler::open(&[(Rank(0), child.id())]).unwrap();
        let notes = sampler.notes();
        let counters = sampler.read_counters();
        let hardware_note = format!("hardware events refused for rank 0 (pid {}): ", child.id());
        if hardware_offered() {
            assert!(
                counters.contains(&"perf.cycles_per_s".to_string()),
                "{counters:?}"
            );
        } else {
            assert!(
                notes
                    .iter()
                    .any(|n| n.starts_with(&hardware_note) && n.contains("cycles")),
                "{notes:?}"
            );
            assert!(
                !counters
                    .iter()
                    .any(|c| c.contains("cycles") || c.contains("ipc"))
            );
        }
        for name in ["perf.task_clock_ratio", "perf.page_faults_per_s"] {
            assert!(counters.contains(&name.to_string()), "{counters:?}");
        }

        let mut names = Names::default();
        assert!(
            sample(&mut sampler, &mut names).is_empty(),
            "the first sample only primes"
        );
        std::thread::sleep(Duration::from_millis(300));
        let second = sample(&mut sampler, &mut names);
        let [(device, busy)] = &second["perf.task_clock_ratio"][..] else {
            panic!("{second:?}")
        };
        assert!(device == "rank0" && *busy > 0.05 && *busy < 1.5, "{busy}");
        assert!(
            second.contains_key("perf.context_switches_per_s"),
            "{second:?}"
        );
        assert_eq!(second.contains_key("perf.cycles_per_s"), hardware_offered());
        let emitted: Vec<&String> = second.keys().collect();
        assert!(emitted.iter().all(|c| counters.contains(c)), "{emitted:?}");

        // A rank that exits (here a zombie not yet reaped) stops its counters, not the sampler.
        child.kill().unwrap();
        std::thread::sleep(Duration::from_millis(100));
        assert!(sample(&mut sampler, &mut names).is_empty());
        child.wait().unwrap();
        assert!(sample(&mut sampler, &mut names).is_empty());
    }

    #[test]
    fn threads_started_after_open_are_counted() {
        let mut sampler = PerfSampler::open(&[(Rank(3), std::process::id())]).unwrap();
        let mut names = Names::default();
        sample(&mut sampler, &mut names);
        let spinner = std::thread::spawn(|| {
            let start = monotonic_now_ns();
            let mut x = 0u64;
            while monotonic_now_ns() - start < 400_000_000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        });
        std::thread::sleep(Duration::from_millis(300));
        let second = sample(&mut sampler, &mut names);
        spinner.join().unwrap();
        let [(device, busy)] = &second["perf.task_clock_ratio"][..] else {
            panic!("{second:?}")
        };
        // The spinner ran through the interval; on a loaded host it may get a small share of a
        // core, but the other threads of this test process are nearly idle.
        assert!(device == "rank3" && *busy > 0.05, "{busy}");
    }

    #[test]
    fn ranks_that_cannot_be_opened_are_named() {
        let gone = u32::MAX - 7;
        let refused = PerfSampler::open(&[(Rank(1), gone)]).unwrap_err();
        assert!(
            refused.contains(&format!("rank 1 (pid {gone})")),
            "{refused}"
        );
        let mut child = spinning_child();
        let sampler = PerfSampler::open(&[(Rank(0), child.id()), (Rank(1), gone)]).unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            sampler.notes().iter().any(|n| n.contains("rank 1")),
            "{:?}",
            sampler.notes()
        );
    }
}
