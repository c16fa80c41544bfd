//! Names of the fleet's exchanges and queues and the arguments they are declared with.
//! Whoever starts first declares them; declaring is idempotent as long as every process
//! agrees on the arguments (a mismatch is a startup error naming the queue).

use std::time::Duration;

pub const TURNS_EXCHANGE: &str = "fleet.turns";
pub const TURNS_QUEUE: &str = "turns";
pub const TURNS_ROUTING_KEY: &str = "turns";
pub const REPLIES_EXCHANGE: &str = "fleet.replies";
pub const METRICS_EXCHANGE: &str = "fleet.metrics";
pub const METRICS_QUEUE: &str = "metrics";
pub const METRICS_ROUTING_KEY: &str = "metrics";
pub const CONTROL_EXCHANGE: &str = "fleet.control";
/// Direct exchange: dead letters route by their source queue's name.
pub const DEAD_EXCHANGE: &str = "fleet.dead";
pub const TURNS_DEAD_QUEUE: &str = "turns.dead";
pub const METRICS_DEAD_QUEUE: &str = "metrics.dead";
pub const REPLY_QUEUE_PREFIX: &str = "replies.";
/// Privacy requests (show or forget one identity's data) from gateways to workers: the
/// gateway links no store, so a user's `/forget` or `DELETE /v1/users/{id}` travels here.
pub const PRIVACY_EXCHANGE: &str = "fleet.privacy";
pub const PRIVACY_QUEUE: &str = "privacy";
pub const PRIVACY_ROUTING_KEY: &str = "privacy";
pub const PRIVACY_DEAD_QUEUE: &str = "privacy.dead";

/// Every dead-letter queue: what the dashboard's and the alerts' dead-letter queries must name.
pub const DEAD_QUEUES: [&str; 3] = [TURNS_DEAD_QUEUE, METRICS_DEAD_QUEUE, PRIVACY_DEAD_QUEUE];
/// The fleet's fixed queues (reply queues come and go with gateways): what the queue-depth
/// sampler watches.
pub const FLEET_QUEUES: [&str; 6] = [
    TURNS_QUEUE,
    TURNS_DEAD_QUEUE,
    METRICS_QUEUE,
    METRICS_DEAD_QUEUE,
    PRIVACY_QUEUE,
    PRIVACY_DEAD_QUEUE,
];

/// What a message on a gateway's reply queue (`replies.<gateway-id>`) is: absent or
/// [`KIND_REPLY`] a `TurnReply` (what workers sent before there were kinds), [`KIND_DELTA`]
/// a `TurnReplyDelta`, [`KIND_PRIVACY`] a `PrivacyReply`.
pub const HEADER_KIND: &str = "x-whisperfleet-kind";
pub const KIND_REPLY: &str = "reply";
pub const KIND_DELTA: &str = "delta";
pub const KIND_PRIVACY: &str = "privacy";

/// Header carrying why we dead-lettered a message ourselves (RabbitMQ's own dead-lettering
/// writes `x-death` / `x-first-death-reason` instead).
pub const HEADER_DEAD_REASON: &str = "x-whisperfleet-dead-reason";
/// Header naming the queue a dead letter came from.
pub const HEADER_DEAD_SOURCE: &str = "x-whisperfleet-source-queue";
/// Header carrying the W3C trace context of the turn a message belongs to (`crate::trace`):
/// on the turn, its reply and its metric events.
pub const HEADER_TRACEPARENT: &str = "traceparent";

/// The dead-letter queue of a source queue.
pub fn dead_queue_for(source: &str) -> &'static str {
    match source {
        METRICS_QUEUE => METRICS_DEAD_QUEUE,
        PRIVACY_QUEUE => PRIVACY_DEAD_QUEUE,
        _ => TURNS_DEAD_QUEUE,
    }
}

pub fn reply_queue(gateway_id: &str) -> String {
    format!("{REPLY_QUEUE_PREFIX}{gateway_id}")
}

/// The cache registry (one sorted set) of running gateways, by id: each gateway beats every
/// [`GATEWAY_HEARTBEAT`], and the queue-depth sampler reads the ids alive within
/// [`GATEWAY_ALIVE`] to find every `replies.<id>` queue without scanning the keyspace.
pub const GATEWAY_REGISTRY: &str = "gateways";
pub const GATEWAY_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(20);
/// Three heartbeats: one late or lost beat does not drop a gateway from the samples.
pub const GATEWAY_ALIVE: std::time::Duration = std::time::Duration::from_secs(60);

/// Arguments every process must agree on.
#[derive(Debug, Clone)]
pub struct TopologySettings {
    /// Deliveries of one turn before it is dead-lettered (`x-delivery-limit`).
    pub delivery_limit: u32,
    /// An unused reply queue disappears after this long (`x-expires`), so a retired gateway
    /// leaves nothing behind.
    pub reply_queue_expires: Duration,
}

impl Default for TopologySettings {
    fn default() -> Self {
        Self {
            delivery_limit: 5,
            reply_queue_expires: Duration::from_secs(3600),
        }
    }
}

impl TopologySettings {
    /// What the configuration says (`WHISPERFLEET_DELIVERY_LIMIT`); every process that
    /// declares the topology builds it here, so they all agree.
    pub fn from_config(config: &crate::config::Config) -> Self {
        Self {
            delivery_limit: config.worker.delivery_limit,
            ..Default::default()
        }
    }
}
