//! The HTTP adapter: `POST /v1/turns` (one turn, answered when its reply arrives),
//! `GET /healthz` (process alive), `GET /readyz` (turns can go out and come back: the broker
//! takes publishes — reachable, not blocking publishers — and the reply queue is consumed;
//! otherwise 503 saying which). Every error is JSON
//! `{"error": code, "message": text}` with a status that says what to do: 400/413 fix the
//! request, 401 send a valid API key, 404 unknown character, 429 slow down, 503 retry later,
//! 504 the fleet is slow.
//!
//! `GET /v1/users/{user_id}/memories` and `DELETE /v1/users/{user_id}` (both with an
//! optional `?character=NAME`) show or forget what is stored about one of the caller's
//! users (`privacy.rs`).
//!
//! `/v1/*` sits behind [`auth::guard`] (API key, per-key rate limit) and an explicit body
//! limit (`HTTP_MAX_BODY_BYTES`); the health routes answer anyone. The caller's namespace
//! (its key's name) comes from the key, never from the body.
//!
//! With `"stream": true` in the body or `Accept: text/event-stream`, `POST /v1/turns`
//! answers with server-sent events instead (see [`stream`]).

pub mod auth;
mod privacy;
pub mod rate;
pub mod stream;

use std::sync::Arc;
use std::time::Instant;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use whisperfleet_shared::wire::{Conversation, Outcome, TurnReply};

use crate::gateway::{GatewayCore, NotReady, SubmitError, TurnInput};
use auth::{Access, Caller};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TurnBody {
    pub character: String,
    pub user_id: String,
    pub text: String,
    #[serde(default)]
    pub channel_id: Option<String>,
    #[serde(default)]
    pub guild_id: Option<String>,
    #[serde(default)]
    pub is_dm: Option<bool>,
    #[serde(default)]
    pub user_name: Option<String>,
    /// When the client sent the message, if it wants `platform_lag` measured.
    #[serde(default)]
    pub sent_at: Option<DateTime<Utc>>,
    /// Answer with server-sent events as the reply is written (like `Accept:
    /// text/event-stream`).
    #[serde(default)]
    pub stream: Option<bool>,
}

/// `HTTP_MAX_BODY_BYTES`, for the 413 answer's message.
#[derive(Debug, Clone, Copy)]
struct BodyLimit(usize);

/// The API: `/v1/*` behind `access` and a body limit of `max_body_bytes`, health routes
/// open.
pub fn router(core: Arc<GatewayCore>, access: Arc<Access>, max_body_bytes: usize) -> Router {
    let api = Router::new()
        .route("/v1/turns", post(turn))
        .route("/v1/users/{user_id}/memories", get(privacy::show))
        .route(
            "/v1/users/{user_id}",
            axum::routing::delete(privacy::forget),
        )
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(Extension(BodyLimit(max_body_bytes)))
        .route_layer(axum::middleware::from_fn_with_state(access, auth::guard));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/readyz", get(ready))
        .merge(api)
        .with_state(core)
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    (
        status,
        Json(json!({"error": code, "message": message.into()})),
    )
        .into_response()
}

async fn ready(State(core): State<Arc<GatewayCore>>) -> Response {
    match core.readiness().await {
        Ok(()) => {
            Json(json!({"status": "ready", "broker": core.broker().describe()})).into_response()
        }
        Err(e) => {
            let code = match e {
                NotReady::Broker(_) => "broker_unavailable",
                NotReady::RepliesNotConsumed(_) => "replies_not_consumed",
            };
            error(StatusCode::SERVICE_UNAVAILABLE, code, e.to_string())
        }
    }
}

async fn turn(
    State(core): State<Arc<GatewayCore>>,
    Extension(caller): Extension<Caller>,
    Extension(BodyLimit(limit)): Extension<BodyLimit>,
    headers: HeaderMap,
    body: Result<Json<TurnBody>, JsonRejection>,
) -> Response {
    let received = Instant::now();
    let received_at = Utc::now();
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the request body is larger than this gateway accepts \
                     (WHISPERFLEET_HTTP_MAX_BODY_BYTES = {limit} bytes)"
                ),
            );
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, "invalid_body", e.body_text()),
    };
    if body.character.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "character must not be empty",
        );
    }
    if body.user_id.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_body",
            "user_id must not be empty",
        );
    }
    // Without a channel this is a private chat between the user and the character.
    let is_dm = body.is_dm.unwrap_or(body.channel_id.is_none());
    let channel_id = body
        .channel_id
        .clone()
        .unwrap_or_else(|| format!("dm:{}", body.user_id));
    let input = TurnInput {
        conversation: Conversation {
            platform: "http".into(),
            namespace: caller.namespace,
            channel_id,
            user_id: body.user_id.clone(),
            guild_id: body.guild_id.clone(),
            is_dm,
        },
        character: body.character.clone(),
        user_name: body
            .user_name
            .clone()
            .unwrap_or_else(|| body.user_id.clone()),
        text: body.text,
        platform_sent_at: body.sent_at,
        platform_message_id: None,
        received,
        received_at,
    };
    if body.stream == Some(true) || stream::accepts_event_stream(&headers) {
        return stream::respond(core, input);
    }
    let pending = match core.submit(input).await {
        Ok(p) => p,
        Err(e) => {
            let (status, code) = submit_error(&e);
            return error(status, code, e.to_string());
        }
    };
    let timings = core.complete(&pending);
    core.publish_delivery_metrics(&pending, &timings);
    pending.span.in_scope(|| {
        tracing::debug!(
            outcome = pending.reply.outcome.as_str(),
            "reply returned over HTTP"
        )
    });
    let (status, out) = reply_body(&pending.reply, &timings);
    (status, Json(out)).into_response()
}

/// The status and error code that tell an HTTP client what a refused turn means.
fn submit_error(e: &SubmitError) -> (StatusCode, &'static str) {
    match e {
        SubmitError::Empty => (StatusCode::BAD_REQUEST, "empty_text"),
        SubmitError::TooLong { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "text_too_long"),
        SubmitError::Busy(_) => (StatusCode::TOO_MANY_REQUESTS, "conversation_busy"),
        SubmitError::BrokerDown(_) => (StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable"),
        SubmitError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "reply_timeout"),
    }
}

/// A reply as the API shows it, and the status its outcome maps to.
fn reply_body(
    reply: &TurnReply,
    timings: &std::collections::BTreeMap<String, f64>,
) -> (StatusCode, serde_json::Value) {
    let status = match reply.outcome {
        Outcome::Ok | Outcome::Fallback => StatusCode::OK,
        Outcome::Rejected if reply.reason.as_deref() == Some("unknown_character") => {
            StatusCode::NOT_FOUND
        }
        Outcome::Rejected => StatusCode::UNPROCESSABLE_ENTITY,
        Outcome::Error => StatusCode::BAD_GATEWAY,
    };
    let mut out = json!({
        "turn_id": reply.turn_id,
        "character": reply.character,
        "text": reply.text,
        "outcome": reply.outcome,
        "seq": reply.seq,
        "timings": timings,
        "counters": reply.counters,
    });
    if reply.partial {
        out["partial"] = json!(true);
    }
    if let Some(reason) = &reply.reason {
        out["reason"] = json!(reason);
        if status == StatusCode::NOT_FOUND {
            out["error"] = json!(reason);
            out["message"] = json!(reply.text);
        }
    }
    (status, out)
}
