//! The broker misbehaving under a running fleet: a memory alarm that blocks every publisher
//! (`connection.blocked`), and a reply queue the gateway cannot consume.
//!
//! The `alarm_` tests raise RabbitMQ's memory alarm, which blocks every publisher on the
//! node, so they are left out of the default run (`.config/nextest.toml`) and `scripts/test`
//! runs them alone afterwards. The [`MemoryAlarm`] guard restores the watermark, also when a
//! test fails.

use std::time::Duration;

use serde_json::json;
use whisperfleet_shared::ports::Broker;
use whisperfleet_shared::ports::broker::{BrokerError, Message};
use whisperfleet_shared::topology;
use whisperfleet_testkit::*;

/// Longer than any bounded wait of the code under test (a few seconds), so a hang fails the
/// test instead of stalling it; not a latency assertion.
const HANG: Duration = Duration::from_secs(20);

fn turn(user: &str, text: &str) -> serde_json::Value {
    json!({"character": "Nora Halvorsen", "user_id": user, "text": text})
}

async fn readyz(client: &reqwest::Client, base: &str) -> (u16, serde_json::Value) {
    let r = client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz answers");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or_default())
}

/// With the broker blocking publishers, a turn is answered 503 within a few seconds (not
/// after the client gave up), `/readyz` says not ready and why, and the gateway says so in
/// its log once for the whole blocked period; after the alarm clears both recover.
#[tokio::test(flavor = "multi_thread")]
async fn alarm_blocked_broker_answers_turns_503_and_readyz_says_why() {
    let mut s = setup("alarm-gateway", mock_latency(0)).await;
    s.fleet.spawn("worker", "worker-1", &[]).unwrap();
    let base = s.fleet.spawn_gateway(&[]).await.unwrap();
    let client = reqwest::Client::builder().timeout(HANG).build().unwrap();
    let (status, body) = post_turn(&client, &base, turn("u-a", "hello"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");

    let alarm = MemoryAlarm::raise().unwrap();
    let mut refused_ms = Vec::new();
    for (i, user) in ["u-a", "u-b", "u-c"].into_iter().enumerate() {
        let started = std::time::Instant::now();
        let (status, body) = post_turn(&client, &base, turn(user, &format!("blocked {i}")))
            .await
            .expect("the gateway answers while the broker blocks publishers");
        refused_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        assert_eq!(status, 503, "{body}");
        assert_eq!(body["error"], "broker_unavailable", "{body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("blocking publishers"),
            "{body}"
        );
    }
    let (status, body) = readyz(&client, &base).await;
    assert_eq!(status, 503, "not ready while blocked: {body}");
    assert!(
        body["message"]
            .as_str()
            .is_some_and(|m| m.contains("blocking publishers")),
        "readyz says why: {body}"
    );
    let refusals = s
        .fleet
        .log_of("gateway")
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("answering turns with 503"))
        .count();
    assert_eq!(
        refusals, 1,
        "one warning per blocked period, not one per turn"
    );

    alarm.clear().unwrap();
    whisperfleet_testkit::report::record(&whisperfleet_testkit::report::Row {
        fault: "broker blocks publishers (memory alarm): turns refused 503 at the gateway, \
                none published"
            .into(),
        load: "3 turns during the alarm, LLM 0 ms".into(),
        turns: 3,
        answered: 0,
        duplicate_replies: 0,
        unseen_in_history: 0,
        stuck_unacked: s.fleet.stuck_unacked(topology::TURNS_QUEUE).await,
        p99_ms: whisperfleet_testkit::report::p99(&refused_ms),
    });
    eventually(HANG, "the gateway is ready again", || {
        let (client, base) = (client.clone(), base.clone());
        async move { readyz(&client, &base).await.0 == 200 }
    })
    .await;
    let (status, body) = post_turn(&client, &base, turn("u-d", "and now?"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "ok", "{body}");
}

/// At the adapter: while blocked, a publish (on a connection that published before, and on
/// one that never did) fails fast as `Unavailable` saying why, and readiness is false; the
/// consume connection keeps consuming and acking. After the alarm, publishing works again,
/// also over a connection closed in between (lazily reconnected).
#[tokio::test(flavor = "multi_thread")]
async fn alarm_publishes_fail_fast_while_the_broker_blocks_them() {
    let fleet = Fleet::new("alarm-adapter").unwrap();
    let warm = broker_for(&fleet).await;
    let queue = warm.ensure_reply_queue("alarm-adapter").await.unwrap();
    let reply = |text: &str| {
        Message::json(
            topology::REPLIES_EXCHANGE,
            "alarm-adapter",
            text.as_bytes().to_vec(),
        )
    };
    warm.publish(reply("before")).await.unwrap();
    let mut sub = warm.consume(&queue, 8).await.unwrap();
    let consuming = sub.consuming.clone();
    assert!(consuming.now(), "consuming once subscribed");

    let alarm = MemoryAlarm::raise().unwrap();
    let cold = broker_with(&fleet, Default::default()).await;
    for (which, b) in [("warm", &warm), ("cold", &cold)] {
        let res = tokio::time::timeout(HANG, b.publish(reply(which)))
            .await
            .unwrap_or_else(|_| panic!("a {which} publish hangs while blocked"));
        match res {
            Err(BrokerError::Unavailable(m)) => {
                assert!(m.contains("blocking publishers"), "{which}: {m}")
            }
            other => panic!("{which} publish while blocked: {other:?}"),
        }
        let ready = tokio::time::timeout(HANG, b.readiness()).await.unwrap();
        assert!(
            matches!(&ready, Err(BrokerError::Unavailable(m)) if m.contains("blocking publishers")),
            "{which} readiness while blocked: {ready:?}"
        );
        assert!(!b.is_ready().await);
    }
    // Consuming and acking go over the other connection, which the alarm does not block.
    let d = tokio::time::timeout(HANG, sub.rx.recv())
        .await
        .expect("a delivery while blocked")
        .unwrap();
    assert_eq!(d.body, b"before");
    tokio::time::timeout(HANG, d.acker.ack())
        .await
        .expect("an ack while blocked")
        .unwrap();
    assert!(
        consuming.now(),
        "still consuming while publishers are blocked"
    );

    alarm.clear().unwrap();
    eventually(HANG, "publishing works again", || {
        let warm = warm.clone();
        async move { warm.publish(reply("after")).await.is_ok() }
    })
    .await;
    assert!(warm.is_ready().await);
    assert_eq!(fleet.close_connections("test/publish").unwrap(), 2);
    eventually(
        HANG,
        "publishing works after the connection was closed",
        || {
            let warm = warm.clone();
            async move { warm.publish(reply("reconnected")).await.is_ok() }
        },
    )
    .await;
}

/// `/readyz` covers the reply consumer, not only the publish connection: while the reply
/// queue is gone and cannot be declared again (here: the gateway lost the permission to
/// declare), the gateway is connected but consumes nothing, and says so; once it may
/// declare again it re-creates the queue, consumes, is ready and answers turns.
#[tokio::test(flavor = "multi_thread")]
async fn readyz_is_not_ready_while_the_reply_queue_is_not_consumed() {
    let mut s = setup("readyz-consumer", mock_latency(0)).await;
    s.fleet.spawn("worker", "worker-1", &[]).unwrap();
    let base = s.fleet.spawn_gateway(&[]).await.unwrap();
    let client = reqwest::Client::builder().timeout(HANG).build().unwrap();
    let (status, body) = readyz(&client, &base).await;
    assert_eq!(status, 200, "{body}");

    let permissions = |configure: &str| {
        let out = std::process::Command::new("rabbitmqctl")
            .args([
                "set_permissions",
                "-p",
                &s.fleet.vhost,
                "guest",
                configure,
                ".*",
                ".*",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    permissions("^$");
    let queue = topology::reply_queue(&s.fleet.env["WHISPERFLEET_GATEWAY_ID"]);
    s.fleet.delete_queue(&queue);
    eventually(HANG, "readyz says the reply queue is not consumed", || {
        let (client, base, queue) = (client.clone(), base.clone(), queue.clone());
        async move {
            let (status, body) = readyz(&client, &base).await;
            status == 503 && body["message"].as_str().is_some_and(|m| m.contains(&queue))
        }
    })
    .await;

    permissions(".*");
    eventually(HANG, "the gateway consumes its reply queue again", || {
        let (client, base) = (client.clone(), base.clone());
        async move { readyz(&client, &base).await.0 == 200 }
    })
    .await;
    let (status, body) = post_turn(&client, &base, turn("u-r", "there again?"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
}

/// A worker's reply publish fails while its consume connection stays up: the broker blocks
/// publishers and the worker's publish connection is closed under it, for longer than the
/// turn's budget. The delivery is not left unsettled (it once stayed unacked for good, the
/// worker a prefetch slot short): the worker keeps trying, gives the turn back when its
/// budget is spent, and once the broker takes publishes again the turn is answered exactly
/// once from its recorded LLM answer. A worker with a single slot then answers the next turn,
/// so the slot came back; nothing stays unacked or dead-lettered.
#[tokio::test(flavor = "multi_thread")]
async fn alarm_reply_publish_failing_while_consuming_strands_nothing() {
    use whisperfleet_testkit::{report, tap};
    let mut s = setup("alarm-reply-publish", mock_latency(3000)).await;
    s.fleet
        .spawn(
            "worker",
            "worker-1",
            &[
                ("WHISPERFLEET_WORKER_CONCURRENCY", "1".to_string()),
                ("WHISPERFLEET_TURN_DEADLINE_MS", "6000".to_string()),
            ],
        )
        .unwrap();
    let broker = broker_for(&s.fleet).await;
    let key = "gw-alarm-reply";
    let taps = tap::ReplyTap::bind(&s.fleet.amqp_url(), key).await.unwrap();
    let first = tap::turn_request(key, "u-1", "hello while it lasts");
    let sent = std::time::Instant::now();
    tap::publish_turn(broker.as_ref(), &first).await.unwrap();
    eventually(HANG, "the LLM is asked", || async {
        s.mock.stats.requests() >= 1
    })
    .await;

    // Raised while the LLM is still writing, so the reply cannot leave once it is there.
    let alarm = MemoryAlarm::raise().unwrap();
    assert_eq!(
        taps.count(first.turn_id),
        0,
        "the alarm came before the reply"
    );
    eventually(
        HANG,
        "the LLM answered and the answer was recorded",
        || async { s.fleet.turn_records_with("llm") == 1 },
    )
    .await;
    let publisher = format!("worker@{}/publish", s.fleet.env["WHISPERFLEET_GATEWAY_ID"]);
    assert_eq!(
        s.fleet.close_connections(&publisher).unwrap(),
        1,
        "the worker's publish connection"
    );
    // Blocked past the turn's budget: the worker has to give the delivery back.
    tokio::time::sleep(Duration::from_secs(8).saturating_sub(sent.elapsed())).await;
    assert_eq!(
        taps.count(first.turn_id),
        0,
        "no reply got out while blocked"
    );
    alarm.clear().unwrap();

    eventually(
        Duration::from_secs(40),
        "the first turn is answered",
        || async { taps.count(first.turn_id) >= 1 },
    )
    .await;
    let second = tap::turn_request(key, "u-2", "and the next one");
    tap::publish_turn(broker.as_ref(), &second).await.unwrap();
    eventually(
        HANG,
        "the next turn is answered by the one-slot worker",
        || async { taps.count(second.turn_id) >= 1 },
    )
    .await;
    eventually(HANG, "nothing left unacked or ready", || async {
        turns_stats(broker.as_ref()).await.ready == 0 && s.fleet.unacked(topology::TURNS_QUEUE) == 0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    report::record(&report::Row {
        fault: "broker blocks publishers and the worker's publish connection is closed, past the turn's budget".into(),
        load: "1 turn, then 1 more, one-slot worker, LLM 3000 ms, budget 6 s".into(),
        turns: 2,
        answered: taps.per_turn().len(),
        duplicate_replies: taps.duplicates(),
        unseen_in_history: 0,
        stuck_unacked: s.fleet.stuck_unacked(topology::TURNS_QUEUE).await,
        p99_ms: report::p99(&taps.latencies_ms(&[first.clone(), second.clone()])),
    });
    assert_eq!(taps.count(first.turn_id), 1, "the first turn answered once");
    assert_eq!(
        taps.count(second.turn_id),
        1,
        "the second turn answered once"
    );
    assert_eq!(s.mock.stats.requests(), 2, "the LLM was paid once per turn");
    let dead = broker
        .queue_stats(topology::TURNS_DEAD_QUEUE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dead.ready, 0, "nothing dead-lettered");
}
