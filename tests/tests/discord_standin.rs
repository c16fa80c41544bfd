//! The Discord stand-in (`whisperfleet_testkit::discord`) against the real serenity 0.12.5
//! client, built exactly as the gateway's Discord adapter builds it: proxy to the stand-in,
//! rate limiter disabled. Needs no external service.

use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;
use serenity::all::{
    ChannelId, ClientBuilder, Context, CreateAllowedMentions, CreateMessage, EventHandler,
    GatewayIntents, Message,
};
use serenity::gateway::GatewayError;
use serenity::http::{Http, HttpBuilder, HttpError};
use tokio::sync::mpsc;
use whisperfleet_testkit::discord::{DiscordStandIn, StandInOptions, UserMessage, snowflake_time};

const TOKEN: &str = "nora-token";
const BOT: u64 = 1001;
const ALICE: u64 = 42;
const GUILD: u64 = 500;
const CHANNEL: u64 = 600;
const DM: u64 = 700;
const WAIT: Duration = Duration::from_secs(5);

fn intents() -> GatewayIntents {
    GatewayIntents::GUILD_MESSAGES
        | GatewayIntents::DIRECT_MESSAGES
        | GatewayIntents::MESSAGE_CONTENT
}

fn http(token: &str, base: &str) -> Http {
    HttpBuilder::new(token)
        .proxy(base)
        .ratelimiter_disabled(true)
        .build()
}

/// What the adapter does: typing, then a reply that references the message and may ping only
/// its author. Every received message (the bot's own echoes too) goes to the test.
struct Handler(mpsc::UnboundedSender<Message>);

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn message(&self, ctx: Context, msg: Message) {
        let _ = self.0.send(msg.clone());
        if msg.author.bot {
            return;
        }
        msg.channel_id.broadcast_typing(&ctx.http).await.unwrap();
        let reply = CreateMessage::new()
            .content(format!("got {} chars", msg.content.chars().count()))
            .reference_message(&msg)
            .allowed_mentions(
                CreateAllowedMentions::new()
                    .users([msg.author.id])
                    .replied_user(true),
            );
        msg.channel_id.send_message(&ctx.http, reply).await.unwrap();
    }
}

async fn next(rx: &mut mpsc::UnboundedReceiver<Message>, id: &str) -> Message {
    tokio::time::timeout(WAIT, async {
        loop {
            let m = rx.recv().await.expect("client stopped");
            if m.id.to_string() == id {
                return m;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("serenity never delivered message {id}"))
}

async fn error_of(result: serenity::Result<Message>) -> serenity::http::ErrorResponse {
    match result {
        Err(serenity::Error::Http(HttpError::UnsuccessfulRequest(e))) => e,
        other => panic!("expected an unsuccessful request, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serenity_runs_against_the_standin() {
    whisperfleet_shared::telemetry::install_crypto_provider();
    let options = StandInOptions {
        heartbeat_interval_ms: 500,
        ..StandInOptions::default()
    };
    let discord = DiscordStandIn::start_with(&[(TOKEN, BOT, "Nora")], options)
        .await
        .unwrap();
    let base = discord.base_url();

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut client = ClientBuilder::new_with_http(http(TOKEN, &base), intents())
        .event_handler(Handler(tx))
        .await
        .unwrap();
    let shards = client.shard_manager.clone();
    let running = tokio::spawn(async move { client.start().await });

    let sessions = discord.wait_ready(1, WAIT).await.unwrap();
    assert_eq!(sessions[0].bot_id, BOT);
    let identify = discord
        .gateway_received()
        .into_iter()
        .find(|o| o.op == 2)
        .unwrap();
    assert_eq!(identify.d["compress"], true);
    assert_eq!(identify.d["token"], "<redacted>");
    assert_eq!(identify.d["intents"], intents().bits());
    assert!(
        discord
            .requests()
            .iter()
            .any(|r| r.path == "/api/v10/gateway" && r.status == 200),
        "serenity asks GET /api/v10/gateway for the WebSocket URL"
    );

    // A guild message that mentions the bot.
    let id = discord.user_message(
        UserMessage::guild(GUILD, CHANNEL, ALICE, "alice", "hello there").mentioning(BOT, "Nora"),
    );
    let got = next(&mut rx, &id).await;
    assert_eq!(got.content, format!("<@{BOT}> hello there"));
    assert_eq!(got.guild_id.map(|g| g.get()), Some(GUILD));
    assert!(got.member.is_some());
    assert_eq!(got.author.id.get(), ALICE);
    assert!(got.mentions.iter().any(|u| u.id.get() == BOT));
    let sent_at = snowflake_time(id.parse().unwrap())
        .duration_since(UNIX_EPOCH)
        .unwrap();
    assert_eq!(got.timestamp.unix_timestamp(), sent_at.as_secs() as i64);
    assert!(
        got.id.created_at() == got.timestamp,
        "the id carries the timestamp"
    );

    let replies = discord.wait_for_messages(CHANNEL, 1, WAIT).await.unwrap();
    let reply = &replies[0];
    assert_eq!(reply.bot_id, Some(BOT));
    assert_eq!(reply.content(), Some("got 19 chars"));
    assert_eq!(reply.body["message_reference"]["message_id"], id.as_str());
    assert_eq!(
        reply.body["allowed_mentions"],
        json!({"parse": [], "users": [ALICE.to_string()], "roles": [], "replied_user": true})
    );
    assert_eq!(reply.response["type"], 19);
    assert_eq!(reply.response["referenced_message"]["id"], id.as_str());
    let typing = discord.typing(CHANNEL);
    assert_eq!(typing.len(), 1);
    assert!(typing[0].at <= reply.at, "typing comes before the reply");
    // Discord echoes the bot's own message back over the gateway.
    let echo = next(&mut rx, reply.message_id().unwrap()).await;
    assert!(echo.author.bot);
    assert_eq!(echo.referenced_message.unwrap().id.to_string(), id);

    // A DM reaches only its bot, without guild data.
    let dm = discord.user_message(UserMessage::dm(DM, ALICE, "alice", "psst", BOT));
    let got = next(&mut rx, &dm).await;
    assert_eq!(got.guild_id, None);
    assert!(got.member.is_none());
    let replies = discord.wait_for_messages(DM, 1, WAIT).await.unwrap();
    assert_eq!(
        replies[0].body["message_reference"]["message_id"],
        dm.as_str()
    );
    assert_eq!(discord.typing(DM).len(), 1);

    // A 5 KB message travels as one zlib binary frame and arrives intact.
    let big: String = (0..5000)
        .map(|i| char::from(b'a' + (i * 7 % 26) as u8))
        .collect();
    let big_id = discord.user_message(UserMessage::guild(GUILD, CHANNEL, ALICE, "alice", &big));
    let got = next(&mut rx, &big_id).await;
    assert_eq!(got.content, big);
    let frame = discord
        .gateway_frames()
        .into_iter()
        .find(|f| {
            f.t.as_deref() == Some("MESSAGE_CREATE") && f.payload["d"]["id"] == big_id.as_str()
        })
        .unwrap();
    assert!(
        frame.binary,
        "large payloads are zlib-compressed binary frames"
    );
    assert!(frame.wire_len < frame.json_len);
    discord.wait_for_messages(CHANNEL, 2, WAIT).await.unwrap();

    // A reply to the bot's message carries the bot's message as referenced_message.
    let bot_message = reply.message_id().unwrap().to_string();
    let answer = discord.user_message(
        UserMessage::guild(GUILD, CHANNEL, ALICE, "alice", "and then?").replying_to(&bot_message),
    );
    let got = next(&mut rx, &answer).await;
    let referenced = got.referenced_message.expect("referenced message");
    assert_eq!(referenced.id.to_string(), bot_message);
    assert_eq!(referenced.author.id.get(), BOT);
    assert_eq!(
        got.message_reference
            .unwrap()
            .message_id
            .unwrap()
            .to_string(),
        bot_message
    );

    // Heartbeats are acknowledged (small payloads stay text).
    discord
        .wait_until(WAIT, || {
            discord.gateway_frames().into_iter().find(|f| f.op == 11)
        })
        .await
        .map(|ack| assert!(!ack.binary))
        .unwrap();

    // Op 7 RECONNECT: serenity resumes the session and keeps receiving.
    let before = discord.connected_sessions()[0].clone();
    discord.request_reconnect(BOT);
    discord
        .wait_until(WAIT, || {
            discord
                .gateway_frames()
                .into_iter()
                .find(|f| f.t.as_deref() == Some("RESUMED"))
        })
        .await
        .unwrap();
    let after = discord.wait_ready(1, WAIT).await.unwrap();
    assert_eq!(after[0].session_id, before.session_id);
    let resumed = discord.user_message(UserMessage::guild(
        GUILD,
        CHANNEL,
        ALICE,
        "alice",
        "still there?",
    ));
    next(&mut rx, &resumed).await;
    assert!(discord.gateway_received().iter().any(|o| o.op == 6));
    discord.wait_for_messages(CHANNEL, 4, WAIT).await.unwrap();

    // The connection dies without a close frame; what was dispatched meanwhile is replayed
    // after RESUME.
    discord.drop_connection(BOT);
    discord
        .wait_until(WAIT, || {
            discord.connected_sessions().is_empty().then_some(())
        })
        .await
        .unwrap();
    let missed = discord.user_message(UserMessage::guild(
        GUILD,
        CHANNEL,
        ALICE,
        "alice",
        "while you were away",
    ));
    next(&mut rx, &missed).await;
    assert_eq!(
        discord.connected_sessions()[0].session_id,
        before.session_id
    );
    discord.wait_for_messages(CHANNEL, 5, WAIT).await.unwrap();

    // INVALID_SESSION (not resumable): serenity identifies again, in a new session.
    discord.invalidate_session(BOT, false);
    let fresh = discord
        .wait_until(Duration::from_secs(8), || {
            discord
                .connected_sessions()
                .into_iter()
                .find(|s| s.session_id != before.session_id)
        })
        .await
        .unwrap();
    assert_eq!(fresh.seq, 1, "READY is the first dispatch of a session");

    // Faults the adapter must handle, as serenity reports them.
    let http = http(TOKEN, &base);
    discord.fail_next_messages(1, 429);
    let e = error_of(ChannelId::new(CHANNEL).say(&http, "x").await).await;
    assert_eq!(e.status_code.as_u16(), 429);
    // Discord's 429 body has no `code`, which serenity's error type requires: serenity
    // reports code -1 and keeps neither the body's retry_after nor the Retry-After header.
    assert_eq!(e.error.code, -1);
    discord.fail_next_messages(1, 500);
    let e = error_of(ChannelId::new(CHANNEL).say(&http, "x").await).await;
    assert_eq!(e.status_code.as_u16(), 500);
    ChannelId::new(CHANNEL).say(&http, "x").await.unwrap();
    let too_long = json!({"content": "x".repeat(2001)});
    let e = error_of(
        http.send_message(ChannelId::new(CHANNEL), vec![], &too_long)
            .await,
    )
    .await;
    assert_eq!(e.status_code.as_u16(), 400);
    assert_eq!(e.error.code, 50035);
    assert_eq!(e.error.errors[0].path, "content");
    assert_eq!(e.error.errors[0].code, "BASE_TYPE_MAX_LENGTH");

    // Rate-limit headers, and Retry-After on 429, as seen on the wire.
    discord.fail_next_messages(1, 429);
    let raw = reqwest::Client::new();
    let url = format!("{base}/api/v10/channels/{CHANNEL}/messages");
    let r = raw
        .post(&url)
        .header("authorization", format!("Bot {TOKEN}"))
        .json(&json!({"content": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert_eq!(r.headers()["retry-after"], "1");
    for h in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "x-ratelimit-reset-after",
        "x-ratelimit-bucket",
    ] {
        assert!(r.headers().contains_key(h), "{h} missing");
    }
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["retry_after"], 0.2);
    assert_eq!(body["global"], false);
    let r = raw
        .get(format!("{base}/api/v10/nothing/here"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert!(r.headers().contains_key("x-ratelimit-bucket"));
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["code"], 0);

    shards.shutdown_all().await;
    let _ = tokio::time::timeout(WAIT, running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_tokens_are_rejected() {
    whisperfleet_shared::telemetry::install_crypto_provider();
    let discord = DiscordStandIn::start(&[(TOKEN, BOT, "Nora")])
        .await
        .unwrap();
    let base = discord.base_url();

    // REST: 401 with Discord's body.
    let http = http("not-a-token", &base);
    discord.user_message(UserMessage::guild(GUILD, CHANNEL, ALICE, "alice", "hi"));
    let e = error_of(ChannelId::new(CHANNEL).say(&http, "x").await).await;
    assert_eq!(e.status_code.as_u16(), 401);
    assert_eq!(e.error.message, "401: Unauthorized");
    assert_eq!(e.error.code, 0);
    assert_eq!(discord.requests().last().unwrap().bot_id, None);

    // Gateway: IDENTIFY is closed with 4004 and serenity gives up.
    let (tx, _rx) = mpsc::unbounded_channel();
    let mut client = ClientBuilder::new_with_http(http, intents())
        .event_handler(Handler(tx))
        .await
        .unwrap();
    let result = tokio::time::timeout(WAIT, client.start())
        .await
        .expect("serenity keeps running with a bad token");
    assert!(
        matches!(
            result,
            Err(serenity::Error::Gateway(
                GatewayError::InvalidAuthentication
            ))
        ),
        "{result:?}"
    );
    assert!(discord.connected_sessions().is_empty());
}

/// Interactions as Discord answers them: commands are registered by their own application
/// only, an unregistered command is never sent, the first callback is taken (204) and a
/// second refused (40060), a callback after the 3-second window is refused (10062), and the
/// original answer can be edited only once there is one (10015 before).
#[tokio::test]
async fn interactions_are_answered_once_within_the_window() {
    use whisperfleet_testkit::discord::{CALLBACK_WINDOW, Invoker};
    let _ = rustls::crypto::ring::default_provider().install_default();
    let standin = DiscordStandIn::start(&[(TOKEN, BOT, "Nora")])
        .await
        .unwrap();
    let base = standin.base_url();
    let client = reqwest::Client::new();
    let api = |path: &str| format!("{base}/api/v10{path}");
    let alice = Invoker {
        user_id: ALICE,
        user_name: "alice".into(),
        channel_id: CHANNEL,
        guild_id: Some(GUILD),
    };
    assert!(standin.slash_command(BOT, "memories", &alice).is_err());

    let put = |app: u64, body: serde_json::Value| {
        client
            .put(api(&format!("/applications/{app}/commands")))
            .header("authorization", format!("Bot {TOKEN}"))
            .json(&body)
            .send()
    };
    let r = put(BOT + 1, json!([])).await.unwrap();
    assert_eq!(r.status(), 403, "another application's commands");
    let r = put(BOT, json!([{"name": "Memories!", "description": "x"}]))
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "names are lower-case words");
    let r = put(
        BOT,
        json!([{"name": "memories", "description": "What I remember"}]),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    let commands: serde_json::Value = r.json().await.unwrap();
    assert!(commands[0]["id"].as_str().is_some(), "{commands}");
    assert_eq!(standin.command_registrations(BOT), 1);

    let sent = standin.slash_command(BOT, "memories", &alice).unwrap();
    let original = api(&format!(
        "/webhooks/{BOT}/{}/messages/@original",
        sent.token
    ));
    let r = client
        .patch(&original)
        .json(&json!({"content": "too early"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "no original answer yet");
    let callback = api(&format!(
        "/interactions/{}/{}/callback",
        sent.id, sent.token
    ));
    let defer = json!({"type": 5, "data": {"flags": 64}});
    let r = client.post(&callback).json(&defer).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = client.post(&callback).json(&defer).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], 40060, "{body}");
    let r = client
        .patch(&original)
        .json(&json!({"content": "Here is what I remember."}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let log = standin.interaction(&sent.token).unwrap();
    assert_eq!(log.callbacks.len(), 2);
    assert_eq!((log.callbacks[0].kind, log.callbacks[0].flags), (5, 64));
    let message = log.original.unwrap();
    assert_eq!(message["content"], "Here is what I remember.");
    assert_eq!(message["flags"], 64, "ephemeral, no longer loading");

    let late = standin.slash_command(BOT, "memories", &alice).unwrap();
    tokio::time::sleep(CALLBACK_WINDOW + Duration::from_millis(200)).await;
    let r = client
        .post(api(&format!(
            "/interactions/{}/{}/callback",
            late.id, late.token
        )))
        .json(&json!({"type": 4, "data": {"content": "late"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["code"], 10062, "{body}");
}
