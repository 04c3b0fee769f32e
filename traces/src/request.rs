//! Served requests: what a replica's scheduler saw of each request, so the analyzer can compute
//! serving metrics (TTFT, TPOT, ITL, end-to-end latency) with vLLM's definitions.

use serde::{Deserialize, Serialize};

/// One request served by one replica, timed on the clock of the node that served it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestRecord {
    /// The request's id in the run's request stream (the same whatever the layout).
    pub id: u64,
    /// The data-parallel replica that served it.
    pub replica: u32,
    /// When the request reached its replica (node monotonic clock, ns).
    pub arrival_ns: u64,
    /// When the scheduler first put the request in a step (node monotonic clock, ns); `None`
    /// when the scheduler did not record it.
    pub scheduled_ns: Option<u64>,
    /// When each output token was produced, in order (node monotonic clock, ns). The first is
    /// the time to first token's end.
    pub token_times_ns: Vec<u64>,
    pub prompt_tokens: u32,
    /// The generated tokens, in order.
    pub tokens: Vec<u32>,
    /// Times the scheduler evicted the request for lack of KV-cache blocks and recomputed it.
    pub preemptions: u32,
}

impl RequestRecord {
    /// Time to first token, when a token was produced.
    pub fn ttft_ns(&self) -> Option<u64> {
        self.token_times_ns
            .first()
            .map(|t| t.saturating_sub(self.arrival_ns))
    }

    /// Time queued at the replica: arrival until first scheduled.
    pub fn queued_ns(&self) -> Option<u64> {
        self.scheduled_ns.map(|t| t.saturating_sub(self.arrival_ns))
    }

    /// End-to-end latency: arrival to the last token.
    pub fn e2e_ns(&self) -> Option<u64> {
        self.token_times_ns
            .last()
            .map(|t| t.saturating_sub(self.arrival_ns))
    }

    /// Time per output token after the first, vLLM's `(e2e - ttft) / (output tokens - 1)`;
    /// `None` for requests of fewer than two tokens.
    pub fn tpot_ns(&self) -> Option<f64> {
        let n = self.token_times_ns.len();
        if n < 2 {
            return None;
        }
        let decode_ns = self.token_times_ns[n - 1] - self.token_times_ns[0];
        Some(decode_ns as f64 / (n - 1) as f64)
    }

    /// The gaps between consecutive output tokens.
    pub fn itl_ns(&self) -> impl Iterator<Item = u64> + '_ {
        self.token_times_ns.windows(2).map(|w| w[1] - w[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(times: Vec<u64>) -> RequestRecord {
        RequestRecord {
            id: 1,
            replica: 0,
            arrival_ns: 100,
            scheduled_ns: Some(150),
            tokens: vec![7; times.len()],
            token_times_ns: times,
            prompt_tokens: 4,
            preemptions: 0,
        }
    }

    #[test]
    fn latencies_follow_vllm_definitions() {
        let r = record(vec![300, 400, 600]);
        assert_eq!(r.ttft_ns(), Some(200));
        assert_eq!(r.e2e_ns(), Some(500));
        assert_eq!(r.tpot_ns(), Some(150.0));
        assert_eq!(r.queued_ns(), Some(50));
        assert_eq!(r.itl_ns().collect::<Vec<_>>(), vec![100, 200]);
    }

    #[test]
    fn a_single_token_has_no_tpot_and_no_tokens_no_ttft() {
        assert_eq!(record(vec![300]).tpot_ns(), None);
        assert_eq!(record(vec![]).ttft_ns(), None);
    }
}
