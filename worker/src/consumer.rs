//! The worker's consumer loop: takes turns from `turns` (at most `worker_concurrency`
//! unacked at once, the broker's prefetch), runs each in its own task, and on shutdown stops
//! consuming, finishes and acks what it already received, then returns. Also listens on
//! `fleet.control` for character invalidations.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use whisperfleet_shared::character::normalize_name;
use whisperfleet_shared::ports::broker::Subscription;

use crate::turn::{self, Deps};

/// A `fleet.control` message.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ControlMessage {
    CharacterChanged { name: String, version: i64 },
}

pub async fn run(
    deps: Arc<Deps>,
    mut turns: Subscription,
    control: Option<Subscription>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let control_task = control.map(|c| tokio::spawn(control_loop(deps.clone(), c)));
    let mut tasks = JoinSet::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            d = turns.rx.recv() => match d {
                Some(d) => {
                    let deps = deps.clone();
                    tasks.spawn(async move { turn::handle(&deps, d).await });
                }
                None => break,
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    // Stop the broker from sending more; what it already sent is ours to finish.
    turns.stop.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    // Not `close()`: the subscription keeps its channel open (for our acks) until dropped.
    while let Ok(d) = turns.rx.try_recv() {
        let deps = deps.clone();
        tasks.spawn(async move { turn::handle(&deps, d).await });
    }
    let in_flight = tasks.len();
    if in_flight > 0 {
        tracing::info!(in_flight, "finishing in-flight turns before exit");
    }
    let drained = whisperfleet_shared::shutdown::drain(grace, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if !drained {
        tracing::warn!(
            left = tasks.len(),
            "turns still running after the grace period; they will be redelivered"
        );
        tasks.abort_all();
    }
    if let Some(t) = control_task {
        t.abort();
    }
    drop(turns);
}

async fn control_loop(deps: Arc<Deps>, mut control: Subscription) {
    while let Some(d) = control.rx.recv().await {
        match serde_json::from_slice::<ControlMessage>(&d.body) {
            Ok(ControlMessage::CharacterChanged { name, version }) => {
                tracing::info!(name, version, "character changed; dropping cached copy");
                deps.characters.invalidate(&normalize_name(&name));
            }
            Err(e) => tracing::warn!(error = %e, "ignoring unreadable control message"),
        }
        let _ = d.acker.ack().await;
    }
}
