//! The stand-in's message edits and deletes, as Discord does them:
//! `PATCH /channels/{channel}/messages/{message}` (content up to 2,000 characters,
//! `allowed_mentions` checked like a send and applied to the new content's mentions,
//! `edited_timestamp` set; only the author may edit: 403 50005 otherwise; unknown message:
//! 404 10008) and `DELETE` of the same path (204). Every edit is recorded with its time like
//! any request, so tests count edits per message and their rate
//! ([`DiscordStandIn::edits`]); the next edits can be refused on purpose
//! ([`DiscordStandIn::refuse_next_edits`]).

use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

use super::{
    Bot, DiscordStandIn, Inner, MESSAGE_LIMIT, Recorded, Reply, form_error, id_of, iso_timestamp,
    mentioned_ids, unix_ms,
};

/// What the stand-in keeps about edits beyond the messages themselves.
#[derive(Default)]
pub(super) struct EditState {
    /// Statuses the next edits are refused with, in order.
    refuse: std::collections::VecDeque<u16>,
}

impl DiscordStandIn {
    /// Accepted edits of one message, in order (each with its time, `at`).
    pub fn edits(&self, message_id: &str) -> Vec<Recorded> {
        self.inner
            .lock()
            .requests
            .iter()
            .filter(|r| {
                r.method == "PATCH"
                    && r.status < 300
                    && r.path.ends_with(&format!("/messages/{message_id}"))
            })
            .cloned()
            .collect()
    }

    /// Every accepted edit, in order.
    pub fn all_edits(&self) -> Vec<Recorded> {
        self.inner
            .lock()
            .requests
            .iter()
            .filter(|r| r.method == "PATCH" && r.status < 300)
            .cloned()
            .collect()
    }

    /// The message as it is now (after its edits), if it exists.
    pub fn message(&self, message_id: &str) -> Option<Value> {
        self.inner.lock().messages.get(message_id).cloned()
    }

    /// Refuses the next `n` edits (of any message) with `status` (403: Discord's "Missing
    /// Permissions" body; anything else: its status's generic body).
    pub fn refuse_next_edits(&self, n: usize, status: u16) {
        self.inner
            .lock()
            .edits
            .refuse
            .extend(std::iter::repeat_n(status, n));
    }
}

impl Inner {
    /// `/channels/{channel}/messages/{message}`.
    pub(super) fn message_route(
        &self,
        method: &Method,
        bot: Option<&Bot>,
        channel: &str,
        message: &str,
        body: &Value,
    ) -> Reply {
        let Some(bot) = bot else {
            return Reply::error(StatusCode::UNAUTHORIZED);
        };
        let Ok(channel) = channel.parse::<u64>() else {
            return Reply::error(StatusCode::NOT_FOUND);
        };
        if let Some(e) = self.check_channel(bot, channel) {
            return e;
        }
        if *method == Method::PATCH
            && let Some(status) = self.lock().edits.refuse.pop_front()
        {
            return match status {
                403 => Reply::json(
                    StatusCode::FORBIDDEN,
                    json!({"message": "Missing Permissions", "code": 50013}),
                ),
                s => Reply::error(
                    StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                ),
            };
        }
        let mut st = self.lock();
        let Some(existing) = st
            .messages
            .get(message)
            .filter(|m| id_of(&m["channel_id"]) == Some(channel))
            .cloned()
        else {
            return Reply::json(
                StatusCode::NOT_FOUND,
                json!({"message": "Unknown Message", "code": 10008}),
            );
        };
        if id_of(&existing["author"]["id"]) != Some(bot.id) {
            return Reply::json(
                StatusCode::FORBIDDEN,
                json!({"message": "Cannot edit a message authored by another user", "code": 50005}),
            );
        }
        match *method {
            Method::DELETE => {
                st.messages.remove(message);
                Reply::json(StatusCode::NO_CONTENT, Value::Null)
            }
            Method::PATCH => {
                if !body.is_object() {
                    return Reply::json(
                        StatusCode::BAD_REQUEST,
                        json!({"message": "The request body contains invalid JSON.", "code": 50109}),
                    );
                }
                let mut updated = existing;
                if let Some(content) = body.get("content").and_then(Value::as_str) {
                    if content.chars().count() > MESSAGE_LIMIT {
                        return Reply::json(
                            StatusCode::BAD_REQUEST,
                            form_error(
                                "content",
                                "BASE_TYPE_MAX_LENGTH",
                                "Must be 2000 or fewer in length.",
                            ),
                        );
                    }
                    if content.is_empty() {
                        return Reply::json(
                            StatusCode::BAD_REQUEST,
                            json!({"message": "Cannot send an empty message", "code": 50006}),
                        );
                    }
                    let allowed = body.get("allowed_mentions").filter(|v| v.is_object());
                    if let Some(e) = mentions_conflict(allowed) {
                        return e;
                    }
                    let users_allowed = |id: u64| match allowed {
                        None => true,
                        Some(am) => {
                            am["parse"]
                                .as_array()
                                .is_some_and(|a| a.iter().any(|p| p == "users"))
                                || am["users"]
                                    .as_array()
                                    .is_some_and(|a| a.iter().any(|u| id_of(u) == Some(id)))
                        }
                    };
                    let mentions: Vec<Value> = mentioned_ids(content)
                        .into_iter()
                        .filter(|id| users_allowed(*id))
                        .filter_map(|id| st.users.get(&id).cloned())
                        .collect();
                    let everyone = (content.contains("@everyone") || content.contains("@here"))
                        && allowed.is_none_or(|am| {
                            am["parse"]
                                .as_array()
                                .is_some_and(|a| a.iter().any(|p| p == "everyone"))
                        });
                    updated["content"] = Value::from(content);
                    updated["mentions"] = Value::from(mentions);
                    updated["mention_everyone"] = Value::from(everyone);
                }
                updated["edited_timestamp"] = Value::from(iso_timestamp(unix_ms()));
                st.messages.insert(message.to_string(), updated.clone());
                drop(st);
                self.bump();
                Reply::json(StatusCode::OK, updated)
            }
            _ => Reply::error(StatusCode::METHOD_NOT_ALLOWED),
        }
    }
}

/// `parse` naming a kind and a list of the same kind is refused, as on a send.
fn mentions_conflict(allowed: Option<&Value>) -> Option<Reply> {
    let am = allowed?;
    let parse: Vec<&str> = am["parse"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for kind in ["users", "roles"] {
        if parse.contains(&kind) && am[kind].as_array().is_some_and(|a| !a.is_empty()) {
            return Some(Reply::json(
                StatusCode::BAD_REQUEST,
                form_error(
                    "allowed_mentions",
                    "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                    &format!("parse:[\"{kind}\"] and {kind}: [ids...] are mutually exclusive."),
                ),
            ));
        }
    }
    None
}
