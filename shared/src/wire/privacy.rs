//! Privacy requests and their replies: a gateway asks a worker to show or forget what is
//! stored about one identity (HTTP `GET /v1/users/{id}/memories` and `DELETE
//! /v1/users/{id}`, Discord `/memories` and `/forget`). The gateway links no store, so the
//! request crosses the broker (`fleet.privacy` → `privacy`) and the reply comes back on the
//! gateway's reply queue marked [`KIND_PRIVACY`](crate::topology::KIND_PRIVACY). Versioned
//! like the rest of the wire (readers accept `v` and `v - 1`, ignore unknown fields).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{WireError, check_version};
use crate::identity::Identity;

/// What the user asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrivacyAction {
    /// List what is stored.
    Show,
    /// Remove it.
    Forget,
}

/// Show or forget one identity's data, with one character or all.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacyRequest {
    pub v: u32,
    pub request_id: Uuid,
    /// Whose data: set by the gateway from its trust boundary (the API key's name, the
    /// Discord interaction's user), never by what a client wrote.
    pub identity: Identity,
    /// Only what concerns this character (as the user would write it); all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub character: Option<String>,
    pub action: PrivacyAction,
    /// Gateway id: the reply goes to `replies.<reply_to>`.
    pub reply_to: String,
    /// When the gateway stops waiting. A worker that gets the request later does not act
    /// on it (the user was told it failed): it is dead-lettered as expired.
    pub expires_at: DateTime<Utc>,
}

impl PrivacyRequest {
    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let r: Self = serde_json::from_slice(body).map_err(|source| WireError::Malformed {
            kind: "PrivacyRequest",
            source,
        })?;
        check_version("PrivacyRequest", r.v)?;
        if r.reply_to.is_empty() {
            return Err(WireError::Invalid(
                "PrivacyRequest.reply_to is empty".into(),
            ));
        }
        if r.identity.platform.is_empty() || r.identity.user_id.is_empty() {
            return Err(WireError::Invalid(
                "PrivacyRequest.identity needs a platform and a user id".into(),
            ));
        }
        if r.character.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(WireError::Invalid(
                "PrivacyRequest.character is empty (omit it for every character)".into(),
            ));
        }
        Ok(r)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("PrivacyRequest serializes")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PrivacyOutcome {
    /// Done: `show` lists, `forget` counts.
    Ok,
    /// A backend failed; nothing (or not everything) was done. `error` says why.
    Error,
}

/// One memory as the user may see it (no vector, no internal ids).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShownMemory {
    pub character: String,
    /// `user` or `assistant`.
    pub role: String,
    pub text: String,
    pub emotion: String,
    pub intensity: f32,
    pub channel_id: String,
    pub is_dm: bool,
    pub timestamp: DateTime<Utc>,
}

/// A relationship with one character.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShownRelationship {
    pub character: String,
    pub trust: f32,
    pub affection: f32,
    pub attunement: f32,
    pub interactions: i64,
}

/// One conversation's short-term history with one character.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShownHistory {
    pub character: String,
    pub messages: Vec<ShownMessage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShownMessage {
    pub role: String,
    pub text: String,
}

/// How much a `forget` removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ForgottenCounts {
    pub memories: u64,
    pub histories: u64,
    pub relationships: u64,
    pub cached_answers: u64,
}

/// The answer to a [`PrivacyRequest`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrivacyReply {
    pub v: u32,
    pub request_id: Uuid,
    pub action: PrivacyAction,
    pub outcome: PrivacyOutcome,
    /// `show`: newest first, each with its emotional state.
    #[serde(default)]
    pub memories: Vec<ShownMemory>,
    #[serde(default)]
    pub relationships: Vec<ShownRelationship>,
    #[serde(default)]
    pub histories: Vec<ShownHistory>,
    /// `show`: turns whose LLM answer is still cached for this identity.
    #[serde(default)]
    pub cached_answers: u64,
    /// `forget`: what was removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forgotten: Option<ForgottenCounts>,
    /// `error`: why, for people (never a credential: backend errors are redacted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PrivacyReply {
    /// An empty `ok` reply to `req`, to be filled in.
    pub fn ok(req: &PrivacyRequest) -> Self {
        Self {
            v: super::WIRE_VERSION,
            request_id: req.request_id,
            action: req.action,
            outcome: PrivacyOutcome::Ok,
            memories: Vec::new(),
            relationships: Vec::new(),
            histories: Vec::new(),
            cached_answers: 0,
            forgotten: None,
            error: None,
        }
    }

    pub fn error(request_id: Uuid, action: PrivacyAction, why: impl Into<String>) -> Self {
        Self {
            v: super::WIRE_VERSION,
            request_id,
            action,
            outcome: PrivacyOutcome::Error,
            memories: Vec::new(),
            relationships: Vec::new(),
            histories: Vec::new(),
            cached_answers: 0,
            forgotten: None,
            error: Some(why.into()),
        }
    }

    pub fn decode(body: &[u8]) -> Result<Self, WireError> {
        let r: Self = serde_json::from_slice(body).map_err(|source| WireError::Malformed {
            kind: "PrivacyReply",
            source,
        })?;
        check_version("PrivacyReply", r.v)?;
        Ok(r)
    }

    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("PrivacyReply serializes")
    }
}

/// Best effort: where to answer a privacy request that failed to decode as a whole (its
/// `reply_to`, `request_id` and `action`), so the gateway hears at once instead of waiting
/// for its timeout.
pub fn salvage_privacy_address(body: &[u8]) -> Option<(String, Uuid, PrivacyAction)> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let reply_to = v.get("reply_to")?.as_str()?.to_string();
    if reply_to.is_empty() {
        return None;
    }
    let id = Uuid::parse_str(v.get("request_id")?.as_str()?).ok()?;
    let action = serde_json::from_value(v.get("action")?.clone()).unwrap_or(PrivacyAction::Show);
    Some((reply_to, id, action))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::WIRE_VERSION;

    fn sample() -> PrivacyRequest {
        PrivacyRequest {
            v: WIRE_VERSION,
            request_id: Uuid::now_v7(),
            identity: Identity::new("http", "acme", "a:b*? [c]\n"),
            character: Some("Nora Halvorsen".into()),
            action: PrivacyAction::Forget,
            reply_to: "gw1".into(),
            expires_at: Utc::now(),
        }
    }

    #[test]
    fn requests_round_trip_ignore_unknown_fields_and_read_the_previous_version() {
        let r = sample();
        let mut v: serde_json::Value = serde_json::from_slice(&r.encode()).unwrap();
        v["some_future_field"] = serde_json::json!(1);
        assert_eq!(
            PrivacyRequest::decode(&serde_json::to_vec(&v).unwrap()).unwrap(),
            r
        );
        v["v"] = serde_json::json!(super::super::WIRE_MIN_VERSION);
        assert!(PrivacyRequest::decode(&serde_json::to_vec(&v).unwrap()).is_ok());
        v["v"] = serde_json::json!(WIRE_VERSION + 1);
        assert!(matches!(
            PrivacyRequest::decode(&serde_json::to_vec(&v).unwrap()),
            Err(WireError::Version { .. })
        ));
    }

    #[test]
    fn requests_without_an_address_or_an_identity_are_refused() {
        for change in [
            ("reply_to", serde_json::json!("")),
            (
                "identity",
                serde_json::json!({"platform": "", "user_id": "1"}),
            ),
            (
                "identity",
                serde_json::json!({"platform": "http", "user_id": ""}),
            ),
            ("character", serde_json::json!(" ")),
            ("action", serde_json::json!("delete_everyone")),
        ] {
            let mut v: serde_json::Value = serde_json::from_slice(&sample().encode()).unwrap();
            v[change.0] = change.1.clone();
            assert!(
                PrivacyRequest::decode(&serde_json::to_vec(&v).unwrap()).is_err(),
                "{change:?}"
            );
        }
        assert!(PrivacyRequest::decode(b"[]").is_err());
    }

    #[test]
    fn replies_round_trip_and_salvage_finds_the_address() {
        let req = sample();
        let mut reply = PrivacyReply::ok(&req);
        reply.forgotten = Some(ForgottenCounts {
            memories: 2,
            ..Default::default()
        });
        assert_eq!(PrivacyReply::decode(&reply.encode()).unwrap(), reply);
        let mut v: serde_json::Value = serde_json::from_slice(&req.encode()).unwrap();
        v["identity"] = serde_json::json!(7);
        let (to, id, action) = salvage_privacy_address(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert_eq!(
            (to.as_str(), id, action),
            ("gw1", req.request_id, PrivacyAction::Forget)
        );
        assert!(salvage_privacy_address(b"nope").is_none());
    }
}
