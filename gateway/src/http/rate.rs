//! The HTTP API's per-caller rate limit: one token bucket per API key name (and one for the
//! keyless loopback caller) holding `HTTP_RATE_REQUESTS` tokens and refilling them evenly
//! over `HTTP_RATE_WINDOW_S`. A request takes a token; without one it is answered 429 with
//! the whole seconds until the next token (`Retry-After`). The callers are the configured
//! names, so the map stays as small as the key list.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The limit every caller gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Requests per `window` (the bucket's size); 0 means no limit.
    pub requests: u32,
    pub window: Duration,
}

impl RateLimit {
    /// Tokens added per second.
    fn per_second(&self) -> f64 {
        f64::from(self.requests) / self.window.as_secs_f64()
    }
}

/// A caller over its limit, and when it may try again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// Whole seconds until a token is back (at least 1), for `Retry-After`.
    pub retry_after_s: u64,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

#[derive(Debug)]
pub struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(limit: RateLimit) -> Self {
        Self {
            limit,
            buckets: Mutex::default(),
        }
    }

    pub fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Takes one token from `caller`'s bucket (full at its first request).
    pub fn take(&self, caller: &str, now: Instant) -> Result<(), Limited> {
        if self.limit.requests == 0 || self.limit.window.is_zero() {
            return Ok(());
        }
        let size = f64::from(self.limit.requests);
        let rate = self.limit.per_second();
        let mut buckets = self.buckets.lock().expect("rate buckets");
        let bucket = buckets.entry(caller.to_string()).or_insert(Bucket {
            tokens: size,
            at: now,
        });
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(size);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = (1.0 - bucket.tokens) / rate;
        Err(Limited {
            retry_after_s: (wait.ceil() as u64).max(1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(requests: u32, window_s: u64) -> RateLimiter {
        RateLimiter::new(RateLimit {
            requests,
            window: Duration::from_secs(window_s),
        })
    }

    #[test]
    fn a_full_bucket_then_429_with_the_seconds_until_the_next_token() {
        let l = limiter(3, 30);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(l.take("acme", t0), Ok(()));
        }
        // One token per 10 s.
        assert_eq!(l.take("acme", t0), Err(Limited { retry_after_s: 10 }));
        let t = t0 + Duration::from_millis(2_500);
        assert_eq!(l.take("acme", t), Err(Limited { retry_after_s: 8 }));
        assert_eq!(l.take("acme", t0 + Duration::from_secs(10)), Ok(()));
        assert!(l.take("acme", t0 + Duration::from_secs(10)).is_err());
    }

    #[test]
    fn each_caller_has_its_own_bucket() {
        let l = limiter(1, 60);
        let t0 = Instant::now();
        assert_eq!(l.take("acme", t0), Ok(()));
        assert!(l.take("acme", t0).is_err());
        assert_eq!(l.take("beta", t0), Ok(()));
        assert_eq!(l.take("", t0), Ok(()), "the keyless caller too");
    }

    #[test]
    fn refill_never_exceeds_the_bucket() {
        let l = limiter(2, 2);
        let t0 = Instant::now();
        assert_eq!(l.take("a", t0), Ok(()));
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(l.take("a", later), Ok(()));
        assert_eq!(l.take("a", later), Ok(()));
        assert_eq!(l.take("a", later), Err(Limited { retry_after_s: 1 }));
    }

    #[test]
    fn zero_requests_means_no_limit() {
        let l = limiter(0, 60);
        let t0 = Instant::now();
        for _ in 0..10_000 {
            assert_eq!(l.take("acme", t0), Ok(()));
        }
    }
}
