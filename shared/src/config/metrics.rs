//! `[metrics]`: the metrics-writer's batching, memory bound and queue-depth sampling.

use std::time::Duration;

use secrecy::SecretString;

use super::declare::{millis, section};

section! {
    /// The metrics-writer.
    pub struct Metrics in "metrics" {
        /// Points per write.
        batch_size: usize = 5_000 => "metrics_batch_size",
        /// The oldest point waits at most this long.
        #[serde(deserialize_with = "millis")]
        flush_interval: Duration = Duration::from_millis(100) => "metrics_flush_interval_ms",
        /// Queue-depth sampling period.
        #[serde(deserialize_with = "millis")]
        sample_interval: Duration = Duration::from_millis(5_000) => "metrics_sample_interval_ms",
        /// Metric events held unacked (waiting for a successful write) before consumption
        /// pauses: the writer's memory bound while InfluxDB is down.
        max_pending: u16 = 10_000 => "metrics_max_pending",
        /// RabbitMQ management API (e.g. `http://user:pass@rabbitmq:15672`), for unacked counts.
        rabbitmq_management_url: Option<SecretString> = None => "rabbitmq_management_url",
    }
}

impl Metrics {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.batch_size == 0 || self.max_pending == 0 {
            return Err(
                "WHISPERFLEET_METRICS_BATCH_SIZE and WHISPERFLEET_METRICS_MAX_PENDING must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}
