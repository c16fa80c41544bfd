//! metrics-writer: the only process that talks to InfluxDB. It drains metric events (line
//! protocol, one AMQP message per turn) from the `metrics` queue into batched writes, acks
//! only after a write succeeded, and samples fleet queue depth. See `batch` for the retry
//! policy, `whisperfleet_adapters::metrics::influx` for the HTTP layer and `sampler` for queue depth.

pub mod batch;
pub mod sampler;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use secrecy::ExposeSecret;
use tokio_util::sync::CancellationToken;
use whisperfleet_adapters::connect::{self, Missing};
use whisperfleet_shared::config::Config;
use whisperfleet_shared::health;
use whisperfleet_shared::ports::broker::Subscription;
use whisperfleet_shared::ports::{Broker, Cache, MetricsSink};
use whisperfleet_shared::topology;

use crate::batch::{BatchSettings, Batcher, WriterStats};

pub use whisperfleet_adapters::connect::RequestCounter;

pub struct Application {
    broker: Arc<dyn Broker>,
    cache: Option<Arc<dyn Cache>>,
    sink: Arc<dyn MetricsSink>,
    requests: RequestCounter,
    management: Option<sampler::Management>,
    metrics: Subscription,
    settings: BatchSettings,
    sample_interval: Duration,
    grace: Duration,
    /// `/healthz` and `/readyz` (the standalone writer only).
    health: Option<tokio::net::TcpListener>,
}

impl Application {
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        // First, so a taken address is the error shown, before anything connects.
        let health = health::bind(config, health::WRITER_DEFAULT).await?;
        let amqp = config.require_amqp("the metrics-writer")?.clone();
        config.require_redis("the metrics-writer")?;
        let metrics = connect::metrics(config, Missing::Refuse)?;
        let broker = connect::broker(config, "metrics-writer", Missing::Refuse).await?;
        let cache = connect::cache(config, "metrics-writer", Missing::Refuse)?;
        let management = match &config.metrics.rabbitmq_management_url {
            Some(url) => {
                whisperfleet_adapters::http::check_http_url(
                    "WHISPERFLEET_RABBITMQ_MANAGEMENT_URL",
                    url.expose_secret(),
                )?;
                sampler::Management::new(url, &amqp)
            }
            None => None,
        };
        let mut app = Self::build_with(
            config,
            broker,
            Some(cache),
            metrics.sink,
            metrics.requests,
            management,
        )
        .await?;
        app.health = health;
        Ok(app)
    }

    /// Any broker, cache and sink: the standalone writer uses RabbitMQ, Redis and InfluxDB;
    /// `whisperfleet up`/`chat` pass their embedded ones and a line-protocol file.
    pub async fn build_with(
        config: &Config,
        broker: Arc<dyn Broker>,
        cache: Option<Arc<dyn Cache>>,
        sink: Arc<dyn MetricsSink>,
        requests: RequestCounter,
        management: Option<sampler::Management>,
    ) -> anyhow::Result<Self> {
        broker
            .ensure_topology()
            .await
            .context("declaring the fleet topology")?;
        let metrics = broker
            .consume(topology::METRICS_QUEUE, config.metrics.max_pending)
            .await
            .context("consuming metrics")?;
        tracing::info!(
            sink = sink.describe(),
            batch_size = config.metrics.batch_size,
            flush_interval_ms = config.metrics.flush_interval.as_millis(),
            max_pending = config.metrics.max_pending,
            "metrics-writer starting"
        );
        Ok(Self {
            broker,
            cache,
            sink,
            requests,
            management,
            metrics,
            settings: BatchSettings {
                batch_size: config.metrics.batch_size,
                flush_interval: config.metrics.flush_interval,
                backoff_base: Duration::from_millis(200),
                backoff_max: Duration::from_secs(10),
            },
            sample_interval: config.metrics.sample_interval,
            grace: config.process.shutdown_grace,
            health: None,
        })
    }

    pub async fn run_until_stopped(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let stats = Arc::new(WriterStats::default());
        if let Some(listener) = self.health.take() {
            health::spawn(
                listener,
                "metrics-writer",
                readiness(&self.metrics, &stats),
                shutdown.clone(),
            );
        }
        let requests = self.requests.clone();
        let sampler = tokio::spawn(sampler::run(
            self.broker.clone(),
            self.cache.clone(),
            self.management,
            stats.clone(),
            move || requests(),
            self.sample_interval,
            shutdown.clone(),
        ));
        // Retries stop `grace` after shutdown; what is unwritten then stays in the queue.
        let hard_stop = CancellationToken::new();
        {
            let (s, h, g) = (shutdown.clone(), hard_stop.clone(), self.grace);
            tokio::spawn(async move {
                s.cancelled().await;
                tokio::time::sleep(g).await;
                h.cancel();
            });
        }
        let mut batcher =
            Batcher::new(self.sink.clone(), self.broker.clone(), self.settings, stats);
        let mut metrics = self.metrics;
        loop {
            let deadline = batcher.deadline();
            tokio::select! {
                _ = shutdown.cancelled() => break,
                d = metrics.rx.recv() => match d {
                    Some(d) => {
                        if batcher.push(d).await {
                            batcher.flush(&hard_stop).await;
                        }
                    }
                    None => break,
                },
                _ = sleep_until(deadline), if deadline.is_some() => {
                    batcher.flush(&hard_stop).await;
                }
            }
        }
        metrics.stop.cancel();
        tokio::time::sleep(Duration::from_millis(50)).await;
        while let Ok(d) = metrics.rx.try_recv() {
            batcher.push(d).await;
        }
        let flushed = batcher.flush(&hard_stop).await;
        sampler.abort();
        drop(metrics);
        if flushed {
            tracing::info!("metrics-writer stopped; every received event written and acked");
        } else {
            tracing::warn!(
                "metrics-writer stopped with unwritten events; RabbitMQ redelivers them"
            );
        }
        Ok(())
    }
}

/// Ready while the writer consumes `metrics` and its last write to the metrics server
/// succeeded (while it fails, events wait in the queue: the writer is up but not doing its job).
fn readiness(metrics: &Subscription, stats: &Arc<WriterStats>) -> health::Readiness {
    let (consuming, stats) = (metrics.consuming.clone(), stats.clone());
    Arc::new(move || {
        let consuming = consuming.clone();
        let failing = stats.write_failing.lock().expect("stats poisoned").clone();
        Box::pin(async move {
            if !consuming.now() {
                return Err(format!("not consuming {}", topology::METRICS_QUEUE));
            }
            match failing {
                Some(why) => Err(format!("writes to the metrics server fail: {why}")),
                None => Ok(()),
            }
        })
    })
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
