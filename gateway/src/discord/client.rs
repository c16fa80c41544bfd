//! Bot lifecycle: the REST client of each bot, and one serenity client per character bot,
//! kept connected (restarted with backoff when it gives up) until shutdown, a rejected
//! token or refused intents stop it. `Bot` and the state all bots of this process share are
//! defined here; what a bot does with a message lives in `handler`, `delivery` and `typing`.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serenity::all::{
    Client, ClientBuilder, CreateAllowedMentions, GatewayError, Http, HttpBuilder, ShardManager,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use whisperfleet_shared::retry::Backoff;

use super::bots::BotConfig;
use super::delivery::{Failure, classify};
use super::handler::Handler;
use super::policy::{Admission, ForbiddenChannels, RateLimiter, RecentIds};
use super::{DiscordSettings, FORBIDDEN_FOR, intents};
use crate::gateway::GatewayCore;

/// Where serenity connects when `GET /api/v10/gateway` fails: against a stand-in that would
/// be the real Discord, so a bot that ends up with it is not started.
const FALLBACK_GATEWAY: &str = "wss://gateway.discord.gg";
/// Message ids remembered per bot for de-duplication (only messages the bot answers count).
const REMEMBERED_MESSAGES: usize = 10_000;
const ADMISSION_SAMPLE_EVERY: Duration = Duration::from_secs(1);

/// A Discord REST request (a send, typing) that takes longer has failed.
const DISCORD_REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The REST client of one bot. Against a stand-in the base URL replaces Discord's and the
/// limiter is off (it ignores the proxy). No mentions by default, as a second guard behind
/// the explicit allowed mentions on every message.
pub fn build_http(token: &SecretString, settings: &DiscordSettings) -> Http {
    let mut builder = HttpBuilder::new(token.expose_secret())
        .default_allowed_mentions(CreateAllowedMentions::new().empty_users().empty_roles());
    // serenity's own client has no timeout: a stalled request would hold a message's
    // handler (and the shutdown drain) indefinitely.
    match reqwest012::Client::builder()
        .use_rustls_tls()
        .connect_timeout(Duration::from_secs(5))
        .timeout(DISCORD_REQUEST_TIMEOUT)
        .build()
    {
        Ok(client) => builder = builder.client(client),
        Err(e) => tracing::warn!(error = %e, "Discord HTTP client without timeout"),
    }
    if settings.is_stand_in() {
        builder
            .proxy(settings.api_base.trim_end_matches('/'))
            .ratelimiter_disabled(true)
            .build()
    } else {
        builder.build()
    }
}

/// What every bot of this process shares: one rate limit per user and one admission view of
/// the fleet, whichever character the user talks to.
pub(super) struct Shared {
    pub(super) settings: DiscordSettings,
    pub(super) limiter: Mutex<RateLimiter>,
    pub(super) admission: Admission,
    /// Message handlers still running, so shutdown can let them deliver.
    pub(super) in_flight: TaskTracker,
}

/// The running bots. Dropping this stops them too.
pub struct DiscordBots {
    characters: Vec<String>,
    tasks: Vec<JoinHandle<()>>,
    stop: CancellationToken,
    in_flight: TaskTracker,
}

impl DiscordBots {
    /// Starts one client per bot, each in its own task; with no bots, nothing.
    pub fn start(bots: Vec<BotConfig>, settings: DiscordSettings, core: Arc<GatewayCore>) -> Self {
        let stop = CancellationToken::new();
        let in_flight = TaskTracker::new();
        let shared = Arc::new(Shared {
            limiter: Mutex::new(RateLimiter::new(settings.rate_turns, settings.rate_window)),
            admission: Admission::new(settings.admission_depth, ADMISSION_SAMPLE_EVERY),
            in_flight: in_flight.clone(),
            settings,
        });
        let mut characters = Vec::new();
        let mut tasks = Vec::new();
        let mut runners = Vec::new();
        for bot in bots {
            characters.push(bot.character.clone());
            let runner = Arc::new(Bot {
                http: Arc::new(build_http(&bot.token, &shared.settings)),
                character: bot.character,
                core: core.clone(),
                shared: shared.clone(),
                bot_id: AtomicU64::new(0),
                seen: Mutex::new(RecentIds::new(REMEMBERED_MESSAGES)),
                forbidden: Mutex::new(ForbiddenChannels::new(FORBIDDEN_FOR)),
                token_rejected: CancellationToken::new(),
                commands_registered: AtomicBool::new(false),
            });
            runners.push(runner.clone());
            tasks.push(tokio::spawn(run_bot(runner, bot.token, stop.clone())));
        }
        if !runners.is_empty() {
            core.set_late_delivery(Arc::new(LateReplies(runners)));
        }
        if !characters.is_empty() {
            tracing::info!(
                api_base = %whisperfleet_shared::config::redact_url(&shared.settings.api_base),
                "discord bots: {}",
                characters.join(", ")
            );
        }
        Self {
            characters,
            tasks,
            stop,
            in_flight,
        }
    }

    pub fn none() -> Self {
        Self {
            characters: Vec::new(),
            tasks: Vec::new(),
            stop: CancellationToken::new(),
            in_flight: TaskTracker::new(),
        }
    }

    /// The characters with a bot, in configuration order.
    pub fn characters(&self) -> &[String] {
        &self.characters
    }

    /// Disconnects every bot from the gateway (no new messages), then waits for the
    /// messages already being handled to get their replies delivered. Bound it with the
    /// shutdown grace period: a handler can wait up to the reply timeout.
    pub async fn shutdown(&mut self) {
        self.stop.cancel();
        for task in self.tasks.drain(..) {
            if let Err(e) = task.await {
                tracing::warn!(error = %e, "discord bot task ended abnormally");
            }
        }
        self.in_flight.close();
        self.in_flight.wait().await;
    }
}

impl Drop for DiscordBots {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Late replies go out through the bot of their character.
struct LateReplies(Vec<Arc<Bot>>);

#[async_trait::async_trait]
impl crate::gateway::LateDelivery for LateReplies {
    fn platform(&self) -> &str {
        "discord"
    }

    async fn deliver_late(&self, reply: &whisperfleet_shared::wire::TurnReply) -> bool {
        let name = whisperfleet_shared::character::normalize_name(&reply.character);
        match self
            .0
            .iter()
            .find(|b| whisperfleet_shared::character::normalize_name(&b.character) == name)
        {
            Some(bot) => bot.deliver_late(reply).await,
            None => false,
        }
    }
}

/// One character bot.
pub(super) struct Bot {
    pub(super) character: String,
    pub(super) core: Arc<GatewayCore>,
    pub(super) shared: Arc<Shared>,
    /// The bot's own user id (0 until known): from `GET /users/@me`, then READY.
    pub(super) bot_id: AtomicU64,
    pub(super) seen: Mutex<RecentIds>,
    /// Channels where this bot got 403: permissions belong to the bot's user, so another
    /// character's bot may still post there.
    pub(super) forbidden: Mutex<ForbiddenChannels>,
    /// Cancelled when Discord rejects the token (401): the bot stops instead of piling up
    /// invalid requests.
    pub(super) token_rejected: CancellationToken,
    /// REST client for sends outside a message event (late replies), ready before the
    /// bot's gateway connection is, so a restarted gateway can post what waited for it.
    pub(super) http: Arc<Http>,
    /// The privacy slash commands were registered (`commands`), once per bot.
    pub(super) commands_registered: AtomicBool,
}

enum Ended {
    Stopped,
    /// Logged already; restarting would not help.
    Fatal,
    Retry(String),
}

/// Connects the bot and keeps it connected until shutdown or a fatal error. serenity
/// reconnects a dropped gateway on its own; this loop only restarts a client that gave up.
async fn run_bot(bot: Arc<Bot>, token: SecretString, stop: CancellationToken) {
    let mut backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(300));
    loop {
        match run_client(&bot, &token, &stop).await {
            Ended::Stopped | Ended::Fatal => break,
            Ended::Retry(reason) => {
                let wait = backoff.next_delay();
                tracing::warn!(
                    character = %bot.character,
                    reason,
                    wait_ms = wait.as_millis() as u64,
                    "discord bot not connected; trying again"
                );
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
    tracing::info!(character = %bot.character, "discord bot stopped");
}

async fn run_client(bot: &Arc<Bot>, token: &SecretString, stop: &CancellationToken) -> Ended {
    let settings = &bot.shared.settings;
    let http = build_http(token, settings);
    // A bad token shows up here, as one clear error, before serenity would fall back to the
    // real gateway (its `GET /gateway` failure is only a warning).
    match http.get_current_user().await {
        Ok(me) => {
            bot.bot_id.store(me.id.get(), Ordering::Relaxed);
            tracing::info!(character = %bot.character, bot_user = %me.name, "discord token accepted");
        }
        Err(e) => match classify(&e) {
            Failure::Unauthorized => {
                bot.reject_token("checking the token at startup");
                return Ended::Fatal;
            }
            Failure::Transient | Failure::RateLimited => return Ended::Retry(e.to_string()),
            // The id also comes with READY.
            Failure::Forbidden | Failure::Other => tracing::warn!(
                character = %bot.character,
                error = %e,
                "could not read the bot's own user"
            ),
        },
    }
    let handler = Handler(bot.clone());
    let mut client: Client = match ClientBuilder::new_with_http(http, intents())
        .event_handler(handler)
        .await
    {
        Ok(c) => c,
        Err(e) => return Ended::Retry(e.to_string()),
    };
    if settings.is_stand_in() && *client.ws_url.lock().await == FALLBACK_GATEWAY {
        return Ended::Retry(format!(
            "{}/api/v10/gateway gave no gateway URL (not connecting to the real Discord)",
            whisperfleet_shared::config::redact_url(settings.api_base.trim_end_matches('/'))
        ));
    }
    let shards = client.shard_manager.clone();
    let start = client.start();
    tokio::pin!(start);
    tokio::select! {
        ended = &mut start => match ended {
            Ok(()) if stop.is_cancelled() => Ended::Stopped,
            Ok(()) => Ended::Retry("the gateway connection ended".into()),
            Err(serenity::Error::Gateway(GatewayError::InvalidAuthentication)) => {
                bot.reject_token("identifying to the gateway");
                Ended::Fatal
            }
            Err(serenity::Error::Gateway(
                GatewayError::InvalidGatewayIntents | GatewayError::DisallowedGatewayIntents,
            )) => {
                tracing::error!(
                    character = %bot.character,
                    "Discord refused the bot's intents: enable the Message Content intent for \
                     the {} bot in the Discord Developer Portal; this bot is stopped",
                    bot.character
                );
                Ended::Fatal
            }
            Err(e) => Ended::Retry(e.to_string()),
        },
        _ = stop.cancelled() => {
            stop_shards(&shards, start).await;
            Ended::Stopped
        }
        _ = bot.token_rejected.cancelled() => {
            stop_shards(&shards, start).await;
            Ended::Fatal
        }
    }
}

/// `shutdown_all` does nothing while the shards are still being booted, so it is repeated
/// until the client's `start` returns (bounded).
async fn stop_shards<F: Future>(shards: &ShardManager, mut start: Pin<&mut F>) {
    for _ in 0..5 {
        shards.shutdown_all().await;
        if tokio::time::timeout(Duration::from_secs(1), start.as_mut())
            .await
            .is_ok()
        {
            return;
        }
    }
}

impl Bot {
    /// Names the character, never the token.
    pub(super) fn reject_token(&self, during: &str) {
        if !self.token_rejected.is_cancelled() {
            tracing::error!(
                character = %self.character,
                "Discord rejected the bot token of {} (401 Unauthorized while {during}); this \
                 bot is stopped: fix the token configured for {} and restart the gateway",
                self.character,
                self.character
            );
        }
        self.token_rejected.cancel();
    }
}
