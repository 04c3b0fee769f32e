//! Which collective a communication kernel ran, and how it is matched across ranks.
//!
//! The kind comes from `args["Collective name"]` where the trace has it (newer PyTorch), else
//! from the kernel's name (`ncclKernel_AllReduce_RING_LL_Sum_float`, `ncclDevKernel_SendRecv`,
//! `hcom_allReduce_`). The process group is not in pinch's Kineto model, so a rank's
//! communication streams stand for its communicators: PyTorch gives each process group its own
//! NCCL stream, and ranks running the same program create them in the same order, so the n-th
//! communication stream of one rank (by stream number) is the n-th of every other. The sequence
//! number is then the n-th collective on that stream, the same on every participant.

use pinch_traces::CollectiveKind;

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

/// How many ranks take part: two for point-to-point, else the job's world size (the group's
/// size is not in pinch's Kineto model).
pub fn participants(kind: CollectiveKind, world_size: u32) -> u32 {
    match kind {
        CollectiveKind::Send | CollectiveKind::Recv => 2,
        _ => world_size,
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
    fn point_to_point_has_two_participants() {
        assert_eq!(participants(Send, 128), 2);
        assert_eq!(participants(AllReduce, 8), 8);
    }
}
