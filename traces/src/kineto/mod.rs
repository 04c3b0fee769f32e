//! PyTorch profiler (Kineto) traces: the Chrome-JSON files `torch.profiler` writes, one per
//! rank, read into a compact model (device events per stream, host events, flows) that the
//! analyzer's HTA-style analyses take as input.
//!
//! `model` is the data, `parse` turns text into it in one pass, `read` handles files (gzip or
//! plain, one or a directory of them) and checks that the ranks of a job agree; `split` parses
//! one big file on two threads.

mod fields;
pub mod model;
pub mod parse;
pub mod read;
mod split;

pub use model::{
    CommArgs, CommArgsId, DeviceEvent, DeviceEventKind, DeviceStream, Flow, FlowKind, FlowPhase,
    GroupId, HostEvent, HostEventKind, KinetoTrace, NameId, Names, ProcessGroup, Skipped,
    dtype_bytes,
};
pub use parse::{ParseFailure, parse_trace};
pub use read::{
    KinetoError, KinetoRun, KinetoWarning, RankSource, RankTrace, assemble, is_trace_name,
    read_run, read_trace, trace_files,
};
#[doc(hidden)]
pub use split::split_parses_for_fuzzing;
