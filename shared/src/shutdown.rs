//! Signals are handled here and nowhere else: SIGTERM/SIGINT cancel one token that every
//! service receives. Services stop taking new work when it fires and get
//! `shutdown_grace_ms` to drain what is in flight.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// A token cancelled on the first SIGTERM or SIGINT. A second signal exits at once, for the
/// operator who does not want to wait for the drain.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: draining in-flight work");
        t.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {},
        _ = int.recv() => {},
    }
}

/// Waits for `work` but no longer than `grace`; says whether it finished in time.
pub async fn drain<F: std::future::Future>(grace: Duration, work: F) -> bool {
    match tokio::time::timeout(grace, work).await {
        Ok(_) => true,
        Err(_) => {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "drain grace period ran out"
            );
            false
        }
    }
}
