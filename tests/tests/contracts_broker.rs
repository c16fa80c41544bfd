//! The broker contract (`whisperfleet_testkit::contracts::broker`) against RabbitMQ on a fresh
//! vhost. The embedded broker keeps it, with the same small delivery limit, in
//! `whisperfleet-adapters`' own tests.

use std::time::Duration;

use whisperfleet_shared::ports::broker::Broker;
use whisperfleet_shared::topology::TopologySettings;
use whisperfleet_testkit::contracts::broker::{self as contract, Expect};
use whisperfleet_testkit::*;

const DELIVERY_LIMIT: u32 = 2;

fn topology() -> TopologySettings {
    TopologySettings {
        delivery_limit: DELIVERY_LIMIT,
        reply_queue_expires: Duration::from_secs(600),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_broker_keeps_the_contract() {
    let fleet = Fleet::new("contract-broker").expect("fleet");
    let broker = broker_with(&fleet, topology()).await;
    contract::run(
        broker.as_ref(),
        &Expect {
            delivery_limit: DELIVERY_LIMIT,
            // A dropped lapin acker settles nothing: the message returns with the channel.
            dropped_delivery_returns: false,
        },
    )
    .await;
    assert!(broker.describe().starts_with("rabbitmq at amqp://"));
}
