//! In-process implementation of the [`Broker`] port, for `whisperfleet up` / `chat` when no
//! AMQP URL is configured: the gateway, the workers and the metrics writer of one process
//! share one `Arc<EmbeddedBroker>`.
//!
//! It keeps the contract of [`RabbitBroker`](crate::broker::rabbitmq::RabbitBroker) (the suite in
//! `whisperfleet_testkit::contracts::broker` runs against both): the same exchanges, queues and bindings,
//! mandatory publishing (unroutable is [`BrokerError::Unroutable`], a full queue [`BrokerError::Rejected`]), per-queue FIFO, bounded
//! prefetch shared round-robin between subscriptions, acks / `ack_up_to` / requeue / reject,
//! dead-lettering through `fleet.dead` (rejected, or past `turns`' delivery limit, counted as
//! RabbitMQ 3.10's quorum queue counts it), and a fanout `fleet.control`.
//!
//! Where it differs from RabbitMQ:
//! - Nothing is durable: messages live in memory and are gone when the process exits.
//! - An unsettled delivery whose [`Acker`] is dropped (its task died) goes back to its queue
//!   at once; RabbitMQ only gets it back when the consumer's channel closes.
//! - `delivery_count` counts every earlier delivery on every queue; RabbitMQ reports an exact
//!   count only on quorum queues (`x-delivery-count`) and just `redelivered` on classic ones.
//! - Every queue refuses publishes beyond [`DEFAULT_MAX_QUEUE_LEN`] ready messages (like
//!   `x-max-length` + `reject-publish`), so a stuck consumer cannot eat the machine; dead
//!   letters beyond that bound are dropped with a warning (RabbitMQ's own dead-lettering is
//!   at-most-once as well).
//! - Reply queues do not expire (`x-expires`): in one process the gateway lives as long as
//!   the broker. Prefetch 0 ("unlimited" in AMQP) is capped at [`UNLIMITED_PREFETCH`].
//!
//! Everything happens under one short-held `std` mutex and is pushed to subscriptions
//! through their bounded channels (never more than their prefetch in flight, so a send
//! cannot block); nothing polls. Deliveries and senders that must be dropped while the lock
//! is held are set aside and dropped after it is released, because dropping an unsettled
//! delivery re-enters the broker.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use whisperfleet_shared::ports::broker::{
    Acker, Broker, BrokerError, Consuming, Delivery, Message, QueueStats, Subscription,
};
use whisperfleet_shared::topology::{self, TopologySettings};

/// Ready messages one queue holds before it refuses publishes.
pub const DEFAULT_MAX_QUEUE_LEN: usize = 100_000;
/// What prefetch 0 (AMQP's "no limit") means here: deliveries travel through a bounded
/// channel of this size.
pub const UNLIMITED_PREFETCH: usize = 1024;
/// The subscriptions' prefetch of `subscribe_control` (as in `amqp.rs`).
const CONTROL_PREFETCH: u16 = 64;

pub struct EmbeddedBroker {
    topology: TopologySettings,
    state: Mutex<State>,
    me: Weak<EmbeddedBroker>,
}

#[derive(Default)]
struct State {
    /// For the ackers of new deliveries (weak: a delivery does not keep the broker alive).
    broker: Weak<EmbeddedBroker>,
    max_queue_len: usize,
    exchanges: HashMap<String, Exchange>,
    queues: HashMap<String, Queue>,
    consumers: HashMap<u64, Consumer>,
    /// Consumer ids, delivery tags and private queue names.
    next_id: u64,
}

struct Exchange {
    fanout: bool,
    /// (routing key, queue)
    bindings: Vec<(String, String)>,
}

#[derive(Default)]
struct Queue {
    ready: VecDeque<Stored>,
    /// Routing key on `fleet.dead` for rejected and over-limit messages; `None` drops them.
    dead_letter_key: Option<String>,
    /// Quorum queues report `x-delivery-count` and may have a delivery limit.
    quorum: bool,
    delivery_limit: Option<u32>,
    /// Active subscriptions, served round-robin from `next`.
    consumers: Vec<u64>,
    next: usize,
    /// A private control queue: deleted when its one subscription stops (auto-delete).
    owner: Option<u64>,
}

struct Stored {
    body: Vec<u8>,
    headers: BTreeMap<String, String>,
    message_id: Option<String>,
    /// Earlier deliveries of this message from its current queue.
    delivery_count: u32,
}

struct Consumer {
    queue: String,
    prefetch: usize,
    tx: mpsc::Sender<Delivery>,
    /// Delivered and not yet settled, by tag (tags grow, so this is delivery order).
    unacked: BTreeMap<u64, Stored>,
    /// False once stopped: no new deliveries, settling still works.
    active: bool,
}

/// Things whose drop may re-enter the broker (an unsettled delivery returns itself), so
/// they are dropped only after the lock is released.
#[derive(Default)]
struct Garbage {
    deliveries: Vec<Delivery>,
    senders: Vec<mpsc::Sender<Delivery>>,
}

#[derive(Clone, Copy, Debug)]
enum Settle {
    Ack,
    AckUpTo,
    /// Back to the queue: requeue, or the acker was dropped unsettled.
    Return,
    Reject,
}

impl EmbeddedBroker {
    pub fn new(topology: TopologySettings) -> Arc<Self> {
        Self::with_max_queue_len(topology, DEFAULT_MAX_QUEUE_LEN)
    }

    /// As [`Self::new`] with another per-queue bound (for tests of the bound).
    pub fn with_max_queue_len(topology: TopologySettings, max_queue_len: usize) -> Arc<Self> {
        Arc::new_cyclic(|me| Self {
            topology,
            state: Mutex::new(State {
                broker: me.clone(),
                max_queue_len,
                ..State::default()
            }),
            me: me.clone(),
        })
    }

    /// Runs `f` under the lock; what it set aside is dropped after the lock is released.
    fn with_state<R>(&self, f: impl FnOnce(&mut State, &mut Garbage) -> R) -> R {
        let mut garbage = Garbage::default();
        let result = {
            let mut state = self.lock();
            f(&mut state, &mut garbage)
        };
        drop(garbage);
        result
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic under the lock is a bug here; keep serving rather than poison every caller.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn settle(&self, consumer: u64, tag: u64, how: Settle) {
        self.with_state(|s, g| s.settle(consumer, tag, how, g));
    }

    fn subscribe(
        &self,
        queue: &str,
        prefetch: u16,
        private: bool,
    ) -> Result<Subscription, BrokerError> {
        let me = self
            .me
            .upgrade()
            .ok_or_else(|| BrokerError::Fatal("broker is shutting down".into()))?;
        let prefetch = match usize::from(prefetch) {
            0 => UNLIMITED_PREFETCH,
            n => n,
        };
        // Capacity = prefetch: at most `prefetch` deliveries are unsettled, and a delivery
        // in the channel is unsettled, so `try_send` never finds it full.
        let (tx, rx) = mpsc::channel(prefetch);
        let watch = tx.clone();
        let id = self.with_state(|s, g| {
            let id = s.next_id();
            let queue = if private {
                // A server-named queue of its own, bound to the fanout, as amqp.rs declares.
                let name = format!("amq.gen-embedded-{id}");
                s.bind(topology::CONTROL_EXCHANGE, "", &name)?;
                s.queues.insert(
                    name.clone(),
                    Queue {
                        owner: Some(id),
                        ..Queue::default()
                    },
                );
                name
            } else {
                queue.to_string()
            };
            let Some(q) = s.queues.get_mut(&queue) else {
                return Err(BrokerError::Fatal(format!("queue {queue} does not exist")));
            };
            q.consumers.push(id);
            s.consumers.insert(
                id,
                Consumer {
                    queue: queue.clone(),
                    prefetch,
                    tx,
                    unacked: BTreeMap::new(),
                    active: true,
                },
            );
            s.dispatch(&queue, g);
            Ok(id)
        })?;
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        // In-process, a subscription consumes from the moment it exists until it is stopped.
        let (consuming_tx, consuming) = Consuming::channel();
        consuming_tx.send_replace(true);
        // Holds the broker like amqp.rs' consumer task does, until the receiver is gone.
        tokio::spawn(async move {
            tokio::select! {
                _ = stopped.cancelled() => {
                    consuming_tx.send_replace(false);
                    me.with_state(|s, g| s.deactivate(id, g));
                    // Delivered messages can still be settled until the owner drops `rx`.
                    watch.closed().await;
                }
                _ = watch.closed() => {}
            }
            consuming_tx.send_replace(false);
            drop(watch);
            me.with_state(|s, g| s.remove_consumer(id, g));
        });
        Ok(Subscription {
            rx,
            stop,
            consuming,
        })
    }
}

impl State {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn declare_exchange(&mut self, name: &str, fanout: bool) {
        self.exchanges
            .entry(name.to_string())
            .or_insert_with(|| Exchange {
                fanout,
                bindings: Vec::new(),
            });
    }

    fn bind(&mut self, exchange: &str, key: &str, queue: &str) -> Result<(), BrokerError> {
        let ex = self
            .exchanges
            .get_mut(exchange)
            .ok_or_else(|| no_exchange(exchange))?;
        if !ex.bindings.iter().any(|(k, q)| k == key && q == queue) {
            ex.bindings.push((key.to_string(), queue.to_string()));
        }
        Ok(())
    }

    /// Queues a message to `exchange` with `key` reaches.
    fn route(&self, exchange: &str, key: &str) -> Result<Vec<String>, BrokerError> {
        let ex = self
            .exchanges
            .get(exchange)
            .ok_or_else(|| no_exchange(exchange))?;
        let mut queues: Vec<String> = ex
            .bindings
            .iter()
            .filter(|(k, q)| (ex.fanout || k == key) && self.queues.contains_key(q))
            .map(|(_, q)| q.clone())
            .collect();
        queues.dedup();
        Ok(queues)
    }

    fn full(&self, queue: &str) -> bool {
        self.queues
            .get(queue)
            .is_some_and(|q| q.ready.len() >= self.max_queue_len)
    }

    fn publish(&mut self, msg: Message, g: &mut Garbage) -> Result<(), BrokerError> {
        let targets = self.route(&msg.exchange, &msg.routing_key)?;
        if targets.is_empty() {
            return Err(BrokerError::Unroutable(format!(
                "no queue is bound to {} with key {:?}",
                msg.exchange, msg.routing_key
            )));
        }
        // All or nothing, so a refused publish can be retried without duplicates.
        if let Some(full) = targets.iter().find(|q| self.full(q)) {
            return Err(BrokerError::Rejected(format!(
                "queue {full} is full ({} messages)",
                self.max_queue_len
            )));
        }
        for queue in &targets {
            let stored = Stored {
                body: msg.body.clone(),
                headers: msg.headers.clone(),
                message_id: msg.message_id.clone(),
                delivery_count: 0,
            };
            if let Some(q) = self.queues.get_mut(queue) {
                q.ready.push_back(stored);
            }
            self.dispatch(queue, g);
        }
        Ok(())
    }

    /// Hands ready messages to subscriptions with free prefetch, round-robin.
    fn dispatch(&mut self, queue: &str, g: &mut Garbage) {
        loop {
            let State {
                broker,
                queues,
                consumers,
                next_id,
                ..
            } = self;
            let Some(q) = queues.get_mut(queue) else {
                return;
            };
            if q.ready.is_empty() || q.consumers.is_empty() {
                return;
            }
            let n = q.consumers.len();
            let Some(idx) = (0..n).map(|i| (q.next + i) % n).find(|&i| {
                consumers
                    .get(&q.consumers[i])
                    .is_some_and(|c| c.unacked.len() < c.prefetch)
            }) else {
                return;
            };
            q.next = (idx + 1) % n;
            let id = q.consumers[idx];
            let Some(c) = consumers.get_mut(&id) else {
                return;
            };
            let msg = q.ready.pop_front().expect("checked non-empty");
            *next_id += 1;
            let tag = *next_id;
            let mut headers = msg.headers.clone();
            if q.quorum && msg.delivery_count > 0 {
                headers.insert("x-delivery-count".into(), msg.delivery_count.to_string());
            }
            // As amqp.rs reads it: a published `x-delivery-count` (dead_letter() copies the
            // source's) shows through until the quorum queue overwrites it on a redelivery.
            let delivery_count = headers
                .get("x-delivery-count")
                .and_then(|c| c.parse().ok())
                .unwrap_or(msg.delivery_count);
            let delivery = Delivery {
                queue: queue.to_string(),
                body: msg.body.clone(),
                headers,
                message_id: msg.message_id.clone(),
                redelivered: msg.delivery_count > 0,
                delivery_count,
                acker: Box::new(EmbeddedAcker {
                    broker: broker.clone(),
                    consumer: id,
                    tag,
                    settled: AtomicBool::new(false),
                }),
            };
            match c.tx.try_send(delivery) {
                Ok(()) => {
                    c.unacked.insert(tag, msg);
                }
                Err(e) => {
                    // Not delivered: the message keeps its place and its count. The unsent
                    // delivery's acker finds no unacked tag, so dropping it changes nothing.
                    q.ready.push_front(msg);
                    let closed = matches!(e, mpsc::error::TrySendError::Closed(_));
                    g.deliveries.push(e.into_inner());
                    if !closed {
                        return;
                    }
                    // The subscription's receiver is gone; its watcher is about to remove
                    // it, but do it now so the message goes to someone else.
                    self.remove_consumer(id, g);
                }
            }
        }
    }

    /// Settles one delivery; unknown consumer or tag (already settled) does nothing.
    fn settle(&mut self, consumer: u64, tag: u64, how: Settle, g: &mut Garbage) {
        let Some(c) = self.consumers.get_mut(&consumer) else {
            return;
        };
        let queue = c.queue.clone();
        match how {
            Settle::Ack => {
                c.unacked.remove(&tag);
            }
            Settle::AckUpTo => {
                let later = c.unacked.split_off(&(tag + 1));
                c.unacked = later;
            }
            Settle::Return => {
                if let Some(msg) = c.unacked.remove(&tag) {
                    self.return_to_queue(&queue, vec![msg], g);
                }
            }
            Settle::Reject => {
                if let Some(msg) = c.unacked.remove(&tag) {
                    self.dead_letter(&queue, msg, "rejected", g);
                }
            }
        }
        self.dispatch(&queue, g);
    }

    /// Puts returned messages (in delivery order) back at the head of their queue, counting
    /// the delivery; past the delivery limit they are dead-lettered instead, as RabbitMQ's
    /// quorum queue does (it dead-letters once the count exceeds the limit).
    fn return_to_queue(&mut self, queue: &str, msgs: Vec<Stored>, g: &mut Garbage) {
        let Some(q) = self.queues.get_mut(queue) else {
            return; // an auto-deleted control queue: its messages went with it
        };
        let limit = q.delivery_limit;
        let mut back = Vec::with_capacity(msgs.len());
        let mut dead = Vec::new();
        for mut msg in msgs {
            msg.delivery_count += 1;
            if limit.is_some_and(|l| msg.delivery_count > l) {
                dead.push(msg);
            } else {
                back.push(msg);
            }
        }
        for msg in back.into_iter().rev() {
            q.ready.push_front(msg);
        }
        for msg in dead {
            self.dead_letter(queue, msg, "delivery_limit", g);
        }
        self.dispatch(queue, g);
    }

    /// RabbitMQ's own dead-lettering of a message from `queue`; dropped when the queue has
    /// no dead-letter target, or the target is full (RabbitMQ's at-most-once dead-lettering).
    fn dead_letter(&mut self, queue: &str, mut msg: Stored, reason: &str, g: &mut Garbage) {
        let Some(key) = self
            .queues
            .get(queue)
            .and_then(|q| q.dead_letter_key.clone())
        else {
            return;
        };
        let targets = self
            .route(topology::DEAD_EXCHANGE, &key)
            .unwrap_or_default();
        // What RabbitMQ adds besides its `x-death` table (which amqp.rs does not surface).
        for (k, v) in [
            ("x-first-death-reason", reason),
            ("x-first-death-queue", queue),
            ("x-first-death-exchange", self.source_exchange(queue)),
        ] {
            msg.headers
                .entry(k.to_string())
                .or_insert_with(|| v.to_string());
        }
        msg.delivery_count = 0;
        for target in targets {
            if self.full(&target) {
                tracing::warn!(
                    queue,
                    target,
                    "dead-letter queue full; dropping a dead letter"
                );
                continue;
            }
            if let Some(q) = self.queues.get_mut(&target) {
                q.ready.push_back(Stored {
                    body: msg.body.clone(),
                    headers: msg.headers.clone(),
                    message_id: msg.message_id.clone(),
                    delivery_count: 0,
                });
            }
            self.dispatch(&target, g);
        }
    }

    fn source_exchange(&self, queue: &str) -> &'static str {
        match queue {
            topology::TURNS_QUEUE => topology::TURNS_EXCHANGE,
            topology::METRICS_QUEUE => topology::METRICS_EXCHANGE,
            topology::PRIVACY_QUEUE => topology::PRIVACY_EXCHANGE,
            _ => "",
        }
    }

    /// `stop`: no new deliveries; a private control queue is deleted (auto-delete).
    fn deactivate(&mut self, id: u64, g: &mut Garbage) {
        let Some(c) = self.consumers.get_mut(&id) else {
            return;
        };
        c.active = false;
        let queue = c.queue.clone();
        self.detach(&queue, id);
        self.dispatch(&queue, g);
    }

    /// The receiver is gone: what it had not settled goes back to the queue, counted.
    fn remove_consumer(&mut self, id: u64, g: &mut Garbage) {
        let Some(c) = self.consumers.remove(&id) else {
            return;
        };
        if c.active {
            self.detach(&c.queue, id);
        }
        let unacked: Vec<Stored> = c.unacked.into_values().collect();
        g.senders.push(c.tx);
        self.return_to_queue(&c.queue, unacked, g);
    }

    fn detach(&mut self, queue: &str, id: u64) {
        let Some(q) = self.queues.get_mut(queue) else {
            return;
        };
        if let Some(pos) = q.consumers.iter().position(|&c| c == id) {
            q.consumers.remove(pos);
            if q.next > pos {
                q.next -= 1;
            }
            if q.next >= q.consumers.len() {
                q.next = 0;
            }
        }
        if q.owner == Some(id) {
            self.queues.remove(queue);
            for ex in self.exchanges.values_mut() {
                ex.bindings.retain(|(_, q)| q != queue);
            }
        }
    }
}

/// What RabbitMQ answers (404 on the channel, which amqp.rs reports as unavailable) when
/// the topology is not declared yet.
fn no_exchange(exchange: &str) -> BrokerError {
    BrokerError::Unavailable(format!(
        "no exchange '{exchange}' (topology not declared yet)"
    ))
}

struct EmbeddedAcker {
    broker: Weak<EmbeddedBroker>,
    consumer: u64,
    tag: u64,
    /// Set by the first settle: settling twice (or dropping after settling) does nothing.
    settled: AtomicBool,
}

impl EmbeddedAcker {
    fn settle(&self, how: Settle) -> Result<(), BrokerError> {
        if self.settled.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let broker = self
            .broker
            .upgrade()
            .ok_or_else(|| BrokerError::Unavailable("the embedded broker is gone".into()))?;
        broker.settle(self.consumer, self.tag, how);
        Ok(())
    }
}

#[async_trait]
impl Acker for EmbeddedAcker {
    async fn ack(&self) -> Result<(), BrokerError> {
        self.settle(Settle::Ack)
    }
    async fn ack_up_to(&self) -> Result<(), BrokerError> {
        self.settle(Settle::AckUpTo)
    }
    async fn requeue(&self) -> Result<(), BrokerError> {
        self.settle(Settle::Return)
    }
    async fn reject(&self) -> Result<(), BrokerError> {
        self.settle(Settle::Reject)
    }
}

impl Drop for EmbeddedAcker {
    /// The task handling this delivery ended without settling it: the message goes back.
    fn drop(&mut self) {
        let _ = self.settle(Settle::Return);
    }
}

#[async_trait]
impl Broker for EmbeddedBroker {
    async fn ensure_topology(&self) -> Result<(), BrokerError> {
        let limit = self.topology.delivery_limit;
        self.with_state(|s, _| {
            for (name, fanout) in [
                (topology::TURNS_EXCHANGE, false),
                (topology::PRIVACY_EXCHANGE, false),
                (topology::REPLIES_EXCHANGE, false),
                (topology::METRICS_EXCHANGE, false),
                (topology::DEAD_EXCHANGE, false),
                (topology::CONTROL_EXCHANGE, true),
            ] {
                s.declare_exchange(name, fanout);
            }
            for (queue, quorum, delivery_limit, dead_letter_key, exchange, key) in [
                (
                    topology::TURNS_QUEUE,
                    true,
                    Some(limit),
                    Some(topology::TURNS_QUEUE),
                    topology::TURNS_EXCHANGE,
                    topology::TURNS_ROUTING_KEY,
                ),
                (
                    topology::METRICS_QUEUE,
                    false,
                    None,
                    Some(topology::METRICS_QUEUE),
                    topology::METRICS_EXCHANGE,
                    topology::METRICS_ROUTING_KEY,
                ),
                (
                    topology::TURNS_DEAD_QUEUE,
                    true,
                    None,
                    None,
                    topology::DEAD_EXCHANGE,
                    topology::TURNS_QUEUE,
                ),
                (
                    topology::PRIVACY_QUEUE,
                    true,
                    Some(limit),
                    Some(topology::PRIVACY_QUEUE),
                    topology::PRIVACY_EXCHANGE,
                    topology::PRIVACY_ROUTING_KEY,
                ),
                (
                    topology::PRIVACY_DEAD_QUEUE,
                    true,
                    None,
                    None,
                    topology::DEAD_EXCHANGE,
                    topology::PRIVACY_QUEUE,
                ),
                (
                    topology::METRICS_DEAD_QUEUE,
                    true,
                    None,
                    None,
                    topology::DEAD_EXCHANGE,
                    topology::METRICS_QUEUE,
                ),
            ] {
                s.queues.entry(queue.to_string()).or_insert_with(|| Queue {
                    quorum,
                    delivery_limit,
                    dead_letter_key: dead_letter_key.map(str::to_string),
                    ..Queue::default()
                });
                s.bind(exchange, key, queue)?;
            }
            Ok(())
        })
    }

    async fn ensure_reply_queue(&self, gateway_id: &str) -> Result<String, BrokerError> {
        let queue = topology::reply_queue(gateway_id);
        self.with_state(|s, _| {
            if !s.exchanges.contains_key(topology::REPLIES_EXCHANGE) {
                return Err(no_exchange(topology::REPLIES_EXCHANGE));
            }
            s.queues.entry(queue.clone()).or_default();
            // Bound by the gateway id, the `reply_to` workers publish with (as amqp.rs).
            s.bind(topology::REPLIES_EXCHANGE, gateway_id, &queue)
        })?;
        Ok(queue)
    }

    async fn publish(&self, msg: Message) -> Result<(), BrokerError> {
        self.with_state(|s, g| s.publish(msg, g))
    }

    async fn publish_many(&self, msgs: Vec<Message>) -> Result<(), BrokerError> {
        // Like amqp.rs: everything is sent, the first refusal is reported.
        self.with_state(|s, g| {
            let mut first = Ok(());
            for msg in msgs {
                let res = s.publish(msg, g);
                if first.is_ok() {
                    first = res;
                }
            }
            first
        })
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Subscription, BrokerError> {
        self.subscribe(queue, prefetch, false)
    }

    async fn subscribe_control(&self) -> Result<Subscription, BrokerError> {
        self.subscribe("", CONTROL_PREFETCH, true)
    }

    async fn queue_stats(&self, queue: &str) -> Result<Option<QueueStats>, BrokerError> {
        let s = self.lock();
        Ok(s.queues.get(queue).map(|q| QueueStats {
            queue: queue.to_string(),
            ready: q.ready.len() as u64,
            consumers: q.consumers.len() as u32,
        }))
    }

    async fn readiness(&self) -> Result<(), BrokerError> {
        // In-process: nothing to reach, nothing that blocks publishers.
        Ok(())
    }

    fn describe(&self) -> String {
        "embedded".into()
    }
}

#[cfg(test)]
mod tests;
