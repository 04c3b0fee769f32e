//! The cost an op reports: floating-point operations and memory traffic, computed from shapes.
//!
//! Every op in this crate returns a [`Cost`] so the profiler can put achieved FLOP/s and bytes/s
//! next to measured times (a roofline view) without hardware counters, which are often absent.

use std::iter::Sum;
use std::ops::{Add, AddAssign};

/// Bytes taken by one `f32` element.
pub(crate) const F32_BYTES: u64 = 4;

/// What an op cost: floating-point operations and bytes read + written (its cost model,
/// computed from shapes, not measured).
///
/// Conventions shared by every op: an add, multiply, divide, comparison or transcendental
/// (`exp`, `sin`, `sqrt`, ...) counts as one flop; bytes count each element read or written at
/// its in-memory size, once per op (data an op re-reads from cache is not counted again).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Cost {
    /// Floating-point operations performed.
    pub flops: u64,
    /// Bytes read plus bytes written.
    pub bytes: u64,
}

impl Add for Cost {
    type Output = Cost;

    fn add(self, rhs: Cost) -> Cost {
        Cost {
            flops: self.flops + rhs.flops,
            bytes: self.bytes + rhs.bytes,
        }
    }
}

impl AddAssign for Cost {
    fn add_assign(&mut self, rhs: Cost) {
        *self = *self + rhs;
    }
}

impl Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::default(), Add::add)
    }
}

/// Bytes taken by `elements` `f32` values.
pub(crate) fn f32_bytes(elements: usize) -> u64 {
    elements as u64 * F32_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_and_add_assign_sum_both_fields() {
        let a = Cost {
            flops: 3,
            bytes: 40,
        };
        let b = Cost { flops: 5, bytes: 2 };
        assert_eq!(
            a + b,
            Cost {
                flops: 8,
                bytes: 42
            }
        );
        let mut c = a;
        c += b;
        assert_eq!(
            c,
            Cost {
                flops: 8,
                bytes: 42
            }
        );
    }

    #[test]
    fn sum_of_costs_adds_up() {
        let total: Cost = [1u64, 2, 3]
            .iter()
            .map(|&i| Cost {
                flops: i,
                bytes: 10 * i,
            })
            .sum();
        assert_eq!(
            total,
            Cost {
                flops: 6,
                bytes: 60
            }
        );
    }
}
