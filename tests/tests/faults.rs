//! Fault scenarios seen from outside, against the real binaries and services.

use std::time::Duration;

use serde_json::json;
use whisperfleet_shared::ports::Broker;
use whisperfleet_shared::topology;
use whisperfleet_testkit::*;

/// A reply queue that is deleted under a running gateway (an operator, or `x-expires` after
/// a long pause) is declared again when the gateway resubscribes, instead of leaving it
/// reconnected but never consuming (404 retried forever) — and the next turn is answered.
#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_reply_queue_is_declared_again_and_replies_flow() {
    let mut s = setup("reply-queue-deleted", mock_latency(0)).await;
    s.fleet.spawn("worker", "worker-1", &[]).unwrap();
    let base = s.fleet.spawn_gateway(&[]).await.unwrap();
    let client = reqwest::Client::new();
    let turn = |text: &str| json!({"character": "Nora Halvorsen", "user_id": "u-rq", "text": text});
    let (status, body) = post_turn(&client, &base, turn("hello")).await.unwrap();
    assert_eq!(status, 200, "{body}");

    let queue = topology::reply_queue(&s.fleet.env["WHISPERFLEET_GATEWAY_ID"]);
    let out = std::process::Command::new("rabbitmqctl")
        .args(["delete_queue", "--vhost", &s.fleet.vhost, &queue])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let broker = broker_for(&s.fleet).await;
    eventually(Duration::from_secs(20), "the reply queue is back with its consumer", || {
        let (broker, queue) = (broker.clone(), queue.clone());
        async move {
            matches!(broker.queue_stats(&queue).await, Ok(Some(q)) if q.consumers >= 1)
        }
    })
    .await;
    let (status, body) = post_turn(&client, &base, turn("still there?"))
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "ok", "{body}");
}
