//! Inputs prepared at upload for this process's own worker.
//!
//! An upload is decoded completely when it is accepted (a damaged file is refused then, not
//! failed later). Where the model also runs in this process (`medinform serve`), that decode is
//! turned straight into the model's input and left here, keyed by the image's SHA-256, so the
//! worker takes the tensor instead of reading the image back and decoding it a second time.
//! The same bytes give the same tensor whichever side computes it, so a miss (another process's
//! upload, a restart, an entry evicted under load) only costs the decode this saves.
//!
//! Bounded by bytes: when the worker falls behind, the oldest inputs are dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, PoisonError};

use ndarray::Array3;

/// What the inputs waiting for the worker may take, per model.
pub(crate) const PREPARED_BUDGET_BYTES: usize = 64 << 20;

#[derive(Debug, Default)]
pub(crate) struct Prepared {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    inputs: HashMap<String, Array3<f32>>,
    /// Keys in the order they came; a key already taken is skipped when it comes up.
    order: VecDeque<String>,
    bytes: usize,
}

fn size_of(input: &Array3<f32>) -> usize {
    input.len() * std::mem::size_of::<f32>()
}

impl Prepared {
    /// Leaves `input` for the image `sha256`, dropping the oldest inputs beyond the budget.
    pub(crate) fn put(&self, sha256: &str, input: Array3<f32>) {
        let size = size_of(&input);
        if size > PREPARED_BUDGET_BYTES {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = inner.inputs.insert(sha256.to_owned(), input) {
            inner.bytes -= size_of(&old);
        } else {
            inner.order.push_back(sha256.to_owned());
        }
        inner.bytes += size;
        while inner.bytes > PREPARED_BUDGET_BYTES {
            let Some(oldest) = inner.order.pop_front() else {
                break;
            };
            if let Some(dropped) = inner.inputs.remove(&oldest) {
                inner.bytes -= size_of(&dropped);
            }
        }
        // Keys already taken linger in `order` until they come up; keep it from growing
        // without bound when nothing is evicted.
        if inner.order.len() > 2 * inner.inputs.len() + 1024 {
            let Inner { inputs, order, .. } = &mut *inner;
            order.retain(|key| inputs.contains_key(key));
        }
    }

    /// Takes the input left for `sha256`, if it is still here.
    pub(crate) fn take(&self, sha256: &str) -> Option<Array3<f32>> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let input = inner.inputs.remove(sha256)?;
        inner.bytes -= size_of(&input);
        Some(input)
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .inputs
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(value: f32, side: usize) -> Array3<f32> {
        Array3::from_elem((1, side, side), value)
    }

    #[test]
    fn an_input_is_taken_once() {
        let prepared = Prepared::default();
        prepared.put("a", input(1.0, 4));
        assert_eq!(prepared.take("a").unwrap()[[0, 0, 0]], 1.0);
        assert!(prepared.take("a").is_none());
        assert!(prepared.take("b").is_none());
    }

    #[test]
    fn the_oldest_inputs_go_when_the_budget_is_spent() {
        let prepared = Prepared::default();
        // 1 MiB each: the budget holds 64.
        let side = 512;
        for n in 0..100 {
            prepared.put(&n.to_string(), input(n as f32, side));
        }
        assert_eq!(prepared.len(), 64);
        assert!(prepared.take("35").is_none());
        assert_eq!(prepared.take("36").unwrap()[[0, 0, 0]], 36.0);
        assert_eq!(prepared.take("99").unwrap()[[0, 0, 0]], 99.0);
    }

    #[test]
    fn taken_keys_do_not_pile_up() {
        let prepared = Prepared::default();
        for n in 0..10_000 {
            let key = n.to_string();
            prepared.put(&key, input(0.0, 2));
            prepared.take(&key).unwrap();
        }
        let inner = prepared.inner.lock().unwrap();
        assert!(inner.order.len() <= 1024 + 1, "{}", inner.order.len());
        assert_eq!(inner.bytes, 0);
    }
}
