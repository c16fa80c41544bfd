//! The wire contract: the JSON bodies that cross the broker. Every body carries a schema
//! version `v`; readers accept `v` and `v - 1` and ignore unknown fields, so a fleet can be
//! upgraded one process at a time.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

mod privacy;
pub use privacy::*;

/// Current schema version written by this build.
pub const WIRE_VERSION: u32 = 1;
/// Oldest schema version this build still reads.
pub const WIRE_MIN_VERSION: u32 = WIRE_VERSION.saturating_sub(1);

/// Every stage a turn is measured in (ARCHITECTURE.md), in the order a turn goes through them,
/// then `overhead` (end to end − LLM). On the wire a stage is its [`Stage::as_str`] name: a
/// key of `TurnReply.timings`, and the `<name>_ms` field of a metric point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Stage {
    PlatformLag,
    Ingress,
    QueueWait,
    CdlLoad,
    Context,
    Compose,
    Llm,
    WorkerTotal,
    ReplyPublish,
    MemoryStore,
    LlmFirstToken,
    FirstVisible,
    Delivery,
    EndToEnd,
    Overhead,
}

impl Stage {
    /// Every stage in pipeline order: tables and footers list stages in this order.
    pub const ALL: [Stage; 15] = [
        Self::PlatformLag,
        Self::Ingress,
        Self::QueueWait,
        Self::CdlLoad,
        Self::Context,
        Self::Compose,
        Self::Llm,
        Self::WorkerTotal,
        Self::ReplyPublish,
        Self::MemoryStore,
        Self::LlmFirstToken,
        Self::FirstVisible,
        Self::Delivery,
        Self::EndToEnd,
        Self::Overhead,
    ];

    /// The stage's wire name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::PlatformLag => "platform_lag",
            Self::Ingress => "ingress",
            Self::QueueWait => "queue_wait",
            Self::CdlLoad => "cdl_load",
            Self::Context => "context",
            Self::Compose => "compose",
            Self::Llm => "llm",
            Self::WorkerTotal => "worker_total",
            Self::ReplyPublish => "reply_publish",
            Self::MemoryStore => "memory_store",
            Self::LlmFirstToken => "llm_first_token",
            Self::FirstVisible => "first_visible",
            Self::Delivery => "delivery",
            Self::EndToEnd => "end_to_end",
            Self::Overhead => "overhead",
        }
    }

    /// The stage a wire name stands for; `None` for a name this build does not know.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }

    /// This stage's milliseconds in a timings map, when it is there.
    pub fn ms_in(self, timings: &BTreeMap<String, f64>) -> Option<f64> {
        timings.get(self.as_str()).copied()
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a turn came from: a conversation is (platform, channel_id, user_id, character).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conversation {
    /// `discord`, `http`, `terminal`, …
    pub platform: String,
    /// Who vouches for `user_id` within the platform: empty for Discord and the terminal,
    /// the API key's name for HTTP clients. A user is (platform, namespace, user_id).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    pub channel_id: String,
    pub user_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guild_id: Option<String>,
    pub is_dm: bool,
}

impl Conversation {
    /// Who wrote: the user as every store keyed by user knows them.
    pub fn identity(&self) -> crate::identity::Identity {
        crate::identity::Identity::new(&self.platform, &self.namespace, &self.user_id)
    }

    /// The key that orders turns and holds short-term history: the [identity's
    /// key](crate::identity::Identity::key), the channel and `character` as addressed (it
    /// is normalized here, so "Nora" and "nora" are one conversation), each part encoded by
    /// [`key_part`](crate::identity::key_part), so no two conversations share a key
    /// whatever their ids contain.
    pub fn key(&self, character: &str) -> String {
        use crate::identity::key_part;
        format!(
            "{}:{}:{}",
            self.identity().key(),
            key_part(&self.channel_id),
            key_part(&crate::character::normalize_name(character))
        )
    }
}

/// One user message to be answered by one character.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnRequest {
    pub v: u32,
    pub turn_id: Uuid,
    pub conversation: Conversation,
    /// Character name as the user addressed it (the worker normalizes it).
    pub character: String,
    pub user_name: String,
    pub text: String,
    /// Position of this turn in its conversation (assigned by the gateway).
    #[serde(default)]
    pub seq: u64,
    /// Platform's own timestamp of the message, when it has one (Discord snowflake time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_sent_at: Option<DateTime<Utc>>,
    /// When the gateway received the platform event.
    pub received_at: DateTime<Utc>,
    /// When the gateway published the turn.
    pub published_at: DateTime<Utc>,
    /// Gateway id: the reply goes to `replies.<reply_to>`.
    pub reply_to: String,
    /// Platform message id, for replying to it and dropping duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_message_id: Option<String>,
    /// The gateway shows replies as they are written: the worker may send
    /// [`TurnReplyDelta`]s before the reply. Absent (false) from gateways that predate
    /// streaming, which then get the reply alone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub stream: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// The LLM answered.
    Ok,
    /// A backend failed; the character answered with a prepared fallback.
    Fallback,
    /// The turn cannot be answered as asked (e.g. unknown character).
    Rejected,
    /// The fleet gave up on the turn (dead-lettered, past its deadline).
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Fallback => "fallback",
            Self::Rejected => "rejected",
            Self::Error => "error",
        }
    }
}

/// Per-turn counts: what the pipeline did for this turn, counted at the ports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Counters {
    pub cdl_queries: u32,
    pub emotion_queries: u32,
    pub cache_hits: u32,
    pub cache_misses: u32,
    pub memories_used: u32,
    pub memory_searches: u32,
    pub llm_calls: u32,
    pub redis_round_trips: u32,
    /// Context parts the prompt went without because their backend failed or timed out
    /// (history, memories, emotional states, relationship). Absent from older senders.
    #[serde(default)]
    pub context_degraded: u32,
    /// Where the turn's character came from, one level each time it was needed: the
    /// worker's own copy (still current), Redis's shared copy, or PostgreSQL
    /// (`cdl_queries`). Absent from older senders.
    #[serde(default)]
    pub cdl_local_hits: u32,
    #[serde(default)]
    pub cdl_redis_hits: u32,
    /// `cache_hits` by level: served in the worker's process (loaded earlier in this turn)
    /// or from Redis (finished by an earlier attempt of this turn). Absent from older
    /// senders.
    #[serde(default)]
    pub cache_local_hits: u32,
    #[serde(default)]
    pub cache_redis_hits: u32,
    /// Lorebook entries the prompt carried (characters from community cards). Absent from
    /// older senders.
    #[serde(default)]
    pub lore_entries_used: u32,
}

/// The answer to one turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnReply {
    pub v: u32,
    pub turn_id: Uuid,
    pub conversation: Conversation,
    pub character: String,
    pub text: String,
    pub outcome: Outcome,
    /// Stage name ([`Stage::as_str`]) → milliseconds.
    #[serde(default)]
    pub timings: BTreeMap<String, f64>,
    #[serde(default)]
    pub counters: Counters,
    #[serde(default)]
    pub seq: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform_message_id: Option<String>,
    /// Short machine-readable reason for non-`ok` outcomes (`unknown_character`, …), and
    /// for a partial answer (`llm_stream_interrupted`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The model's answer broke off after part of it was streamed: `text` is that part and
    /// an honest note that it was cut off, not a second answer.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
}

/// Progress of a reply being written, sent before the [`TurnReply`] on the same reply queue
/// (AMQP header [`HEADER_KIND`](crate::topology::HEADER_KIND) = `delta`). Best effort and
/// coalesced: deltas may be missing (not published, or dropped), but the ones that arrive
/// are consistent — the reply's text is the concatenation of every delta's `text` in
/// `index` order, followed by whatever the reply adds. The final `TurnReply` is
/// authoritative and carries the whole text; a delta never enters history or memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TurnReplyDelta {
    pub v: u32,
    pub turn_id: Uuid,
    /// This delta's number within its turn, from 0, in the order the worker sent them.
    pub seq: u64,
    /// Where `text` starts in the full reply, in characters (Unicode scalar values, what
    /// Rust's `chars()` counts): the first delta has index 0, the next starts where the
    /// previous one ended. A reader that has shown `n` characters applies a delta only when
    /// `index <= n < index + len(text)`, appending `text` from character `n - index` on;
    /// anything else is a duplicate (drop it) or comes after a gap (drop it too: the reply
    /// will bring the missing text). So deltas apply idempotently and in order.
    pub index: u64,
    pub text: String,
}

impl TurnReplyDelta {
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let t: Self = serde_json::from_slice(body).map_err(|source| WireError::Malformed {
            kind: "TurnReplyDelta",
            source,
        })?;
        check_version("TurnReplyDelta", t.v)?;
        Ok(t)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("TurnReplyDelta serializes")
    }

    /// The part of this delta that is new to a reader who has shown `shown` characters:
    /// `None` for a duplicate, a stale or a gapped delta (see [`TurnReplyDelta::index`]).
    pub fn new_text(&self, shown: u64) -> Option<&str> {
        let len = self.text.chars().count() as u64;
        if self.index > shown || shown >= self.index + len {
            return None;
        }
        let skip = (shown - self.index) as usize;
        let start = self
            .text
            .char_indices()
            .nth(skip)
            .map_or(self.text.len(), |(i, _)| i);
        Some(&self.text[start..])
    }
}

/// Why a body could not be read; becomes the dead-letter reason.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("body is not valid JSON for {kind}: {source}")]
    Malformed {
        kind: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("{kind} schema version {found} is not supported (this build reads {min}..={max})")]
    Version {
        kind: &'static str,
        found: u32,
        min: u32,
        max: u32,
    },
    #[error("{0}")]
    Invalid(String),
}

fn check_version(kind: &'static str, v: u32) -> Result<(), WireError> {
    if (WIRE_MIN_VERSION..=WIRE_VERSION).contains(&v) {
        Ok(())
    } else {
        Err(WireError::Version {
            kind,
            found: v,
            min: WIRE_MIN_VERSION,
            max: WIRE_VERSION,
        })
    }
}

impl TurnRequest {
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let t: Self = serde_json::from_slice(body).map_err(|source| WireError::Malformed {
            kind: "TurnRequest",
            source,
        })?;
        check_version("TurnRequest", t.v)?;
        if t.reply_to.is_empty() {
            return Err(WireError::Invalid("TurnRequest.reply_to is empty".into()));
        }
        if t.character.trim().is_empty() {
            return Err(WireError::Invalid("TurnRequest.character is empty".into()));
        }
        Ok(t)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("TurnRequest serializes")
    }

    pub fn conversation_key(&self) -> String {
        self.conversation.key(&self.character)
    }
}

impl TurnReply {
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let t: Self = serde_json::from_slice(body).map_err(|source| WireError::Malformed {
            kind: "TurnReply",
            source,
        })?;
        check_version("TurnReply", t.v)?;
        Ok(t)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("TurnReply serializes")
    }
}

/// Best effort: the `reply_to` and `turn_id` of a body that failed to decode as a whole, so
/// the user can still be told their turn failed.
pub fn salvage_reply_address(body: &[u8]) -> Option<(String, Option<Uuid>, Option<Conversation>)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let reply_to = v.get("reply_to")?.as_str()?.to_string();
    if reply_to.is_empty() {
        return None;
    }
    let turn_id = v
        .get("turn_id")
        .and_then(|t| t.as_str())
        .and_then(|t| Uuid::parse_str(t).ok());
    let conversation = v
        .get("conversation")
        .and_then(|c| serde_json::from_value(c.clone()).ok());
    Some((reply_to, turn_id, conversation))
}

/// Milliseconds between two instants, never negative (clocks of two hosts may disagree).
pub fn ms_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    ((to - from).num_microseconds().unwrap_or(0) as f64 / 1000.0).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> TurnRequest {
        TurnRequest {
            v: WIRE_VERSION,
            turn_id: Uuid::now_v7(),
            conversation: Conversation {
                platform: "http".into(),
                namespace: String::new(),
                channel_id: "c1".into(),
                user_id: "u1".into(),
                guild_id: None,
                is_dm: true,
            },
            character: "Elena".into(),
            user_name: "Sam".into(),
            text: "hi".into(),
            seq: 1,
            platform_sent_at: None,
            received_at: Utc::now(),
            published_at: Utc::now(),
            reply_to: "gw1".into(),
            platform_message_id: None,
            stream: false,
        }
    }

    #[test]
    fn deltas_apply_once_and_in_order() {
        let d = |index, text: &str| TurnReplyDelta {
            v: WIRE_VERSION,
            turn_id: Uuid::nil(),
            seq: 0,
            index,
            text: text.into(),
        };
        assert_eq!(d(0, "héllo ").new_text(0), Some("héllo "));
        // Overlapping: only what is new.
        assert_eq!(d(0, "héllo wörld").new_text(6), Some("wörld"));
        // A duplicate, and one after a gap.
        assert_eq!(d(0, "héllo ").new_text(6), None);
        assert_eq!(d(9, "x").new_text(6), None);
        assert_eq!(d(6, "").new_text(6), None);
        let back = TurnReplyDelta::decode(&d(3, "abc").encode()).unwrap();
        assert_eq!(back, d(3, "abc"));
        // An old gateway's request has no `stream`; it reads as false.
        let mut v: serde_json::Value = serde_json::from_slice(&sample().encode()).unwrap();
        assert!(v.get("stream").is_none());
        v["stream"] = serde_json::json!(true);
        assert!(
            TurnRequest::decode(&serde_json::to_vec(&v).unwrap())
                .unwrap()
                .stream
        );
    }

    #[test]
    fn round_trips_and_ignores_unknown_fields() {
        let t = sample();
        let mut v: serde_json::Value = serde_json::from_slice(&t.encode()).unwrap();
        v["some_future_field"] = serde_json::json!(42);
        let back = TurnRequest::decode(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(back, t);
    }

    #[test]
    fn conversation_keys_hold_the_whole_identity_and_never_collide() {
        let c = |platform: &str, ns: &str, channel: &str, user: &str| Conversation {
            platform: platform.into(),
            namespace: ns.into(),
            channel_id: channel.into(),
            user_id: user.into(),
            guild_id: None,
            is_dm: false,
        };
        let keys = [
            c("http", "", "x:42:y", "u7").key("Nora"),
            c("http", "", "x", "42:y:u7").key("Nora"),
            c("http", "", "x:42", "y:u7").key("Nora"),
            c("http", "", "dm:42", "42").key("Nora"),
            c("http", "k1", "dm:42", "42").key("Nora"),
            c("discord", "", "dm:42", "42").key("Nora"),
            c("http", "", "dm:42", "42").key("Nora:x"),
        ];
        let unique: std::collections::HashSet<_> = keys.iter().collect();
        assert_eq!(unique.len(), keys.len(), "{keys:?}");
        assert_eq!(
            c("discord", "", "99", "42").key("Nora"),
            "discord::42:99:nora"
        );
        assert!(keys.iter().all(|k| !k.contains(['*', '?', '['])));
    }

    #[test]
    fn rejects_future_versions_and_garbage() {
        let mut t = sample();
        t.v = WIRE_VERSION + 1;
        assert!(matches!(
            TurnRequest::decode(&t.encode()),
            Err(WireError::Version { .. })
        ));
        assert!(matches!(
            TurnRequest::decode(b"{not json"),
            Err(WireError::Malformed { .. })
        ));
    }

    #[test]
    fn stage_names_round_trip_in_pipeline_order() {
        for (i, s) in Stage::ALL.iter().enumerate() {
            assert_eq!(Stage::parse(s.as_str()), Some(*s));
            assert_eq!(*s as usize, i, "ALL lists the stages in declaration order");
        }
        assert_eq!(Stage::parse("metrics_write"), None);
        assert_eq!(Stage::EndToEnd.to_string(), "end_to_end");
    }

    #[test]
    fn salvages_reply_address_from_partial_bodies() {
        let body =
            br#"{"reply_to":"gw9","turn_id":"0190a0a0-0000-7000-8000-000000000000","text":5}"#;
        let (to, id, _) = salvage_reply_address(body).unwrap();
        assert_eq!(to, "gw9");
        assert!(id.is_some());
        assert!(salvage_reply_address(b"garbage").is_none());
    }
}
