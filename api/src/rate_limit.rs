//! A per-key token bucket: in the database, shared by every API process (PostgreSQL), or in
//! the memory of the one process there is (the embedded mode).
//!
//! Each key's bucket holds up to `burst` tokens and refills at `per_minute / 60` tokens a
//! second; a request takes one. Buckets exist only for keys that authenticated (unknown keys
//! are refused before), and a bucket that has refilled completely is the same as no bucket:
//! those are dropped (once a minute in memory; in the database by the API's hourly purge), so
//! what is kept follows the keys in use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use medinform_core::db::{DbError, TenantStore, TokenBucket};

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

impl RateLimit {
    fn bucket(self) -> TokenBucket {
        TokenBucket {
            per_second: f64::from(self.per_minute) / 60.0,
            capacity: f64::from(self.burst.max(1)),
        }
    }
}

/// The limit of every key, kept in the database: with several API processes a key gets its
/// limit once, not once per process.
pub struct SharedRateLimiter {
    bucket: TokenBucket,
    store: Arc<dyn TenantStore>,
}

impl std::fmt::Debug for SharedRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRateLimiter")
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

impl SharedRateLimiter {
    /// A limiter on `store`'s buckets, or `None` when `limit` disables limiting.
    pub fn new(limit: RateLimit, store: Arc<dyn TenantStore>) -> Option<Self> {
        (limit.per_minute > 0).then(|| Self {
            bucket: limit.bucket(),
            store,
        })
    }

    /// Takes a token from `key`'s bucket. `Ok(Err(seconds))`: none left, retry after that long.
    pub async fn check(&self, key: &str) -> Result<Result<(), u64>, DbError> {
        let wait = self
            .store
            .take_token(key, self.bucket, chrono::Utc::now())
            .await?;
        Ok(match wait {
            None => Ok(()),
            Some(wait) => Err((wait.as_secs_f64().ceil() as u64).max(1)),
        })
    }

    /// Deletes the buckets that are full again (untouched for an hour, or for as long as one
    /// takes to refill if that is longer).
    pub async fn purge(&self) -> Result<u64, DbError> {
        let refill = self.bucket.capacity / self.bucket.per_second;
        let idle = chrono::TimeDelta::seconds((refill.ceil() as i64).max(3600));
        self.store
            .purge_token_buckets(chrono::Utc::now() - idle)
            .await
    }
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
            rate: limit.bucket().per_second,
            capacity: limit.bucket().capacity,
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
