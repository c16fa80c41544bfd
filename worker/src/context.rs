//! Stage `context`: what the prompt needs besides the character, gathered concurrently.
//! Today that is short-term history (Redis list per conversation); user emotion,
//! embeddings, recent emotional states, relevant memories and the relationship join this
//! stage with the memory work. Every part is optional: a failing backend leaves its part
//! empty and is reported in `degraded`, it never fails the turn.

use std::sync::Arc;
use std::time::Duration;

use whisperfleet_shared::cache::Cache;

use crate::components::HistoryEntry;

pub fn history_key(conversation_key: &str) -> String {
    format!("hist:{conversation_key}")
}

/// How long an idle conversation's short-term history is kept.
pub const HISTORY_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Default)]
pub struct Gathered {
    pub history: Vec<HistoryEntry>,
    pub degraded: Vec<String>,
    pub redis_round_trips: u32,
}

pub async fn gather(
    cache: Option<&Arc<dyn Cache>>,
    conversation_key: &str,
    history_len: usize,
) -> Gathered {
    let mut out = Gathered::default();
    let Some(cache) = cache else {
        out.degraded.push("history: no cache configured".into());
        return out;
    };
    out.redis_round_trips += 1;
    match cache
        .list_tail(&history_key(conversation_key), history_len)
        .await
    {
        Ok(items) => {
            out.history = items
                .iter()
                .filter_map(|b| serde_json::from_slice(b).ok())
                .collect();
        }
        Err(e) => out.degraded.push(format!("history: {e}")),
    }
    out
}
