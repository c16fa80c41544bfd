//! Privacy over HTTP: `GET /v1/users/{user_id}/memories` lists what is stored about one of
//! the caller's users, `DELETE /v1/users/{user_id}` forgets it; both take an optional
//! `?character=NAME`. The user is (platform `http`, the calling key's name, `user_id`):
//! a key reaches its own users only, never a Discord user nor another key's. An unknown
//! user simply has nothing (200, empty). The work is done by a worker
//! ([`GatewayCore::privacy`]); 503 when the broker or a store is down, 504 when no worker
//! answered in time.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use whisperfleet_shared::identity::Identity;
use whisperfleet_shared::wire::{PrivacyAction, PrivacyReply};

use super::auth::Caller;
use super::error;
use crate::gateway::{GatewayCore, PrivacyError};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Which {
    /// Only what concerns this character.
    #[serde(default)]
    character: Option<String>,
}

pub async fn show(
    State(core): State<Arc<GatewayCore>>,
    Extension(caller): Extension<Caller>,
    Path(user_id): Path<String>,
    which: Result<Query<Which>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match call(&core, caller, user_id, which, PrivacyAction::Show).await {
        Ok((user_id, reply)) => Json(json!({
            "user_id": user_id,
            "memories": reply.memories,
            "relationships": reply.relationships,
            "histories": reply.histories,
            "cached_answers": reply.cached_answers,
        }))
        .into_response(),
        Err(r) => r,
    }
}

pub async fn forget(
    State(core): State<Arc<GatewayCore>>,
    Extension(caller): Extension<Caller>,
    Path(user_id): Path<String>,
    which: Result<Query<Which>, axum::extract::rejection::QueryRejection>,
) -> Response {
    match call(&core, caller, user_id, which, PrivacyAction::Forget).await {
        Ok((user_id, reply)) => Json(json!({
            "user_id": user_id,
            "forgotten": reply.forgotten.unwrap_or_default(),
        }))
        .into_response(),
        Err(r) => r,
    }
}

async fn call(
    core: &GatewayCore,
    caller: Caller,
    user_id: String,
    which: Result<Query<Which>, axum::extract::rejection::QueryRejection>,
    action: PrivacyAction,
) -> Result<(String, PrivacyReply), Response> {
    let Query(which) =
        which.map_err(|e| error(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    if user_id.is_empty() {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "invalid_user",
            "user_id must not be empty",
        ));
    }
    let character = match which.character {
        Some(c) if c.trim().is_empty() => {
            return Err(error(
                StatusCode::BAD_REQUEST,
                "invalid_query",
                "character must not be empty (leave it out for every character)",
            ));
        }
        c => c,
    };
    // The namespace is the key's name (the trust boundary), never something the client said.
    let identity = Identity::new("http", caller.namespace, user_id.clone());
    match core.privacy(identity, character, action).await {
        Ok(reply) => Ok((user_id, reply)),
        Err(e) => {
            let (status, code) = match &e {
                PrivacyError::BrokerDown(_) => {
                    (StatusCode::SERVICE_UNAVAILABLE, "broker_unavailable")
                }
                PrivacyError::Failed(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
                PrivacyError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "privacy_timeout"),
            };
            Err(error(status, code, e.to_string()))
        }
    }
}
