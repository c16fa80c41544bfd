//! `[worker]`: how many turns a worker runs, how old and how often a turn may be, and what
//! goes into each prompt.

use std::time::Duration;

use super::declare::{millis, seconds, section};

section! {
    /// The turn worker.
    pub struct Worker in "worker" {
        /// Turns one worker process runs at once (its AMQP prefetch).
        concurrency: u16 = 16 => "worker_concurrency",
        /// A turn older than this when a worker starts it is answered with an apology.
        #[serde(deserialize_with = "millis")]
        turn_deadline: Duration = Duration::from_millis(120_000) => "turn_deadline_ms",
        /// Deliveries of one turn before RabbitMQ dead-letters it (`x-delivery-limit`).
        delivery_limit: u32 = 5 => "delivery_limit",
        /// Messages (user + assistant) of short-term history kept per conversation.
        history_len: usize = 20 => "history_len",
        /// Rough prompt budget in tokens (chars / 4).
        prompt_budget_tokens: usize = 6_000 => "prompt_budget_tokens",
        /// How long side-effect records (`turn:<id>:…`) live; must outlive any backlog.
        #[serde(deserialize_with = "seconds")]
        turn_record_ttl: Duration = Duration::from_secs(86_400) => "turn_record_ttl_s",
        /// Relevant memories per prompt.
        memory_top_k: usize = 8 => "memory_top_k",
        /// Recent emotional states (the trajectory) fetched once per turn.
        recent_emotional_states: usize = 10 => "recent_emotional_states",
    }
}

impl Worker {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 {
            return Err("WHISPERFLEET_WORKER_CONCURRENCY must be at least 1".into());
        }
        if self.delivery_limit == 0 {
            return Err("WHISPERFLEET_DELIVERY_LIMIT must be at least 1".into());
        }
        Ok(())
    }
}
