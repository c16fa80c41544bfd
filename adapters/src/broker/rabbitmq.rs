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
//!   redelivered by RabbitMQ, which is why every consumer must be idempotent. Each
//!   [`Subscription`] says whether it is subscribed right now ([`Consuming`]), for readiness.
//! - Every wait is bounded by one timeout (`WHISPERFLEET_BROKER_TIMEOUT_MS`): connecting,
//!   opening a channel, declaring, publishing and its confirm, settling a delivery. A broker
//!   that does not answer is `Unavailable`, never a caller held forever.
//! - `connection.blocked`: a memory or disk alarm makes RabbitMQ stop reading from every
//!   connection that publishes (lapin then stops writing to it too). The publish connection
//!   keeps the reason it was given while blocked; publishes fail at once with
//!   `Unavailable("broker is blocking publishers: …")` (one already waiting for its confirm
//!   fails as soon as the notice arrives, and its confirm is kept, so that publishing the
//!   same message id again waits for that copy instead of sending a second one:
//!   `unconfirmed.rs`) and [`Broker::readiness`] reports it. Declarations,
//!   queue stats and acks go over the consume connection, which never publishes, so RabbitMQ
//!   never blocks it: consumers keep consuming and resubscribing during an alarm.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use lapin::options::{
    BasicCancelOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Event, ExchangeKind};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Mutex, mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use whisperfleet_shared::config::redact_secret_url;
use whisperfleet_shared::ports::broker::{
    Broker, BrokerError, Consuming, Message, QueueStats, Subscription,
};
use whisperfleet_shared::retry::Backoff;
use whisperfleet_shared::topology::{self, TopologySettings};

mod delivery;
mod unconfirmed;

use delivery::convert;
use unconfirmed::{Resumed, Unconfirmed};

const PUBLISH_CHANNELS: usize = 4;

pub struct RabbitBroker {
    url: SecretString,
    name: String,
    topology: TopologySettings,
    /// Bound on every single wait for the broker.
    timeout: Duration,
    publish: Holder,
    consume: Holder,
    next_channel: AtomicUsize,
    /// Messages written before the broker blocked the connection, not yet confirmed.
    unconfirmed: Unconfirmed,
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
    /// The broker's reason while it blocks this connection (`connection.blocked`), kept by
    /// the task [`watch_blocked`] starts.
    blocked: watch::Receiver<Option<String>>,
}

impl Live {
    fn healthy(&self) -> bool {
        self.conn.status().connected() && self.channels.iter().all(|c| c.status().connected())
    }

    /// Why the broker blocks this connection, while it does. lapin's own flag is set a
    /// moment before the event with the reason arrives: either counts.
    fn blocked(&self) -> Option<String> {
        let reason = self.blocked.borrow().clone();
        reason.or_else(|| {
            self.conn
                .status()
                .blocked()
                .then(|| "no reason given yet".to_string())
        })
    }

    /// Fails at once while the broker blocks this connection: anything sent now would wait
    /// until the alarm clears.
    fn unblocked(&self) -> Result<(), BrokerError> {
        match self.blocked() {
            Some(reason) => Err(blocked_error(&reason)),
            None => Ok(()),
        }
    }

    /// The error a publish gets once the broker blocks this connection (at once if it does
    /// already); never resolves when the connection goes away without being blocked.
    async fn until_blocked(&self) -> BrokerError {
        let mut blocked = self.blocked.clone();
        // The reason is copied out: the watch's guard must not live across an await.
        let reason = match blocked.wait_for(Option::is_some).await {
            Ok(reason) => reason.clone(),
            Err(_) => None,
        };
        match reason {
            Some(reason) => blocked_error(&reason),
            None => std::future::pending().await,
        }
    }
}

/// A confirm's verdict: a nack is a refusal, a returned message had no queue to go to.
fn check_confirm(c: lapin::Confirmation, msg: &Message) -> Result<(), BrokerError> {
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

fn blocked_error(reason: &str) -> BrokerError {
    BrokerError::Unavailable(format!("broker is blocking publishers: {reason}"))
}

/// Follows the connection's `connection.blocked` / `connection.unblocked` notices (a memory
/// or disk alarm on the broker) into the returned state, logging each change once. The task
/// ends with the connection's event stream or when every [`Live`] of it is gone.
fn watch_blocked(conn: &Connection, role: &'static str) -> watch::Receiver<Option<String>> {
    let (tx, rx) = watch::channel(None);
    // Listen before anything can be blocked: lapin drops events nobody listens to.
    let events = conn.events_listener();
    tokio::spawn(async move {
        tokio::pin!(events);
        loop {
            let event = tokio::select! {
                e = events.next() => e,
                _ = tx.closed() => break,
            };
            match event {
                None => break,
                Some(Event::ConnectionBlocked(reason)) => {
                    tracing::warn!(
                        role,
                        reason,
                        "the broker blocks publishers (a resource alarm): publishing fails until it clears"
                    );
                    tx.send_replace(Some(reason));
                }
                Some(Event::ConnectionUnblocked) => {
                    tracing::info!(role, "the broker takes publishes again");
                    tx.send_replace(None);
                }
                Some(_) => {}
            }
        }
    });
    rx
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

/// A bounded broker call that did not succeed: the broker's error (some callers need its
/// reply code) or no answer in time.
enum CallError {
    Broker(lapin::Error),
    TimedOut(String),
}

impl CallError {
    fn code(&self) -> Option<u16> {
        match self {
            Self::Broker(e) => protocol_code(e),
            Self::TimedOut(_) => None,
        }
    }
}

impl From<CallError> for BrokerError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Broker(e) => unavailable(e),
            CallError::TimedOut(m) => BrokerError::Unavailable(m),
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Broker(e) => e.fmt(f),
            Self::TimedOut(m) => f.write_str(m),
        }
    }
}

/// `fut`, or [`CallError::TimedOut`] naming `what` after `limit`.
async fn bounded<T>(
    limit: Duration,
    what: &str,
    fut: impl Future<Output = Result<T, lapin::Error>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(res) => res.map_err(CallError::Broker),
        Err(_) => Err(CallError::TimedOut(format!(
            "{what}: no answer from the broker within {limit:?}"
        ))),
    }
}

impl RabbitBroker {
    /// Connects once to fail fast on a wrong URL or credentials. `timeout` bounds every
    /// single wait for the broker (`WHISPERFLEET_BROKER_TIMEOUT_MS`).
    pub async fn connect(
        url: SecretString,
        name: &str,
        topology: TopologySettings,
        timeout: Duration,
    ) -> Result<Arc<Self>, BrokerError> {
        let broker = Arc::new_cyclic(|me| Self {
            url,
            name: name.to_string(),
            topology,
            timeout,
            publish: Holder {
                live: Mutex::new(None),
                role: "publish",
            },
            consume: Holder {
                live: Mutex::new(None),
                role: "consume",
            },
            next_channel: AtomicUsize::new(0),
            unconfirmed: Unconfirmed::default(),
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
        let conn = bounded(
            self.timeout,
            "connecting",
            Connection::connect(self.url.expose_secret(), props),
        )
        .await
        .map_err(|e| {
            BrokerError::Unavailable(format!(
                "cannot connect to {}: {e}",
                redact_secret_url(&self.url)
            ))
        })?;
        let blocked = watch_blocked(&conn, holder.role);
        let n = if holder.role == "publish" {
            PUBLISH_CHANNELS
        } else {
            0
        };
        let channels = async {
            let mut channels = Vec::new();
            for _ in 0..n {
                let ch = bounded(self.timeout, "opening a channel", conn.create_channel()).await?;
                bounded(
                    self.timeout,
                    "enabling publisher confirms",
                    ch.confirm_select(ConfirmSelectOptions::default()),
                )
                .await?;
                channels.push(ch);
            }
            Ok::<_, CallError>(channels)
        }
        .await;
        let channels = match channels {
            Ok(c) => c,
            Err(e) => {
                // Half set up: do not leave the connection open behind us.
                let limit = self.timeout;
                tokio::spawn(async move {
                    let _ = bounded(limit, "closing", conn.close(200, "OK".into())).await;
                });
                return Err(e.into());
            }
        };
        let live = Live {
            conn: Arc::new(conn),
            channels,
            blocked,
        };
        *guard = Some(live.clone());
        Ok(live)
    }

    /// The publish connection and one of its channels, or at once the reason it cannot
    /// publish now.
    async fn publishing(&self) -> Result<(Live, Channel), BrokerError> {
        let live = self.live(&self.publish).await?;
        live.unblocked()?;
        let i = self.next_channel.fetch_add(1, Ordering::Relaxed) % live.channels.len();
        let ch = live.channels[i].clone();
        Ok((live, ch))
    }

    /// A fresh channel for one-off operations (declarations, passive declares that may
    /// close the channel with 404), on the consume connection: it never publishes, so a
    /// resource alarm never blocks it.
    async fn scratch_channel(&self) -> Result<Channel, BrokerError> {
        let live = self.live(&self.consume).await?;
        Ok(bounded(
            self.timeout,
            "opening a channel",
            live.conn.create_channel(),
        )
        .await?)
    }

    /// Closes a scratch channel without holding the caller for the broker's close-ok.
    fn close_later(&self, ch: Channel) {
        let limit = self.timeout;
        tokio::spawn(async move {
            let _ = bounded(limit, "closing a channel", ch.close(200, "OK".into())).await;
        });
    }

    /// A failed publish, explained: a connection blocked meanwhile is the reason that
    /// matters to the caller, not the timeout it caused.
    fn explain(live: &Live, e: impl Into<BrokerError>) -> BrokerError {
        match live.blocked() {
            Some(reason) => blocked_error(&reason),
            None => e.into(),
        }
    }

    async fn send(
        &self,
        live: &Live,
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
        let sent = bounded(
            self.timeout,
            "publishing",
            ch.basic_publish(
                msg.exchange.as_str().into(),
                msg.routing_key.as_str().into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                &msg.body,
                props,
            ),
        );
        tokio::select! {
            res = sent => res.map_err(|e| Self::explain(live, e)),
            e = live.until_blocked() => Err(e),
        }
    }

    /// Waits for the broker's confirm of one message until `deadline`, or until the broker
    /// blocks the connection: then the confirm would only come after the alarm, and the
    /// message may still be taken then, so its confirm is kept for a retry of the same id
    /// ([`Unconfirmed`]).
    async fn settle(
        &self,
        live: &Live,
        confirm: lapin::PublisherConfirm,
        msg: &Message,
        deadline: Instant,
    ) -> Result<(), BrokerError> {
        let mut confirm = Box::pin(confirm);
        let c = tokio::select! {
            c = &mut confirm => c.map_err(unavailable)?,
            e = live.until_blocked() => {
                self.unconfirmed.keep(live, msg, confirm);
                return Err(e);
            }
            () = tokio::time::sleep_until(deadline) => {
                return Err(Self::explain(live, BrokerError::Unavailable(format!(
                    "no confirm from the broker for a message to {}/{} in time",
                    msg.exchange, msg.routing_key
                ))));
            }
        };
        check_confirm(c, msg)
    }

    async fn declare_all(&self, ch: &Channel) -> Result<(), lapin::Error> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for (name, kind) in [
            (topology::TURNS_EXCHANGE, ExchangeKind::Direct),
            (topology::PRIVACY_EXCHANGE, ExchangeKind::Direct),
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
        // Privacy requests: like turns (quorum, bounded redeliveries, dead letters with a
        // reason), so a request is never lost nor retried forever.
        let mut privacy_args = turns_args.clone();
        privacy_args.insert(
            "x-dead-letter-routing-key".into(),
            long_str(topology::PRIVACY_QUEUE),
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
                topology::PRIVACY_QUEUE,
                privacy_args,
                topology::PRIVACY_EXCHANGE,
                topology::PRIVACY_ROUTING_KEY,
            ),
            (
                topology::PRIVACY_DEAD_QUEUE,
                dead_args.clone(),
                topology::DEAD_EXCHANGE,
                topology::PRIVACY_QUEUE,
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
        let t = self.timeout;
        let ch = bounded(t, "opening a channel", live.conn.create_channel()).await?;
        bounded(
            t,
            "setting the prefetch",
            ch.basic_qos(prefetch, BasicQosOptions::default()),
        )
        .await?;
        let queue = match target {
            Target::Queue(q) => q.clone(),
            Target::Control => {
                // Server-named, exclusive to this connection: gone when the process is.
                let q = bounded(
                    t,
                    "declaring the control queue",
                    ch.queue_declare(
                        "".into(),
                        QueueDeclareOptions {
                            exclusive: true,
                            auto_delete: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    ),
                )
                .await?;
                let name = q.name().as_str().to_string();
                bounded(
                    t,
                    "binding the control queue",
                    ch.queue_bind(
                        name.as_str().into(),
                        topology::CONTROL_EXCHANGE.into(),
                        "".into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    ),
                )
                .await?;
                name
            }
        };
        let consumer = bounded(
            t,
            "subscribing",
            ch.basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            ),
        )
        .await
        .map_err(|e| match e.code() {
            Some(404) => BrokerError::Fatal(format!("queue {queue} does not exist")),
            _ => e.into(),
        })?;
        Ok((ch, consumer, queue))
    }

    /// Cancels a subscription on the broker, within the timeout (a consumer task that is
    /// ending must not hang on a broker that stopped answering).
    async fn cancel(&self, ch: &Channel, consumer: &lapin::Consumer) {
        let _ = bounded(
            self.timeout,
            "cancelling a consumer",
            ch.basic_cancel(consumer.tag(), BasicCancelOptions::default()),
        )
        .await;
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
        let (consuming_tx, consuming) = Consuming::channel();
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
                consuming_tx.send_replace(true);
                if let Some(r) = ready.take() {
                    let _ = r.send(Ok(()));
                }
                tracing::debug!(queue, "consuming");
                loop {
                    tokio::select! {
                        _ = stop2.cancelled() => {
                            consuming_tx.send_replace(false);
                            me.cancel(&ch, &consumer).await;
                            // Deliveries already handed out are acked on this channel: keep it
                            // open until their owner drops the subscription.
                            tx.closed().await;
                            drop(ch);
                            break 'connect;
                        }
                        // The subscription was dropped without `stop`: cancel the consumer
                        // and close the channel, so RabbitMQ redelivers what it still holds.
                        _ = tx.closed() => {
                            consuming_tx.send_replace(false);
                            me.cancel(&ch, &consumer).await;
                            drop(ch);
                            break 'connect;
                        }
                        next = consumer.next() => match next {
                            Some(Ok(d)) => {
                                if tx.send(convert(&queue, d, me.timeout)).await.is_err() {
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
                consuming_tx.send_replace(false);
                tokio::select! {
                    _ = stop2.cancelled() => break,
                    _ = tokio::time::sleep(backoff.next_delay()) => {},
                }
            }
            consuming_tx.send_replace(false);
        });
        (
            Subscription {
                rx,
                stop,
                consuming,
            },
            ready_rx,
        )
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

#[async_trait]
impl Broker for RabbitBroker {
    async fn ensure_topology(&self) -> Result<(), BrokerError> {
        let ch = self.scratch_channel().await?;
        let res = bounded(
            self.timeout,
            "declaring the topology",
            self.declare_all(&ch),
        )
        .await;
        self.close_later(ch);
        res.map_err(|e| match e.code() {
            Some(406) => BrokerError::Fatal(format!(
                "a fleet queue exists with other arguments than this process declares \
                 (delivery limit or type changed?): {e}"
            )),
            _ => e.into(),
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
        let declare = async {
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
        };
        let res = bounded(self.timeout, "declaring the reply queue", declare).await;
        self.close_later(ch);
        res?;
        Ok(queue)
    }

    async fn publish(&self, msg: Message) -> Result<(), BrokerError> {
        let deadline = Instant::now() + self.timeout;
        let (live, ch) = self.publishing().await?;
        if let Resumed::Settled(r) = self.unconfirmed.resume(&live, &msg, deadline).await {
            return r;
        }
        let confirm = self.send(&live, &ch, &msg).await?;
        self.settle(&live, confirm, &msg, deadline).await
    }

    async fn publish_many(&self, msgs: Vec<Message>) -> Result<(), BrokerError> {
        let (live, ch) = self.publishing().await?;
        let mut pending = Vec::with_capacity(msgs.len());
        for msg in &msgs {
            pending.push(self.send(&live, &ch, msg).await?);
        }
        // One bound for the whole batch: its confirms come back together.
        let deadline = Instant::now() + self.timeout;
        for (confirm, msg) in pending.into_iter().zip(&msgs) {
            self.settle(&live, confirm, msg, deadline).await?;
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
        let res = bounded(
            self.timeout,
            "reading a queue's depth",
            ch.queue_declare(
                queue.into(),
                QueueDeclareOptions::durable().passive(),
                FieldTable::default(),
            ),
        )
        .await;
        match res {
            Ok(q) => {
                self.close_later(ch);
                Ok(Some(QueueStats {
                    queue: queue.to_string(),
                    ready: u64::from(q.message_count()),
                    consumers: q.consumer_count(),
                }))
            }
            // The 404 closed the channel already.
            Err(e) if e.code() == Some(404) => Ok(None),
            Err(e) => {
                self.close_later(ch);
                Err(e.into())
            }
        }
    }

    async fn readiness(&self) -> Result<(), BrokerError> {
        // A reconnect in progress holds the connection's lock: wait for it only so long.
        match tokio::time::timeout(self.timeout, self.live(&self.publish)).await {
            Ok(live) => live?.unblocked(),
            Err(_) => Err(BrokerError::Unavailable(format!(
                "no connection to the broker within {:?}",
                self.timeout
            ))),
        }
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
