//! A lapin delivery as the port's [`Delivery`]: its headers and delivery count read, and
//! an [`Acker`] that settles it within the broker timeout.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::{BasicAckOptions, BasicNackOptions, BasicRejectOptions};
use lapin::types::AMQPValue;
use whisperfleet_shared::ports::broker::{Acker, BrokerError, Delivery};

use super::bounded;

fn header_string(v: &AMQPValue) -> Option<String> {
    Some(match v {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_string(),
        AMQPValue::LongLongInt(i) => i.to_string(),
        AMQPValue::LongInt(i) => i.to_string(),
        AMQPValue::LongUInt(i) => i.to_string(),
        AMQPValue::ShortInt(i) => i.to_string(),
        AMQPValue::ShortUInt(i) => i.to_string(),
        AMQPValue::Boolean(b) => b.to_string(),
        _ => return None,
    })
}

pub(super) fn convert(queue: &str, d: lapin::message::Delivery, timeout: Duration) -> Delivery {
    let mut headers = BTreeMap::new();
    if let Some(table) = d.properties.headers() {
        for (k, v) in table.inner() {
            if let Some(s) = header_string(v) {
                headers.insert(k.as_str().to_string(), s);
            }
        }
    }
    let delivery_count = headers
        .get("x-delivery-count")
        .and_then(|c| c.parse().ok())
        .unwrap_or(u32::from(d.redelivered));
    Delivery {
        queue: queue.to_string(),
        message_id: d.properties.message_id().as_ref().map(|m| m.to_string()),
        headers,
        redelivered: d.redelivered,
        delivery_count,
        body: d.data,
        acker: Box::new(LapinAcker {
            acker: d.acker,
            timeout,
        }),
    }
}

/// Settles one delivery within the broker timeout.
struct LapinAcker {
    acker: lapin::Acker,
    timeout: Duration,
}

#[async_trait]
impl Acker for LapinAcker {
    async fn ack(&self) -> Result<(), BrokerError> {
        let a = &self.acker;
        bounded(self.timeout, "acking", a.ack(BasicAckOptions::default())).await?;
        Ok(())
    }
    async fn ack_up_to(&self) -> Result<(), BrokerError> {
        let a = &self.acker;
        bounded(
            self.timeout,
            "acking",
            a.ack(BasicAckOptions { multiple: true }),
        )
        .await?;
        Ok(())
    }
    async fn requeue(&self) -> Result<(), BrokerError> {
        let a = &self.acker;
        let requeue = BasicNackOptions {
            requeue: true,
            ..Default::default()
        };
        bounded(self.timeout, "requeueing", a.nack(requeue)).await?;
        Ok(())
    }
    async fn reject(&self) -> Result<(), BrokerError> {
        let a = &self.acker;
        let reject = BasicRejectOptions { requeue: false };
        bounded(self.timeout, "rejecting", a.reject(reject)).await?;
        Ok(())
    }
}
