//! `whisperfleet queues`: what an operator looks at before scaling workers — ready messages
//! and consumers of every fleet queue straight from RabbitMQ (passive declares), and the
//! rate at which each is growing or draining between two samples.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use whisperfleet_adapters::connect::{self, Missing};
use whisperfleet_metrics_writer::sampler::fleet_queues;
use whisperfleet_shared::config::Config;

pub async fn run(config: &Config, json: bool, watch: Option<u64>) -> anyhow::Result<()> {
    config.require_amqp("whisperfleet queues")?;
    let broker = connect::broker(config, "whisperfleet-queues", Missing::Refuse).await?;
    let cache = connect::configured_cache(config, "whisperfleet-queues")?;
    let mut previous: Option<(Instant, HashMap<String, u64>)> = None;
    loop {
        let stats = fleet_queues(broker.as_ref(), cache.as_deref()).await?;
        let now = Instant::now();
        // Messages per second, positive while a queue grows (needs two samples: --watch).
        let rate = |queue: &str, ready: u64| -> Option<f64> {
            let (then, before) = previous.as_ref()?;
            let dt = now.duration_since(*then).as_secs_f64();
            Some((ready as f64 - *before.get(queue)? as f64) / dt.max(0.001))
        };
        if json {
            let queues: Vec<_> = stats
                .iter()
                .map(|s| {
                    serde_json::json!({
                        "queue": s.queue, "ready": s.ready, "consumers": s.consumers,
                        "rate_per_s": rate(&s.queue, s.ready),
                    })
                })
                .collect();
            println!("{}", serde_json::json!({ "queues": queues }));
        } else {
            println!(
                "{:<32} {:>10} {:>10} {:>10}",
                "QUEUE", "READY", "CONSUMERS", "RATE/s"
            );
            for s in &stats {
                let r = rate(&s.queue, s.ready).map_or("-".to_string(), |r| format!("{r:+.1}"));
                println!(
                    "{:<32} {:>10} {:>10} {:>10}",
                    s.queue, s.ready, s.consumers, r
                );
            }
        }
        previous = Some((
            now,
            stats.iter().map(|s| (s.queue.clone(), s.ready)).collect(),
        ));
        match watch {
            Some(secs) => tokio::time::sleep(Duration::from_secs(secs.max(1))).await,
            None => return Ok(()),
        }
    }
}
