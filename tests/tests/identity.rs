//! Identities no client can claim, and privacy a user can exercise: a user is (platform,
//! namespace, user_id) in every store keyed by user. Real worker, RabbitMQ, Redis,
//! PostgreSQL and the embedded vector memory; turns published directly (the reply tap says
//! when each was answered), so a test can speak as any platform.

use std::time::Duration;

use whisperfleet_shared::records;
use whisperfleet_shared::wire::TurnRequest;
use whisperfleet_testkit::tap::{ReplyTap, publish_turn, turn_request};
use whisperfleet_testkit::*;

/// The tap's routing key: replies of these turns come to the tap, not to a gateway.
const TAP: &str = "identity-tap";

fn turn(platform: &str, namespace: &str, channel: &str, user: &str, text: &str) -> TurnRequest {
    let mut t = turn_request(TAP, user, text);
    t.conversation.platform = platform.into();
    t.conversation.namespace = namespace.into();
    t.conversation.channel_id = channel.into();
    t
}

struct Rig {
    s: Setup,
    tap: ReplyTap,
    broker: std::sync::Arc<whisperfleet_adapters::broker::rabbitmq::RabbitBroker>,
}

impl Rig {
    async fn start(name: &str) -> Self {
        let mut s = setup(name, mock_latency(0)).await;
        s.fleet.spawn("worker", "worker", &[]).unwrap();
        let broker = broker_for(&s.fleet).await;
        let tap = ReplyTap::bind(&s.fleet.amqp_url(), TAP).await.unwrap();
        Self { s, tap, broker }
    }

    /// Publishes `t`, waits for its reply and for its memory to be stored; returns the
    /// prompt the LLM got for it.
    async fn run(&self, t: &TurnRequest) -> String {
        publish_turn(self.broker.as_ref(), t).await.unwrap();
        let key = records::turn_key(&t.turn_id);
        eventually(
            Duration::from_secs(30),
            "the turn answered and stored",
            || async {
                self.tap.count(t.turn_id) == 1
                    && self.s.fleet.redis_hexists(&key, records::MEMORY).await
            },
        )
        .await;
        let prompts = recorded(&self.s.record);
        let mine = prompts
            .iter()
            .rev()
            .find(|p| last_user(p).contains(&t.text))
            .unwrap_or_else(|| panic!("no prompt for {:?}", t.text));
        prompt_text(mine)
    }

    async fn pg(&self) -> sqlx::PgPool {
        sqlx::PgPool::connect(&self.s.fleet.database_url())
            .await
            .unwrap()
    }

    /// (interactions) of the identity's relationship with Nora, as stored.
    async fn interactions(&self, platform: &str, namespace: &str, user: &str) -> Option<i64> {
        sqlx::query_scalar(
            "SELECT interactions FROM relationships WHERE platform = $1 AND namespace = $2 \
             AND user_id = $3",
        )
        .bind(platform)
        .bind(namespace)
        .bind(user)
        .fetch_optional(&self.pg().await)
        .await
        .unwrap()
    }

    /// Memory points of an identity, counted in the embedded store itself.
    async fn points(&self, platform: &str, namespace: &str, user: &str) -> i64 {
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(self.s.fleet.data_dir().join("memories.sqlite"))
            .read_only(true);
        let mut c = sqlx::ConnectOptions::connect(&opts).await.unwrap();
        sqlx::query_scalar(
            "SELECT count(*) FROM memories WHERE platform = ?1 AND namespace = ?2 AND user_id = ?3",
        )
        .bind(platform)
        .bind(namespace)
        .bind(user)
        .fetch_one(&mut c)
        .await
        .unwrap()
    }
}

/// The attack of issue 14: an HTTP client names a Discord user's id and asks what the
/// character remembers about them.
#[tokio::test(flavor = "multi_thread")]
async fn an_http_client_claiming_a_discord_users_id_gets_none_of_their_data() {
    let rig = Rig::start("identity_attack").await;
    let victim = "312456789012345678";
    let dm = turn(
        "discord",
        "",
        "912345678901234567",
        victim,
        "My dog is called Biscuit and my locker code is 7391.",
    );
    rig.run(&dm).await;
    // The Discord user's own next turn recalls it (so the memory is there to be stolen).
    let own = turn(
        "discord",
        "",
        "912345678901234567",
        victim,
        "Do you remember my dog's name and the locker code?",
    );
    assert!(rig.run(&own).await.contains("Biscuit"), "premise: recalled");

    // The same id over HTTP, in the default DM channel and in the Discord channel's id.
    for channel in [format!("dm:{victim}"), "912345678901234567".to_string()] {
        let attack = turn(
            "http",
            "",
            &channel,
            victim,
            &format!("What do you remember about me? My dog? My locker code? ({channel})"),
        );
        let prompt = rig.run(&attack).await;
        for secret in ["Biscuit", "7391"] {
            assert!(
                !prompt.contains(secret),
                "the HTTP client got the Discord user's {secret:?}: {prompt}"
            );
        }
    }
    assert_eq!(
        rig.interactions("discord", "", victim).await,
        Some(2),
        "the HTTP turns moved the Discord user's relationship"
    );
    assert_eq!(rig.interactions("http", "", victim).await, Some(2));
}

#[tokio::test(flavor = "multi_thread")]
async fn two_http_namespaces_with_the_same_user_id_are_two_users() {
    let rig = Rig::start("identity_namespaces").await;
    rig.run(&turn(
        "http",
        "acme",
        "dm:sam",
        "sam",
        "My sister Ingrid lives in Bergen.",
    ))
    .await;
    let prompt = rig
        .run(&turn(
            "http",
            "globex",
            "dm:sam",
            "sam",
            "Where does my sister live, and what is her name?",
        ))
        .await;
    assert!(
        !prompt.contains("Ingrid") && !prompt.contains("Bergen"),
        "another API key's user leaked into this one: {prompt}"
    );
    assert_eq!(rig.interactions("http", "acme", "sam").await, Some(1));
    assert_eq!(rig.interactions("http", "globex", "sam").await, Some(1));
    // Still the same user within one namespace.
    let again = rig
        .run(&turn(
            "http",
            "acme",
            "dm:sam",
            "sam",
            "Which city does my sister Ingrid live in?",
        ))
        .await;
    assert!(again.contains("Bergen"), "{again}");
}

/// `memory show` and `memory forget` select exactly one identity, whatever its ids contain;
/// the neighbours whose ids or channels contain the same text keep everything.
#[tokio::test(flavor = "multi_thread")]
async fn show_and_forget_reach_exactly_one_identity_whatever_its_ids_contain() {
    let rig = Rig::start("identity_forget").await;
    let hostile = "a:b*? [c]\n\\d%3A";
    // (label, turn): the targets and their neighbours.
    let people = [
        // The case: forgetting user 42 used to match `hist:*:*:42:*`.
        (
            "t42",
            turn("http", "", "dm:42", "42", "t42 secret: kumquat"),
        ),
        (
            "n_chan",
            turn("http", "", "x:42:y", "u7", "n_chan secret: quince"),
        ),
        (
            "n_disc",
            turn("discord", "", "555", "42", "n_disc secret: loquat"),
        ),
        (
            "n_ns",
            turn("http", "k1", "dm:42", "42", "n_ns secret: medlar"),
        ),
        (
            "t_hostile",
            turn("http", "", hostile, hostile, "t_hostile secret: pawpaw"),
        ),
        (
            "n_prefix",
            turn(
                "http",
                "",
                hostile,
                &format!("{hostile}x"),
                "n_prefix secret: sapote",
            ),
        ),
        (
            "n_star",
            turn("http", "", "*", "*", "n_star secret: feijoa"),
        ),
    ];
    for (_, t) in &people {
        rig.run(t).await;
    }
    let secret = |label: &str| -> &str {
        let t = &people.iter().find(|(l, _)| *l == label).unwrap().1;
        t.text.split_once(": ").unwrap().1
    };

    // show lists exactly the identity's things.
    let shown = rig
        .s
        .fleet
        .cli(&["memory", "show", "--platform", "http", "--user", hostile])
        .unwrap();
    assert!(shown.contains(secret("t_hostile")), "{shown}");
    for other in ["n_prefix", "n_star", "t42", "n_chan"] {
        assert!(!shown.contains(secret(other)), "{other} shown: {shown}");
    }
    assert!(
        shown.contains("Nora Halvorsen") || shown.contains("nora"),
        "{shown}"
    );

    for (platform, user) in [("http", "42"), ("http", hostile)] {
        let out = rig
            .s
            .fleet
            .cli(&["memory", "forget", "--platform", platform, "--user", user])
            .unwrap();
        assert!(out.contains("forgot 2 memories"), "{out}");
    }
    for (label, t) in &people {
        let c = &t.conversation;
        let gone = label.starts_with("t");
        let points = rig.points(&c.platform, &c.namespace, &c.user_id).await;
        let rel = rig
            .interactions(&c.platform, &c.namespace, &c.user_id)
            .await;
        let hist = rig
            .s
            .fleet
            .redis_exists(&records::history_key(&t.conversation_key()))
            .await;
        let llm = rig
            .s
            .fleet
            .redis_hexists(&records::turn_key(&t.turn_id), records::LLM)
            .await;
        if gone {
            assert_eq!((points, rel, hist, llm), (0, None, false, false), "{label}");
        } else {
            assert_eq!(
                (points, rel, hist, llm),
                (2, Some(1), true, true),
                "{label}"
            );
        }
    }
    let shown = rig
        .s
        .fleet
        .cli(&["memory", "show", "--platform", "http", "--user", hostile])
        .unwrap();
    assert!(!shown.contains(secret("t_hostile")), "{shown}");
    // A Discord id without --platform means Discord.
    let shown = rig
        .s
        .fleet
        .cli(&["memory", "show", "--user", "42"])
        .unwrap();
    assert!(shown.contains(secret("n_disc")), "{shown}");
}
