//! Routes replies from this gateway's `replies.<gateway-id>` queue to the request waiting
//! for them, by `turn_id`. A reply for a turn already delivered (a redelivered turn answered
//! twice) is dropped and acked: replies are idempotent by `turn_id`. A reply nobody waits
//! for (its wait timed out or was cancelled, or this gateway restarted since) goes to the
//! `unclaimed` channel, whose reader decides what becomes of it.
//!
//! The queue carries several kinds of message, told apart by the `x-whisperfleet-kind`
//! header ([`topology::HEADER_KIND`]): absent, a `TurnReply`; `privacy`, a `PrivacyReply`,
//! routed by `request_id` to the privacy call waiting for it (nobody waiting: dropped).
//!
//! Streamed progress (`TurnReplyDelta`, kind `delta`): a waiter that asked for it
//! ([`ReplyRouter::expect_streaming`]) gets the new text of each delta, in order and once — duplicates, stale and gapped
//! deltas are dropped by `index`/`seq` — until its reply arrives. Deltas nobody waits for
//! are dropped (the reply brings the whole text anyway).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;
use whisperfleet_shared::ports::broker::{Delivery, Subscription};
use whisperfleet_shared::topology;
use whisperfleet_shared::wire::{PrivacyReply, TurnReply, TurnReplyDelta};

/// How many delivered turn ids are remembered for de-duplication.
const REMEMBERED: usize = 100_000;

/// A reply and the moment this gateway consumed it (start of `delivery`).
pub struct Arrived {
    pub reply: TurnReply,
    pub consumed_at: Instant,
}

/// A turn's reply, when it arrives; forgets the turn when dropped before that.
pub struct Expected {
    rx: oneshot::Receiver<Arrived>,
    router: Arc<ReplyRouter>,
    turn_id: Uuid,
}

impl Future for Expected {
    type Output = Result<Arrived, oneshot::error::RecvError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx)
    }
}

impl Drop for Expected {
    fn drop(&mut self) {
        // A no-op when the reply was routed (its entry is gone already).
        self.router.abandon(self.turn_id);
    }
}

#[derive(Default)]
pub struct ReplyRouter {
    inner: Mutex<Inner>,
    unclaimed: Option<mpsc::UnboundedSender<TurnReply>>,
}

/// Where a streaming waiter's text goes, and how much of it was passed on.
struct Streaming {
    tx: mpsc::UnboundedSender<String>,
    /// Characters passed on so far (deltas' `index` counts the same way).
    shown: u64,
    /// The next `seq` expected; an older one is a duplicate or came out of order.
    next_seq: u64,
}

#[derive(Default)]
struct Inner {
    waiting: HashMap<Uuid, oneshot::Sender<Arrived>>,
    streams: HashMap<Uuid, Streaming>,
    /// Privacy calls waiting for their reply, by `request_id`.
    privacy: HashMap<Uuid, oneshot::Sender<PrivacyReply>>,
    delivered: HashSet<Uuid>,
    order: VecDeque<Uuid>,
    duplicates: u64,
}

impl Inner {
    fn remember(&mut self, turn_id: Uuid) {
        self.delivered.insert(turn_id);
        self.order.push_back(turn_id);
        if self.order.len() > REMEMBERED
            && let Some(old) = self.order.pop_front()
        {
            self.delivered.remove(&old);
        }
    }
}

impl ReplyRouter {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A router that hands replies nobody waits for to `unclaimed`.
    pub fn with_unclaimed(unclaimed: mpsc::UnboundedSender<TurnReply>) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::default(),
            unclaimed: Some(unclaimed),
        })
    }

    /// Registers interest in a turn's reply before the turn is published. Dropping the
    /// returned waiter (timeout, publish failure, or a client that went away) forgets it.
    pub fn expect(self: &Arc<Self>, turn_id: Uuid) -> Expected {
        let (tx, rx) = oneshot::channel();
        self.inner
            .lock()
            .expect("router lock")
            .waiting
            .insert(turn_id, tx);
        Expected {
            rx,
            router: self.clone(),
            turn_id,
        }
    }

    /// [`ReplyRouter::expect`], and the new text of the turn's deltas goes to `text` as
    /// they arrive (in order, each character once) until the reply does.
    pub fn expect_streaming(
        self: &Arc<Self>,
        turn_id: Uuid,
        text: mpsc::UnboundedSender<String>,
    ) -> Expected {
        let expected = self.expect(turn_id);
        self.inner.lock().expect("router lock").streams.insert(
            turn_id,
            Streaming {
                tx: text,
                shown: 0,
                next_seq: 0,
            },
        );
        expected
    }

    /// Forgets a turn whose waiter gave up (timeout, publish failure).
    pub fn abandon(&self, turn_id: Uuid) {
        let mut inner = self.inner.lock().expect("router lock");
        inner.waiting.remove(&turn_id);
        inner.streams.remove(&turn_id);
    }

    /// Passes a delta's new text to its streaming waiter; false when it was dropped
    /// (nobody streams this turn, its reply came already, a duplicate, out of order).
    pub fn route_delta(&self, delta: &TurnReplyDelta) -> bool {
        let mut inner = self.inner.lock().expect("router lock");
        let Some(s) = inner.streams.get_mut(&delta.turn_id) else {
            return false;
        };
        if delta.seq < s.next_seq {
            return false;
        }
        let Some(new) = delta.new_text(s.shown) else {
            return false;
        };
        s.next_seq = delta.seq + 1;
        s.shown += new.chars().count() as u64;
        s.tx.send(new.to_string()).is_ok()
    }

    /// Hands a reply to its waiter; false when it was a duplicate or nobody waits.
    pub fn route(&self, reply: TurnReply) -> bool {
        let consumed_at = Instant::now();
        let mut inner = self.inner.lock().expect("router lock");
        if inner.delivered.contains(&reply.turn_id) {
            inner.duplicates += 1;
            tracing::info!(turn_id = %reply.turn_id, "dropping a second reply for a delivered turn");
            return false;
        }
        // The reply ends the turn's stream: its receiver sees every delta, then the end.
        inner.streams.remove(&reply.turn_id);
        let Some(tx) = inner.waiting.remove(&reply.turn_id) else {
            tracing::info!(turn_id = %reply.turn_id, "reply for a turn nobody waits for (timed out, or this gateway restarted)");
            // Handled once, like a routed one: a second copy is a duplicate.
            inner.remember(reply.turn_id);
            drop(inner);
            if let Some(u) = &self.unclaimed {
                let _ = u.send(reply);
            }
            return false;
        };
        inner.remember(reply.turn_id);
        drop(inner);
        tx.send(Arrived { reply, consumed_at }).is_ok()
    }

    /// Registers a privacy call before its request is published; the returned receiver
    /// gets the reply. Call [`ReplyRouter::forget_privacy`] when the wait ends without it.
    pub fn expect_privacy(&self, request_id: Uuid) -> oneshot::Receiver<PrivacyReply> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .lock()
            .expect("router lock")
            .privacy
            .insert(request_id, tx);
        rx
    }

    pub fn forget_privacy(&self, request_id: Uuid) {
        self.inner
            .lock()
            .expect("router lock")
            .privacy
            .remove(&request_id);
    }

    /// Hands a privacy reply to its caller; false when nobody waits (timed out: the
    /// caller already answered that it failed, so the reply has no one to go to).
    pub fn route_privacy(&self, reply: PrivacyReply) -> bool {
        let tx = self
            .inner
            .lock()
            .expect("router lock")
            .privacy
            .remove(&reply.request_id);
        match tx {
            Some(tx) => tx.send(reply).is_ok(),
            None => {
                tracing::info!(request_id = %reply.request_id, "privacy reply nobody waits for (timed out); dropped");
                false
            }
        }
    }

    /// Privacy calls waiting right now.
    pub fn waiting_privacy(&self) -> usize {
        self.inner.lock().expect("router lock").privacy.len()
    }

    /// Turns whose reply someone is waiting for right now.
    pub fn waiting(&self) -> usize {
        self.inner.lock().expect("router lock").waiting.len()
    }

    pub fn duplicates(&self) -> u64 {
        self.inner.lock().expect("router lock").duplicates
    }

    /// Consumes the reply queue until the subscription ends.
    pub async fn run(self: Arc<Self>, mut sub: Subscription) {
        while let Some(d) = sub.rx.recv().await {
            self.dispatch(&d);
            // Replies are only useful to a live waiter; nothing to retry.
            let _ = d.acker.ack().await;
        }
    }

    /// One delivery of the reply queue, by its kind.
    fn dispatch(&self, d: &Delivery) {
        match d.headers.get(topology::HEADER_KIND).map(String::as_str) {
            Some(topology::KIND_PRIVACY) => match PrivacyReply::decode(&d.body) {
                Ok(reply) => {
                    self.route_privacy(reply);
                }
                Err(e) => tracing::warn!(error = %e, "unreadable privacy reply dropped"),
            },
            Some(topology::KIND_DELTA) => match TurnReplyDelta::decode(&d.body) {
                Ok(delta) => {
                    self.route_delta(&delta);
                }
                Err(e) => tracing::debug!(error = %e, "unreadable delta dropped"),
            },
            // Absent (or "reply"): a turn's reply, as before kinds existed.
            None | Some(topology::KIND_REPLY) => match TurnReply::decode(&d.body) {
                Ok(reply) => {
                    self.route(reply);
                }
                Err(e) => tracing::warn!(error = %e, "unreadable reply dropped"),
            },
            Some(other) => {
                tracing::warn!(
                    kind = other,
                    "reply-queue message of an unknown kind dropped"
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use whisperfleet_shared::wire::WIRE_VERSION;

    fn delta(turn_id: Uuid, seq: u64, index: u64, text: &str) -> TurnReplyDelta {
        TurnReplyDelta {
            v: WIRE_VERSION,
            turn_id,
            seq,
            index,
            text: text.into(),
        }
    }

    #[tokio::test]
    async fn deltas_reach_their_waiter_once_in_order_until_the_reply() {
        let router = ReplyRouter::new();
        let turn_id = Uuid::now_v7();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let _waiter = router.expect_streaming(turn_id, tx);
        assert!(router.route_delta(&delta(turn_id, 0, 0, "Hello ")));
        // A redelivered copy and an out-of-order older one are dropped.
        assert!(!router.route_delta(&delta(turn_id, 0, 0, "Hello ")));
        assert!(router.route_delta(&delta(turn_id, 1, 6, "wörld")));
        assert!(!router.route_delta(&delta(turn_id, 0, 0, "Hello ")));
        // A gap (delta 2 lost): 3 does not apply.
        assert!(!router.route_delta(&delta(turn_id, 3, 20, "later")));
        // Deltas of another turn go nowhere.
        assert!(!router.route_delta(&delta(Uuid::now_v7(), 0, 0, "x")));
        let mut got = Vec::new();
        while let Ok(t) = rx.try_recv() {
            got.push(t);
        }
        assert_eq!(got, ["Hello ", "wörld"]);
        let reply: TurnReply = serde_json::from_value(serde_json::json!({
            "v": WIRE_VERSION, "turn_id": turn_id, "character": "n", "text": "Hello wörld!",
            "outcome": "ok",
            "conversation": {"platform": "http", "channel_id": "c", "user_id": "u", "is_dm": true},
        }))
        .unwrap();
        router.route(reply);
        // The stream ends with the reply; a late delta is dropped.
        assert_eq!(rx.recv().await, None);
        assert!(!router.route_delta(&delta(turn_id, 2, 11, "!")));
    }

    struct NoAck;

    #[async_trait::async_trait]
    impl whisperfleet_shared::ports::broker::Acker for NoAck {
        async fn ack(&self) -> Result<(), whisperfleet_shared::ports::BrokerError> {
            Ok(())
        }
        async fn ack_up_to(&self) -> Result<(), whisperfleet_shared::ports::BrokerError> {
            Ok(())
        }
        async fn requeue(&self) -> Result<(), whisperfleet_shared::ports::BrokerError> {
            Ok(())
        }
        async fn reject(&self) -> Result<(), whisperfleet_shared::ports::BrokerError> {
            Ok(())
        }
    }

    fn delivery(body: Vec<u8>, kind: Option<&str>) -> Delivery {
        let mut headers = std::collections::BTreeMap::new();
        if let Some(k) = kind {
            headers.insert(topology::HEADER_KIND.to_string(), k.to_string());
        }
        Delivery {
            queue: "replies.gw".into(),
            body,
            headers,
            message_id: None,
            redelivered: false,
            delivery_count: 0,
            acker: Box::new(NoAck),
        }
    }

    /// The reply queue's kinds: a privacy reply reaches its privacy call by `request_id`;
    /// without the header a body is a turn's reply, as before kinds existed.
    #[tokio::test]
    async fn deliveries_are_dispatched_by_their_kind() {
        use whisperfleet_shared::wire::{PrivacyAction, WIRE_VERSION};
        let router = ReplyRouter::new();
        let request_id = Uuid::now_v7();
        let mut waiting = router.expect_privacy(request_id);
        let reply = PrivacyReply::error(request_id, PrivacyAction::Show, "test");
        // Without the header it is read as a turn's reply (and is not one): not routed.
        router.dispatch(&delivery(reply.encode(), None));
        assert!(waiting.try_recv().is_err());
        router.dispatch(&delivery(reply.encode(), Some(topology::KIND_PRIVACY)));
        assert_eq!(waiting.try_recv().unwrap().request_id, request_id);
        assert_eq!(router.waiting_privacy(), 0);

        let turn_id = Uuid::now_v7();
        let waiter = router.expect(turn_id);
        let turn_reply = TurnReply {
            v: WIRE_VERSION,
            turn_id,
            conversation: whisperfleet_shared::wire::Conversation {
                platform: "http".into(),
                namespace: String::new(),
                channel_id: "c".into(),
                user_id: "u".into(),
                guild_id: None,
                is_dm: true,
            },
            character: "nora".into(),
            text: "hi".into(),
            outcome: whisperfleet_shared::wire::Outcome::Ok,
            timings: Default::default(),
            counters: Default::default(),
            seq: 1,
            platform_message_id: None,
            reason: None,
            partial: false,
        };
        router.dispatch(&delivery(turn_reply.encode(), None));
        assert_eq!(waiter.await.unwrap().reply.turn_id, turn_id);
    }

    #[tokio::test]
    async fn a_dropped_waiter_is_forgotten() {
        let router = ReplyRouter::new();
        let turn_id = Uuid::now_v7();
        let waiter = router.expect(turn_id);
        assert_eq!(router.waiting(), 1);
        // The request that waited was cancelled (client gone) before any timeout fired.
        drop(waiter);
        assert_eq!(router.waiting(), 0, "no per-turn state left behind");
    }
}
