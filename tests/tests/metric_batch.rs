//! Metric events batched on the real RabbitMQ (`whisperfleet_shared::metric_batch`): points
//! handed over while a batch is on its way leave together in the next one, every caller
//! hears back only after its points were confirmed (or why not), a lingering batcher sends
//! ~one message per linger period, and `drain` sends what is pending. Counted from outside:
//! a tap queue bound beside the metrics-writer's.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use whisperfleet_shared::metric_batch::MetricBatcher;
use whisperfleet_shared::ports::broker::{Broker, BrokerError, Message, QueueStats, Subscription};
use whisperfleet_shared::topology;
use whisperfleet_shared::trace::TraceContext;
use whisperfleet_testkit::tap::MessageTap;
use whisperfleet_testkit::*;

const HANG: Duration = Duration::from_secs(30);

/// The real broker, with a gate on publishing: while closed, publishes wait (a slow
/// confirm); a failing one refuses every publish.
struct Gated {
    inner: Arc<dyn Broker>,
    open: tokio::sync::watch::Receiver<bool>,
    fail: bool,
    publishes: AtomicUsize,
}

#[async_trait]
impl Broker for Gated {
    async fn ensure_topology(&self) -> Result<(), BrokerError> {
        self.inner.ensure_topology().await
    }
    async fn ensure_reply_queue(&self, gateway_id: &str) -> Result<String, BrokerError> {
        self.inner.ensure_reply_queue(gateway_id).await
    }
    async fn publish(&self, msg: Message) -> Result<(), BrokerError> {
        self.publishes.fetch_add(1, Ordering::SeqCst);
        let mut open = self.open.clone();
        let _ = open.wait_for(|o| *o).await;
        if self.fail {
            return Err(BrokerError::Unavailable("refused by the test".into()));
        }
        self.inner.publish(msg).await
    }
    async fn publish_many(&self, msgs: Vec<Message>) -> Result<(), BrokerError> {
        self.inner.publish_many(msgs).await
    }
    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Subscription, BrokerError> {
        self.inner.consume(queue, prefetch).await
    }
    async fn subscribe_control(&self) -> Result<Subscription, BrokerError> {
        self.inner.subscribe_control().await
    }
    async fn queue_stats(&self, queue: &str) -> Result<Option<QueueStats>, BrokerError> {
        self.inner.queue_stats(queue).await
    }
    async fn readiness(&self) -> Result<(), BrokerError> {
        self.inner.readiness().await
    }
    fn describe(&self) -> String {
        "gated".into()
    }
}

async fn gated(fleet: &Fleet, fail: bool) -> (Arc<Gated>, tokio::sync::watch::Sender<bool>) {
    let (tx, rx) = tokio::sync::watch::channel(false);
    let b = Arc::new(Gated {
        inner: broker_for(fleet).await,
        open: rx,
        fail,
        publishes: AtomicUsize::new(0),
    });
    (b, tx)
}

fn line(i: usize) -> Vec<u8> {
    format!("batchtest,n={i} v={i}i 1700000000000000000").into_bytes()
}

async fn tap(fleet: &Fleet) -> MessageTap {
    MessageTap::bind(
        &fleet.amqp_url(),
        topology::METRICS_EXCHANGE,
        topology::METRICS_ROUTING_KEY,
    )
    .await
    .unwrap()
}

async fn seen_lines(tap: &MessageTap, want: usize) -> Vec<Vec<String>> {
    eventually(HANG, "the batches at the tap", || async {
        tap.seen()
            .iter()
            .map(|m| m.body.split(|b| *b == b'\n').count())
            .sum::<usize>()
            >= want
    })
    .await;
    tap.seen()
        .iter()
        .map(|m| {
            String::from_utf8_lossy(&m.body)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn points_handed_over_during_a_publish_leave_together_once_confirmed() {
    let fleet = Fleet::new("metric_batch").unwrap();
    let (broker, gate) = gated(&fleet, false).await;
    let tap = tap(&fleet).await;
    let batcher = MetricBatcher::new(broker.clone());
    let first_trace = TraceContext::new_root();
    let mut sends = Vec::new();
    // The first goes at once, alone, and is held at the gate; nine more arrive meanwhile.
    for i in 0..10 {
        let b = batcher.clone();
        let trace = (i == 0).then_some(first_trace);
        sends.push(tokio::spawn(async move { b.send(&line(i), trace).await }));
        if i == 0 {
            eventually(HANG, "the first publish", || async {
                broker.publishes.load(Ordering::SeqCst) == 1
            })
            .await;
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(broker.publishes.load(Ordering::SeqCst), 1);
    for s in &sends {
        assert!(!s.is_finished(), "nobody hears back before the confirm");
    }
    gate.send(true).unwrap();
    for s in sends {
        s.await.unwrap().expect("confirmed");
    }
    let batches = seen_lines(&tap, 10).await;
    assert_eq!(batches.len(), 2, "{batches:?}");
    assert_eq!(batches[0], vec![String::from_utf8(line(0)).unwrap()]);
    let mut rest = batches[1].clone();
    rest.sort();
    let mut want: Vec<String> = (1..10)
        .map(|i| String::from_utf8(line(i)).unwrap())
        .collect();
    want.sort();
    assert_eq!(rest, want, "every point once, in the second batch");
    assert_eq!(
        tap.seen()[0].headers.get(topology::HEADER_TRACEPARENT),
        Some(&first_trace.header()),
        "a batch of one carries its turn's trace"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_batch_tells_every_caller_in_it() {
    let fleet = Fleet::new("metric_batch_fail").unwrap();
    let (broker, gate) = gated(&fleet, true).await;
    let batcher = MetricBatcher::new(broker.clone());
    gate.send(true).unwrap();
    let results = futures::future::join_all((0..5).map(|i| {
        let b = batcher.clone();
        async move { b.send(&line(i), None).await }
    }))
    .await;
    for r in results {
        let e = r.expect_err("a refused publish is not reported as sent");
        assert!(e.contains("refused by the test"), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_lingering_batcher_sends_one_message_per_period_and_drains_at_exit() {
    let fleet = Fleet::new("metric_batch_linger").unwrap();
    let (broker, gate) = gated(&fleet, false).await;
    gate.send(true).unwrap();
    let tap = tap(&fleet).await;
    let batcher = MetricBatcher::with_linger(broker.clone(), Duration::from_secs(30));
    for i in 0..50 {
        batcher.push(&line(i), None);
    }
    // Within the linger nothing left; drain sends the 50 points as one message.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(tap.seen().is_empty());
    assert!(batcher.drain(Duration::from_secs(10)).await);
    let batches = seen_lines(&tap, 50).await;
    assert_eq!(batches.len(), 1, "{batches:?}");
    assert_eq!(batches[0].len(), 50);
    assert_eq!(broker.publishes.load(Ordering::SeqCst), 1);
}
