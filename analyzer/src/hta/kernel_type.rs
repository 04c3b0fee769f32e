//! What kind of work a device event is, by HTA's rules: communication, memory, computation,
//! or other (synchronizations), read from the kernel's name.

use serde::{Deserialize, Serialize};

/// HTA's kernel types, in the order HTA numbers them when it names overlaps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum KernelType {
    Computation,
    Communication,
    Memory,
    /// Neither of the three: synchronizations, and names HTA keeps out of computation.
    Other,
}

impl KernelType {
    /// The three types HTA's kernel breakdown counts, in its order.
    pub const COUNTED: [KernelType; 3] = [
        KernelType::Computation,
        KernelType::Communication,
        KernelType::Memory,
    ];

    /// HTA's name for the type (`COMPUTATION`, ...).
    pub fn hta_name(self) -> &'static str {
        match self {
            Self::Computation => "COMPUTATION",
            Self::Communication => "COMMUNICATION",
            Self::Memory => "MEMORY",
            Self::Other => "OTHER",
        }
    }
}

/// The type of a device event from its name and, when the trace gives one, the collective it
/// ran (`args["Collective name"]`): a better sign of communication than the name, so it wins.
pub fn kernel_type(name: &str, collective: Option<&str>) -> KernelType {
    if collective.is_some() || is_communication_name(name) {
        KernelType::Communication
    } else if ["Memcpy", "Memset", "dma"]
        .iter()
        .any(|p| name.starts_with(p))
    {
        KernelType::Memory
    } else if name.contains("Memcpy") || name.contains("Sync") {
        // HTA keeps these out of computation: copies inside other kernels' names, and
        // synchronizations (`Stream Sync`), which are waits, not work.
        KernelType::Other
    } else {
        KernelType::Computation
    }
}

/// Communication kernels by name: NCCL's (`ncclKernel_*`, `ncclDevKernel_*`, which RCCL keeps
/// on AMD GPUs), RCCL's own (`rccl*`) and HCCL's (`hccl*`, `Hccl*`, `hcom_*`).
pub fn is_communication_name(name: &str) -> bool {
    let nccl = name
        .strip_prefix("nccl")
        .is_some_and(|rest| rest.contains("Kernel"));
    nccl || ["rccl", "hccl", "Hccl", "hcom_"]
        .iter()
        .any(|p| name.starts_with(p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use KernelType::*;

    #[test]
    fn names_decide_as_in_hta() {
        let cases = [
            (
                "ncclKernel_AllReduce_RING_LL_Sum_float(ncclDevComm*)",
                Communication,
            ),
            ("ncclDevKernel_SendRecv(ncclDevComm*)", Communication),
            ("ncclInit", Computation),
            ("Memcpy HtoD (Pinned -> Device)", Memory),
            ("Memset (Device)", Memory),
            ("dma_request", Memory),
            ("Stream Sync", Other),
            ("void cub::DeviceMemcpy::BatchMemcpyKernel<>", Other),
            ("volta_sgemm_64x64_nt", Computation),
            ("hcom_allReduce__123", Communication),
        ];
        for (name, want) in cases {
            assert_eq!(kernel_type(name, None), want, "{name}");
        }
    }

    #[test]
    fn a_collective_name_makes_any_kernel_communication() {
        assert_eq!(
            kernel_type("my_allreduce", Some("allreduce")),
            Communication
        );
    }
}
