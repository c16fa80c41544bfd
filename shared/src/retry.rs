//! One retry logic for every client and sink, after vector's `sinks/util/retries.rs`: a
//! [`RetryPolicy`] says how often and how long to wait, each error type says what is worth
//! another try ([`Retryable`]), and [`retry`] (or [`retry_until`], for loops that end at
//! shutdown) drives an operation under both and logs each retry. Open-ended loops that are
//! not one operation (reconnects) step through the same waits with [`Backoff`].
//!
//! Waits are "full jitter": uniform in `[1 ms, min(max, base·2ⁿ)]` before retry `n`, so a
//! fleet of workers hitting the same outage does not retry in lockstep. When the error says
//! how long the server wants us to wait (`Retry-After`), the wait is at least that, but never
//! more than `retry_after_cap`: a server asking for minutes must not hold a caller hostage.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A `Retry-After` is capped at `max × DEFAULT_RETRY_AFTER_CAP_FACTOR` unless the policy says
/// otherwise.
pub const DEFAULT_RETRY_AFTER_CAP_FACTOR: u32 = 4;

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAction {
    /// Retrying will not help: return the error.
    DontRetry,
    /// Retry after the policy's jittered backoff.
    Retry,
    /// Retry, but not sooner than this (the server's `Retry-After`, capped by the policy).
    RetryAfter(Duration),
}

impl RetryAction {
    /// `Retry`, or `RetryAfter` when the server named a wait in seconds (`Retry-After`). A
    /// value that is no duration (negative, NaN, huge) becomes the longest wait; the policy's
    /// cap cuts it down.
    pub fn after_secs(retry_after_s: Option<f64>) -> Self {
        match retry_after_s {
            Some(secs) => {
                Self::RetryAfter(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
            }
            None => Self::Retry,
        }
    }

    /// The least wait the error asks for, if any.
    pub fn retry_after(self) -> Option<Duration> {
        match self {
            Self::RetryAfter(d) => Some(d),
            Self::DontRetry | Self::Retry => None,
        }
    }
}

/// An error that knows whether another attempt could succeed. Implemented next to each error
/// type, so the classification lives with the error, not in every loop.
pub trait Retryable {
    fn retry_action(&self) -> RetryAction;
}

/// How often to retry and how long to wait in between.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Extra attempts after the first one; `None`: no limit (the budget or a stop token
    /// ends the loop, or nothing does).
    pub max_retries: Option<u32>,
    /// The jitter ceiling before the first retry; it doubles with each retry…
    pub base: Duration,
    /// …up to this.
    pub max: Duration,
    /// Overall time for all attempts and waits: a retry whose wait would end past it is not
    /// made, the last error is returned instead.
    pub budget: Option<Duration>,
    /// The longest a `Retry-After` is honoured.
    pub retry_after_cap: Duration,
}

impl RetryPolicy {
    /// Up to `max_retries` extra attempts, `base`…`max` backoff, `Retry-After` honoured up to
    /// `4 × max`, no overall budget.
    pub fn new(max_retries: u32, base: Duration, max: Duration) -> Self {
        Self {
            max_retries: Some(max_retries),
            ..Self::forever(base, max)
        }
    }

    /// Retries without limit (for loops that end at shutdown: [`retry_until`], [`Backoff`]).
    pub fn forever(base: Duration, max: Duration) -> Self {
        Self {
            max_retries: None,
            base,
            max,
            budget: None,
            retry_after_cap: max.saturating_mul(DEFAULT_RETRY_AFTER_CAP_FACTOR),
        }
    }

    pub fn with_budget(self, budget: Duration) -> Self {
        Self {
            budget: Some(budget),
            ..self
        }
    }

    pub fn with_retry_after_cap(self, cap: Duration) -> Self {
        Self {
            retry_after_cap: cap,
            ..self
        }
    }

    /// The jitter ceiling before retry `retry` (0-based): `min(max, base·2^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        self.base
            .saturating_mul(2u32.saturating_pow(retry))
            .min(self.max)
    }

    /// The wait before retry `retry` (0-based): uniform in `[1 ms, ceiling(retry)]`, and at
    /// least `retry_after` (capped at `retry_after_cap`) when the server asked. The one place
    /// a wait is computed.
    pub fn delay_for(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let ms = u64::try_from(self.ceiling(retry).as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let jittered = Duration::from_millis(rand::random_range(1..=ms));
        match retry_after {
            // At least what the server asked; the jitter still spreads a herd of callers.
            Some(asked) => jittered.max(asked.min(self.retry_after_cap)),
            None => jittered,
        }
    }

    /// The same waits, one after another, for a loop that is not one operation.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            policy: *self,
            attempt: 0,
        }
    }
}

/// Runs `op` (given the 0-based attempt number) until it succeeds, fails with an error that
/// is not [`Retryable`], or the policy's attempts or budget are used up; returns the last
/// result. `what` names the operation in the retry logs ("LLM request").
pub async fn retry<T, E, F, Fut>(policy: &RetryPolicy, what: &str, op: F) -> Result<T, E>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Retryable + Display,
{
    match drive(policy, what, std::future::pending(), op).await {
        Some(result) => result,
        None => unreachable!("a pending future never completes"),
    }
}

/// Like [`retry`], but a wait is cut short when `stop` is cancelled: `None` then. An attempt
/// already running is not interrupted, so its outcome is never lost halfway.
pub async fn retry_until<T, E, F, Fut>(
    policy: &RetryPolicy,
    what: &str,
    stop: &CancellationToken,
    op: F,
) -> Option<Result<T, E>>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Retryable + Display,
{
    drive(policy, what, stop.cancelled(), op).await
}

async fn drive<T, E, F, Fut>(
    policy: &RetryPolicy,
    what: &str,
    stop: impl Future<Output = ()>,
    mut op: F,
) -> Option<Result<T, E>>
where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Retryable + Display,
{
    let started = Instant::now();
    let mut stop = std::pin::pin!(stop);
    let mut retry = 0u32;
    loop {
        let err = match op(retry).await {
            Ok(value) => return Some(Ok(value)),
            Err(err) => err,
        };
        let action = err.retry_action();
        if action == RetryAction::DontRetry {
            return Some(Err(err));
        }
        if policy.max_retries.is_some_and(|max| retry >= max) {
            tracing::debug!(attempts = retry + 1, error = %err, "{what} failed; no retries left");
            return Some(Err(err));
        }
        let wait = policy.delay_for(retry, action.retry_after());
        if let Some(budget) = policy.budget
            && started.elapsed().saturating_add(wait) > budget
        {
            tracing::debug!(
                attempts = retry + 1,
                budget_ms = millis(budget),
                wait_ms = millis(wait),
                error = %err,
                "{what} failed; the next retry would exceed the time budget"
            );
            return Some(Err(err));
        }
        tracing::warn!(
            attempt = retry + 1,
            wait_ms = millis(wait),
            error = %err,
            "{what} failed; retrying"
        );
        drop(err);
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = &mut stop => return None,
        }
        retry = retry.saturating_add(1);
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The waits of an open-ended loop (a reconnect), one after another; [`Self::reset`] after a
/// success. The same computation as [`retry`]'s: [`RetryPolicy::delay_for`].
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: RetryPolicy,
    attempt: u32,
}

impl Backoff {
    /// Waits from `base` doubling up to `max`, without end.
    pub fn new(base: Duration, max: Duration) -> Self {
        RetryPolicy::forever(base, max).backoff()
    }

    /// The next wait: uniform in `[1 ms, min(max, base·2^attempt)]`.
    pub fn next_delay(&mut self) -> Duration {
        let wait = self.policy.delay_for(self.attempt, None);
        self.attempt = self.attempt.saturating_add(1);
        wait
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
    use std::cell::Cell;
    use std::fmt;

    use super::*;

    /// A test error carrying its own classification.
    #[derive(Debug)]
    struct Fail(RetryAction);

    impl fmt::Display for Fail {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "failed ({:?})", self.0)
        }
    }

    impl Retryable for Fail {
        fn retry_action(&self) -> RetryAction {
            self.0
        }
    }

    fn policy(max_retries: u32) -> RetryPolicy {
        RetryPolicy::new(
            max_retries,
            Duration::from_millis(10),
            Duration::from_millis(50),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn retries_retryable_errors_until_success() {
        let calls = Cell::new(0);
        let out = retry(&policy(5), "op", |attempt| {
            calls.set(calls.get() + 1);
            async move {
                if attempt < 3 {
                    Err(Fail(RetryAction::Retry))
                } else {
                    Ok(attempt)
                }
            }
        })
        .await;
        assert_eq!(out.unwrap(), 3);
        assert_eq!(calls.get(), 4);
    }

    #[tokio::test(start_paused = true)]
    async fn does_not_retry_what_is_not_retryable() {
        let calls = Cell::new(0);
        let started = Instant::now();
        let out: Result<(), _> = retry(&policy(5), "op", |_| {
            calls.set(calls.get() + 1);
            async { Err(Fail(RetryAction::DontRetry)) }
        })
        .await;
        assert_eq!(out.unwrap_err().0, RetryAction::DontRetry);
        assert_eq!(calls.get(), 1);
        assert_eq!(started.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_max_retries() {
        let calls = Cell::new(0);
        let out: Result<(), _> = retry(&policy(3), "op", |_| {
            calls.set(calls.get() + 1);
            async { Err(Fail(RetryAction::Retry)) }
        })
        .await;
        assert!(out.is_err());
        assert_eq!(calls.get(), 4, "the first attempt and three retries");

        let calls = Cell::new(0);
        let _: Result<(), _> = retry(&policy(0), "op", |_| {
            calls.set(calls.get() + 1);
            async { Err(Fail(RetryAction::Retry)) }
        })
        .await;
        assert_eq!(calls.get(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn waits_at_least_retry_after() {
        let p = policy(1).with_retry_after_cap(Duration::from_secs(60));
        let started = Instant::now();
        let out = retry(&p, "op", |attempt| async move {
            if attempt == 0 {
                Err(Fail(RetryAction::RetryAfter(Duration::from_secs(7))))
            } else {
                Ok(())
            }
        })
        .await;
        out.unwrap();
        // Paused time: the only time that passes is the wait, jitter (≤ 10 ms) below it.
        assert_eq!(started.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_capped() {
        let p = policy(1).with_retry_after_cap(Duration::from_secs(2));
        let started = Instant::now();
        let out = retry(&p, "op", |attempt| async move {
            if attempt == 0 {
                Err(Fail(RetryAction::after_secs(Some(3600.0))))
            } else {
                Ok(())
            }
        })
        .await;
        out.unwrap();
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        // The default cap is 4 × max.
        assert_eq!(policy(1).retry_after_cap, Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn stops_at_the_budget() {
        // Every wait is exactly 400 ms (jitter ≤ 1 ms, below the asked wait): attempts at
        // 0, 0.4 and 0.8 s; the next would start at 1.2 s, past the 1 s budget.
        let p = RetryPolicy::new(100, Duration::from_millis(1), Duration::from_millis(1))
            .with_retry_after_cap(Duration::from_secs(10))
            .with_budget(Duration::from_secs(1));
        let calls = Cell::new(0);
        let started = Instant::now();
        let out: Result<(), _> = retry(&p, "op", |_| {
            calls.set(calls.get() + 1);
            async { Err(Fail(RetryAction::RetryAfter(Duration::from_millis(400)))) }
        })
        .await;
        assert!(out.is_err());
        assert_eq!(calls.get(), 3);
        assert_eq!(started.elapsed(), Duration::from_millis(800));
    }

    #[tokio::test(start_paused = true)]
    async fn the_budget_counts_time_spent_in_attempts() {
        let p = policy(100).with_budget(Duration::from_secs(1));
        let calls = Cell::new(0);
        let out: Result<(), _> = retry(&p, "op", |_| {
            calls.set(calls.get() + 1);
            async {
                tokio::time::sleep(Duration::from_millis(600)).await;
                Err(Fail(RetryAction::Retry))
            }
        })
        .await;
        assert!(out.is_err());
        // After the first attempt (0.6 s) a ≤ 10 ms wait fits the 1 s budget; after the
        // second (1.2 s) nothing does.
        assert_eq!(calls.get(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_until_stops_during_a_wait() {
        let stop = CancellationToken::new();
        let calls = Cell::new(0);
        let p = RetryPolicy::forever(Duration::from_secs(1), Duration::from_secs(1));
        let run = retry_until(&p, "op", &stop, |_| {
            calls.set(calls.get() + 1);
            async { Err::<(), _>(Fail(RetryAction::Retry)) }
        });
        let cancel = async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            stop.cancel();
        };
        let (out, ()) = tokio::join!(run, cancel);
        assert!(out.is_none());
        // Waits of 1 ms..1 s each: many attempts in 30 s, and then it stopped.
        assert!(calls.get() >= 30, "{}", calls.get());
    }

    #[test]
    fn jitter_stays_within_the_ceiling() {
        let p = RetryPolicy::forever(Duration::from_millis(100), Duration::from_secs(1));
        for retry in 0..40 {
            let ceiling =
                Duration::from_millis(100 * 2u64.saturating_pow(retry)).min(Duration::from_secs(1));
            assert_eq!(p.ceiling(retry), ceiling);
            for _ in 0..20 {
                let wait = p.delay_for(retry, None);
                assert!(
                    wait >= Duration::from_millis(1) && wait <= ceiling,
                    "{wait:?}"
                );
            }
        }
        // A zero base still waits a little rather than spinning.
        let zero = RetryPolicy::forever(Duration::ZERO, Duration::ZERO);
        assert_eq!(zero.delay_for(3, None), Duration::from_millis(1));
        // Retry-After wins over the jitter, within the cap.
        assert_eq!(
            p.delay_for(0, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
        assert_eq!(
            p.delay_for(0, Some(Duration::from_secs(3600))),
            Duration::from_secs(4)
        );
    }

    #[test]
    fn backoff_stays_within_cap() {
        let mut b = Backoff::new(Duration::from_millis(10), Duration::from_millis(50));
        for _ in 0..30 {
            assert!(b.next_delay() <= Duration::from_millis(50));
        }
        assert_eq!(b.attempts(), 30);
        b.reset();
        assert_eq!(b.attempts(), 0);
    }

    #[test]
    fn port_errors_classify_themselves() {
        use crate::ports::broker::BrokerError;
        use crate::ports::llm::LlmError;
        use crate::ports::metrics::SinkError;

        let http = |status, retry_after_s| LlmError::Http {
            status,
            body: String::new(),
            retry_after_s,
        };
        assert_eq!(http(503, None).retry_action(), RetryAction::Retry);
        assert_eq!(
            http(429, Some(2.0)).retry_action(),
            RetryAction::RetryAfter(Duration::from_secs(2))
        );
        // A 400 stays unretried whatever the server says about waiting.
        assert_eq!(http(400, Some(2.0)).retry_action(), RetryAction::DontRetry);
        assert_eq!(LlmError::Timeout(1).retry_action(), RetryAction::Retry);
        assert_eq!(
            LlmError::InvalidResponse(String::new()).retry_action(),
            RetryAction::DontRetry
        );

        assert_eq!(
            BrokerError::Unavailable(String::new()).retry_action(),
            RetryAction::Retry
        );
        assert_eq!(
            BrokerError::Fatal(String::new()).retry_action(),
            RetryAction::DontRetry
        );

        let outage = SinkError::Retryable {
            reason: String::new(),
            retry_after_s: Some(0.5),
        };
        assert_eq!(
            outage.retry_action(),
            RetryAction::RetryAfter(Duration::from_millis(500))
        );
        assert_eq!(
            SinkError::Unauthorized(String::new()).retry_action(),
            RetryAction::Retry
        );
        assert_eq!(SinkError::TooLarge.retry_action(), RetryAction::DontRetry);
        assert_eq!(
            SinkError::Rejected(String::new()).retry_action(),
            RetryAction::DontRetry
        );

        // The ports whose callers degrade: only unavailability is worth another try.
        use crate::ports::{CacheError, EmbedError, MemoryError, StoreError};
        let none = String::new;
        for (what, unavailable, other) in [
            (
                "cache",
                CacheError::Unavailable(none()).retry_action(),
                CacheError::Command(none()).retry_action(),
            ),
            (
                "store",
                StoreError::Unavailable(none()).retry_action(),
                StoreError::Data(none()).retry_action(),
            ),
            (
                "embedder",
                EmbedError::Unavailable(none()).retry_action(),
                EmbedError::Invalid(none()).retry_action(),
            ),
            (
                "memory",
                MemoryError::Unavailable(none()).retry_action(),
                MemoryError::Other(none()).retry_action(),
            ),
        ] {
            assert_eq!(unavailable, RetryAction::Retry, "{what}");
            assert_eq!(other, RetryAction::DontRetry, "{what}");
        }
    }

    #[test]
    fn retry_after_seconds_become_actions() {
        assert_eq!(RetryAction::after_secs(None), RetryAction::Retry);
        assert_eq!(
            RetryAction::after_secs(Some(1.5)),
            RetryAction::RetryAfter(Duration::from_millis(1500))
        );
        assert_eq!(
            RetryAction::after_secs(Some(f64::NAN)).retry_after(),
            Some(Duration::MAX)
        );
    }
}
