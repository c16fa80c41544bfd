//! The batcher: metric events in, batched writes out, acks only after the write.
//!
//! - Every event is parsed and validated with a line-protocol parser; an unparseable event
//!   is dead-lettered with the parser's reason (Telegraf drops it; we keep it).
//! - A batch is flushed at `batch_size` points or when its oldest point has waited
//!   `flush_interval`, whichever comes first.
//! - While a flush is retrying nothing new is read: unacked events stay in RabbitMQ (the
//!   queue is the buffer) and the prefetch (`metrics_max_pending`) bounds this process's
//!   memory.
//! - Policy per failure (`SinkError`): retryable → jittered exponential backoff honouring
//!   `Retry-After` (up to [`MAX_RETRY_AFTER`]), forever, through
//!   [`whisperfleet_shared::retry`]; unauthorized → the same, never faster than every
//!   `backoff_max / 2`, logged at error level; too large → split in halves; rejected → bisect
//!   down to the offending event, write the rest, dead-letter that one with the server's
//!   reason. Splitting is the batcher's own; nothing is dropped silently.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use whisperfleet_shared::ports::broker::{self, Broker, Delivery};
use whisperfleet_shared::ports::{MetricsSink, SinkError};
use whisperfleet_shared::retry::{RetryAction, RetryPolicy, Retryable, retry_until};

/// The longest `Retry-After` honoured: the writer holds its events meanwhile, but a server
/// asking for hours is more likely confused than overloaded.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(300);

/// One validated metric event: its delivery and its lines.
pub struct Event {
    pub delivery: Delivery,
    pub lines: Vec<String>,
}

/// Parses and validates a metric event body; `Err` carries the dead-letter reason.
pub fn validate(body: &[u8]) -> Result<Vec<String>, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("metric event is not UTF-8: {e}"))?;
    let mut lines = Vec::new();
    for (i, line) in influxdb_line_protocol::split_lines(text).enumerate() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let mut parsed = influxdb_line_protocol::parse_lines(trimmed);
        match parsed.next() {
            Some(Ok(_)) => lines.push(trimmed.to_string()),
            Some(Err(e)) => return Err(format!("line {}: {e}: {trimmed:.200}", i + 1)),
            None => {}
        }
    }
    if lines.is_empty() {
        return Err("metric event has no points".into());
    }
    Ok(lines)
}

#[derive(Debug, Default)]
pub struct WriterStats {
    pub batches: AtomicU64,
    pub points_written: AtomicU64,
    pub retries: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub pending_points: AtomicU64,
    pub last_batch_points: AtomicU64,
    /// Microseconds of the last successful write request.
    pub last_write_us: AtomicU64,
    /// Why the last write failed, until one succeeds again (readiness reports it).
    pub write_failing: std::sync::Mutex<Option<String>>,
}

#[derive(Debug, Clone)]
pub struct BatchSettings {
    pub batch_size: usize,
    pub flush_interval: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

pub struct Batcher {
    sink: Arc<dyn MetricsSink>,
    broker: Arc<dyn Broker>,
    settings: BatchSettings,
    pub stats: Arc<WriterStats>,
    events: Vec<Event>,
    points: usize,
    oldest: Option<Instant>,
    /// A delivery we could not settle sits between acked ones: `ack_up_to` would ack it too.
    unsettled_gap: bool,
}

impl Batcher {
    pub fn new(
        sink: Arc<dyn MetricsSink>,
        broker: Arc<dyn Broker>,
        settings: BatchSettings,
        stats: Arc<WriterStats>,
    ) -> Self {
        Self {
            sink,
            broker,
            settings,
            stats,
            events: Vec::new(),
            points: 0,
            oldest: None,
            unsettled_gap: false,
        }
    }

    /// When the current batch must be flushed by time, if it has anything.
    pub fn deadline(&self) -> Option<Instant> {
        self.oldest.map(|o| o + self.settings.flush_interval)
    }

    /// Takes one delivery; returns true when the batch is full and should be flushed.
    pub async fn push(&mut self, delivery: Delivery) -> bool {
        match validate(&delivery.body) {
            Ok(lines) => {
                self.points += lines.len();
                self.stats
                    .pending_points
                    .store(self.points as u64, Ordering::Relaxed);
                self.oldest.get_or_insert_with(Instant::now);
                self.events.push(Event { delivery, lines });
            }
            Err(reason) => self.dead_letter(delivery, &reason).await,
        }
        self.points >= self.settings.batch_size
    }

    async fn dead_letter(&mut self, delivery: Delivery, reason: &str) {
        // The turn the event belongs to, by the trace its publisher sent with it.
        let trace_id = delivery
            .headers
            .get(whisperfleet_shared::topology::HEADER_TRACEPARENT)
            .and_then(|h| whisperfleet_shared::trace::TraceContext::parse(h))
            .map(|t| t.trace_id())
            .unwrap_or_default();
        tracing::warn!(reason, trace_id, "dead-lettering a metric event");
        match broker::dead_letter(self.broker.as_ref(), delivery, reason).await {
            Ok(()) => {
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                tracing::error!(error = %e, "could not dead-letter a metric event; it stays unacked");
                self.unsettled_gap = true;
            }
        }
    }

    /// Writes the current batch (retrying as the policy says) and acks it. Returns false if
    /// `hard_stop` fired first: the batch is left unacked and will be redelivered.
    pub async fn flush(&mut self, hard_stop: &CancellationToken) -> bool {
        let events = std::mem::take(&mut self.events);
        let points = self.points;
        self.points = 0;
        self.oldest = None;
        self.stats.pending_points.store(0, Ordering::Relaxed);
        if events.is_empty() {
            return true;
        }
        let whole = events.len();
        // Sub-batches still to write, last pushed is written first (keeps order).
        let mut stack = vec![events];
        let mut written_events = Vec::with_capacity(whole);
        let mut complete = true;
        while let Some(batch) = stack.pop() {
            match self.write_with_retry(&batch, hard_stop).await {
                Outcome::Written => written_events.push(batch),
                Outcome::Stopped => {
                    complete = false;
                    break;
                }
                Outcome::Split(reason) => {
                    if batch.len() == 1 {
                        let ev = batch.into_iter().next().expect("one event");
                        self.dead_letter(ev.delivery, &reason).await;
                        continue;
                    }
                    let mut first = batch;
                    let second = first.split_off(first.len() / 2);
                    stack.push(second);
                    stack.push(first);
                }
            }
        }
        let acked: Vec<Event> = written_events.into_iter().flatten().collect();
        if complete && acked.len() == whole && !self.unsettled_gap {
            // The whole batch in one frame.
            if let Some(last) = acked.last()
                && let Err(e) = last.delivery.acker.ack_up_to().await
            {
                tracing::warn!(error = %e, "batch ack failed; the events will be redelivered");
            }
        } else {
            for ev in &acked {
                if let Err(e) = ev.delivery.acker.ack().await {
                    tracing::warn!(error = %e, "ack failed; the event will be redelivered");
                }
            }
        }
        if complete {
            self.stats.batches.fetch_add(1, Ordering::Relaxed);
            self.stats
                .last_batch_points
                .store(points as u64, Ordering::Relaxed);
        }
        complete
    }

    async fn write_with_retry(&self, batch: &[Event], hard_stop: &CancellationToken) -> Outcome {
        let lines: Vec<&str> = batch
            .iter()
            .flat_map(|e| e.lines.iter().map(String::as_str))
            .collect();
        let policy = RetryPolicy::forever(self.settings.backoff_base, self.settings.backoff_max)
            .with_retry_after_cap(MAX_RETRY_AFTER);
        let credentials_floor = self.settings.backoff_max / 2;
        let lines = &lines;
        let write = |attempt: u32| async move {
            if attempt > 0 {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
            }
            let started = Instant::now();
            match self.sink.write(lines).await {
                Ok(()) => {
                    self.stats
                        .last_write_us
                        .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
                    self.stats
                        .points_written
                        .fetch_add(lines.len() as u64, Ordering::Relaxed);
                    *self.stats.write_failing.lock().expect("stats poisoned") = None;
                    Ok(())
                }
                Err(error) => {
                    *self.stats.write_failing.lock().expect("stats poisoned") =
                        Some(error.to_string());
                    if let SinkError::Unauthorized(reason) = &error {
                        tracing::error!(
                            reason,
                            "the metrics server refuses our credentials (WHISPERFLEET_INFLUX_TOKEN?); holding every event until it accepts them"
                        );
                    }
                    Err(WriteFailure {
                        error,
                        credentials_floor,
                        points: lines.len(),
                    })
                }
            }
        };
        match retry_until(&policy, "metrics write", hard_stop, write).await {
            Some(Ok(())) => Outcome::Written,
            None => Outcome::Stopped,
            Some(Err(failure)) => match failure.error {
                SinkError::TooLarge => {
                    Outcome::Split("a single metric event is larger than the server accepts".into())
                }
                SinkError::Rejected(reason) => {
                    if batch.len() > 1 {
                        tracing::info!(events = batch.len(), "server rejected points; bisecting");
                    }
                    Outcome::Split(reason)
                }
                // Retried forever, so not returned; were they, the batch stays unacked and
                // RabbitMQ redelivers it.
                SinkError::Retryable { .. } | SinkError::Unauthorized(_) => Outcome::Stopped,
            },
        }
    }
}

/// A failed write as the batcher's policy sees it: the sink's classification, except that
/// refused credentials are retried no faster than every `backoff_max / 2` (each attempt is
/// logged at error level, and an operator needs time to fix the token).
struct WriteFailure {
    error: SinkError,
    credentials_floor: Duration,
    points: usize,
}

impl Retryable for WriteFailure {
    fn retry_action(&self) -> RetryAction {
        match self.error {
            SinkError::Unauthorized(_) => RetryAction::RetryAfter(self.credentials_floor),
            ref other => other.retry_action(),
        }
    }
}

impl fmt::Display for WriteFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} points)", self.error, self.points)
    }
}

enum Outcome {
    Written,
    /// Rejected or too large: split (or, for one event, dead-letter with this reason).
    Split(String),
    Stopped,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_credentials_wait_at_least_the_floor() {
        let failure = |error| WriteFailure {
            error,
            credentials_floor: Duration::from_secs(5),
            points: 1,
        };
        assert_eq!(
            failure(SinkError::Unauthorized("no".into())).retry_action(),
            RetryAction::RetryAfter(Duration::from_secs(5))
        );
        assert_eq!(
            failure(SinkError::Retryable {
                reason: "503".into(),
                retry_after_s: None
            })
            .retry_action(),
            RetryAction::Retry
        );
        assert_eq!(
            failure(SinkError::TooLarge).retry_action(),
            RetryAction::DontRetry
        );
    }

    #[test]
    fn validates_line_protocol() {
        let ok = validate(
            b"turn,character=a llm_ms=1.5,cdl_queries=0i 1700000000000000000\ncache hits=1i\n",
        )
        .unwrap();
        assert_eq!(ok.len(), 2);
        assert!(validate(b"turn llm_ms=").unwrap_err().contains("line 1"));
        assert!(validate(b"no_fields_here 123").is_err());
        assert!(validate(b"").unwrap_err().contains("no points"));
        assert!(validate(&[0xff, 0x00]).unwrap_err().contains("UTF-8"));
        let err = validate(b"ok a=1i\nbad a=notanumber\n").unwrap_err();
        assert!(err.contains("line 2"), "{err}");
    }
}
