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
//!   JSON with their `turn_id`, so an abandoned turn's entries can be taken back. The
//!   conversation key holds the whole identity ([`crate::wire::Conversation::key`]).
//! - **One index per user**, `user:<identity key>` ([`identity_index`]): the turn records
//!   and history lists that belong to that identity, each member alive as long as the key
//!   it names. Turn records are keyed by turn id and history by conversation, so without it
//!   the user's data could only be found by a keyspace scan over patterns made of user
//!   text; with it `memory show/forget` read one key. Written once per turn
//!   ([`index_turn`]), concurrently with the context stage.

use std::collections::HashMap;
use std::fmt::Display;
use std::time::Duration;

use crate::identity::{Identity, key_part};
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

/// The index of what Redis holds about `identity` (see the module doc).
pub fn identity_index(identity: &Identity) -> String {
    format!("user:{}", identity.key())
}

/// An index member: the normalized character it concerns (encoded, so the first space
/// splits it off exactly) and the key it names.
pub fn index_member(character: &str, key: &str) -> String {
    format!("{} {key}", key_part(character))
}

/// The (normalized character, key) of an index member; `None` for one this build did not
/// write.
pub fn parse_index_member(member: &str) -> Option<(String, &str)> {
    let (character, key) = member.split_once(' ')?;
    Some((crate::identity::decode_key_part(character)?, key))
}

/// Records that a turn of `identity` with `character` (normalized) holds its record
/// (`turn:<turn_id>`) and appends to `conversation_key`'s history (for [`HISTORY_TTL`]):
/// one round trip. The record's member is kept twice `record_ttl`: each write to the
/// record restarts its TTL, and a turn is written to until it is `record_ttl` old, so the
/// record never outlives its member.
pub async fn index_turn(
    cache: &dyn Cache,
    identity: &Identity,
    character: &str,
    turn_id: &impl Display,
    conversation_key: &str,
    record_ttl: Duration,
) -> Result<(), CacheError> {
    cache
        .index_add(
            &identity_index(identity),
            &[
                (index_member(character, &turn_key(turn_id)), record_ttl * 2),
                (
                    index_member(character, &history_key(conversation_key)),
                    HISTORY_TTL,
                ),
            ],
        )
        .await
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
