//! Which collective a communication kernel ran, how big it was, and how it is matched across
//! ranks.
//!
//! The kind comes from `args["Collective name"]` where the trace has it (newer PyTorch), else
//! from the kernel's name (`ncclKernel_AllReduce_RING_LL_Sum_float`, `ncclDevKernel_SendRecv`,
//! `hcom_allReduce_`).
//!
//! The process group is `args["Process Group Name"]` where the trace has it: PyTorch names a
//! group alike on all its ranks, so the name numbers it (`JobGroups`), and the sequence number
//! is the n-th collective of that group on the rank. Older traces name no group, so a rank's
//! communication streams stand for its communicators: PyTorch gives each process group its own
//! NCCL stream, and ranks running the same program create them in the same order, so the n-th
//! communication stream of one rank (by stream number) is the n-th of every other; those get
//! the numbers after the named groups'.
//!
//! The size is nccl-tests' "size", the user's buffer: `In msg nelems` × the dtype's bytes, but
//! the output for an all-gather (the gathered buffer), so that `bus_factor` applies as there.

use pinch_traces::CollectiveKind;
use pinch_traces::kineto::{CommArgs, KinetoRun};
use std::collections::HashMap;

/// The process groups named by any rank's trace, numbered the same way for every rank.
#[derive(Clone, Debug, Default)]
pub struct JobGroups {
    ids: HashMap<String, u32>,
}

impl JobGroups {
    /// Numbers the names in order (shorter first, so "2" comes before "10").
    pub fn of(run: &KinetoRun) -> JobGroups {
        let mut names: Vec<&str> = run
            .ranks
            .iter()
            .flat_map(|r| r.trace.groups.iter().map(|g| g.name.as_str()))
            .collect();
        names.sort_unstable_by_key(|n| (n.len(), *n));
        names.dedup();
        let ids = names
            .into_iter()
            .zip(0..)
            .map(|(name, id)| (name.to_owned(), id))
            .collect();
        JobGroups { ids }
    }

    /// The number of the group named `name`.
    pub fn id(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    /// How many groups are named: stream-guessed groups are numbered from here.
    pub fn count(&self) -> u32 {
        u32::try_from(self.ids.len()).unwrap_or(u32::MAX)
    }
}

/// nccl-tests' "size" of a collective from its args: the gathered output of an all-gather,
/// else the input (all of it for a reduce-scatter). `None` when the count or dtype is unknown.
pub fn message_bytes(kind: CollectiveKind, args: &CommArgs) -> Option<u64> {
    let elements = match kind {
        CollectiveKind::AllGather => args.out_msg_nelems,
        _ => args.in_msg_nelems,
    }?;
    elements.checked_mul(u64::from(args.element_bytes?))
}

/// The kind of collective a name says, if it says one pinch knows. Reduce, gather and scatter
/// (to one root) have no pinch kind: their kernels stay communication without collective data.
pub fn kind_from_name(name: &str) -> Option<CollectiveKind> {
    // The part before the argument list: parameter types may contain anything.
    let head = name.split('(').next().unwrap_or(name);
    let flat: String = head
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    // Longer names first: "reducescatter" before "allreduce", "sendrecv" before "send".
    const PATTERNS: [(&str, CollectiveKind); 9] = [
        ("reducescatter", CollectiveKind::ReduceScatter),
        ("allreduce", CollectiveKind::AllReduce),
        ("allgather", CollectiveKind::AllGather),
        ("alltoall", CollectiveKind::AllToAll),
        ("broadcast", CollectiveKind::Broadcast),
        ("sendrecv", CollectiveKind::Send),
        ("send", CollectiveKind::Send),
        ("recv", CollectiveKind::Recv),
        // NCCL runs a barrier as an all-reduce of one element.
        ("barrier", CollectiveKind::AllReduce),
    ];
    PATTERNS
        .iter()
        .find(|(pattern, _)| flat.contains(pattern))
        .map(|(_, kind)| *kind)
}

/// The kind from the trace's collective name, else from the kernel name.
pub fn collective_kind(collective: Option<&str>, kernel: &str) -> Option<CollectiveKind> {
    collective
        .and_then(kind_from_name)
        .or_else(|| kind_from_name(kernel))
}

/// How many ranks take part: two for point-to-point, else the group's size when the args
/// give it, else the job's world size.
pub fn participants(kind: CollectiveKind, group_size: Option<u32>, world_size: u32) -> u32 {
    match kind {
        CollectiveKind::Send | CollectiveKind::Recv => 2,
        _ => group_size.filter(|n| *n > 0).unwrap_or(world_size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CollectiveKind::*;

    #[test]
    fn kernel_names_of_nccl_rccl_and_hccl_give_their_kind() {
        let cases = [
            (
                "ncclKernel_AllReduce_RING_LL_Sum_float(ncclDevComm*, unsigned long, ncclWork*)",
                Some(AllReduce),
            ),
            (
                "ncclDevKernel_ReduceScatter_Sum_f32_RING_LL",
                Some(ReduceScatter),
            ),
            ("ncclDevKernel_AllGather_RING_LL", Some(AllGather)),
            (
                "ncclKernel_SendRecv_RING_SIMPLE_Sum_int8_t(ncclDevComm*)",
                Some(Send),
            ),
            ("ncclKernel_Broadcast_RING_LL_Sum_int8_t", Some(Broadcast)),
            ("hcom_allReduce__123_0", Some(AllReduce)),
            ("ncclKernel_Reduce_RING_LL_Sum_float", None),
            ("volta_sgemm_128x64_nn", None),
        ];
        for (name, kind) in cases {
            assert_eq!(kind_from_name(name), kind, "{name}");
        }
    }

    #[test]
    fn the_collective_name_wins_over_the_kernel_name() {
        assert_eq!(
            collective_kind(Some("_allgather_base"), "ncclDevKernel_Generic"),
            Some(AllGather)
        );
        assert_eq!(
            collective_kind(Some("reduce_scatter_tensor_coalesced"), "x"),
            Some(ReduceScatter)
        );
        assert_eq!(
            collective_kind(Some("gather"), "ncclKernel_AllReduce"),
            Some(AllReduce)
        );
        assert_eq!(
            collective_kind(None, "ncclDevKernel_AllToAll"),
            Some(AllToAll)
        );
    }

    #[test]
    fn point_to_point_has_two_participants_others_their_group() {
        assert_eq!(participants(Send, Some(8), 128), 2);
        assert_eq!(participants(AllReduce, None, 8), 8);
        assert_eq!(participants(AllReduce, Some(4), 8), 4);
        assert_eq!(participants(AllReduce, Some(0), 8), 8);
    }

    #[test]
    fn sizes_are_nccl_tests_buffers() {
        let args = CommArgs {
            in_msg_nelems: Some(1_000),
            out_msg_nelems: Some(8_000),
            element_bytes: Some(2),
            ..CommArgs::default()
        };
        assert_eq!(message_bytes(AllGather, &args), Some(16_000));
        assert_eq!(message_bytes(AllReduce, &args), Some(2_000));
        let scatter = CommArgs {
            in_msg_nelems: Some(8_000),
            out_msg_nelems: Some(1_000),
            ..args
        };
        assert_eq!(message_bytes(ReduceScatter, &scatter), Some(16_000));
        let no_dtype = CommArgs {
            element_bytes: None,
            ..args
        };
        assert_eq!(message_bytes(AllReduce, &no_dtype), None);
    }
}
