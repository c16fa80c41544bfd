//! The Discord adapter: one serenity client per character bot (one bot token per
//! character), all sharing the gateway's [`GatewayCore`]. A message that should get an
//! answer (a DM, a mention of the bot, a reply to one of its messages) becomes a turn; the
//! reply goes back as Discord messages.
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

pub mod bots;
pub mod policy;
pub mod text;

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serenity::all::{
    ChannelId, Client, ClientBuilder, Context, CreateAllowedMentions, CreateMessage, EventHandler,
    GatewayError, GatewayIntents, GuildId, Http, HttpBuilder, HttpError, Message, MessageId,
    MessageReference, MessageReferenceKind, MessageType, ModelError, Nonce, Ready, ResumedEvent,
    ShardManager, UserId,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use whisperfleet_shared::backoff::Backoff;
use whisperfleet_shared::config::Config;
use whisperfleet_shared::ports::broker::Broker;
use whisperfleet_shared::topology;
use whisperfleet_shared::wire::Conversation;

pub use bots::{BotConfig, BotConfigError, bots_from_config};

use crate::gateway::{GatewayCore, Pending, SubmitError, TurnInput};
use policy::{
    Admission, Decision, ForbiddenChannels, Incoming, RateDecision, RateLimiter, RecentIds, decide,
};
use text::{DISCORD_MESSAGE_LIMIT, FooterMode, chunk_with_footer, render_footer};

/// The real Discord; any other `discord_api_base` is a stand-in.
pub const DEFAULT_API_BASE: &str = "https://discord.com";
/// Where serenity connects when `GET /api/v10/gateway` fails: against a stand-in that would
/// be the real Discord, so a bot that ends up with it is not started.
const FALLBACK_GATEWAY: &str = "wss://gateway.discord.gg";
/// Message ids remembered per bot for de-duplication (only messages the bot answers count).
const REMEMBERED_MESSAGES: usize = 10_000;
/// How long a channel that answered 403 is skipped.
const FORBIDDEN_FOR: Duration = Duration::from_secs(600);
/// Wait before the one retry of a send after a 429 or 5xx. serenity 0.12.5 does not pass
/// `retry_after` on to the caller (its error keeps neither headers nor that body field); with
/// the real Discord its own limiter already waits `Retry-After` and retries, so this only
/// paces the stand-in/proxy case.
const SEND_RETRY_WAIT: Duration = Duration::from_secs(1);
/// How long the depth sample of the `turns` queue may take before admission gives up on it.
const DEPTH_SAMPLE_TIMEOUT: Duration = Duration::from_millis(500);
const ADMISSION_SAMPLE_EVERY: Duration = Duration::from_secs(1);
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
            api_base: config.discord_api_base.trim().to_string(),
            footer: FooterMode::parse(&config.discord_footer),
            typing_every: Duration::from_millis(config.discord_typing_interval_ms)
                .clamp(TYPING_MIN, TYPING_MAX),
            rate_turns: config.discord_rate_turns,
            rate_window: Duration::from_secs(config.discord_rate_window_s),
            admission_depth: config.discord_admission_depth,
        }
    }

    fn is_stand_in(&self) -> bool {
        !self
            .api_base
            .trim_end_matches('/')
            .eq_ignore_ascii_case(DEFAULT_API_BASE)
    }
}

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
struct Shared {
    settings: DiscordSettings,
    limiter: Mutex<RateLimiter>,
    admission: Admission,
    /// Message handlers still running, so shutdown can let them deliver.
    in_flight: TaskTracker,
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
        for bot in bots {
            characters.push(bot.character.clone());
            let runner = Arc::new(Bot {
                character: bot.character,
                core: core.clone(),
                shared: shared.clone(),
                bot_id: AtomicU64::new(0),
                seen: Mutex::new(RecentIds::new(REMEMBERED_MESSAGES)),
                forbidden: Mutex::new(ForbiddenChannels::new(FORBIDDEN_FOR)),
                token_rejected: CancellationToken::new(),
            });
            tasks.push(tokio::spawn(run_bot(runner, bot.token, stop.clone())));
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

/// One character bot.
struct Bot {
    character: String,
    core: Arc<GatewayCore>,
    shared: Arc<Shared>,
    /// The bot's own user id (0 until known): from `GET /users/@me`, then READY.
    bot_id: AtomicU64,
    seen: Mutex<RecentIds>,
    /// Channels where this bot got 403: permissions belong to the bot's user, so another
    /// character's bot may still post there.
    forbidden: Mutex<ForbiddenChannels>,
    /// Cancelled when Discord rejects the token (401): the bot stops instead of piling up
    /// invalid requests.
    token_rejected: CancellationToken,
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

struct Handler(Arc<Bot>);

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, _ctx: Context, ready: Ready) {
        self.0.bot_id.store(ready.user.id.get(), Ordering::Relaxed);
        tracing::info!(
            character = %self.0.character,
            bot_user = %ready.user.name,
            guilds = ready.guilds.len(),
            "discord bot ready"
        );
    }

    async fn resume(&self, _ctx: Context, _event: ResumedEvent) {
        tracing::info!(character = %self.0.character, "discord session resumed");
    }

    async fn message(&self, ctx: Context, msg: Message) {
        // serenity runs each event in its own task; the token lets shutdown wait for it.
        let _in_flight = self.0.shared.in_flight.token();
        self.0.on_message(ctx, msg).await;
    }
}

/// Why a Discord request failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Unauthorized,
    Forbidden,
    RateLimited,
    Transient,
    Other,
}

fn classify(e: &serenity::Error) -> Failure {
    match e {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(r)) => match r.status_code.as_u16() {
            401 => Failure::Unauthorized,
            403 => Failure::Forbidden,
            429 => Failure::RateLimited,
            500..=599 => Failure::Transient,
            _ => Failure::Other,
        },
        serenity::Error::Http(HttpError::Request(_)) => Failure::Transient,
        // serenity checks permissions against its cache before sending: a 403 saved.
        serenity::Error::Model(ModelError::InvalidPermissions { .. }) => Failure::Forbidden,
        _ => Failure::Other,
    }
}

/// Allowed mentions of everything the bot sends: the user it answers, nobody else, no
/// roles, no @everyone/@here (an empty `parse` list turns those off).
pub fn safe_mentions(author: UserId) -> CreateAllowedMentions {
    CreateAllowedMentions::new()
        .everyone(false)
        .all_users(false)
        .all_roles(false)
        .users([author])
        .empty_roles()
        .replied_user(true)
}

/// Where a reply goes: the channel, and the user's message the first piece replies to.
#[derive(Debug, Clone, Copy)]
pub struct ReplyTarget {
    pub channel: ChannelId,
    pub guild: Option<GuildId>,
    pub message: MessageId,
    pub author: UserId,
}

impl ReplyTarget {
    fn of(msg: &Message) -> Self {
        Self {
            channel: msg.channel_id,
            guild: msg.guild_id,
            message: msg.id,
            author: msg.author.id,
        }
    }
}

/// What a send is, for its nonce: the reply's pieces or a gateway notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendKind {
    Reply,
    Notice,
}

/// The messages for `chunks`, in order: safe mentions on every one, the first a reply to the
/// user's message (sent as a plain message if that was deleted meanwhile). Each carries an
/// enforced nonce derived from the user's message (≤ 25 chars, Discord's limit), so a
/// retried send that Discord had in fact created is not posted twice.
pub fn build_messages(
    chunks: &[String],
    target: &ReplyTarget,
    kind: SendKind,
) -> Vec<CreateMessage> {
    let tag = match kind {
        SendKind::Reply => 'r',
        SendKind::Notice => 'n',
    };
    chunks
        .iter()
        .enumerate()
        .map(|(i, content)| {
            let m = CreateMessage::new()
                .content(content.clone())
                .allowed_mentions(safe_mentions(target.author))
                .nonce(Nonce::String(format!("{}{tag}{i}", target.message)))
                .enforce_nonce(true);
            if i > 0 {
                return m;
            }
            let mut reference =
                MessageReference::new(MessageReferenceKind::Default, target.channel)
                    .message_id(target.message)
                    .fail_if_not_exists(false);
            if let Some(guild) = target.guild {
                reference = reference.guild_id(guild);
            }
            m.reference_message(reference)
        })
        .collect()
}

/// The decision's view of a serenity message.
fn incoming<'a>(msg: &'a Message, mentions: &'a [u64]) -> Incoming<'a> {
    Incoming {
        author_id: msg.author.id.get(),
        author_is_bot: msg.author.bot || msg.webhook_id.is_some(),
        // Over the gateway, guild messages always carry their guild id.
        is_dm: msg.guild_id.is_none(),
        mentions,
        replied_to_author: msg.referenced_message.as_ref().map(|m| m.author.id.get()),
        is_user_message: matches!(msg.kind, MessageType::Regular | MessageType::InlineReply),
        content: &msg.content,
    }
}

fn turn_input(
    character: &str,
    msg: &Message,
    text: String,
    received: Instant,
    received_at: DateTime<Utc>,
) -> TurnInput {
    let timestamp = msg
        .timestamp
        .to_rfc3339()
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc));
    let user_name = msg
        .member
        .as_ref()
        .and_then(|m| m.nick.clone())
        .unwrap_or_else(|| msg.author.display_name().to_string());
    TurnInput {
        conversation: Conversation {
            platform: "discord".into(),
            channel_id: msg.channel_id.to_string(),
            user_id: msg.author.id.to_string(),
            guild_id: msg.guild_id.map(|g| g.to_string()),
            is_dm: msg.guild_id.is_none(),
        },
        character: character.to_string(),
        user_name,
        text,
        platform_sent_at: text::platform_sent_at(msg.id.get(), timestamp, received_at),
        platform_message_id: Some(msg.id.to_string()),
        received,
        received_at,
    }
}

async fn turns_depth(broker: Arc<dyn Broker>) -> Option<u64> {
    match tokio::time::timeout(
        DEPTH_SAMPLE_TIMEOUT,
        broker.queue_stats(topology::TURNS_QUEUE),
    )
    .await
    {
        Ok(Ok(stats)) => stats.map(|s| s.ready),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "turns queue depth not sampled");
            None
        }
        Err(_) => None,
    }
}

/// Aborts the typing loop when the turn is done (or its handler ends early).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Bot {
    async fn on_message(self: &Arc<Self>, ctx: Context, msg: Message) {
        let received = Instant::now();
        let received_at = Utc::now();
        if self.token_rejected.is_cancelled() {
            return;
        }
        let bot_id = self.bot_id.load(Ordering::Relaxed);
        if bot_id == 0 {
            tracing::debug!(character = %self.character, "message before the bot knows its own id; ignored");
            return;
        }
        let mention_ids: Vec<u64> = msg.mentions.iter().map(|u| u.id.get()).collect();
        let text = match decide(&incoming(&msg, &mention_ids), bot_id) {
            Decision::Answer { text, why } => {
                tracing::debug!(character = %self.character, ?why, message_id = %msg.id, "answering");
                text
            }
            Decision::Ignore(why) => {
                tracing::trace!(character = %self.character, ?why, message_id = %msg.id, "not for this bot");
                return;
            }
        };
        if !self
            .seen
            .lock()
            .expect("seen lock")
            .first_time(msg.id.get())
        {
            tracing::info!(character = %self.character, message_id = %msg.id, "dropping a replayed message (already handled)");
            return;
        }
        if self.is_forbidden(msg.channel_id) {
            tracing::debug!(character = %self.character, channel_id = %msg.channel_id, "no permission to post here; message not answered");
            return;
        }
        let rate = self
            .shared
            .limiter
            .lock()
            .expect("limiter lock")
            .check(msg.author.id.get(), Instant::now());
        if let RateDecision::Limited {
            retry_after,
            tell_user,
        } = rate
        {
            tracing::info!(character = %self.character, user_id = %msg.author.id, tell_user, "user over the rate limit; nothing published");
            if tell_user {
                self.say(&ctx, &msg, &text::rate_limited_notice(retry_after))
                    .await;
            }
            return;
        }
        match self.core.validate(&text) {
            Ok(()) => {}
            Err(SubmitError::TooLong { chars, limit }) => {
                self.say(&ctx, &msg, &text::too_long_notice(chars, limit))
                    .await;
                return;
            }
            Err(_) => return,
        }
        let broker = self.core.broker().clone();
        if let Some(position) = self.shared.admission.position(|| turns_depth(broker)).await {
            tracing::warn!(character = %self.character, position, "turns queue over the admission depth; message refused");
            self.say(&ctx, &msg, &text::busy_notice(position)).await;
            return;
        }
        let typing = self.start_typing(ctx.http.clone(), msg.channel_id);
        let input = turn_input(&self.character, &msg, text, received, received_at);
        let result = self.core.submit(input).await;
        drop(typing);
        match result {
            Ok(pending) => self.deliver(&ctx, &msg, pending).await,
            Err(SubmitError::Empty) => {}
            Err(SubmitError::TooLong { chars, limit }) => {
                self.say(&ctx, &msg, &text::too_long_notice(chars, limit))
                    .await;
            }
            Err(SubmitError::Busy(e)) => {
                tracing::info!(character = %self.character, error = %e, "conversation has too many messages waiting");
                self.say(&ctx, &msg, text::CONVERSATION_BUSY_NOTICE).await;
            }
            Err(SubmitError::BrokerDown(e)) => {
                tracing::warn!(character = %self.character, error = %e, "turn not published");
                self.say(&ctx, &msg, text::BROKER_DOWN_NOTICE).await;
            }
            Err(SubmitError::Timeout(after)) => {
                tracing::warn!(character = %self.character, after_ms = after.as_millis() as u64, "no reply in time");
                self.say(&ctx, &msg, text::TIMEOUT_NOTICE).await;
            }
        }
    }

    async fn deliver(&self, ctx: &Context, msg: &Message, pending: Pending) {
        // The footer can only show what is known when the send starts.
        let shown = self.core.complete(&pending);
        let footer = render_footer(self.shared.settings.footer, &shown);
        let chunks = chunk_with_footer(
            &pending.reply.text,
            footer.as_deref(),
            DISCORD_MESSAGE_LIMIT,
        );
        match self
            .send_all(ctx, &ReplyTarget::of(msg), &chunks, SendKind::Reply)
            .await
        {
            Ok(()) => {
                let timings = self.core.complete(&pending);
                self.core.publish_delivery_metrics(&pending.reply, &timings);
                tracing::info!(
                    character = %self.character,
                    turn_id = %pending.reply.turn_id,
                    outcome = pending.reply.outcome.as_str(),
                    messages = chunks.len(),
                    end_to_end_ms = timings.get("end_to_end").copied().unwrap_or_default(),
                    "reply delivered"
                );
            }
            Err(failure) => tracing::warn!(
                character = %self.character,
                turn_id = %pending.reply.turn_id,
                ?failure,
                "reply not delivered"
            ),
        }
    }

    /// A short notice from the gateway itself (rate limit, busy, broker trouble), sent like
    /// a reply. Failures are logged in `send_one`.
    async fn say(&self, ctx: &Context, msg: &Message, notice: &str) {
        let _ = self
            .send_all(
                ctx,
                &ReplyTarget::of(msg),
                &[notice.to_string()],
                SendKind::Notice,
            )
            .await;
    }

    /// Sends in order and stops at the first piece that fails: a later piece without the
    /// earlier one would not make sense.
    async fn send_all(
        &self,
        ctx: &Context,
        target: &ReplyTarget,
        chunks: &[String],
        kind: SendKind,
    ) -> Result<(), Failure> {
        for message in build_messages(chunks, target, kind) {
            self.send_one(ctx, target.channel, message).await?;
        }
        Ok(())
    }

    async fn send_one(
        &self,
        ctx: &Context,
        channel: ChannelId,
        message: CreateMessage,
    ) -> Result<(), Failure> {
        let mut retried = false;
        loop {
            if self.token_rejected.is_cancelled() {
                return Err(Failure::Unauthorized);
            }
            if self.is_forbidden(channel) {
                return Err(Failure::Forbidden);
            }
            let error = match channel.send_message(ctx, message.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let failure = classify(&error);
            match failure {
                Failure::Unauthorized => self.reject_token("sending a message"),
                Failure::Forbidden => self.mark_forbidden(channel, &error),
                Failure::RateLimited | Failure::Transient if !retried => {
                    retried = true;
                    tracing::warn!(
                        character = %self.character,
                        channel_id = %channel,
                        error = %error,
                        ?failure,
                        "message not sent; retrying once"
                    );
                    tokio::time::sleep(SEND_RETRY_WAIT).await;
                    continue;
                }
                _ => tracing::warn!(
                    character = %self.character,
                    channel_id = %channel,
                    error = %error,
                    ?failure,
                    "message not sent"
                ),
            }
            return Err(failure);
        }
    }

    /// Shows "… is typing" now and renews it before it lapses, until dropped.
    fn start_typing(self: &Arc<Self>, http: Arc<Http>, channel: ChannelId) -> AbortOnDrop {
        let bot = self.clone();
        let every = self.shared.settings.typing_every;
        AbortOnDrop(tokio::spawn(async move {
            loop {
                if bot.token_rejected.is_cancelled() || bot.is_forbidden(channel) {
                    return;
                }
                if let Err(e) = http.broadcast_typing(channel).await {
                    match classify(&e) {
                        Failure::Unauthorized => {
                            bot.reject_token("showing the typing indicator");
                            return;
                        }
                        Failure::Forbidden => {
                            bot.mark_forbidden(channel, &e);
                            return;
                        }
                        _ => tracing::debug!(error = %e, "typing indicator not shown"),
                    }
                }
                tokio::time::sleep(every).await;
            }
        }))
    }

    fn is_forbidden(&self, channel: ChannelId) -> bool {
        self.forbidden
            .lock()
            .expect("forbidden lock")
            .is_forbidden(channel.get(), Instant::now())
    }

    fn mark_forbidden(&self, channel: ChannelId, error: &serenity::Error) {
        tracing::warn!(
            character = %self.character,
            channel_id = %channel,
            error = %error,
            skip_s = FORBIDDEN_FOR.as_secs(),
            "no permission to post in this channel (403); not retrying, skipping it for a while"
        );
        self.forbidden
            .lock()
            .expect("forbidden lock")
            .mark(channel.get(), Instant::now());
    }

    /// Names the character, never the token.
    fn reject_token(&self, during: &str) {
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn message(value: serde_json::Value) -> Message {
        let mut base = json!({
            "id": "1300000000000000000",
            "channel_id": "200",
            "author": {"id": "7", "username": "ada", "discriminator": "0", "global_name": "Ada"},
            "content": "",
            "timestamp": "2024-11-01T10:00:00.000000+00:00",
            "edited_timestamp": null,
            "tts": false,
            "mention_everyone": false,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": false,
            "type": 0
        });
        for (k, v) in value.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).expect("a Discord message")
    }

    fn answer_of(msg: &Message, bot: u64) -> Decision {
        let ids: Vec<u64> = msg.mentions.iter().map(|u| u.id.get()).collect();
        decide(&incoming(msg, &ids), bot)
    }

    #[test]
    fn serenity_messages_map_onto_the_decision() {
        let bot = json!({"id": "42", "username": "vellum", "discriminator": "0", "bot": true});
        let mention = message(json!({
            "guild_id": "9",
            "content": "<@42> hello",
            "mentions": [bot.clone()],
        }));
        assert!(
            matches!(answer_of(&mention, 42), Decision::Answer { ref text, .. } if text == "hello")
        );
        let dm = message(json!({"content": "hi there"}));
        assert!(matches!(answer_of(&dm, 42), Decision::Answer { .. }));
        let chatter = message(json!({"guild_id": "9", "content": "hi all"}));
        assert!(matches!(answer_of(&chatter, 42), Decision::Ignore(_)));
        let own_reply = message(json!({
            "id": "1300000000000000001",
            "channel_id": "200",
            "author": bot.clone(),
            "content": "I am Vellum",
            "timestamp": "2024-11-01T10:00:00.000000+00:00",
            "edited_timestamp": null, "tts": false, "mention_everyone": false,
            "mentions": [], "mention_roles": [], "attachments": [], "embeds": [],
            "pinned": false, "type": 0
        }));
        let reply = message(json!({
            "guild_id": "9",
            "content": "and then?",
            "type": 19,
            "referenced_message": own_reply,
        }));
        assert!(matches!(answer_of(&reply, 42), Decision::Answer { .. }));
        let from_bot = message(json!({"author": bot, "content": "hi"}));
        assert!(matches!(answer_of(&from_bot, 42), Decision::Ignore(_)));
        let webhook = message(json!({"guild_id": "9", "webhook_id": "5", "content": "<@42> hi"}));
        assert!(matches!(answer_of(&webhook, 42), Decision::Ignore(_)));
    }

    #[test]
    fn turn_input_carries_the_conversation_and_platform_time() {
        let received_at = Utc::now();
        let id = ((received_at.timestamp_millis() as u64 - 120 - text::DISCORD_EPOCH_MS) << 22) | 1;
        let msg = message(json!({
            "id": id.to_string(),
            "guild_id": "9",
            "member": {"nick": "Countess", "roles": [], "joined_at": null, "deaf": false,
                       "mute": false, "flags": 0},
            "content": "<@42> hi",
        }));
        let input = turn_input("Vellum", &msg, "hi".into(), Instant::now(), received_at);
        assert_eq!(input.conversation.platform, "discord");
        assert_eq!(input.conversation.channel_id, "200");
        assert_eq!(input.conversation.user_id, "7");
        assert_eq!(input.conversation.guild_id.as_deref(), Some("9"));
        assert!(!input.conversation.is_dm);
        assert_eq!(input.user_name, "Countess");
        assert_eq!(input.platform_message_id, Some(id.to_string()));
        let lag = received_at - input.platform_sent_at.unwrap();
        assert_eq!(lag.num_milliseconds(), 120);
        let dm = message(json!({"content": "hi"}));
        let input = turn_input("Vellum", &dm, "hi".into(), Instant::now(), received_at);
        assert!(input.conversation.is_dm);
        assert_eq!(input.user_name, "Ada");
    }

    #[test]
    fn every_message_allows_only_the_author_to_be_pinged() {
        let target = ReplyTarget {
            channel: ChannelId::new(200),
            guild: Some(GuildId::new(9)),
            message: MessageId::new(300),
            author: UserId::new(7),
        };
        let chunks = vec![
            "@everyone @here <@&5> <@8> look".to_string(),
            "second".to_string(),
        ];
        let built = build_messages(&chunks, &target, SendKind::Reply);
        assert_eq!(built.len(), 2);
        for (i, m) in built.iter().enumerate() {
            let body = serde_json::to_value(m).unwrap();
            let mentions = &body["allowed_mentions"];
            assert_eq!(mentions["parse"], json!([]), "{body}");
            assert_eq!(mentions["users"], json!(["7"]), "{body}");
            assert_eq!(mentions["roles"], json!([]), "{body}");
            assert_eq!(body["content"], json!(chunks[i]));
            // Only the first piece is a reply to the user's message.
            assert_eq!(body.get("message_reference").is_some(), i == 0, "{body}");
            // A retry of the same piece is de-duplicated by Discord.
            assert_eq!(body["nonce"], json!(format!("300r{i}")), "{body}");
            assert_eq!(body["enforce_nonce"], json!(true), "{body}");
        }
        let first = serde_json::to_value(&built[0]).unwrap();
        assert_eq!(first["message_reference"]["message_id"], json!("300"));
        assert_eq!(
            first["message_reference"]["fail_if_not_exists"],
            json!(false)
        );
    }

    #[test]
    fn stand_in_detection_and_typing_clamp() {
        let mut config = Config::default();
        let settings = DiscordSettings::from_config(&config);
        assert!(!settings.is_stand_in());
        assert_eq!(settings.typing_every, Duration::from_secs(8));
        config.discord_api_base = "https://discord.com/".into();
        assert!(!DiscordSettings::from_config(&config).is_stand_in());
        config.discord_api_base = "http://127.0.0.1:4567".into();
        config.discord_typing_interval_ms = 30_000;
        let settings = DiscordSettings::from_config(&config);
        assert!(settings.is_stand_in());
        assert_eq!(settings.typing_every, TYPING_MAX);
        let http = build_http(&SecretString::from("abc.def".to_string()), &settings);
        assert!(http.ratelimiter.is_none());
        assert_eq!(http.proxy.as_deref(), Some("http://127.0.0.1:4567"));
    }
}
