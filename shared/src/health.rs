//! `/healthz` and `/readyz` for the processes that have no HTTP API of their own (worker,
//! metrics-writer), on `WHISPERFLEET_HEALTH_ADDR`; the gateway serves the same two routes on
//! its HTTP port. Answers are JSON like the gateway's:
//!
//! - `/healthz`: 200 while the process runs (a liveness probe restarts a process that hangs).
//! - `/readyz`: 200 when the process does its job right now (the caller's check: consuming,
//!   its required backends reachable), 503 `{"error": "not_ready", "message": why}`
//!   otherwise, and 503 `{"error": "draining", …}` from the moment shutdown began, while
//!   in-flight work finishes, so an orchestrator stops counting on the process first.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// The worker's health address when `HEALTH_ADDR` is unset.
pub const WORKER_DEFAULT: &str = "127.0.0.1:8081";
/// The metrics-writer's health address when `HEALTH_ADDR` is unset.
pub const WRITER_DEFAULT: &str = "127.0.0.1:8082";

/// Whether the process does its job right now, and if not, why.
pub type Readiness =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), String>> + Send>> + Send + Sync>;

/// Binds the health listener: `HEALTH_ADDR` when set (a failure to bind it is an error), else
/// `default` (when that is taken — a second process on one host — the process runs without
/// health endpoints and says so).
pub async fn bind(config: &Config, default: &str) -> anyhow::Result<Option<TcpListener>> {
    use anyhow::Context;
    match &config.process.health_addr {
        Some(addr) => TcpListener::bind(addr)
            .await
            .map(Some)
            .with_context(|| format!("binding WHISPERFLEET_HEALTH_ADDR {addr}")),
        None => match TcpListener::bind(default).await {
            Ok(l) => Ok(Some(l)),
            Err(e) => {
                tracing::warn!(
                    addr = default,
                    error = %e,
                    "no /healthz and /readyz: the default address is taken; set WHISPERFLEET_HEALTH_ADDR"
                );
                Ok(None)
            }
        },
    }
}

/// Serves `/healthz` and `/readyz` on `listener` until the process ends; `/readyz` says
/// "draining" once `shutdown` fired.
pub fn spawn(
    listener: TcpListener,
    service: &'static str,
    ready: Readiness,
    shutdown: CancellationToken,
) {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_default();
    let app = Router::new()
        .route(
            "/healthz",
            get(move || async move { Json(json!({"status": "ok", "service": service})) }),
        )
        .route(
            "/readyz",
            get(move || {
                let (ready, shutdown) = (ready.clone(), shutdown.clone());
                async move { readyz(service, ready, shutdown).await }
            }),
        );
    tracing::info!(addr, "serving /healthz and /readyz");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "health endpoints stopped");
        }
    });
}

async fn readyz(service: &str, ready: Readiness, shutdown: CancellationToken) -> Response {
    let not_ready = |code: &str, message: String| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"error": code, "message": message, "service": service})),
        )
            .into_response()
    };
    if shutdown.is_cancelled() {
        return not_ready(
            "draining",
            "shutting down: finishing in-flight work, taking no more".into(),
        );
    }
    match ready().await {
        Ok(()) => Json(json!({"status": "ready", "service": service})).into_response(),
        Err(why) => not_ready("not_ready", why),
    }
}
