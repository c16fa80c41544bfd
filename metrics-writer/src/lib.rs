//! metrics-writer: drains metric events (line protocol, one AMQP message per turn) from the
//! `metrics` queue into batched InfluxDB writes and samples fleet queue depth.
//!
//! This is the skeleton the core issue asks for: it declares the topology and keeps the
//! `metrics` queue consumed-free (events accumulate, nothing is lost) until the batching
//! writer lands in its own issue.

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use whisperfleet_shared::amqp::RabbitBroker;
use whisperfleet_shared::broker::Broker;
use whisperfleet_shared::config::Config;
use whisperfleet_shared::topology::TopologySettings;

pub async fn run(config: &Config, shutdown: CancellationToken) -> anyhow::Result<()> {
    let amqp = config.require_amqp("the metrics-writer")?.clone();
    let broker = RabbitBroker::connect(
        amqp,
        "metrics-writer",
        TopologySettings {
            delivery_limit: config.delivery_limit,
            ..Default::default()
        },
    )
    .await
    .context("connecting to RabbitMQ")?;
    broker.ensure_topology().await?;
    tracing::warn!(
        "metrics-writer: InfluxDB writing is not implemented yet; metric events stay queued"
    );
    shutdown.cancelled().await;
    Ok(())
}
