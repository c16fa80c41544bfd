//! RabbitMQ implementation of the [`Broker`] port (lapin).
//!
//! - Two connections: one publishes, one consumes, so a broker memory alarm that blocks
//!   publishers never blocks acks.
//! - Publishing goes through a small pool of confirm-mode channels; `publish_many` sends a
//!   whole batch and then awaits the confirms together (≈15× faster than one by one).
//!   Messages are `mandatory`: an unroutable message is an error, not a silent drop.
//! - Connections are re-established lazily on the next use after a failure; consumers run
//!   in a task that reconnects with jittered exponential backoff and resubscribes, so a
//!   broker restart needs no process restart. Unacked deliveries of a lost connection are
//!   redelivered by RabbitMQ, which is why every consumer must be idempotent.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use whisperfleet_shared::config::redact_secret_url;
use whisperfleet_shared::ports::broker::{
    Acker, Broker, BrokerError, Delivery, Message, QueueStats, Subscription,
};
use whisperfleet_shared::retry::Backoff;
use whisperfleet_shared::topology::{self, TopologySettings};

const PUBLISH_CHANNELS: usize = 4;

pub struct RabbitBroker {
    url: SecretString,
    name: String,
    topology: TopologySettings,
    publish: Holder,
    consume: Holder,
    next_channel: AtomicUsize,
    me: std::sync::Weak<RabbitBroker>,
}

/// One lazily (re)connected connection and its publishing channels.
struct Holder {
    live: Mutex<Option<Live>>,
    role: &'static str,
}

#[derive(Clone)]
struct Live {
    conn: Arc<Connection>,
    channels: Vec<Channel>,
}

impl Live {
    fn healthy(&self) -> bool {
        self.conn.status().connected() && self.channels.iter().all(|c| c.status().connected())
    }
}

fn unavailable(e: lapin::Error) -> BrokerError {
    BrokerError::Unavailable(e.to_string())
}

fn protocol_code(e: &lapin::Error) -> Option<u16> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(p) => Some(p.get_id()),
        _ => None,
    }
}

impl RabbitBroker {
    /// Connects once to fail fast on a wrong URL or credentials.
    pub async fn connect(
        url: SecretString,
        name: &str,
        topology: TopologySettings,
    ) -> Result<Arc<Self>, BrokerError> {
        let broker = Arc::new_cyclic(|me| Self {
            url,
            name: name.to_string(),
            topology,
            publish: Holder {
                live: Mutex::new(None),
                role: "publish",
            },
            consume: Holder {
                live: Mutex::new(None),
                role: "consume",
            },
            next_channel: AtomicUsize::new(0),
            me: me.clone(),
        });
        broker.live(&broker.publish).await?;
        Ok(broker)
    }

    async fn live(&self, holder: &Holder) -> Result<Live, BrokerError> {
        let mut guard = holder.live.lock().await;
        if let Some(live) = guard.as_ref() {
            if live.healthy() {
                return Ok(live.clone());
            }
            tracing::warn!(role = holder.role, "broker connection lost; reconnecting");
        }
        *guard = None;
        let props = ConnectionProperties::default()
            .with_connection_name(format!("{}/{}", self.name, holder.role).into());
        let conn = Connection::connect(self.url.expose_secret(), props)
            .await
            .map_err(|e| {
                BrokerError::Unavailable(format!(
                    "cannot connect to {}: {e}",
                    redact_secret_url(&self.url)
                ))
            })?;
        let mut channels = Vec::new();
        let n = if holder.role == "publish" {
            PUBLISH_CHANNELS
        } else {
            0
        };
        for _ in 0..n {
            let ch = conn.create_channel().await.map_err(unavailable)?;
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(unavailable)?;
            channels.push(ch);
        }
        let live = Live {
            conn: Arc::new(conn),
            channels,
        };
        *guard = Some(live.clone());
        Ok(live)
    }

    async fn publish_channel(&self) -> Result<Channel, BrokerError> {
        let live = self.live(&self.publish).await?;
        let i = self.next_channel.fetch_add(1, Ordering::Relaxed) % live.channels.len();
        Ok(live.channels[i].clone())
    }

    /// A fresh channel for one-off operations (declarations, passive declares that may
    /// close the channel with 404).
    async fn scratch_channel(&self) -> Result<Channel, BrokerError> {
        let live = self.live(&self.publish).await?;
        live.conn.create_channel().await.map_err(unavailable)
    }

    async fn send(
        &self,
        ch: &Channel,
        msg: &Message,
    ) -> Result<lapin::PublisherConfirm, BrokerError> {
        let mut headers = FieldTable::default();
        for (k, v) in &msg.headers {
            headers.insert(
                ShortString::from(k.as_str()),
                AMQPValue::LongString(LongString::from(v.as_bytes())),
            );
        }
        let mut props = BasicProperties::default()
            .with_content_type(msg.content_type.into())
            .with_delivery_mode(if msg.persistent { 2 } else { 1 })
            .with_headers(headers);
        if let Some(id) = &msg.message_id {
            props = props.with_message_id(id.as_str().into());
        }
        ch.basic_publish(
            msg.exchange.as_str().into(),
            msg.routing_key.as_str().into(),
            BasicPublishOptions {
                mandatory: true,
                ..Default::default()
            },
            &msg.body,
            props,
        )
        .await
        .map_err(unavailable)
    }

    async fn settle(confirm: lapin::PublisherConfirm, msg: &Message) -> Result<(), BrokerError> {
        let c = confirm.await.map_err(unavailable)?;
        if c.is_nack() {
            return Err(BrokerError::Rejected(format!(
                "broker nacked message to {}/{}",
                msg.exchange, msg.routing_key
            )));
        }
        if c.take_message().is_some() {
            return Err(BrokerError::Unroutable(format!(
                "no queue is bound to {} with key {:?}",
                msg.exchange, msg.routing_key
            )));
        }
        Ok(())
    }

    async fn declare_all(&self, ch: &Channel) -> Result<(), lapin::Error> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for (name, kind) in [
            (topology::TURNS_EXCHANGE, ExchangeKind::Direct),
            (topology::REPLIES_EXCHANGE, ExchangeKind::Direct),
            (topology::METRICS_EXCHANGE, ExchangeKind::Direct),
            (topology::DEAD_EXCHANGE, ExchangeKind::Direct),
            (topology::CONTROL_EXCHANGE, ExchangeKind::Fanout),
        ] {
            ch.exchange_declare(name.into(), kind, durable, FieldTable::default())
                .await?;
        }
        let mut turns_args = FieldTable::default();
        turns_args.insert("x-queue-type".into(), long_str("quorum"));
        turns_args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(self.topology.delivery_limit)),
        );
        turns_args.insert(
            "x-dead-letter-exchange".into(),
            long_str(topology::DEAD_EXCHANGE),
        );
        turns_args.insert(
            "x-dead-letter-routing-key".into(),
            long_str(topology::TURNS_QUEUE),
        );
        let mut metrics_args = FieldTable::default();
        metrics_args.insert(
            "x-dead-letter-exchange".into(),
            long_str(topology::DEAD_EXCHANGE),
        );
        metrics_args.insert(
            "x-dead-letter-routing-key".into(),
            long_str(topology::METRICS_QUEUE),
        );
        let mut dead_args = FieldTable::default();
        dead_args.insert("x-queue-type".into(), long_str("quorum"));
        for (queue, args, exchange, key) in [
            (
                topology::TURNS_QUEUE,
                turns_args,
                topology::TURNS_EXCHANGE,
                topology::TURNS_ROUTING_KEY,
            ),
            (
                topology::METRICS_QUEUE,
                metrics_args,
                topology::METRICS_EXCHANGE,
                topology::METRICS_ROUTING_KEY,
            ),
            (
                topology::TURNS_DEAD_QUEUE,
                dead_args.clone(),
                topology::DEAD_EXCHANGE,
                topology::TURNS_QUEUE,
            ),
            (
                topology::METRICS_DEAD_QUEUE,
                dead_args,
                topology::DEAD_EXCHANGE,
                topology::METRICS_QUEUE,
            ),
        ] {
            ch.queue_declare(queue.into(), QueueDeclareOptions::durable(), args)
                .await?;
            ch.queue_bind(
                queue.into(),
                exchange.into(),
                key.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        Ok(())
    }

    async fn open_consumer(
        &self,
        target: &Target,
        prefetch: u16,
    ) -> Result<(Channel, lapin::Consumer, String), BrokerError> {
        let live = self.live(&self.consume).await?;
        let ch = live.conn.create_channel().await.map_err(unavailable)?;
        ch.basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(unavailable)?;
        let queue = match target {
            Target::Queue(q) => q.clone(),
            Target::Control => {
                // Server-named, exclusive to this connection: gone when the process is.
                let q = ch
                    .queue_declare(
                        "".into(),
                        QueueDeclareOptions {
                            exclusive: true,
                            auto_delete: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .map_err(unavailable)?;
                let name = q.name().as_str().to_string();
                ch.queue_bind(
                    name.as_str().into(),
                    topology::CONTROL_EXCHANGE.into(),
                    "".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(unavailable)?;
                name
            }
        };
        let consumer = ch
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| match protocol_code(&e) {
                Some(404) => BrokerError::Fatal(format!("queue {queue} does not exist")),
                _ => unavailable(e),
            })?;
        Ok((ch, consumer, queue))
    }

    /// Runs the consumer task. Its first subscription attempt is reported on the returned
    /// receiver, so a caller can fail its startup on a missing queue or a bad URL; after that
    /// it reconnects on its own.
    fn spawn_consumer(
        self: &Arc<Self>,
        target: Target,
        prefetch: u16,
    ) -> (Subscription, oneshot::Receiver<Result<(), BrokerError>>) {
        let (tx, rx) = mpsc::channel(usize::from(prefetch.max(1)));
        let (ready_tx, ready_rx) = oneshot::channel();
        let mut ready = Some(ready_tx);
        let stop = CancellationToken::new();
        let me = self.clone();
        let stop2 = stop.clone();
        tokio::spawn(async move {
            let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
            'connect: loop {
                if stop2.is_cancelled() || tx.is_closed() {
                    break;
                }
                // Resubscribing: what this consumer reads may be gone (a reply queue expired
                // or was deleted, or a broker restart lost the definitions), so declare it
                // again first; declaring is idempotent.
                if ready.is_none()
                    && let Err(e) = me.redeclare(&target).await
                {
                    tracing::debug!(error = %e, "could not declare the topology again yet");
                }
                let (ch, mut consumer, queue) = match me.open_consumer(&target, prefetch).await {
                    Ok(x) => x,
                    Err(e) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(Err(e));
                            break;
                        }
                        let wait = backoff.next_delay();
                        tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "cannot consume; retrying");
                        tokio::select! {
                            _ = stop2.cancelled() => break,
                            _ = tokio::time::sleep(wait) => continue,
                        }
                    }
                };
                backoff.reset();
                if let Some(r) = ready.take() {
                    let _ = r.send(Ok(()));
                }
                tracing::debug!(queue, "consuming");
                loop {
                    tokio::select! {
                        _ = stop2.cancelled() => {
                            let _ = ch.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await;
                            // Deliveries already handed out are acked on this channel: keep it
                            // open until their owner drops the subscription.
                            tx.closed().await;
                            drop(ch);
                            break 'connect;
                        }
                        // The subscription was dropped without `stop`: cancel the consumer
                        // and close the channel, so RabbitMQ redelivers what it still holds.
                        _ = tx.closed() => {
                            let _ = ch.basic_cancel(consumer.tag(), BasicCancelOptions::default()).await;
                            drop(ch);
                            break 'connect;
                        }
                        next = consumer.next() => match next {
                            Some(Ok(d)) => {
                                if tx.send(convert(&queue, d)).await.is_err() {
                                    break 'connect;
                                }
                            }
                            Some(Err(e)) => {
                                tracing::warn!(queue, error = %e, "consumer failed; resubscribing");
                                break;
                            }
                            None => {
                                tracing::warn!(queue, "consumer cancelled by the broker; resubscribing");
                                break;
                            }
                        }
                    }
                }
                tokio::select! {
                    _ = stop2.cancelled() => break,
                    _ = tokio::time::sleep(backoff.next_delay()) => {},
                }
            }
        });
        (Subscription { rx, stop }, ready_rx)
    }
}

impl RabbitBroker {
    /// Declares again the fleet topology and, for a reply queue, that queue and its binding.
    async fn redeclare(&self, target: &Target) -> Result<(), BrokerError> {
        self.ensure_topology().await?;
        if let Target::Queue(queue) = target
            && let Some(gateway_id) = queue.strip_prefix(topology::REPLY_QUEUE_PREFIX)
        {
            self.ensure_reply_queue(gateway_id).await?;
        }
        Ok(())
    }
}

async fn first_subscription(
    sub: Subscription,
    ready: oneshot::Receiver<Result<(), BrokerError>>,
) -> Result<Subscription, BrokerError> {
    match ready.await {
        Ok(Ok(())) => Ok(sub),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(BrokerError::Unavailable(
            "consumer stopped before subscribing".into(),
        )),
    }
}

enum Target {
    Queue(String),
    Control,
}

fn long_str(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes()))
}

fn header_string(v: &AMQPValue) -> Option<String> {
    Some(match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::LongLongInt(i) => i.to_string(),
        AMQPValue::LongInt(i) => i.to_string(),
        AMQPValue::LongUInt(i) => i.to_string(),
        AMQPValue::ShortInt(i) => i.to_string(),
        AMQPValue::ShortUInt(i) => i.to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        _ => return None,
    })
}

fn convert(queue: &str, d: lapin::message::Delivery) -> Delivery {
    let mut headers = BTreeMap::new();
    if let Some(table) = d.properties.headers() {
        for (k, v) in table.inner() {
            if let Some(s) = header_string(v) {
                headers.insert(k.as_str().to_string(), s);
            }
        }
    }
    let delivery_count = headers
        .get("x-delivery-count")
        .and_then(|c| c.parse().ok())
        .unwrap_or(u32::from(d.redelivered));
    Delivery {
        queue: queue.to_string(),
        message_id: d.properties.message_id().as_ref().map(|m| m.to_string()),
        headers,
        redelivered: d.redelivered,
        delivery_count,
        body: d.data,
        acker: Box::new(LapinAcker(d.acker)),
    }
}

struct LapinAcker(lapin::Acker);

#[async_trait]
impl Acker for LapinAcker {
    async fn ack(&self) -> Result<(), BrokerError> {
        self.0
            .ack(BasicAckOptions::default())
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
    async fn ack_up_to(&self) -> Result<(), BrokerError> {
        self.0
            .ack(BasicAckOptions { multiple: true })
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
    async fn requeue(&self) -> Result<(), BrokerError> {
        self.0
            .nack(BasicNackOptions {
                requeue: true,
                ..Default::default()
            })
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
    async fn reject(&self) -> Result<(), BrokerError> {
        self.0
            .reject(BasicRejectOptions { requeue: false })
            .await
            .map(|_| ())
            .map_err(unavailable)
    }
}

#[async_trait]
impl Broker for RabbitBroker {
    async fn ensure_topology(&self) -> Result<(), BrokerError> {
        let ch = self.scratch_channel().await?;
        let res = self.declare_all(&ch).await;
        let _ = ch.close(200, "OK".into()).await;
        res.map_err(|e| match protocol_code(&e) {
            Some(406) => BrokerError::Fatal(format!(
                "a fleet queue exists with other arguments than this process declares \
                 (delivery limit or type changed?): {e}"
            )),
            _ => unavailable(e),
        })
    }

    async fn ensure_reply_queue(&self, gateway_id: &str) -> Result<String, BrokerError> {
        let queue = topology::reply_queue(gateway_id);
        let ch = self.scratch_channel().await?;
        let mut args = FieldTable::default();
        args.insert(
            "x-expires".into(),
            AMQPValue::LongLongInt(self.topology.reply_queue_expires.as_millis() as i64),
        );
        let res = async {
            ch.queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), args)
                .await?;
            ch.queue_bind(
                queue.as_str().into(),
                topology::REPLIES_EXCHANGE.into(),
                gateway_id.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
        }
        .await;
        let _ = ch.close(200, "OK".into()).await;
        res.map_err(unavailable)?;
        Ok(queue)
    }

    async fn publish(&self, msg: Message) -> Result<(), BrokerError> {
        let ch = self.publish_channel().await?;
        let confirm = self.send(&ch, &msg).await?;
        Self::settle(confirm, &msg).await
    }

    async fn publish_many(&self, msgs: Vec<Message>) -> Result<(), BrokerError> {
        let ch = self.publish_channel().await?;
        let mut pending = Vec::with_capacity(msgs.len());
        for msg in &msgs {
            pending.push(self.send(&ch, msg).await?);
        }
        for (confirm, msg) in pending.into_iter().zip(&msgs) {
            Self::settle(confirm, msg).await?;
        }
        Ok(())
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Subscription, BrokerError> {
        let (sub, ready) = self
            .self_arc()?
            .spawn_consumer(Target::Queue(queue.to_string()), prefetch);
        first_subscription(sub, ready).await
    }

    async fn subscribe_control(&self) -> Result<Subscription, BrokerError> {
        let (sub, ready) = self.self_arc()?.spawn_consumer(Target::Control, 64);
        first_subscription(sub, ready).await
    }

    async fn queue_stats(&self, queue: &str) -> Result<Option<QueueStats>, BrokerError> {
        let ch = self.scratch_channel().await?;
        let res = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions::durable().passive(),
                FieldTable::default(),
            )
            .await;
        match res {
            Ok(q) => {
                let _ = ch.close(200, "OK".into()).await;
                Ok(Some(QueueStats {
                    queue: queue.to_string(),
                    ready: u64::from(q.message_count()),
                    consumers: q.consumer_count(),
                }))
            }
            Err(e) if protocol_code(&e) == Some(404) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn is_ready(&self) -> bool {
        self.live(&self.publish).await.is_ok()
    }

    fn describe(&self) -> String {
        format!("rabbitmq at {}", redact_secret_url(&self.url))
    }
}

impl RabbitBroker {
    /// Consumer tasks need an owned handle; brokers are always built as `Arc` by `connect`.
    fn self_arc(&self) -> Result<Arc<Self>, BrokerError> {
        self.me
            .upgrade()
            .ok_or_else(|| BrokerError::Fatal("broker is shutting down".into()))
    }
}
