//! The HTTP API's trust boundary through the real `gateway` binary: API keys (401 without or
//! with a wrong key, the key's name as the turn's namespace), the loopback-only rule without
//! keys, the per-key rate limit (429 + `Retry-After`) and the explicit body limit (413).

use std::time::Duration;

use serde_json::json;
use whisperfleet_testkit::tap::ReplyTap;
use whisperfleet_testkit::*;

const ACME_KEY: &str = "acme-0f3c9a1d5e7b2468";
const BETA_KEY: &str = "beta-9e8d7c6b5a493827";

fn keys() -> (&'static str, String) {
    (
        "WHISPERFLEET_HTTP_API_KEYS",
        format!("acme={ACME_KEY},beta={BETA_KEY}"),
    )
}

fn turn(user: &str, text: &str) -> serde_json::Value {
    json!({"character": "Nora Halvorsen", "user_id": user, "text": text})
}

#[tokio::test(flavor = "multi_thread")]
async fn api_keys_are_required_and_name_the_namespace() {
    let mut s = setup("http_keys", mock_latency(0)).await;
    s.fleet.spawn("worker", "worker", &[]).unwrap();
    let tap = ReplyTap::bind(
        &s.fleet.amqp_url(),
        &s.fleet.env["WHISPERFLEET_GATEWAY_ID"].clone(),
    )
    .await
    .unwrap();
    let base = s.fleet.spawn_gateway(&[keys()]).await.unwrap();
    let client = reqwest::Client::new();

    // Health answers anyone (spawn_gateway already waited on /readyz without a key).
    let r = client.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);

    for (key, why) in [
        (None, "no key"),
        (Some("acme-0f3c9a1d5e7b2469"), "a wrong key"),
        (Some("acme"), "the key's name"),
    ] {
        let mut req = client
            .post(format!("{base}/v1/turns"))
            .json(&turn("mallory", "let me in"));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 401, "{why}");
        let challenge = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(challenge.starts_with("Bearer"), "{why}: {challenge}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized", "{why}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("Bearer"),
            "{body}"
        );
    }
    // Basic auth with the right key is not a bearer token either.
    let r = client
        .post(format!("{base}/v1/turns"))
        .basic_auth("acme", Some(ACME_KEY))
        .json(&turn("mallory", "let me in"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        s.mock.stats.requests(),
        0,
        "no refused request reached the LLM"
    );

    let (status, body) = post_turn_with_key(
        &client,
        &base,
        Some(ACME_KEY),
        turn("u1", "Hello! What do you study?"),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let turn_id: uuid::Uuid = body["turn_id"].as_str().unwrap().parse().unwrap();
    // The identity's namespace is the key's name, whatever the body says.
    let (status, body) = post_turn_with_key(&client, &base, Some(BETA_KEY), turn("u1", "And you?"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let beta_turn: uuid::Uuid = body["turn_id"].as_str().unwrap().parse().unwrap();
    eventually(Duration::from_secs(10), "both replies at the tap", || {
        let n = tap.count(turn_id) + tap.count(beta_turn);
        async move { n == 2 }
    })
    .await;
    let replies = tap.replies();
    let ns = |id| {
        replies
            .iter()
            .find(|r| r.turn_id == id)
            .map(|r| r.conversation.namespace.clone())
            .unwrap()
    };
    assert_eq!(ns(turn_id), "acme");
    assert_eq!(ns(beta_turn), "beta");
    assert_eq!(
        replies[0].conversation.platform, "http",
        "platform stays http"
    );

    // Only names reach the gateway's log, never a key.
    let log = s.fleet.log_of("gateway");
    for k in [ACME_KEY, BETA_KEY, "acme-0f3c9a1d5e7b2469"] {
        assert!(!log.contains(k), "the gateway logged a key");
    }
    assert!(log.contains("acme"), "the key names are logged at start");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_keys_only_loopback_is_served() {
    let mut fleet = Fleet::new("http_bind").unwrap();
    let port = free_port();
    fleet
        .spawn(
            "gateway",
            "open",
            &[("WHISPERFLEET_HTTP_ADDR", format!("0.0.0.0:{port}"))],
        )
        .unwrap();
    let code = fleet
        .wait_exit("open", Duration::from_secs(30))
        .await
        .unwrap();
    assert_ne!(code, Some(0), "a non-loopback bind without keys must fail");
    let log = fleet.log_of("open");
    assert!(log.contains("WHISPERFLEET_HTTP_API_KEYS"), "{log}");
    assert!(log.contains(&format!("0.0.0.0:{port}")), "{log}");

    // A malformed keys file is refused naming the file and the line, never quoting it.
    let file = bin_dir()
        .join("test-logs")
        .join(format!("{}-keys.txt", fleet.name));
    std::fs::write(&file, format!("# clients\nacme={ACME_KEY}\n{BETA_KEY}\n")).unwrap();
    fleet
        .spawn(
            "gateway",
            "bad-file",
            &[
                ("WHISPERFLEET_HTTP_ADDR", format!("0.0.0.0:{port}")),
                (
                    "WHISPERFLEET_HTTP_API_KEYS_FILE",
                    file.display().to_string(),
                ),
            ],
        )
        .unwrap();
    let code = fleet
        .wait_exit("bad-file", Duration::from_secs(30))
        .await
        .unwrap();
    assert_ne!(code, Some(0));
    let log = fleet.log_of("bad-file");
    assert!(
        log.contains(&file.display().to_string()) && log.contains("line 3"),
        "{log}"
    );
    assert!(!log.contains(BETA_KEY) && !log.contains(ACME_KEY), "{log}");

    // With keys (here from the file) the same address is served, and says which names.
    std::fs::write(
        &file,
        format!("# clients\nacme={ACME_KEY}\nbeta={BETA_KEY}\n"),
    )
    .unwrap();
    fleet
        .spawn(
            "gateway",
            "keyed",
            &[
                ("WHISPERFLEET_HTTP_ADDR", format!("0.0.0.0:{port}")),
                (
                    "WHISPERFLEET_HTTP_API_KEYS_FILE",
                    file.display().to_string(),
                ),
            ],
        )
        .unwrap();
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(20), "the keyed gateway ready", || {
        let r = client.get(format!("http://127.0.0.1:{port}/readyz")).send();
        async move { r.await.is_ok_and(|r| r.status().is_success()) }
    })
    .await;
    let r = client
        .post(format!("http://127.0.0.1:{port}/v1/turns"))
        .json(&turn("u", "hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let _ = std::fs::remove_file(&file);
}

#[tokio::test(flavor = "multi_thread")]
async fn each_key_has_a_rate_limit_answered_with_retry_after() {
    let mut fleet = Fleet::new("http_rate").unwrap();
    let limits = [
        ("WHISPERFLEET_HTTP_RATE_REQUESTS", "3".to_string()),
        ("WHISPERFLEET_HTTP_RATE_WINDOW_S", "3600".to_string()),
    ];
    let mut env = limits.to_vec();
    env.push(keys());
    let base = fleet.spawn_gateway(&env).await.unwrap();
    let client = reqwest::Client::new();
    // Every request counts, answered or not: empty texts are refused (400) without a worker.
    let send = |key: Option<&'static str>| {
        let mut req = client
            .post(format!("{base}/v1/turns"))
            .json(&turn("u", " "));
        if let Some(k) = key {
            req = req.bearer_auth(k);
        }
        req.send()
    };
    for _ in 0..3 {
        assert_eq!(send(Some(ACME_KEY)).await.unwrap().status(), 400);
    }
    let r = send(Some(ACME_KEY)).await.unwrap();
    assert_eq!(r.status(), 429);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is whole seconds");
    // One token per 1200 s comes back.
    assert!((1..=1200).contains(&retry), "Retry-After {retry}");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "rate_limited", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("acme") && message.contains("WHISPERFLEET_HTTP_RATE_REQUESTS"),
        "{message}"
    );
    // Another key has its own bucket; a refused key charges none.
    assert_eq!(send(Some(BETA_KEY)).await.unwrap().status(), 400);
    assert_eq!(send(None).await.unwrap().status(), 401);

    // The keyless loopback caller has a bucket too.
    let mut env = limits.to_vec();
    env.push(("WHISPERFLEET_GATEWAY_ID", format!("{}-open", fleet.name)));
    let port = free_port();
    env.push(("WHISPERFLEET_HTTP_ADDR", format!("127.0.0.1:{port}")));
    fleet.spawn("gateway", "loopback", &env).unwrap();
    let open = format!("http://127.0.0.1:{port}");
    eventually(
        Duration::from_secs(20),
        "the loopback gateway ready",
        || {
            let r = client.get(format!("{open}/readyz")).send();
            async move { r.await.is_ok_and(|r| r.status().is_success()) }
        },
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let r = client
            .post(format!("{open}/v1/turns"))
            .json(&turn("u", " "))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, [400, 400, 400, 429]);
}

#[tokio::test(flavor = "multi_thread")]
async fn bodies_over_the_limit_are_413() {
    let mut fleet = Fleet::new("http_body").unwrap();
    let base = fleet
        .spawn_gateway(&[("WHISPERFLEET_HTTP_MAX_BODY_BYTES", "32768".into())])
        .await
        .unwrap();
    let client = reqwest::Client::new();
    // Over the limit: refused before it is parsed, whatever it holds.
    let mut big = turn("u", "hi");
    big["padding"] = json!("x".repeat(40_000));
    let (status, body) = post_turn(&client, &base, big).await.unwrap();
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["error"], "body_too_large", "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("WHISPERFLEET_HTTP_MAX_BODY_BYTES"),
        "{body}"
    );
    // Under it, the same body is read (and refused for its unknown field, 400).
    let mut small = turn("u", "hi");
    small["padding"] = json!("x".repeat(30_000));
    let (status, body) = post_turn(&client, &base, small).await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_body", "{body}");
}
