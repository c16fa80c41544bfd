//! `[gateway]`: the gateway's identity, HTTP listener and its trust boundary (API keys,
//! per-key rate limit, body limit), conversation limits and reply wait.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use super::api_keys::{self, ApiKey, ApiKeysError};
use super::declare::{millis, seconds, section};

section! {
    /// The gateway (any platform adapter).
    pub struct Gateway in "gateway" {
        /// Stable id of a gateway instance; its reply queue is `replies.<gateway_id>`.
        id: String = default_gateway_id() => "gateway_id",
        /// Without API keys only a loopback address is allowed.
        http_addr: String = "127.0.0.1:8080".into() => "http_addr",
        /// HTTP API keys, `name=key,…`: every `/v1/*` request needs
        /// `Authorization: Bearer <key>`; the name is the namespace of the identities it
        /// creates.
        http_api_keys: Option<SecretString> = None => "http_api_keys",
        /// The same from a file, one `name=key` a line (read when the gateway starts).
        http_api_keys_file: Option<PathBuf> = None => "http_api_keys_file",
        /// Per key (and for the keyless loopback caller): requests per `http_rate_window`, a
        /// token bucket that refills evenly; `0` turns the limit off.
        http_rate_requests: u32 = 6_000 => "http_rate_requests",
        #[serde(deserialize_with = "seconds")]
        http_rate_window: Duration = Duration::from_secs(60) => "http_rate_window_s",
        /// Largest request body `/v1/*` accepts (413 above it).
        http_max_body_bytes: usize = 64 * 1024 => "http_max_body_bytes",
        /// Longer messages are refused politely.
        max_text_chars: usize = 4000 => "max_text_chars",
        /// How long the gateway waits for a reply (then 504).
        #[serde(deserialize_with = "millis")]
        reply_timeout: Duration = Duration::from_millis(60_000) => "reply_timeout_ms",
        /// How long the gateway waits for a worker to answer a privacy request (show or
        /// forget a user's data; then 504, and the request expires unanswered).
        #[serde(deserialize_with = "millis")]
        privacy_timeout: Duration = Duration::from_millis(15_000) => "privacy_timeout_ms",
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
        if self.http_rate_requests > 0 && self.http_rate_window.is_zero() {
            return Err("WHISPERFLEET_HTTP_RATE_WINDOW_S must be at least 1".into());
        }
        if self.http_max_body_bytes == 0 {
            return Err("WHISPERFLEET_HTTP_MAX_BODY_BYTES must be at least 1".into());
        }
        // The keys are checked when the gateway starts (`api_keys`), where the file is read.
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

    /// The HTTP API keys from `HTTP_API_KEYS` and `HTTP_API_KEYS_FILE` (read now); empty
    /// when neither is set.
    pub fn api_keys(&self) -> Result<Vec<ApiKey>, ApiKeysError> {
        api_keys::collect(
            self.http_api_keys.as_ref(),
            self.http_api_keys_file.as_deref(),
        )
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
