//! The measurement loop of `pinch bench collectives`: one rank's side of a sweep of operations
//! over message sizes, reported the way nccl-tests does.
//!
//! For each operation and size every member runs a few warmup iterations, then timed ones, each
//! after an untimed barrier so that all members start together. Afterwards the members
//! all-gather their per-iteration `Outcome`s, so every member can compute the row: an
//! iteration's time is the slowest member's, `time_us` the median over iterations, `algbw` the
//! size over that time and `busbw` algbw times nccl-tests' bus factor
//! (`CollectiveKind::bus_factor`). `wait_fraction` is the share of all members' time spent
//! waiting for peers to arrive (see the `comm` module doc).
//!
//! `bytes` is nccl-tests' "size": the all-reduce or broadcast buffer, all-gather's output,
//! reduce-scatter's input, all-to-all's whole send buffer, the send/recv message. Sizes are
//! rounded up to whole f32 elements and, where the operation splits its buffer among members,
//! to a multiple of the group size. Send/recv pairs member 2k (sender) with 2k+1 (receiver); an
//! odd member out only joins the barriers.

use super::{AllReduceAlgo, CommError, Group, Mesh, Outcome};
use pinch_traces::CollectiveKind;
use serde::Serialize;

/// Timed iterations move about this many bytes per size, within `MIN/MAX_TIMED_ITERS`: the
/// default sweep (6 ops, 8 B to 256 MiB, 2 ranks) takes about half a minute on 2 cores.
const TIMED_BYTES: u64 = 512 << 20;
const MIN_TIMED_ITERS: u64 = 3;
const MAX_TIMED_ITERS: u64 = 100;
/// Sizes from here on get a single warmup iteration instead of `WARMUP_ITERS`.
const BIG_BYTES: u64 = 16 << 20;
const WARMUP_ITERS: u64 = 5;

/// One line of the sweep's report.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct BenchRow {
    /// `Send` stands for the send/recv pair.
    pub kind: CollectiveKind,
    pub bytes: u64,
    /// The median over timed iterations of the slowest member's time.
    pub time_us: f64,
    pub algbw_gbps: f64,
    pub busbw_gbps: f64,
    /// Of all members' time in the operation, the share spent waiting for peers to arrive.
    pub wait_fraction: f64,
}

/// The operations a sweep can measure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BenchOp {
    AllReduce,
    AllGather,
    ReduceScatter,
    AllToAll,
    Broadcast,
    SendRecv,
}

impl BenchOp {
    pub const ALL: [BenchOp; 6] = [
        BenchOp::AllReduce,
        BenchOp::AllGather,
        BenchOp::ReduceScatter,
        BenchOp::AllToAll,
        BenchOp::Broadcast,
        BenchOp::SendRecv,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BenchOp::AllReduce => "all_reduce",
            BenchOp::AllGather => "all_gather",
            BenchOp::ReduceScatter => "reduce_scatter",
            BenchOp::AllToAll => "all_to_all",
            BenchOp::Broadcast => "broadcast",
            BenchOp::SendRecv => "send_recv",
        }
    }

    /// The operation called `name`, as `--ops` spells it.
    pub fn from_name(name: &str) -> Option<BenchOp> {
        BenchOp::ALL.into_iter().find(|op| op.name() == name)
    }

    /// The kind its rows carry (`Send` for the send/recv pair).
    pub fn kind(self) -> CollectiveKind {
        match self {
            BenchOp::AllReduce => CollectiveKind::AllReduce,
            BenchOp::AllGather => CollectiveKind::AllGather,
            BenchOp::ReduceScatter => CollectiveKind::ReduceScatter,
            BenchOp::AllToAll => CollectiveKind::AllToAll,
            BenchOp::Broadcast => CollectiveKind::Broadcast,
            BenchOp::SendRecv => CollectiveKind::Send,
        }
    }

    /// `bytes` rounded up to what the operation can move in a group of `size`.
    fn round_bytes(self, bytes: u64, size: u64) -> u64 {
        let elements = bytes.div_ceil(4);
        match self {
            BenchOp::AllReduce => 4 * elements,
            BenchOp::AllGather | BenchOp::ReduceScatter | BenchOp::AllToAll => {
                4 * elements.div_ceil(size) * size
            }
            BenchOp::Broadcast | BenchOp::SendRecv => bytes,
        }
    }
}

/// What a sweep measures; every member of the group must be given the same.
#[derive(Clone, Debug, PartialEq)]
pub struct Sweep {
    pub ops: Vec<BenchOp>,
    /// Sizes double from `min_bytes` (at least 1) up to `max_bytes`.
    pub min_bytes: u64,
    pub max_bytes: u64,
    pub algo: AllReduceAlgo,
}

impl Sweep {
    /// The requested sizes, doubling.
    pub fn sizes(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::successors(Some(self.min_bytes.max(1)), |b| b.checked_mul(2))
            .take_while(|&b| b <= self.max_bytes)
    }
}

/// Warmup and timed iterations for a size.
fn iterations(bytes: u64) -> (u64, u64) {
    let warmup = if bytes >= BIG_BYTES { 1 } else { WARMUP_ITERS };
    let timed = (TIMED_BYTES / bytes.max(1)).clamp(MIN_TIMED_ITERS, MAX_TIMED_ITERS);
    (warmup, timed)
}

/// Runs this rank's side of `sweep` over group `g`; `on_row` sees each row as it is done.
/// Every member gets the same rows.
pub fn run_sweep(
    mesh: &mut Mesh,
    g: &mut Group,
    sweep: &Sweep,
    mut on_row: impl FnMut(&BenchRow),
) -> Result<Vec<BenchRow>, CommError> {
    let mut rows = Vec::new();
    let mut buffers = Buffers::default();
    for &op in &sweep.ops {
        let mut last = None;
        for requested in sweep.sizes() {
            let bytes = op.round_bytes(requested, g.size() as u64);
            if last == Some(bytes) {
                continue;
            }
            last = Some(bytes);
            let row = measure(mesh, g, &mut buffers, op, bytes, sweep.algo)?;
            on_row(&row);
            rows.push(row);
        }
    }
    Ok(rows)
}

/// The buffers of one operation at one size, reused across sizes.
#[derive(Debug, Default)]
struct Buffers {
    send: Vec<f32>,
    recv: Vec<f32>,
    counts: Vec<usize>,
    recv_counts: Vec<usize>,
    bytes: Vec<u8>,
    barrier: Vec<f32>,
}

impl Buffers {
    /// Sizes the buffers for `op` moving `bytes` in a group of `size`.
    fn prepare(&mut self, op: BenchOp, bytes: u64, size: usize) {
        let elements = (bytes / 4) as usize;
        let (send, recv) = match op {
            BenchOp::AllReduce => (elements, 0),
            BenchOp::AllGather => (elements / size, elements),
            BenchOp::ReduceScatter => (elements, elements / size),
            BenchOp::AllToAll => (elements, 0),
            BenchOp::Broadcast | BenchOp::SendRecv => (0, 0),
        };
        // Fresh ones each size, so sums stay finite across a long sweep.
        self.send.clear();
        self.send.resize(send, 1.0);
        self.recv.resize(recv, 0.0);
        self.counts.clear();
        self.counts.resize(size, elements / size);
        self.bytes.resize(bytes as usize, 1);
    }
}

/// Runs warmup and timed iterations of `op` at `bytes` and turns them into a row.
fn measure(
    mesh: &mut Mesh,
    g: &mut Group,
    buffers: &mut Buffers,
    op: BenchOp,
    bytes: u64,
    algo: AllReduceAlgo,
) -> Result<BenchRow, CommError> {
    buffers.prepare(op, bytes, g.size());
    let (warmup, timed) = iterations(bytes);
    let mut outcomes = Vec::with_capacity(timed as usize);
    for i in 0..warmup + timed {
        barrier(mesh, g, &mut buffers.barrier)?;
        let outcome = run_once(mesh, g, buffers, op, algo)?;
        if i >= warmup {
            outcomes.push(outcome);
        }
    }
    let everyone = gather_outcomes(mesh, g, &outcomes)?;
    Ok(row(op, bytes, g.size(), &everyone, outcomes.len()))
}

/// Lines the members up: a one-element all-reduce, which no member leaves before all entered.
fn barrier(mesh: &mut Mesh, g: &mut Group, scratch: &mut Vec<f32>) -> Result<(), CommError> {
    scratch.clear();
    scratch.push(0.0);
    mesh.all_reduce_sum(g, scratch, AllReduceAlgo::OneShot)
        .map(|_| ())
}

/// One iteration of `op`; a member that takes no part reports an empty `Outcome`.
fn run_once(
    mesh: &mut Mesh,
    g: &mut Group,
    b: &mut Buffers,
    op: BenchOp,
    algo: AllReduceAlgo,
) -> Result<Outcome, CommError> {
    match op {
        BenchOp::AllReduce => mesh.all_reduce_sum(g, &mut b.send, algo),
        BenchOp::AllGather => mesh.all_gather(g, &b.send, &mut b.recv),
        BenchOp::ReduceScatter => mesh.reduce_scatter_sum(g, &b.send, &mut b.recv),
        BenchOp::AllToAll => {
            mesh.all_to_all_v(g, &b.send, &b.counts, &mut b.recv, &mut b.recv_counts)
        }
        BenchOp::Broadcast => mesh.broadcast(g, 0, &mut b.bytes),
        BenchOp::SendRecv => send_recv(mesh, g, &mut b.bytes),
    }
}

/// Member 2k sends to member 2k+1; an odd member out does nothing.
fn send_recv(mesh: &mut Mesh, g: &mut Group, bytes: &mut Vec<u8>) -> Result<Outcome, CommError> {
    let me = g.index();
    if me.is_multiple_of(2) && me + 1 < g.size() {
        mesh.send(g, me + 1, bytes)
    } else if me % 2 == 1 {
        mesh.recv(g, me - 1, bytes)
    } else {
        Ok(Outcome::default())
    }
}

/// Every member's outcomes, as `[member][total_us.., wait_us..]` flattened in group order.
/// Microseconds in f32 keep sub-microsecond precision up to seconds.
fn gather_outcomes(
    mesh: &mut Mesh,
    g: &mut Group,
    outcomes: &[Outcome],
) -> Result<Vec<f32>, CommError> {
    let us = |ns: u64| (ns as f64 / 1e3) as f32;
    let mine: Vec<f32> = outcomes
        .iter()
        .map(|o| us(o.total_ns))
        .chain(outcomes.iter().map(|o| us(o.wait_ns)))
        .collect();
    let mut everyone = vec![0.0; mine.len() * g.size()];
    mesh.all_gather(g, &mine, &mut everyone)?;
    Ok(everyone)
}

/// The row of `op` at `bytes` from every member's outcomes of `iters` timed iterations.
fn row(op: BenchOp, bytes: u64, size: usize, everyone: &[f32], iters: usize) -> BenchRow {
    let members: Vec<&[f32]> = everyone.chunks(2 * iters.max(1)).collect();
    let mut slowest: Vec<f64> = (0..iters)
        .map(|i| members.iter().map(|m| f64::from(m[i])).fold(0.0, f64::max))
        .collect();
    slowest.sort_by(f64::total_cmp);
    // To the nanosecond: the f32 the times travelled in carries no finer digits.
    let time_us = (slowest.get(iters / 2).copied().unwrap_or(0.0) * 1e3).round() / 1e3;
    let total: f64 = members
        .iter()
        .flat_map(|m| &m[..iters])
        .map(|&x| f64::from(x))
        .sum();
    let waited: f64 = members
        .iter()
        .flat_map(|m| &m[iters..])
        .map(|&x| f64::from(x))
        .sum();
    let algbw_gbps = if time_us > 0.0 {
        bytes as f64 / (time_us * 1e3)
    } else {
        0.0
    };
    BenchRow {
        kind: op.kind(),
        bytes,
        time_us,
        algbw_gbps,
        busbw_gbps: algbw_gbps * op.kind().bus_factor(size as u32),
        wait_fraction: if total > 0.0 { waited / total } else { 0.0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::comm::MeshOptions;

    #[test]
    fn sizes_double_from_min_to_max() {
        let sweep = Sweep {
            ops: vec![BenchOp::AllReduce],
            min_bytes: 8,
            max_bytes: 100,
            algo: AllReduceAlgo::Auto,
        };
        assert_eq!(sweep.sizes().collect::<Vec<_>>(), vec![8, 16, 32, 64]);
        assert_eq!(BenchOp::AllGather.round_bytes(8, 3), 12);
        assert_eq!(BenchOp::AllReduce.round_bytes(9, 3), 12);
        assert_eq!(BenchOp::SendRecv.round_bytes(9, 3), 9);
        assert_eq!(BenchOp::from_name("all_to_all"), Some(BenchOp::AllToAll));
        assert_eq!(BenchOp::from_name("alltoall"), None);
    }

    #[test]
    fn a_row_takes_the_median_of_the_slowest_member() {
        // Two members, three iterations: totals then waits for each.
        let everyone = [
            10.0, 30.0, 20.0, 1.0, 1.0, 1.0, 40.0, 5.0, 5.0, 3.0, 1.0, 1.0,
        ];
        let row = row(BenchOp::AllReduce, 4000, 2, &everyone, 3);
        assert_eq!(row.time_us, 30.0, "slowest per iteration: 40, 30, 20");
        assert_eq!(row.algbw_gbps, 4000.0 / 30_000.0);
        assert_eq!(
            row.busbw_gbps, row.algbw_gbps,
            "all-reduce of two: factor 1"
        );
        assert_eq!(row.wait_fraction, 8.0 / 110.0);
    }

    #[test]
    fn every_member_gets_the_same_rows_for_every_op() {
        let sweep = Sweep {
            ops: BenchOp::ALL.to_vec(),
            min_bytes: 8,
            max_bytes: 1 << 12,
            algo: AllReduceAlgo::Auto,
        };
        let meshes = Mesh::loopback(&[0, 0, 1], &MeshOptions::default()).unwrap();
        let rows: Vec<Vec<BenchRow>> = std::thread::scope(|scope| {
            let ranks: Vec<_> = meshes
                .into_iter()
                .map(|mut mesh| {
                    let sweep = &sweep;
                    scope.spawn(move || {
                        let mut g = Group::new(0, vec![0, 1, 2], mesh.rank()).unwrap();
                        run_sweep(&mut mesh, &mut g, sweep, |_| {}).unwrap()
                    })
                })
                .collect();
            ranks.into_iter().map(|r| r.join().unwrap()).collect()
        });
        assert_eq!(rows[0], rows[1]);
        assert_eq!(rows[0], rows[2]);
        let all_gathers: Vec<u64> = rows[0]
            .iter()
            .filter(|r| r.kind == CollectiveKind::AllGather)
            .map(|r| r.bytes)
            .collect();
        assert_eq!(
            all_gathers,
            vec![12, 24, 36, 72, 132, 264, 516, 1032, 2052, 4104]
        );
        assert!(
            rows[0]
                .iter()
                .all(|r| r.time_us > 0.0 && r.algbw_gbps > 0.0)
        );
        assert!(
            rows[0]
                .iter()
                .all(|r| (0.0..=1.0).contains(&r.wait_fraction))
        );
    }
}
