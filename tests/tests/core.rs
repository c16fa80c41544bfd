//! The core issue's end-to-end scenarios: real gateway and worker binaries on the real
//! RabbitMQ, Redis and PostgreSQL, against an in-process mock LLM that records every prompt.

use std::time::Duration;

use serde_json::json;
use whisperfleet_testkit::mock_llm::MockLlmOptions;
use whisperfleet_testkit::*;

fn turn(user: &str, text: &str) -> serde_json::Value {
    json!({"character": "Nora Halvorsen", "user_id": user, "text": text})
}

#[tokio::test(flavor = "multi_thread")]
async fn turn_through_real_binaries_reports_every_stage_and_caches_characters() {
    let mut s = setup("stages", mock_latency(0)).await;
    s.fleet.spawn("worker", "worker-1", &[]).unwrap();
    s.fleet.spawn("worker", "worker-2", &[]).unwrap();
    let base = s.fleet.spawn_gateway(&[]).await.unwrap();
    let client = reqwest::Client::new();

    let (status, first) = post_turn(&client, &base, turn("u1", "Hello! What do you study?"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["outcome"], "ok");
    for stage in [
        "platform_lag",
        "ingress",
        "queue_wait",
        "cdl_load",
        "context",
        "compose",
        "llm",
        "worker_total",
        "delivery",
        "end_to_end",
        "overhead",
    ] {
        assert!(
            first["timings"][stage].is_number(),
            "stage {stage} missing from {}",
            first["timings"]
        );
    }
    assert!(first["counters"]["cdl_queries"].as_u64().unwrap() <= 1);
    // Each turn took its character from exactly one level: own copy, Redis or PostgreSQL.
    let levels = |r: &serde_json::Value| {
        ["cdl_local_hits", "cdl_redis_hits", "cdl_queries"].map(|k| {
            r["counters"][k]
                .as_u64()
                .unwrap_or_else(|| panic!("{k} in {r}"))
        })
    };
    assert_eq!(levels(&first).iter().sum::<u64>(), 1, "{first}");
    // The request cache's hits, by the level that served them.
    let c = &first["counters"];
    assert_eq!(
        c["cache_local_hits"].as_u64().unwrap() + c["cache_redis_hits"].as_u64().unwrap(),
        c["cache_hits"].as_u64().unwrap(),
        "{first}"
    );
    assert_eq!(
        c["cache_redis_hits"], 0,
        "a first delivery finds nothing in Redis: {first}"
    );

    let (_, second) = post_turn(&client, &base, turn("u2", "Do you like whales?"))
        .await
        .unwrap();
    assert_eq!(second["counters"]["cdl_queries"], 0, "{second}");
    let [local, redis, store] = levels(&second);
    assert_eq!(
        (local + redis, store),
        (1, 0),
        "a cached character: {second}"
    );

    // Change the character; the next turn must use the new data.
    let mut nora: whisperfleet_shared::character::Character = serde_norway::from_str(
        &std::fs::read_to_string(repo_root().join("characters/nora-halvorsen.yaml")).unwrap(),
    )
    .unwrap();
    nora.occupation = "deep-sea cartographer".into();
    let changed = bin_dir()
        .join("test-logs")
        .join(format!("{}-nora.json", s.fleet.name));
    std::fs::write(&changed, serde_json::to_vec(&nora).unwrap()).unwrap();
    s.fleet
        .cli(&["characters", "import", changed.to_str().unwrap()])
        .unwrap();
    let (_, third) = post_turn(&client, &base, turn("u1", "What is your job now?"))
        .await
        .unwrap();
    assert_eq!(third["outcome"], "ok", "{third}");
    let prompts = recorded(&s.record);
    let last = prompts.last().expect("a recorded prompt");
    assert!(
        prompt_text(last).contains("deep-sea cartographer"),
        "the turn after the import must use the new character data"
    );
    assert!(third["counters"]["cdl_queries"].as_u64().unwrap() <= 1);
    assert_eq!(s.mock.stats.requests(), 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn http_errors_are_clear() {
    let mut s = setup("http_errors", mock_latency(0)).await;
    s.fleet.spawn("worker", "worker-1", &[]).unwrap();
    let base = s
        .fleet
        .spawn_gateway(&[("WHISPERFLEET_MAX_TEXT_CHARS", "50".into())])
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let (status, body) = post_turn(
        &client,
        &base,
        json!({"character": "Nobody", "user_id": "u", "text": "hi"}),
    )
    .await
    .unwrap();
    assert_eq!(status, 404, "{body}");
    assert_eq!(body["error"], "unknown_character");
    let (status, body) = post_turn(&client, &base, turn("u", "   ")).await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "empty_text");
    let (status, body) = post_turn(&client, &base, turn("u", &"x".repeat(51)))
        .await
        .unwrap();
    assert_eq!(status, 413, "{body}");
    assert!(body["message"].as_str().unwrap().contains("50"));
    let r = client
        .post(format!("{base}/v1/turns"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_body");
    assert_eq!(s.mock.stats.requests(), 0, "no bad request reached the LLM");
}

#[tokio::test(flavor = "multi_thread")]
async fn two_hundred_turns_twenty_conversations_in_order_exactly_once() {
    let mut s = setup("ordering", mock_latency(5)).await;
    s.fleet.spawn("worker", "worker-1", &[]).unwrap();
    s.fleet.spawn("worker", "worker-2", &[]).unwrap();
    let base = s.fleet.spawn_gateway(&[]).await.unwrap();
    assert_ordered_exactly_once(&base, "Nora Halvorsen", &s.record, 20, 10).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_after_llm_redelivers_and_answers_once_without_paying_twice() {
    let mut s = setup("sigkill", mock_latency(0)).await;
    // Worker A (the testkit worker) pauses after the LLM answered: the window in which we
    // kill it.
    s.fleet
        .spawn_args(
            "testkit-worker",
            "worker-a",
            &["--pause-after-llm-ms", "30000"],
            &[],
        )
        .unwrap();
    let base = s.fleet.spawn_gateway(&[]).await.unwrap();
    let client = reqwest::Client::new();
    let pending = {
        let client = client.clone();
        let base = base.clone();
        tokio::spawn(
            async move { post_turn(&client, &base, turn("u1", "Tell me about kelp")).await },
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while s.mock.stats.requests() < 1 {
        assert!(std::time::Instant::now() < deadline, "LLM never called");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the answer reach the request cache, then kill the worker mid-turn.
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.fleet.signal("worker-a", "KILL").unwrap();
    s.fleet
        .wait_exit("worker-a", Duration::from_secs(5))
        .await
        .unwrap();
    s.fleet.spawn("worker", "worker-b", &[]).unwrap();
    let (status, body) = pending.await.unwrap().unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "ok");
    assert_eq!(
        body["counters"]["llm_calls"], 0,
        "the redelivered turn reused the answer"
    );
    assert_eq!(s.mock.stats.requests(), 1, "the LLM was paid once");
    // Nothing left in the queue, nothing answered twice.
    let (status, next) = post_turn(&client, &base, turn("u1", "And whales?"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{next}");
    assert_eq!(next["seq"], 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_llm_call_is_answered_exactly_once() {
    let mut s = setup("sigkill_llm", mock_latency(1500)).await;
    s.fleet.spawn("worker", "worker-a", &[]).unwrap();
    let base = s.fleet.spawn_gateway(&[]).await.unwrap();
    let client = reqwest::Client::new();
    let pending = {
        let client = client.clone();
        let base = base.clone();
        tokio::spawn(
            async move { post_turn(&client, &base, turn("u9", "Tell me about otters")).await },
        )
    };
    while s.mock.stats.requests() < 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.fleet.signal("worker-a", "KILL").unwrap();
    s.fleet.spawn("worker", "worker-b", &[]).unwrap();
    let (status, body) = pending.await.unwrap().unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "ok");
    // The first call never finished, so the retry had to ask again: two requests, one reply.
    assert_eq!(s.mock.stats.requests(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_llm_gives_an_in_character_fallback_not_an_error() {
    let mut s = setup(
        "llm_down",
        MockLlmOptions {
            fail_first: 1000,
            fail_status: 500,
            ..Default::default()
        },
    )
    .await;
    s.fleet
        .spawn(
            "worker",
            "worker",
            &[("WHISPERFLEET_LLM_MAX_RETRIES", "1".into())],
        )
        .unwrap();
    let base = s.fleet.spawn_gateway(&[]).await.unwrap();
    let client = reqwest::Client::new();
    let (status, body) = post_turn(&client, &base, turn("u1", "Hello?"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "fallback");
    assert_eq!(body["reason"], "llm_unavailable");
    assert!(body["text"].as_str().unwrap().contains("Nora Halvorsen"));
    assert_eq!(s.mock.stats.requests(), 2, "one try and one retry");
}

#[tokio::test(flavor = "multi_thread")]
async fn gateway_answers_504_without_workers_and_503_without_a_broker() {
    let mut s = setup("gateway_down", mock_latency(0)).await;
    let base = s
        .fleet
        .spawn_gateway(&[("WHISPERFLEET_REPLY_TIMEOUT_MS", "800".into())])
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let (status, body) = post_turn(&client, &base, turn("u1", "anyone there?"))
        .await
        .unwrap();
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["error"], "reply_timeout");
    // Take the broker away from this gateway (its vhost disappears, connections close).
    let out = std::process::Command::new("rabbitmqctl")
        .args(["delete_vhost", &s.fleet.vhost])
        .output()
        .unwrap();
    assert!(out.status.success());
    let started = std::time::Instant::now();
    let (status, body) = post_turn(&client, &base, turn("u2", "hello?"))
        .await
        .unwrap();
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "broker_unavailable");
    assert!(started.elapsed() < Duration::from_secs(10), "bounded retry");
    let r = client.get(format!("{base}/readyz")).send().await.unwrap();
    assert_eq!(r.status(), 503);
}
