//! The Discord adapter's failure handling, in process: the real gateway `Application` (with
//! its serenity bots) against the Discord stand-in, an embedded broker and a scripted worker,
//! so each case sets up in milliseconds. What Discord answers with 401/403/429/5xx must never
//! turn into duplicate posts, retry storms or one bot silencing another.

use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use tokio_util::sync::CancellationToken;
use whisperfleet_adapters::broker::embedded::EmbeddedBroker;
use whisperfleet_gateway::startup::Application;
use whisperfleet_shared::config::Config;
use whisperfleet_shared::ports::broker::{Broker, Message};
use whisperfleet_shared::topology::{self, TopologySettings};
use whisperfleet_shared::wire::{Outcome, TurnReply, TurnRequest, WIRE_VERSION};
use whisperfleet_testkit::discord::{DiscordStandIn, UserMessage};

const VELLUM: u64 = 42;
const NORA: u64 = 43;
const WAIT: Duration = Duration::from_secs(15);

/// Answers every turn with "<character> heard: <text>", after `delay` when the text says
/// "slow".
fn scripted_worker(broker: Arc<dyn Broker>) {
    tokio::spawn(async move {
        let mut sub = broker.consume(topology::TURNS_QUEUE, 16).await.unwrap();
        while let Some(d) = sub.rx.recv().await {
            let broker = broker.clone();
            tokio::spawn(async move {
                let req = TurnRequest::decode(&d.body).unwrap();
                if req.text.contains("slow") {
                    tokio::time::sleep(Duration::from_millis(2500)).await;
                }
                let reply = TurnReply {
                    v: WIRE_VERSION,
                    turn_id: req.turn_id,
                    conversation: req.conversation.clone(),
                    character: req.character.clone(),
                    text: format!("{} heard: {}", req.character, req.text),
                    outcome: Outcome::Ok,
                    timings: [("llm".to_string(), 1.0)].into_iter().collect(),
                    counters: Default::default(),
                    seq: req.seq,
                    platform_message_id: req.platform_message_id.clone(),
                    reason: None,
                    partial: false,
                };
                broker
                    .publish(Message::json(
                        topology::REPLIES_EXCHANGE,
                        &req.reply_to,
                        reply.encode(),
                    ))
                    .await
                    .unwrap();
                d.acker.ack().await.unwrap();
            });
        }
    });
}

struct Running {
    standin: DiscordStandIn,
    broker: Arc<dyn Broker>,
    stop: CancellationToken,
    run: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// The stand-in knows Vellum's and Nora's tokens; `bots` is what the gateway is given.
async fn start(test: &str, bots: &str, tune: impl FnOnce(&mut Config)) -> Running {
    start_with(test, bots, tune, true).await
}

async fn start_with(
    test: &str,
    bots: &str,
    tune: impl FnOnce(&mut Config),
    with_worker: bool,
) -> Running {
    whisperfleet_shared::telemetry::install_crypto_provider();
    let standin =
        DiscordStandIn::start(&[("tok-vellum", VELLUM, "Vellum"), ("tok-nora", NORA, "Nora")])
            .await
            .unwrap();
    let broker: Arc<dyn Broker> = EmbeddedBroker::new(TopologySettings::default());
    let mut config = Config::default();
    config.gateway.id = test.into();
    config.gateway.http_addr = "127.0.0.1:0".into();
    config.discord.bots = Some(SecretString::from(bots.to_string()));
    config.discord.api_base = standin.base_url();
    tune(&mut config);
    let app = Application::build_with(&config, broker.clone(), None)
        .await
        .unwrap();
    let broker_for_test = broker.clone();
    if with_worker {
        scripted_worker(broker.clone());
    }
    let stop = CancellationToken::new();
    let run = tokio::spawn(app.run_until_stopped(stop.clone()));
    Running {
        standin,
        broker: broker_for_test,
        stop,
        run,
    }
}

impl Running {
    async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(WAIT, self.run)
            .await
            .expect("gateway stops within the grace period")
            .unwrap()
            .unwrap();
        assert!(
            self.standin.connected_sessions().is_empty(),
            "every bot disconnected on shutdown"
        );
    }

    fn sends_to(&self, channel: u64) -> Vec<u16> {
        self.standin
            .requests()
            .iter()
            .filter(|r| {
                r.method == "POST" && r.path == format!("/api/v10/channels/{channel}/messages")
            })
            .map(|r| r.status)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_429_is_retried_once_and_a_failure_after_create_is_not_posted_twice() {
    let r = start("adapter-retry", "Vellum=tok-vellum", |_| {}).await;
    r.standin.wait_ready(1, WAIT).await.unwrap();
    r.standin.fail_next_messages(1, 429);
    r.standin
        .user_message(UserMessage::dm(1000, 7, "ada", "hello", VELLUM));
    let sent = r.standin.wait_for_messages(1000, 1, WAIT).await.unwrap();
    assert_eq!(sent[0].content().unwrap(), "Vellum heard: hello");
    assert_eq!(r.sends_to(1000), [429, 200], "one retry after the 429");

    // Discord created the message but the response was lost in a 502: the retry carries the
    // same enforced nonce, so the channel still shows the reply once.
    r.standin.fail_next_messages_after_create(1, 502);
    r.standin
        .user_message(UserMessage::dm(1001, 7, "ada", "again", VELLUM));
    r.standin
        .wait_until(WAIT, || (r.sends_to(1001).len() == 2).then_some(()))
        .await
        .unwrap();
    assert_eq!(r.sends_to(1001), [502, 200]);
    let shown: Vec<String> = r
        .standin
        .channel_messages(1001)
        .iter()
        .filter(|m| m["author"]["bot"] == true)
        .map(|m| m["content"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(shown, ["Vellum heard: again"], "posted exactly once");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_403_is_not_retried_and_silences_only_that_bot() {
    let r = start("adapter-403", "Vellum=tok-vellum,Nora=tok-nora", |_| {}).await;
    r.standin.wait_ready(2, WAIT).await.unwrap();
    r.standin.fail_next_messages(1, 403);
    r.standin
        .user_message(UserMessage::guild(9, 2000, 8, "bob", "hi").mentioning(VELLUM, "Vellum"));
    r.standin
        .wait_until(WAIT, || (!r.sends_to(2000).is_empty()).then_some(()))
        .await
        .unwrap();
    // Nora may still post there: permissions belong to each bot's user.
    r.standin
        .user_message(UserMessage::guild(9, 2000, 8, "bob", "hey").mentioning(NORA, "Nora"));
    let sent = r.standin.wait_for_messages(2000, 1, WAIT).await.unwrap();
    assert_eq!(sent[0].bot_id, Some(NORA));
    // Vellum, refused once, does not hammer the channel: no retry, and a later mention is
    // skipped without a request.
    r.standin.user_message(
        UserMessage::guild(9, 2000, 8, "bob", "hi again").mentioning(VELLUM, "Vellum"),
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let vellum_sends = r
        .standin
        .requests()
        .iter()
        .filter(|q| q.bot_id == Some(VELLUM) && q.path.ends_with("/messages"))
        .count();
    assert_eq!(vellum_sends, 1, "one attempt, then the channel is skipped");
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rejected_token_stops_only_its_bot_and_is_tried_once() {
    let r = start(
        "adapter-401",
        "Vellum=tok-vellum,Nora=tok-nora,Elena=tok-wrong",
        |_| {},
    )
    .await;
    r.standin.wait_ready(2, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let unauthorized = r
        .standin
        .requests()
        .iter()
        .filter(|q| q.status == 401)
        .count();
    assert_eq!(
        unauthorized, 1,
        "the bad token is tried once, not in a loop"
    );

    // A 401 on a send (token revoked while running) stops that bot, and only it.
    r.standin.fail_next_messages(1, 401);
    r.standin
        .user_message(UserMessage::dm(6000, 12, "xi", "hello", VELLUM));
    r.standin
        .wait_until(WAIT, || {
            let s = r.standin.connected_sessions();
            (s.len() == 1 && s[0].bot_id == NORA).then_some(())
        })
        .await
        .unwrap();
    let before = r.standin.requests().len();
    r.standin.user_message(
        UserMessage::guild(9, 2000, 8, "bob", "still there?").mentioning(NORA, "Nora"),
    );
    r.standin.wait_for_messages(2000, 1, WAIT).await.unwrap();
    let after = r.standin.requests();
    assert!(
        after[before..].iter().all(|q| q.bot_id == Some(NORA)),
        "the stopped bot sends nothing more"
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn typing_is_renewed_while_a_slow_turn_runs() {
    let r = start("adapter-typing", "Vellum=tok-vellum", |c| {
        c.discord.typing_interval = Duration::from_millis(1000);
    })
    .await;
    r.standin.wait_ready(1, WAIT).await.unwrap();
    r.standin
        .user_message(UserMessage::dm(3000, 7, "ada", "a slow one", VELLUM));
    let sent = r.standin.wait_for_messages(3000, 1, WAIT).await.unwrap();
    let typing = r.standin.typing(3000);
    assert!(
        typing.len() >= 2,
        "typing renewed during a 2.5 s turn: {} requests",
        typing.len()
    );
    assert!(
        typing.iter().all(|t| t.at <= sent[0].at),
        "typing stops when the reply goes"
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_text_is_refused_politely_and_replayed_events_answered_once() {
    let r = start("adapter-oversize", "Vellum=tok-vellum", |c| {
        c.gateway.max_text_chars = 50;
    })
    .await;
    r.standin.wait_ready(1, WAIT).await.unwrap();
    r.standin.user_message(UserMessage::dm(
        4000,
        7,
        "ada",
        "word ".repeat(20).trim(),
        VELLUM,
    ));
    let sent = r.standin.wait_for_messages(4000, 1, WAIT).await.unwrap();
    let notice = sent[0].content().unwrap();
    assert!(
        notice.contains("99 characters") && notice.contains("50"),
        "{notice}"
    );
    assert!(!notice.contains("heard"), "nothing was published: {notice}");
    assert!(
        sent[0].body.get("message_reference").is_some(),
        "a reply to the user"
    );

    // The same MESSAGE_CREATE twice (a gateway replaying after RESUME): one turn, one reply.
    let id = r
        .standin
        .user_message(UserMessage::dm(4001, 7, "ada", "once only", VELLUM));
    r.standin.replay_message(&id, Some(&[VELLUM]));
    r.standin.wait_for_messages(4001, 1, WAIT).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        r.standin.sent_messages(4001).len(),
        1,
        "the replay is dropped"
    );
    r.shutdown().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deep_turns_queue_answers_busy_with_the_position() {
    // No worker: the queue only grows.
    let r = start_with(
        "adapter-admission",
        "Vellum=tok-vellum",
        |c| c.discord.admission_depth = 3,
        false,
    )
    .await;
    r.standin.wait_ready(1, WAIT).await.unwrap();
    for i in 0..5 {
        r.broker
            .publish(Message::json(
                topology::TURNS_EXCHANGE,
                topology::TURNS_ROUTING_KEY,
                format!("backlog {i}").into_bytes(),
            ))
            .await
            .unwrap();
    }
    r.standin
        .user_message(UserMessage::dm(5000, 7, "ada", "anyone there?", VELLUM));
    let sent = r.standin.wait_for_messages(5000, 1, WAIT).await.unwrap();
    let notice = sent[0].content().unwrap();
    assert!(notice.contains("number 6 in line"), "{notice}");
    let depth = r
        .broker
        .queue_stats(topology::TURNS_QUEUE)
        .await
        .unwrap()
        .unwrap()
        .ready;
    assert_eq!(depth, 5, "the refused message was not queued");
    r.shutdown().await;
}
