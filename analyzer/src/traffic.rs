//! The rank×rank traffic matrix: how many bytes each ordered pair of ranks moved, how long the
//! receiving rank took to get them, and so the bandwidth each pair and each link achieved.
//!
//! Spans record a collective's kind, size and participants, not its frames; the bytes of each
//! pair follow from the algorithm pinch's comm layer runs (`workloads/src/comm`):
//! - all-reduce, one-shot (`auto` below 64 KiB × (n − 1) of buffer, or `--all-reduce one-shot`):
//!   every member sends its whole buffer to every other; ring (`auto` above, or `ring`): each
//!   member sends 2·(n−1)/n of the buffer to the next member in group order;
//! - all-gather, reduce-scatter: every member sends a 1/n share of `message_bytes` (the whole
//!   gathered buffer, the whole input) to every other;
//! - all-to-all: the same even split of each member's `message_bytes` (its whole send buffer):
//!   the trace records the total, not the per-peer counts, so this is an estimate;
//! - broadcast: the root, the group's first member, sends `message_bytes` to every other;
//! - send/receive: the receive's `message_bytes`, from its `peer` to it.
//!
//! pinch builds every group in ascending rank order, which fixes the ring and the root.
//!
//! A pair's *time* is, per collective or message, the time its receiver spent getting its data
//! after every peer it depends on had arrived (started its span): its span's end minus the last
//! such arrival. Arrival waiting is left out, as the straggler analysis blames it on the late
//! rank; a slow link's latency stays in, although the comm layer's own `wait_ns` counts one
//! link latency as waiting (it ends when the last peer's first frame *arrives*). A collective
//! seen on one rank only, and a receive whose send was not recorded, fall back to the span's
//! duration less its `wait_ns`.
//!
//! A receiver of a one-shot all-reduce or an all-gather waits on every peer at once, so one slow
//! link slows both its ends' receives from *every* peer; the rate of each direction of a link is
//! thus a lower bound on the link's, and a link's rate is its faster direction's. A ring moves
//! in lock step at its slowest link's pace, so its transfers say nothing of their own link: a
//! link's rate leaves them out wherever the link carried other transfers too.
//!
//! Sums make an average that a few outliers can sway: on a busy host, a receiver descheduled
//! while its data arrives makes a transfer look slow. Each pair therefore also keeps the median
//! of its transfers' rates (ring transfers aside), from a histogram of half-octave buckets, so
//! within a factor of √2; the slow-link finding compares links by it.

use crate::exchanges::{Collectives, Member, Messages};
use crate::facts::RunFacts;
use crate::timeline::{TimedSpan, Timeline};
use pinch_traces::{CollectiveKind, Rank};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The all-reduce buffer × (members − 1) up to which `auto` runs the one-shot algorithm (pinch's
/// `comm::ONE_SHOT_MAX_BYTES`).
pub const ONE_SHOT_MAX_BYTES: u64 = 64 << 10;

/// How the run's all-reduces moved their data (`pinch run --all-reduce`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllReduceAlgorithm {
    #[default]
    Auto,
    Ring,
    OneShot,
}

impl AllReduceAlgorithm {
    /// Whether an all-reduce of `message_bytes` over `n` members runs as a ring.
    pub(crate) fn is_ring(self, message_bytes: u64, n: u64) -> bool {
        match self {
            AllReduceAlgorithm::Ring => true,
            AllReduceAlgorithm::OneShot => false,
            AllReduceAlgorithm::Auto => {
                message_bytes.saturating_mul(n.saturating_sub(1)) > ONE_SHOT_MAX_BYTES
            }
        }
    }
}

/// How the run's comm layer was set up, as far as the traffic depends on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommSettings {
    pub all_reduce: AllReduceAlgorithm,
    /// Whether ranks of one node talked over shared memory (else TCP everywhere).
    pub shm: bool,
}

impl Default for CommSettings {
    /// pinch's defaults: `--all-reduce auto`, shared memory within a node.
    fn default() -> CommSettings {
        CommSettings {
            all_reduce: AllReduceAlgorithm::Auto,
            shm: true,
        }
    }
}

impl CommSettings {
    /// From the manifest's workload parameters `all_reduce` and `shm`; pinch's defaults where
    /// they are absent (runs recorded before they were stored).
    pub fn from_parameters(parameters: &BTreeMap<String, serde_json::Value>) -> CommSettings {
        let defaults = CommSettings::default();
        let all_reduce = parameters
            .get("all_reduce")
            .and_then(|v| serde_json::from_value(v.clone()).ok())
            .unwrap_or(defaults.all_reduce);
        let shm = parameters.get("shm").and_then(serde_json::Value::as_bool);
        CommSettings {
            all_reduce,
            shm: shm.unwrap_or(defaults.shm),
        }
    }
}

/// What one ordered pair of ranks moved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PairTraffic {
    pub src: u32,
    pub dst: u32,
    pub bytes: u64,
    /// Collectives and messages that moved bytes from `src` to `dst`.
    pub transfers: u64,
    /// The receiver's time getting them, summed (see the module doc).
    pub time_ns: u64,
    /// `bytes / time_ns`, GB/s; `None` when the time is 0.
    pub gbps: Option<f64>,
    /// Of `bytes`, those moved by ring all-reduces.
    pub ring_bytes: u64,
    /// Of `time_ns`, the time of ring all-reduces.
    pub ring_time_ns: u64,
    /// The median of the transfers' rates (`bytes / time` of each), ring all-reduces left out,
    /// GB/s within a factor of √2; `None` without such transfers.
    pub median_gbps: Option<f64>,
}

/// What one link, both directions between two ranks, carried.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LinkTraffic {
    /// "A-B", the lower rank first (the form of `--link-delay`).
    pub link: String,
    pub ranks: [u32; 2],
    /// "shm" between ranks of one node (unless the run used TCP throughout), "tcp" between
    /// nodes; `None` when a rank's node is unknown.
    pub transport: Option<String>,
    pub bytes: u64,
    pub transfers: u64,
    pub time_ns: u64,
    /// The faster direction's rate, GB/s (each direction's is a lower bound on the link's),
    /// ring transfers left out where the direction carried others; `None` when neither
    /// direction took time.
    pub gbps: Option<f64>,
    /// The faster direction's `median_gbps`; `None` when neither has one.
    pub median_gbps: Option<f64>,
    /// The mean size of the transfers behind `median_gbps`, both directions; `None` without
    /// any. Small messages move at a lower rate than large ones, so only links whose transfers
    /// are of like size compare.
    pub mean_transfer_bytes: Option<u64>,
    /// The transport's calibrated peak, GB/s; `None` without a calibration.
    pub peak_gbps: Option<f64>,
    /// `gbps` as a share of `peak_gbps`; `None` without both.
    pub peak_pct: Option<f64>,
}

/// The rank×rank traffic of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TrafficReport {
    /// The all-reduce algorithm the pairs' bytes were derived with.
    pub all_reduce: AllReduceAlgorithm,
    /// Every rank that sent or received, in order: the matrix's rows and columns.
    pub ranks: Vec<u32>,
    /// Ordered pairs that moved bytes, by (src, dst).
    pub pairs: Vec<PairTraffic>,
    /// Links that carried bytes, by ranks.
    pub links: Vec<LinkTraffic>,
}

/// The traffic of every collective and message on the timeline.
pub fn traffic_report(
    timeline: &Timeline,
    facts: &RunFacts,
    settings: CommSettings,
) -> TrafficReport {
    let collectives = Collectives::new(timeline);
    let messages = Messages::new(timeline);
    traffic_from(timeline, facts, settings, &collectives, &messages)
}

/// `traffic_report` over indexes already built.
pub(crate) fn traffic_from(
    timeline: &Timeline,
    facts: &RunFacts,
    settings: CommSettings,
    collectives: &Collectives,
    messages: &Messages,
) -> TrafficReport {
    let mut matrix = Matrix::new(sending_ranks(timeline));
    let mut direct = Direct::default();
    for members in collectives.each() {
        collective_flows(&timeline.spans, members, settings, &mut matrix, &mut direct);
    }
    direct.flush(&mut matrix);
    for &(recv, send) in messages.receives() {
        message_flow(&timeline.spans, recv, send, &mut matrix);
    }
    matrix.into_report(facts, settings)
}

/// Gives each link its transport's calibrated peak and the share of it the link reached.
/// `links` is the calibration's `links` array (`transport`, `peak_bandwidth_gbps`).
pub fn rate_links(report: &mut TrafficReport, links: &[serde_json::Value]) {
    let peak = |transport: &str| crate::collectives::link_peak_gbps(links, transport);
    for link in &mut report.links {
        link.peak_gbps = link.transport.as_deref().and_then(peak);
        link.peak_pct = link
            .gbps
            .zip(link.peak_gbps)
            .map(|(gbps, peak)| 100.0 * gbps / peak);
    }
}

/// Every rank with a communication span, and every rank a send or receive names, in order.
fn sending_ranks(timeline: &Timeline) -> Vec<Rank> {
    let mut ranks: Vec<Rank> = Vec::new();
    for s in &timeline.spans {
        let Some(c) = s.attrs.collective else {
            continue;
        };
        if ranks.last() != Some(&s.rank) {
            ranks.push(s.rank);
        }
        if let Some(peer) = c.peer
            && ranks.last() != Some(&peer)
        {
            ranks.push(peer);
        }
    }
    ranks.sort_unstable();
    ranks.dedup();
    ranks
}

#[derive(Clone, Copy, Debug, Default)]
struct Cell {
    bytes: u64,
    transfers: u64,
    time_ns: u64,
    ring_bytes: u64,
    ring_time_ns: u64,
    rates: Rates,
}

impl Cell {
    fn gbps(&self) -> Option<f64> {
        rate(self.bytes, self.time_ns)
    }

    /// The rate that tells about this direction's own link: without ring transfers, unless
    /// the direction carried nothing else.
    fn own_gbps(&self) -> Option<f64> {
        let bytes = self.bytes - self.ring_bytes;
        rate(bytes, self.time_ns - self.ring_time_ns).or_else(|| self.gbps())
    }
}

/// Bytes per nanosecond are GB/s; `None` for no time.
fn rate(bytes: u64, time_ns: u64) -> Option<f64> {
    (time_ns > 0).then(|| bytes as f64 / time_ns as f64)
}

/// Half-octave buckets of per-transfer rates: bucket `i` holds rates in
/// [2^((i − RATE_OFFSET) / 2), 2^((i − RATE_OFFSET + 1) / 2)) GB/s.
const RATE_BUCKETS: usize = 96;
/// Puts 1 GB/s at bucket 64: the buckets span 2^-32 to 2^16 GB/s (rates beyond go to the ends).
const RATE_OFFSET: f64 = 64.0;

/// A histogram of transfer rates.
#[derive(Clone, Copy, Debug)]
struct Rates {
    counts: [u32; RATE_BUCKETS],
    /// The counted transfers' bytes, summed.
    bytes: u64,
}

impl Default for Rates {
    fn default() -> Rates {
        Rates {
            counts: [0; RATE_BUCKETS],
            bytes: 0,
        }
    }
}

impl Rates {
    /// Counts one transfer; one of no bytes tells nothing of a rate.
    fn add(&mut self, bytes: u64, time_ns: u64) {
        if bytes == 0 {
            return;
        }
        let gbps = bytes as f64 / time_ns.max(1) as f64;
        let bucket = (2.0 * gbps.log2()).floor() + RATE_OFFSET;
        let bucket = bucket.clamp(0.0, (RATE_BUCKETS - 1) as f64) as usize;
        self.counts[bucket] = self.counts[bucket].saturating_add(1);
        self.bytes = self.bytes.saturating_add(bytes);
    }

    fn merge(&mut self, other: &Rates) {
        for (c, o) in self.counts.iter_mut().zip(other.counts) {
            *c = c.saturating_add(o);
        }
        self.bytes = self.bytes.saturating_add(other.bytes);
    }

    fn count(&self) -> u64 {
        self.counts.iter().map(|&c| u64::from(c)).sum()
    }

    /// The median bucket's geometric middle (the lower median for an even count).
    fn median_gbps(&self) -> Option<f64> {
        let total = self.count();
        let half = total.div_ceil(2);
        let mut seen = 0u64;
        let bucket = self.counts.iter().position(|&c| {
            seen += u64::from(c);
            total > 0 && seen >= half
        })?;
        Some(2f64.powf((bucket as f64 - RATE_OFFSET + 0.5) / 2.0))
    }
}

/// What one transfer (or a sum of like ones) adds to a cell.
#[derive(Clone, Copy, Debug)]
struct Flow {
    bytes: u64,
    time_ns: u64,
    transfers: u64,
    ring: bool,
}

/// The pairs' cells, row-major over `ranks`.
#[derive(Debug)]
struct Matrix {
    ranks: Vec<Rank>,
    cells: Vec<Cell>,
}

impl Matrix {
    fn new(ranks: Vec<Rank>) -> Matrix {
        let n = ranks.len();
        Matrix {
            ranks,
            cells: vec![Cell::default(); n * n],
        }
    }

    fn cell(&mut self, src: Rank, dst: Rank) -> Option<&mut Cell> {
        let row = self.ranks.binary_search(&src).ok()?;
        let col = self.ranks.binary_search(&dst).ok()?;
        self.cells.get_mut(row * self.ranks.len() + col)
    }

    /// Adds a flow from `src` to `dst`.
    fn add(&mut self, src: Rank, dst: Rank, flow: Flow) {
        if src == dst {
            return;
        }
        if let Some(cell) = self.cell(src, dst) {
            cell.bytes = cell.bytes.saturating_add(flow.bytes);
            cell.time_ns = cell.time_ns.saturating_add(flow.time_ns);
            cell.transfers += flow.transfers;
            if flow.ring {
                cell.ring_bytes = cell.ring_bytes.saturating_add(flow.bytes);
                cell.ring_time_ns = cell.ring_time_ns.saturating_add(flow.time_ns);
            }
        }
    }

    /// Adds one transfer, rate and all (never a ring's: see the module doc).
    fn add_one(&mut self, src: Rank, dst: Rank, bytes: u64, time_ns: u64) {
        self.add(src, dst, Flow::one(bytes, time_ns, false));
        if let (false, Some(cell)) = (src == dst, self.cell(src, dst)) {
            cell.rates.add(bytes, time_ns);
        }
    }

    fn merge_rates(&mut self, src: Rank, dst: Rank, rates: &Rates) {
        if let (false, Some(cell)) = (src == dst, self.cell(src, dst)) {
            cell.rates.merge(rates);
        }
    }

    fn into_report(self, facts: &RunFacts, settings: CommSettings) -> TrafficReport {
        let n = self.ranks.len();
        let at = |i: usize, j: usize| &self.cells[i * n + j];
        let mut pairs = Vec::new();
        let mut links = Vec::new();
        for i in 0..n {
            for j in 0..n {
                let c = at(i, j);
                if c.transfers > 0 {
                    pairs.push(PairTraffic {
                        src: self.ranks[i].0,
                        dst: self.ranks[j].0,
                        bytes: c.bytes,
                        transfers: c.transfers,
                        time_ns: c.time_ns,
                        gbps: c.gbps(),
                        ring_bytes: c.ring_bytes,
                        ring_time_ns: c.ring_time_ns,
                        median_gbps: c.rates.median_gbps(),
                    });
                }
                if j > i && at(i, j).transfers + at(j, i).transfers > 0 {
                    let ranks = [self.ranks[i], self.ranks[j]];
                    links.push(link(ranks, at(i, j), at(j, i), facts, settings));
                }
            }
        }
        TrafficReport {
            all_reduce: settings.all_reduce,
            ranks: self.ranks.iter().map(|r| r.0).collect(),
            pairs,
            links,
        }
    }
}

fn link(
    [a, b]: [Rank; 2],
    ab: &Cell,
    ba: &Cell,
    facts: &RunFacts,
    settings: CommSettings,
) -> LinkTraffic {
    let faster = |x: Option<f64>, y: Option<f64>| match (x, y) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    };
    LinkTraffic {
        link: format!("{}-{}", a.0, b.0),
        ranks: [a.0, b.0],
        transport: transport(facts, settings, a, b).map(str::to_string),
        bytes: ab.bytes.saturating_add(ba.bytes),
        transfers: ab.transfers + ba.transfers,
        time_ns: ab.time_ns.saturating_add(ba.time_ns),
        gbps: faster(ab.own_gbps(), ba.own_gbps()),
        median_gbps: faster(ab.rates.median_gbps(), ba.rates.median_gbps()),
        mean_transfer_bytes: {
            let mut both = ab.rates;
            both.merge(&ba.rates);
            both.bytes.checked_div(both.count())
        },
        peak_gbps: None,
        peak_pct: None,
    }
}

/// The transport between two ranks, named as `collectives::rate_against_links` names it.
fn transport(facts: &RunFacts, settings: CommSettings, a: Rank, b: Rank) -> Option<&'static str> {
    let node_a = facts.rank_nodes.get(&a)?;
    let node_b = facts.rank_nodes.get(&b)?;
    Some(if node_a == node_b && settings.shm {
        "shm"
    } else {
        "tcp"
    })
}

/// Collectives whose every member sends to every other, summed per member while their member
/// set stays the same: a pair's bytes are its sender's sum and its time its receiver's, so a
/// collective costs O(members), not O(members²).
#[derive(Debug, Default)]
struct Direct {
    ranks: Vec<Rank>,
    sent_bytes: Vec<u64>,
    received_ns: Vec<u64>,
    /// Per member, the rates it received at.
    rates: Vec<Rates>,
    count: u64,
}

impl Direct {
    /// Adds one collective: each member's bytes to each peer and its receive time.
    fn add(
        &mut self,
        spans: &[TimedSpan],
        members: &[Member],
        each_peer_bytes: impl Fn(&TimedSpan) -> u64,
        matrix: &mut Matrix,
    ) {
        let same = self.ranks.len() == members.len()
            && self.ranks.iter().zip(members).all(|(r, m)| *r == m.rank);
        if !same {
            self.flush(matrix);
            self.ranks.extend(members.iter().map(|m| m.rank));
            self.sent_bytes.resize(members.len(), 0);
            self.received_ns.resize(members.len(), 0);
            self.rates.resize(members.len(), Rates::default());
        }
        let last_arrival = last_arrival(spans, members);
        for (i, m) in members.iter().enumerate() {
            let s = &spans[m.index as usize];
            // What each peer sends this member, taken to be what it sends each peer.
            let bytes = each_peer_bytes(s);
            let time_ns = receive_ns(s, last_arrival);
            self.sent_bytes[i] = self.sent_bytes[i].saturating_add(bytes);
            self.received_ns[i] = self.received_ns[i].saturating_add(time_ns);
            self.rates[i].add(bytes, time_ns);
        }
        self.count += 1;
    }

    /// Moves the sums into the matrix and starts afresh.
    fn flush(&mut self, matrix: &mut Matrix) {
        for (i, &src) in self.ranks.iter().enumerate() {
            for (j, &dst) in self.ranks.iter().enumerate() {
                let flow = Flow {
                    bytes: self.sent_bytes[i],
                    time_ns: self.received_ns[j],
                    transfers: self.count,
                    ring: false,
                };
                matrix.add(src, dst, flow);
                matrix.merge_rates(src, dst, &self.rates[j]);
            }
        }
        self.ranks.clear();
        self.sent_bytes.clear();
        self.received_ns.clear();
        self.rates.clear();
        self.count = 0;
    }
}

/// The latest start among `members`' spans.
fn last_arrival(spans: &[TimedSpan], members: &[Member]) -> i64 {
    members
        .iter()
        .map(|m| spans[m.index as usize].start_ns)
        .max()
        .unwrap_or(i64::MIN)
}

/// The time a span spent after `arrival` (the last peer it depends on arriving), within it.
fn receive_ns(s: &TimedSpan, arrival: i64) -> u64 {
    let from = arrival.max(s.start_ns);
    u64::try_from(s.end_ns().saturating_sub(from))
        .unwrap_or(0)
        .min(s.duration_ns)
}

/// The span's duration less the waiting its transport measured.
fn unwaited_ns(s: &TimedSpan) -> u64 {
    let wait_ns = s.attrs.collective.and_then(|c| c.wait_ns).unwrap_or(0);
    s.duration_ns.saturating_sub(wait_ns)
}

fn message_bytes(s: &TimedSpan) -> u64 {
    s.attrs.collective.map_or(0, |c| c.message_bytes)
}

/// Adds one collective's flows to the matrix (or to `direct`, for all-to-all patterns).
fn collective_flows(
    spans: &[TimedSpan],
    members: &[Member],
    settings: CommSettings,
    matrix: &mut Matrix,
    direct: &mut Direct,
) {
    let (Some(first), true) = (members.first(), members.len() >= 2) else {
        return;
    };
    let Some(c) = spans[first.index as usize].attrs.collective else {
        return;
    };
    let n = u64::from(c.participants).max(members.len() as u64);
    match c.kind {
        CollectiveKind::AllReduce if settings.all_reduce.is_ring(c.message_bytes, n) => {
            ring_flows(spans, members, n, matrix)
        }
        CollectiveKind::AllReduce => direct.add(spans, members, message_bytes, matrix),
        CollectiveKind::AllGather | CollectiveKind::ReduceScatter | CollectiveKind::AllToAll => {
            direct.add(spans, members, |s| message_bytes(s) / n, matrix)
        }
        CollectiveKind::Broadcast => broadcast_flows(spans, members, matrix),
        CollectiveKind::Send | CollectiveKind::Recv => {}
    }
}

/// A ring all-reduce: each member sends 2·(n−1)/n of its buffer to the next.
fn ring_flows(spans: &[TimedSpan], members: &[Member], n: u64, matrix: &mut Matrix) {
    let last_arrival = last_arrival(spans, members);
    for (i, m) in members.iter().enumerate() {
        let next = members[(i + 1) % members.len()];
        let sent = &spans[m.index as usize];
        let bytes = 2 * (n - 1) * message_bytes(sent) / n;
        let time_ns = receive_ns(&spans[next.index as usize], last_arrival);
        matrix.add(m.rank, next.rank, Flow::one(bytes, time_ns, true));
    }
}

/// A broadcast from the first member: each other member's time runs from when both it and the
/// root had arrived.
fn broadcast_flows(spans: &[TimedSpan], members: &[Member], matrix: &mut Matrix) {
    let root = members[0];
    let root_span = &spans[root.index as usize];
    for m in &members[1..] {
        let s = &spans[m.index as usize];
        let time_ns = receive_ns(s, root_span.start_ns);
        matrix.add_one(root.rank, m.rank, message_bytes(root_span), time_ns);
    }
}

/// One received message, timed from when both its sender and its receiver had arrived.
fn message_flow(spans: &[TimedSpan], recv: u32, send: Option<u32>, matrix: &mut Matrix) {
    let r = &spans[recv as usize];
    let Some(src) = r.attrs.collective.and_then(|c| c.peer) else {
        return;
    };
    let time_ns = match send {
        Some(send) => receive_ns(r, spans[send as usize].start_ns),
        None => unwaited_ns(r),
    };
    matrix.add_one(src, r.rank, message_bytes(r), time_ns);
}

impl Flow {
    fn one(bytes: u64, time_ns: u64, ring: bool) -> Flow {
        Flow {
            bytes,
            time_ns,
            transfers: 1,
            ring,
        }
    }
}

impl TrafficReport {
    /// The traffic from `src` to `dst`, if they exchanged any.
    pub fn pair(&self, src: u32, dst: u32) -> Option<&PairTraffic> {
        self.pairs.iter().find(|p| (p.src, p.dst) == (src, dst))
    }

    /// The link named "A-B", lower rank first.
    pub fn link(&self, name: &str) -> Option<&LinkTraffic> {
        self.links.iter().find(|l| l.link == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{collective, p2p, timeline};
    use pinch_traces::NodeId;

    /// Rank `rank`'s span of a collective of `kind` among `participants`.
    fn member(
        rank: u32,
        seq: u64,
        start_ns: i64,
        end_ns: i64,
        bytes: u64,
        kind: CollectiveKind,
        participants: u32,
    ) -> TimedSpan {
        let mut s = collective(rank, seq, start_ns, (end_ns - start_ns) as u64, bytes);
        if let Some(c) = s.attrs.collective.as_mut() {
            (c.kind, c.participants) = (kind, participants);
        }
        s
    }

    /// Twenty one-shot all-reduces of 1 KiB over three ranks that all arrive together; ranks 0
    /// and 1 take `slow_ns` to get their data, rank 2 takes 200 ns.
    fn three_ranks(slow_ns: i64) -> Timeline {
        let mut spans = Vec::new();
        for seq in 0..20 {
            let t0 = seq as i64 * 10_000;
            for (rank, took) in [(0, slow_ns), (1, slow_ns), (2, 200)] {
                spans.push(member(
                    rank,
                    seq,
                    t0,
                    t0 + took,
                    1_024,
                    CollectiveKind::AllReduce,
                    3,
                ));
            }
        }
        timeline(spans)
    }

    fn report(t: &Timeline) -> TrafficReport {
        traffic_report(t, &RunFacts::from_timeline(t), CommSettings::default())
    }

    #[test]
    fn a_one_shot_all_reduce_sends_every_buffer_to_every_peer_and_a_slow_link_stands_out() {
        let r = report(&three_ranks(2_000));
        assert_eq!(r.ranks, vec![0, 1, 2]);
        assert_eq!(r.pairs.len(), 6);
        let into_0 = r.pair(1, 0).unwrap();
        assert_eq!(
            (into_0.bytes, into_0.transfers, into_0.time_ns),
            (20_480, 20, 40_000)
        );
        assert_eq!(into_0.gbps, Some(0.512));
        assert_eq!(r.pair(0, 2).unwrap().gbps, Some(5.12));
        let within_root2 = |got: Option<f64>, want: f64| {
            got.is_some_and(|g| g / want < 2f64.sqrt() && want / g < 2f64.sqrt())
        };
        assert!(within_root2(into_0.median_gbps, 0.512), "{into_0:?}");
        // Rank 2 receives fast from both, so only the link between 0 and 1 is slow both ways.
        let rates: Vec<(&str, Option<f64>)> =
            r.links.iter().map(|l| (l.link.as_str(), l.gbps)).collect();
        assert_eq!(
            rates,
            vec![
                ("0-1", Some(0.512)),
                ("0-2", Some(5.12)),
                ("1-2", Some(5.12))
            ]
        );
        let link = r.link("0-1").unwrap();
        assert_eq!(
            (link.bytes, link.transfers, link.time_ns),
            (40_960, 40, 80_000)
        );
        assert_eq!(link.transport.as_deref(), Some("shm"));
        assert_eq!(link.mean_transfer_bytes, Some(1_024));
        assert!(within_root2(r.link("1-2").unwrap().median_gbps, 5.12));
    }

    #[test]
    fn a_ring_all_reduce_sends_to_the_next_member_only() {
        let spans = (0..3)
            .map(|rank| member(rank, 0, 0, 1_000_000, 1 << 20, CollectiveKind::AllReduce, 3))
            .collect();
        let r = report(&timeline(spans));
        let pairs: Vec<(u32, u32, u64)> = r.pairs.iter().map(|p| (p.src, p.dst, p.bytes)).collect();
        let each = 2 * 2 * (1 << 20) / 3;
        assert_eq!(pairs, vec![(0, 1, each), (1, 2, each), (2, 0, each)]);
        assert!(
            r.pairs
                .iter()
                .all(|p| p.ring_bytes == p.bytes && p.median_gbps.is_none())
        );
        // With nothing but ring transfers, a link's rate is theirs.
        assert_eq!(r.link("0-1").unwrap().gbps, Some(each as f64 / 1e6));
        let forced = traffic_report(
            &timeline(
                (0..3)
                    .map(|rank| member(rank, 0, 0, 1_000, 1 << 20, CollectiveKind::AllReduce, 3))
                    .collect(),
            ),
            &RunFacts::default(),
            CommSettings {
                all_reduce: AllReduceAlgorithm::OneShot,
                shm: true,
            },
        );
        assert_eq!(forced.pairs.len(), 6, "one-shot when the run said so");
    }

    #[test]
    fn waiting_for_a_late_peer_is_not_transfer_time() {
        let r = report(&timeline(vec![
            member(0, 0, 0, 700, 64, CollectiveKind::AllReduce, 2),
            member(1, 0, 500, 700, 64, CollectiveKind::AllReduce, 2),
        ]));
        assert_eq!(
            (r.pair(0, 1).unwrap().time_ns, r.pair(1, 0).unwrap().time_ns),
            (200, 200)
        );
    }

    #[test]
    fn gathers_share_their_buffer_and_a_broadcast_leaves_its_root() {
        let mut spans: Vec<TimedSpan> = (0..3)
            .map(|rank| member(rank, 0, 0, 100, 300, CollectiveKind::AllGather, 3))
            .collect();
        spans
            .extend((0..3).map(|rank| member(rank, 1, 200, 300, 50, CollectiveKind::Broadcast, 3)));
        let r = report(&timeline(spans));
        let sent = |src, dst| r.pair(src, dst).map(|p| (p.bytes, p.transfers));
        assert_eq!(sent(2, 1), Some((100, 1)), "a third of the gathered buffer");
        assert_eq!(
            sent(0, 1),
            Some((150, 2)),
            "the gather's share and the broadcast"
        );
        assert_eq!(sent(1, 2), Some((100, 1)), "no broadcast from a non-root");
    }

    #[test]
    fn a_message_counts_from_when_both_sides_arrived() {
        let mut unmatched = p2p(1, CollectiveKind::Recv, 2, 1_000, 300, 400);
        if let Some(c) = unmatched.attrs.collective.as_mut() {
            c.wait_ns = Some(100);
        }
        let r = report(&timeline(vec![
            p2p(0, CollectiveKind::Send, 1, 100, 10, 600),
            p2p(1, CollectiveKind::Recv, 0, 0, 300, 600),
            unmatched,
        ]));
        let got = |src, dst| r.pair(src, dst).map(|p| (p.bytes, p.time_ns, p.gbps));
        assert_eq!(got(0, 1), Some((600, 200, Some(3.0))));
        assert_eq!(
            got(2, 1),
            Some((400, 200, Some(2.0))),
            "the duration less its wait"
        );
        assert_eq!(
            r.ranks,
            vec![0, 1, 2],
            "a peer without spans is still a rank"
        );
    }

    #[test]
    fn links_are_named_by_transport_and_rated_against_the_calibration() {
        let t = three_ranks(200);
        let mut facts = RunFacts::from_timeline(&t);
        facts.rank_nodes.insert(Rank(2), NodeId(1));
        let mut r = traffic_report(&t, &facts, CommSettings::default());
        let transports: Vec<Option<&str>> =
            r.links.iter().map(|l| l.transport.as_deref()).collect();
        assert_eq!(transports, vec![Some("shm"), Some("tcp"), Some("tcp")]);
        let links = vec![serde_json::json!({"transport": "tcp", "peak_bandwidth_gbps": 10.24})];
        rate_links(&mut r, &links);
        let tcp = r.link("0-2").unwrap();
        assert_eq!((tcp.peak_gbps, tcp.peak_pct), (Some(10.24), Some(50.0)));
        assert_eq!(r.link("0-1").unwrap().peak_gbps, None, "no shm figure");
        let no_shm = CommSettings::from_parameters(&BTreeMap::from([
            ("all_reduce".to_string(), serde_json::json!("one_shot")),
            ("shm".to_string(), serde_json::json!(false)),
        ]));
        assert_eq!(
            no_shm,
            CommSettings {
                all_reduce: AllReduceAlgorithm::OneShot,
                shm: false
            }
        );
        let r = traffic_report(&t, &RunFacts::from_timeline(&t), no_shm);
        assert_eq!(r.link("0-1").unwrap().transport.as_deref(), Some("tcp"));
        assert_eq!(
            CommSettings::from_parameters(&BTreeMap::new()),
            CommSettings::default()
        );
    }
}
