//! The Discord adapter: one serenity client per character bot (one bot token per
//! character), all sharing the gateway's [`GatewayCore`](crate::gateway::GatewayCore). A
//! message that should get an answer (a DM, a mention of the bot, a reply to one of its
//! messages) becomes a turn; the reply goes back as Discord messages.
//!
//! Per message: drop replays (a gateway RESUME re-sends events), ignore bots and empty
//! messages, take the bot's mention out, then the per-user token bucket, the length limit and
//! the global admission limit (the `turns` queue depth, sampled at most once a second) — each
//! refusal answered politely, none published. While the turn is pending the typing indicator
//! is renewed before Discord lets it lapse. The reply is cut at the 2,000-character limit,
//! sent in order, the first piece as a reply to the user's message, every piece with allowed
//! mentions set to the replying user only, so nothing the LLM writes can ping @everyone,
//! @here, a role or anyone else. Then one `delivery` metric event.
//!
//! Discord bans a bot after 10,000 invalid requests in 10 minutes, so failures are not
//! retried blindly: a 401 stops that bot (naming the character, never the token), a 403
//! marks the channel as not writable for a while, a 429 or 5xx on a send is retried once.
//! With a custom `discord_api_base` (tests' stand-in) serenity's rate limiter is disabled,
//! because it would send every request to the real Discord whatever the base URL.
//!
//! Privacy: `/memories` and `/forget` (with a confirmation button) are slash commands of
//! every bot (`commands`), answered ephemerally through the gateway's privacy requests.
//!
//! By job: `client` builds each bot's REST client and keeps its serenity client running,
//! `handler` turns an incoming message into a turn, `delivery` sends the reply (and knows
//! which failures to retry), `typing` keeps the indicator up meanwhile; `policy` and `text`
//! hold the pure decisions and text shaping they use, `bots` the bot configuration.

pub mod bots;
mod client;
pub mod commands;
mod delivery;
mod handler;
pub mod policy;
mod stream;
pub mod text;
mod typing;

use std::time::Duration;

use serenity::all::GatewayIntents;
use whisperfleet_shared::config::Config;

pub use bots::{BotConfig, BotConfigError, bots_from_config};
pub use client::{DiscordBots, build_http};
pub use delivery::{ReplyTarget, SendKind, build_messages, safe_mentions};

use text::FooterMode;

/// The real Discord; any other `discord_api_base` is a stand-in.
pub const DEFAULT_API_BASE: &str = "https://discord.com";
/// How long a channel that answered 403 is skipped.
const FORBIDDEN_FOR: Duration = Duration::from_secs(600);
/// Discord shows the typing indicator for about 10 s.
const TYPING_MAX: Duration = Duration::from_secs(9);
const TYPING_MIN: Duration = Duration::from_secs(1);

/// Guild messages and DMs with their content. Message Content is a privileged intent: it
/// must also be switched on for each bot in the Discord Developer Portal.
pub fn intents() -> GatewayIntents {
    GatewayIntents::GUILD_MESSAGES
        | GatewayIntents::DIRECT_MESSAGES
        | GatewayIntents::MESSAGE_CONTENT
}

/// The Discord part of the configuration.
#[derive(Debug, Clone)]
pub struct DiscordSettings {
    pub api_base: String,
    pub footer: FooterMode,
    /// Stream replies (post, then edit as they grow).
    pub stream: bool,
    /// Renewal period of the typing indicator, kept within 1–9 s.
    pub typing_every: Duration,
    pub rate_turns: u32,
    pub rate_window: Duration,
    /// 0 turns the admission limit off.
    pub admission_depth: u64,
}

impl DiscordSettings {
    pub fn from_config(config: &Config) -> Self {
        Self {
            api_base: config.discord.api_base.trim().to_string(),
            footer: config.discord.footer,
            stream: config.discord.stream,
            typing_every: config.discord.typing_interval.clamp(TYPING_MIN, TYPING_MAX),
            rate_turns: config.discord.rate_turns,
            rate_window: config.discord.rate_window,
            admission_depth: config.discord.admission_depth,
        }
    }

    fn is_stand_in(&self) -> bool {
        !self
            .api_base
            .trim_end_matches('/')
            .eq_ignore_ascii_case(DEFAULT_API_BASE)
    }
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    #[test]
    fn stand_in_detection_and_typing_clamp() {
        let mut config = Config::default();
        let settings = DiscordSettings::from_config(&config);
        assert!(!settings.is_stand_in());
        assert_eq!(settings.typing_every, Duration::from_secs(8));
        config.discord.api_base = "https://discord.com/".into();
        assert!(!DiscordSettings::from_config(&config).is_stand_in());
        config.discord.api_base = "http://127.0.0.1:4567".into();
        config.discord.typing_interval = Duration::from_millis(30_000);
        let settings = DiscordSettings::from_config(&config);
        assert!(settings.is_stand_in());
        assert_eq!(settings.typing_every, TYPING_MAX);
        let http = build_http(&SecretString::from("abc.def".to_string()), &settings);
        assert!(http.ratelimiter.is_none());
        assert_eq!(http.proxy.as_deref(), Some("http://127.0.0.1:4567"));
    }
}
