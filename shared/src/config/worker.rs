//! `[worker]`: how many turns a worker runs, how old and how often a turn may be, and what
//! goes into each prompt.

use std::time::Duration;

use super::declare::{millis, seconds, section};

section! {
    /// The turn worker.
    pub struct Worker in "worker" {
        /// Turns one worker process runs at once (its AMQP prefetch). A turn mostly waits on
        /// the LLM, so a worker holds many at little CPU: with 16, random peaks of a
        /// realistic load (LLM 750 ms, 30 turns/s over 2 workers) waited in the queue for a
        /// free slot (bench: overhead p99 23 ms at 16, 10.5 ms at 64).
        concurrency: u16 = 64 => "worker_concurrency",
        /// A turn's budget from the gateway's receipt: started later, it is answered with an
        /// apology; the LLM gets what is left of it. Keep it below the gateway's
        /// `REPLY_TIMEOUT_MS`, so a reply always arrives while someone waits for it.
        #[serde(deserialize_with = "millis")]
        turn_deadline: Duration = Duration::from_millis(50_000) => "turn_deadline_ms",
        /// Deliveries of one turn before RabbitMQ dead-letters it (`x-delivery-limit`).
        delivery_limit: u32 = 5 => "delivery_limit",
        /// Messages (user + assistant) of short-term history kept per conversation.
        history_len: usize = 20 => "history_len",
        /// Rough prompt budget in tokens (chars / 4).
        prompt_budget_tokens: usize = 6_000 => "prompt_budget_tokens",
        /// How long a turn's record (`turn:<id>`) lives; a turn older than this is not run
        /// (dead-lettered as expired), which is what makes the bound safe.
        #[serde(deserialize_with = "seconds")]
        turn_record_ttl: Duration = Duration::from_secs(3_600) => "turn_record_ttl_s",
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
        if self.turn_record_ttl <= self.turn_deadline {
            return Err(format!(
                "WHISPERFLEET_TURN_RECORD_TTL_S ({} s) must be longer than WHISPERFLEET_TURN_DEADLINE_MS ({} ms): a turn's records must outlive its deadline",
                self.turn_record_ttl.as_secs(),
                self.turn_deadline.as_millis()
            ));
        }
        Ok(())
    }
}
