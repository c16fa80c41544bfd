//! What Redis holds about turns and conversations, and under which names; the one place
//! these names are made.
//!
//! - **One hash per turn**, `turn:<turn_id>`, a field per side effect already done, so a
//!   redelivered turn (or a second worker that got it) can tell in one read what is left:
//!   [`LLM`] (the answer, written by the request cache), [`HISTORY`], [`REPLIED`],
//!   [`MEMORY`]; plus [`LEASE`] (who runs the turn now) and [`ABANDONED`] (set by the gateway
//!   when nobody will see the reply: the client went away or timed out, or the turn's publish
//!   failed). The hash lives `turn_record_ttl`; a turn older than that is no longer run
//!   (the worker dead-letters it as expired), which is what bounds the records' life.
//! - **One list per conversation**, `hist:<conversation key>`: short-term history, entries
//!   JSON with their `turn_id`, so an abandoned turn's entries can be taken back.

use std::collections::HashMap;
use std::fmt::Display;
use std::time::Duration;

use crate::ports::cache::{Cache, CacheError};

/// The LLM's answer (JSON), reused by a redelivered turn.
pub const LLM: &str = "llm";
/// Short-term history was appended (set atomically with the append).
pub const HISTORY: &str = "history";
/// The reply was confirmed by the broker.
pub const REPLIED: &str = "replied";
/// `memory_store` ran (its failures, if any, were counted).
pub const MEMORY: &str = "memory";
/// Nobody will see the reply; the value says why. Refuses the history append.
pub const ABANDONED: &str = "abandoned";
/// `<until_ms> <holder>` of the worker running the turn.
pub const LEASE: &str = "lease";

/// How long an idle conversation's short-term history is kept.
pub const HISTORY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

pub fn turn_key(turn_id: &impl Display) -> String {
    format!("turn:{turn_id}")
}

pub fn history_key(conversation_key: &str) -> String {
    format!("hist:{conversation_key}")
}

/// What every history entry of a turn contains (entries serialize `turn_id` this way).
pub fn history_needle(turn_id: &impl Display) -> String {
    format!("\"turn_id\":\"{turn_id}\"")
}

/// A turn's record as read in one round trip.
#[derive(Debug, Default, Clone)]
pub struct TurnRecord(pub HashMap<String, Vec<u8>>);

impl TurnRecord {
    pub async fn read(cache: &dyn Cache, turn_id: &impl Display) -> Result<Self, CacheError> {
        cache.hash_get_all(&turn_key(turn_id)).await.map(Self)
    }

    pub fn has(&self, field: &str) -> bool {
        self.0.contains_key(field)
    }

    pub fn replied(&self) -> bool {
        self.has(REPLIED)
    }

    pub fn memory_stored(&self) -> bool {
        self.has(MEMORY)
    }

    /// Why nobody will see this turn's reply, if so.
    pub fn abandoned(&self) -> Option<String> {
        self.0
            .get(ABANDONED)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }
}

/// Marks a turn abandoned and takes its entries back out of the conversation's history, in
/// one atomic step: whether the worker appended already or not, the conversation ends up
/// without it, and a later append is refused. Returns how many history entries it removed.
pub async fn abandon(
    cache: &dyn Cache,
    turn_id: &impl Display,
    conversation_key: &str,
    reason: &str,
    ttl: Duration,
) -> Result<u64, CacheError> {
    cache
        .mark_and_prune(
            &turn_key(turn_id),
            ABANDONED,
            reason.as_bytes(),
            ttl,
            &history_key(conversation_key),
            &history_needle(turn_id),
        )
        .await
}
