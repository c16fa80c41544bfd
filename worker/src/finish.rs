//! The end of a turn once its answer is known: the reply leaves (and is recorded as sent),
//! `memory_store` runs, and the turn's metric points go out, in the order a [`Finish`]
//! gives. The fleet's order is [`ReplyFirst`]: the user never waits for memory or metrics,
//! and the metric points follow the `replied` record, so a delivery that finds no record
//! has sent none either (no marker of their own is needed).
//!
//! How the points leave is the [`TurnMetrics`] port: the fleet's is [`MetricEvent`], one
//! line-protocol message per turn for the metrics-writer to batch. The bench passes the
//! seed's order and a per-point InfluxDB writer instead (testkit, `naive`).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use async_trait::async_trait;
use chrono::Utc;
use whisperfleet_shared::character::normalize_name;
use whisperfleet_shared::lineproto::{self, Point};
use whisperfleet_shared::ports::EmotionResult;
use whisperfleet_shared::ports::broker::{Broker, BrokerError, Message};
use whisperfleet_shared::wire::{Stage, TurnReply, TurnRequest};

use crate::memory;
use crate::turn::{Deps, Timings, ToRemember, publish_reply, record_key, turn_points};

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

/// The fleet's: one metric event on the broker per turn, batched by the metrics-writer.
pub struct MetricEvent {
    broker: Arc<dyn Broker>,
}

impl MetricEvent {
    pub fn new(broker: Arc<dyn Broker>) -> Self {
        Self { broker }
    }
}

#[async_trait]
impl TurnMetrics for MetricEvent {
    async fn send(&self, points: Vec<Point>) -> Result<(), MetricsNotSent> {
        let body = lineproto::encode(&points);
        self.broker
            .publish(Message::line_protocol(body.into_bytes()))
            .await
            .map_err(|e| MetricsNotSent(e.to_string()))
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
    already_replied: bool,
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
        already_replied: bool,
    ) -> Self {
        Self {
            deps,
            req,
            reply,
            remember,
            already_replied,
            replied: false,
            metrics_sent: false,
            timings: Timings::from_map(reply.timings.clone()),
            points: Vec::new(),
        }
    }

    /// Stage `reply_publish`: publishes the reply (unless an earlier delivery did) and
    /// records that it left.
    pub async fn publish_reply(&mut self) -> Result<(), NotPublished> {
        if self.replied {
            return Ok(());
        }
        let deps = self.deps;
        let t = Instant::now();
        if !self.already_replied {
            publish_reply(deps, &self.req.reply_to, self.reply).await?;
        }
        self.replied = true;
        self.timings.since(Stage::ReplyPublish, t);
        if !self.already_replied
            && let Some(c) = &deps.cache
            && let Err(e) = c
                .set(
                    &record_key(&self.req.turn_id.to_string(), "replied"),
                    b"1",
                    deps.settings.record_ttl,
                )
                .await
        {
            tracing::warn!(error = %e, "could not record the reply; a redelivery may answer again (the gateway drops it)");
        }
        Ok(())
    }

    /// Stage `memory_store`, when the turn has something to remember: stores it, records
    /// that it did, and keeps the stage's points for [`Tail::send_metrics`].
    pub async fn store_memory(&mut self) {
        let Some(a) = self.remember.take() else {
            return;
        };
        let (deps, req, reply) = (self.deps, self.req, self.reply);
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
        .await;
        self.timings.since(Stage::MemoryStore, t);
        for f in &stored.failures {
            tracing::warn!(failure = %f, "memory_store failed; the reply stands, the failure is counted");
        }
        if let Some(c) = &deps.cache {
            let _ = c
                .set(
                    &record_key(&req.turn_id.to_string(), "memory"),
                    b"1",
                    deps.settings.record_ttl,
                )
                .await;
        }
        self.points.extend(memory_points(
            req,
            &a.user_emotion,
            &stored,
            a.counting.upserts.load(Ordering::Relaxed),
            a.counting.recents.load(Ordering::Relaxed),
        ));
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
