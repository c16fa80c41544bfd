//! What only the embedded broker promises; the shared contract is in
//! `whisperfleet_testkit::contracts::broker`.

use std::time::Duration;

use tokio::time::timeout;

use super::*;

const WAIT: Duration = Duration::from_secs(2);

async fn declared(max: usize) -> Arc<EmbeddedBroker> {
    let b = EmbeddedBroker::with_max_queue_len(TopologySettings::default(), max);
    b.ensure_topology().await.unwrap();
    b
}

fn turn(id: &str) -> Message {
    Message::json(
        topology::TURNS_EXCHANGE,
        topology::TURNS_ROUTING_KEY,
        id.as_bytes().to_vec(),
    )
    .with_id(id)
}

async fn recv(sub: &mut Subscription) -> Delivery {
    timeout(WAIT, sub.rx.recv())
        .await
        .expect("a delivery in time")
        .expect("subscription open")
}

async fn stats(b: &EmbeddedBroker, queue: &str) -> (u64, u32) {
    let s = b.queue_stats(queue).await.unwrap().unwrap();
    (s.ready, s.consumers)
}

#[tokio::test]
async fn a_dropped_unsettled_delivery_returns_at_once_counted() {
    let b = declared(DEFAULT_MAX_QUEUE_LEN).await;
    b.publish(turn("t1")).await.unwrap();
    let mut sub = b.consume(topology::TURNS_QUEUE, 1).await.unwrap();
    let d = recv(&mut sub).await;
    // The task handling it panicked or was aborted.
    tokio::spawn(async move {
        let _d = d;
        panic!("handler died");
    })
    .await
    .unwrap_err();
    let d = recv(&mut sub).await;
    assert_eq!((d.message_id.as_deref(), d.redelivered), (Some("t1"), true));
    assert_eq!(d.delivery_count, 1);
    d.acker.ack().await.unwrap();
    assert_eq!(stats(&b, topology::TURNS_QUEUE).await, (0, 1));
}

#[tokio::test]
async fn a_receiver_dropped_without_stop_returns_its_deliveries() {
    let b = declared(DEFAULT_MAX_QUEUE_LEN).await;
    b.publish_many(vec![turn("a"), turn("b")]).await.unwrap();
    let mut sub = b.consume(topology::TURNS_QUEUE, 2).await.unwrap();
    let held = recv(&mut sub).await;
    // No stop (amqp.rs would keep the consumer until its next delivery): "b", still in
    // the channel, and the held "a" both go back, in their order.
    drop(sub);
    let mut other = b.consume(topology::TURNS_QUEUE, 5).await.unwrap();
    for want in ["a", "b"] {
        let d = recv(&mut other).await;
        assert_eq!((d.message_id.as_deref(), d.delivery_count), (Some(want), 1));
        d.acker.ack().await.unwrap();
    }
    // Settling the old delivery of a gone subscription changes nothing.
    held.acker.ack().await.unwrap();
    assert!(
        timeout(Duration::from_millis(100), other.rx.recv())
            .await
            .is_err()
    );
    assert_eq!(stats(&b, topology::TURNS_QUEUE).await, (0, 1));
}

#[tokio::test]
async fn a_full_queue_refuses_publishes_until_it_drains() {
    let b = declared(3).await;
    for i in 0..3 {
        b.publish(turn(&i.to_string())).await.unwrap();
    }
    assert!(matches!(
        b.publish(turn("overflow")).await,
        Err(BrokerError::Rejected(_))
    ));
    assert!(matches!(
        b.publish_many(vec![turn("x"), turn("y")]).await,
        Err(BrokerError::Rejected(_))
    ));
    assert_eq!(stats(&b, topology::TURNS_QUEUE).await, (3, 0));
    let mut sub = b.consume(topology::TURNS_QUEUE, 1).await.unwrap();
    // Delivered (unacked) messages do not count against the bound, as with RabbitMQ's
    // max-length.
    let d = recv(&mut sub).await;
    b.publish(turn("fits")).await.unwrap();
    d.acker.ack().await.unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let d = recv(&mut sub).await;
        ids.push(d.message_id.clone().unwrap());
        d.acker.ack().await.unwrap();
    }
    assert_eq!(ids, ["1", "2", "fits"]);
}

#[tokio::test]
async fn dead_letters_beyond_the_bound_are_dropped() {
    let b = declared(1).await;
    b.publish(Message::json(
        topology::DEAD_EXCHANGE,
        topology::TURNS_QUEUE,
        b"old".to_vec(),
    ))
    .await
    .unwrap();
    b.publish(turn("t")).await.unwrap();
    let mut sub = b.consume(topology::TURNS_QUEUE, 1).await.unwrap();
    recv(&mut sub).await.acker.reject().await.unwrap();
    assert_eq!(stats(&b, topology::TURNS_QUEUE).await, (0, 1));
    assert_eq!(stats(&b, topology::TURNS_DEAD_QUEUE).await, (1, 0));
}

#[tokio::test]
async fn deliveries_covered_by_ack_up_to_stay_settled() {
    let b = declared(DEFAULT_MAX_QUEUE_LEN).await;
    b.publish_many((0..4).map(|i| turn(&i.to_string())).collect())
        .await
        .unwrap();
    let mut sub = b.consume(topology::TURNS_QUEUE, 4).await.unwrap();
    let mut ds = Vec::new();
    for _ in 0..4 {
        ds.push(recv(&mut sub).await);
    }
    ds[2].acker.ack_up_to().await.unwrap();
    // The metrics writer drops its batch after one ack_up_to; acking a covered delivery
    // again is harmless here (on RabbitMQ it would close the channel).
    ds[0].acker.ack().await.unwrap();
    ds[1].acker.requeue().await.unwrap();
    let last = ds.pop().unwrap();
    drop(ds);
    assert!(
        timeout(Duration::from_millis(100), sub.rx.recv())
            .await
            .is_err()
    );
    drop(last); // never settled: it comes back
    let d = recv(&mut sub).await;
    assert_eq!((d.message_id.as_deref(), d.delivery_count), (Some("3"), 1));
}

#[tokio::test]
async fn prefetch_zero_is_capped() {
    let b = declared(DEFAULT_MAX_QUEUE_LEN).await;
    let n = UNLIMITED_PREFETCH + 5;
    b.publish_many((0..n).map(|i| turn(&i.to_string())).collect())
        .await
        .unwrap();
    let _sub = b.consume(topology::TURNS_QUEUE, 0).await.unwrap();
    assert_eq!(stats(&b, topology::TURNS_QUEUE).await, (5, 1));
}

#[tokio::test]
async fn a_delivery_outliving_its_broker_cannot_settle() {
    let b = declared(DEFAULT_MAX_QUEUE_LEN).await;
    b.publish(turn("t")).await.unwrap();
    let mut sub = b.consume(topology::TURNS_QUEUE, 1).await.unwrap();
    let d = recv(&mut sub).await;
    sub.stop.cancel();
    drop(sub);
    let weak = Arc::downgrade(&b);
    drop(b);
    // The subscription's watcher holds the broker until the receiver is gone.
    timeout(WAIT, async {
        while weak.strong_count() > 0 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("the broker goes once nothing holds it");
    assert!(matches!(
        d.acker.ack().await,
        Err(BrokerError::Unavailable(_))
    ));
}

#[tokio::test]
async fn stopping_a_control_subscription_deletes_its_queue() {
    let b = declared(DEFAULT_MAX_QUEUE_LEN).await;
    let ctl = b.subscribe_control().await.unwrap();
    let ping = || Message::json(topology::CONTROL_EXCHANGE, "", b"{}".to_vec());
    b.publish(ping()).await.unwrap();
    ctl.stop.cancel();
    timeout(WAIT, async {
        while b.publish(ping()).await.is_ok() {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("unroutable once the only subscription stopped");
    // What it received before the stop can still be acked.
    let mut ctl = ctl;
    let d = recv(&mut ctl).await;
    d.acker.ack().await.unwrap();
}
