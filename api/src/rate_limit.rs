//! A per-key token bucket, in the memory of one API process.
//!
//! Each key's bucket holds up to `burst` tokens and refills at `per_minute / 60` tokens a
//! second; a request takes one. Buckets exist only for keys that authenticated (unknown keys
//! are refused before), and a bucket that has refilled completely is the same as no bucket:
//! those are dropped once a minute, so memory follows the keys in use.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often full (idle) buckets are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Steady rate and burst of every key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per minute; 0: no limit.
    pub per_minute: u32,
    /// Requests at once above the steady rate.
    pub burst: u32,
}

impl RateLimit {
    /// No limit at all.
    pub const NONE: RateLimit = RateLimit {
        per_minute: 0,
        burst: 0,
    };
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The buckets of every key seen lately.
#[derive(Debug)]
pub struct RateLimiter {
    /// Tokens a second.
    rate: f64,
    capacity: f64,
    state: Mutex<Buckets>,
}

#[derive(Debug)]
struct Buckets {
    by_key: HashMap<String, Bucket>,
    swept: Instant,
}

impl RateLimiter {
    /// A limiter, or `None` when `limit` disables limiting.
    pub fn new(limit: RateLimit) -> Option<Self> {
        (limit.per_minute > 0).then(|| Self {
            rate: f64::from(limit.per_minute) / 60.0,
            capacity: f64::from(limit.burst.max(1)),
            state: Mutex::new(Buckets {
                by_key: HashMap::new(),
                swept: Instant::now(),
            }),
        })
    }

    /// Takes a token from `key`'s bucket. `Err(seconds)`: none left, retry after that long.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        self.check_at(key, Instant::now())
    }

    fn check_at(&self, key: &str, now: Instant) -> Result<(), u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if now.duration_since(state.swept) >= SWEEP_EVERY {
            state
                .by_key
                .retain(|_, bucket| self.refilled(*bucket, now) < self.capacity);
            state.swept = now;
        }
        let capacity = self.capacity;
        let bucket = state.by_key.entry(key.to_string()).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        bucket.tokens = self.refilled(*bucket, now);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - bucket.tokens) / self.rate;
            Err((wait.ceil() as u64).max(1))
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.rate).min(self.capacity)
    }

    #[cfg(test)]
    fn buckets(&self) -> usize {
        self.state.lock().unwrap().by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_minute: u32, burst: u32) -> RateLimiter {
        RateLimiter::new(RateLimit { per_minute, burst }).unwrap()
    }

    #[test]
    fn zero_per_minute_disables_the_limit() {
        assert!(RateLimiter::new(RateLimit::NONE).is_none());
    }

    #[test]
    fn a_burst_passes_then_the_steady_rate_with_a_retry_after() {
        let limiter = limiter(60, 3);
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(limiter.check_at("mik_a", start), Ok(()));
        }
        assert_eq!(limiter.check_at("mik_a", start), Err(1));
        // Another key has a bucket of its own.
        assert_eq!(limiter.check_at("mik_b", start), Ok(()));
        // One token a second comes back.
        let later = start + Duration::from_millis(1_000);
        assert_eq!(limiter.check_at("mik_a", later), Ok(()));
        assert_eq!(limiter.check_at("mik_a", later), Err(1));
    }

    #[test]
    fn retry_after_is_the_time_to_the_next_token() {
        let limiter = limiter(6, 1);
        let start = Instant::now();
        assert_eq!(limiter.check_at("k", start), Ok(()));
        assert_eq!(limiter.check_at("k", start), Err(10));
        assert_eq!(
            limiter.check_at("k", start + Duration::from_secs(5)),
            Err(5)
        );
    }

    #[test]
    fn idle_buckets_are_dropped() {
        let limiter = limiter(600, 10);
        let start = Instant::now();
        for key in 0..100 {
            limiter.check_at(&key.to_string(), start).unwrap();
        }
        assert_eq!(limiter.buckets(), 100);
        limiter
            .check_at("busy", start + SWEEP_EVERY + Duration::from_secs(1))
            .unwrap();
        assert_eq!(limiter.buckets(), 1);
    }
}
