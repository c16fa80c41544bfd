//! Metric events leave a process in batches, not one broker message per turn.
//!
//! Group commit: points handed over while a batch is on its way to the broker join the
//! next batch, which leaves as soon as the one before it was confirmed. One turn at a time,
//! each turn's points go at once, alone; under load one confirmed publish (and one
//! delivery, one ack at the metrics-writer) carries the points of every turn that finished
//! meanwhile. Without a linger nothing waits on a timer, and nothing is weakened either way:
//! a caller of [`MetricBatcher::send`] hears back only when the batch carrying its points
//! was confirmed (the worker acks a turn after that, as before).
//!
//! A batch carries the `traceparent` of the first points in it (alone, that is the turn's).
//!
//! A batcher may also **linger** ([`MetricBatcher::with_linger`]): the first points of a
//! batch wait that long for others to join, as Telegraf's `flush_interval` does, so one
//! publish carries a period's turns at any load (the gateway's delivery points: 100 ms;
//! the worker's: 25 ms, which delay only the turn's ack); [`MetricBatcher::drain`] sends
//! what is pending at shutdown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, oneshot};

use crate::ports::broker::{Broker, Message};
use crate::trace::TraceContext;

/// What a batch may hold while the one before it is on its way; points handed over beyond
/// it (the broker is slow or down) are dropped and counted, so memory stays bounded.
const MAX_PENDING_BYTES: usize = 4 * 1024 * 1024;

pub struct MetricBatcher {
    broker: Arc<dyn Broker>,
    state: Mutex<Pending>,
    linger: Duration,
    /// Set by [`MetricBatcher::drain`]: no more lingering.
    closing: AtomicBool,
    wake: Notify,
}

#[derive(Default)]
struct Pending {
    body: Vec<u8>,
    trace: Option<TraceContext>,
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
    /// A task is publishing (and will take what is pending next).
    flushing: bool,
    dropped: u64,
}

impl MetricBatcher {
    pub fn new(broker: Arc<dyn Broker>) -> Arc<Self> {
        Self::with_linger(broker, Duration::ZERO)
    }

    /// A batcher whose batches wait `linger` for more points before they leave.
    pub fn with_linger(broker: Arc<dyn Broker>, linger: Duration) -> Arc<Self> {
        Arc::new(Self {
            broker,
            state: Mutex::new(Pending::default()),
            linger,
            closing: AtomicBool::new(false),
            wake: Notify::new(),
        })
    }

    /// Sends what is pending now (no lingering from here on) and waits until it left, for
    /// at most `limit`; returns whether everything did.
    pub async fn drain(&self, limit: Duration) -> bool {
        self.closing.store(true, Ordering::Relaxed);
        self.wake.notify_one();
        let deadline = Instant::now() + limit;
        loop {
            {
                let p = self.lock();
                if p.body.is_empty() && !p.flushing {
                    return true;
                }
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Queues line-protocol `lines` and waits until the batch carrying them was confirmed;
    /// the error says why it was not (the points are then lost, as a failed publish of them
    /// alone would have lost them).
    pub async fn send(
        self: &Arc<Self>,
        lines: &[u8],
        trace: Option<TraceContext>,
    ) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.add(lines, trace, Some(tx));
        rx.await
            .unwrap_or_else(|_| Err("the metric batch was dropped".into()))
    }

    /// Queues line-protocol `lines` without waiting (the gateway's delivery points).
    pub fn push(self: &Arc<Self>, lines: &[u8], trace: Option<TraceContext>) {
        self.add(lines, trace, None);
    }

    /// Points dropped so far because too much was pending.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.state.lock().expect("metric batch lock")
    }

    fn add(
        self: &Arc<Self>,
        lines: &[u8],
        trace: Option<TraceContext>,
        waiter: Option<oneshot::Sender<Result<(), String>>>,
    ) {
        let start = {
            let mut p = self.lock();
            if p.body.len() + lines.len() > MAX_PENDING_BYTES {
                p.dropped += 1;
                drop(p);
                if let Some(w) = waiter {
                    let _ = w.send(Err("too many metric points pending".into()));
                }
                return;
            }
            if !p.body.is_empty() && !p.body.ends_with(b"\n") {
                p.body.push(b'\n');
            }
            p.body.extend_from_slice(lines);
            if p.trace.is_none() {
                p.trace = trace;
            }
            p.waiters.extend(waiter);
            !std::mem::replace(&mut p.flushing, true)
        };
        if start {
            let this = self.clone();
            tokio::spawn(async move { this.flush().await });
        }
    }

    /// Publishes what is pending, batch after batch, until nothing is.
    async fn flush(self: Arc<Self>) {
        loop {
            if !self.linger.is_zero() && !self.closing.load(Ordering::Relaxed) {
                tokio::select! {
                    () = tokio::time::sleep(self.linger) => {}
                    () = self.wake.notified() => {}
                }
            }
            let (body, trace, waiters) = {
                let mut p = self.lock();
                if p.body.is_empty() {
                    p.flushing = false;
                    return;
                }
                (
                    std::mem::take(&mut p.body),
                    p.trace.take(),
                    std::mem::take(&mut p.waiters),
                )
            };
            let mut msg = Message::line_protocol(body);
            if let Some(t) = &trace {
                msg = msg.with_trace(t);
            }
            let result = self.broker.publish(msg).await.map_err(|e| e.to_string());
            if let Err(e) = &result {
                tracing::debug!(error = %e, turns = waiters.len(), "metric batch not published");
            }
            for w in waiters {
                let _ = w.send(result.clone());
            }
        }
    }
}
