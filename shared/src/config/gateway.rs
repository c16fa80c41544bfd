//! `[gateway]`: the gateway's identity, HTTP listener, conversation limits and reply wait.

use std::time::Duration;

use super::declare::{millis, section};

section! {
    /// The gateway (any platform adapter).
    pub struct Gateway in "gateway" {
        /// Stable id of a gateway instance; its reply queue is `replies.<gateway_id>`.
        id: String = default_gateway_id() => "gateway_id",
        http_addr: String = "127.0.0.1:8080".into() => "http_addr",
        /// Longer messages are refused politely.
        max_text_chars: usize = 4000 => "max_text_chars",
        /// How long the gateway waits for a reply (then 504).
        #[serde(deserialize_with = "millis")]
        reply_timeout: Duration = Duration::from_millis(60_000) => "reply_timeout_ms",
        /// Turns of one conversation waiting behind the one in flight before we answer
        /// "slow down".
        max_queued_per_conversation: usize = 16 => "max_queued_per_conversation",
    }
}

impl Gateway {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.max_text_chars == 0 {
            return Err("WHISPERFLEET_MAX_TEXT_CHARS must be at least 1".into());
        }
        if self.id.is_empty()
            || !self
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!(
                "WHISPERFLEET_GATEWAY_ID {:?} must be non-empty ASCII letters, digits, '-', '_' or '.'",
                self.id
            ));
        }
        Ok(())
    }
}

/// The host name, so a gateway restarted on the same host finds its reply queue again.
fn default_gateway_id() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "gateway".into())
}
