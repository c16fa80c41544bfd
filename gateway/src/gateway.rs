//! The platform-independent part of the gateway, shared by every adapter (HTTP, Discord,
//! terminal): validate, keep conversations in order, publish the turn with confirms, wait
//! for its reply, and measure the gateway's own stages (`platform_lag`, `ingress`,
//! `delivery`, `first_visible`, `end_to_end`). No prompt, memory or LLM logic lives here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tracing::Instrument;
use uuid::Uuid;
use whisperfleet_shared::identity::Identity;
use whisperfleet_shared::lineproto::{self, Point};
use whisperfleet_shared::metric_batch::MetricBatcher;
use whisperfleet_shared::ports::broker::{Broker, BrokerError, Consuming, Message};
use whisperfleet_shared::ports::cache::Cache;
use whisperfleet_shared::records;
use whisperfleet_shared::retry::{RetryPolicy, retry};
use whisperfleet_shared::topology;
use whisperfleet_shared::trace::{self, TraceContext};
use whisperfleet_shared::wire::{
    Conversation, PrivacyAction, PrivacyOutcome, PrivacyReply, PrivacyRequest, Stage, TurnReply,
    TurnRequest, WIRE_VERSION, ms_between,
};

use crate::conversations::{Conversations, TooManyWaiting};
use crate::router::ReplyRouter;

/// What an adapter hands in.
#[derive(Debug, Clone)]
pub struct TurnInput {
    pub conversation: Conversation,
    pub character: String,
    pub user_name: String,
    pub text: String,
    pub platform_sent_at: Option<DateTime<Utc>>,
    pub platform_message_id: Option<String>,
    /// When the adapter received the platform event.
    pub received: Instant,
    pub received_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error("the message is empty")]
    Empty,
    #[error("the message is {chars} characters long; the limit is {limit}")]
    TooLong { chars: usize, limit: usize },
    #[error("{0}")]
    Busy(#[from] TooManyWaiting),
    /// Retryable: the broker did not confirm the turn within the bounded retry.
    #[error("the message queue is unavailable right now: {0}")]
    BrokerDown(BrokerError),
    #[error("no reply within {0:?}")]
    Timeout(Duration),
}

/// Why a privacy request (show or forget a user's data) was not done.
#[derive(Debug, thiserror::Error)]
pub enum PrivacyError {
    /// Retryable: the broker did not take the request.
    #[error("the message queue is unavailable right now: {0}")]
    BrokerDown(BrokerError),
    /// No worker answered in time (none running, or all busy); the request expires
    /// unanswered, so nothing was done.
    #[error("no worker answered within {0:?}")]
    Timeout(Duration),
    /// A worker tried and a store failed; retry later.
    #[error("the request could not be done: {0}")]
    Failed(String),
}

/// Why the gateway cannot take turns right now (`/readyz`).
#[derive(Debug, thiserror::Error)]
pub enum NotReady {
    /// Unreachable, or blocking publishers (a resource alarm): turns would be refused.
    #[error("{0}")]
    Broker(BrokerError),
    /// Turns could be published, but their replies would not come back here.
    #[error(
        "not consuming the reply queue {0} (reconnecting, or the queue is missing and about \
         to be declared again)"
    )]
    RepliesNotConsumed(String),
}

/// A reply, ready to deliver, with the gateway's stages so far.
#[derive(Debug)]
pub struct Pending {
    pub reply: TurnReply,
    pub consumed_at: Instant,
    pub received: Instant,
    /// Platform event received → turn published and confirmed.
    pub ingress_ms: f64,
    /// Platform's own timestamp → our receipt (0 when the platform gives none).
    pub platform_lag_ms: f64,
    /// The conversation's turn slot: its next message starts when this is dropped, so an
    /// adapter that delivers in several sends (Discord chunks) keeps it until the last one.
    pub slot: crate::conversations::Turn,
    /// When the user first saw text of this reply (a streamed delta shown), set by the
    /// adapter; unset, the text first shows when the delivery completes.
    pub first_visible: Option<Instant>,
    /// The turn's trace (its delivery metric event carries it).
    pub trace: TraceContext,
    /// The turn's span (`turn_id`, `trace_id`): adapters log its delivery in it.
    pub span: tracing::Span,
}

pub struct GatewayCore {
    pub id: String,
    broker: Arc<dyn Broker>,
    /// The `delivery` points, batched: one publish carries ~100 ms of delivered replies
    /// instead of a confirmed publish per turn (nobody waits for them; sent at shutdown).
    delivery_metrics: Arc<MetricBatcher>,
    router: Arc<ReplyRouter>,
    conversations: Arc<Conversations>,
    pub max_text_chars: usize,
    reply_timeout: Duration,
    privacy_timeout: Duration,
    max_waiting: usize,
    publish_retry: RetryPolicy,
    /// The reply queue and whether its consumer is subscribed right now (readiness).
    replies: Option<(String, Consuming)>,
    /// Set by the first turn refused for a broker outage, cleared by the next one published:
    /// the outage is logged once, not once per turn.
    refusing: AtomicBool,
    records: Option<Records>,
    late: std::sync::OnceLock<Arc<dyn LateDelivery>>,
}

/// A platform that can still show a reply after its wait ended (Discord: post it in the
/// channel, as a reply to the user's message). Replies nobody waits for go here first; only
/// those it cannot deliver are given up.
#[async_trait::async_trait]
pub trait LateDelivery: Send + Sync {
    /// The platform it delivers for (`TurnRequest.conversation.platform`).
    fn platform(&self) -> &str;
    /// Shows the reply; false when it could not (no bot for the character, refused).
    async fn deliver_late(&self, reply: &TurnReply) -> bool;
}

/// Where the gateway marks turns nobody will see (the workers' turn records).
#[derive(Clone)]
struct Records {
    cache: Arc<dyn Cache>,
    ttl: Duration,
}

/// Gives a turn up unless disarmed: when `submit` returns without a reply (publish failed,
/// reply timed out) or is dropped while waiting (the client went away), the turn is
/// forgotten here and marked abandoned in its record, which takes its history back and
/// keeps a late reply out of history and memory. Drop-based, so a cancelled wait is covered
/// like the other two.
struct GiveUp<'a> {
    core: &'a GatewayCore,
    turn_id: Uuid,
    conversation_key: String,
    why: &'static str,
    armed: bool,
}

impl Drop for GiveUp<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        self.core.router.abandon(self.turn_id);
        let Some(r) = self.core.records.clone() else {
            return;
        };
        let (turn_id, key, why) = (self.turn_id, self.conversation_key.clone(), self.why);
        tracing::info!(%turn_id, why, "turn given up; its reply will not be kept");
        // Off this (possibly cancelled) task; Redis calls are bounded.
        tokio::spawn(
            async move {
                if let Err(e) = records::abandon(r.cache.as_ref(), &turn_id, &key, why, r.ttl).await
                {
                    tracing::warn!(%turn_id, error = %e, "could not mark the turn abandoned; a late reply may enter history");
                }
            }
            .instrument(tracing::Span::current()),
        );
    }
}

impl GatewayCore {
    pub fn new(
        id: String,
        broker: Arc<dyn Broker>,
        router: Arc<ReplyRouter>,
        max_text_chars: usize,
        reply_timeout: Duration,
        max_waiting: usize,
    ) -> Self {
        Self {
            id,
            delivery_metrics: MetricBatcher::with_linger(broker.clone(), DELIVERY_METRICS_LINGER),
            broker,
            router,
            conversations: Conversations::new(),
            max_text_chars,
            reply_timeout,
            privacy_timeout: Duration::from_secs(15),
            max_waiting,
            // Three attempts, 100 ms–1 s apart: a blip is ridden out, the user is not kept
            // waiting through an outage.
            publish_retry: RetryPolicy::new(2, Duration::from_millis(100), Duration::from_secs(1)),
            records: None,
            late: std::sync::OnceLock::new(),
            replies: None,
            refusing: AtomicBool::new(false),
        }
    }

    /// Lets `late` deliver replies of its platform that arrive after their wait ended (set
    /// once, by the adapter that can).
    pub fn set_late_delivery(&self, late: Arc<dyn LateDelivery>) {
        let _ = self.late.set(late);
    }

    fn late_for(&self, platform: &str) -> Option<&Arc<dyn LateDelivery>> {
        self.late.get().filter(|l| l.platform() == platform)
    }

    /// Marks given-up turns in the workers' turn records (`ttl`: their lifetime).
    pub fn with_records(mut self, cache: Option<Arc<dyn Cache>>, ttl: Duration) -> Self {
        self.records = cache.map(|cache| Records { cache, ttl });
        self
    }

    /// How long [`GatewayCore::privacy`] waits for a worker.
    pub fn with_privacy_timeout(mut self, timeout: Duration) -> Self {
        self.privacy_timeout = timeout;
        self
    }

    /// Makes readiness cover the consumer of `queue` (this gateway's reply queue).
    pub fn with_reply_consumer(mut self, queue: String, consuming: Consuming) -> Self {
        self.replies = Some((queue, consuming));
        self
    }

    /// Whether turns can go out and their replies come back right now: the broker takes
    /// publishes (reachable, not blocking publishers) and the reply queue is consumed.
    pub async fn readiness(&self) -> Result<(), NotReady> {
        self.broker.readiness().await.map_err(NotReady::Broker)?;
        match &self.replies {
            Some((queue, consuming)) if !consuming.now() => {
                Err(NotReady::RepliesNotConsumed(queue.clone()))
            }
            _ => Ok(()),
        }
    }

    pub fn broker(&self) -> &Arc<dyn Broker> {
        &self.broker
    }

    /// Checks the text before anything is queued.
    pub fn validate(&self, text: &str) -> Result<(), SubmitError> {
        if text.trim().is_empty() {
            return Err(SubmitError::Empty);
        }
        let chars = text.chars().count();
        if chars > self.max_text_chars {
            return Err(SubmitError::TooLong {
                chars,
                limit: self.max_text_chars,
            });
        }
        Ok(())
    }

    /// Publishes the turn and waits for its reply; the conversation's next turn waits until
    /// the returned [`Pending`] (its `slot`) is dropped, i.e. until the reply was delivered.
    ///
    /// Each platform event starts a trace ([`TraceContext`]): the turn carries it in its
    /// `traceparent` header, and every log line of the turn here is in a `turn` span with
    /// `turn_id` and `trace_id` (the adapter keeps [`Pending::span`] for its delivery).
    pub async fn submit(&self, input: TurnInput) -> Result<Pending, SubmitError> {
        self.submit_with(input, None).await
    }

    /// [`GatewayCore::submit`], asking the worker to stream: the reply's text goes to
    /// `text` as it is written (new text only, in order), and the channel closes when the
    /// reply arrives or the wait ends. The reply stays authoritative: a worker that could
    /// not stream (an old one, a redelivered turn) sends the reply alone.
    pub async fn submit_streaming(
        &self,
        input: TurnInput,
        text: tokio::sync::mpsc::UnboundedSender<String>,
    ) -> Result<Pending, SubmitError> {
        self.submit_with(input, Some(text)).await
    }

    async fn submit_with(
        &self,
        input: TurnInput,
        stream: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    ) -> Result<Pending, SubmitError> {
        let trace = TraceContext::new_root();
        let span = tracing::info_span!(
            "turn",
            turn_id = tracing::field::Empty,
            trace_id = %trace.trace_id(),
            span_id = %trace.span_id(),
        );
        trace::link(&span, &trace);
        trace::scope(
            trace,
            self.submit_traced(input, stream, trace, span.clone()),
        )
        .instrument(span)
        .await
    }

    async fn submit_traced(
        &self,
        input: TurnInput,
        stream: Option<tokio::sync::mpsc::UnboundedSender<String>>,
        trace: TraceContext,
        span: tracing::Span,
    ) -> Result<Pending, SubmitError> {
        self.validate(&input.text)?;
        let key = input.conversation.key(&input.character);
        let turn = self.conversations.enter(&key, self.max_waiting).await?;
        let turn_id = Uuid::now_v7();
        span.record("turn_id", tracing::field::display(turn_id));
        let req = TurnRequest {
            v: WIRE_VERSION,
            turn_id,
            conversation: input.conversation,
            character: input.character,
            user_name: input.user_name,
            text: input.text,
            seq: turn.seq,
            platform_sent_at: input.platform_sent_at,
            received_at: input.received_at,
            published_at: Utc::now(),
            reply_to: self.id.clone(),
            platform_message_id: input.platform_message_id,
            stream: stream.is_some(),
        };
        let late_ok = self.late_for(&req.conversation.platform).is_some();
        let waiter = match stream {
            Some(text) => self.router.expect_streaming(turn_id, text),
            None => self.router.expect(turn_id),
        };
        let mut give_up = GiveUp {
            core: self,
            turn_id,
            conversation_key: key,
            why: "client_gone",
            armed: true,
        };
        if let Err(e) = self.publish_turn(&req, &trace).await {
            // It may still reach the queue (a confirm lost, a blocked broker letting it
            // through later): the record keeps a worker from running it into history.
            give_up.why = "publish_failed";
            return Err(SubmitError::BrokerDown(e));
        }
        let ingress_ms = input.received.elapsed().as_secs_f64() * 1000.0;
        tracing::debug!(seq = req.seq, ingress_ms, "turn published");
        let platform_lag_ms = req
            .platform_sent_at
            .map_or(0.0, |s| ms_between(s, req.received_at));
        let arrived = match tokio::time::timeout(self.reply_timeout, waiter).await {
            Ok(Ok(a)) => a,
            _ => {
                give_up.why = "reply_timeout";
                if late_ok {
                    // Still shown when it comes (see `unclaimed`), so not given up.
                    give_up.armed = false;
                    self.router.abandon(turn_id);
                }
                return Err(SubmitError::Timeout(self.reply_timeout));
            }
        };
        give_up.armed = false;
        Ok(Pending {
            reply: arrived.reply,
            consumed_at: arrived.consumed_at,
            received: input.received,
            ingress_ms,
            platform_lag_ms,
            slot: turn,
            first_visible: None,
            trace,
            span,
        })
    }

    /// Shows or forgets what is stored about `identity` (with `character` only, or all):
    /// publishes a privacy request for a worker (the gateway holds no store) and waits for
    /// its reply, at most `PRIVACY_TIMEOUT_MS`. The identity comes from the adapter's trust
    /// boundary (API key, Discord interaction), never from what a client wrote.
    pub async fn privacy(
        &self,
        identity: Identity,
        character: Option<String>,
        action: PrivacyAction,
    ) -> Result<PrivacyReply, PrivacyError> {
        let req = PrivacyRequest {
            v: WIRE_VERSION,
            request_id: Uuid::now_v7(),
            identity,
            character,
            action,
            reply_to: self.id.clone(),
            expires_at: Utc::now()
                + chrono::Duration::from_std(self.privacy_timeout).unwrap_or(chrono::Duration::MAX),
        };
        let reply = self.router.expect_privacy(req.request_id);
        let msg = Message::json(
            topology::PRIVACY_EXCHANGE,
            topology::PRIVACY_ROUTING_KEY,
            req.encode(),
        )
        .with_id(req.request_id.to_string());
        let published = retry(&self.publish_retry, "privacy request publish", |_| {
            self.broker.publish(msg.clone())
        })
        .await;
        if let Err(e) = published {
            self.router.forget_privacy(req.request_id);
            return Err(PrivacyError::BrokerDown(e));
        }
        let reply = match tokio::time::timeout(self.privacy_timeout, reply).await {
            Ok(Ok(r)) => r,
            _ => {
                self.router.forget_privacy(req.request_id);
                tracing::warn!(request_id = %req.request_id, action = ?req.action, "no worker answered a privacy request in time");
                return Err(PrivacyError::Timeout(self.privacy_timeout));
            }
        };
        match reply.outcome {
            PrivacyOutcome::Ok => Ok(reply),
            PrivacyOutcome::Error => Err(PrivacyError::Failed(
                reply.error.unwrap_or_else(|| "a store failed".into()),
            )),
        }
    }

    /// Replies nobody waits for (their wait ended, or this gateway restarted since): shown
    /// late where the platform allows it (Discord), otherwise their turns are marked
    /// abandoned (idempotent when the wait already gave them up), so what nobody saw leaves
    /// history and is not remembered.
    async fn unclaimed(self: Arc<Self>, mut rx: tokio::sync::mpsc::UnboundedReceiver<TurnReply>) {
        while let Some(reply) = rx.recv().await {
            if let Some(late) = self.late_for(&reply.conversation.platform)
                && late.deliver_late(&reply).await
            {
                continue;
            }
            let Some(r) = &self.records else { continue };
            let key = reply.conversation.key(&reply.character);
            if let Err(e) =
                records::abandon(r.cache.as_ref(), &reply.turn_id, &key, "unclaimed", r.ttl).await
            {
                tracing::warn!(turn_id = %reply.turn_id, error = %e, "could not mark an unclaimed reply's turn abandoned");
            }
        }
    }

    /// Bounded retry: a broker blip is ridden out, an outage is reported to the user.
    async fn publish_turn(
        &self,
        req: &TurnRequest,
        trace: &TraceContext,
    ) -> Result<(), BrokerError> {
        let msg = Message::json(
            topology::TURNS_EXCHANGE,
            topology::TURNS_ROUTING_KEY,
            req.encode(),
        )
        .with_id(req.turn_id.to_string())
        .with_trace(trace);
        let res = retry(&self.publish_retry, "turn publish", |_| {
            self.broker.publish(msg.clone())
        })
        .await;
        self.note_publish(&res);
        res
    }

    /// Logs a broker outage (unreachable, or blocking publishers) once per period: the first
    /// turn refused warns with the reason, the first one published afterwards says it is over.
    fn note_publish(&self, res: &Result<(), BrokerError>) {
        match res {
            Err(e) => {
                if !self.refusing.swap(true, Ordering::SeqCst) {
                    tracing::warn!(error = %e, "answering turns with 503 until the broker takes them again");
                }
            }
            Ok(()) => {
                if self.refusing.swap(false, Ordering::SeqCst) {
                    tracing::info!("the broker takes turns again");
                }
            }
        }
    }

    /// The gateway's stages for a delivered reply, merged with the worker's; call when the
    /// platform send (or HTTP response) is done.
    pub fn complete(&self, pending: &Pending) -> BTreeMap<String, f64> {
        let now = Instant::now();
        let mut t = pending.reply.timings.clone();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let end_to_end = ms(now.duration_since(pending.received));
        let mut put = |stage: Stage, ms: f64| t.insert(stage.as_str().into(), ms);
        put(Stage::PlatformLag, pending.platform_lag_ms);
        put(Stage::Ingress, pending.ingress_ms);
        put(Stage::Delivery, ms(now.duration_since(pending.consumed_at)));
        put(Stage::EndToEnd, end_to_end);
        // Without streamed text, the reply first shows when its delivery completes.
        let first_visible = pending
            .first_visible
            .map_or(end_to_end, |at| ms(at.duration_since(pending.received)));
        put(Stage::FirstVisible, first_visible);
        let llm = Stage::Llm.ms_in(&t).unwrap_or(0.0);
        t.insert(Stage::Overhead.as_str().into(), (end_to_end - llm).max(0.0));
        t
    }

    /// Sends the `delivery` points still pending (at shutdown), waiting at most `limit`.
    pub async fn drain_metrics(&self, limit: Duration) {
        if !self.delivery_metrics.drain(limit).await {
            tracing::warn!("delivery metric points still pending at exit are lost");
        }
    }

    /// This turn's `delivery` point (in its trace when it goes alone), off the reply path:
    /// batched with other turns' points (see [`MetricBatcher`]).
    pub fn publish_delivery_metrics(&self, pending: &Pending, timings: &BTreeMap<String, f64>) {
        let body = lineproto::encode(&[delivery_point(&pending.reply, timings, Utc::now())]);
        self.delivery_metrics
            .push(body.as_bytes(), Some(pending.trace));
    }
}

/// How long the first `delivery` point of a batch waits for others: short enough that
/// dashboards (which aggregate over seconds) stay current, long enough that one publish
/// carries many turns (Telegraf's own outputs flush every 10 s by default).
const DELIVERY_METRICS_LINGER: Duration = Duration::from_millis(100);

/// The stages the gateway reports on its `delivery` point, each as a `<stage>_ms` field.
pub const DELIVERY_STAGES: [Stage; 8] = [
    Stage::PlatformLag,
    Stage::Ingress,
    Stage::Delivery,
    Stage::EndToEnd,
    Stage::Overhead,
    Stage::Llm,
    Stage::LlmFirstToken,
    Stage::FirstVisible,
];

/// The `delivery` point of one delivered reply (also read by the deploy test, which checks
/// the Grafana dashboard against the names written here).
pub fn delivery_point(
    reply: &TurnReply,
    timings: &BTreeMap<String, f64>,
    now: DateTime<Utc>,
) -> Point {
    let mut p = Point::new("delivery", now)
        .tag(
            "character",
            &whisperfleet_shared::character::normalize_name(&reply.character),
        )
        .tag("platform", &reply.conversation.platform)
        .tag("outcome", reply.outcome.as_str());
    for stage in DELIVERY_STAGES {
        if let Some(ms) = stage.ms_in(timings) {
            p = p.float(&format!("{stage}_ms"), ms);
        }
    }
    p
}

/// A [`GatewayCore`] with its reply consumer running: what every adapter needs. Dropping
/// it (or calling [`Connected::stop`]) ends the reply consumer.
pub struct Connected {
    pub core: Arc<GatewayCore>,
    stop_replies: tokio_util::sync::CancellationToken,
    router_task: tokio::task::JoinHandle<()>,
    unclaimed: Option<tokio::sync::mpsc::UnboundedReceiver<TurnReply>>,
    unclaimed_task: Option<tokio::task::JoinHandle<()>>,
}

/// Prefetch of the reply queue: replies are tiny and handled instantly.
pub const REPLY_PREFETCH: u16 = 512;

impl Connected {
    /// Declares the topology and this gateway's reply queue, and starts consuming it.
    pub async fn start(
        config: &whisperfleet_shared::config::Config,
        broker: Arc<dyn Broker>,
        cache: Option<Arc<dyn Cache>>,
    ) -> Result<Self, BrokerError> {
        broker.ensure_topology().await?;
        let reply_queue = broker.ensure_reply_queue(&config.gateway.id).await?;
        let replies = broker.consume(&reply_queue, REPLY_PREFETCH).await?;
        let stop_replies = replies.stop.clone();
        let consuming = replies.consuming.clone();
        let (unclaimed_tx, unclaimed) = tokio::sync::mpsc::unbounded_channel();
        let router = ReplyRouter::with_unclaimed(unclaimed_tx);
        let router_task = tokio::spawn(router.clone().run(replies));
        let core = Arc::new(
            GatewayCore::new(
                config.gateway.id.clone(),
                broker,
                router,
                config.gateway.max_text_chars,
                config.gateway.reply_timeout,
                config.gateway.max_queued_per_conversation,
            )
            .with_records(cache, config.worker.turn_record_ttl)
            .with_privacy_timeout(config.gateway.privacy_timeout)
            .with_reply_consumer(reply_queue, consuming),
        );
        if config.gateway.reply_timeout <= config.worker.turn_deadline {
            tracing::warn!(
                reply_timeout_ms = config.gateway.reply_timeout.as_millis() as u64,
                turn_deadline_ms = config.worker.turn_deadline.as_millis() as u64,
                "WHISPERFLEET_REPLY_TIMEOUT_MS is not longer than WHISPERFLEET_TURN_DEADLINE_MS: replies of slow turns will arrive after the gateway stopped waiting"
            );
        }
        Ok(Self {
            core,
            stop_replies,
            router_task,
            unclaimed: Some(unclaimed),
            unclaimed_task: None,
        })
    }

    /// Starts handling replies nobody waits for. Call it once every adapter that can show
    /// late replies registered (`GatewayCore::set_late_delivery`): replies that waited in the
    /// queue through a restart arrive right away and must not be given up for want of one.
    pub fn serve_unclaimed(&mut self) {
        if let Some(rx) = self.unclaimed.take() {
            self.unclaimed_task = Some(tokio::spawn(self.core.clone().unclaimed(rx)));
        }
    }

    pub fn stop(&self) {
        self.stop_replies.cancel();
        self.router_task.abort();
        if let Some(t) = &self.unclaimed_task {
            t.abort();
        }
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.stop();
    }
}
