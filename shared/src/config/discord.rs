//! `[discord]`: the Discord adapter's bots, API base, per-user rate limit, admission limit,
//! reply footer and typing indicator.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::declare::{Kind, Setting, millis, seconds, section};

section! {
    /// The Discord adapter of the gateway.
    pub struct Discord in "discord" {
        /// One bot's token (with `DISCORD_CHARACTER`).
        token: Option<SecretString> = None => "discord_token",
        character: Option<String> = None => "discord_character",
        /// Several bots: `Name=token,Other=token2`.
        bots: Option<SecretString> = None => "discord_bots",
        /// Several bots from a file, one `Name=token` a line.
        bots_file: Option<PathBuf> = None => "discord_bots_file",
        api_base: String = "https://discord.com".into() => "discord_api_base",
        /// Per-user token bucket: at most this many turns per `rate_window`.
        rate_turns: u32 = 5 => "discord_rate_turns",
        #[serde(deserialize_with = "seconds")]
        rate_window: Duration = Duration::from_secs(30) => "discord_rate_window_s",
        footer: FooterMode = FooterMode::Off => "discord_footer",
        /// Show replies as they are written: post the first words, then edit the message as
        /// the text grows (at most once a second per message). Off: one send when done.
        stream: bool = true => "discord_stream",
        /// Ready turns in the `turns` queue above which new users are told the fleet is busy.
        admission_depth: u64 = 500 => "discord_admission_depth",
        /// Renewal period of the typing indicator (Discord shows it for ~10 s).
        #[serde(deserialize_with = "millis")]
        typing_interval: Duration = Duration::from_millis(8000) => "discord_typing_interval_ms",
    }
}

impl Discord {
    pub(crate) fn validate(&self) -> Result<(), String> {
        if self.rate_turns == 0 || self.rate_window.is_zero() {
            return Err(
                "WHISPERFLEET_DISCORD_RATE_TURNS and WHISPERFLEET_DISCORD_RATE_WINDOW_S must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}

/// `discord_footer`: what, if anything, is appended to a reply about its timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FooterMode {
    Off,
    /// End-to-end, LLM and overhead ms.
    Timing,
    /// Every stage.
    Full,
}

impl Setting for FooterMode {
    const KIND: Kind = Kind::Choice(&["off", "timing", "full"]);
}
