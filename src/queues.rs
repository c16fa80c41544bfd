//! `whisperfleet queues`: what an operator looks at before scaling workers — ready messages
//! and consumers of every fleet queue, straight from RabbitMQ (passive declares).

use std::time::Duration;

use anyhow::Context;
use whisperfleet_shared::amqp::RabbitBroker;
use whisperfleet_shared::broker::{Broker, QueueStats};
use whisperfleet_shared::cache::{Cache, RedisCache};
use whisperfleet_shared::config::Config;
use whisperfleet_shared::topology::{self, TopologySettings};

pub async fn run(config: &Config, json: bool, watch: Option<u64>) -> anyhow::Result<()> {
    let amqp = config.require_amqp("whisperfleet queues")?.clone();
    let broker = RabbitBroker::connect(amqp, "whisperfleet-queues", TopologySettings::default())
        .await
        .context("connecting to RabbitMQ")?;
    let cache = match &config.redis_url {
        Some(url) => Some(RedisCache::new(url.clone(), &config.redis_prefix)?),
        None => None,
    };
    loop {
        let stats = sample(broker.as_ref(), cache.as_ref()).await?;
        if json {
            println!(
                "{}",
                serde_json::to_string(&serde_json::json!({ "queues": stats }))?
            );
        } else {
            println!("{:<32} {:>10} {:>10}", "QUEUE", "READY", "CONSUMERS");
            for s in &stats {
                println!("{:<32} {:>10} {:>10}", s.queue, s.ready, s.consumers);
            }
        }
        match watch {
            Some(secs) => tokio::time::sleep(Duration::from_secs(secs.max(1))).await,
            None => return Ok(()),
        }
    }
}

/// Every fleet queue that exists: the fixed ones plus each registered gateway's reply queue.
pub async fn sample(
    broker: &dyn Broker,
    cache: Option<&RedisCache>,
) -> anyhow::Result<Vec<QueueStats>> {
    let mut names: Vec<String> = [
        topology::TURNS_QUEUE,
        topology::TURNS_DEAD_QUEUE,
        topology::METRICS_QUEUE,
        topology::METRICS_DEAD_QUEUE,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(cache) = cache {
        // Reply queues are found through the gateways' heartbeats (no management API needed).
        if let Ok(ids) = gateway_ids(cache).await {
            names.extend(ids.iter().map(|id| topology::reply_queue(id)));
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

async fn gateway_ids(cache: &RedisCache) -> anyhow::Result<Vec<String>> {
    Ok(cache
        .keys_matching("gateway:*")
        .await?
        .into_iter()
        .filter_map(|k| k.strip_prefix("gateway:").map(str::to_string))
        .collect())
}
