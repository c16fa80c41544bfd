//! One trace per turn across processes, through the real gateway and worker binaries with
//! JSON logs: the `traceparent` the gateway creates is on the turn message (a tap bound to
//! `fleet.turns`), the worker continues it (same trace id, its own span id) on the reply and
//! on its metric event, the gateway's delivery metric event carries it, and every JSON log
//! line of the turn in gateway and worker carries its `turn_id` and `trace_id`.

use std::time::Duration;

use serde_json::{Value, json};
use whisperfleet_shared::topology;
use whisperfleet_shared::trace::TraceContext;
use whisperfleet_shared::wire::{TurnReply, TurnRequest};
use whisperfleet_testkit::tap::{MessageTap, Tapped};
use whisperfleet_testkit::*;

const HANG: Duration = Duration::from_secs(30);

fn traceparent(m: &Tapped) -> TraceContext {
    let h = m
        .headers
        .get(topology::HEADER_TRACEPARENT)
        .unwrap_or_else(|| panic!("no traceparent header on {:?}", m.headers));
    TraceContext::parse(h).unwrap_or_else(|| panic!("not a W3C traceparent: {h:?}"))
}

/// The JSON log lines of `label` that belong to `turn_id` (by any span or field), each
/// parsed; panics on a line that is not JSON.
fn turn_lines(fleet: &Fleet, label: &str, turn_id: &str) -> Vec<Value> {
    let log = fleet.log_of(label);
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str::<Value>(l)
                .unwrap_or_else(|e| panic!("{label} wrote a line that is not JSON ({e}): {l}"))
        })
        .filter(|v| v.to_string().contains(turn_id))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_turn_is_one_trace_in_headers_metric_events_and_json_logs() {
    let mut s = setup("trace", mock_latency(0)).await;
    let _broker = broker_for(&s.fleet).await;
    let url = s.fleet.amqp_url();
    let gateway_id = s.fleet.env["WHISPERFLEET_GATEWAY_ID"].clone();
    let turns = MessageTap::bind(&url, topology::TURNS_EXCHANGE, topology::TURNS_ROUTING_KEY)
        .await
        .unwrap();
    let replies = MessageTap::bind(&url, topology::REPLIES_EXCHANGE, &gateway_id)
        .await
        .unwrap();
    let metrics = MessageTap::bind(
        &url,
        topology::METRICS_EXCHANGE,
        topology::METRICS_ROUTING_KEY,
    )
    .await
    .unwrap();
    let logs = [
        ("WHISPERFLEET_LOG_FORMAT", "json".to_string()),
        (
            "RUST_LOG",
            "info,whisperfleet_gateway=debug,whisperfleet_worker=debug".to_string(),
        ),
    ];
    s.fleet.spawn("worker", "worker", &logs).unwrap();
    let base = s.fleet.spawn_gateway(&logs).await.unwrap();

    let client = reqwest::Client::new();
    let (status, body) = post_turn(
        &client,
        &base,
        json!({"character": "Nora Halvorsen", "user_id": "tracer", "text": "Hello there!"}),
    )
    .await
    .unwrap();
    assert_eq!(status, 200, "{body}");
    let turn_id = body["turn_id"].as_str().unwrap().to_string();

    eventually(
        HANG,
        "the turn, its reply and both metric events",
        || async {
            !replies.seen().is_empty()
                && metrics
                    .seen()
                    .iter()
                    .filter(|m| m.body.starts_with(b"turn,") || m.body.starts_with(b"delivery,"))
                    .count()
                    >= 2
        },
    )
    .await;

    let turn = turns
        .seen()
        .into_iter()
        .find(|m| TurnRequest::decode(&m.body).is_ok_and(|r| r.turn_id.to_string() == turn_id))
        .expect("the turn message was tapped");
    let root = traceparent(&turn);
    assert!(root.sampled());

    let reply = replies
        .seen()
        .into_iter()
        .find(|m| TurnReply::decode(&m.body).is_ok_and(|r| r.turn_id.to_string() == turn_id))
        .expect("the reply was tapped");
    let worker = traceparent(&reply);
    assert_eq!(
        worker.trace_id(),
        root.trace_id(),
        "the reply continues the trace"
    );
    assert_ne!(
        worker.span_id(),
        root.span_id(),
        "the worker's span is a child of the gateway's"
    );

    let events = metrics.seen();
    let worker_event = events
        .iter()
        .find(|m| m.body.starts_with(b"turn,"))
        .expect("the worker's metric event");
    assert_eq!(traceparent(worker_event), worker, "same span as the reply");
    let delivery_event = events
        .iter()
        .find(|m| m.body.starts_with(b"delivery,"))
        .expect("the gateway's delivery event");
    assert_eq!(traceparent(delivery_event), root);

    // The logs: JSON, and each line of the turn in its span with turn_id and trace_id.
    for (label, span_id) in [("gateway", root.span_id()), ("worker", worker.span_id())] {
        let lines = turn_lines(&s.fleet, label, &turn_id);
        assert!(!lines.is_empty(), "{label} logged nothing about the turn");
        for l in &lines {
            // The turn's span, among the spans the line was logged in (a stage's, inside it).
            let span = l["spans"]
                .as_array()
                .and_then(|s| s.iter().find(|s| s["name"] == "turn"))
                .unwrap_or_else(|| panic!("{label}: a line of the turn outside its span: {l}"));
            assert_eq!(span["turn_id"], turn_id.as_str(), "{label}: {l}");
            assert_eq!(span["trace_id"], root.trace_id().as_str(), "{label}: {l}");
            assert_eq!(span["span_id"], span_id.as_str(), "{label}: {l}");
        }
    }
}
