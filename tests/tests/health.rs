//! `/healthz` and `/readyz` of the worker and the metrics-writer, through their real HTTP
//! servers: ready while they do their job, not ready (saying why) while the broker or the
//! metrics server is gone, draining from SIGTERM until the in-flight work is done.

use std::time::Duration;

use serde_json::Value;
use whisperfleet_shared::ports::Broker;
use whisperfleet_shared::ports::broker::Message;
use whisperfleet_testkit::*;

const HANG: Duration = Duration::from_secs(30);

/// Status and JSON body of `GET url`; `None` while nothing answers.
async fn get(url: &str) -> Option<(u16, Value)> {
    let r = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    Some((status, r.json().await.unwrap_or_default()))
}

async fn until_status(url: &str, status: u16, what: &str) -> Value {
    let mut last = None;
    let deadline = std::time::Instant::now() + HANG;
    while std::time::Instant::now() < deadline {
        last = get(url).await;
        if let Some((s, body)) = &last
            && *s == status
        {
            return body.clone();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{what}: {url} never answered {status}; last {last:?}");
}

fn health_env() -> (String, (&'static str, String)) {
    let addr = format!("127.0.0.1:{}", free_port());
    (
        format!("http://{addr}"),
        ("WHISPERFLEET_HEALTH_ADDR", addr.clone()),
    )
}

/// The worker: alive and ready once consuming; on SIGTERM not ready ("draining") at once,
/// while the turn it holds still finishes and is answered; then gone.
#[tokio::test(flavor = "multi_thread")]
async fn worker_health_is_ready_then_draining_on_sigterm_then_gone() {
    let mut s = setup("health-worker", mock_latency(3000)).await;
    let (base, env) = health_env();
    s.fleet.spawn("worker", "worker-1", &[env]).unwrap();
    let ready = until_status(&format!("{base}/readyz"), 200, "ready once consuming").await;
    assert_eq!(ready["service"], "worker", "{ready}");
    let (status, alive) = get(&format!("{base}/healthz")).await.unwrap();
    assert_eq!(status, 200, "{alive}");

    let broker = broker_for(&s.fleet).await;
    let key = "gw-health";
    let taps = tap::ReplyTap::bind(&s.fleet.amqp_url(), key).await.unwrap();
    let req = tap::turn_request(key, "u-h", "hello before the end");
    tap::publish_turn(broker.as_ref(), &req).await.unwrap();
    eventually(HANG, "the turn is in the LLM", || async {
        s.mock.stats.requests() >= 1
    })
    .await;
    s.fleet.signal("worker-1", "TERM").unwrap();
    let draining = until_status(&format!("{base}/readyz"), 503, "draining after SIGTERM").await;
    assert_eq!(draining["error"], "draining", "{draining}");
    assert_eq!(
        taps.count(req.turn_id),
        0,
        "not ready before the turn finished"
    );
    let (status, _) = get(&format!("{base}/healthz")).await.unwrap();
    assert_eq!(status, 200, "alive while draining");
    s.fleet.wait_exit("worker-1", HANG).await.unwrap();
    assert_eq!(taps.count(req.turn_id), 1, "the held turn was answered");
    assert!(
        get(&format!("{base}/healthz")).await.is_none(),
        "gone after exit"
    );
}

/// The worker through a TCP proxy to RabbitMQ: not ready while the broker is unreachable
/// (saying what it cannot do), ready again once it is back and the worker consumes again.
#[tokio::test(flavor = "multi_thread")]
async fn worker_is_not_ready_while_the_broker_is_unreachable() {
    let mut s = setup("health-broker", mock_latency(0)).await;
    let proxy = TcpProxy::start("127.0.0.1:5672").await.unwrap();
    let via = s
        .fleet
        .amqp_url()
        .replace("127.0.0.1:5672", &proxy.addr().to_string());
    let (base, env) = health_env();
    s.fleet
        .spawn("worker", "worker-1", &[env, ("WHISPERFLEET_AMQP_URL", via)])
        .unwrap();
    until_status(&format!("{base}/readyz"), 200, "ready through the proxy").await;
    proxy.cut();
    let why = until_status(&format!("{base}/readyz"), 503, "not ready without a broker").await;
    assert_eq!(why["error"], "not_ready", "{why}");
    proxy.restore();
    until_status(
        &format!("{base}/readyz"),
        200,
        "ready once the broker is back",
    )
    .await;
}

/// The metrics-writer: not ready while its writes to the metrics server fail (events wait
/// in the queue), ready once a write succeeds again; draining on SIGTERM.
#[tokio::test(flavor = "multi_thread")]
async fn writer_is_not_ready_while_the_metrics_server_is_down() {
    let mut fleet = Fleet::new("health_writer").unwrap();
    let mut vm = VictoriaMetrics::start().await.unwrap();
    let (base, env) = health_env();
    fleet
        .spawn(
            "metrics-writer",
            "writer",
            &[
                env,
                ("WHISPERFLEET_INFLUX_URL", vm.url()),
                ("WHISPERFLEET_METRICS_FLUSH_INTERVAL_MS", "100".into()),
            ],
        )
        .unwrap();
    let ready = until_status(&format!("{base}/readyz"), 200, "ready once consuming").await;
    assert_eq!(ready["service"], "metrics-writer", "{ready}");
    vm.stop();
    let broker = broker_for(&fleet).await;
    let event = |i: i64| {
        Message::line_protocol(
            format!("health_probe v={i}i {}", 1_700_000_000_000_000_000i64 + i).into_bytes(),
        )
    };
    broker.publish(event(1)).await.unwrap();
    let why = until_status(
        &format!("{base}/readyz"),
        503,
        "not ready while writes fail",
    )
    .await;
    assert!(
        why["message"]
            .as_str()
            .is_some_and(|m| m.contains("metrics server")),
        "{why}"
    );
    vm.resume().await.unwrap();
    until_status(
        &format!("{base}/readyz"),
        200,
        "ready once a write succeeded",
    )
    .await;
    fleet.signal("writer", "TERM").unwrap();
    fleet.wait_exit("writer", HANG).await.unwrap();
    assert!(
        get(&format!("{base}/readyz")).await.is_none(),
        "gone after exit"
    );
}
