//! Who a user is: (platform, namespace, user_id). A user id alone names nobody — an HTTP
//! client can send any id, including a Discord user's — so every store keyed by user
//! (memories, relationships, emotional states, history, per-turn records) uses the whole
//! identity. `namespace` is empty for Discord and the terminal and the API key's name for
//! HTTP clients, so one key's users cannot reach another's either.
//!
//! Keys made from identities go through [`key_part`], one injective, glob-safe encoding of
//! each part: no two identities (or conversations) share a key whatever their ids contain,
//! and a key never holds a glob metacharacter or a `:` that is not a separator.

use std::borrow::Cow;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

/// One user, as every store keyed by user knows them.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Identity {
    /// `discord`, `http`, `terminal`, …
    pub platform: String,
    /// Empty for Discord and the terminal; the API key's name for HTTP clients.
    #[serde(default)]
    pub namespace: String,
    pub user_id: String,
}

/// The platform given to stored data whose platform cannot be known (relationships written
/// before identities had platforms and whose user id is not a Discord snowflake). No gateway
/// ever produces it, so no client can claim such data; `memory show/forget --platform
/// legacy` reach it.
pub const LEGACY_PLATFORM: &str = "legacy";

impl Identity {
    pub fn new(
        platform: impl Into<String>,
        namespace: impl Into<String>,
        user_id: impl Into<String>,
    ) -> Self {
        Self {
            platform: platform.into(),
            namespace: namespace.into(),
            user_id: user_id.into(),
        }
    }

    /// `<platform>:<namespace>:<user_id>`, each part encoded by [`key_part`]: injective
    /// and free of glob metacharacters.
    pub fn key(&self) -> String {
        format!(
            "{}:{}:{}",
            key_part(&self.platform),
            key_part(&self.namespace),
            key_part(&self.user_id)
        )
    }
}

impl std::fmt::Display for Identity {
    /// For people (logs, CLI output): quoted, so empty or odd parts stay visible.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "platform {:?}, namespace {:?}, user {:?}",
            self.platform, self.namespace, self.user_id
        )
    }
}

/// Percent-encodes `%`, `:`, the glob metacharacters `*`, `?`, `[`, `]`, `\`, whitespace
/// and control characters (as their UTF-8 bytes); everything else stays as it is. Injective
/// (`%` itself is encoded), so parts joined by `:` in a fixed number split back exactly, and
/// a key made of encoded parts can never widen a pattern or collide with another key.
pub fn key_part(s: &str) -> Cow<'_, str> {
    let special = |c: char| {
        matches!(c, '%' | ':' | '*' | '?' | '[' | ']' | '\\') || c.is_whitespace() || c.is_control()
    };
    if !s.chars().any(special) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if special(c) {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Reverses [`key_part`]; `None` for text it cannot have made.
pub fn decode_key_part(s: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(s.len());
    let mut it = s.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hex = [it.next()?, it.next()?];
            let hex = std::str::from_utf8(&hex).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            bytes.push(b);
        }
    }
    String::from_utf8(bytes).ok()
}

/// Which platform a conversation channel id says it belongs to, for data written before
/// identities had platforms (old memory points, history): the terminal's channel is
/// `terminal:<user>`, HTTP's default channel `dm:<user>`, Discord's channels are numeric
/// snowflakes; any other channel id was chosen by an HTTP client (only HTTP lets clients
/// name channels).
pub fn platform_of_legacy_channel(channel_id: &str, user_id: &str) -> &'static str {
    if channel_id.strip_prefix("terminal:") == Some(user_id) {
        "terminal"
    } else if channel_id.strip_prefix("dm:") == Some(user_id) {
        "http"
    } else if is_snowflake(channel_id) {
        "discord"
    } else {
        "http"
    }
}

/// A Discord snowflake: 15 to 20 decimal digits (ids since 2015 have 17 or more).
pub fn is_snowflake(s: &str) -> bool {
    (15..=20).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn plain_parts_are_unchanged_and_special_ones_encoded() {
        assert_eq!(key_part("312456789012345678"), "312456789012345678");
        assert_eq!(key_part("Nora_halvorsen-1.ü"), "Nora_halvorsen-1.ü");
        assert_eq!(key_part("a:42:*"), "a%3A42%3A%2A");
        assert_eq!(key_part("x y\n[\\]?%"), "x%20y%0A%5B%5C%5D%3F%25");
        assert_eq!(key_part("\u{3000}"), "%E3%80%80");
    }

    #[test]
    fn encoding_round_trips_and_keeps_nothing_a_glob_or_split_would_see() {
        for s in [
            "",
            "42",
            "a:b*? [c]\n\\d%3A",
            "%",
            "%25",
            "日本\t語",
            "\u{7f}x",
        ] {
            let e = key_part(s);
            assert!(
                !e.contains([':', '*', '?', '[', ']', '\\', ' ', '\n']),
                "{e}"
            );
            assert_eq!(decode_key_part(&e).as_deref(), Some(s));
        }
        assert_eq!(decode_key_part("%2"), None);
        assert_eq!(decode_key_part("%zz"), None);
    }

    #[test]
    fn no_two_identities_share_a_key() {
        let parts = ["", "42", ":42:", "4", "2:", ":", "%3A", "*", "a b", "a%20b"];
        let mut seen = HashSet::new();
        let mut n = 0;
        for p in ["http", "discord", "http:"] {
            for ns in parts {
                for u in parts {
                    n += 1;
                    seen.insert(Identity::new(p, ns, u).key());
                }
            }
        }
        assert_eq!(seen.len(), n);
    }

    #[test]
    fn legacy_channels_say_their_platform() {
        assert_eq!(platform_of_legacy_channel("terminal:me", "me"), "terminal");
        assert_eq!(platform_of_legacy_channel("dm:42", "42"), "http");
        assert_eq!(
            platform_of_legacy_channel("912345678901234567", "42"),
            "discord"
        );
        assert_eq!(platform_of_legacy_channel("guild-general", "42"), "http");
        assert_eq!(platform_of_legacy_channel("terminal:you", "me"), "http");
        assert!(!is_snowflake("42"));
    }
}
