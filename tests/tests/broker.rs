//! Dead-lettering, graceful shutdown and the request cache on the real services.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::StreamExt;
use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use serde_json::json;
use whisperfleet_adapters::cache::redis::RedisCache;
use whisperfleet_shared::ports::cache::Cache;
use whisperfleet_shared::request_cache::RequestCache;
use whisperfleet_testkit::*;

#[tokio::test(flavor = "multi_thread")]
async fn malformed_turns_are_dead_lettered_with_a_reason_and_the_worker_keeps_serving() {
    let Setup {
        mut fleet,
        mock: _mock,
        ..
    } = setup("deadletter", mock_latency(0)).await;
    fleet.spawn("worker", "worker", &[]).unwrap();
    let base = fleet.spawn_gateway(&[]).await.unwrap();
    let conn = Connection::connect(&fleet.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut bodies: Vec<Vec<u8>> = vec![
        b"{not json at all".to_vec(),
        br#"{"v":1,"turn_id":"x"}"#.to_vec(),
        vec![0xff, 0xfe],
    ];
    bodies.extend(generated_malformed_turns(6));
    for body in &bodies {
        ch.basic_publish(
            "fleet.turns".into(),
            "turns".into(),
            BasicPublishOptions::default(),
            body.as_slice(),
            BasicProperties::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    // The worker keeps serving real turns.
    let client = reqwest::Client::new();
    let (status, body) = post_turn(
        &client,
        &base,
        json!({"character": "Vellum", "user_id": "u", "text": "hello archivist"}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let mut reasons = Vec::new();
    for _ in 0..300 {
        match ch
            .basic_get("turns.dead".into(), BasicGetOptions { no_ack: true })
            .await
            .unwrap()
        {
            Some(m) => {
                let headers = m.delivery.properties.headers().clone().unwrap_or_default();
                let reason = headers
                    .inner()
                    .get("x-whisperfleet-dead-reason")
                    .map(|v| match v {
                        lapin::types::AMQPValue::LongString(s) => {
                            String::from_utf8_lossy(s.as_bytes()).into_owned()
                        }
                        other => format!("{other:?}"),
                    })
                    .unwrap_or_default();
                reasons.push(reason);
            }
            None if reasons.len() >= bodies.len() => break,
            None => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    assert_eq!(
        reasons.len(),
        bodies.len(),
        "every malformed turn dead-lettered: {reasons:?}"
    );
    assert!(
        reasons.iter().all(|r| r.contains("TurnRequest")),
        "{reasons:?}"
    );
}

/// Hostile turn bodies from the property tests' generators, seeded so every run publishes
/// the same ones: arbitrary bytes, and a real turn with bytes overwritten or cut off. Each
/// is one the wire refuses (`TurnRequest::decode` fails), so each must be dead-lettered.
fn generated_malformed_turns(n: usize) -> Vec<Vec<u8>> {
    use proptest::prelude::*;
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
    use whisperfleet_shared::wire::{Conversation, TurnRequest, WIRE_VERSION};

    let turn = TurnRequest {
        v: WIRE_VERSION,
        turn_id: uuid::Uuid::now_v7(),
        conversation: Conversation {
            platform: "http".into(),
            namespace: String::new(),
            channel_id: "c".into(),
            user_id: "u".into(),
            guild_id: None,
            is_dm: true,
        },
        character: "Vellum".into(),
        user_name: "u".into(),
        text: "hello".into(),
        seq: 1,
        platform_sent_at: None,
        received_at: chrono::Utc::now(),
        published_at: chrono::Utc::now(),
        reply_to: "no-such-gateway".into(),
        platform_message_id: None,
        stream: false,
    }
    .encode();
    let len = turn.len();
    let mutated = (prop::collection::vec((0..len, any::<u8>()), 1..6), 1..=len).prop_map(
        move |(flips, cut)| {
            let mut body = turn.clone();
            for (i, b) in flips {
                body[i] = b;
            }
            body.truncate(cut);
            body
        },
    );
    let strategy = prop_oneof![prop::collection::vec(any::<u8>(), 0..200), mutated];
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let mut out = Vec::new();
    while out.len() < n {
        let body = strategy.new_tree(&mut runner).unwrap().current();
        if TurnRequest::decode(&body).is_err() {
            out.push(body);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_and_acks_in_flight_turns_before_exit() {
    let Setup {
        mut fleet, mock, ..
    } = setup("sigterm", mock_latency(1500)).await;
    fleet.spawn("worker", "worker", &[]).unwrap();
    let base = Arc::new(fleet.spawn_gateway(&[]).await.unwrap());
    let client = reqwest::Client::new();
    let mut pending = Vec::new();
    for i in 0..5 {
        let client = client.clone();
        let base = base.clone();
        pending.push(tokio::spawn(async move {
            post_turn(
                &client,
                &base,
                json!({"character": "Old Wick", "user_id": format!("u{i}"), "text": "hello keeper"}),
            )
            .await
        }));
    }
    while mock.stats.requests() < 5 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    fleet.signal("worker", "TERM").unwrap();
    let code = fleet
        .wait_exit("worker", Duration::from_secs(30))
        .await
        .unwrap();
    assert_eq!(code, Some(0), "worker exits cleanly after draining");
    for p in pending {
        let (status, body) = p.await.unwrap().unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["outcome"], "ok");
    }
    // Acked, not just answered: nothing went back to the queue when the worker left.
    let conn = Connection::connect(&fleet.amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            "turns".into(),
            lapin::options::QueueDeclareOptions::durable().passive(),
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(q.message_count(), 0);
    assert_eq!(mock.stats.requests(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn request_cache_shares_one_load_per_key_and_survives_redelivery_via_redis() {
    let prefix = format!("wf_rc_{}:", uuid::Uuid::new_v4().simple());
    let redis: Arc<dyn Cache> = Arc::new(
        RedisCache::new(
            REDIS_URL.to_string().into(),
            &prefix,
            Duration::from_millis(500),
        )
        .unwrap(),
    );
    let calls = AtomicUsize::new(0);
    let rc = RequestCache::new("turn-1", Some(redis.clone()));
    let loads = futures::stream::iter(0..32)
        .map(|_| {
            rc.load("llm", Some(Duration::from_secs(60)), || async {
                calls.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(30)).await;
                Ok::<_, String>("the answer".to_string())
            })
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    assert!(loads.iter().all(|r| r.as_deref() == Ok("the answer")));
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "32 concurrent loads, one backend call"
    );

    // A redelivered turn (new scope, same turn id) finds the value in Redis.
    let again = RequestCache::new("turn-1", Some(redis.clone()));
    let v: Result<String, String> = again
        .load("llm", Some(Duration::from_secs(60)), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok("recomputed".to_string())
        })
        .await;
    assert_eq!(v.unwrap(), "the answer");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let _ = redis.delete_matching("*").await;
}
