//! The Discord adapter end to end: the real `gateway` binary (serenity inside) talks to the
//! Discord stand-in ([`whisperfleet_testkit::discord`]) over REST and the gateway WebSocket,
//! publishes turns to the real RabbitMQ (a private vhost per test), and real `worker`
//! binaries answer them through an in-process mock LLM that records every prompt.
//!
//! Each test has its own fleet (vhost, database, Redis prefix) and its own stand-in. What
//! the bot sent is read from the stand-in's request log (typing before the message, replies,
//! chunks, `allowed_mentions`); what reached the LLM from the mock's record; what the worker
//! and the gateway measured from the `metrics` queue of the test's vhost, read with lapin's
//! `basic_get` (no metrics-writer runs here, so the events stay queued).
//!
//! Broker outages go through the harness's TCP proxy in front of the shared RabbitMQ
//! ([`TcpProxy`]; its `FaultProxy` is an HTTP proxy for InfluxDB writes), so the shared
//! broker is never stopped. `discord_overhead_through_the_standin` is a measurement:
//! it prints the adapter's end-to-end latency and overhead and asserts only their sanity.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use whisperfleet_gateway::discord::text::{BROKER_DOWN_NOTICE, DISCORD_MESSAGE_LIMIT};
use whisperfleet_shared::ports::broker::Broker;
use whisperfleet_shared::topology;
use whisperfleet_testkit::discord::{DiscordStandIn, Recorded, UserMessage};
use whisperfleet_testkit::mock_llm::{MockLlmOptions, MockReply};
use whisperfleet_testkit::*;

const VELLUM_TOKEN: &str = "vellum-bot-token";
const VELLUM: u64 = 9_001;
const WICK_TOKEN: &str = "old-wick-bot-token";
const WICK: u64 = 9_002;

const ALICE: u64 = 42;
const BOB: u64 = 43;
const HELPER_BOT: u64 = 77;
const GUILD: u64 = 500;
const CHANNEL: u64 = 600;
const DM: u64 = 700;

/// Generous bound for one answered turn on a loaded 2-core machine (debug builds).
const TURN_WAIT: Duration = Duration::from_secs(20);
/// How long "nothing else happens" is watched.
const SETTLE: Duration = Duration::from_millis(1_000);

/// One test's fleet, stand-in and running gateway (+ one worker).
struct Rig {
    s: Setup,
    discord: DiscordStandIn,
}

struct RigOptions<'a> {
    llm: MockLlmOptions,
    /// Both character bots (Vellum and Old Wick) instead of Vellum alone.
    two_bots: bool,
    gateway_env: Vec<(&'a str, String)>,
    /// `host:port` the gateway reaches RabbitMQ at, when not directly (a proxy).
    amqp_via: Option<SocketAddr>,
}

impl Default for RigOptions<'_> {
    fn default() -> Self {
        Self {
            llm: mock_latency(0),
            two_bots: false,
            gateway_env: Vec::new(),
            amqp_via: None,
        }
    }
}

async fn rig(test: &str, options: RigOptions<'_>) -> Rig {
    let mut bots = vec![(VELLUM_TOKEN, VELLUM, "Vellum")];
    let mut list = format!("Vellum={VELLUM_TOKEN}");
    if options.two_bots {
        bots.push((WICK_TOKEN, WICK, "Old Wick"));
        list.push_str(&format!(",Old Wick={WICK_TOKEN}"));
    }
    let discord = DiscordStandIn::start(&bots)
        .await
        .expect("Discord stand-in");
    let mut s = setup(test, options.llm).await;
    s.fleet.spawn("worker", "worker", &[]).expect("worker");
    let mut env = vec![
        ("WHISPERFLEET_DISCORD_API_BASE", discord.base_url()),
        ("WHISPERFLEET_DISCORD_BOTS", list),
        // These tests read whole sends; streaming (edits) is tested in streaming.rs.
        ("WHISPERFLEET_DISCORD_STREAM", "false".into()),
    ];
    if let Some(via) = options.amqp_via {
        let url = format!("amqp://guest:guest@{via}/{}", s.fleet.vhost);
        env.push(("WHISPERFLEET_AMQP_URL", url));
    }
    env.extend(options.gateway_env);
    s.fleet.spawn_gateway(&env).await.expect("gateway");
    if let Err(e) = discord
        .wait_ready(bots.len(), Duration::from_secs(20))
        .await
    {
        panic!("{e:#}\ngateway log:\n{}", s.fleet.log_of("gateway"));
    }
    Rig { s, discord }
}

impl Rig {
    /// Waits for `n` accepted messages in `channel`, with the gateway's log on failure.
    async fn messages(&self, channel: u64, n: usize) -> Vec<Recorded> {
        match self.discord.wait_for_messages(channel, n, TURN_WAIT).await {
            Ok(m) => m,
            Err(e) => panic!(
                "{e:#}\ngateway log:\n{}\nworker log:\n{}",
                self.s.fleet.log_of("gateway"),
                self.s.fleet.log_of("worker")
            ),
        }
    }

    /// Every message send the stand-in received (accepted or not), any channel.
    fn all_sends(&self) -> Vec<Recorded> {
        self.discord
            .requests()
            .into_iter()
            .filter(|r| r.method == "POST" && r.path.ends_with("/messages"))
            .collect()
    }

    fn prompts(&self) -> Vec<Value> {
        recorded(&self.s.record)
    }
}

fn guild_mention(author: u64, name: &str, text: &str) -> UserMessage {
    UserMessage::guild(GUILD, CHANNEL, author, name, text).mentioning(VELLUM, "Vellum")
}

/// The id of the message a send replies to, if it is a reply.
fn replied_to(r: &Recorded) -> Option<&str> {
    r.body["message_reference"]["message_id"].as_str()
}

fn chars(s: &str) -> usize {
    s.chars().count()
}

/// Sends nobody may be pinged by: no `parse` for everyone/roles/users, no roles, and only
/// `author` in `users`.
fn assert_pings_only(send: &Recorded, author: u64) {
    let am = &send.body["allowed_mentions"];
    assert!(am.is_object(), "no allowed_mentions on {}", send.body);
    let parse = am["parse"].as_array().cloned().unwrap_or_default();
    assert!(parse.is_empty(), "parse must be empty: {am}");
    let roles = am["roles"].as_array().cloned().unwrap_or_default();
    assert!(roles.is_empty(), "roles must be empty: {am}");
    let users: Vec<String> = am["users"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|u| u.as_str().map(str::to_string))
        .collect();
    assert_eq!(users, vec![author.to_string()], "{am}");
}

/// Every `<name> <number> ms` of a timing footer (`-# ⏱ 812 ms · llm 700 ms · …`); the total
/// is `total`.
fn footer_numbers(content: &str) -> BTreeMap<String, f64> {
    let line = content
        .lines()
        .last()
        .filter(|l| l.starts_with("-# ⏱"))
        .unwrap_or_else(|| panic!("no timing footer at the end of {content:?}"));
    let mut out = BTreeMap::new();
    for (i, part) in line.trim_start_matches("-# ⏱").split(" · ").enumerate() {
        let words: Vec<&str> = part.split_whitespace().collect();
        let [name @ .., value, "ms"] = words.as_slice() else {
            panic!("unexpected footer part {part:?} in {line:?}");
        };
        let name = if i == 0 && name.is_empty() {
            "total".to_string()
        } else {
            name.join(" ")
        };
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number in {part:?}"));
        out.insert(name, value);
    }
    out
}

/// One metric event line, as the metrics-writer would read it.
#[derive(Debug, Clone)]
struct MetricLine {
    measurement: String,
    tags: BTreeMap<String, String>,
    fields: BTreeMap<String, f64>,
}

/// Drains the fleet's `metrics` queue (the writer is not running, so events stay there).
struct MetricsQueue {
    _conn: lapin::Connection,
    ch: lapin::Channel,
    lines: Vec<MetricLine>,
}

impl MetricsQueue {
    async fn open(fleet: &Fleet) -> Self {
        let conn = lapin::Connection::connect(&fleet.amqp_url(), Default::default())
            .await
            .expect("lapin connection");
        let ch = conn.create_channel().await.expect("channel");
        Self {
            _conn: conn,
            ch,
            lines: Vec::new(),
        }
    }

    async fn drain(&mut self) {
        while let Some(d) = self
            .ch
            .basic_get(
                topology::METRICS_QUEUE.into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .expect("basic_get")
        {
            let body = String::from_utf8_lossy(&d.delivery.data).into_owned();
            for line in influxdb_line_protocol::parse_lines(&body) {
                let line = line.unwrap_or_else(|e| panic!("bad metric line ({e}) in {body}"));
                let tags = line
                    .series
                    .tag_set
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let fields = line
                    .field_set
                    .iter()
                    .filter_map(|(k, v)| {
                        let v = match v {
                            influxdb_line_protocol::FieldValue::F64(f) => *f,
                            influxdb_line_protocol::FieldValue::I64(i) => *i as f64,
                            influxdb_line_protocol::FieldValue::U64(u) => *u as f64,
                            _ => return None,
                        };
                        Some((k.to_string(), v))
                    })
                    .collect();
                self.lines.push(MetricLine {
                    measurement: line.series.measurement.to_string(),
                    tags,
                    fields,
                });
            }
        }
    }

    fn of(&self, measurement: &str) -> Vec<MetricLine> {
        self.lines
            .iter()
            .filter(|l| l.measurement == measurement)
            .cloned()
            .collect()
    }

    /// Waits until at least `n` events of `measurement` arrived; returns them all.
    async fn wait_for(&mut self, measurement: &str, n: usize) -> Vec<MetricLine> {
        let deadline = Instant::now() + TURN_WAIT;
        loop {
            self.drain().await;
            let found = self.of(measurement);
            if found.len() >= n {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "{n} `{measurement}` metric event(s) expected, got {}",
                found.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// 1. A guild mention and a DM each get exactly one in-character reply, in their channel, as
///    a reply to the user's message, after the typing indicator; the LLM never sees the
///    mention; nothing else is sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mention_and_dm_get_one_in_character_reply_each() {
    let r = rig(
        "discord_reply",
        RigOptions {
            llm: mock_latency(300),
            two_bots: true,
            ..Default::default()
        },
    )
    .await;

    let asked = r.discord.user_message(guild_mention(
        ALICE,
        "alice",
        "what are you writing tonight?",
    ));
    let sent = r.messages(CHANNEL, 1).await;
    let reply = &sent[0];
    assert_eq!(reply.bot_id, Some(VELLUM), "only the mentioned bot answers");
    assert_eq!(replied_to(reply), Some(asked.as_str()), "{}", reply.body);
    assert_eq!(reply.response["type"], 19, "a reply on Discord's side too");
    let content = reply.content().unwrap();
    assert!(
        content.starts_with("[mock] Vellum heard: what are you writing tonight?"),
        "{content:?}"
    );
    let typing = r.discord.typing(CHANNEL);
    assert!(!typing.is_empty(), "no typing indicator");
    assert!(typing[0].at < reply.at, "typing must come before the reply");
    assert!(
        typing.iter().all(|t| t.bot_id == Some(VELLUM)),
        "{typing:?}"
    );
    assert_pings_only(reply, ALICE);

    let dm = r.discord.user_message(UserMessage::dm(
        DM,
        ALICE,
        "alice",
        "are you still awake, Wick?",
        WICK,
    ));
    let sent = r.messages(DM, 1).await;
    let reply = &sent[0];
    assert_eq!(reply.bot_id, Some(WICK));
    assert_eq!(replied_to(reply), Some(dm.as_str()), "{}", reply.body);
    let content = reply.content().unwrap();
    assert!(
        content.starts_with("[mock] Old Wick heard: are you still awake, Wick?"),
        "{content:?}"
    );
    let typing = r.discord.typing(DM);
    assert!(!typing.is_empty() && typing[0].at < reply.at);
    assert_pings_only(reply, ALICE);

    // What the LLM saw: the user's words without the bot's mention.
    let prompts = r.prompts();
    assert_eq!(prompts.len(), 2);
    let first = last_user(&prompts[0]);
    assert!(first.contains("what are you writing tonight?"), "{first:?}");
    assert!(
        !first.contains("<@"),
        "the mention reached the LLM: {first:?}"
    );
    assert!(last_user(&prompts[1]).contains("are you still awake, Wick?"));
    // In character: each turn was composed for the bot's own character.
    assert!(prompt_text(&prompts[0]).contains("You are Vellum"));
    assert!(prompt_text(&prompts[1]).contains("You are Old Wick"));

    // The bots' own messages come back over the gateway (as on Discord): no answer to them.
    tokio::time::sleep(SETTLE).await;
    assert_eq!(r.discord.sent_messages(CHANNEL).len(), 1);
    assert_eq!(r.discord.sent_messages(DM).len(), 1);
    assert_eq!(r.all_sends().len(), 2, "nothing else sent");
    assert_eq!(r.prompts().len(), 2, "no other turn");
}

/// 2. A 5,000-character answer arrives as ordered pieces within Discord's limit, only the
///    first a reply, together exactly the answer (up to the whitespace at the cuts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_answer_is_chunked_in_order() {
    let mut answer = String::new();
    let mut i = 0;
    while chars(&answer) < 5_000 {
        i += 1;
        answer.push_str(&format!(
            "Sentence {i}: the café lamp burns — ink dries slowly on the page. "
        ));
        if i % 11 == 0 {
            answer.push_str("\n\n");
        }
    }
    let mut answer: String = answer.chars().take(5_000).collect();
    if answer.ends_with(char::is_whitespace) {
        answer.pop();
        answer.push('.');
    }
    assert_eq!(chars(&answer), 5_000);
    let r = rig(
        "discord_chunks",
        RigOptions {
            llm: MockLlmOptions {
                reply: MockReply::Fixed(answer.clone()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;

    let asked = r.discord.user_message(UserMessage::dm(
        DM,
        ALICE,
        "alice",
        "tell me everything",
        VELLUM,
    ));
    let first = r.messages(DM, 1).await;
    // The pieces go out one after another; wait until the answer is complete.
    let mut pieces = first;
    let deadline = Instant::now() + TURN_WAIT;
    while pieces
        .iter()
        .map(|p| chars(p.content().unwrap()))
        .sum::<usize>()
        < 4_900
    {
        assert!(Instant::now() < deadline, "answer incomplete: {pieces:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        pieces = r.discord.sent_messages(DM);
    }
    tokio::time::sleep(SETTLE).await;
    let pieces = r.discord.sent_messages(DM);
    assert!(pieces.len() >= 3, "{} pieces", pieces.len());
    let mut rest = answer.as_str();
    for (n, piece) in pieces.iter().enumerate() {
        let text = piece.content().unwrap();
        assert!(
            chars(text) <= DISCORD_MESSAGE_LIMIT,
            "piece {n} has {} chars",
            chars(text)
        );
        assert!(!text.is_empty());
        assert!(
            rest.starts_with(text),
            "piece {n} is not the next part of the answer: {:?}…",
            text.chars().take(60).collect::<String>()
        );
        rest = rest[text.len()..].trim_start();
        if n == 0 {
            assert_eq!(replied_to(piece), Some(asked.as_str()));
        } else {
            assert_eq!(replied_to(piece), None, "only the first piece is a reply");
        }
        assert_pings_only(piece, ALICE);
    }
    assert!(rest.is_empty(), "{} chars never sent", chars(rest));
    assert_eq!(r.all_sends().len(), pieces.len());
    assert_eq!(r.prompts().len(), 1);
}

/// 3. Whatever the LLM writes, nobody but the user is pinged: no @everyone/@here, no role,
///    no other user, in guilds and DMs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llm_text_pings_nobody_but_the_author() {
    let answer = format!(
        "Hear ye @everyone and @here! <@&4242> assemble, <@{BOB}> too, and <@!{BOB}>; \
         <@{ALICE}> asked."
    );
    let r = rig(
        "discord_mentions",
        RigOptions {
            llm: MockLlmOptions {
                reply: MockReply::Fixed(answer.clone()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await;
    // Bob is a known member of the channel (his message is not for the bot).
    r.discord.user_message(UserMessage::guild(
        GUILD,
        CHANNEL,
        BOB,
        "bob",
        "evening all",
    ));
    r.discord
        .user_message(guild_mention(ALICE, "alice", "call everyone in"));
    let guild = r.messages(CHANNEL, 1).await;
    r.discord
        .user_message(UserMessage::dm(DM, ALICE, "alice", "and here?", VELLUM));
    let dm = r.messages(DM, 1).await;
    assert_eq!(guild[0].content(), Some(answer.as_str()), "sent verbatim");
    assert_eq!(dm[0].content(), Some(answer.as_str()));

    tokio::time::sleep(SETTLE).await;
    let sends = r.all_sends();
    assert_eq!(sends.len(), 2);
    for send in &sends {
        assert_pings_only(send, ALICE);
        let pinged: Vec<&str> = send.response["mentions"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|u| u["id"].as_str())
            .collect();
        assert_eq!(pinged, vec![ALICE.to_string()], "{}", send.response);
        assert_eq!(send.response["mention_everyone"], false);
    }
}

/// 4. Bots' messages and guild messages not addressed to the bot make no turn; a mention
///    and a reply to the bot's message (the controls) do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_not_for_the_bot_make_no_turn() {
    let r = rig(
        "discord_ignore",
        RigOptions {
            two_bots: true,
            ..Default::default()
        },
    )
    .await;
    let control = r
        .discord
        .user_message(guild_mention(ALICE, "alice", "first control"));
    let sent = r.messages(CHANNEL, 1).await;
    assert_eq!(replied_to(&sent[0]), Some(control.as_str()));
    let bot_message = sent[0].message_id().unwrap().to_string();
    assert_eq!(r.prompts().len(), 1);

    // Another bot mentioning Vellum, in the guild and in a DM.
    r.discord.user_message(UserMessage {
        author_bot: true,
        ..guild_mention(HELPER_BOT, "helper-bot", "bots talk too")
    });
    r.discord.user_message(UserMessage {
        author_bot: true,
        ..UserMessage::dm(DM, HELPER_BOT, "helper-bot", "psst, bot to bot", VELLUM)
    });
    // Guild chatter: no mention, a mention of someone else, a reply to a user's message.
    let chatter = r.discord.user_message(UserMessage::guild(
        GUILD,
        CHANNEL,
        ALICE,
        "alice",
        "just chatting here",
    ));
    r.discord.user_message(
        UserMessage::guild(GUILD, CHANNEL, BOB, "bob", "what do you think?")
            .mentioning(ALICE, "alice"),
    );
    r.discord.user_message(
        UserMessage::guild(GUILD, CHANNEL, BOB, "bob", "agreed").replying_to(&chatter),
    );

    // Second control: a reply to the bot's own message, without a mention.
    let again = r.discord.user_message(
        UserMessage::guild(GUILD, CHANNEL, ALICE, "alice", "second control")
            .replying_to(&bot_message),
    );
    let sent = r.messages(CHANNEL, 2).await;
    assert_eq!(replied_to(&sent[1]), Some(again.as_str()));
    assert_eq!(sent[1].bot_id, Some(VELLUM));

    tokio::time::sleep(SETTLE).await;
    let texts: Vec<String> = r.prompts().iter().map(last_user).collect();
    assert_eq!(texts.len(), 2, "turns: {texts:?}");
    assert!(texts[0].contains("first control") && texts[1].contains("second control"));
    assert_eq!(r.all_sends().len(), 2, "nothing sent for ignored messages");
    assert_eq!(r.s.mock.stats.requests(), 2);
}

/// 5. Over the per-user limit: one polite notice, nothing published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_politely_and_publishes_nothing() {
    let r = rig(
        "discord_rate",
        RigOptions {
            gateway_env: vec![
                ("WHISPERFLEET_DISCORD_RATE_TURNS", "2".into()),
                ("WHISPERFLEET_DISCORD_RATE_WINDOW_S", "60".into()),
            ],
            ..Default::default()
        },
    )
    .await;
    let mut metrics = MetricsQueue::open(&r.s.fleet).await;
    let dm = |text: &str| UserMessage::dm(DM, ALICE, "alice", text, VELLUM);
    r.discord.user_message(dm("one"));
    r.messages(DM, 1).await;
    r.discord.user_message(dm("two"));
    r.messages(DM, 2).await;
    let third = r.discord.user_message(dm("three"));
    let sent = r.messages(DM, 3).await;
    let notice = &sent[2];
    let text = notice.content().unwrap();
    assert!(
        text.starts_with("You're sending messages faster than I can answer"),
        "{text:?}"
    );
    assert_eq!(replied_to(notice), Some(third.as_str()));
    assert_pings_only(notice, ALICE);
    // A fourth message in the same window: skipped without another notice.
    r.discord.user_message(dm("four"));

    tokio::time::sleep(SETTLE).await;
    assert_eq!(r.discord.sent_messages(DM).len(), 3);
    assert_eq!(r.prompts().len(), 2);
    assert_eq!(r.s.mock.stats.requests(), 2);
    // The workers handled exactly two turns: one `turn` event each.
    assert_eq!(metrics.wait_for("turn", 2).await.len(), 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    metrics.drain().await;
    assert_eq!(metrics.of("turn").len(), 2);
    let broker = broker_for(&r.s.fleet).await;
    let turns = broker.queue_stats(topology::TURNS_QUEUE).await.unwrap();
    assert_eq!(turns.map(|t| t.ready), Some(0), "no turn left queued");
}

/// 6. The broker goes away: the user gets the error notice within the bounded retry; once
///    it is back, the next message is answered by the same gateway process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_outage_is_reported_and_recovered_from() {
    let upstream = AMQP_BASE.rsplit('@').next().expect("host:port").to_string();
    let proxy = TcpProxy::start(&upstream).await.unwrap();
    let r = rig(
        "discord_outage",
        RigOptions {
            amqp_via: Some(proxy.addr()),
            ..Default::default()
        },
    )
    .await;
    let dm = |text: &str| UserMessage::dm(DM, ALICE, "alice", text, VELLUM);
    r.discord.user_message(dm("before the outage"));
    let sent = r.messages(DM, 1).await;
    assert!(sent[0].content().unwrap().contains("before the outage"));

    proxy.cut();
    // Let the gateway's connections notice they are gone.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = r.discord.user_message(dm("during the outage"));
    let asked = Instant::now();
    let sent = r.messages(DM, 2).await;
    let took = asked.elapsed();
    let notice = &sent[1];
    assert_eq!(notice.content(), Some(BROKER_DOWN_NOTICE));
    assert_eq!(replied_to(notice), Some(during.as_str()));
    assert!(
        took < Duration::from_secs(15),
        "error notice after {took:?}: the retry must be bounded"
    );
    eprintln!("broker outage: error notice after {took:?}");

    proxy.restore();
    let after = r.discord.user_message(dm("after the outage"));
    let sent = r.messages(DM, 3).await;
    assert_eq!(replied_to(&sent[2]), Some(after.as_str()));
    assert!(
        sent[2].content().unwrap().contains("after the outage"),
        "{:?}",
        sent[2].content()
    );
    tokio::time::sleep(SETTLE).await;
    let texts: Vec<String> = r.prompts().iter().map(last_user).collect();
    assert_eq!(
        texts.len(),
        2,
        "the refused message was never published: {texts:?}"
    );
    assert_eq!(r.discord.sent_messages(DM).len(), 3);
    let log = r.s.fleet.log_of("gateway");
    assert_eq!(
        log.matches("gateway listening").count(),
        1,
        "the gateway was not restarted"
    );
}

/// 7. The `full` footer shows exactly the stages the reply carried: the worker's as in its
///    `turn` event, the gateway's as in its `delivery` event (up to the footer's rounding).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_footer_matches_the_measured_stages() {
    let r = rig(
        "discord_footer",
        RigOptions {
            llm: mock_latency(120),
            gateway_env: vec![("WHISPERFLEET_DISCORD_FOOTER", "full".into())],
            ..Default::default()
        },
    )
    .await;
    let mut metrics = MetricsQueue::open(&r.s.fleet).await;
    let asked = Instant::now();
    r.discord.user_message(UserMessage::dm(
        DM,
        ALICE,
        "alice",
        "how long did that take?",
        VELLUM,
    ));
    let sent = r.messages(DM, 1).await;
    let seen_e2e = sent[0].at.duration_since(asked).as_secs_f64() * 1000.0;
    let content = sent[0].content().unwrap();
    let footer = footer_numbers(content);
    assert!(
        content.starts_with("[mock]") && content.contains("heard: how long did that take?\n-# ⏱"),
        "the footer follows the reply on a line of its own: {content:?}"
    );

    let turn = metrics.wait_for("turn", 1).await.remove(0);
    let delivery = metrics.wait_for("delivery", 1).await.remove(0);
    assert_eq!(delivery.tags["platform"], "discord");
    assert_eq!(turn.tags["platform"], "discord");
    // Rounded to whole ms in the footer; full precision in the events.
    let close = |shown: f64, measured: f64| (shown - measured).abs() <= 0.5 + 1e-6;
    for stage in [
        "queue_wait",
        "cdl_load",
        "context",
        "compose",
        "llm",
        "worker_total",
    ] {
        let shown = footer
            .get(stage)
            .unwrap_or_else(|| panic!("{stage} missing from the footer {footer:?}"));
        let measured = turn.fields[&format!("{stage}_ms")];
        assert!(close(*shown, measured), "{stage}: {shown} vs {measured}");
    }
    for stage in ["platform_lag", "ingress", "llm"] {
        let shown = footer[stage];
        let measured = delivery.fields[&format!("{stage}_ms")];
        assert!(close(shown, measured), "{stage}: {shown} vs {measured}");
    }
    // The footer is written when the send starts, the delivery point when it is done.
    for stage in ["delivery", "overhead"] {
        let shown = footer[stage];
        let measured = delivery.fields[&format!("{stage}_ms")];
        assert!(shown <= measured + 0.5, "{stage}: {shown} vs {measured}");
    }
    let total = footer["total"];
    assert!(total <= delivery.fields["end_to_end_ms"] + 0.5);
    assert!(
        (footer["overhead"] - (total - footer["llm"])).abs() <= 1.0,
        "overhead = end-to-end − LLM: {footer:?}"
    );
    assert!(footer["llm"] >= 120.0 - 0.5, "mock latency: {footer:?}");
    assert!(total >= footer["worker_total"] - 0.5, "{footer:?}");
    assert!(
        total <= seen_e2e + 0.5,
        "the footer's end-to-end ({total} ms) cannot exceed what the user saw ({seen_e2e:.1} ms)"
    );
}

/// 8. Measurement (not an assertion on time): sequential DM turns (40, or
///    `WHISPERFLEET_TEST_DISCORD_TURNS`) with a zero-latency LLM; end-to-end and overhead
///    percentiles as the stand-in saw them and as the `timing` footer reports them. Run alone
///    (and `--release`) for quiet figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_overhead_through_the_standin() {
    let turns_wanted = std::env::var("WHISPERFLEET_TEST_DISCORD_TURNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(40);
    let r = rig(
        "discord_overhead",
        RigOptions {
            gateway_env: vec![
                ("WHISPERFLEET_DISCORD_FOOTER", "timing".into()),
                ("WHISPERFLEET_DISCORD_RATE_TURNS", "1000".into()),
            ],
            ..Default::default()
        },
    )
    .await;
    // One warm-up turn (first character load, first connections), not measured.
    r.discord
        .user_message(UserMessage::dm(DM, ALICE, "alice", "warm up", VELLUM));
    r.messages(DM, 1).await;

    let (mut seen, mut seen_minus_llm, mut shown, mut shown_overhead) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for i in 0..turns_wanted {
        let asked = Instant::now();
        let id = r.discord.user_message(UserMessage::dm(
            DM,
            ALICE,
            "alice",
            &format!("question number {i}"),
            VELLUM,
        ));
        let sent = r.messages(DM, i + 2).await;
        let reply = &sent[i + 1];
        assert_eq!(replied_to(reply), Some(id.as_str()));
        let e2e = reply.at.duration_since(asked).as_secs_f64() * 1000.0;
        let footer = footer_numbers(reply.content().unwrap());
        let (total, llm, overhead) = (footer["total"], footer["LLM"], footer["overhead"]);
        assert!(overhead >= 0.0 && llm >= 0.0, "{footer:?}");
        assert!(total <= e2e + 0.5, "footer {total} ms > seen {e2e:.1} ms");
        seen.push(e2e);
        seen_minus_llm.push(e2e - llm);
        shown.push(total);
        shown_overhead.push(overhead);
    }
    assert_eq!(r.prompts().len(), turns_wanted + 1);
    assert_eq!(r.discord.sent_messages(DM).len(), turns_wanted + 1);
    for v in [
        &mut seen,
        &mut seen_minus_llm,
        &mut shown,
        &mut shown_overhead,
    ] {
        v.sort_by(f64::total_cmp);
    }
    assert!(seen_minus_llm[0] >= 0.0, "overhead cannot be negative");
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    eprintln!(
        "discord overhead through the stand-in: {turns_wanted} sequential DM turns, mock LLM 0 ms, {build} build"
    );
    for (what, v) in [
        ("end-to-end (user message -> reply at the stand-in)", &seen),
        ("end-to-end minus LLM (stand-in)", &seen_minus_llm),
        ("end-to-end (footer)", &shown),
        ("overhead (footer)", &shown_overhead),
    ] {
        eprintln!(
            "  {what}: p50 {:.1} ms, p99 {:.1} ms, min {:.1} ms, max {:.1} ms",
            percentile(v, 0.50),
            percentile(v, 0.99),
            v[0],
            v[v.len() - 1]
        );
    }
}

/// A reply that arrives after the gateway stopped waiting is still shown: the user gets the
/// "my answer will follow" notice, then the answer, as a reply to their message. It was seen,
/// so it stays in the conversation: the next prompt has it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_reply_is_posted_when_it_arrives() {
    let r = rig(
        "discord_late",
        RigOptions {
            llm: mock_latency(2500),
            gateway_env: vec![("WHISPERFLEET_REPLY_TIMEOUT_MS", "1000".to_string())],
            ..Default::default()
        },
    )
    .await;
    let asked = r
        .discord
        .user_message(guild_mention(ALICE, "alice", "the word is AMBER-17"));
    let sent = r.messages(CHANNEL, 2).await;
    assert_eq!(
        sent[0].content(),
        Some(whisperfleet_gateway::discord::text::TIMEOUT_NOTICE)
    );
    let late = &sent[1];
    assert!(
        late.content()
            .unwrap()
            .starts_with("[mock] Vellum heard: the word is AMBER-17"),
        "{:?}",
        late.content()
    );
    assert_eq!(replied_to(late), Some(asked.as_str()), "{}", late.body);
    assert_pings_only(late, ALICE);
    // Seen late is seen: the next turn's prompt has it.
    r.discord
        .user_message(guild_mention(ALICE, "alice", "and again?"));
    let prompts = r.s.record.clone();
    let mut prompt = String::new();
    for _ in 0..200 {
        let all = recorded(&prompts);
        if all.len() >= 2 {
            prompt = prompt_text(&all[1]);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        prompt.contains("heard: the word is AMBER-17"),
        "the late reply is missing from the next prompt:\n{prompt}"
    );
    tokio::time::sleep(SETTLE).await;
    let replies_to_first = r
        .all_sends()
        .iter()
        .filter(|s| replied_to(s) == Some(asked.as_str()))
        .count();
    assert_eq!(replies_to_first, 2, "notice and answer, nothing twice");
}

/// Replies waiting in a gateway's reply queue while it restarts are posted by the restarted
/// gateway (same `GATEWAY_ID`), not acked and dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_posts_the_replies_that_waited_for_it() {
    let mut r = rig(
        "discord_restart",
        RigOptions {
            llm: mock_latency(2500),
            ..Default::default()
        },
    )
    .await;
    let asked = r
        .discord
        .user_message(guild_mention(ALICE, "alice", "are you still there?"));
    // The turn is with the worker (the LLM takes 2.5 s) when the gateway dies.
    eventually(
        Duration::from_secs(10),
        "the turn reached the LLM",
        || async { !recorded(&r.s.record).is_empty() },
    )
    .await;
    r.s.fleet.signal("gateway", "KILL").unwrap();
    r.s.fleet
        .wait_exit("gateway", Duration::from_secs(5))
        .await
        .unwrap();
    // The reply waits in the durable reply queue meanwhile.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let env = vec![
        ("WHISPERFLEET_DISCORD_API_BASE", r.discord.base_url()),
        (
            "WHISPERFLEET_DISCORD_BOTS",
            format!("Vellum={VELLUM_TOKEN}"),
        ),
        ("WHISPERFLEET_DISCORD_STREAM", "false".into()),
    ];
    r.s.fleet.spawn_gateway(&env).await.unwrap();
    let sent = r.messages(CHANNEL, 1).await;
    assert!(
        sent[0]
            .content()
            .unwrap()
            .starts_with("[mock] Vellum heard: are you still there?"),
        "{:?}",
        sent[0].content()
    );
    assert_eq!(replied_to(&sent[0]), Some(asked.as_str()));
}
