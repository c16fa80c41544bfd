//! The worker's consumer of privacy requests (`privacy` queue): a gateway asks to show or
//! forget what is stored about one identity (HTTP `GET /v1/users/{id}/memories`, `DELETE
//! /v1/users/{id}`, Discord `/memories`, `/forget`), a worker does it through
//! [`crate::privacy`] — the same code as the CLI's `memory show/forget` — and answers on the
//! gateway's reply queue, marked [`topology::KIND_PRIVACY`].
//!
//! Ack after done: the reply is published and confirmed, then the request is acked. A
//! malformed request is dead-lettered with a reason (and answered with an error when its
//! address can be read); a request past its `expires_at` (its gateway stopped waiting and
//! told the user it failed) is dead-lettered as expired, not done. A store that fails with a
//! retryable error is retried (the shared [`RetryPolicy`]), then the request is requeued
//! for another attempt, at most [`MAX_DELIVERIES`] deliveries (fewer when `DELIVERY_LIMIT`
//! is lower); after that, and for any other failure, the gateway gets an error reply.
//! Nothing here ends the worker.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use whisperfleet_shared::ports::broker::{self, BrokerError, Delivery, Message, Subscription};
use whisperfleet_shared::retry::{RetryPolicy, retry};
use whisperfleet_shared::topology;
use whisperfleet_shared::wire::{
    ForgottenCounts, PrivacyAction, PrivacyReply, PrivacyRequest, ShownHistory, ShownMemory,
    ShownMessage, ShownRelationship, salvage_privacy_address,
};

use crate::privacy::{self, Ports, PrivacyError, Selector};
use crate::turn::Deps;

/// Privacy requests are rare and each may touch every store: a few at a time per worker,
/// so they never crowd out turns.
pub const PRIVACY_PREFETCH: u16 = 4;

/// Deliveries of one request that failed with a retryable error before it is answered with
/// an error instead of requeued again.
pub const MAX_DELIVERIES: u32 = 3;

/// Tries within one delivery: a blip is ridden out here, an outage goes back to the queue.
fn attempt_policy() -> RetryPolicy {
    RetryPolicy::new(2, Duration::from_millis(100), Duration::from_secs(1))
}

/// How long a reply is tried before the request is requeued (it is idempotent: done again,
/// it answers the same).
const REPLY_TRIES: Duration = Duration::from_secs(5);

/// What became of one delivery (for logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    Answered,
    AnsweredError,
    DeadLettered,
    Requeued,
}

/// Consumes `requests` until `shutdown`, then finishes what it already received.
pub async fn run(
    deps: Arc<Deps>,
    mut requests: Subscription,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            d = requests.rx.recv() => match d {
                Some(d) => {
                    let deps = deps.clone();
                    tasks.spawn(async move { handle(&deps, d).await });
                }
                None => break,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    requests.stop.cancel();
    while let Ok(d) = requests.rx.try_recv() {
        let deps = deps.clone();
        tasks.spawn(async move { handle(&deps, d).await });
    }
    let drained = whisperfleet_shared::shutdown::drain(grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if !drained {
        tasks.abort_all();
    }
    drop(requests);
}

/// Handles one delivery to the end: answered and acked, requeued, or dead-lettered.
pub async fn handle(deps: &Deps, d: Delivery) -> Handled {
    let req = match PrivacyRequest::decode(&d.body) {
        Ok(r) => r,
        Err(e) => {
            let reason = format!("malformed privacy request: {e}");
            tracing::warn!(reason, "dead-lettering a privacy request");
            if let Some((to, id, action)) = salvage_privacy_address(&d.body) {
                let reply = PrivacyReply::error(id, action, "the request was malformed");
                if let Err(e) = publish_reply(deps, &to, &reply).await {
                    tracing::warn!(error = %e, "could not tell the gateway its request was malformed");
                }
            }
            return dead_letter(deps, d, &reason).await;
        }
    };
    let left = (req.expires_at - Utc::now()).to_std().unwrap_or_default();
    if left.is_zero() {
        let reason = format!(
            "expired: its gateway stopped waiting at {}",
            req.expires_at.to_rfc3339()
        );
        tracing::info!(request_id = %req.request_id, "privacy request expired; not done");
        return dead_letter(deps, d, &reason).await;
    }
    let ports = Ports {
        memory: deps.memory.memory.as_ref(),
        store: deps.store.as_ref(),
        cache: deps.cache.as_deref(),
    };
    let sel = Selector {
        identity: req.identity.clone(),
        character: req.character.clone(),
    };
    let policy = attempt_policy().with_budget(left);
    let done = retry(&policy, "privacy request", |_| {
        do_action(&ports, &sel, &req)
    })
    .await;
    let (reply, handled) = match done {
        Ok(reply) => {
            tracing::info!(request_id = %req.request_id, action = ?req.action, identity = %req.identity, "privacy request done");
            (reply, Handled::Answered)
        }
        Err(e) => {
            tracing::warn!(request_id = %req.request_id, action = ?req.action, error = %e, delivery = d.delivery_count, "privacy request failed");
            // Never past the queue's own delivery limit: the last delivery answers, rather
            // than the broker dead-lettering a request its user still waits for.
            let deliveries = MAX_DELIVERIES.min(deps.settings.delivery_limit.max(1));
            let again = e.is_retryable()
                && d.delivery_count + 1 < deliveries
                && Utc::now() < req.expires_at;
            if again {
                return requeue(d).await;
            }
            let reply = PrivacyReply::error(req.request_id, req.action, e.for_people());
            (reply, Handled::AnsweredError)
        }
    };
    match publish_reply(deps, &req.reply_to, &reply).await {
        Ok(()) => {
            if let Err(e) = d.acker.ack().await {
                tracing::warn!(error = %e, "privacy request done but not acked; it will be done again");
            }
            handled
        }
        Err(e) => {
            tracing::warn!(error = %e, "privacy reply not taken; requeueing the request");
            requeue(d).await
        }
    }
}

async fn do_action(
    ports: &Ports<'_>,
    sel: &Selector,
    req: &PrivacyRequest,
) -> Result<PrivacyReply, PrivacyError> {
    let mut reply = PrivacyReply::ok(req);
    match req.action {
        PrivacyAction::Show => {
            let stored = privacy::show(ports, sel).await?;
            reply.memories = stored
                .memories
                .into_iter()
                .map(|m| ShownMemory {
                    character: m.character,
                    role: m.role,
                    text: m.text,
                    emotion: m.emotion,
                    intensity: m.intensity,
                    channel_id: m.channel_id,
                    is_dm: m.is_dm,
                    timestamp: m.timestamp,
                })
                .collect();
            reply.relationships = stored
                .relationships
                .into_iter()
                .map(|(character, r)| ShownRelationship {
                    character,
                    trust: r.trust,
                    affection: r.affection,
                    attunement: r.attunement,
                    interactions: r.interactions,
                })
                .collect();
            reply.histories = stored
                .histories
                .into_iter()
                .map(|h| ShownHistory {
                    character: h.character,
                    messages: h
                        .entries
                        .into_iter()
                        .map(|e| ShownMessage {
                            role: serde_json::to_value(e.role)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default(),
                            text: e.text,
                        })
                        .collect(),
                })
                .collect();
            reply.cached_answers = stored.cached_answers.len() as u64;
        }
        PrivacyAction::Forget => {
            let f = privacy::forget(ports, sel).await?;
            reply.forgotten = Some(ForgottenCounts {
                memories: f.memories,
                histories: f.histories,
                relationships: f.relationships,
                cached_answers: f.cached_answers,
            });
        }
    }
    Ok(reply)
}

/// Publishes a privacy reply to its gateway, confirmed, retrying for [`REPLY_TRIES`]. A
/// gateway that is gone (unroutable) needs no reply: that is done, not an error.
async fn publish_reply(
    deps: &Deps,
    reply_to: &str,
    reply: &PrivacyReply,
) -> Result<(), BrokerError> {
    let mut msg = Message::json(topology::REPLIES_EXCHANGE, reply_to, reply.encode())
        .with_id(reply.request_id.to_string());
    msg.headers
        .insert(topology::HEADER_KIND.into(), topology::KIND_PRIVACY.into());
    let policy = RetryPolicy::forever(Duration::from_millis(100), Duration::from_secs(1));
    let tries = retry(&policy, "privacy reply publish", |_| {
        deps.broker.publish(msg.clone())
    });
    match tokio::time::timeout(REPLY_TRIES, tries).await {
        Ok(Err(BrokerError::Unroutable(why))) => {
            tracing::info!(
                reply_to,
                why,
                "privacy reply unroutable (its gateway is gone); dropped"
            );
            Ok(())
        }
        Ok(r) => r,
        Err(_) => Err(BrokerError::Unavailable(format!(
            "the privacy reply was not taken within {REPLY_TRIES:?}"
        ))),
    }
}

async fn dead_letter(deps: &Deps, d: Delivery, reason: &str) -> Handled {
    if let Err(e) = broker::dead_letter(deps.broker.as_ref(), d, reason).await {
        tracing::warn!(error = %e, "could not dead-letter a privacy request; it stays unsettled and comes back");
    }
    Handled::DeadLettered
}

async fn requeue(d: Delivery) -> Handled {
    if let Err(e) = d.acker.requeue().await {
        tracing::warn!(error = %e, "could not requeue a privacy request; the broker returns it when the channel closes");
    }
    Handled::Requeued
}
