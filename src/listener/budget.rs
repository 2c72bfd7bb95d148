//! The global budget of request bytes held while calls are read and checked
//! (`limits.max_held_request_bytes`): every connection's read buffer, and the frames a SASL
//! connection holds to unwrap, take from it and give back.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug)]
pub struct HeldBytes {
    used: AtomicU64,
    max: u64,
}

impl HeldBytes {
    pub fn new(max: u64) -> Self {
        HeldBytes {
            used: AtomicU64::new(0),
            max,
        }
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// Takes `n` bytes of the budget; `false` (nothing taken) if that would exceed it.
    pub fn try_take(&self, n: u64) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                u.checked_add(n).filter(|&t| t <= self.max)
            })
            .is_ok()
    }

    pub fn give(&self, n: u64) {
        self.used.fetch_sub(n, Ordering::AcqRel);
    }

    /// Bytes taken now (tests).
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Acquire)
    }
}
