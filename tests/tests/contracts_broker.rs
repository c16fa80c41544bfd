//! The broker contract (`whisperfleet_shared::broker_contract`) against both implementations:
//! the embedded in-process broker and RabbitMQ on a fresh vhost, with the same small
//! delivery limit.

use std::time::Duration;

use whisperfleet_shared::broker::Broker;
use whisperfleet_shared::broker_contract::{self, Expect};
use whisperfleet_shared::embedded_broker::EmbeddedBroker;
use whisperfleet_shared::topology::TopologySettings;
use whisperfleet_tests::*;

const DELIVERY_LIMIT: u32 = 2;

fn topology() -> TopologySettings {
    TopologySettings {
        delivery_limit: DELIVERY_LIMIT,
        reply_queue_expires: Duration::from_secs(600),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_broker_keeps_the_contract() {
    let broker = EmbeddedBroker::new(topology());
    broker_contract::run(
        broker.as_ref(),
        &Expect {
            delivery_limit: DELIVERY_LIMIT,
            dropped_delivery_returns: true,
        },
    )
    .await;
    assert_eq!(broker.describe(), "embedded");
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_broker_keeps_the_contract() {
    let fleet = Fleet::new("contract-broker").expect("fleet");
    let broker = broker_with(&fleet, topology()).await;
    broker_contract::run(
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
