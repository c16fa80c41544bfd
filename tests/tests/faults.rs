//! Fault scenarios seen from outside, against the real binaries and services.

use std::time::Duration;

use serde_json::json;
use whisperfleet_shared::ports::Broker;
use whisperfleet_shared::topology;
use whisperfleet_testkit::report;
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
    s.fleet.delete_queue(&queue);

    let broker = broker_for(&s.fleet).await;
    eventually(Duration::from_secs(20), "the reply queue is back with its consumer", || {
        let (broker, queue) = (broker.clone(), queue.clone());
        async move {
            matches!(broker.queue_stats(&queue).await, Ok(Some(q)) if q.consumers >= 1)
        }
    })
    .await;
    let started = std::time::Instant::now();
    let (status, body) = post_turn(&client, &base, turn("still there?"))
        .await
        .unwrap();
    report::record(&report::Row {
        fault: "the gateway's reply queue deleted under it".into(),
        load: "1 turn before, 1 after, LLM 0 ms".into(),
        turns: 2,
        answered: 1 + usize::from(status == 200),
        duplicate_replies: 0,
        unseen_in_history: 0,
        stuck_unacked: s.fleet.stuck_unacked(topology::TURNS_QUEUE).await,
        p99_ms: started.elapsed().as_secs_f64() * 1000.0,
    });
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "ok", "{body}");
}

/// Declares `replies.<key>` so that RabbitMQ refuses (nacks) every publish to it.
async fn refusing_reply_queue(fleet: &Fleet, key: &str) -> lapin::Connection {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let conn = lapin::Connection::connect(&fleet.amqp_url(), Default::default())
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let queue = topology::reply_queue(key);
    ch.queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    ch.queue_bind(
        queue.as_str().into(),
        topology::REPLIES_EXCHANGE.into(),
        key.into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();
    conn
}

/// A reply the broker nacks was not sent: the worker tries again (and gives the turn back
/// to the queue) instead of acking the turn with its reply lost. Once the reply queue takes
/// messages again, the reply arrives there, once, and nothing is left unacked.
#[tokio::test(flavor = "multi_thread")]
async fn a_nacked_reply_is_not_counted_as_sent() {
    let mut s = setup("reply-nacked", mock_latency(0)).await;
    s.fleet.spawn("worker", "worker-1", &[]).unwrap();
    let broker = broker_for(&s.fleet).await;
    let key = "gw-nack";
    let refusing = refusing_reply_queue(&s.fleet, key).await;
    let tap = whisperfleet_testkit::tap::ReplyTap::bind(&s.fleet.amqp_url(), key)
        .await
        .unwrap();
    let req = whisperfleet_testkit::tap::turn_request(key, "u-nack", "hello there");
    whisperfleet_testkit::tap::publish_turn(broker.as_ref(), &req)
        .await
        .unwrap();
    // The tap gets a copy of every attempt, also of those the refusing queue nacked.
    eventually(Duration::from_secs(20), "a first reply attempt", || async {
        tap.count(req.turn_id) >= 1
    })
    .await;
    // The reply queue takes messages again: swapped over AMQP within milliseconds. (With
    // rabbitmqctl the queue was missing for about a second, and a retry landing in that gap
    // reached only the tap: confirmed, so the worker rightly stopped, and the test waited
    // for a reply that had been delivered to nobody it read.)
    let queue = topology::reply_queue(key);
    let ch = refusing.create_channel().await.unwrap();
    ch.queue_delete(queue.as_str().into(), Default::default())
        .await
        .unwrap();
    broker.ensure_reply_queue(key).await.unwrap();
    let mut replies = broker.consume(&queue, 10).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(30), replies.rx.recv())
        .await
        .expect("the reply arrives once the reply queue accepts it again")
        .unwrap();
    let reply = whisperfleet_shared::wire::TurnReply::decode(&got.body).unwrap();
    assert_eq!(reply.turn_id, req.turn_id);
    assert_eq!(
        reply.outcome,
        whisperfleet_shared::wire::Outcome::Ok,
        "{reply:?}"
    );
    got.acker.ack().await.unwrap();
    eventually(Duration::from_secs(20), "turn settled", || async {
        let st = turns_stats(broker.as_ref()).await;
        st.ready == 0 && s.fleet.turn_records_with("replied") == 1
    })
    .await;
    let second = tokio::time::timeout(Duration::from_secs(2), replies.rx.recv()).await;
    report::record(&report::Row {
        fault: "broker nacks the reply (reply queue refusing publishes), then accepts".into(),
        load: "1 turn, LLM 0 ms".into(),
        turns: 1,
        answered: 1,
        duplicate_replies: usize::from(second.is_ok()),
        unseen_in_history: 0,
        stuck_unacked: s.fleet.stuck_unacked(topology::TURNS_QUEUE).await,
        p99_ms: report::p99(&tap.latencies_ms(std::slice::from_ref(&req))),
    });
    assert!(second.is_err(), "a second reply reached the reply queue");
    assert_eq!(s.mock.stats.requests(), 1, "the LLM was asked once");
}

/// A turn redelivered after its reply was sent but before its memory was recorded is not
/// answered again, not even with the deadline's apology: it only finishes its memory.
#[tokio::test(flavor = "multi_thread")]
async fn a_redelivered_answered_turn_is_not_answered_again() {
    let mut s = setup("answered-redelivered", mock_latency(0)).await;
    let deadline = [("WHISPERFLEET_TURN_DEADLINE_MS", "3000".to_string())];
    // Paused between memory_store and its record, the reply long sent: then killed.
    s.fleet
        .spawn_args(
            "testkit-worker",
            "worker-a",
            &["--pause-after-memory-ms", "60000"],
            &deadline,
        )
        .unwrap();
    let broker = broker_for(&s.fleet).await;
    let key = "gw-redelivered";
    let tap = whisperfleet_testkit::tap::ReplyTap::bind(&s.fleet.amqp_url(), key)
        .await
        .unwrap();
    let req =
        whisperfleet_testkit::tap::turn_request(key, "u-redelivered", "remember the lighthouse");
    whisperfleet_testkit::tap::publish_turn(broker.as_ref(), &req)
        .await
        .unwrap();
    eventually(Duration::from_secs(20), "the reply", || async {
        tap.count(req.turn_id) == 1
    })
    .await;
    // Past the turn's deadline by the time it is redelivered.
    tokio::time::sleep(Duration::from_millis(3200)).await;
    s.fleet.signal("worker-a", "KILL").unwrap();
    s.fleet
        .wait_exit("worker-a", Duration::from_secs(5))
        .await
        .unwrap();
    s.fleet.spawn("worker", "worker-b", &deadline).unwrap();
    eventually(
        Duration::from_secs(30),
        "the memory step recorded",
        || async { s.fleet.turn_records_with("memory") == 1 },
    )
    .await;
    eventually(Duration::from_secs(10), "turn settled", || async {
        let st = turns_stats(broker.as_ref()).await;
        st.ready == 0
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    report_one_turn(
        "worker kill -9 after the reply, before the memory record; redelivered past the deadline",
        "1 turn, LLM 0 ms",
        &tap,
        &req,
        &s.fleet,
    )
    .await;
    assert_eq!(
        tap.count(req.turn_id),
        1,
        "replies published: {:?}",
        tap.replies()
    );
    assert_eq!(s.mock.stats.requests(), 1, "the LLM was asked once");
}

/// The same turn given to two workers at once (the gateway republished it after a lost
/// confirm) runs once: one LLM call, one reply.
#[tokio::test(flavor = "multi_thread")]
async fn one_turn_runs_on_one_worker_at_a_time() {
    let mut s = setup("one-runner", mock_latency(1500)).await;
    s.fleet.spawn("worker", "worker-1", &[]).unwrap();
    s.fleet.spawn("worker", "worker-2", &[]).unwrap();
    let broker = broker_for(&s.fleet).await;
    eventually(Duration::from_secs(20), "two consumers", || async {
        let st = turns_stats(broker.as_ref()).await;
        st.consumers == 2
    })
    .await;
    let key = "gw-twice";
    let tap = whisperfleet_testkit::tap::ReplyTap::bind(&s.fleet.amqp_url(), key)
        .await
        .unwrap();
    let req = whisperfleet_testkit::tap::turn_request(key, "u-twice", "only once, please");
    for _ in 0..2 {
        whisperfleet_testkit::tap::publish_turn(broker.as_ref(), &req)
            .await
            .unwrap();
    }
    eventually(Duration::from_secs(30), "both copies settled", || async {
        let st = turns_stats(broker.as_ref()).await;
        st.ready == 0 && tap.count(req.turn_id) >= 1 && s.fleet.turn_records_with("memory") == 1
    })
    .await;
    // The second copy waits for the lease, then finds the turn done.
    tokio::time::sleep(Duration::from_secs(2)).await;
    report_one_turn(
        "the same turn published twice (lost confirm), two workers",
        "1 turn × 2 copies, LLM 1500 ms",
        &tap,
        &req,
        &s.fleet,
    )
    .await;
    assert_eq!(tap.count(req.turn_id), 1, "{:?}", tap.replies());
    assert_eq!(s.mock.stats.requests(), 1, "the LLM was asked once");
}

/// A reply the client never saw (504: it came after the gateway stopped waiting) does not
/// enter the conversation: the next prompt does not present it as said, and it is not
/// remembered.
#[tokio::test(flavor = "multi_thread")]
async fn a_reply_nobody_saw_is_not_presented_as_said() {
    let mut s = setup("unseen-reply", mock_latency(2500)).await;
    s.fleet.spawn("worker", "worker-1", &[]).unwrap();
    let base = s
        .fleet
        .spawn_gateway(&[("WHISPERFLEET_REPLY_TIMEOUT_MS", "1000".to_string())])
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let turn =
        |text: &str| json!({"character": "Nora Halvorsen", "user_id": "u-unseen", "text": text});
    let (status, body) = post_turn(&client, &base, turn("the first secret is AMBER-17"))
        .await
        .unwrap();
    assert_eq!(status, 504, "{body}");
    // Let the worker finish the first turn (its LLM call ends 2.5 s in).
    eventually(Duration::from_secs(20), "the first turn done", || async {
        s.fleet.turn_records_with("memory") == 1
    })
    .await;
    let (status, body) = post_turn(&client, &base, turn("what did I just tell you?"))
        .await
        .unwrap();
    assert_eq!(status, 504, "{body}");
    eventually(Duration::from_secs(20), "the second prompt", || async {
        recorded(&s.record).len() >= 2
    })
    .await;
    let prompts = recorded(&s.record);
    let second = prompt_text(&prompts[1]);
    // The second turn is in flight (its prompt was recorded): wait until it ended (its
    // memory step is recorded however it ended), then until RabbitMQ counts it settled.
    eventually(Duration::from_secs(20), "the second turn ended", || async {
        s.fleet.turn_records_with("memory") == 2
    })
    .await;
    eventually(
        Duration::from_secs(20),
        "the second turn settled",
        || async { s.fleet.unacked(topology::TURNS_QUEUE) == 0 },
    )
    .await;
    let remembered = s.fleet.memory_points().await;
    report::record(&report::Row {
        fault: "HTTP reply timeout shorter than the turn (504), then the next message".into(),
        load: "2 turns of one conversation, LLM 2500 ms, REPLY_TIMEOUT_MS 1000".into(),
        turns: 2,
        answered: 0,
        duplicate_replies: 0,
        unseen_in_history: usize::from(second.contains("AMBER-17")) + usize::from(remembered > 0),
        stuck_unacked: s.fleet.stuck_unacked(topology::TURNS_QUEUE).await,
        p99_ms: 1000.0,
    });
    assert!(
        !second.contains("AMBER-17"),
        "the unseen turn is in the next prompt:\n{second}"
    );
    assert_eq!(
        s.fleet.memory_points().await,
        0,
        "the unseen turn was remembered"
    );
}

/// The report row of a one-turn scenario observed through `tap`.
async fn report_one_turn(
    fault: &str,
    load: &str,
    tap: &whisperfleet_testkit::tap::ReplyTap,
    req: &whisperfleet_shared::wire::TurnRequest,
    fleet: &Fleet,
) {
    report::record(&report::Row {
        fault: fault.into(),
        load: load.into(),
        turns: 1,
        answered: usize::from(tap.count(req.turn_id) >= 1),
        duplicate_replies: tap.duplicates(),
        unseen_in_history: 0,
        stuck_unacked: fleet.stuck_unacked(topology::TURNS_QUEUE).await,
        p99_ms: report::p99(&tap.latencies_ms(std::slice::from_ref(req))),
    });
}

/// Lengths of every conversation's history list in this fleet.
fn history_lengths(fleet: &Fleet) -> Vec<usize> {
    const LENGTHS: &str = "local out = {} \
        for _, k in ipairs(redis.call('KEYS', ARGV[1])) do out[#out + 1] = redis.call('LLEN', k) end \
        return out";
    let out = std::process::Command::new("redis-cli")
        .args(["EVAL", LENGTHS, "0", &format!("{}hist:*", fleet.prefix)])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// After which step of a turn the worker is killed, and how a test sees that every turn got there.
#[derive(Clone, Copy)]
enum Boundary {
    Llm,
    History,
    Reply,
    Metrics,
}

/// 20 conversations' turns are all paused at `boundary` on worker A, which is killed -9;
/// worker B finishes them. Every turn is answered exactly once (counted at the broker), the
/// LLM is paid once per turn when its answer was recorded before the kill, history holds
/// each turn once, and nothing is left unacked.
async fn killed_at(boundary: Boundary, test: &str) {
    const TURNS: usize = 20;
    let mut s = setup(test, mock_latency(0)).await;
    let flag = match boundary {
        Boundary::Llm => "--pause-after-llm-ms",
        Boundary::History => "--pause-after-history-ms",
        Boundary::Reply => "--pause-after-reply-ms",
        Boundary::Metrics => "--pause-after-metrics-ms",
    };
    s.fleet
        .spawn_args(
            "testkit-worker",
            "worker-a",
            &[flag, "120000"],
            &[("WHISPERFLEET_WORKER_CONCURRENCY", "32".to_string())],
        )
        .unwrap();
    let broker = broker_for(&s.fleet).await;
    let key = format!("gw-{test}");
    let tap = whisperfleet_testkit::tap::ReplyTap::bind(&s.fleet.amqp_url(), &key)
        .await
        .unwrap();
    let reqs: Vec<_> = (0..TURNS)
        .map(|c| {
            whisperfleet_testkit::tap::turn_request(
                &key,
                &format!("u{c}"),
                &format!("conv {c} hello"),
            )
        })
        .collect();
    for r in &reqs {
        whisperfleet_testkit::tap::publish_turn(broker.as_ref(), r)
            .await
            .unwrap();
    }
    eventually(
        Duration::from_secs(30),
        "every turn at the boundary",
        || async {
            match boundary {
                Boundary::Llm => s.fleet.turn_records_with("llm") == TURNS,
                Boundary::History => s.fleet.turn_records_with("history") == TURNS,
                Boundary::Reply => s.fleet.turn_records_with("replied") == TURNS,
                Boundary::Metrics => s.fleet.turn_records_with("memory") == TURNS,
            }
        },
    )
    .await;
    // The premise, checked: worker A holds every turn at the boundary (nothing acked), and
    // before the reply boundary nothing was replied yet. A pause that does not hold would let
    // A finish its turns and the test pass without testing anything. (RabbitMQ refreshes a
    // quorum queue's unacked count every few seconds, hence the wait.)
    eventually(
        Duration::from_secs(15),
        "worker A holds every turn unacked",
        || async { s.fleet.unacked(topology::TURNS_QUEUE) == TURNS as u64 },
    )
    .await;
    if matches!(boundary, Boundary::Llm | Boundary::History) {
        assert!(
            tap.per_turn().is_empty(),
            "worker A replied before the boundary it should be paused at"
        );
    }
    s.fleet.signal("worker-a", "KILL").unwrap();
    s.fleet
        .wait_exit("worker-a", Duration::from_secs(5))
        .await
        .unwrap();
    s.fleet.spawn("worker", "worker-b", &[]).unwrap();
    eventually(
        Duration::from_secs(60),
        "every turn finished and acked",
        || async {
            let st = turns_stats(broker.as_ref()).await;
            st.ready == 0
                && s.fleet.unacked(topology::TURNS_QUEUE) == 0
                && s.fleet.turn_records_with("memory") == TURNS
                && tap.per_turn().len() == TURNS
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let per_turn = tap.per_turn();
    let lengths = history_lengths(&s.fleet);
    report::record(&report::Row {
        fault: format!(
            "worker kill -9 after {}",
            match boundary {
                Boundary::Llm => "the LLM answered",
                Boundary::History => "the history append",
                Boundary::Reply => "the reply publish",
                Boundary::Metrics => "the metric publish",
            }
        ),
        load: format!("{TURNS} conversations, all in flight, LLM 0 ms"),
        turns: TURNS,
        answered: per_turn.len(),
        duplicate_replies: tap.duplicates(),
        // Every turn here was answered, so none is unseen; a history entry twice would be
        // a turn presented twice.
        unseen_in_history: lengths.iter().map(|n| n.saturating_sub(2) / 2).sum(),
        stuck_unacked: s.fleet.stuck_unacked(topology::TURNS_QUEUE).await,
        p99_ms: report::p99(&tap.latencies_ms(&reqs)),
    });
    for r in &reqs {
        assert_eq!(
            per_turn.get(&r.turn_id),
            Some(&1),
            "replies of {}",
            r.turn_id
        );
    }
    assert_eq!(
        s.mock.stats.requests(),
        TURNS as u64,
        "the LLM was paid once per turn"
    );
    let lengths = history_lengths(&s.fleet);
    assert_eq!(lengths.len(), TURNS, "{lengths:?}");
    assert!(
        lengths.iter().all(|&n| n == 2),
        "each turn once in its history: {lengths:?}"
    );
    let dead = broker
        .queue_stats(topology::TURNS_DEAD_QUEUE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(dead.ready, 0, "nothing dead-lettered");
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_after_llm_under_twenty_conversations() {
    killed_at(Boundary::Llm, "kill-after-llm").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_after_history_append_under_twenty_conversations() {
    killed_at(Boundary::History, "kill-after-history").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_after_reply_publish_under_twenty_conversations() {
    killed_at(Boundary::Reply, "kill-after-reply").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_after_metric_publish_under_twenty_conversations() {
    killed_at(Boundary::Metrics, "kill-after-metrics").await;
}
