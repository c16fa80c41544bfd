//! The observable contract of the [`Broker`] port, as checks every implementation must pass.
//! `tests/tests/contracts_broker.rs` runs [`run`] against RabbitMQ (`RabbitBroker`) and the
//! embedded broker (`EmbeddedBroker`), so the embedded mode cannot drift from what
//! the fleet sees.
//!
//! [`run`] takes a fresh broker whose topology is not declared yet, checks what that means,
//! declares it, and runs the checks one after another. Each leaves the fleet queues it used
//! empty, and the ones that need a queue of their own (order, prefetch, round-robin) use a
//! fresh `replies.<name>` queue. A broken promise panics with what was expected; each passed
//! check is reported on stderr with its duration.
//!
//! Not in the contract, because RabbitMQ does not keep it: a dropped unsettled delivery
//! returning at once (only [`Expect::dropped_delivery_returns`] brokers), and settling a
//! delivery that an `ack_up_to` already covered (the embedded broker ignores it; on RabbitMQ
//! it is an unknown delivery tag, which closes the channel and redelivers every other
//! unsettled delivery of that subscription).

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use tokio::time::{Instant, timeout};

use whisperfleet_shared::ports::broker::{
    self, Broker, BrokerError, Delivery, Message, Subscription,
};
use whisperfleet_shared::topology;

/// How long a delivery that must arrive may take (RabbitMQ included).
const ARRIVES: Duration = Duration::from_secs(3);
/// How long to watch for a delivery that must not arrive.
const QUIET: Duration = Duration::from_millis(200);

/// What the implementation under test is expected to do where implementations may differ.
#[derive(Debug, Clone)]
pub struct Expect {
    /// The `turns` delivery limit the broker was built with (keep it small: the check
    /// delivers a message `limit + 1` times).
    pub delivery_limit: u32,
    /// Dropping an unsettled delivery (its task died) returns the message at once. Only the
    /// embedded broker can: on RabbitMQ a dropped lapin acker settles nothing, and the
    /// message comes back only when the subscription (its channel) goes.
    pub dropped_delivery_returns: bool,
}

/// Runs every check, in order, on a fresh broker (topology not declared yet).
pub async fn run(b: &dyn Broker, expect: &Expect) {
    check("before ensure_topology", undeclared(b)).await;
    b.ensure_topology().await.expect("ensure_topology");
    b.ensure_topology()
        .await
        .expect("ensure_topology is idempotent");
    check("describe and readiness", basics(b)).await;
    check("routing of every exchange", routing(b)).await;
    check("unroutable publishes are rejected", unroutable(b)).await;
    check("FIFO order", fifo(b)).await;
    check("prefetch bound", prefetch(b)).await;
    check("round-robin between subscriptions", round_robin(b)).await;
    check("requeue is a counted redelivery", requeue(b)).await;
    check("settling twice has one effect", settle_twice(b)).await;
    check("reject dead-letters", reject(b)).await;
    check("dead_letter() adds the reason", dead_letter(b)).await;
    check(
        "delivery limit dead-letters",
        delivery_limit(b, expect.delivery_limit),
    )
    .await;
    check(
        "a stopped and dropped subscription returns its deliveries",
        dropped_subscription(b),
    )
    .await;
    if expect.dropped_delivery_returns {
        check("a dropped unsettled delivery returns", dropped_delivery(b)).await;
    }
    check("stop keeps delivered messages ackable", stop(b)).await;
    check("a subscription says whether it consumes", consuming(b)).await;
    check("ack_up_to settles a batch", ack_up_to(b)).await;
    check("queue_stats", queue_stats(b)).await;
}

async fn check(name: &str, f: impl Future<Output = ()>) {
    let started = Instant::now();
    f.await;
    eprintln!("broker contract: {name}: ok ({:?})", started.elapsed());
}

fn msg(exchange: &str, key: &str, id: &str) -> Message {
    Message::json(exchange, key, id.as_bytes().to_vec()).with_id(id)
}

fn turn(id: &str) -> Message {
    msg(topology::TURNS_EXCHANGE, topology::TURNS_ROUTING_KEY, id)
}

fn body(d: &Delivery) -> String {
    String::from_utf8_lossy(&d.body).into_owned()
}

async fn recv(sub: &mut Subscription, what: &str) -> Delivery {
    match timeout(ARRIVES, sub.rx.recv()).await {
        Ok(Some(d)) => d,
        Ok(None) => panic!("{what}: the subscription ended"),
        Err(_) => panic!("{what}: nothing arrived within {ARRIVES:?}"),
    }
}

async fn nothing(sub: &mut Subscription, what: &str) {
    if let Ok(Some(d)) = timeout(QUIET, sub.rx.recv()).await {
        panic!("{what}: unexpected delivery {d:?} ({})", body(&d));
    }
}

async fn consume(b: &dyn Broker, queue: &str, prefetch: u16) -> Subscription {
    b.consume(queue, prefetch)
        .await
        .unwrap_or_else(|e| panic!("consume {queue}: {e}"))
}

async fn publish(b: &dyn Broker, m: Message) {
    let what = format!("publish to {}/{}", m.exchange, m.routing_key);
    b.publish(m).await.unwrap_or_else(|e| panic!("{what}: {e}"));
}

async fn ack(d: Delivery) {
    d.acker.ack().await.expect("ack");
}

/// Stops and drops a subscription whose deliveries are all settled.
fn close(sub: Subscription) {
    sub.stop.cancel();
    drop(sub);
}

/// Polls `f` until it holds (broker-side effects of a cancel are asynchronous on RabbitMQ).
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + ARRIVES;
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn ready(b: &dyn Broker, queue: &str) -> u64 {
    b.queue_stats(queue)
        .await
        .expect("queue_stats")
        .unwrap_or_else(|| panic!("queue {queue} does not exist"))
        .ready
}

/// The queue holds nothing and nobody consumes it (checks leave fleet queues so).
async fn settled_empty(b: &dyn Broker, queue: &str) {
    eventually(&format!("{queue} empty and unconsumed"), || async {
        let s = b
            .queue_stats(queue)
            .await
            .expect("queue_stats")
            .expect(queue);
        s.ready == 0 && s.consumers == 0
    })
    .await;
}

/// Consumes one message from a dead-letter queue and acks it.
async fn take_dead(b: &dyn Broker, queue: &str, what: &str) -> Delivery {
    let mut sub = consume(b, queue, 10).await;
    let d = recv(&mut sub, what).await;
    nothing(&mut sub, what).await;
    d.acker.ack().await.expect("ack dead letter");
    close(sub);
    settled_empty(b, queue).await;
    d
}

async fn undeclared(b: &dyn Broker) {
    for queue in [
        topology::TURNS_QUEUE,
        topology::METRICS_QUEUE,
        topology::TURNS_DEAD_QUEUE,
        topology::METRICS_DEAD_QUEUE,
        topology::PRIVACY_QUEUE,
        topology::PRIVACY_DEAD_QUEUE,
    ] {
        assert_eq!(b.queue_stats(queue).await.expect("stats"), None, "{queue}");
    }
    match b.consume(topology::TURNS_QUEUE, 1).await {
        Err(BrokerError::Fatal(_)) => {}
        other => panic!(
            "consuming before the topology should be Fatal, got {:?}",
            other.map(|_| ())
        ),
    }
    // RabbitMQ: 404 no exchange, on the channel: Unavailable (retryable, until declared).
    let res = b.publish(turn("too-early")).await;
    assert!(
        matches!(res, Err(BrokerError::Unavailable(_))),
        "publish before the topology: {res:?}"
    );
    let res = b.ensure_reply_queue("too-early").await;
    assert!(
        matches!(res, Err(BrokerError::Unavailable(_))),
        "reply queue before the topology: {res:?}"
    );
    let res = b.subscribe_control().await.map(|_| ());
    assert!(
        matches!(res, Err(BrokerError::Unavailable(_))),
        "control subscription before the topology: {res:?}"
    );
}

async fn basics(b: &dyn Broker) {
    assert!(b.is_ready().await, "is_ready");
    assert!(!b.describe().is_empty(), "describe");
    assert!(
        !b.describe().contains("guest:guest"),
        "describe shows credentials: {}",
        b.describe()
    );
    match b.consume("no-such-queue", 1).await {
        Err(BrokerError::Fatal(_)) => {}
        other => panic!(
            "consuming an unknown queue should be Fatal, got {:?}",
            other.map(|_| ())
        ),
    }
}

async fn routing(b: &dyn Broker) {
    // fleet.turns -> turns, fleet.metrics -> metrics.
    for (exchange, key, queue) in [
        (
            topology::TURNS_EXCHANGE,
            topology::TURNS_ROUTING_KEY,
            topology::TURNS_QUEUE,
        ),
        (
            topology::METRICS_EXCHANGE,
            topology::METRICS_ROUTING_KEY,
            topology::METRICS_QUEUE,
        ),
        // fleet.dead routes by the source queue's name.
        (
            topology::DEAD_EXCHANGE,
            topology::TURNS_QUEUE,
            topology::TURNS_DEAD_QUEUE,
        ),
        (
            topology::DEAD_EXCHANGE,
            topology::METRICS_QUEUE,
            topology::METRICS_DEAD_QUEUE,
        ),
        // fleet.privacy -> privacy, and its dead letters.
        (
            topology::PRIVACY_EXCHANGE,
            topology::PRIVACY_ROUTING_KEY,
            topology::PRIVACY_QUEUE,
        ),
        (
            topology::DEAD_EXCHANGE,
            topology::PRIVACY_QUEUE,
            topology::PRIVACY_DEAD_QUEUE,
        ),
    ] {
        let id = format!("route-{queue}");
        publish(b, msg(exchange, key, &id)).await;
        let mut sub = consume(b, queue, 5).await;
        let d = recv(&mut sub, &format!("{exchange}/{key} -> {queue}")).await;
        assert_eq!(d.queue, queue);
        assert_eq!(body(&d), id);
        ack(d).await;
        close(sub);
        settled_empty(b, queue).await;
    }

    // fleet.replies routes by gateway id (the turn's `reply_to`) to replies.<gateway-id>.
    let queue = b
        .ensure_reply_queue("contract-gw")
        .await
        .expect("reply queue");
    assert_eq!(queue, topology::reply_queue("contract-gw"));
    assert_eq!(
        b.ensure_reply_queue("contract-gw").await.expect("again"),
        queue,
        "ensure_reply_queue is idempotent"
    );
    publish(b, msg(topology::REPLIES_EXCHANGE, "contract-gw", "reply-1")).await;
    let mut sub = consume(b, &queue, 5).await;
    let d = recv(&mut sub, "fleet.replies -> replies.<gateway-id>").await;
    assert_eq!(
        (d.queue.as_str(), body(&d).as_str()),
        (queue.as_str(), "reply-1")
    );
    ack(d).await;
    close(sub);

    // fleet.control is a fanout: every subscription gets every message.
    let mut c1 = b.subscribe_control().await.expect("control 1");
    let mut c2 = b.subscribe_control().await.expect("control 2");
    publish(b, msg(topology::CONTROL_EXCHANGE, "", "ctl-1")).await;
    publish(b, msg(topology::CONTROL_EXCHANGE, "any-key", "ctl-2")).await;
    for (n, c) in [(1, &mut c1), (2, &mut c2)] {
        for want in ["ctl-1", "ctl-2"] {
            let d = recv(c, &format!("control subscription {n}")).await;
            assert_eq!(body(&d), want, "control subscription {n}");
            ack(d).await;
        }
        nothing(c, "control").await;
    }
    close(c1);
    close(c2);
    // Their private queues go with them: the fanout reaches nobody any more.
    eventually("control queues deleted", || async {
        matches!(
            b.publish(msg(topology::CONTROL_EXCHANGE, "", "ctl-late"))
                .await,
            Err(BrokerError::Unroutable(_))
        )
    })
    .await;
}

async fn unroutable(b: &dyn Broker) {
    for (exchange, key) in [
        (topology::TURNS_EXCHANGE, "no-such-key"),
        (topology::METRICS_EXCHANGE, topology::TURNS_ROUTING_KEY),
        (topology::DEAD_EXCHANGE, "replies"),
        // A retired gateway's replies; and the queue name is not the routing key.
        (topology::REPLIES_EXCHANGE, "no-such-gateway"),
        (topology::REPLIES_EXCHANGE, "replies.contract-gw"),
    ] {
        match b.publish(msg(exchange, key, "lost")).await {
            Err(BrokerError::Unroutable(_)) => {}
            other => panic!("publish to {exchange}/{key:?} should be Unroutable, got {other:?}"),
        }
    }
    // publish_many reports the refusal among routable messages.
    let res = b
        .publish_many(vec![
            turn("many-1"),
            msg(topology::TURNS_EXCHANGE, "no-such-key", "many-lost"),
            turn("many-2"),
        ])
        .await;
    assert!(
        matches!(res, Err(BrokerError::Unroutable(_))),
        "publish_many with an unroutable message: {res:?}"
    );
    // Drain whatever of the batch got through (implementations may differ there).
    let mut sub = consume(b, topology::TURNS_QUEUE, 10).await;
    while let Ok(Some(d)) = timeout(QUIET, sub.rx.recv()).await {
        assert!(body(&d).starts_with("many-"), "{}", body(&d));
        ack(d).await;
    }
    close(sub);
    settled_empty(b, topology::TURNS_QUEUE).await;
}

async fn fifo(b: &dyn Broker) {
    let queue = b.ensure_reply_queue("contract-fifo").await.expect("queue");
    let ids: Vec<String> = (0..100).map(|i| format!("fifo-{i}")).collect();
    b.publish_many(
        ids.iter()
            .map(|id| msg(topology::REPLIES_EXCHANGE, "contract-fifo", id))
            .collect(),
    )
    .await
    .expect("publish_many");
    assert_eq!(ready(b, &queue).await, 100, "ready after publish_many");
    let mut sub = consume(b, &queue, 7).await;
    for want in &ids {
        let d = recv(&mut sub, "fifo").await;
        assert_eq!(&body(&d), want, "FIFO order");
        assert_eq!(d.message_id.as_deref(), Some(want.as_str()));
        ack(d).await;
    }
    nothing(&mut sub, "fifo").await;
    close(sub);
}

async fn consuming(b: &dyn Broker) {
    let queue = b
        .ensure_reply_queue("contract-consuming")
        .await
        .expect("queue");
    let sub = consume(b, &queue, 1).await;
    // Taken out before the subscription goes, as a readiness probe does.
    let mut consuming = sub.consuming.clone();
    assert!(consuming.now(), "consuming once consume() returned");
    let control = b.subscribe_control().await.expect("control subscription");
    assert!(control.consuming.now(), "a control subscription consumes");
    close(control);
    close(sub);
    timeout(ARRIVES, consuming.wait_for(false))
        .await
        .expect("a stopped subscription no longer says it consumes");
    assert!(!consuming.now());
}

async fn prefetch(b: &dyn Broker) {
    let queue = b
        .ensure_reply_queue("contract-prefetch")
        .await
        .expect("queue");
    for i in 0..3 {
        publish(
            b,
            msg(
                topology::REPLIES_EXCHANGE,
                "contract-prefetch",
                &format!("pf-{i}"),
            ),
        )
        .await;
    }
    let mut sub = consume(b, &queue, 2).await;
    let first = recv(&mut sub, "prefetch 1st").await;
    let second = recv(&mut sub, "prefetch 2nd").await;
    nothing(&mut sub, "a third delivery beyond prefetch 2").await;
    // The unsettled two are not ready any more.
    assert_eq!(ready(b, &queue).await, 1, "ready while 2 are unacked");
    ack(first).await;
    let third = recv(&mut sub, "third after an ack").await;
    assert_eq!(body(&third), "pf-2");
    ack(second).await;
    ack(third).await;
    close(sub);
}

async fn round_robin(b: &dyn Broker) {
    let queue = b.ensure_reply_queue("contract-rr").await.expect("queue");
    let mut a = consume(b, &queue, 10).await;
    let mut c = consume(b, &queue, 10).await;
    for i in 0..10 {
        publish(
            b,
            msg(
                topology::REPLIES_EXCHANGE,
                "contract-rr",
                &format!("rr-{i}"),
            ),
        )
        .await;
    }
    // Exactly five each (a late delivery on a loaded machine only takes longer; a skewed
    // split times out or shows up in `nothing`).
    let mut got = Vec::new();
    let mut per = [0; 2];
    for (n, sub) in [(0, &mut a), (1, &mut c)] {
        for _ in 0..5 {
            let d = recv(sub, "round-robin share").await;
            per[n] += 1;
            got.push(body(&d));
            ack(d).await;
        }
    }
    nothing(&mut a, "round-robin: more than its share").await;
    nothing(&mut c, "round-robin: more than its share").await;
    got.sort();
    let mut want: Vec<String> = (0..10).map(|i| format!("rr-{i}")).collect();
    want.sort();
    assert_eq!(got, want, "every message exactly once");
    assert_eq!(per, [5, 5], "alternating between two subscriptions");
    close(a);
    close(c);
}

async fn requeue(b: &dyn Broker) {
    let mut m = turn("rq-1");
    m.headers.insert("x-test".into(), "kept".into());
    publish(b, m).await;
    let mut sub = consume(b, topology::TURNS_QUEUE, 1).await;
    let d = recv(&mut sub, "first delivery").await;
    assert!(!d.redelivered, "first delivery is not redelivered");
    assert_eq!(d.delivery_count, 0, "first delivery_count");
    assert_eq!(d.message_id.as_deref(), Some("rq-1"));
    assert_eq!(d.headers.get("x-test").map(String::as_str), Some("kept"));
    d.acker.requeue().await.expect("requeue");
    let d = recv(&mut sub, "after requeue").await;
    assert_eq!(body(&d), "rq-1");
    assert!(d.redelivered, "redelivered after requeue");
    assert_eq!(d.delivery_count, 1, "delivery_count after one requeue");
    assert_eq!(d.message_id.as_deref(), Some("rq-1"));
    assert_eq!(d.headers.get("x-test").map(String::as_str), Some("kept"));
    ack(d).await;
    nothing(&mut sub, "after ack").await;
    close(sub);
    settled_empty(b, topology::TURNS_QUEUE).await;
}

async fn settle_twice(b: &dyn Broker) {
    publish(b, turn("twice-1")).await;
    let mut sub = consume(b, topology::TURNS_QUEUE, 5).await;
    let d = recv(&mut sub, "delivery").await;
    d.acker.requeue().await.expect("requeue");
    // A second settle of the same delivery is a no-op, not a second return or an ack.
    d.acker.requeue().await.expect("requeue again");
    d.acker.ack().await.expect("ack after requeue");
    let again = recv(&mut sub, "the one redelivery").await;
    assert_eq!(again.delivery_count, 1);
    again.acker.ack().await.expect("ack");
    again.acker.ack().await.expect("ack twice");
    nothing(&mut sub, "no second redelivery").await;
    close(sub);
    settled_empty(b, topology::TURNS_QUEUE).await;
}

async fn reject(b: &dyn Broker) {
    for (exchange, key, queue, dead) in [
        (
            topology::TURNS_EXCHANGE,
            topology::TURNS_ROUTING_KEY,
            topology::TURNS_QUEUE,
            topology::TURNS_DEAD_QUEUE,
        ),
        (
            topology::METRICS_EXCHANGE,
            topology::METRICS_ROUTING_KEY,
            topology::METRICS_QUEUE,
            topology::METRICS_DEAD_QUEUE,
        ),
        (
            topology::PRIVACY_EXCHANGE,
            topology::PRIVACY_ROUTING_KEY,
            topology::PRIVACY_QUEUE,
            topology::PRIVACY_DEAD_QUEUE,
        ),
    ] {
        let mut m = msg(exchange, key, &format!("rej-{queue}"));
        m.headers.insert("x-test".into(), "kept".into());
        publish(b, m).await;
        let mut sub = consume(b, queue, 1).await;
        let d = recv(&mut sub, "delivery to reject").await;
        d.acker.reject().await.expect("reject");
        nothing(&mut sub, "rejected message does not come back").await;
        close(sub);
        settled_empty(b, queue).await;
        let dl = take_dead(b, dead, &format!("{queue} reject -> {dead}")).await;
        assert_eq!(body(&dl), format!("rej-{queue}"));
        assert_eq!(dl.message_id, Some(format!("rej-{queue}")));
        assert_eq!(dl.headers.get("x-test").map(String::as_str), Some("kept"));
        assert_eq!(
            dl.headers.get("x-first-death-reason").map(String::as_str),
            Some("rejected"),
            "{:?}",
            dl.headers
        );
    }
    // A reply queue has no dead-letter target: a rejected reply is gone.
    let queue = b.ensure_reply_queue("contract-rej").await.expect("queue");
    publish(
        b,
        msg(topology::REPLIES_EXCHANGE, "contract-rej", "rej-reply"),
    )
    .await;
    let mut sub = consume(b, &queue, 1).await;
    recv(&mut sub, "reply").await.acker.reject().await.unwrap();
    nothing(&mut sub, "rejected reply").await;
    close(sub);
    assert_eq!(ready(b, &queue).await, 0);
}

async fn dead_letter(b: &dyn Broker) {
    let mut m = turn("dl-1");
    m.headers.insert("x-test".into(), "kept".into());
    publish(b, m).await;
    let mut sub = consume(b, topology::TURNS_QUEUE, 1).await;
    let d = recv(&mut sub, "delivery").await;
    broker::dead_letter(b, d, "unreadable: test")
        .await
        .expect("dead_letter");
    nothing(&mut sub, "dead-lettered message does not come back").await;
    close(sub);
    settled_empty(b, topology::TURNS_QUEUE).await;
    let dl = take_dead(b, topology::TURNS_DEAD_QUEUE, "dead_letter -> turns.dead").await;
    assert_eq!(body(&dl), "dl-1");
    assert_eq!(dl.message_id.as_deref(), Some("dl-1"));
    let h = |k: &str| dl.headers.get(k).map(String::as_str);
    assert_eq!(h(topology::HEADER_DEAD_REASON), Some("unreadable: test"));
    assert_eq!(h(topology::HEADER_DEAD_SOURCE), Some(topology::TURNS_QUEUE));
    assert_eq!(h("x-test"), Some("kept"));
}

async fn delivery_limit(b: &dyn Broker, limit: u32) {
    // RabbitMQ 3.10's quorum queue dead-letters a message when a return takes its count past
    // the limit: `limit + 1` deliveries, counted 0..=limit, whether each came back by
    // requeue or because its subscription went (a worker that died).
    let want: Vec<u32> = (0..=limit).collect();
    publish(b, turn("limit-requeued")).await;
    let mut sub = consume(b, topology::TURNS_QUEUE, 1).await;
    let mut counts = Vec::new();
    for _ in 0..want.len() {
        let d = recv(&mut sub, "a delivery within the limit").await;
        counts.push(d.delivery_count);
        assert_eq!(
            d.headers.get("x-delivery-count").cloned(),
            (d.delivery_count > 0).then(|| d.delivery_count.to_string()),
            "the quorum queue's header"
        );
        d.acker.requeue().await.expect("requeue");
    }
    nothing(&mut sub, "a delivery past the limit").await;
    close(sub);
    assert_eq!(counts, want, "delivery counts, requeued");
    settled_empty(b, topology::TURNS_QUEUE).await;
    let dl = take_dead(b, topology::TURNS_DEAD_QUEUE, "requeued past the limit").await;
    assert_eq!(body(&dl), "limit-requeued");
    assert_eq!(dl.delivery_count, 0, "counted afresh in turns.dead");
    let h = |k: &str| dl.headers.get(k).cloned();
    assert_eq!(h("x-first-death-reason").as_deref(), Some("delivery_limit"));
    assert_eq!(
        h("x-first-death-queue").as_deref(),
        Some(topology::TURNS_QUEUE)
    );

    publish(b, turn("limit-abandoned")).await;
    let mut counts = Vec::new();
    for _ in 0..want.len() {
        let mut sub = consume(b, topology::TURNS_QUEUE, 1).await;
        let d = recv(
            &mut sub,
            "a delivery within the limit (subscriptions dropped)",
        )
        .await;
        sub.stop.cancel();
        drop(sub);
        counts.push(d.delivery_count);
        drop(d);
    }
    assert_eq!(counts, want, "delivery counts, subscriptions dropped");
    settled_empty(b, topology::TURNS_QUEUE).await;
    let dl = take_dead(b, topology::TURNS_DEAD_QUEUE, "abandoned past the limit").await;
    assert_eq!(body(&dl), "limit-abandoned");
}

async fn dropped_subscription(b: &dyn Broker) {
    publish(b, turn("drop-1")).await;
    publish(b, turn("drop-2")).await;
    let mut sub = consume(b, topology::TURNS_QUEUE, 2).await;
    // One received and held unsettled, one still waiting in the subscription's channel.
    let held = recv(&mut sub, "first").await;
    eventually("both delivered", || async {
        ready(b, topology::TURNS_QUEUE).await == 0
    })
    .await;
    sub.stop.cancel();
    drop(sub);
    drop(held);
    let mut sub = consume(b, topology::TURNS_QUEUE, 5).await;
    let mut got = BTreeMap::new();
    for _ in 0..2 {
        let d = recv(&mut sub, "redelivery after the subscription went").await;
        assert!(d.redelivered, "redelivered");
        assert_eq!(d.delivery_count, 1, "counted");
        got.insert(body(&d), ());
        ack(d).await;
    }
    assert_eq!(
        got.into_keys().collect::<Vec<_>>(),
        ["drop-1", "drop-2"],
        "both came back"
    );
    nothing(&mut sub, "nothing else").await;
    close(sub);
    settled_empty(b, topology::TURNS_QUEUE).await;
}

async fn dropped_delivery(b: &dyn Broker) {
    publish(b, turn("lost-task-1")).await;
    let mut sub = consume(b, topology::TURNS_QUEUE, 1).await;
    let d = recv(&mut sub, "first").await;
    drop(d); // the handling task died
    let d = recv(&mut sub, "returned after its delivery was dropped").await;
    assert_eq!(body(&d), "lost-task-1");
    assert!(d.redelivered);
    assert_eq!(d.delivery_count, 1);
    ack(d).await;
    nothing(&mut sub, "once").await;
    close(sub);
    settled_empty(b, topology::TURNS_QUEUE).await;
}

async fn stop(b: &dyn Broker) {
    let queue = b.ensure_reply_queue("contract-stop").await.expect("queue");
    let publish_n = |from: usize, n: usize| async move {
        for i in from..from + n {
            publish(
                b,
                msg(
                    topology::REPLIES_EXCHANGE,
                    "contract-stop",
                    &format!("stop-{i}"),
                ),
            )
            .await;
        }
    };
    publish_n(0, 3).await;
    let mut sub = consume(b, &queue, 2).await;
    eventually("two delivered", || async { ready(b, &queue).await == 1 }).await;
    sub.stop.cancel();
    eventually("no consumer after stop", || async {
        b.queue_stats(&queue).await.unwrap().unwrap().consumers == 0
    })
    .await;
    publish_n(3, 2).await;
    // What was delivered before the stop is still there and can be acked.
    for want in ["stop-0", "stop-1"] {
        let d = recv(&mut sub, "delivered before stop").await;
        assert_eq!(body(&d), want);
        ack(d).await;
    }
    if let Ok(Some(d)) = timeout(QUIET, sub.rx.recv()).await {
        panic!("delivery after stop: {}", body(&d));
    }
    drop(sub);
    // Acked ones are gone; the rest waits.
    eventually("3 left after stop", || async {
        ready(b, &queue).await == 3
    })
    .await;
}

async fn ack_up_to(b: &dyn Broker) {
    let queue = b.ensure_reply_queue("contract-batch").await.expect("queue");
    for i in 0..5 {
        publish(
            b,
            msg(
                topology::REPLIES_EXCHANGE,
                "contract-batch",
                &format!("batch-{i}"),
            ),
        )
        .await;
    }
    let mut sub = consume(b, &queue, 5).await;
    let mut ds = Vec::new();
    for _ in 0..5 {
        ds.push(recv(&mut sub, "batch").await);
    }
    // Acks batch-0..=batch-3 in one go; batch-4 stays unsettled.
    ds[3].acker.ack_up_to().await.expect("ack_up_to");
    let last = ds.pop().expect("five");
    sub.stop.cancel();
    drop(sub);
    drop(ds);
    drop(last);
    let mut sub = consume(b, &queue, 5).await;
    let d = recv(&mut sub, "the one unsettled").await;
    assert_eq!(body(&d), "batch-4");
    assert!(d.redelivered);
    ack(d).await;
    nothing(&mut sub, "the batch was settled").await;
    close(sub);
}

async fn queue_stats(b: &dyn Broker) {
    assert_eq!(
        b.queue_stats("no-such-queue").await.expect("stats"),
        None,
        "unknown queue"
    );
    let queue = b.ensure_reply_queue("contract-stats").await.expect("queue");
    let stats = |ready, consumers| whisperfleet_shared::ports::broker::QueueStats {
        queue: queue.clone(),
        ready,
        consumers,
    };
    assert_eq!(b.queue_stats(&queue).await.unwrap(), Some(stats(0, 0)));
    for i in 0..3 {
        publish(
            b,
            msg(
                topology::REPLIES_EXCHANGE,
                "contract-stats",
                &format!("st-{i}"),
            ),
        )
        .await;
    }
    assert_eq!(b.queue_stats(&queue).await.unwrap(), Some(stats(3, 0)));
    let mut s1 = consume(b, &queue, 1).await;
    let s2 = consume(b, &queue, 1).await;
    // Delivered-but-unacked messages are not ready.
    eventually("2 delivered", || async {
        b.queue_stats(&queue).await.unwrap() == Some(stats(1, 2))
    })
    .await;
    let d = recv(&mut s1, "stats").await;
    ack(d).await;
    eventually("the third delivered", || async {
        b.queue_stats(&queue).await.unwrap() == Some(stats(0, 2))
    })
    .await;
    close(s2);
    eventually("one consumer left, its delivery returned", || async {
        b.queue_stats(&queue).await.unwrap() == Some(stats(1, 1))
    })
    .await;
    close(s1);
    eventually("no consumers, all returned", || async {
        b.queue_stats(&queue).await.unwrap() == Some(stats(2, 0))
    })
    .await;
}
