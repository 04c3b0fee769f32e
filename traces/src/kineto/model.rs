//! The data model of one Kineto (PyTorch profiler) trace: device events per (device, stream),
//! host events (CPU ops and runtime calls), flows, and the names they share.
//!
//! Times are nanoseconds on the trace's own clock (Kineto writes microseconds, with a fraction
//! of nanoseconds in newer traces); nothing is shifted or rounded here, so an analysis that
//! wants HTA's whole microseconds rounds for itself.

use crate::ids::Rank;
use rustc_hash::FxHashMap;

/// A name interned in one trace's `Names`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NameId(pub u32);

/// The strings of one trace, each stored once: kernel names repeat thousands of times.
#[derive(Clone, Debug, Default)]
pub struct Names {
    strings: Vec<String>,
    index: FxHashMap<String, NameId>,
}

impl Names {
    /// The id of `name`, adding it on first sight.
    pub fn intern(&mut self, name: &str) -> NameId {
        if let Some(id) = self.index.get(name) {
            return *id;
        }
        let id = NameId(self.strings.len() as u32);
        self.strings.push(name.to_owned());
        self.index.insert(name.to_owned(), id);
        id
    }

    /// The string behind an id of this table ("" for an id from another table).
    pub fn get(&self, id: NameId) -> &str {
        self.strings.get(id.0 as usize).map_or("", String::as_str)
    }

    /// The id of `name` if the trace holds it.
    pub fn lookup(&self, name: &str) -> Option<NameId> {
        self.index.get(name).copied()
    }

    /// The strings in id order (the first is `NameId(0)`).
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.strings.iter().map(String::as_str)
    }

    pub fn len(&self) -> usize {
        self.strings.len()
    }

    pub fn is_empty(&self) -> bool {
        self.strings.is_empty()
    }
}

/// What a device event did, from its Kineto category.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceEventKind {
    /// A kernel (`kernel`, `Kernel`), or an accelerator's work item (`mtia_ccp_events`).
    Kernel,
    /// A copy (`gpu_memcpy`, `Memcpy`).
    Memcpy,
    /// A fill (`gpu_memset`, `Memset`).
    Memset,
    /// A synchronization the device reported (`cuda_sync`: stream, event or context sync).
    Sync,
    /// Any other category that carries a stream.
    Other,
}

/// One event that ran on a device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceEvent {
    pub name: NameId,
    pub kind: DeviceEventKind,
    pub start_ns: i64,
    pub duration_ns: u64,
    /// Links the event to the runtime call that launched it (`args.correlation`).
    pub correlation: Option<u64>,
    /// The collective a communication kernel ran (`args["Collective name"]`, newer traces).
    pub collective: Option<NameId>,
    /// Its sizes and process group, in `KinetoTrace::comm_args`, when the args give any.
    pub comm: Option<CommArgsId>,
}

impl DeviceEvent {
    pub fn end_ns(&self) -> i64 {
        self.start_ns.saturating_add_unsigned(self.duration_ns)
    }
}

/// An entry of `KinetoTrace::comm_args`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CommArgsId(pub u32);

/// An entry of `KinetoTrace::groups`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupId(pub u32);

/// What a communication kernel's args say of its collective (PyTorch 2.x writes them on NCCL
/// kernels). Kept beside the events, so that the many events without them cost one `Option`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CommArgs {
    /// `In msg nelems`: elements in the input buffer.
    pub in_msg_nelems: Option<u64>,
    /// `Out msg nelems`: elements in the output buffer.
    pub out_msg_nelems: Option<u64>,
    /// `Group size`: ranks in the process group.
    pub group_size: Option<u32>,
    /// The size of one element of `dtype` (`Float` is 4); `None` for a type pinch does not know.
    pub element_bytes: Option<u32>,
    /// `Process Group Name`.
    pub group: Option<GroupId>,
}

/// A process group as a trace names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessGroup {
    /// `Process Group Name`: the same on every rank of the group (`"0"` is the default group).
    pub name: String,
    /// `Process Group Description` (`default_pg`), when given.
    pub description: Option<String>,
    /// `Process Group Ranks` (`"[0, 1]"`) as global ranks, when given and readable.
    pub ranks: Option<Vec<u32>>,
}

/// The bytes of one element of a PyTorch dtype, by the name Kineto writes (`Float`, `BFloat16`).
pub fn dtype_bytes(dtype: &str) -> Option<u32> {
    let bytes = match dtype {
        "Bool" | "Byte" | "Char" | "Float8_e4m3fn" | "Float8_e5m2" | "Float8_e4m3fnuz"
        | "Float8_e5m2fnuz" | "QInt8" | "QUInt8" => 1,
        "Short" | "Half" | "BFloat16" | "UInt16" => 2,
        "Int" | "Float" | "UInt32" | "ComplexHalf" | "QInt32" => 4,
        "Long" | "Double" | "UInt64" | "ComplexFloat" => 8,
        "ComplexDouble" => 16,
        _ => return None,
    };
    Some(bytes)
}

/// The events of one stream of one device, sorted by start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceStream {
    /// `args.device`, when the trace says.
    pub device: Option<u32>,
    /// `args.stream`; `None` for device-wide events that name no stream (event and context
    /// synchronizations).
    pub stream: Option<u32>,
    pub events: Vec<DeviceEvent>,
}

/// What a host event is, from its Kineto category.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HostEventKind {
    /// An operator (`cpu_op`, `Operator`).
    CpuOp,
    /// A user or profiler annotation (`user_annotation`, e.g. `ProfilerStep#3`).
    UserAnnotation,
    /// An annotation drawn on the device's row that names no stream (`gpu_user_annotation`).
    DeviceAnnotation,
    /// A Python frame (`python_function`).
    PythonFunction,
    /// A runtime or driver call (`cuda_runtime`, `Runtime`, `cuda_driver`, `mtia_runtime`, ...).
    Runtime,
    /// Any other category.
    Other,
}

/// One event on a host thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HostEvent {
    pub name: NameId,
    pub kind: HostEventKind,
    pub start_ns: i64,
    pub duration_ns: u64,
    /// Process and thread, when the trace gives them as numbers.
    pub pid: Option<i64>,
    pub tid: Option<i64>,
    /// For runtime calls: the id its launched device events carry too.
    pub correlation: Option<u64>,
    /// `args["External id"]`: ties runtime calls to the operator that made them.
    pub external_id: Option<u64>,
}

impl HostEvent {
    pub fn end_ns(&self) -> i64 {
        self.start_ns.saturating_add_unsigned(self.duration_ns)
    }
}

/// What a flow arrow links.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowKind {
    /// A runtime launch to its device event (`ac2g`, older `async_gpu`).
    Launch,
    /// A forward op to its backward op (`fwdbwd`).
    ForwardBackward,
    Other,
}

/// Which end of a flow arrow an event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FlowPhase {
    Start,
    Step,
    End,
}

/// One end (or step) of a flow arrow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub id: u64,
    pub kind: FlowKind,
    pub phase: FlowPhase,
    pub time_ns: i64,
    pub pid: Option<i64>,
    pub tid: Option<i64>,
}

/// Events the reader did not keep, by reason (HTA drops the same ones).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Skipped {
    /// Complete events with no `dur`, or no `ts`.
    pub no_time: u64,
    /// Complete events with no `cat`.
    pub no_category: u64,
    /// The profiler's own span (`cat: "Trace"`).
    pub profiler_spans: u64,
    /// Metadata, instant and counter events.
    pub other_phases: u64,
}

/// One rank's trace as read from one file.
#[derive(Clone, Debug, Default)]
pub struct KinetoTrace {
    /// `distributedInfo.rank`, when the trace carries it.
    pub rank: Option<Rank>,
    /// `distributedInfo.world_size`, when the trace carries it.
    pub world_size: Option<u32>,
    /// `distributedInfo.backend` (nccl, gloo, ...).
    pub backend: Option<String>,
    pub names: Names,
    /// Device events per (device, stream), streams in the order they first appear in the file.
    pub streams: Vec<DeviceStream>,
    /// Operators, annotations and other host events, sorted by start.
    pub cpu_ops: Vec<HostEvent>,
    /// Runtime and driver calls, sorted by start.
    pub runtime: Vec<HostEvent>,
    pub flows: Vec<Flow>,
    /// The collective args of communication kernels (`DeviceEvent::comm`).
    pub comm_args: Vec<CommArgs>,
    /// The process groups those args name, each once.
    pub groups: Vec<ProcessGroup>,
    pub skipped: Skipped,
}

impl KinetoTrace {
    /// Every device event on every stream.
    pub fn device_events(&self) -> impl Iterator<Item = (&DeviceStream, &DeviceEvent)> {
        self.streams
            .iter()
            .flat_map(|s| s.events.iter().map(move |e| (s, e)))
    }

    pub fn device_event_count(&self) -> usize {
        self.streams.iter().map(|s| s.events.len()).sum()
    }

    /// Every event kept: device and host events and flow ends.
    pub fn event_count(&self) -> usize {
        self.device_event_count() + self.cpu_ops.len() + self.runtime.len() + self.flows.len()
    }

    /// The collective args of a device event, when it has them.
    pub fn comm_args(&self, event: &DeviceEvent) -> Option<&CommArgs> {
        self.comm_args.get(event.comm?.0 as usize)
    }

    /// A process group of this trace.
    pub fn group(&self, id: GroupId) -> Option<&ProcessGroup> {
        self.groups.get(id.0 as usize)
    }

    /// Host events of both kinds: operators and annotations, then runtime calls.
    pub fn host_events(&self) -> impl Iterator<Item = &HostEvent> {
        self.cpu_ops.iter().chain(&self.runtime)
    }
}
