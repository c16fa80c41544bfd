//! Queue-depth sampling: every `metrics_sample_interval_ms`, the ready count and consumers
//! of every fleet queue (`turns`, `turns.dead`, `metrics`, `metrics.dead`, `privacy`,
//! `privacy.dead` and each gateway's `replies.*`, found in the gateways' heartbeat registry: one Redis call per sample, however
//! large the keyspace grows with per-turn records), plus unacked counts from the
//! management API where it is configured, as `fleet_queue` points; and the writer's own
//! `metrics_writer` health point. The samples are published as a metric event like any
//! other, so they get the same batching, retries and acks.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use tokio_util::sync::CancellationToken;
use whisperfleet_shared::lineproto::{self, Point};
use whisperfleet_shared::ports::broker::{Broker, Message, QueueStats};
use whisperfleet_shared::ports::cache::Cache;
use whisperfleet_shared::topology;

use crate::batch::WriterStats;

/// Every fleet queue that exists now: the fixed ones plus registered gateways' reply queues.
pub async fn fleet_queues(
    broker: &dyn Broker,
    cache: Option<&dyn Cache>,
) -> Result<Vec<QueueStats>, whisperfleet_shared::ports::broker::BrokerError> {
    let mut names: Vec<String> = topology::FLEET_QUEUES
        .iter()
        .map(|s| s.to_string())
        .collect();
    if let Some(cache) = cache {
        match cache
            .alive(topology::GATEWAY_REGISTRY, topology::GATEWAY_ALIVE)
            .await
        {
            Ok(ids) => names.extend(ids.iter().map(|id| topology::reply_queue(id))),
            Err(e) => {
                tracing::debug!(error = %e, "cannot list gateways; sampling fixed queues only")
            }
        }
    }
    let mut out = Vec::new();
    for name in names {
        if let Some(s) = broker.queue_stats(&name).await? {
            out.push(s);
        }
    }
    Ok(out)
}

/// Unacked counts from the RabbitMQ management API (`GET /api/queues/<vhost>/<queue>`).
pub struct Management {
    client: reqwest::Client,
    base: String,
    user: String,
    password: SecretString,
    vhost: String,
}

impl Management {
    pub fn new(url: &SecretString, amqp_url: &SecretString) -> Option<Self> {
        let parsed = reqwest::Url::parse(url.expose_secret()).ok()?;
        let user = parsed.username().to_string();
        let password = SecretString::from(parsed.password().unwrap_or_default().to_string());
        let mut base = parsed.clone();
        let _ = base.set_username("");
        let _ = base.set_password(None);
        // The vhost is the AMQP URL's path ("/%2f" or "/" means the default vhost "/").
        let amqp = reqwest::Url::parse(amqp_url.expose_secret()).ok()?;
        let raw = amqp.path().trim_start_matches('/');
        let vhost = if raw.is_empty() {
            "%2F".to_string()
        } else {
            raw.replace("%2f", "%2F")
        };
        Some(Self {
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(3))
                .build()
                .ok()?,
            base: base.as_str().trim_end_matches('/').to_string(),
            user,
            password,
            vhost,
        })
    }

    pub async fn unacked(&self, queue: &str) -> Option<u64> {
        let url = format!("{}/api/queues/{}/{}", self.base, self.vhost, queue);
        let v: serde_json::Value = self
            .client
            .get(url)
            .basic_auth(&self.user, Some(self.password.expose_secret()))
            .send()
            .await
            .ok()?
            .error_for_status()
            .ok()?
            .json()
            .await
            .ok()?;
        v.get("messages_unacknowledged")?.as_u64()
    }
}

/// One queue's `fleet_queue` point (`unacked` only where the management API answered).
pub fn queue_point(q: &QueueStats, unacked: Option<u64>, now: DateTime<Utc>) -> Point {
    let mut p = Point::new("fleet_queue", now)
        .tag("queue", &q.queue)
        .int("ready", q.ready as i64)
        .int("consumers", i64::from(q.consumers));
    if let Some(unacked) = unacked {
        p = p.int("unacked", unacked as i64);
    }
    p
}

/// The writer's own `metrics_writer` health point.
pub fn health_point(stats: &WriterStats, write_requests: u64, now: DateTime<Utc>) -> Point {
    Point::new("metrics_writer", now)
        .int("batches", stats.batches.load(Ordering::Relaxed) as i64)
        .int(
            "batch_points",
            stats.last_batch_points.load(Ordering::Relaxed) as i64,
        )
        .float(
            "write_ms",
            stats.last_write_us.load(Ordering::Relaxed) as f64 / 1000.0,
        )
        .int(
            "points_written",
            stats.points_written.load(Ordering::Relaxed) as i64,
        )
        .int("retries", stats.retries.load(Ordering::Relaxed) as i64)
        .int(
            "dead_lettered",
            stats.dead_lettered.load(Ordering::Relaxed) as i64,
        )
        .int(
            "pending",
            stats.pending_points.load(Ordering::Relaxed) as i64,
        )
        .int("write_requests", write_requests as i64)
}

pub async fn run(
    broker: Arc<dyn Broker>,
    cache: Option<Arc<dyn Cache>>,
    management: Option<Management>,
    stats: Arc<WriterStats>,
    sink_requests: impl Fn() -> u64 + Send + 'static,
    interval: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Utc::now();
        let mut points = Vec::new();
        match fleet_queues(broker.as_ref(), cache.as_deref()).await {
            Ok(queues) => {
                for q in queues {
                    let unacked = match &management {
                        Some(m) => m.unacked(&q.queue).await,
                        None => None,
                    };
                    points.push(queue_point(&q, unacked, now));
                }
            }
            Err(e) => tracing::warn!(error = %e, "queue depth not sampled"),
        }
        points.push(health_point(&stats, sink_requests(), now));
        let body = lineproto::encode(&points);
        if let Err(e) = broker
            .publish(Message::line_protocol(body.into_bytes()))
            .await
        {
            tracing::warn!(error = %e, "queue-depth sample not published");
        }
    }
}
