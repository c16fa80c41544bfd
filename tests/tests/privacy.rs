//! Privacy a user can exercise, end to end (issue 14, item 3): over HTTP, `GET
//! /v1/users/{id}/memories` and `DELETE /v1/users/{id}` reach exactly the calling key's
//! user — never another key's user with the same id, never a Discord user — and over
//! Discord, `/memories` and `/forget` (with its confirmation button) reach exactly the
//! caller's data with that bot's character. Real `gateway` and `worker` binaries, RabbitMQ,
//! Redis, PostgreSQL and the worker's embedded vector memory; data is seeded through real
//! turns and checked in the stores themselves and through the CLI.

use std::time::Duration;

use serde_json::{Value, json};
use whisperfleet_shared::ports::broker::{Broker, Message};
use whisperfleet_shared::records;
use whisperfleet_shared::topology;
use whisperfleet_shared::wire::Conversation;
use whisperfleet_testkit::tap::{ReplyTap, publish_turn, turn_request};
use whisperfleet_testkit::*;

const ACME_KEY: &str = "acme-5b1e0c7d9f2a4683";
const BETA_KEY: &str = "beta-7c6d5e4f3a2b1908";
const NORA: &str = "Nora Halvorsen";
/// Replies of turns published straight to the broker (as another platform) come here.
const TAP: &str = "privacy-tap";

fn keys() -> (&'static str, String) {
    (
        "WHISPERFLEET_HTTP_API_KEYS",
        format!("acme={ACME_KEY},beta={BETA_KEY}"),
    )
}

/// One stored thing of one identity, as the stores hold it.
#[derive(Debug, PartialEq, Eq)]
struct Held {
    points: i64,
    relationship: Option<i64>,
    history: bool,
    cached_answer: bool,
}

/// One fleet: a worker, an HTTP gateway with two keys, and direct access to the stores.
struct Rig {
    s: Setup,
    base: String,
    client: reqwest::Client,
}

impl Rig {
    async fn start(name: &str, gateway_env: &[(&str, String)], worker: bool) -> Self {
        let mut s = setup(name, mock_latency(0)).await;
        if worker {
            s.fleet.spawn("worker", "worker", &[]).unwrap();
        }
        let mut env = vec![keys()];
        env.extend(gateway_env.iter().cloned());
        let base = s.fleet.spawn_gateway(&env).await.unwrap();
        Self {
            s,
            base,
            client: reqwest::Client::new(),
        }
    }

    /// One HTTP turn as `key`'s user `user`; waits until its memory is stored. Returns its
    /// turn id and conversation.
    async fn http_turn(
        &self,
        key: &str,
        ns: &str,
        user: &str,
        text: &str,
    ) -> (String, Conversation) {
        let (status, body) = post_turn_with_key(
            &self.client,
            &self.base,
            Some(key),
            json!({"character": NORA, "user_id": user, "text": text}),
        )
        .await
        .unwrap();
        assert_eq!(status, 200, "{body}");
        let turn_id = body["turn_id"].as_str().unwrap().to_string();
        self.stored(&turn_id).await;
        let conversation = Conversation {
            platform: "http".into(),
            namespace: ns.into(),
            channel_id: format!("dm:{user}"),
            user_id: user.into(),
            guild_id: None,
            is_dm: true,
        };
        (turn_id, conversation)
    }

    /// One turn as a Discord user, published straight to the broker (the tap hears its
    /// reply); waits until its memory is stored.
    async fn discord_turn(&self, user: &str, channel: &str, text: &str) -> (String, Conversation) {
        let broker = broker_for(&self.s.fleet).await;
        let tap = ReplyTap::bind(&self.s.fleet.amqp_url(), TAP).await.unwrap();
        let mut t = turn_request(TAP, user, text);
        t.character = NORA.into();
        t.conversation.platform = "discord".into();
        t.conversation.channel_id = channel.into();
        publish_turn(broker.as_ref(), &t).await.unwrap();
        eventually(Duration::from_secs(30), "the Discord turn answered", || {
            let n = tap.count(t.turn_id);
            async move { n == 1 }
        })
        .await;
        self.stored(&t.turn_id.to_string()).await;
        (t.turn_id.to_string(), t.conversation)
    }

    async fn stored(&self, turn_id: &str) {
        let key = records::turn_key(&turn_id);
        eventually(Duration::from_secs(30), "the turn's memory stored", || {
            self.s.fleet.redis_hexists(&key, records::MEMORY)
        })
        .await;
    }

    /// What the stores hold of the identity of `conversation` (and of its turn `turn_id`).
    async fn held(&self, turn_id: &str, c: &Conversation) -> Held {
        let pg = sqlx::PgPool::connect(&self.s.fleet.database_url())
            .await
            .unwrap();
        let relationship = sqlx::query_scalar(
            "SELECT interactions FROM relationships WHERE platform = $1 AND namespace = $2 \
             AND user_id = $3",
        )
        .bind(&c.platform)
        .bind(&c.namespace)
        .bind(&c.user_id)
        .fetch_optional(&pg)
        .await
        .unwrap();
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(self.s.fleet.data_dir().join("memories.sqlite"))
            .read_only(true);
        let mut lite = sqlx::ConnectOptions::connect(&opts).await.unwrap();
        let points = sqlx::query_scalar(
            "SELECT count(*) FROM memories WHERE platform = ?1 AND namespace = ?2 AND user_id = ?3",
        )
        .bind(&c.platform)
        .bind(&c.namespace)
        .bind(&c.user_id)
        .fetch_one(&mut lite)
        .await
        .unwrap();
        Held {
            points,
            relationship,
            history: self
                .s
                .fleet
                .redis_exists(&records::history_key(&c.key(NORA)))
                .await,
            cached_answer: self
                .s
                .fleet
                .redis_hexists(&records::turn_key(&turn_id), records::LLM)
                .await,
        }
    }

    /// `GET|DELETE <base>/v1/users/<user>[/memories][?character=…]` with `key`; the user id
    /// is one path segment, percent-encoded whatever it holds.
    async fn call(
        &self,
        method: reqwest::Method,
        key: Option<&str>,
        user: &str,
        character: Option<&str>,
    ) -> (u16, Value) {
        // Encoded here: `Url`'s own path encoding follows the URL standard, which drops
        // newlines and tabs from what it is given.
        let mut path = format!("{}/v1/users/{}", self.base, encode_segment(user));
        if method == reqwest::Method::GET {
            path.push_str("/memories");
        }
        let mut url = reqwest::Url::parse(&path).unwrap();
        if let Some(c) = character {
            url.query_pairs_mut().append_pair("character", c);
        }
        let mut req = self.client.request(method, url);
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    async fn show(&self, key: &str, user: &str) -> Value {
        let (status, body) = self.call(reqwest::Method::GET, Some(key), user, None).await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

/// Every byte but RFC 3986's unreserved characters as `%XX`: one path segment, whatever
/// the id holds.
fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The memories' texts of a `show` answer, joined.
fn texts(shown: &Value) -> String {
    shown["memories"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn http_show_and_forget_reach_only_the_calling_keys_user() {
    let rig = Rig::start("privacy_http", &[], true).await;
    let (acme_turn, acme) = rig
        .http_turn(ACME_KEY, "acme", "42", "My cat is called Pumpernickel.")
        .await;
    let (beta_turn, beta) = rig
        .http_turn(BETA_KEY, "beta", "42", "My boat is called Seahorse.")
        .await;
    let (disc_turn, disc) = rig
        .discord_turn("42", "912345678901234567", "My guitar is called Ruby.")
        .await;

    // Without a key (or with a wrong one): 401, before anything reaches a worker.
    for key in [None, Some("acme-5b1e0c7d9f2a4684")] {
        for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
            let (status, body) = rig.call(method.clone(), key, "42", None).await;
            assert_eq!(status, 401, "{method} with {key:?}: {body}");
            assert_eq!(body["error"], "unauthorized");
        }
    }

    // Each key sees its own user "42" only; nobody sees the Discord user's.
    let shown = rig.show(ACME_KEY, "42").await;
    let t = texts(&shown);
    assert!(t.contains("Pumpernickel"), "{shown}");
    assert!(!t.contains("Seahorse") && !t.contains("Ruby"), "{shown}");
    assert_eq!(shown["memories"].as_array().unwrap().len(), 2, "{shown}");
    assert_eq!(shown["user_id"], "42");
    let m = &shown["memories"][0];
    for field in [
        "character",
        "role",
        "emotion",
        "intensity",
        "timestamp",
        "is_dm",
    ] {
        assert!(!m[field].is_null(), "{field} missing: {m}");
    }
    assert_eq!(shown["relationships"][0]["interactions"], 1, "{shown}");
    assert!(
        shown["histories"][0]["messages"][0]["text"]
            .as_str()
            .unwrap()
            .contains("Pumpernickel"),
        "{shown}"
    );
    assert_eq!(shown["cached_answers"], 1, "{shown}");
    let t = texts(&rig.show(BETA_KEY, "42").await);
    assert!(t.contains("Seahorse") && !t.contains("Pumpernickel") && !t.contains("Ruby"));
    // Another character knows nothing of them; an unknown user simply has nothing.
    let (status, other) = rig
        .call(reqwest::Method::GET, Some(ACME_KEY), "42", Some("Old Wick"))
        .await;
    assert_eq!(status, 200, "{other}");
    assert_eq!(other["memories"], json!([]), "{other}");
    let nobody = rig.show(ACME_KEY, "nobody-at-all").await;
    assert_eq!(nobody["memories"], json!([]), "{nobody}");
    assert_eq!(nobody["relationships"], json!([]), "{nobody}");

    let everything = Held {
        points: 2,
        relationship: Some(1),
        history: true,
        cached_answer: true,
    };
    assert_eq!(rig.held(&acme_turn, &acme).await, everything, "premise");

    // DELETE as acme: exactly acme's "42" goes.
    let (status, body) = rig
        .call(reqwest::Method::DELETE, Some(ACME_KEY), "42", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["forgotten"],
        json!({"memories": 2, "histories": 1, "relationships": 1, "cached_answers": 1}),
        "{body}"
    );
    assert_eq!(
        rig.held(&acme_turn, &acme).await,
        Held {
            points: 0,
            relationship: None,
            history: false,
            cached_answer: false
        }
    );
    assert_eq!(rig.held(&beta_turn, &beta).await, everything, "beta's 42");
    assert_eq!(
        rig.held(&disc_turn, &disc).await,
        everything,
        "Discord's 42"
    );
    assert_eq!(rig.show(ACME_KEY, "42").await["memories"], json!([]));
    // The operator's view agrees.
    let cli = rig
        .s
        .fleet
        .cli(&[
            "memory",
            "show",
            "--platform",
            "http",
            "--namespace",
            "beta",
            "--user",
            "42",
        ])
        .unwrap();
    assert!(cli.contains("Seahorse"), "{cli}");
    let cli = rig
        .s
        .fleet
        .cli(&["memory", "show", "--user", "42"])
        .unwrap();
    assert!(cli.contains("Ruby"), "{cli}");

    // Forgetting again is not an error: there is nothing left.
    let (status, body) = rig
        .call(reqwest::Method::DELETE, Some(ACME_KEY), "42", None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["forgotten"]["memories"], 0, "{body}");
}

/// User ids holding `:`, `*`, `?`, `[`, spaces and newlines select their own user over
/// HTTP and nobody else: not the neighbours whose ids share their text, nor everyone.
#[tokio::test(flavor = "multi_thread")]
async fn http_privacy_with_hostile_user_ids_selects_nobody_else() {
    let rig = Rig::start("privacy_hostile", &[], true).await;
    let hostile = "a:b*? [c]\n\\d%3A";
    let people = [
        ("t_hostile", hostile.to_string(), "pawpaw"),
        ("n_prefix", format!("{hostile}x"), "sapote"),
        ("n_star", "*".to_string(), "feijoa"),
        ("n_q", "?".to_string(), "loquat"),
        ("n_42", "42".to_string(), "medlar"),
        ("n_space", "a b".to_string(), "quince"),
    ];
    let mut seeded = Vec::new();
    for (label, user, secret) in &people {
        let (turn, c) = rig
            .http_turn(ACME_KEY, "acme", user, &format!("{label} secret: {secret}"))
            .await;
        seeded.push((label, turn, c, secret));
    }
    for (label, user, secret) in &people {
        let shown = rig.show(ACME_KEY, user).await;
        assert_eq!(
            shown["user_id"],
            user.as_str(),
            "the gateway read the id it was sent"
        );
        let t = texts(&shown);
        assert!(t.contains(secret), "{label}: {shown}");
        for (other, _, s) in &people {
            if other != label {
                assert!(!t.contains(s), "{label} shows {other}'s data: {t}");
            }
        }
    }
    for user in [hostile, "*"] {
        let (status, body) = rig
            .call(reqwest::Method::DELETE, Some(ACME_KEY), user, None)
            .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["forgotten"]["memories"], 2, "{user:?}: {body}");
    }
    for (label, turn, c, _) in &seeded {
        let held = rig.held(turn, c).await;
        if ["t_hostile", "n_star"].contains(label) {
            assert_eq!(held.points, 0, "{label}");
            assert_eq!(held.relationship, None, "{label}");
            assert!(!held.history && !held.cached_answer, "{label}");
        } else {
            assert_eq!(
                held,
                Held {
                    points: 2,
                    relationship: Some(1),
                    history: true,
                    cached_answer: true
                },
                "{label}"
            );
        }
    }
}

/// No worker: the gateway answers 504 after `PRIVACY_TIMEOUT_MS`, and the request expires
/// (dead-lettered, not done later behind the user's back). A malformed request is
/// dead-lettered with a reason, and the worker keeps answering.
#[tokio::test(flavor = "multi_thread")]
async fn without_a_worker_privacy_times_out_and_the_request_expires() {
    let mut rig = Rig::start(
        "privacy_timeout",
        &[("WHISPERFLEET_PRIVACY_TIMEOUT_MS", "700".into())],
        false,
    )
    .await;
    let (status, body) = rig
        .call(reqwest::Method::DELETE, Some(ACME_KEY), "42", None)
        .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"], "privacy_timeout", "{body}");

    let broker = broker_for(&rig.s.fleet).await;
    broker
        .publish(Message::json(
            topology::PRIVACY_EXCHANGE,
            topology::PRIVACY_ROUTING_KEY,
            b"{\"v\": 1, \"action\": \"forget\"".to_vec(),
        ))
        .await
        .unwrap();
    rig.s.fleet.spawn("worker", "worker", &[]).unwrap();
    let dead = || async {
        broker
            .queue_stats(topology::PRIVACY_DEAD_QUEUE)
            .await
            .unwrap()
            .map_or(0, |s| s.ready)
    };
    eventually(
        Duration::from_secs(30),
        "the expired and the malformed request dead-lettered",
        || async { dead().await == 2 },
    )
    .await;
    let log = rig.s.fleet.log_of("worker");
    assert!(log.contains("expired"), "{log}");
    assert!(log.contains("malformed privacy request"), "{log}");
    // The worker still answers (the short timeout may cut the first calls of a cold one).
    eventually(
        Duration::from_secs(30),
        "a privacy request answered",
        || async {
            rig.call(reqwest::Method::GET, Some(ACME_KEY), "42", None)
                .await
                .0
                == 200
        },
    )
    .await;
}

// ---- Discord: /memories and /forget ----

const VELLUM_TOKEN: &str = "vellum-bot-token";
const VELLUM: u64 = 9_001;
const WICK_TOKEN: &str = "old-wick-bot-token";
const WICK: u64 = 9_002;
const ALICE: u64 = 312_456_789_012_345_678;
const BOB: u64 = 312_456_789_012_345_679;
const GUILD: u64 = 500;
const CHANNEL: u64 = 600;

/// Memory points and the relationship's interactions of a Discord user with `character`.
async fn discord_held(s: &Setup, user: u64, character: &str) -> (i64, Option<i64>) {
    let character = whisperfleet_shared::character::normalize_name(character);
    let opts = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(s.fleet.data_dir().join("memories.sqlite"))
        .read_only(true);
    let mut lite = sqlx::ConnectOptions::connect(&opts).await.unwrap();
    let points = sqlx::query_scalar(
        "SELECT count(*) FROM memories WHERE platform = 'discord' AND namespace = '' \
         AND user_id = ?1 AND character = ?2",
    )
    .bind(user.to_string())
    .bind(&character)
    .fetch_one(&mut lite)
    .await
    .unwrap();
    let pg = sqlx::PgPool::connect(&s.fleet.database_url())
        .await
        .unwrap();
    let relationship = sqlx::query_scalar(
        "SELECT r.interactions FROM relationships r JOIN characters c ON c.id = r.character_id \
         WHERE r.platform = 'discord' AND r.namespace = '' AND r.user_id = $1 \
         AND c.normalized_name = $2",
    )
    .bind(user.to_string())
    .bind(&character)
    .fetch_optional(&pg)
    .await
    .unwrap();
    (points, relationship)
}

fn invoker(user: u64, name: &str) -> whisperfleet_testkit::discord::Invoker {
    whisperfleet_testkit::discord::Invoker {
        user_id: user,
        user_name: name.into(),
        channel_id: CHANNEL,
        guild_id: Some(GUILD),
    }
}

/// Waits until the interaction's original answer is final (edited after a deferral, or
/// answered at once) and returns its log.
async fn answered(
    discord: &whisperfleet_testkit::discord::DiscordStandIn,
    s: &Setup,
    token: &str,
) -> whisperfleet_testkit::discord::InteractionLog {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(log) = discord.interaction(token) {
            let deferred = log
                .callbacks
                .first()
                .is_some_and(|c| c.kind == 5 || c.kind == 6);
            if !log.callbacks.is_empty() && (!deferred || !log.edits.is_empty()) {
                return log;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "interaction not answered: {:?}\ngateway log:\n{}\nworker log:\n{}",
            discord.interaction(token),
            s.fleet.log_of("gateway"),
            s.fleet.log_of("worker")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Nobody can be pinged by a body: `allowed_mentions` present and empty.
fn pings_nobody(body: &Value) {
    let am = &body["allowed_mentions"];
    assert!(am.is_object(), "no allowed_mentions in {body}");
    for k in ["parse", "users", "roles"] {
        assert!(
            am[k].as_array().is_none_or(|a| a.is_empty()),
            "{k} not empty: {am}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn discord_memories_and_forget_reach_only_the_caller_with_that_character() {
    use whisperfleet_gateway::discord::commands::{FORGET_CANCEL, FORGET_CONFIRM, MEMORIES};
    use whisperfleet_testkit::discord::{DiscordStandIn, EPHEMERAL, UserMessage};

    let bots = [
        (VELLUM_TOKEN, VELLUM, "Vellum"),
        (WICK_TOKEN, WICK, "Old Wick"),
    ];
    let discord = DiscordStandIn::start(&bots).await.unwrap();
    let mut s = setup("privacy_discord", mock_latency(0)).await;
    s.fleet.spawn("worker", "worker", &[]).unwrap();
    s.fleet
        .spawn_gateway(&[
            ("WHISPERFLEET_DISCORD_API_BASE", discord.base_url()),
            (
                "WHISPERFLEET_DISCORD_BOTS",
                format!("Vellum={VELLUM_TOKEN},Old Wick={WICK_TOKEN}"),
            ),
        ])
        .await
        .unwrap();
    discord
        .wait_ready(2, Duration::from_secs(20))
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "both bots registered", || {
        let n = (
            discord.command_registrations(VELLUM),
            discord.command_registrations(WICK),
        );
        async move { n == (1, 1) }
    })
    .await;
    for bot in [VELLUM, WICK] {
        let mut names: Vec<String> = discord
            .registered_commands(bot)
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["forget", "memories"], "bot {bot}");
    }

    // Seed through real turns: Alice with both characters, Bob with Vellum.
    for (channel, user, name, bot, text) in [
        (
            701,
            ALICE,
            "alice",
            VELLUM,
            "My cat is called Pumpernickel.",
        ),
        (702, ALICE, "alice", WICK, "My boat is called Seahorse."),
        (703, BOB, "bob", VELLUM, "My guitar is called Ruby."),
    ] {
        discord.user_message(UserMessage::dm(channel, user, name, text, bot));
        discord
            .wait_for_messages(channel, 1, Duration::from_secs(30))
            .await
            .unwrap();
    }
    for (user, character) in [(ALICE, "Vellum"), (ALICE, "Old Wick"), (BOB, "Vellum")] {
        let mut held = (0, None);
        for _ in 0..300 {
            held = discord_held(&s, user, character).await;
            if held == (2, Some(1)) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(held, (2, Some(1)), "premise: {user} with {character}");
    }

    // /memories: ephemeral, Vellum's memories of Alice only.
    let alice = invoker(ALICE, "alice");
    let sent = discord.slash_command(VELLUM, MEMORIES, &alice).unwrap();
    let log = answered(&discord, &s, &sent.token).await;
    assert_eq!(log.callbacks.len(), 1, "{log:?}");
    let first = &log.callbacks[0];
    assert_eq!(
        first.status, 204,
        "answered within Discord's window: {first:?}"
    );
    assert!(matches!(first.kind, 4 | 5), "{first:?}");
    assert_ne!(first.flags & EPHEMERAL, 0, "ephemeral: {first:?}");
    let original = log.original.clone().unwrap();
    let text = original["content"].as_str().unwrap();
    assert!(text.contains("Pumpernickel"), "{text}");
    assert!(
        !text.contains("Seahorse") && !text.contains("Ruby"),
        "{text}"
    );
    assert_ne!(original["flags"].as_u64().unwrap() & EPHEMERAL, 0);
    for body in log.edits.iter().chain([&first.data]) {
        pings_nobody(body);
    }

    // /forget asks first: a button, nothing forgotten yet.
    let sent = discord.slash_command(VELLUM, "forget", &alice).unwrap();
    let log = answered(&discord, &s, &sent.token).await;
    let first = &log.callbacks[0];
    assert_eq!((first.kind, first.status), (4, 204), "{first:?}");
    assert_ne!(first.flags & EPHEMERAL, 0, "{first:?}");
    pings_nobody(&first.data);
    let question = log.original.unwrap();
    assert_eq!(discord_held(&s, ALICE, "Vellum").await, (2, Some(1)));
    // Bob cannot see (so cannot click) Alice's ephemeral question.
    let question_id = question["id"].as_str().unwrap();
    assert!(
        discord
            .click(question_id, FORGET_CONFIRM, &invoker(BOB, "bob"))
            .is_err()
    );

    // Alice clicks: her data with Vellum goes, nothing else.
    let click = discord.click(question_id, FORGET_CONFIRM, &alice).unwrap();
    let log = answered(&discord, &s, &click.token).await;
    assert_eq!(log.callbacks[0].status, 204, "{log:?}");
    let done = log.original.unwrap();
    assert!(
        done["content"].as_str().unwrap().contains("forgotten"),
        "{done}"
    );
    assert_eq!(
        done["components"],
        json!([]),
        "the buttons are gone: {done}"
    );
    for body in &log.edits {
        pings_nobody(body);
    }
    assert_eq!(discord_held(&s, ALICE, "Vellum").await, (0, None));
    assert_eq!(discord_held(&s, ALICE, "Old Wick").await, (2, Some(1)));
    assert_eq!(discord_held(&s, BOB, "Vellum").await, (2, Some(1)));

    let sent = discord.slash_command(VELLUM, MEMORIES, &alice).unwrap();
    let log = answered(&discord, &s, &sent.token).await;
    let text = log.original.unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.contains("remembers nothing"), "{text}");
    let sent = discord.slash_command(WICK, MEMORIES, &alice).unwrap();
    let log = answered(&discord, &s, &sent.token).await;
    let text = log.original.unwrap()["content"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.contains("Seahorse"), "{text}");

    // Bob asks, then cancels: nothing of his goes.
    let bob = invoker(BOB, "bob");
    let sent = discord.slash_command(VELLUM, "forget", &bob).unwrap();
    let question = answered(&discord, &s, &sent.token).await.original.unwrap();
    let cancel = discord
        .click(question["id"].as_str().unwrap(), FORGET_CANCEL, &bob)
        .unwrap();
    let log = answered(&discord, &s, &cancel.token).await;
    assert_eq!((log.callbacks[0].kind, log.callbacks[0].status), (7, 204));
    pings_nobody(&log.callbacks[0].data);
    let after = log.original.unwrap();
    assert!(
        after["content"].as_str().unwrap().contains("Nothing"),
        "{after}"
    );
    assert_eq!(after["components"], json!([]), "{after}");
    assert_eq!(discord_held(&s, BOB, "Vellum").await, (2, Some(1)));

    // Registered once per bot, not once per command or interaction.
    assert_eq!(discord.command_registrations(VELLUM), 1);
    assert_eq!(discord.command_registrations(WICK), 1);
}

/// The privacy routes sit behind the same per-key rate limit as turns: over it, 429 with
/// `Retry-After`, and another key keeps its own budget.
#[tokio::test(flavor = "multi_thread")]
async fn privacy_routes_share_the_keys_rate_limit() {
    let rig = Rig::start(
        "privacy_rate",
        &[
            ("WHISPERFLEET_HTTP_RATE_REQUESTS", "2".into()),
            ("WHISPERFLEET_HTTP_RATE_WINDOW_S", "3600".into()),
            ("WHISPERFLEET_PRIVACY_TIMEOUT_MS", "200".into()),
        ],
        false,
    )
    .await;
    for method in [reqwest::Method::GET, reqwest::Method::DELETE] {
        // No worker runs here: within the limit the answer is the timeout.
        let (status, body) = rig.call(method, Some(ACME_KEY), "42", None).await;
        assert_eq!(status, 504, "{body}");
    }
    let (status, body) = rig
        .call(reqwest::Method::DELETE, Some(ACME_KEY), "42", None)
        .await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"], "rate_limited", "{body}");
    let (status, body) = rig
        .call(reqwest::Method::GET, Some(BETA_KEY), "42", None)
        .await;
    assert_eq!(status, 504, "beta's own budget: {body}");
}

/// `whisperfleet up` (embedded broker, cache and stores) serves the same privacy routes:
/// the embedded broker declares the `privacy` queue and its worker consumes it.
#[tokio::test(flavor = "multi_thread")]
async fn whisperfleet_up_serves_privacy_on_its_embedded_fleet() {
    /// Stops `up` however the test ends.
    struct Up(std::process::Child);
    impl Drop for Up {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::new();
    let dir = bin_dir()
        .join("test-logs")
        .join(format!("privacy-up-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.join("up.log")).unwrap();
    let mut up = Up(std::process::Command::new(bin("whisperfleet"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.join("home"))
        .env("WHISPERFLEET_DATA_DIR", dir.join("data"))
        .env("WHISPERFLEET_GATEWAY_ID", "privacy-up")
        .env("WHISPERFLEET_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .arg("up")
        .stdout(std::process::Stdio::from(log.try_clone().unwrap()))
        .stderr(std::process::Stdio::from(log))
        .spawn()
        .unwrap());
    let base = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(30), "up is ready", || async {
        client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await;
    let (status, body) = post_turn(
        &client,
        &base,
        json!({"character": "Vellum", "user_id": "me", "text": "My cat is called Pumpernickel."}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let memories = format!("{base}/v1/users/me/memories");
    eventually(Duration::from_secs(30), "the turn remembered", || async {
        let shown: Value = client
            .get(&memories)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        shown["memories"].as_array().is_some_and(|m| m.len() == 2)
            && texts(&shown).contains("Pumpernickel")
    })
    .await;
    let r = client
        .delete(format!("{base}/v1/users/me"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["forgotten"]["memories"], 2, "{body}");
    let shown: Value = client
        .get(&memories)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(shown["memories"], json!([]), "{shown}");
    std::process::Command::new("kill")
        .args(["-TERM", &up.0.id().to_string()])
        .status()
        .unwrap();
    assert!(up.0.wait().unwrap().success(), "up drains and exits 0");
    let _ = std::fs::remove_dir_all(&dir);
}
