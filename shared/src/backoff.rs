//! Jittered exponential backoff ("full jitter"), shared by every retry loop so they all
//! behave the same way under an outage: no synchronized retry storms.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Self {
            base,
            max,
            attempt: 0,
        }
    }

    /// The next wait: uniform in `[0, min(max, base * 2^attempt)]`, never below 1 ms.
    pub fn next_delay(&mut self) -> Duration {
        let cap = self
            .base
            .saturating_mul(1u32 << self.attempt.min(20))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let ms = cap.as_millis().max(1) as u64;
        Duration::from_millis(rand::random_range(1..=ms))
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_cap() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
        for _ in 0..30 {
            assert!(b.next_delay() <= Duration::from_millis(50));
        }
        assert_eq!(b.attempts(), 30);
    }
}
