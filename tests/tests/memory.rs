//! Memory, emotion and relationships end to end: real binaries on RabbitMQ, Redis and
//! PostgreSQL, the embedded vector memory (SQLite) — its contents counted in the store.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use whisperfleet_adapters::emotion::lexicon::LexiconAnalyzer;
use whisperfleet_shared::character::Relationship;
use whisperfleet_shared::ports::EmotionAnalyzer;
use whisperfleet_testkit::*;
use whisperfleet_worker::memory::relationship_delta;

fn system_prompt(req: &serde_json::Value) -> String {
    req["messages"][0]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fact_is_remembered_for_its_user_and_never_leaks_from_a_dm() {
    let mut s = setup("memory_recall", mock_latency(0)).await;
    // History holds only the last turn, so the fact can only come back through memory.
    s.fleet
        .spawn(
            "worker",
            "worker",
            &[("WHISPERFLEET_HISTORY_LEN", "2".into())],
        )
        .unwrap();
    let base = s.fleet.spawn_gateway(&[]).await.unwrap();
    let client = reqwest::Client::new();
    let dm = |user: &str, text: &str| json!({"character": "Nora Halvorsen", "user_id": user, "text": text});
    for text in [
        "My dog is called Biscuit and he loves the beach.",
        "The weather was grey all morning.",
        "I had pasta for lunch today.",
    ] {
        let (status, body) = post_turn(&client, &base, dm("alice", text)).await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            body["counters"]["emotion_queries"], 1,
            "recent states fetched once"
        );
        assert_eq!(body["counters"]["memory_searches"], 1, "one memory search");
    }
    // Memory is stored after the reply: wait for the third turn's points.
    eventually(Duration::from_secs(10), "6 memory points", || async {
        s.fleet.memory_points().await >= 6
    })
    .await;
    assert_eq!(
        s.fleet.memory_points().await,
        6,
        "one upsert of two points per turn"
    );

    let (_, body) = post_turn(
        &client,
        &base,
        dm("alice", "Do you remember my dog's name?"),
    )
    .await
    .unwrap();
    assert!(
        body["counters"]["memories_used"].as_u64().unwrap() > 0,
        "{body}"
    );
    let prompts = recorded(&s.record);
    let last = system_prompt(prompts.last().unwrap());
    assert!(
        last.contains("Biscuit"),
        "the DM fact is recalled in the same DM: {last}"
    );
    let history: String = prompts.last().unwrap()["messages"]
        .as_array()
        .unwrap()
        .iter()
        .skip(1)
        .filter_map(|m| m["content"].as_str())
        .collect();
    assert!(
        !history.contains("Biscuit"),
        "…through memory, not short-term history"
    );

    // Another user never sees it.
    post_turn(&client, &base, dm("bob", "Do you remember my dog's name?"))
        .await
        .unwrap();
    let bob = system_prompt(recorded(&s.record).last().unwrap());
    assert!(
        !bob.contains("Biscuit"),
        "another user's memory leaked: {bob}"
    );

    // The same user in a guild channel does not see what was said in a DM.
    let (status, body) = post_turn(
        &client,
        &base,
        json!({"character": "Nora Halvorsen", "user_id": "alice", "channel_id": "guild-general",
               "guild_id": "g1", "text": "Do you remember my dog's name?"}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let guild = system_prompt(recorded(&s.record).last().unwrap());
    assert!(
        !guild.contains("Biscuit"),
        "a DM memory surfaced in a guild channel: {guild}"
    );

    // Privacy: forget alice with Nora; her memories, history and relationship are gone.
    eventually(Duration::from_secs(10), "all turns stored", || async {
        s.fleet.memory_points().await >= 12
    })
    .await;
    let out = s
        .fleet
        .cli(&[
            "memory",
            "forget",
            "--platform",
            "http",
            "--user",
            "alice",
            "--character",
            "Nora Halvorsen",
        ])
        .unwrap();
    assert!(out.contains("forgot 10 memories"), "{out}");
    assert_eq!(s.fleet.memory_points().await, 2, "only bob's turn is left");
    let pool = sqlx::PgPool::connect(&s.fleet.database_url())
        .await
        .unwrap();
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM relationships WHERE user_id = 'alice'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(left, 0);
    post_turn(
        &client,
        &base,
        dm("alice", "Do you remember my dog's name?"),
    )
    .await
    .unwrap();
    let after = recorded(&s.record);
    assert!(
        !prompt_text(after.last().unwrap()).contains("Biscuit"),
        "forgotten everywhere"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn turns_redelivered_after_sigkill_store_no_duplicate_points() {
    let mut s = setup("memory_redelivery", mock_latency(0)).await;
    // Worker A (the testkit worker) stores every turn's memory, then stalls before recording
    // it: killed there, all 100 turns come back to worker B with their points already written.
    s.fleet
        .spawn_args(
            "testkit-worker",
            "worker-a",
            &["--pause-after-memory-ms", "60000"],
            &[("WHISPERFLEET_WORKER_CONCURRENCY", "100".into())],
        )
        .unwrap();
    let base = Arc::new(s.fleet.spawn_gateway(&[]).await.unwrap());
    let client = reqwest::Client::new();
    let mut pending = Vec::new();
    for i in 0..100 {
        let (client, base) = (client.clone(), base.clone());
        pending.push(tokio::spawn(async move {
            post_turn(
                &client,
                &base,
                json!({"character": "Vellum", "user_id": format!("u{i}"), "text": format!("I found old map number {i}, I'm so happy!")}),
            )
            .await
        }));
    }
    for p in pending {
        let (status, body) = p.await.unwrap().unwrap();
        assert_eq!(status, 200, "{body}");
    }
    eventually(Duration::from_secs(30), "200 points", || async {
        s.fleet.memory_points().await >= 200
    })
    .await;
    s.fleet.signal("worker-a", "KILL").unwrap();
    s.fleet
        .wait_exit("worker-a", Duration::from_secs(5))
        .await
        .unwrap();
    s.fleet.spawn("worker", "worker-b", &[]).unwrap();
    // B finishes each turn (stores again, records it, acks): wait for the queue to empty.
    let broker = broker_for(&s.fleet).await;
    use whisperfleet_shared::ports::broker::Broker;
    eventually(Duration::from_secs(60), "turns drained", || async {
        let st = broker.queue_stats("turns").await.unwrap().unwrap();
        let done = s.fleet.turn_records_with("memory");
        st.ready == 0 && done == 100
    })
    .await;
    assert_eq!(s.fleet.memory_points().await, 200, "no duplicate points");
    // And no turn moved its relationship twice.
    let pool = sqlx::PgPool::connect(&s.fleet.database_url())
        .await
        .unwrap();
    let interactions: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(interactions), 0)::bigint FROM relationships")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(interactions, 100);
    assert_eq!(
        s.mock.stats.requests(),
        100,
        "the LLM was paid once per turn"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn relationships_after_200_concurrent_turns_equal_the_sequential_result() {
    let mut s = setup("relationships", mock_latency(2)).await;
    s.fleet.spawn("worker", "worker-1", &[]).unwrap();
    s.fleet.spawn("worker", "worker-2", &[]).unwrap();
    let base = Arc::new(s.fleet.spawn_gateway(&[]).await.unwrap());
    let texts = [
        "I love talking with you!",
        "I'm so angry about the noise.",
        "I'm scared of the storm tonight.",
        "Thank you, I trust you completely.",
        "That was disgusting.",
        "I can't wait for tomorrow!",
        "The tide is at six.",
        "I feel so sad today.",
    ];
    let client = reqwest::Client::new();
    let mut pending = Vec::new();
    for user in 0..10 {
        for k in 0..20 {
            let (client, base) = (client.clone(), base.clone());
            let text = texts[(user + k) % texts.len()];
            // A channel per turn: turns of one user run concurrently on both workers.
            pending.push(tokio::spawn(async move {
                post_turn(
                    &client,
                    &base,
                    json!({"character": "Old Wick", "user_id": format!("user{user}"),
                           "channel_id": format!("c{user}-{k}"), "text": text}),
                )
                .await
            }));
        }
    }
    for p in pending {
        let (status, body) = p.await.unwrap().unwrap();
        assert_eq!(status, 200, "{body}");
    }
    let pool = sqlx::PgPool::connect(&s.fleet.database_url())
        .await
        .unwrap();
    let analyzer = LexiconAnalyzer::new();
    for user in 0..10 {
        let mut expected = Relationship::default();
        for k in 0..20 {
            let e = analyzer.analyze(texts[(user + k) % texts.len()]);
            expected = expected.apply(relationship_delta(&e));
        }
        let uid = format!("user{user}");
        let got = eventually_row(&pool, &uid, 20).await;
        for (what, a, b) in [
            ("trust", got.0, expected.trust),
            ("affection", got.1, expected.affection),
            ("attunement", got.2, expected.attunement),
        ] {
            assert!(
                (a - b).abs() < 1e-4,
                "{uid} {what}: stored {a}, sequential {b}"
            );
        }
    }
}

/// The relationship row once all its `n` turns have been applied (memory_store runs after
/// the reply, so it may trail the HTTP answers a little).
async fn eventually_row(pool: &sqlx::PgPool, user: &str, n: i64) -> (f32, f32, f32) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let row: Option<(f32, f32, f32, i64)> = sqlx::query_as(
            "SELECT trust, affection, attunement, interactions FROM relationships WHERE user_id = $1",
        )
        .bind(user)
        .fetch_optional(pool)
        .await
        .unwrap();
        if let Some((t, a, at, i)) = row
            && i == n
        {
            return (t, a, at);
        }
        assert!(std::time::Instant::now() < deadline, "{user}: {row:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
