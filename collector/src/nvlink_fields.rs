//! Per-link NVLink traffic on GPUs without GPM (before Hopper), read as NVML field values.
//!
//! NVML keeps cumulative data throughput per link (`NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX/RX`,
//! in KiB), addressed by a field id and the link as its scope id. nvml-wrapper's
//! `field_values_for` always sends scope 0, so this calls `nvmlDeviceGetFieldValues` through the
//! wrapper's loaded library with one entry per link and direction. Rates come from the
//! difference of two readings: the first only primes.

use nvml_wrapper::enums::device::SampleValue;
use nvml_wrapper::error::{NvmlError, nvml_try};
use nvml_wrapper::struct_wrappers::device::FieldValueSample;
use nvml_wrapper::{Device, Nvml};
use nvml_wrapper_sys::bindings::field_id::{
    NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX,
};
use nvml_wrapper_sys::bindings::{nvmlFieldValue_t, nvmlValue_t};

/// Cumulative data KiB of one link: (transmitted, received).
pub type LinkKib = (u64, u64);

/// Reads every link's cumulative traffic, in `links` order.
pub fn read_links(nvml: &Nvml, device: &Device, links: &[u32]) -> Result<Vec<LinkKib>, NvmlError> {
    let mut values: Vec<nvmlFieldValue_t> = links
        .iter()
        .flat_map(|&link| {
            [
                request(NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, link),
                request(NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, link),
            ]
        })
        .collect();
    let count = i32::try_from(values.len()).map_err(|_| NvmlError::InsufficientSize(None))?;
    // SAFETY: the device handle lives as long as `device` (and NVML with it); `values` holds
    // `count` initialized entries that NVML fills in place and does not keep.
    let status = unsafe {
        nvml.lib()
            .nvmlDeviceGetFieldValues(device.handle(), count, values.as_mut_ptr())
    };
    nvml_try(status)?;
    let kib = values
        .into_iter()
        .map(|value| FieldValueSample::try_from(value).and_then(|sample| sample.value))
        .map(|value| value.and_then(|v| as_u64(v).ok_or(NvmlError::UnexpectedVariant(0))))
        .collect::<Result<Vec<u64>, NvmlError>>()?;
    Ok(kib.chunks_exact(2).map(|pair| (pair[0], pair[1])).collect())
}

fn request(field: u32, link: u32) -> nvmlFieldValue_t {
    nvmlFieldValue_t {
        fieldId: field,
        scopeId: link,
        timestamp: 0,
        latencyUsec: 0,
        valueType: 0,
        nvmlReturn: 0,
        value: nvmlValue_t { ullVal: 0 },
    }
}

/// A counter's value as a whole number; a negative or fractional one is not a count.
pub fn as_u64(value: SampleValue) -> Option<u64> {
    match value {
        SampleValue::U64(v) => Some(v),
        SampleValue::U32(v) => Some(u64::from(v)),
        SampleValue::I64(v) => u64::try_from(v).ok(),
        SampleValue::F64(_) => None,
    }
}

/// Bytes per second (transmitted, received) of each link between two readings; a counter that
/// went backwards (a reset) gives no rate.
pub fn link_rates(
    before: &[LinkKib],
    after: &[LinkKib],
    elapsed_ns: u64,
) -> Vec<(Option<f64>, Option<f64>)> {
    let rate = |b: u64, a: u64| {
        let kib = a.checked_sub(b)?;
        (elapsed_ns > 0).then(|| (kib * 1024) as f64 * 1e9 / elapsed_ns as f64)
    };
    before
        .iter()
        .zip(after)
        .map(|(&(tx0, rx0), &(tx1, rx1))| (rate(tx0, tx1), rate(rx0, rx1)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_bytes_per_second_and_resets_give_none() {
        let before = [(100, 200), (5_000, 10)];
        let after = [(1_124, 200), (4_000, 2_058)];
        let rates = link_rates(&before, &after, 500_000_000);
        assert_eq!(rates[0], (Some(1024.0 * 1024.0 * 2.0), Some(0.0)));
        assert_eq!(rates[1], (None, Some(2048.0 * 1024.0 * 2.0)));
        assert_eq!(link_rates(&before, &after, 0)[0], (None, None));
    }

    #[test]
    fn only_whole_non_negative_values_are_counts() {
        assert_eq!(as_u64(SampleValue::U32(7)), Some(7));
        assert_eq!(as_u64(SampleValue::I64(-1)), None);
        assert_eq!(as_u64(SampleValue::F64(1.5)), None);
    }

    #[test]
    fn each_link_asks_for_transmitted_then_received_with_the_link_as_scope() {
        let tx = request(NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_TX, 5);
        assert_eq!((tx.fieldId, tx.scopeId), (138, 5));
        assert_eq!(
            request(NVML_FI_DEV_NVLINK_THROUGHPUT_DATA_RX, 0).fieldId,
            139
        );
    }
}
