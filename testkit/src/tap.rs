//! What the fleet really published. [`ReplyTap`]: a test's own queue bound to
//! `fleet.replies` with a gateway's routing key, counting replies per `turn_id`. Fault tests
//! assert on it rather than on what the gateway returns, because the gateway drops
//! duplicates; streamed progress (`x-whisperfleet-kind: delta`) is kept apart: a delta is
//! not a reply. [`MessageTap`]: every message of one exchange and routing key with its
//! headers (the trace test reads `traceparent` off turns, replies and metric events).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use uuid::Uuid;
use whisperfleet_shared::topology;
use whisperfleet_shared::wire::{TurnReply, TurnReplyDelta};

pub struct ReplyTap {
    seen: Arc<Mutex<Vec<TurnReply>>>,
    deltas: Arc<Mutex<Vec<TurnReplyDelta>>>,
    arrived: Arc<Mutex<HashMap<Uuid, chrono::DateTime<chrono::Utc>>>>,
    _conn: Connection,
    task: tokio::task::JoinHandle<()>,
}

impl ReplyTap {
    /// Taps the replies routed with `routing_key` (a gateway's id, the turns' `reply_to`).
    pub async fn bind(amqp_url: &str, routing_key: &str) -> anyhow::Result<Self> {
        let (conn, ch, mut consumer) = tap_queue(
            amqp_url,
            "reply-tap",
            topology::REPLIES_EXCHANGE,
            routing_key,
        )
        .await?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Mutex::new(HashMap::new()));
        let sink = seen.clone();
        let first = arrived.clone();
        let deltas = Arc::new(Mutex::new(Vec::new()));
        let delta_sink = deltas.clone();
        let task = tokio::spawn(async move {
            let _ch = ch;
            while let Some(Ok(d)) = consumer.next().await {
                if kind(&d.properties) == Some(topology::KIND_DELTA.to_string()) {
                    match TurnReplyDelta::decode(&d.data) {
                        Ok(delta) => delta_sink.lock().unwrap().push(delta),
                        Err(e) => panic!("the tap got an unreadable delta: {e}"),
                    }
                    continue;
                }
                match TurnReply::decode(&d.data) {
                    Ok(r) => {
                        first
                            .lock()
                            .unwrap()
                            .entry(r.turn_id)
                            .or_insert_with(chrono::Utc::now);
                        sink.lock().unwrap().push(r)
                    }
                    Err(e) => panic!("the tap got an unreadable reply: {e}"),
                }
            }
        });
        Ok(Self {
            seen,
            deltas,
            arrived,
            _conn: conn,
            task,
        })
    }

    /// Replies published for `turn_id` so far.
    pub fn count(&self, turn_id: Uuid) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.turn_id == turn_id)
            .count()
    }

    /// Deltas published for `turn_id` so far, in arrival order.
    pub fn deltas(&self, turn_id: Uuid) -> Vec<TurnReplyDelta> {
        self.deltas
            .lock()
            .unwrap()
            .iter()
            .filter(|d| d.turn_id == turn_id)
            .cloned()
            .collect()
    }

    /// Receipt → first reply of each of `reqs` that got one, in ms (for a p99).
    pub fn latencies_ms(&self, reqs: &[whisperfleet_shared::wire::TurnRequest]) -> Vec<f64> {
        let arrived = self.arrived.lock().unwrap();
        reqs.iter()
            .filter_map(|r| {
                let at = arrived.get(&r.turn_id)?;
                Some((*at - r.received_at).num_microseconds()? as f64 / 1000.0)
            })
            .collect()
    }

    /// Replies beyond the first, over all turns.
    pub fn duplicates(&self) -> usize {
        self.per_turn().values().map(|n| n.saturating_sub(1)).sum()
    }

    pub fn replies(&self) -> Vec<TurnReply> {
        self.seen.lock().unwrap().clone()
    }

    /// Replies per turn, for "exactly once" over many turns.
    pub fn per_turn(&self) -> HashMap<Uuid, usize> {
        let mut out = HashMap::new();
        for r in self.seen.lock().unwrap().iter() {
            *out.entry(r.turn_id).or_default() += 1;
        }
        out
    }
}

/// The `x-whisperfleet-kind` header of a delivery, if it has one.
fn kind(props: &lapin::BasicProperties) -> Option<String> {
    let headers = props.headers().as_ref()?;
    match headers.inner().get(topology::HEADER_KIND)? {
        lapin::types::AMQPValue::LongString(s) => {
            Some(String::from_utf8_lossy(s.as_bytes()).into_owned())
        }
        lapin::types::AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

impl Drop for ReplyTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A turn as a gateway would publish it, for tests that drive workers directly.
pub fn turn_request(
    reply_to: &str,
    user_id: &str,
    text: &str,
) -> whisperfleet_shared::wire::TurnRequest {
    use whisperfleet_shared::wire::{Conversation, TurnRequest, WIRE_VERSION};
    let now = chrono::Utc::now();
    TurnRequest {
        v: WIRE_VERSION,
        turn_id: Uuid::now_v7(),
        conversation: Conversation {
            platform: "http".into(),
            namespace: String::new(),
            channel_id: format!("dm:{user_id}"),
            user_id: user_id.into(),
            guild_id: None,
            is_dm: true,
        },
        character: "Nora Halvorsen".into(),
        user_name: user_id.into(),
        text: text.into(),
        seq: 0,
        platform_sent_at: None,
        received_at: now,
        published_at: now,
        reply_to: reply_to.into(),
        platform_message_id: None,
        stream: false,
    }
}

/// Publishes `req` to `turns` (confirmed), as the gateway does.
pub async fn publish_turn(
    broker: &dyn whisperfleet_shared::ports::Broker,
    req: &whisperfleet_shared::wire::TurnRequest,
) -> anyhow::Result<()> {
    use whisperfleet_shared::ports::broker::Message;
    broker
        .publish(
            Message::json(
                topology::TURNS_EXCHANGE,
                topology::TURNS_ROUTING_KEY,
                req.encode(),
            )
            .with_id(req.turn_id.to_string()),
        )
        .await?;
    Ok(())
}

/// One message a [`MessageTap`] saw: its headers (string values) and body.
#[derive(Debug, Clone)]
pub struct Tapped {
    pub headers: std::collections::BTreeMap<String, String>,
    pub body: Vec<u8>,
}

/// A copy of everything routed to `exchange` with `routing_key` (turns, replies, metric
/// events), headers included: an exclusive queue of the test's own, bound beside the
/// fleet's. The exchange must exist (declare the topology first).
pub struct MessageTap {
    seen: Arc<Mutex<Vec<Tapped>>>,
    _conn: Connection,
    task: tokio::task::JoinHandle<()>,
}

impl MessageTap {
    pub async fn bind(amqp_url: &str, exchange: &str, routing_key: &str) -> anyhow::Result<Self> {
        let (conn, ch, mut consumer) =
            tap_queue(amqp_url, "message-tap", exchange, routing_key).await?;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        let task = tokio::spawn(async move {
            let _ch = ch;
            while let Some(Ok(d)) = consumer.next().await {
                let mut headers = std::collections::BTreeMap::new();
                if let Some(table) = d.properties.headers() {
                    for (k, v) in table.inner() {
                        if let lapin::types::AMQPValue::LongString(s) = v {
                            headers.insert(
                                k.as_str().to_string(),
                                String::from_utf8_lossy(s.as_bytes()).into_owned(),
                            );
                        }
                    }
                }
                sink.lock().unwrap().push(Tapped {
                    headers,
                    body: d.data,
                });
            }
        });
        Ok(Self {
            seen,
            _conn: conn,
            task,
        })
    }

    /// Everything seen so far, in arrival order.
    pub fn seen(&self) -> Vec<Tapped> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for MessageTap {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A test's own exclusive queue bound to `exchange` with `routing_key`, consumed without acks
/// on a connection named `test/<name>` (the connection and channel must outlive the consumer).
async fn tap_queue(
    amqp_url: &str,
    name: &str,
    exchange: &str,
    routing_key: &str,
) -> anyhow::Result<(Connection, lapin::Channel, lapin::Consumer)> {
    let conn = Connection::connect(
        amqp_url,
        ConnectionProperties::default().with_connection_name(format!("test/{name}").into()),
    )
    .await?;
    let ch = conn.create_channel().await?;
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
        .await?;
    ch.queue_bind(
        q.name().as_str().into(),
        exchange.into(),
        routing_key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let consumer = ch
        .basic_consume(
            q.name().as_str().into(),
            name.into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok((conn, ch, consumer))
}
