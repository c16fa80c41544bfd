//! The end of a turn once its answer is known: the reply leaves (and is recorded as sent),
//! `memory_store` runs, and the turn's metric points go out, in the order a [`Finish`]
//! gives. The fleet's order is [`ReplyFirst`]: the user never waits for memory or metrics,
//! and the metric points follow the `replied` record, so a delivery that finds no record
//! has sent none either (no marker of their own is needed).
//!
//! How the points leave is the [`TurnMetrics`] port: the fleet's is [`MetricEvent`], one
//! line-protocol message per turn for the metrics-writer to batch. The bench passes the
//! seed's order and a per-point InfluxDB writer instead (testkit, `naive`).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;
use tracing::Instrument;

use async_trait::async_trait;
use chrono::Utc;
use whisperfleet_shared::character::{Character, normalize_name};
use whisperfleet_shared::lineproto::{self, Point};
use whisperfleet_shared::metric_batch::MetricBatcher;
use whisperfleet_shared::ports::EmotionResult;
use whisperfleet_shared::ports::broker::{Broker, BrokerError};
use whisperfleet_shared::wire::{Counters, Outcome, Stage, TurnReply, TurnRequest, WIRE_VERSION};

use crate::memory;
use whisperfleet_shared::records::{self, TurnRecord};

use crate::turn::{Deps, Timings, ToRemember, publish_reply, record_done, reply_bound, stage_span};

/// The reply could not be published; the turn is left unsettled for redelivery.
#[derive(Debug, thiserror::Error)]
#[error("reply not published: {0}")]
pub struct NotPublished(#[from] BrokerError);

/// The turn's points could not be sent (they are dropped; the turn stands).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MetricsNotSent(pub String);

/// How a finished turn's metric points leave the worker.
#[async_trait]
pub trait TurnMetrics: Send + Sync {
    async fn send(&self, points: Vec<Point>) -> Result<(), MetricsNotSent>;
}

/// The fleet's: the turn's points as a metric event on the broker, batched with the points
/// of other turns finishing within [`TURN_METRICS_LINGER`] (see [`MetricBatcher`]); the
/// metrics-writer batches the writes to InfluxDB. The turn is still acked only after its
/// points were confirmed: the linger delays the ack (the reply has left), not the user.
pub struct MetricEvent {
    batcher: Arc<MetricBatcher>,
}

/// How long a turn's points wait for other turns' before they leave. Without a wait, batches
/// only form when turns end within one publish's confirm (~1 ms): at a few hundred turns/s
/// per worker that is rare, and every turn cost its own confirmed publish, delivery and ack.
pub const TURN_METRICS_LINGER: std::time::Duration = std::time::Duration::from_millis(25);

impl MetricEvent {
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        Self {
            batcher: MetricBatcher::with_linger(broker, TURN_METRICS_LINGER),
        }
    }
}

#[async_trait]
impl TurnMetrics for MetricEvent {
    async fn send(&self, points: Vec<Point>) -> Result<(), MetricsNotSent> {
        let body = lineproto::encode(&points);
        self.batcher
            .send(body.as_bytes(), whisperfleet_shared::trace::current())
            .await
            .map_err(MetricsNotSent)
    }
}

/// The order of a turn's last steps.
#[async_trait]
pub trait Finish: Send + Sync {
    async fn finish(&self, tail: &mut Tail<'_>) -> Result<(), NotPublished>;
}

/// The fleet's order: reply, then memory, then the metric points.
pub struct ReplyFirst;

#[async_trait]
impl Finish for ReplyFirst {
    async fn finish(&self, tail: &mut Tail<'_>) -> Result<(), NotPublished> {
        tail.publish_reply().await?;
        tail.store_memory().await;
        tail.send_metrics().await;
        Ok(())
    }
}

/// A turn's last steps, each run at most once, in whatever order a [`Finish`] calls them.
pub struct Tail<'a> {
    deps: &'a Deps,
    req: &'a TurnRequest,
    reply: &'a TurnReply,
    remember: Option<ToRemember>,
    /// An earlier delivery's reply was confirmed: none is sent again.
    already_replied: bool,
    /// An earlier delivery finished `memory_store`.
    memory_done: bool,
    /// Why nobody will see the reply, when known: then neither reply nor memory.
    abandoned: Option<String>,
    replied: bool,
    metrics_sent: bool,
    timings: Timings,
    points: Vec<Point>,
}

impl<'a> Tail<'a> {
    pub(crate) fn new(
        deps: &'a Deps,
        req: &'a TurnRequest,
        reply: &'a TurnReply,
        remember: Option<ToRemember>,
        record: &TurnRecord,
        abandoned: Option<String>,
    ) -> Self {
        Self {
            deps,
            req,
            reply,
            remember,
            already_replied: record.replied(),
            memory_done: record.memory_stored(),
            abandoned,
            replied: false,
            metrics_sent: false,
            timings: Timings::from_map(reply.timings.clone()),
            points: Vec::new(),
        }
    }

    /// Stage `reply_publish`: publishes the reply (unless an earlier delivery did, or nobody
    /// will see it) and records that it left.
    pub async fn publish_reply(&mut self) -> Result<(), NotPublished> {
        if self.replied {
            return Ok(());
        }
        let deps = self.deps;
        let t = Instant::now();
        let send = !self.already_replied && self.abandoned.is_none();
        if send {
            let bound = reply_bound(deps, self.req);
            publish_reply(deps, &self.req.reply_to, self.reply, bound)
                .instrument(stage_span(Stage::ReplyPublish))
                .await?;
        }
        self.replied = true;
        self.timings.since(Stage::ReplyPublish, t);
        if send {
            record_done(deps, &self.req.turn_id.to_string(), records::REPLIED).await;
        }
        Ok(())
    }

    /// Stage `memory_store`, when the turn has something to remember and its reply was seen
    /// (or is on its way): stores it and keeps the stage's points for
    /// [`Tail::send_metrics`]. Either way the step is recorded as done, so a redelivery
    /// never stores (or re-runs the turn for) it again.
    pub async fn store_memory(&mut self) {
        if std::mem::replace(&mut self.memory_done, true) {
            return;
        }
        let (deps, req, reply) = (self.deps, self.req, self.reply);
        let turn_id = req.turn_id.to_string();
        let remember = self.remember.take();
        // The gateway may have given the turn up after its history was written (the client
        // left while the reply was on its way): then it is not remembered either.
        if self.abandoned.is_none()
            && remember.is_some()
            && let Some(c) = &deps.cache
            && let Ok(Some(why)) = c
                .hash_get(&records::turn_key(&turn_id), records::ABANDONED)
                .await
        {
            self.abandoned = Some(String::from_utf8_lossy(&why).into_owned());
        }
        if let Some(why) = &self.abandoned {
            tracing::info!(why, "nobody saw this reply; it is not remembered");
        } else if let Some(a) = remember {
            let t = Instant::now();
            let stored = memory::store(
                &a.counting,
                deps.memory.embedder.as_ref(),
                deps.memory.emotions.as_ref(),
                deps.store.as_ref(),
                memory::StoreInput {
                    turn_id: req.turn_id,
                    scope: &a.scope,
                    channel_id: &req.conversation.channel_id,
                    is_dm: req.conversation.is_dm,
                    user_text: &req.text,
                    user_emotion: &a.user_emotion,
                    user_vector: a.user_vector,
                    reply_text: &reply.text,
                },
            )
            .instrument(stage_span(Stage::MemoryStore))
            .await;
            self.timings.since(Stage::MemoryStore, t);
            for f in &stored.failures {
                tracing::warn!(failure = %f, "memory_store failed; the reply stands, the failure is counted");
            }
            self.points.extend(memory_points(
                req,
                &a.user_emotion,
                &stored,
                a.counting.upserts.load(Ordering::Relaxed),
                a.counting.recents.load(Ordering::Relaxed),
            ));
        }
        record_done(deps, &turn_id, records::MEMORY).await;
    }

    /// The turn's points (its timings so far, its counters, what `memory_store` measured)
    /// through the metrics port.
    pub async fn send_metrics(&mut self) {
        if std::mem::replace(&mut self.metrics_sent, true) {
            return;
        }
        let mut all = turn_points(self.req, self.reply, self.timings.as_map());
        all.append(&mut self.points);
        if let Err(e) = self.deps.metrics.send(all).await {
            tracing::warn!(error = %e, "metric event not published");
        }
    }
}

/// The memory stage's points: one `emotion` point per side (label as a tag: 12 values),
/// the `relationship` after the turn (never tagged by user), and `memory_store_failed` /
/// `memory_upserts` on a `memory` point.
fn memory_points(
    req: &TurnRequest,
    user_emotion: &EmotionResult,
    stored: &memory::Stored,
    upserts: u32,
    recent_queries: u32,
) -> Vec<Point> {
    let now = Utc::now();
    let character = normalize_name(&req.character);
    let emotion = |role: &str, e: &EmotionResult| {
        Point::new("emotion", now)
            .tag("character", &character)
            .tag("role", role)
            .tag("emotion", &e.primary)
            .float("intensity", f64::from(e.intensity))
            .float("confidence", f64::from(e.confidence))
    };
    let mut out = vec![emotion("user", user_emotion)];
    if let Some(e) = &stored.reply_emotion {
        out.push(emotion("assistant", e));
    }
    if let Some(r) = &stored.relationship {
        out.push(
            Point::new("relationship", now)
                .tag("character", &character)
                .float("trust", f64::from(r.trust))
                .float("affection", f64::from(r.affection))
                .float("attunement", f64::from(r.attunement))
                .int("interactions", r.interactions),
        );
    }
    out.push(
        Point::new("memory", now)
            .tag("character", &character)
            .int("upserts", i64::from(upserts))
            // Recent-emotional-state queries the turn made (context asks once).
            .int("emotion_queries", i64::from(recent_queries))
            .int(
                "memory_store_failed",
                i64::from(!stored.failures.is_empty()),
            ),
    );
    out
}

pub(crate) fn fallback_text(c: &Character) -> String {
    format!(
        "*{} pauses, lost in thought* Sorry — I can't find my words right now. Give me a moment and ask again?",
        c.name
    )
}

pub(crate) fn reply_of(
    req: &TurnRequest,
    text: String,
    outcome: Outcome,
    reason: Option<&str>,
    timings: BTreeMap<String, f64>,
    counters: Counters,
) -> TurnReply {
    TurnReply {
        v: WIRE_VERSION,
        turn_id: req.turn_id,
        conversation: req.conversation.clone(),
        character: req.character.clone(),
        text,
        outcome,
        timings,
        counters,
        seq: req.seq,
        platform_message_id: req.platform_message_id.clone(),
        reason: reason.map(str::to_string),
        partial: false,
    }
}

/// The per-turn points: one `turn` point (stage `<stage>_ms` fields, counters) and one
/// `cache` point. Tags are low-cardinality only; user ids never become tags.
pub fn turn_points(
    req: &TurnRequest,
    reply: &TurnReply,
    timings: &BTreeMap<String, f64>,
) -> Vec<Point> {
    let now = Utc::now();
    let character = normalize_name(&req.character);
    let mut turn = Point::new("turn", now)
        .tag("character", &character)
        .tag("platform", &req.conversation.platform)
        .tag("outcome", reply.outcome.as_str());
    for (stage, ms) in timings {
        turn = turn.float(&format!("{stage}_ms"), *ms);
    }
    let c = &reply.counters;
    turn = turn
        .int("cdl_queries", i64::from(c.cdl_queries))
        .int("emotion_queries", i64::from(c.emotion_queries))
        .int("memories_used", i64::from(c.memories_used))
        .int("memory_searches", i64::from(c.memory_searches))
        .int("llm_calls", i64::from(c.llm_calls))
        .int("redis_round_trips", i64::from(c.redis_round_trips))
        .int("context_degraded", i64::from(c.context_degraded))
        .int("partial", i64::from(reply.partial))
        .int("lore_entries_used", i64::from(c.lore_entries_used))
        .int("text_chars", req.text.chars().count() as i64)
        .int("reply_chars", reply.text.chars().count() as i64);
    // Cache effectiveness: the request cache's hits (and the level that served them:
    // this process, Redis) and misses, and the level each character load was served from
    // (own copy, Redis, PostgreSQL).
    let cache = Point::new("cache", now)
        .tag("character", &character)
        .int("hits", i64::from(c.cache_hits))
        .int("local_hits", i64::from(c.cache_local_hits))
        .int("redis_hits", i64::from(c.cache_redis_hits))
        .int("misses", i64::from(c.cache_misses))
        .int("character_local", i64::from(c.cdl_local_hits))
        .int("character_redis", i64::from(c.cdl_redis_hits))
        .int("character_store", i64::from(c.cdl_queries));
    vec![turn, cache]
}
