//! The broker port: publish with confirms, consume with bounded prefetch and explicit acks,
//! dead-letter with a reason. RabbitMQ implements it in [`crate::amqp`]; an in-process
//! implementation with the same contract serves the embedded mode.

use std::collections::BTreeMap;

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::retry::{RetryAction, Retryable};
use crate::topology;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Connection or channel trouble: retryable once the broker is back.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused the message (a nack: a full queue, a queue that rejects
    /// publishes, an internal error). The message was not taken: a failure, retryable.
    #[error("broker did not accept the message: {0}")]
    Rejected(String),
    /// No queue is bound for the message (a mandatory publish came back): nobody would
    /// receive it. Not retryable; for a reply it means its gateway is gone.
    #[error("nobody receives the message: {0}")]
    Unroutable(String),
    /// Topology arguments disagree with what already exists, or similar: not retryable.
    #[error("broker refused the operation: {0}")]
    Fatal(String),
}

impl BrokerError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Rejected(_))
    }
}

impl Retryable for BrokerError {
    fn retry_action(&self) -> RetryAction {
        if self.is_retryable() {
            RetryAction::Retry
        } else {
            RetryAction::DontRetry
        }
    }
}

/// A message to publish. Persistent unless said otherwise.
#[derive(Debug, Clone)]
pub struct Message {
    pub exchange: String,
    pub routing_key: String,
    pub body: Vec<u8>,
    pub headers: BTreeMap<String, String>,
    pub message_id: Option<String>,
    pub content_type: &'static str,
    pub persistent: bool,
}

impl Message {
    pub fn json(exchange: &str, routing_key: &str, body: Vec<u8>) -> Self {
        Self {
            exchange: exchange.into(),
            routing_key: routing_key.into(),
            body,
            headers: BTreeMap::new(),
            message_id: None,
            content_type: "application/json",
            persistent: true,
        }
    }

    pub fn line_protocol(body: Vec<u8>) -> Self {
        Self {
            content_type: "text/plain; charset=utf-8",
            ..Self::json(
                topology::METRICS_EXCHANGE,
                topology::METRICS_ROUTING_KEY,
                body,
            )
        }
    }

    pub fn with_id(mut self, id: impl Into<String>) -> Self {
        self.message_id = Some(id.into());
        self
    }

    /// Carries `ctx` in the `traceparent` header (the turn this message belongs to).
    pub fn with_trace(mut self, ctx: &crate::trace::TraceContext) -> Self {
        self.headers
            .insert(topology::HEADER_TRACEPARENT.into(), ctx.header());
        self
    }

    /// [`Message::with_trace`] with the current task's trace context, when it runs one.
    pub fn traced(self) -> Self {
        match crate::trace::current() {
            Some(ctx) => self.with_trace(&ctx),
            None => self,
        }
    }
}

/// Settles one delivery. Exactly one of these is called per delivery.
#[async_trait]
pub trait Acker: Send + Sync {
    async fn ack(&self) -> Result<(), BrokerError>;
    /// Acks this delivery and every earlier unsettled one of the same subscription (AMQP
    /// `multiple`): one frame for a whole batch.
    async fn ack_up_to(&self) -> Result<(), BrokerError>;
    /// Back to the queue (counts as a delivery attempt on quorum queues: not for flow control).
    async fn requeue(&self) -> Result<(), BrokerError>;
    /// Straight to the queue's dead-letter exchange, without our reason header.
    async fn reject(&self) -> Result<(), BrokerError>;
}

/// One received message.
pub struct Delivery {
    pub queue: String,
    pub body: Vec<u8>,
    pub headers: BTreeMap<String, String>,
    pub message_id: Option<String>,
    pub redelivered: bool,
    /// Earlier deliveries of this message (quorum queues' `x-delivery-count`; 0 the first time).
    pub delivery_count: u32,
    pub acker: Box<dyn Acker>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("queue", &self.queue)
            .field("bytes", &self.body.len())
            .field("message_id", &self.message_id)
            .field("redelivered", &self.redelivered)
            .field("delivery_count", &self.delivery_count)
            .finish()
    }
}

/// A running consumer: deliveries arrive on `rx`; `stop` cancels the subscription (already
/// delivered messages stay in `rx` to be finished and acked); `consuming` says whether it is
/// subscribed on the broker right now.
pub struct Subscription {
    pub rx: mpsc::Receiver<Delivery>,
    pub stop: CancellationToken,
    /// Cloned out before `rx` is handed to whatever drains it, for readiness probes.
    pub consuming: Consuming,
}

/// Whether a subscription's consumer is subscribed on the broker right now: false while it
/// reconnects, while its queue is missing (re-declared on the next attempt), and after it
/// ended. A readiness probe reads it instead of trusting a connection that is up but
/// consumes nothing. Cheap to clone and to read.
#[derive(Debug, Clone)]
pub struct Consuming(watch::Receiver<bool>);

impl Consuming {
    /// The consumer task's end (it says when it subscribed and when it lost the
    /// subscription) and the readers' end. Starts as not consuming.
    pub fn channel() -> (watch::Sender<bool>, Self) {
        let (tx, rx) = watch::channel(false);
        (tx, Self(rx))
    }

    /// Subscribed right now. A consumer task that ended (its sender dropped) left `false`.
    pub fn now(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until the consumer is (or is no longer) subscribed; returns at once when the
    /// consumer task ended while waiting for `true`.
    pub async fn wait_for(&mut self, consuming: bool) {
        let _ = self.0.wait_for(|c| *c == consuming).await;
    }
}

/// Depth of one queue as the broker reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueStats {
    pub queue: String,
    pub ready: u64,
    pub consumers: u32,
}

#[async_trait]
pub trait Broker: Send + Sync + 'static {
    /// Declares the fleet's exchanges, queues and bindings (idempotent).
    async fn ensure_topology(&self) -> Result<(), BrokerError>;
    /// Declares `replies.<gateway_id>` and binds it; returns the queue name.
    async fn ensure_reply_queue(&self, gateway_id: &str) -> Result<String, BrokerError>;
    /// Publishes and waits for the broker's confirm.
    async fn publish(&self, msg: Message) -> Result<(), BrokerError>;
    /// Publishes all, then waits for all confirms together (pipelined).
    async fn publish_many(&self, msgs: Vec<Message>) -> Result<(), BrokerError>;
    /// Consumes `queue` with at most `prefetch` unacked deliveries, reconnecting on its own.
    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Subscription, BrokerError>;
    /// A private, auto-deleted subscription to the `fleet.control` fanout.
    async fn subscribe_control(&self) -> Result<Subscription, BrokerError>;
    /// Ready count and consumers of a queue; `None` when it does not exist.
    async fn queue_stats(&self, queue: &str) -> Result<Option<QueueStats>, BrokerError>;
    /// Whether the broker takes publishes right now, and if not why (for readiness probes):
    /// unreachable, or blocking publishers (RabbitMQ's `connection.blocked`, a memory or
    /// disk alarm). Never waits longer than the broker's timeout.
    async fn readiness(&self) -> Result<(), BrokerError>;
    /// [`Broker::readiness`] without the reason.
    async fn is_ready(&self) -> bool {
        self.readiness().await.is_ok()
    }
    /// `rabbitmq at amqp://host:5672/vhost` or `embedded`, without credentials.
    fn describe(&self) -> String;
}

/// Moves a delivery to its dead-letter queue with `reason` in a header, then acks it.
/// If the dead-letter publish fails the delivery is left unsettled (it will come back), so
/// nothing is lost.
pub async fn dead_letter(
    broker: &dyn Broker,
    delivery: Delivery,
    reason: &str,
) -> Result<(), BrokerError> {
    let mut headers = delivery.headers.clone();
    // The source queue's count would read as this dead letter's own deliveries.
    headers.remove("x-delivery-count");
    headers.insert(topology::HEADER_DEAD_REASON.into(), truncate(reason, 1000));
    headers.insert(topology::HEADER_DEAD_SOURCE.into(), delivery.queue.clone());
    let msg = Message {
        exchange: topology::DEAD_EXCHANGE.into(),
        routing_key: delivery.queue.clone(),
        body: delivery.body.clone(),
        headers,
        message_id: delivery.message_id.clone(),
        content_type: "application/octet-stream",
        persistent: true,
    };
    broker.publish(msg).await?;
    delivery.acker.ack().await
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
