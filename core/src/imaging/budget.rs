//! The bytes that decoded images may hold at once in a process (`limits.max_decoding_bytes`).

use std::sync::{Condvar, Mutex, OnceLock, PoisonError};

/// The bytes that decodes in flight may hold at once, per process, unless
/// [`set_decode_budget`] says otherwise.
pub const DEFAULT_DECODE_BUDGET: u64 = 512 * 1024 * 1024;

/// A budget of bytes shared by the decodes in flight: [`DecodeBudget::acquire`] waits until
/// the bytes asked for are free.
#[derive(Debug)]
pub struct DecodeBudget {
    total: u64,
    used: Mutex<u64>,
    freed: Condvar,
}

impl DecodeBudget {
    pub fn new(total: u64) -> Self {
        Self {
            total: total.max(1),
            used: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Blocks (call it from a blocking thread) until `bytes` fit, and holds them until the
    /// permit is dropped. A request larger than the whole budget waits for all of it.
    pub fn acquire(&self, bytes: u64) -> BudgetPermit<'_> {
        let bytes = bytes.min(self.total);
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        while *used + bytes > self.total {
            used = self
                .freed
                .wait(used)
                .unwrap_or_else(PoisonError::into_inner);
        }
        *used += bytes;
        BudgetPermit {
            budget: self,
            bytes,
        }
    }

    /// Bytes held now.
    pub fn in_use(&self) -> u64 {
        *self.used.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Bytes of a [`DecodeBudget`], given back when dropped.
#[derive(Debug)]
pub struct BudgetPermit<'a> {
    budget: &'a DecodeBudget,
    bytes: u64,
}

impl Drop for BudgetPermit<'_> {
    fn drop(&mut self) {
        let mut used = self
            .budget
            .used
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *used -= self.bytes;
        self.budget.freed.notify_all();
    }
}

static DECODE_BUDGET: OnceLock<DecodeBudget> = OnceLock::new();

/// Sets the process's decode budget (`limits.max_decoding_bytes`); the first call wins, and
/// without one the budget is [`DEFAULT_DECODE_BUDGET`].
pub fn set_decode_budget(bytes: u64) {
    if DECODE_BUDGET.set(DecodeBudget::new(bytes)).is_err() {
        tracing::debug!("the decode budget was already set");
    }
}

/// The process's decode budget.
pub fn decode_budget() -> &'static DecodeBudget {
    DECODE_BUDGET.get_or_init(|| DecodeBudget::new(DEFAULT_DECODE_BUDGET))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_decode_waits_until_the_budget_has_room() {
        let budget = Arc::new(DecodeBudget::new(100));
        let first = budget.acquire(70);
        assert_eq!(budget.in_use(), 70);
        let waiting = {
            let budget = budget.clone();
            std::thread::spawn(move || {
                let _second = budget.acquire(50);
                budget.in_use()
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !waiting.is_finished(),
            "50 more bytes do not fit next to 70 of 100"
        );
        drop(first);
        assert_eq!(waiting.join().unwrap(), 50);
        assert_eq!(budget.in_use(), 0);
        // More than the whole budget waits for all of it rather than forever.
        let all = budget.acquire(1_000);
        assert_eq!(budget.in_use(), 100);
        drop(all);
    }
}
