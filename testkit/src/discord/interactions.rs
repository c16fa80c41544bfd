//! Interactions in the Discord stand-in: application (slash) commands and message
//! components, as Discord documents them
//! (<https://discord.com/developers/docs/interactions/receiving-and-responding>).
//!
//! - Registration: `PUT /applications/{application_id}/commands` (bulk overwrite; the bot's
//!   token, its own application id; names and descriptions validated like Discord: 50035)
//!   answers the full command objects with new ids; `GET` lists them. Counted per bot.
//! - Invocation: [`DiscordStandIn::slash_command`] (only a registered command, like
//!   Discord) and [`DiscordStandIn::click`] (only a button that is on the message, and an
//!   ephemeral message only by the user it was for) send `INTERACTION_CREATE` to the bot's
//!   gateway sessions with a fresh interaction id and token.
//! - Answers: `POST /interactions/{id}/{token}/callback` (no bot token needed, as on
//!   Discord) takes the first answer — types 4 (message), 5 (deferred message), 6
//!   (deferred update) and 7 (update) for components — within 3 seconds of the interaction
//!   and answers 204; a second answer is refused (400, code 40060 "Interaction has already
//!   been acknowledged."), a late or unknown one gets 404 10062 "Unknown interaction". Each
//!   callback is recorded with its type, flags, data and time since the interaction was
//!   sent. Then, for 15 minutes, `PATCH /webhooks/{application_id}/{token}/messages/@original`
//!   edits the original answer (after type 6/7: the message the button was on) and `POST
//!   /webhooks/{application_id}/{token}` sends a follow-up; before any callback they get 404
//!   10015 "Unknown Webhook".
//!
//! Not covered: autocomplete and modals, command options, guild commands, permissions
//! (`default_member_permissions`), interactions sent to an HTTP endpoint (PING), and the
//! `MESSAGE_CREATE` events Discord sends for non-ephemeral interaction answers.

use std::time::{Duration, Instant};

use super::*;

/// Discord's window for the first answer to an interaction.
pub const CALLBACK_WINDOW: Duration = Duration::from_secs(3);
/// How long an interaction token works for edits and follow-ups.
const TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// Message flag: only the user who invoked the interaction sees the message.
pub const EPHEMERAL: u64 = 1 << 6;
/// Message flag: the "is thinking…" placeholder of a deferred answer.
const LOADING: u64 = 1 << 7;

/// Who does what, where: the user invoking a command or clicking a button.
#[derive(Clone, Debug)]
pub struct Invoker {
    pub user_id: u64,
    pub user_name: String,
    pub channel_id: u64,
    /// Some: in a guild (the interaction carries `member`); None: in a DM (`user`).
    pub guild_id: Option<u64>,
}

/// An interaction the stand-in sent.
#[derive(Clone, Debug)]
pub struct Sent {
    pub id: String,
    pub token: String,
}

/// One answer to an interaction as the stand-in received it.
#[derive(Clone, Debug)]
pub struct Callback {
    /// The callback type (4, 5, 6, 7, …).
    pub kind: u64,
    /// `data.flags` (64: ephemeral).
    pub flags: u64,
    pub data: Value,
    /// From `INTERACTION_CREATE` being sent to this callback arriving.
    pub after: Duration,
    /// What the stand-in answered (204, or the refusal).
    pub status: u16,
}

/// Everything that happened to one interaction.
#[derive(Clone, Debug)]
pub struct InteractionLog {
    pub bot_id: u64,
    /// 2: application command, 3: message component.
    pub kind: u64,
    pub user_id: u64,
    pub callbacks: Vec<Callback>,
    /// The original answer as it is now (after edits), when there is one.
    pub original: Option<Value>,
    /// Bodies of `PATCH …/messages/@original`, in order.
    pub edits: Vec<Value>,
    pub followups: Vec<Value>,
}

struct Live {
    id: String,
    log: InteractionLog,
    sent_at: Instant,
    channel_id: u64,
    /// The message the clicked button is on (components).
    component_message: Option<String>,
    /// The message `@original` names, once answered.
    original: Option<String>,
}

#[derive(Default)]
pub(super) struct Interactions {
    /// Bot id → its commands as registered by the last bulk overwrite.
    commands: HashMap<u64, Vec<Value>>,
    registrations: HashMap<u64, u32>,
    by_token: HashMap<String, Live>,
    /// Message id → the user an ephemeral message was for.
    ephemeral_for: HashMap<String, u64>,
}

impl DiscordStandIn {
    /// The commands `bot_id` registered (its last bulk overwrite), as Discord answered them.
    pub fn registered_commands(&self, bot_id: u64) -> Vec<Value> {
        let st = self.inner.lock();
        st.interactions
            .commands
            .get(&bot_id)
            .cloned()
            .unwrap_or_default()
    }

    /// How many bulk overwrites of its commands `bot_id` made.
    pub fn command_registrations(&self, bot_id: u64) -> u32 {
        let st = self.inner.lock();
        st.interactions
            .registrations
            .get(&bot_id)
            .copied()
            .unwrap_or(0)
    }

    /// A user invokes `/name` of `bot_id`: `INTERACTION_CREATE` (type 2) to the bot's
    /// sessions. Fails, as Discord's client would not offer it, when the bot has not
    /// registered that command.
    pub fn slash_command(&self, bot_id: u64, name: &str, who: &Invoker) -> anyhow::Result<Sent> {
        let mut st = self.inner.lock();
        let Some(command) = st
            .interactions
            .commands
            .get(&bot_id)
            .and_then(|c| c.iter().find(|c| c["name"] == name))
            .cloned()
        else {
            bail!("bot {bot_id} has no command /{name} registered");
        };
        let data = json!({
            "id": command["id"],
            "name": name,
            "type": command["type"],
        });
        let sent = self
            .inner
            .send_interaction(&mut st, bot_id, 2, data, who, None);
        drop(st);
        self.inner.bump();
        Ok(sent)
    }

    /// `who` clicks the button `custom_id` on message `message_id`: `INTERACTION_CREATE`
    /// (type 3) to the bot whose message it is. Fails when the message has no such button,
    /// or is ephemeral and was for someone else (they cannot see it).
    pub fn click(&self, message_id: &str, custom_id: &str, who: &Invoker) -> anyhow::Result<Sent> {
        let mut st = self.inner.lock();
        let Some(message) = st.messages.get(message_id).cloned() else {
            bail!("no message {message_id}");
        };
        if let Some(owner) = st.interactions.ephemeral_for.get(message_id)
            && *owner != who.user_id
        {
            bail!("message {message_id} is ephemeral for user {owner}");
        }
        let has_button = message["components"].as_array().is_some_and(|rows| {
            rows.iter().any(|row| {
                row["components"].as_array().is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c["type"] == 2 && c["custom_id"] == custom_id && c["disabled"] != true
                    })
                })
            })
        });
        if !has_button {
            bail!("message {message_id} has no enabled button {custom_id:?}");
        }
        let Some(bot_id) =
            id_of(&message["application_id"]).or_else(|| id_of(&message["author"]["id"]))
        else {
            bail!("message {message_id} has no author");
        };
        let data = json!({"custom_id": custom_id, "component_type": 2});
        let mut who = who.clone();
        who.channel_id = id_of(&message["channel_id"]).unwrap_or(who.channel_id);
        let sent = self
            .inner
            .send_interaction(&mut st, bot_id, 3, data, &who, Some(message));
        drop(st);
        self.inner.bump();
        Ok(sent)
    }

    /// What happened to the interaction with `token` so far.
    pub fn interaction(&self, token: &str) -> Option<InteractionLog> {
        let st = self.inner.lock();
        let live = st.interactions.by_token.get(token)?;
        let mut log = live.log.clone();
        log.original = live
            .original
            .as_ref()
            .and_then(|id| st.messages.get(id))
            .cloned();
        Some(log)
    }
}

impl Inner {
    fn send_interaction(
        &self,
        st: &mut State_,
        bot_id: u64,
        kind: u64,
        data: Value,
        who: &Invoker,
        message: Option<Value>,
    ) -> Sent {
        let id = Self::next_snowflake(st).to_string();
        let token = format!("aW50ZXJhY3Rpb24{id}x{:016x}", rand::random::<u64>());
        let user = st
            .users
            .entry(who.user_id)
            .or_insert_with(|| user_json(who.user_id, &who.user_name, false))
            .clone();
        st.channels
            .entry(who.channel_id)
            .or_insert(match who.guild_id {
                Some(g) => ChannelKind::Guild(g),
                None => ChannelKind::Dm(Some(bot_id)),
            });
        let mut d = json!({
            "id": id,
            "application_id": bot_id.to_string(),
            "type": kind,
            "data": data,
            "channel_id": who.channel_id.to_string(),
            "channel": {"id": who.channel_id.to_string(), "type": if who.guild_id.is_some() { 0 } else { 1 }},
            "token": token,
            "version": 1,
            "app_permissions": "2248473465835073",
            "locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": who.guild_id.map_or("0".to_string(), |g| g.to_string())},
            "context": if who.guild_id.is_some() { 0 } else { 1 },
            "attachment_size_limit": 10_485_760,
        });
        match who.guild_id {
            Some(g) => {
                d["guild_id"] = Value::from(g.to_string());
                d["guild_locale"] = Value::from("en-US");
                let mut member = member_json(DISCORD_EPOCH_MS);
                member["user"] = user;
                member["permissions"] = Value::from("2248473465835073");
                d["member"] = member;
            }
            None => d["user"] = user,
        }
        let component_message = message
            .as_ref()
            .and_then(|m| m["id"].as_str().map(str::to_string));
        if let Some(m) = message {
            d["message"] = m;
        }
        for session in st.sessions.values_mut().filter(|s| s.bot_id == bot_id) {
            Self::dispatch(session, "INTERACTION_CREATE", d.clone());
        }
        st.interactions.by_token.insert(
            token.clone(),
            Live {
                id: id.clone(),
                log: InteractionLog {
                    bot_id,
                    kind,
                    user_id: who.user_id,
                    callbacks: Vec::new(),
                    original: None,
                    edits: Vec::new(),
                    followups: Vec::new(),
                },
                sent_at: Instant::now(),
                channel_id: who.channel_id,
                component_message,
                original: None,
            },
        );
        Sent { id, token }
    }

    /// The interaction routes; None for any other path.
    pub(super) fn interaction_route(
        &self,
        method: &Method,
        segments: &[&str],
        bot: Option<&Bot>,
        body: &Value,
    ) -> Option<Reply> {
        let allowed =
            |m: Method| (*method != m).then(|| Reply::error(StatusCode::METHOD_NOT_ALLOWED));
        Some(match segments {
            ["applications", app, "commands"] => match (method.clone(), bot) {
                (_, None) => Reply::error(StatusCode::UNAUTHORIZED),
                (_, Some(b)) if app.parse::<u64>().ok() != Some(b.id) => Reply::json(
                    StatusCode::FORBIDDEN,
                    json!({"message": "Missing Access", "code": 50001}),
                ),
                (Method::PUT, Some(b)) => self.overwrite_commands(b, body),
                (Method::GET, Some(b)) => Reply::json(
                    StatusCode::OK,
                    Value::from(
                        self.lock()
                            .interactions
                            .commands
                            .get(&b.id)
                            .cloned()
                            .unwrap_or_default(),
                    ),
                ),
                _ => Reply::error(StatusCode::METHOD_NOT_ALLOWED),
            },
            ["interactions", id, token, "callback"] => {
                allowed(Method::POST).unwrap_or_else(|| self.callback(id, token, body))
            }
            ["webhooks", _app, token, "messages", "@original"] => match method.clone() {
                Method::PATCH => self.edit_original(token, body),
                Method::GET => {
                    self.with_original(token, |_, m| Reply::json(StatusCode::OK, m.clone()))
                }
                _ => Reply::error(StatusCode::METHOD_NOT_ALLOWED),
            },
            ["webhooks", _app, token] => {
                allowed(Method::POST).unwrap_or_else(|| self.followup(token, body))
            }
            _ => return None,
        })
    }

    fn overwrite_commands(&self, bot: &Bot, body: &Value) -> Reply {
        let Some(list) = body.as_array() else {
            return Reply::json(
                StatusCode::BAD_REQUEST,
                form_error("_errors", "BASE_TYPE_ARRAY", "Must be an array."),
            );
        };
        let mut st = self.lock();
        let mut out = Vec::new();
        for (i, c) in list.iter().enumerate() {
            let name = c["name"].as_str().unwrap_or("");
            let kind = c["type"].as_u64().unwrap_or(1);
            let name_ok = (1..=32).contains(&name.chars().count())
                && name
                    .chars()
                    .all(|ch| ch == '-' || ch == '_' || ch.is_alphanumeric() && !ch.is_uppercase());
            let description = c["description"].as_str().unwrap_or("");
            let description_ok = kind != 1 || (1..=100).contains(&description.chars().count());
            if !name_ok || !description_ok {
                let field = if name_ok { "description" } else { "name" };
                return Reply::json(
                    StatusCode::BAD_REQUEST,
                    form_error(
                        &format!("{i}.{field}"),
                        "APPLICATION_COMMAND_INVALID_NAME",
                        "Invalid command name or description",
                    ),
                );
            }
            let id = Self::next_snowflake(&mut st);
            out.push(json!({
                "id": id.to_string(),
                "application_id": bot.id.to_string(),
                "version": id.to_string(),
                "type": kind,
                "name": name,
                "description": description,
                "default_member_permissions": c.get("default_member_permissions").cloned().unwrap_or(Value::Null),
                "dm_permission": c.get("dm_permission").and_then(Value::as_bool).unwrap_or(true),
                "nsfw": c.get("nsfw").and_then(Value::as_bool).unwrap_or(false),
                "integration_types": [0],
                "contexts": null,
                "options": c.get("options").cloned().unwrap_or_else(|| json!([])),
            }));
        }
        st.interactions.commands.insert(bot.id, out.clone());
        *st.interactions.registrations.entry(bot.id).or_default() += 1;
        Reply::json(StatusCode::OK, Value::from(out))
    }

    fn callback(&self, id: &str, token: &str, body: &Value) -> Reply {
        let unknown = || {
            Reply::json(
                StatusCode::NOT_FOUND,
                json!({"message": "Unknown interaction", "code": 10062}),
            )
        };
        let mut st = self.lock();
        let st = &mut *st;
        let Some(live) = st
            .interactions
            .by_token
            .get_mut(token)
            .filter(|l| l.id == *id)
        else {
            return unknown();
        };
        let kind = body["type"].as_u64().unwrap_or(0);
        let data = body.get("data").cloned().unwrap_or(Value::Null);
        let flags = data["flags"].as_u64().unwrap_or(0);
        let after = live.sent_at.elapsed();
        let refused = if !live.log.callbacks.is_empty() {
            Some(Reply::json(
                StatusCode::BAD_REQUEST,
                json!({"message": "Interaction has already been acknowledged.", "code": 40060}),
            ))
        } else if after > CALLBACK_WINDOW {
            Some(unknown())
        } else {
            match (kind, live.log.kind) {
                (4 | 5, _) | (6 | 7, 3) => check_message(&data, kind == 4 || kind == 7),
                _ => Some(Reply::json(
                    StatusCode::BAD_REQUEST,
                    form_error(
                        "type",
                        "INTERACTION_RESPONSE_TYPE_INVALID",
                        "Invalid interaction response type",
                    ),
                )),
            }
        };
        live.log.callbacks.push(Callback {
            kind,
            flags,
            data: data.clone(),
            after,
            status: refused.as_ref().map_or(204, |r| r.status.as_u16()),
        });
        if let Some(r) = refused {
            return r;
        }
        let (bot_id, user_id, channel) = (live.log.bot_id, live.log.user_id, live.channel_id);
        let component_message = live.component_message.clone();
        let original = match kind {
            // A new message: the answer itself, or the "thinking" placeholder.
            4 | 5 => {
                let mut m = data.clone();
                if kind == 5 {
                    m = json!({"content": "", "flags": flags | LOADING});
                }
                let id = self.interaction_message(st, bot_id, channel, &m);
                if flags & EPHEMERAL != 0 {
                    st.interactions.ephemeral_for.insert(id.clone(), user_id);
                }
                Some(id)
            }
            // The message the button is on: updated now (7) or by a later edit (6).
            _ => {
                if kind == 7
                    && let Some(m) = component_message
                        .as_ref()
                        .and_then(|id| st.messages.get_mut(id))
                {
                    apply_edit(m, &data);
                }
                component_message
            }
        };
        if let Some(live) = st.interactions.by_token.get_mut(token) {
            live.original = original;
        }
        Reply::json(StatusCode::NO_CONTENT, Value::Null)
    }

    /// A message sent as an interaction's answer or follow-up, stored like any other.
    fn interaction_message(
        &self,
        st: &mut State_,
        bot_id: u64,
        channel: u64,
        data: &Value,
    ) -> String {
        let id = Self::next_snowflake(st);
        let name = self
            .bots
            .iter()
            .find(|b| b.id == bot_id)
            .map_or(String::new(), |b| b.name.clone());
        let content = data["content"].as_str().unwrap_or("");
        let message = json!({
            "id": id.to_string(),
            "channel_id": channel.to_string(),
            "author": user_json(bot_id, &name, true),
            "content": content,
            "timestamp": iso_timestamp((id >> 22) + DISCORD_EPOCH_MS),
            "edited_timestamp": null,
            "tts": false,
            "mention_everyone": false,
            "mentions": allowed_mentions_in(st, content, &data["allowed_mentions"]),
            "mention_roles": [],
            "attachments": [],
            "embeds": data.get("embeds").cloned().unwrap_or_else(|| json!([])),
            "components": data.get("components").cloned().unwrap_or_else(|| json!([])),
            "pinned": false,
            "type": 20,
            "flags": data["flags"].as_u64().unwrap_or(0),
            "webhook_id": bot_id.to_string(),
            "application_id": bot_id.to_string(),
        });
        st.messages.insert(id.to_string(), message);
        id.to_string()
    }

    /// Runs `f` on the interaction's live token and original message; 404 10015 before any
    /// callback or after the token's lifetime.
    fn with_original(&self, token: &str, f: impl FnOnce(&mut Live, &mut Value) -> Reply) -> Reply {
        let mut st = self.lock();
        let st = &mut *st;
        let unknown = Reply::json(
            StatusCode::NOT_FOUND,
            json!({"message": "Unknown Webhook", "code": 10015}),
        );
        let Some(live) = st
            .interactions
            .by_token
            .get_mut(token)
            .filter(|l| l.sent_at.elapsed() <= TOKEN_LIFETIME)
        else {
            return unknown;
        };
        let Some(message) = live
            .original
            .as_ref()
            .and_then(|id| st.messages.get_mut(id))
        else {
            return Reply::json(
                StatusCode::NOT_FOUND,
                json!({"message": "Unknown Message", "code": 10008}),
            );
        };
        f(live, message)
    }

    fn edit_original(&self, token: &str, body: &Value) -> Reply {
        if let Some(e) = check_message(body, false) {
            return e;
        }
        self.with_original(token, |live, message| {
            live.log.edits.push(body.clone());
            apply_edit(message, body);
            Reply::json(StatusCode::OK, message.clone())
        })
    }

    fn followup(&self, token: &str, body: &Value) -> Reply {
        if let Some(e) = check_message(body, true) {
            return e;
        }
        let mut st = self.lock();
        let st = &mut *st;
        let Some(live) = st
            .interactions
            .by_token
            .get(token)
            .filter(|l| l.sent_at.elapsed() <= TOKEN_LIFETIME && !l.log.callbacks.is_empty())
        else {
            return Reply::json(
                StatusCode::NOT_FOUND,
                json!({"message": "Unknown Webhook", "code": 10015}),
            );
        };
        let (bot_id, channel, user_id) = (live.log.bot_id, live.channel_id, live.log.user_id);
        let id = self.interaction_message(st, bot_id, channel, body);
        if body["flags"].as_u64().unwrap_or(0) & EPHEMERAL != 0 {
            st.interactions.ephemeral_for.insert(id.clone(), user_id);
        }
        if let Some(live) = st.interactions.by_token.get_mut(token) {
            live.log.followups.push(body.clone());
        }
        Reply::json(StatusCode::OK, st.messages[&id].clone())
    }
}

/// Discord's checks of a message body: not over 2,000 characters, not empty when it must
/// say something, `allowed_mentions` consistent.
fn check_message(data: &Value, must_say_something: bool) -> Option<Reply> {
    let content = data["content"].as_str().unwrap_or("");
    if content.chars().count() > MESSAGE_LIMIT {
        return Some(Reply::json(
            StatusCode::BAD_REQUEST,
            form_error(
                "content",
                "BASE_TYPE_MAX_LENGTH",
                "Must be 2000 or fewer in length.",
            ),
        ));
    }
    let non_empty = |k: &str| data[k].as_array().is_some_and(|a| !a.is_empty());
    if must_say_something && content.is_empty() && !non_empty("embeds") && !non_empty("components")
    {
        return Some(Reply::json(
            StatusCode::BAD_REQUEST,
            json!({"message": "Cannot send an empty message", "code": 50006}),
        ));
    }
    let am = &data["allowed_mentions"];
    for kind in ["users", "roles"] {
        let parsed = am["parse"]
            .as_array()
            .is_some_and(|a| a.iter().any(|p| p == kind));
        if parsed && am[kind].as_array().is_some_and(|a| !a.is_empty()) {
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

/// Known users mentioned in `content` that `allowed_mentions` lets through (all without it).
fn allowed_mentions_in(st: &State_, content: &str, am: &Value) -> Vec<Value> {
    mentioned_ids(content)
        .into_iter()
        .filter(|id| {
            !am.is_object()
                || am["parse"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|p| p == "users"))
                || am["users"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|u| id_of(u) == Some(*id)))
        })
        .filter_map(|id| st.users.get(&id).cloned())
        .collect()
}

/// An edit: the fields it names replace the message's; the "thinking" flag goes.
fn apply_edit(message: &mut Value, body: &Value) {
    for field in ["content", "embeds", "components"] {
        if let Some(v) = body.get(field).filter(|v| !v.is_null()) {
            message[field] = v.clone();
        }
    }
    let flags = message["flags"].as_u64().unwrap_or(0) & !LOADING;
    message["flags"] = Value::from(flags);
    message["edited_timestamp"] = Value::from(iso_timestamp(unix_ms()));
}
