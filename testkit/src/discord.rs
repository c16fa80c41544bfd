//! A local stand-in for the Discord API v10 (REST + gateway WebSocket), faithful enough that
//! the real serenity 0.12.5 client runs against it unchanged, so end-to-end tests can drive the
//! gateway binary's Discord adapter without reaching Discord.
//!
//! Point serenity at it with
//! `HttpBuilder::new(token).proxy(standin.base_url()).ratelimiter_disabled(true).build()` and
//! `ClientBuilder::new_with_http(http, intents)`: serenity rewrites `https://discord.com` to the
//! proxy, asks `GET /api/v10/gateway` for the WebSocket URL (unauthenticated, as on Discord; if
//! that call failed serenity would silently fall back to the real gateway) and connects to
//! `ws://127.0.0.1:PORT/ws?v=10`.
//!
//! What it covers, as Discord does it:
//! - REST: `GET /gateway`, `GET /gateway/bot`, `GET /users/@me`, `GET /oauth2/applications/@me`,
//!   `POST /channels/{id}/messages` (JSON bodies), `PATCH`/`DELETE
//!   /channels/{id}/messages/{id}` (edits and deletes, in [`edits`](self::edits)) and
//!   `POST /channels/{id}/typing` (204), all
//!   under `/api/v10`. `Authorization: Bot <token>` is checked (401 `{"message": "401:
//!   Unauthorized", "code": 0}`); messages are validated like Discord does (empty → 50006, more
//!   than 2000 characters → 50035 `BASE_TYPE_MAX_LENGTH`, `allowed_mentions` `parse` + list
//!   conflicts → 50035, replies to unknown messages → 50035 unless `fail_if_not_exists: false`,
//!   unknown channel → 404 10003, a DM channel of another bot → 403 50001) and answered with a
//!   complete Message object (new snowflake, the bot as author, `type` 19 with
//!   `message_reference` + `referenced_message` for replies). Every response carries Discord's
//!   rate-limit headers; unknown routes get 404 JSON, wrong methods 405 JSON. Every request is
//!   recorded ([`Recorded`]); the next message sends (whichever bot and channel come first) can
//!   be failed on purpose ([`DiscordStandIn::fail_next_messages`]), e.g. 429 with Discord's body
//!   `{"message", "retry_after", "global"}` and a `Retry-After` header. That body has no `code`,
//!   which serenity's error type requires, so serenity reports such a 429 as status 429 with
//!   code -1 and keeps neither `retry_after` nor the header: an adapter running with
//!   `ratelimiter_disabled(true)` has to choose its own back-off.
//! - Gateway: HELLO, IDENTIFY (token, intents, shard checked; close codes 4004, 4005, 4010,
//!   4013, 4014 like Discord), READY (`s` = 1) with user, application and session data,
//!   heartbeat → ACK, RESUME with replay of missed dispatches and RESUMED (or INVALID_SESSION),
//!   sequence numbers per session, and, because serenity identifies with `compress: true`,
//!   payloads of at least [`StandInOptions::compress_threshold`] bytes sent as binary frames
//!   holding one complete zlib stream each (what serenity's `ZlibDecoder` expects).
//! - MESSAGE_CREATE for user messages ([`DiscordStandIn::user_message`]) with real snowflake ids
//!   and ISO-8601 timestamps taken from the current time, `guild_id` + `member` in guilds, and —
//!   as on Discord — for the bots' own sends too ([`StandInOptions::echo_bot_messages`]), so an
//!   adapter must ignore its own messages. Intents are honoured: no `GUILD_MESSAGES` /
//!   `DIRECT_MESSAGES`, no event; no `MESSAGE_CONTENT`, empty content in guild messages that do
//!   not mention the bot.
//! - Interactions (slash commands, buttons): registration, `INTERACTION_CREATE`, the
//!   callback, edits of the original answer and follow-ups, in `discord/interactions.rs`.
//! - Gateway faults: [`DiscordStandIn::request_reconnect`] (op 7),
//!   [`DiscordStandIn::drop_connection`] (TCP gone without a close frame) and
//!   [`DiscordStandIn::invalidate_session`] (op 9).
//!
//! What it does not cover: guilds, channels, roles and permissions as objects (every bot is in
//! every guild and may write to every channel it has seen a message in; READY has no guilds and
//! no GUILD_CREATE follows), multipart uploads (attachments), embeds beyond echoing them back,
//! reactions, presences, voice,
//! `zlib-stream` transport compression, ETF encoding, gateway rate limits, heartbeat timeouts
//! (a silent client is never disconnected), and real rate limiting (the headers count requests
//! per bot and route in 5-second windows, but nothing is refused unless
//! [`StandInOptions::enforce_rate_limits`] is set). The `mentions` array of sent messages holds
//! known users mentioned in the content and allowed by `allowed_mentions`, an approximation.

mod edits;

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::extract::{RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flate2::Compression;
use flate2::write::ZlibEncoder;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

mod interactions;
pub use interactions::{CALLBACK_WINDOW, Callback, EPHEMERAL, InteractionLog, Invoker, Sent};

/// Discord's epoch (2015-01-01T00:00:00Z) in Unix milliseconds: snowflake ids carry the
/// milliseconds since then in their upper 42 bits.
pub const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// The API version serenity 0.12.5 speaks (`/api/v10`, `?v=10`).
pub const API_VERSION: u64 = 10;

const MESSAGE_LIMIT: usize = 2000;
const RATE_LIMIT: u32 = 5;
const RATE_WINDOW: Duration = Duration::from_secs(5);
const SESSION_LOG: usize = 1000;

/// Gateway intents the stand-in looks at.
pub mod intents {
    pub const GUILD_MESSAGES: u64 = 1 << 9;
    pub const DIRECT_MESSAGES: u64 = 1 << 12;
    pub const MESSAGE_CONTENT: u64 = 1 << 15;
    /// Every intent Discord defined for API v10 at the time of writing.
    pub const ALL: u64 = (1 << 26) - 1;
}

/// Behaviour switches; [`Default`] is what Discord does.
#[derive(Clone, Debug)]
pub struct StandInOptions {
    /// Sent in HELLO. Discord sends 41250; tests that want to see heartbeats use less.
    pub heartbeat_interval_ms: u64,
    /// For connections that identified with `compress: true`, payloads whose JSON is at least
    /// this long go out as zlib binary frames, smaller ones as text (Discord compresses the
    /// large ones, READY and big dispatches). 0 compresses everything after IDENTIFY.
    pub compress_threshold: usize,
    /// Dispatch MESSAGE_CREATE for messages the bots send over REST, as Discord does.
    pub echo_bot_messages: bool,
    /// Whether the bots have the privileged MESSAGE_CONTENT intent enabled in the developer
    /// portal; when false, identifying with it is closed with 4014 like Discord does.
    pub message_content_allowed: bool,
    /// Refuse requests beyond 5 per 5 s per bot and route with 429, instead of only counting.
    pub enforce_rate_limits: bool,
}

impl Default for StandInOptions {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 41_250,
            compress_threshold: 1024,
            echo_bot_messages: true,
            message_content_allowed: true,
            enforce_rate_limits: false,
        }
    }
}

/// One REST request as the stand-in received and answered it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    /// Path without the query, e.g. `/api/v10/channels/42/messages`.
    pub path: String,
    /// The bot whose token authorized the request (None: missing or unknown token).
    pub bot_id: Option<u64>,
    /// The request body as JSON (Null when empty, a string when it was not JSON).
    pub body: Value,
    /// The status the stand-in answered with.
    pub status: u16,
    /// The response body (Null for 204).
    pub response: Value,
    pub at: Instant,
}

impl Recorded {
    /// The `content` of a message send.
    pub fn content(&self) -> Option<&str> {
        self.body.get("content").and_then(Value::as_str)
    }

    /// The id of the message this request created, if it created one.
    pub fn message_id(&self) -> Option<&str> {
        self.response.get("id").and_then(Value::as_str)
    }
}

/// A message a user posts, delivered to the bots as MESSAGE_CREATE.
#[derive(Clone, Debug, Default)]
pub struct UserMessage {
    pub channel_id: u64,
    /// Some: a guild text channel (every bot receives it); None: a DM channel.
    pub guild_id: Option<u64>,
    pub author_id: u64,
    pub author_name: String,
    pub author_bot: bool,
    pub content: String,
    /// Users mentioned (id, name); the content should contain `<@id>` for each.
    pub mentions: Vec<(u64, String)>,
    /// Id of an earlier message (a user's or a bot's) this one replies to. An id the stand-in
    /// never saw yields a reply whose `referenced_message` is null, like a deleted message.
    pub referenced_message: Option<String>,
    /// Which bots receive it; None: every bot. For a DM this is the bot the DM is with.
    pub to_bots: Option<Vec<u64>>,
}

impl UserMessage {
    /// A message in a guild text channel.
    pub fn guild(
        guild_id: u64,
        channel_id: u64,
        author_id: u64,
        author_name: &str,
        content: &str,
    ) -> Self {
        Self {
            channel_id,
            guild_id: Some(guild_id),
            author_id,
            author_name: author_name.to_string(),
            content: content.to_string(),
            ..Self::default()
        }
    }

    /// A direct message from a user to one bot.
    pub fn dm(channel_id: u64, author_id: u64, author_name: &str, content: &str, bot: u64) -> Self {
        Self {
            channel_id,
            author_id,
            author_name: author_name.to_string(),
            content: content.to_string(),
            to_bots: Some(vec![bot]),
            ..Self::default()
        }
    }

    /// Adds a mention of a user (also prefixes `<@id> ` to the content if it lacks it).
    pub fn mentioning(mut self, id: u64, name: &str) -> Self {
        let tag = format!("<@{id}>");
        if !self.content.contains(&tag) && !self.content.contains(&format!("<@!{id}>")) {
            self.content = format!("{tag} {}", self.content);
        }
        self.mentions.push((id, name.to_string()));
        self
    }

    /// Makes it a reply to an earlier message.
    pub fn replying_to(mut self, message_id: &str) -> Self {
        self.referenced_message = Some(message_id.to_string());
        self
    }
}

/// A gateway session that is connected and identified (or resumed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionInfo {
    pub bot_id: u64,
    pub session_id: String,
    /// Last sequence number sent in this session.
    pub seq: u64,
    pub intents: u64,
}

/// One payload the stand-in sent over the gateway.
#[derive(Clone, Debug)]
pub struct GatewayFrame {
    /// None before IDENTIFY/RESUME told who is connected.
    pub bot_id: Option<u64>,
    pub op: u64,
    pub t: Option<String>,
    pub s: Option<u64>,
    /// Sent as a zlib-compressed binary frame (else text).
    pub binary: bool,
    pub json_len: usize,
    pub wire_len: usize,
    pub payload: Value,
}

/// One payload a client sent over the gateway (tokens replaced by `"<redacted>"`).
#[derive(Clone, Debug)]
pub struct GatewayOp {
    pub bot_id: Option<u64>,
    pub op: u64,
    pub d: Value,
    pub at: Instant,
}

/// The running stand-in; dropping it stops the server and closes every connection.
pub struct DiscordStandIn {
    inner: Arc<Inner>,
    addr: SocketAddr,
    server: JoinHandle<()>,
}

impl Drop for DiscordStandIn {
    fn drop(&mut self) {
        self.inner.shutdown.send_replace(true);
        self.server.abort();
    }
}

#[derive(Clone, Debug)]
struct Bot {
    token: String,
    id: u64,
    name: String,
}

#[derive(Clone, Copy, Debug)]
enum ChannelKind {
    Guild(u64),
    /// A DM channel with a user; None = with every bot (when `to_bots` was None).
    Dm(Option<u64>),
}

enum Outbound {
    Payload(Value),
    Close(u16, &'static str),
    Abort,
}

struct Session {
    bot_id: u64,
    intents: u64,
    shard: Value,
    seq: u64,
    log: VecDeque<Value>,
    conn: Option<(u64, mpsc::UnboundedSender<Outbound>)>,
}

#[derive(Default)]
struct State_ {
    requests: Vec<Recorded>,
    /// (status, retry_after, whether the message is created before the error is returned)
    faults: VecDeque<(u16, f64, bool)>,
    /// Enforced nonces: (bot, nonce) → message id, as Discord keeps them for a few minutes.
    nonces: HashMap<(u64, String), String>,
    sessions: HashMap<String, Session>,
    channels: HashMap<u64, ChannelKind>,
    /// Message objects as REST returns them (no guild_id/member), by id.
    messages: HashMap<String, Value>,
    users: HashMap<u64, Value>,
    frames: Vec<GatewayFrame>,
    received: Vec<GatewayOp>,
    windows: HashMap<(Option<u64>, String), (Instant, u32)>,
    last_snowflake: u64,
    edits: edits::EditState,
    /// Registered commands and interactions in flight (`discord/interactions.rs`).
    interactions: interactions::Interactions,
}

struct Inner {
    bots: Vec<Bot>,
    options: StandInOptions,
    ws_url: String,
    state: Mutex<State_>,
    /// Bumped on every change tests may wait for.
    changed: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
    next_conn: AtomicU64,
}

impl DiscordStandIn {
    /// Starts a stand-in on 127.0.0.1 (random port) that knows these bots
    /// (token, bot user id, bot name), with Discord's default behaviour.
    pub async fn start(bots: &[(&str, u64, &str)]) -> anyhow::Result<DiscordStandIn> {
        Self::start_with(bots, StandInOptions::default()).await
    }

    pub async fn start_with(
        bots: &[(&str, u64, &str)],
        options: StandInOptions,
    ) -> anyhow::Result<DiscordStandIn> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the Discord stand-in")?;
        let addr = listener.local_addr()?;
        let bots: Vec<Bot> = bots
            .iter()
            .map(|(token, id, name)| Bot {
                token: token.to_string(),
                id: *id,
                name: name.to_string(),
            })
            .collect();
        let mut state = State_::default();
        for bot in &bots {
            state
                .users
                .insert(bot.id, user_json(bot.id, &bot.name, true));
        }
        let (shutdown, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            bots,
            options,
            ws_url: format!("ws://{addr}/ws"),
            state: Mutex::new(state),
            changed: watch::channel(0).0,
            shutdown,
            next_conn: AtomicU64::new(1),
        });
        let app = Router::new()
            .route("/ws", get(ws_upgrade))
            .fallback(rest)
            .with_state(inner.clone());
        let mut stop = inner.shutdown.subscribe();
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|s| *s).await;
                })
                .await;
        });
        Ok(DiscordStandIn {
            inner,
            addr,
            server,
        })
    }

    /// What to pass to serenity's `HttpBuilder::proxy`: `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The gateway URL `GET /gateway` hands out: `ws://127.0.0.1:PORT/ws`.
    pub fn gateway_url(&self) -> String {
        self.inner.ws_url.clone()
    }

    /// Every REST request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.inner.lock().requests.clone()
    }

    /// Message sends to this channel that Discord accepted (status 200), in order.
    pub fn sent_messages(&self, channel_id: u64) -> Vec<Recorded> {
        self.accepted("POST", &format!("/api/v10/channels/{channel_id}/messages"))
    }

    /// Typing indicators triggered in this channel (accepted ones), in order.
    pub fn typing(&self, channel_id: u64) -> Vec<Recorded> {
        self.accepted("POST", &format!("/api/v10/channels/{channel_id}/typing"))
    }

    fn accepted(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.inner
            .lock()
            .requests
            .iter()
            .filter(|r| r.method == method && r.path == path && r.status < 300)
            .cloned()
            .collect()
    }

    /// Waits until at least `n` messages were accepted in the channel and returns all of them.
    pub async fn wait_for_messages(
        &self,
        channel_id: u64,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Recorded>> {
        self.wait_until(timeout, || {
            let sent = self.sent_messages(channel_id);
            (sent.len() >= n).then_some(sent)
        })
        .await
        .with_context(|| {
            format!(
                "waiting for {n} message(s) in channel {channel_id}; requests so far: {:#?}",
                self.requests()
                    .iter()
                    .map(|r| format!("{} {} -> {} {}", r.method, r.path, r.status, r.body))
                    .collect::<Vec<_>>()
            )
        })
    }

    /// Makes the next `n` message sends (any channel, any bot) fail with `status`. 429 answers
    /// like Discord's per-route limit (`retry_after` 0.2 s); anything else with
    /// `{"message": "<status>: <reason>", "code": 0}`.
    pub fn fail_next_messages(&self, n: usize, status: u16) {
        self.fail_next_messages_with(n, status, 0.2);
    }

    /// Like [`Self::fail_next_messages`], with the `retry_after` (seconds) a 429 carries.
    pub fn fail_next_messages_with(&self, n: usize, status: u16, retry_after: f64) {
        let mut st = self.inner.lock();
        st.faults
            .extend(std::iter::repeat_n((status, retry_after, false), n));
    }

    /// The next `n` message sends are created (the channel shows them) but answered with
    /// `status`, as when Discord's edge fails after the API did its work: what a blind retry
    /// would post twice, unless it sends an enforced nonce.
    pub fn fail_next_messages_after_create(&self, n: usize, status: u16) {
        let mut st = self.inner.lock();
        st.faults
            .extend(std::iter::repeat_n((status, 0.0, true), n));
    }

    /// Messages that exist in a channel, oldest first (whatever the send's response was).
    pub fn channel_messages(&self, channel_id: u64) -> Vec<Value> {
        let st = self.inner.lock();
        let mut out: Vec<Value> = st
            .messages
            .values()
            .filter(|m| id_of(&m["channel_id"]) == Some(channel_id))
            .cloned()
            .collect();
        out.sort_by_key(|m| id_of(&m["id"]));
        out
    }

    /// Sessions that are identified and currently connected.
    pub fn connected_sessions(&self) -> Vec<SessionInfo> {
        let st = self.inner.lock();
        let mut out: Vec<SessionInfo> = st
            .sessions
            .iter()
            .filter(|(_, s)| s.conn.is_some())
            .map(|(id, s)| SessionInfo {
                bot_id: s.bot_id,
                session_id: id.clone(),
                seq: s.seq,
                intents: s.intents,
            })
            .collect();
        out.sort_by_key(|s| s.bot_id);
        out
    }

    /// Waits until at least `n` sessions are READY (or RESUMED) and connected.
    pub async fn wait_ready(
        &self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<SessionInfo>> {
        self.wait_until(timeout, || {
            let s = self.connected_sessions();
            (s.len() >= n).then_some(s)
        })
        .await
        .with_context(|| {
            format!(
                "waiting for {n} ready gateway session(s); client ops so far: {:?}",
                self.gateway_received()
                    .iter()
                    .map(|o| (o.bot_id, o.op))
                    .collect::<Vec<_>>()
            )
        })
    }

    /// Waits (up to `timeout`) until `f` returns Some.
    pub async fn wait_until<T>(
        &self,
        timeout: Duration,
        mut f: impl FnMut() -> Option<T>,
    ) -> anyhow::Result<T> {
        let mut rx = self.inner.changed.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            rx.borrow_and_update();
            if let Some(v) = f() {
                return Ok(v);
            }
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => bail!("the stand-in stopped"),
                Err(_) => bail!("timed out after {timeout:?}"),
            }
        }
    }

    /// Posts a user's message: MESSAGE_CREATE goes to every identified session it concerns
    /// (guild: all bots; DM: `to_bots`), buffered for resumption when a session is
    /// disconnected. Returns the new message id.
    pub fn user_message(&self, spec: UserMessage) -> String {
        self.inner.user_message(spec)
    }

    /// Dispatches an earlier user message's MESSAGE_CREATE once more (to `to_bots`, or to
    /// every bot), as a gateway replaying events after a RESUME may: the same message id.
    pub fn replay_message(&self, message_id: &str, to_bots: Option<&[u64]>) {
        let mut st = self.inner.lock();
        let Some(message) = st.messages.get(message_id).cloned() else {
            return;
        };
        self.inner.broadcast_message(&mut st, &message, to_bots);
        drop(st);
        self.inner.bump();
    }

    /// Every payload sent over the gateway so far.
    pub fn gateway_frames(&self) -> Vec<GatewayFrame> {
        self.inner.lock().frames.clone()
    }

    /// Every payload clients sent over the gateway so far.
    pub fn gateway_received(&self) -> Vec<GatewayOp> {
        self.inner.lock().received.clone()
    }

    /// Sends op 7 RECONNECT to the bot's connected sessions (the client should RESUME).
    pub fn request_reconnect(&self, bot_id: u64) {
        self.inner
            .to_connections(bot_id, || Outbound::Payload(json!({"op": 7, "d": null})));
    }

    /// Drops the bot's connections without a close frame; sessions stay resumable.
    pub fn drop_connection(&self, bot_id: u64) {
        self.inner.to_connections(bot_id, || Outbound::Abort);
    }

    /// Sends op 9 INVALID_SESSION to the bot's connected sessions; not resumable ones are
    /// forgotten, so the client has to IDENTIFY again.
    pub fn invalidate_session(&self, bot_id: u64, resumable: bool) {
        self.inner.to_connections(bot_id, || {
            Outbound::Payload(json!({"op": 9, "d": resumable}))
        });
        if !resumable {
            self.inner.lock().sessions.retain(|_, s| s.bot_id != bot_id);
            self.inner.bump();
        }
    }
}

/// The Unix time a snowflake id was created at.
pub fn snowflake_time(id: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis((id >> 22) + DISCORD_EPOCH_MS)
}

/// Discord's ISO-8601 rendering of a Unix-milliseconds time, e.g.
/// `2024-05-01T12:34:56.789000+00:00`.
pub fn iso_timestamp(unix_ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(unix_ms as i64)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.6f+00:00")
        .to_string()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as u64
}

fn user_json(id: u64, name: &str, bot: bool) -> Value {
    json!({
        "id": id.to_string(),
        "username": name,
        "discriminator": "0",
        "global_name": if bot { Value::Null } else { Value::from(name) },
        "avatar": null,
        "bot": bot,
        "public_flags": 0,
        "flags": 0,
        "banner": null,
        "accent_color": null,
        "avatar_decoration_data": null,
    })
}

fn member_json(joined_ms: u64) -> Value {
    json!({
        "roles": [],
        "nick": null,
        "avatar": null,
        "premium_since": null,
        "joined_at": iso_timestamp(joined_ms),
        "pending": false,
        "deaf": false,
        "mute": false,
        "flags": 0,
        "communication_disabled_until": null,
    })
}

fn error_body(status: StatusCode) -> Value {
    json!({
        "message": format!("{}: {}", status.as_u16(), status.canonical_reason().unwrap_or("Error")),
        "code": 0,
    })
}

fn form_error(field: &str, code: &str, message: &str) -> Value {
    json!({
        "message": "Invalid Form Body",
        "code": 50035,
        "errors": {field: {"_errors": [{"code": code, "message": message}]}},
    })
}

fn redact(mut d: Value) -> Value {
    if let Some(t) = d.get_mut("token") {
        *t = Value::from("<redacted>");
    }
    d
}

fn id_of(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

/// `<@id>` and `<@!id>` mentions in message content.
fn mentioned_ids(content: &str) -> Vec<u64> {
    let mut out = Vec::new();
    let mut rest = content;
    while let Some(i) = rest.find("<@") {
        rest = &rest[i + 2..];
        let digits = rest.strip_prefix('!').unwrap_or(rest);
        let end = digits
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(digits.len());
        if end > 0
            && digits[end..].starts_with('>')
            && let Ok(id) = digits[..end].parse()
            && !out.contains(&id)
        {
            out.push(id);
        }
    }
    out
}

struct Reply {
    status: StatusCode,
    body: Value,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            body,
            headers: Vec::new(),
        }
    }

    fn error(status: StatusCode) -> Self {
        Self::json(status, error_body(status))
    }

    fn rate_limited(retry_after: f64) -> Self {
        Self {
            status: StatusCode::TOO_MANY_REQUESTS,
            body: json!({
                "message": "You are being rate limited.",
                "retry_after": retry_after,
                "global": false,
            }),
            headers: vec![
                ("retry-after", format!("{}", retry_after.ceil() as u64)),
                ("x-ratelimit-scope", "user".to_string()),
            ],
        }
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State_> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn bot_by_token(&self, token: &str) -> Option<&Bot> {
        self.bots.iter().find(|b| b.token == token)
    }

    fn next_snowflake(st: &mut State_) -> u64 {
        let ms = unix_ms().saturating_sub(DISCORD_EPOCH_MS);
        let mut id = ms << 22;
        if id <= st.last_snowflake {
            id = st.last_snowflake + 1;
        }
        st.last_snowflake = id;
        id
    }

    fn to_connections(&self, bot_id: u64, make: impl Fn() -> Outbound) {
        let st = self.lock();
        for s in st.sessions.values().filter(|s| s.bot_id == bot_id) {
            if let Some((_, tx)) = &s.conn {
                let _ = tx.send(make());
            }
        }
    }

    /// Sends a dispatch in a session: next sequence number, kept for RESUME, sent if connected.
    fn dispatch(session: &mut Session, t: &str, d: Value) {
        session.seq += 1;
        let payload = json!({"op": 0, "t": t, "s": session.seq, "d": d});
        session.log.push_back(payload.clone());
        if session.log.len() > SESSION_LOG {
            session.log.pop_front();
        }
        if let Some((_, tx)) = &session.conn {
            let _ = tx.send(Outbound::Payload(payload));
        }
    }

    /// What a session sees of a message: None when its intents exclude it.
    fn view(session: &Session, message: &Value, is_dm: bool) -> Option<Value> {
        let needed = if is_dm {
            intents::DIRECT_MESSAGES
        } else {
            intents::GUILD_MESSAGES
        };
        if session.intents & needed == 0 {
            return None;
        }
        let mut m = message.clone();
        let own = id_of(&m["author"]["id"]) == Some(session.bot_id);
        let mentioned = m["mentions"]
            .as_array()
            .is_some_and(|a| a.iter().any(|u| id_of(&u["id"]) == Some(session.bot_id)));
        if session.intents & intents::MESSAGE_CONTENT == 0 && !is_dm && !own && !mentioned {
            m["content"] = Value::from("");
            m["embeds"] = json!([]);
            m["attachments"] = json!([]);
            m["components"] = json!([]);
        }
        Some(m)
    }

    /// Sends MESSAGE_CREATE for a stored message to the sessions of `bots` (None: all).
    fn broadcast_message(&self, st: &mut State_, message: &Value, bots: Option<&[u64]>) {
        let channel = id_of(&message["channel_id"]).unwrap_or_default();
        let kind = st.channels.get(&channel).copied();
        let mut event = message.clone();
        let is_dm = match kind {
            Some(ChannelKind::Guild(guild)) => {
                event["guild_id"] = Value::from(guild.to_string());
                event["member"] = member_json(DISCORD_EPOCH_MS);
                false
            }
            _ => true,
        };
        for session in st.sessions.values_mut() {
            if bots.is_some_and(|b| !b.contains(&session.bot_id)) {
                continue;
            }
            if let Some(view) = Self::view(session, &event, is_dm) {
                Self::dispatch(session, "MESSAGE_CREATE", view);
            }
        }
    }

    fn user_message(&self, spec: UserMessage) -> String {
        let mut st = self.lock();
        let id = Self::next_snowflake(&mut st);
        let at_ms = (id >> 22) + DISCORD_EPOCH_MS;
        let kind = match spec.guild_id {
            Some(g) => ChannelKind::Guild(g),
            None => ChannelKind::Dm(spec.to_bots.as_ref().and_then(|b| b.first().copied())),
        };
        st.channels.insert(spec.channel_id, kind);
        let author = user_json(spec.author_id, &spec.author_name, spec.author_bot);
        st.users.insert(spec.author_id, author.clone());
        let mentions: Vec<Value> = spec
            .mentions
            .iter()
            .map(|(id, name)| {
                st.users
                    .get(id)
                    .cloned()
                    .unwrap_or_else(|| user_json(*id, name, false))
            })
            .collect();
        let mut message = json!({
            "id": id.to_string(),
            "channel_id": spec.channel_id.to_string(),
            "author": author,
            "content": spec.content,
            "timestamp": iso_timestamp(at_ms),
            "edited_timestamp": null,
            "tts": false,
            "mention_everyone": false,
            "mentions": mentions,
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "components": [],
            "pinned": false,
            "type": 0,
            "flags": 0,
            "nonce": id.to_string(),
        });
        if let Some(reference) = &spec.referenced_message {
            message["type"] = Value::from(19);
            let mut r = json!({
                "type": 0,
                "message_id": reference,
                "channel_id": spec.channel_id.to_string(),
            });
            if let Some(g) = spec.guild_id {
                r["guild_id"] = Value::from(g.to_string());
            }
            message["message_reference"] = r;
            message["referenced_message"] = st.messages.get(reference).cloned().into();
        }
        st.messages.insert(id.to_string(), message.clone());
        self.broadcast_message(&mut st, &message, spec.to_bots.as_deref());
        drop(st);
        self.bump();
        id.to_string()
    }

    fn rate_limit_headers(
        &self,
        st: &mut State_,
        bot: Option<u64>,
        bucket: &str,
    ) -> (u32, Vec<(&'static str, String)>) {
        let now = Instant::now();
        let window = st
            .windows
            .entry((bot, bucket.to_string()))
            .or_insert((now, 0));
        if now.duration_since(window.0) >= RATE_WINDOW {
            *window = (now, 0);
        }
        window.1 += 1;
        let remaining = RATE_LIMIT.saturating_sub(window.1);
        let reset_after = RATE_WINDOW.saturating_sub(now.duration_since(window.0));
        let reset = (unix_ms() as f64 + reset_after.as_millis() as f64) / 1000.0;
        let hash = bucket.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        (
            window.1,
            vec![
                ("x-ratelimit-limit", RATE_LIMIT.to_string()),
                ("x-ratelimit-remaining", remaining.to_string()),
                ("x-ratelimit-reset", format!("{reset:.3}")),
                (
                    "x-ratelimit-reset-after",
                    format!("{:.3}", reset_after.as_secs_f64()),
                ),
                ("x-ratelimit-bucket", format!("{hash:016x}")),
            ],
        )
    }

    fn route(&self, method: &Method, path: &str, bot: Option<&Bot>, body: &Value) -> Reply {
        let Some(rest) = path.strip_prefix("/api/v10/") else {
            return Reply::error(StatusCode::NOT_FOUND);
        };
        let segments: Vec<&str> = rest.trim_end_matches('/').split('/').collect();
        let allowed = |m: Method| {
            if *method == m {
                None
            } else {
                Some(Reply::error(StatusCode::METHOD_NOT_ALLOWED))
            }
        };
        let unauthorized = || Reply::error(StatusCode::UNAUTHORIZED);
        match segments.as_slice() {
            ["gateway"] => allowed(Method::GET)
                .unwrap_or_else(|| Reply::json(StatusCode::OK, json!({"url": self.ws_url}))),
            ["gateway", "bot"] => allowed(Method::GET).unwrap_or_else(|| match bot {
                None => unauthorized(),
                Some(_) => Reply::json(
                    StatusCode::OK,
                    json!({
                        "url": self.ws_url,
                        "shards": 1,
                        "session_start_limit": {
                            "total": 1000, "remaining": 999,
                            "reset_after": 14_400_000, "max_concurrency": 1,
                        },
                    }),
                ),
            }),
            ["users", "@me"] => allowed(Method::GET).unwrap_or_else(|| match bot {
                None => unauthorized(),
                Some(b) => {
                    let mut u = user_json(b.id, &b.name, true);
                    u["verified"] = Value::from(true);
                    u["mfa_enabled"] = Value::from(false);
                    u["email"] = Value::Null;
                    u["locale"] = Value::from("en-US");
                    u["premium_type"] = Value::from(0);
                    Reply::json(StatusCode::OK, u)
                }
            }),
            ["oauth2", "applications", "@me"] => {
                allowed(Method::GET).unwrap_or_else(|| match bot {
                    None => unauthorized(),
                    Some(b) => Reply::json(StatusCode::OK, self.application_json(b)),
                })
            }
            ["channels", channel, "messages"] => {
                allowed(Method::POST).unwrap_or_else(|| match (bot, channel.parse::<u64>()) {
                    (None, _) => unauthorized(),
                    (Some(_), Err(_)) => Reply::json(
                        StatusCode::BAD_REQUEST,
                        form_error(
                            "channel_id",
                            "NUMBER_TYPE_COERCE",
                            "Value is not snowflake.",
                        ),
                    ),
                    (Some(b), Ok(c)) => self.create_message(b, c, body),
                })
            }
            ["channels", channel, "messages", message] => {
                self.message_route(method, bot, channel, message, body)
            }
            ["channels", channel, "typing"] => {
                allowed(Method::POST).unwrap_or_else(|| match (bot, channel.parse::<u64>()) {
                    (None, _) => unauthorized(),
                    (Some(b), Ok(c)) => match self.check_channel(b, c) {
                        Some(e) => e,
                        None => Reply::json(StatusCode::NO_CONTENT, Value::Null),
                    },
                    (Some(_), Err(_)) => Reply::error(StatusCode::NOT_FOUND),
                })
            }
            _ => self
                .interaction_route(method, &segments, bot, body)
                .unwrap_or_else(|| Reply::error(StatusCode::NOT_FOUND)),
        }
    }

    fn application_json(&self, bot: &Bot) -> Value {
        json!({
            "id": bot.id.to_string(),
            "name": bot.name,
            "icon": null,
            "description": "",
            "summary": "",
            "type": null,
            "bot_public": false,
            "bot_require_code_grant": false,
            "verify_key": "0".repeat(64),
            "flags": if self.options.message_content_allowed { 1 << 19 } else { 0 },
            "owner": user_json(1, "owner", false),
            "team": null,
            "bot": user_json(bot.id, &bot.name, true),
            "rpc_origins": [],
            "redirect_uris": [],
            "interactions_endpoint_url": null,
            "role_connections_verification_url": null,
            "approximate_guild_count": 1,
            "approximate_user_install_count": 0,
        })
    }

    /// 404 for a channel the stand-in never saw, 403 for another bot's DM channel.
    fn check_channel(&self, bot: &Bot, channel: u64) -> Option<Reply> {
        match self.lock().channels.get(&channel) {
            None => Some(Reply::json(
                StatusCode::NOT_FOUND,
                json!({"message": "Unknown Channel", "code": 10003}),
            )),
            Some(ChannelKind::Dm(Some(owner))) if *owner != bot.id => Some(Reply::json(
                StatusCode::FORBIDDEN,
                json!({"message": "Missing Access", "code": 50001}),
            )),
            _ => None,
        }
    }

    fn create_message(&self, bot: &Bot, channel: u64, body: &Value) -> Reply {
        if !body.is_object() {
            return Reply::json(
                StatusCode::BAD_REQUEST,
                json!({"message": "The request body contains invalid JSON.", "code": 50109}),
            );
        }
        if let Some(e) = self.check_channel(bot, channel) {
            return e;
        }
        let content = body.get("content").and_then(Value::as_str).unwrap_or("");
        if content.chars().count() > MESSAGE_LIMIT {
            return Reply::json(
                StatusCode::BAD_REQUEST,
                form_error(
                    "content",
                    "BASE_TYPE_MAX_LENGTH",
                    "Must be 2000 or fewer in length.",
                ),
            );
        }
        let non_empty = |k: &str| {
            body.get(k)
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty())
        };
        if content.is_empty()
            && !non_empty("embeds")
            && !non_empty("sticker_ids")
            && !non_empty("components")
            && body.get("poll").is_none_or(Value::is_null)
        {
            return Reply::json(
                StatusCode::BAD_REQUEST,
                json!({"message": "Cannot send an empty message", "code": 50006}),
            );
        }
        let allowed = body.get("allowed_mentions").filter(|v| v.is_object());
        if let Some(am) = allowed {
            let parse: Vec<&str> = am["parse"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            for (kind, list) in [("users", "users"), ("roles", "roles")] {
                let listed = am[list].as_array().is_some_and(|a| !a.is_empty());
                if parse.contains(&kind) && listed {
                    return Reply::json(
                        StatusCode::BAD_REQUEST,
                        form_error(
                            "allowed_mentions",
                            "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                            &format!(
                                "parse:[\"{kind}\"] and {kind}: [ids...] are mutually exclusive."
                            ),
                        ),
                    );
                }
                if am[list].as_array().is_some_and(|a| a.len() > 100) {
                    return Reply::json(
                        StatusCode::BAD_REQUEST,
                        form_error(
                            "allowed_mentions",
                            "BASE_TYPE_MAX_LENGTH",
                            "Must be 100 or fewer in length.",
                        ),
                    );
                }
            }
        }

        let mut st = self.lock();
        let reference = body.get("message_reference").filter(|v| v.is_object());
        let mut referenced = None;
        if let Some(r) = reference {
            let target = r.get("message_id").and_then(id_of).map(|i| i.to_string());
            let found = target
                .as_ref()
                .and_then(|t| st.messages.get(t))
                // Replies (reference type 0) must stay in the message's channel.
                .filter(|m| id_of(&m["channel_id"]) == Some(channel));
            let fail = r
                .get("fail_if_not_exists")
                .and_then(Value::as_bool)
                .unwrap_or(true);
            match found {
                Some(m) => referenced = Some(m.clone()),
                None if fail => {
                    return Reply::json(
                        StatusCode::BAD_REQUEST,
                        form_error(
                            "message_reference",
                            "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                            "Unknown message",
                        ),
                    );
                }
                None => {}
            }
        }

        // Mentions: known users named in the content, as far as allowed_mentions lets them.
        let users_allowed = |id: u64| match allowed {
            None => true,
            Some(am) => {
                let parse_users = am["parse"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|p| p == "users"));
                let listed = am["users"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|u| id_of(u) == Some(id)));
                parse_users || listed
            }
        };
        let mut mentions: Vec<Value> = mentioned_ids(content)
            .into_iter()
            .filter(|id| users_allowed(*id))
            .filter_map(|id| st.users.get(&id).cloned())
            .collect();
        if let Some(m) = &referenced {
            let ping = allowed.is_none_or(|am| am["replied_user"].as_bool().unwrap_or(false));
            let author = &m["author"];
            if ping && !mentions.iter().any(|u| u["id"] == author["id"]) {
                mentions.push(author.clone());
            }
        }

        // Discord: with `enforce_nonce`, a nonce this author used in the last minutes returns
        // that message instead of creating another.
        let enforced_nonce = body
            .get("enforce_nonce")
            .and_then(Value::as_bool)
            .unwrap_or(false)
            .then(|| body.get("nonce").filter(|n| !n.is_null()))
            .flatten()
            .map(|n| n.as_str().map_or_else(|| n.to_string(), str::to_string));
        if let Some(nonce) = &enforced_nonce
            && let Some(existing) = st
                .nonces
                .get(&(bot.id, nonce.clone()))
                .and_then(|id| st.messages.get(id))
        {
            return Reply::json(StatusCode::OK, existing.clone());
        }
        let id = Self::next_snowflake(&mut st);
        if let Some(nonce) = enforced_nonce {
            st.nonces.insert((bot.id, nonce), id.to_string());
        }
        let at_ms = (id >> 22) + DISCORD_EPOCH_MS;
        let mut message = json!({
            "id": id.to_string(),
            "channel_id": channel.to_string(),
            "author": user_json(bot.id, &bot.name, true),
            "content": content,
            "timestamp": iso_timestamp(at_ms),
            "edited_timestamp": null,
            "tts": body.get("tts").and_then(Value::as_bool).unwrap_or(false),
            "mention_everyone": false,
            "mentions": mentions,
            "mention_roles": [],
            "attachments": [],
            "embeds": body.get("embeds").cloned().unwrap_or_else(|| json!([])),
            "components": [],
            "pinned": false,
            "type": if referenced.is_some() { 19 } else { 0 },
            "flags": body.get("flags").and_then(Value::as_u64).unwrap_or(0),
        });
        if let Some(nonce) = body.get("nonce").filter(|n| !n.is_null()) {
            message["nonce"] = nonce.clone();
        }
        if let Some(m) = referenced {
            let mut r = json!({
                "type": 0,
                "message_id": m["id"],
                "channel_id": m["channel_id"],
            });
            if let Some(ChannelKind::Guild(g)) = st.channels.get(&channel) {
                r["guild_id"] = Value::from(g.to_string());
            }
            message["message_reference"] = r;
            message["referenced_message"] = m;
        }
        st.messages.insert(id.to_string(), message.clone());
        if self.options.echo_bot_messages {
            let only = match st.channels.get(&channel) {
                Some(ChannelKind::Guild(_)) => None,
                _ => Some(vec![bot.id]),
            };
            self.broadcast_message(&mut st, &message, only.as_deref());
        }
        Reply::json(StatusCode::OK, message)
    }
}

/// Every REST request lands here: authenticate, route, record, add rate-limit headers.
async fn rest(State(inner): State<Arc<Inner>>, req: Request) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let auth = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = axum::body::to_bytes(req.into_body(), 16 << 20)
        .await
        .unwrap_or_default();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::from(String::from_utf8_lossy(&bytes).into_owned()))
    };
    let bot = auth
        .as_deref()
        .and_then(|a| a.strip_prefix("Bot "))
        .and_then(|t| inner.bot_by_token(t.trim()))
        .cloned();
    let bot_id = bot.as_ref().map(|b| b.id);
    let bucket = {
        // Major parameter (channel) stays in the bucket key, like Discord's buckets.
        let segments: Vec<&str> = path.split('/').collect();
        match segments.as_slice() {
            ["", "api", "v10", "channels", c, kind, ..] => format!("{method} channels/{c}/{kind}"),
            _ => format!("{method} {path}"),
        }
    };

    let is_message_send = method == Method::POST
        && path.starts_with("/api/v10/channels/")
        && path.ends_with("/messages");
    let (reply, headers) = {
        let mut st = inner.lock();
        let (count, mut headers) = inner.rate_limit_headers(&mut st, bot_id, &bucket);
        let fault = if is_message_send && bot.is_some() {
            st.faults.pop_front()
        } else {
            None
        };
        drop(st);
        let reply = if let Some((status, retry_after, created)) = fault {
            if created {
                let _ = inner.route(&method, &path, bot.as_ref(), &body);
            }
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if status == StatusCode::TOO_MANY_REQUESTS {
                Reply::rate_limited(retry_after)
            } else {
                Reply::error(status)
            }
        } else if inner.options.enforce_rate_limits && count > RATE_LIMIT && bot.is_some() {
            let after: f64 = headers
                .iter()
                .find(|(k, _)| *k == "x-ratelimit-reset-after")
                .and_then(|(_, v)| v.parse().ok())
                .unwrap_or(1.0);
            Reply::rate_limited(after)
        } else {
            inner.route(&method, &path, bot.as_ref(), &body)
        };
        if reply.status == StatusCode::TOO_MANY_REQUESTS {
            for (k, v) in headers.iter_mut() {
                if *k == "x-ratelimit-remaining" {
                    *v = "0".to_string();
                }
            }
        }
        (reply, headers)
    };

    inner.lock().requests.push(Recorded {
        method: method.to_string(),
        path,
        bot_id,
        body,
        status: reply.status.as_u16(),
        response: reply.body.clone(),
        at: Instant::now(),
    });
    inner.bump();

    let mut map = HeaderMap::new();
    for (k, v) in headers.into_iter().chain(reply.headers) {
        if let Ok(v) = HeaderValue::from_str(&v) {
            map.insert(k, v);
        }
    }
    if reply.status == StatusCode::NO_CONTENT {
        return (reply.status, map).into_response();
    }
    map.insert("content-type", HeaderValue::from_static("application/json"));
    (reply.status, map, Body::from(reply.body.to_string())).into_response()
}

async fn ws_upgrade(
    State(inner): State<Arc<Inner>>,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let version_ok = query.as_deref().is_none_or(|q| {
        q.split('&')
            .filter_map(|kv| kv.strip_prefix("v="))
            .all(|v| v == API_VERSION.to_string())
    });
    ws.max_message_size(4096 * 1024)
        .on_upgrade(move |socket| connection(inner, socket, version_ok))
}

/// Per-connection state of the gateway handler.
struct Conn {
    id: u64,
    tx: mpsc::UnboundedSender<Outbound>,
    compress: bool,
    bot_id: Option<u64>,
    session: Option<String>,
}

async fn connection(inner: Arc<Inner>, mut socket: WebSocket, version_ok: bool) {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut conn = Conn {
        id: inner.next_conn.fetch_add(1, Ordering::Relaxed),
        tx,
        compress: false,
        bot_id: None,
        session: None,
    };
    let mut shutdown = inner.shutdown.subscribe();
    if version_ok {
        let hello = json!({
            "op": 10, "s": null, "t": null,
            "d": {"heartbeat_interval": inner.options.heartbeat_interval_ms},
        });
        let _ = conn.tx.send(Outbound::Payload(hello));
    } else {
        let _ = conn.tx.send(Outbound::Close(4012, "Invalid API version."));
    }
    loop {
        tokio::select! {
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Text(text))) => handle_op(&inner, &mut conn, text.as_str()),
                Some(Ok(WsMessage::Binary(_))) => {
                    let _ = conn.tx.send(Outbound::Close(4002, "Error while decoding payload."));
                }
                Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => {}
                Some(Ok(WsMessage::Close(_)) | Err(_)) | None => break,
            },
            out = rx.recv() => match out {
                Some(Outbound::Payload(payload)) => {
                    if send_payload(&inner, &conn, &mut socket, payload).await.is_err() {
                        break;
                    }
                }
                Some(Outbound::Close(code, reason)) => {
                    let frame = CloseFrame { code, reason: reason.into() };
                    let _ = socket.send(WsMessage::Close(Some(frame))).await;
                    // Let the client read the close frame before the TCP connection goes.
                    let _ = tokio::time::timeout(Duration::from_secs(2), async {
                        while let Some(Ok(m)) = socket.recv().await {
                            if matches!(m, WsMessage::Close(_)) { break; }
                        }
                    }).await;
                    break;
                }
                Some(Outbound::Abort) | None => break,
            },
            () = stopped(&mut shutdown) => break,
        }
    }
    // The session stays resumable; only this connection is gone.
    if let Some(id) = &conn.session {
        let mut st = inner.lock();
        if let Some(s) = st.sessions.get_mut(id)
            && s.conn.as_ref().is_some_and(|(c, _)| *c == conn.id)
        {
            s.conn = None;
        }
    }
    inner.bump();
}

/// Resolves once the stand-in is shutting down.
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}

async fn send_payload(
    inner: &Inner,
    conn: &Conn,
    socket: &mut WebSocket,
    payload: Value,
) -> Result<(), axum::Error> {
    let text = payload.to_string();
    let binary = conn.compress && text.len() >= inner.options.compress_threshold;
    let (message, wire_len) = if binary {
        let mut z = ZlibEncoder::new(Vec::new(), Compression::default());
        let _ = z.write_all(text.as_bytes());
        let bytes = z.finish().unwrap_or_default();
        let len = bytes.len();
        (WsMessage::Binary(Bytes::from(bytes)), len)
    } else {
        (WsMessage::Text(text.clone().into()), text.len())
    };
    inner.lock().frames.push(GatewayFrame {
        bot_id: conn.bot_id,
        op: payload["op"].as_u64().unwrap_or_default(),
        t: payload["t"].as_str().map(str::to_string),
        s: payload["s"].as_u64(),
        binary,
        json_len: text.len(),
        wire_len,
        payload,
    });
    socket.send(message).await
}

fn handle_op(inner: &Inner, conn: &mut Conn, text: &str) {
    let Ok(payload) = serde_json::from_str::<Value>(text) else {
        let _ = conn
            .tx
            .send(Outbound::Close(4002, "Error while decoding payload."));
        return;
    };
    let op = payload["op"].as_u64();
    let d = payload.get("d").cloned().unwrap_or(Value::Null);
    let bot_from_token = d
        .get("token")
        .and_then(Value::as_str)
        .map(|t| t.strip_prefix("Bot ").unwrap_or(t).trim().to_string())
        .and_then(|t| inner.bot_by_token(&t).cloned());
    inner.lock().received.push(GatewayOp {
        bot_id: conn.bot_id.or(bot_from_token.as_ref().map(|b| b.id)),
        op: op.unwrap_or(u64::MAX),
        d: redact(d.clone()),
        at: Instant::now(),
    });
    inner.bump();
    let close = |code, reason| {
        let _ = conn.tx.send(Outbound::Close(code, reason));
    };
    match op {
        // Heartbeat.
        Some(1) => {
            let _ = conn.tx.send(Outbound::Payload(json!({"op": 11})));
        }
        // Identify.
        Some(2) => {
            if conn.session.is_some() {
                return close(4005, "Already authenticated.");
            }
            let Some(bot) = bot_from_token else {
                return close(4004, "Authentication failed.");
            };
            let Some(intents) = d.get("intents").and_then(Value::as_u64) else {
                return close(4013, "Invalid intent(s).");
            };
            if intents & !intents::ALL != 0 {
                return close(4013, "Invalid intent(s).");
            }
            if intents & intents::MESSAGE_CONTENT != 0 && !inner.options.message_content_allowed {
                return close(4014, "Disallowed intent(s).");
            }
            let shard = d.get("shard").cloned().unwrap_or_else(|| json!([0, 1]));
            let (shard_id, shards) = (shard[0].as_u64(), shard[1].as_u64());
            if !matches!((shard_id, shards), (Some(i), Some(n)) if i < n) {
                return close(4010, "Invalid shard.");
            }
            conn.compress = d.get("compress").and_then(Value::as_bool).unwrap_or(false);
            conn.bot_id = Some(bot.id);
            let session_id = uuid::Uuid::new_v4().simple().to_string();
            conn.session = Some(session_id.clone());
            let mut session = Session {
                bot_id: bot.id,
                intents,
                shard: shard.clone(),
                seq: 0,
                log: VecDeque::new(),
                conn: Some((conn.id, conn.tx.clone())),
            };
            let mut user = user_json(bot.id, &bot.name, true);
            user["verified"] = Value::from(true);
            user["mfa_enabled"] = Value::from(false);
            user["email"] = Value::Null;
            let app_flags: u64 = if inner.options.message_content_allowed {
                1 << 19
            } else {
                0
            };
            let ready = json!({
                "v": API_VERSION,
                "user": user,
                "guilds": [],
                "session_id": session_id,
                "resume_gateway_url": inner.ws_url,
                "session_type": "normal",
                "shard": session.shard,
                "application": {"id": bot.id.to_string(), "flags": app_flags},
                "private_channels": [],
                "presences": [],
                "relationships": [],
                "guild_join_requests": [],
                "geo_ordered_rtc_regions": [],
                "user_settings": {},
                "auth": {},
                "_trace": ["[\"whisperfleet-discord-standin\"]"],
            });
            Inner::dispatch(&mut session, "READY", ready);
            inner.lock().sessions.insert(session_id, session);
            inner.bump();
        }
        // Resume.
        Some(6) => {
            let Some(bot) = bot_from_token else {
                return close(4004, "Authentication failed.");
            };
            let session_id = d["session_id"].as_str().unwrap_or_default().to_string();
            let seq = d["seq"].as_u64().unwrap_or(0);
            let mut st = inner.lock();
            let resumable = st.sessions.get(&session_id).is_some_and(|s| {
                let oldest = s
                    .log
                    .front()
                    .and_then(|p| p["s"].as_u64())
                    .unwrap_or(s.seq + 1);
                s.bot_id == bot.id && seq <= s.seq && seq + 1 >= oldest
            });
            if !resumable {
                drop(st);
                let _ = conn
                    .tx
                    .send(Outbound::Payload(json!({"op": 9, "d": false})));
                return;
            }
            let session = st.sessions.get_mut(&session_id).expect("checked above");
            if let Some((_, old)) = session.conn.take() {
                let _ = old.send(Outbound::Abort);
            }
            conn.bot_id = Some(bot.id);
            conn.session = Some(session_id.clone());
            session.conn = Some((conn.id, conn.tx.clone()));
            for payload in session.log.iter().filter(|p| p["s"].as_u64() > Some(seq)) {
                let _ = conn.tx.send(Outbound::Payload(payload.clone()));
            }
            Inner::dispatch(session, "RESUMED", json!({"_trace": []}));
            drop(st);
            inner.bump();
        }
        // Presence update, voice state, request guild members, soundboard: accepted, ignored.
        Some(3 | 4 | 8 | 31) if conn.session.is_some() => {}
        Some(3 | 4 | 8 | 31) => close(4003, "Not authenticated."),
        _ => close(4001, "Unknown opcode."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_mentions() {
        assert_eq!(
            mentioned_ids("hi <@12> and <@!34>, not <@x> <@56"),
            vec![12, 34]
        );
    }

    #[test]
    fn snowflakes_carry_their_time() {
        let mut st = State_::default();
        let before = unix_ms();
        let a = Inner::next_snowflake(&mut st);
        let b = Inner::next_snowflake(&mut st);
        assert!(b > a);
        let t = snowflake_time(a)
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(t >= before && t <= unix_ms());
        assert_eq!(
            iso_timestamp(1_420_070_400_000),
            "2015-01-01T00:00:00.000000+00:00"
        );
    }
}
