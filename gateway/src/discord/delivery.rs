//! Sending: a reply (or a gateway notice) goes out as Discord messages in order, each with
//! allowed mentions limited to the user answered and an enforced nonce. Failures are
//! classified rather than retried blindly, because Discord bans a bot after 10,000 invalid
//! requests in 10 minutes: a 429 or 5xx is retried once, a 401 stops the bot, and a 403 is
//! remembered per channel for a while.

use std::time::{Duration, Instant};

use serenity::all::{
    CacheHttp, ChannelId, Context, CreateAllowedMentions, CreateMessage, GuildId, HttpError,
    Message, MessageId, MessageReference, MessageReferenceKind, ModelError, Nonce, UserId,
};
use whisperfleet_shared::wire::{Stage, TurnReply};

use super::FORBIDDEN_FOR;
use super::client::Bot;
use super::text::{DISCORD_MESSAGE_LIMIT, chunk_with_footer, render_footer};
use crate::gateway::Pending;

/// Wait before the one retry of a send after a 429 or 5xx. serenity 0.12.5 does not pass
/// `retry_after` on to the caller (its error keeps neither headers nor that body field); with
/// the real Discord its own limiter already waits `Retry-After` and retries, so this only
/// paces the stand-in/proxy case.
const SEND_RETRY_WAIT: Duration = Duration::from_secs(1);

/// Why a Discord request failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Failure {
    Unauthorized,
    Forbidden,
    RateLimited,
    Transient,
    Other,
}

pub(super) fn classify(e: &serenity::Error) -> Failure {
    match e {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(r)) => match r.status_code.as_u16() {
            401 => Failure::Unauthorized,
            403 => Failure::Forbidden,
            429 => Failure::RateLimited,
            500..=599 => Failure::Transient,
            _ => Failure::Other,
        },
        serenity::Error::Http(HttpError::Request(_)) => Failure::Transient,
        // serenity checks permissions against its cache before sending: a 403 saved.
        serenity::Error::Model(ModelError::InvalidPermissions { .. }) => Failure::Forbidden,
        _ => Failure::Other,
    }
}

/// Allowed mentions of everything the bot sends: the user it answers, nobody else, no
/// roles, no @everyone/@here (an empty `parse` list turns those off).
pub fn safe_mentions(author: UserId) -> CreateAllowedMentions {
    CreateAllowedMentions::new()
        .everyone(false)
        .all_users(false)
        .all_roles(false)
        .users([author])
        .empty_roles()
        .replied_user(true)
}

/// Where a reply goes: the channel, and the user's message the first piece replies to.
#[derive(Debug, Clone, Copy)]
pub struct ReplyTarget {
    pub channel: ChannelId,
    pub guild: Option<GuildId>,
    pub message: MessageId,
    pub author: UserId,
}

impl ReplyTarget {
    pub(super) fn of(msg: &Message) -> Self {
        Self {
            channel: msg.channel_id,
            guild: msg.guild_id,
            message: msg.id,
            author: msg.author.id,
        }
    }

    /// Where a reply goes, from what the reply itself carries (its conversation and the
    /// platform message id): how a reply is delivered without the message event at hand.
    pub fn of_reply(reply: &TurnReply) -> Option<Self> {
        let id = |s: &str| s.parse::<u64>().ok().filter(|n| *n != 0);
        let c = &reply.conversation;
        Some(Self {
            channel: ChannelId::new(id(&c.channel_id)?),
            guild: c.guild_id.as_deref().and_then(id).map(GuildId::new),
            message: MessageId::new(id(reply.platform_message_id.as_deref()?)?),
            author: UserId::new(id(&c.user_id)?),
        })
    }
}

/// What a send is, for its nonce: the reply's pieces or a gateway notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendKind {
    Reply,
    Notice,
}

/// The messages for `chunks`, in order: safe mentions on every one, the first a reply to the
/// user's message (sent as a plain message if that was deleted meanwhile). Each carries an
/// enforced nonce derived from the user's message (≤ 25 chars, Discord's limit), so a
/// retried send that Discord had in fact created is not posted twice.
pub fn build_messages(
    chunks: &[String],
    target: &ReplyTarget,
    kind: SendKind,
) -> Vec<CreateMessage> {
    chunks
        .iter()
        .enumerate()
        .map(|(i, content)| build_message(content, target, kind, i))
        .collect()
}

/// Piece `i` of a reply (see [`build_messages`]).
pub fn build_message(
    content: &str,
    target: &ReplyTarget,
    kind: SendKind,
    i: usize,
) -> CreateMessage {
    let tag = match kind {
        SendKind::Reply => 'r',
        SendKind::Notice => 'n',
    };
    let m = CreateMessage::new()
        .content(content)
        .allowed_mentions(safe_mentions(target.author))
        .nonce(Nonce::String(format!("{}{tag}{i}", target.message)))
        .enforce_nonce(true);
    if i > 0 {
        return m;
    }
    let mut reference = MessageReference::new(MessageReferenceKind::Default, target.channel)
        .message_id(target.message)
        .fail_if_not_exists(false);
    if let Some(guild) = target.guild {
        reference = reference.guild_id(guild);
    }
    m.reference_message(reference)
}

impl Bot {
    pub(super) async fn deliver(&self, ctx: &Context, msg: &Message, pending: Pending) {
        // The footer can only show what is known when the send starts.
        let shown = self.core.complete(&pending);
        let footer = render_footer(self.shared.settings.footer, &shown);
        let chunks = chunk_with_footer(
            &pending.reply.text,
            footer.as_deref(),
            DISCORD_MESSAGE_LIMIT,
        );
        match self
            .send_all(ctx, &ReplyTarget::of(msg), &chunks, SendKind::Reply)
            .await
        {
            Ok(()) => {
                let timings = self.core.complete(&pending);
                self.core.publish_delivery_metrics(&pending, &timings);
                tracing::info!(
                    character = %self.character,
                    turn_id = %pending.reply.turn_id,
                    outcome = pending.reply.outcome.as_str(),
                    messages = chunks.len(),
                    end_to_end_ms = Stage::EndToEnd.ms_in(&timings).unwrap_or_default(),
                    "reply delivered"
                );
            }
            Err(failure) => tracing::warn!(
                character = %self.character,
                turn_id = %pending.reply.turn_id,
                ?failure,
                "reply not delivered"
            ),
        }
    }

    /// A reply that arrived after its wait ended (or after a gateway restart): posted as it
    /// would have been, as a reply to the user's message; its timings end at the worker.
    pub(super) async fn deliver_late(&self, reply: &TurnReply) -> bool {
        let Some(target) = ReplyTarget::of_reply(reply) else {
            tracing::warn!(turn_id = %reply.turn_id, "late reply without a Discord address; not delivered");
            return false;
        };
        let footer = render_footer(self.shared.settings.footer, &reply.timings);
        let chunks = chunk_with_footer(&reply.text, footer.as_deref(), DISCORD_MESSAGE_LIMIT);
        match self
            .send_all(&self.http, &target, &chunks, SendKind::Reply)
            .await
        {
            Ok(()) => {
                tracing::info!(
                    character = %self.character,
                    turn_id = %reply.turn_id,
                    outcome = reply.outcome.as_str(),
                    messages = chunks.len(),
                    "late reply delivered"
                );
                true
            }
            Err(failure) => {
                tracing::warn!(character = %self.character, turn_id = %reply.turn_id, ?failure, "late reply not delivered");
                false
            }
        }
    }

    /// A short notice from the gateway itself (rate limit, busy, broker trouble), sent like
    /// a reply. Failures are logged in `send_one`.
    pub(super) async fn say(&self, ctx: &Context, msg: &Message, notice: &str) {
        let _ = self
            .send_all(
                ctx,
                &ReplyTarget::of(msg),
                &[notice.to_string()],
                SendKind::Notice,
            )
            .await;
    }

    /// Sends in order and stops at the first piece that fails: a later piece without the
    /// earlier one would not make sense.
    async fn send_all(
        &self,
        ctx: &impl CacheHttp,
        target: &ReplyTarget,
        chunks: &[String],
        kind: SendKind,
    ) -> Result<(), Failure> {
        for message in build_messages(chunks, target, kind) {
            self.send_one(ctx, target.channel, message).await?;
        }
        Ok(())
    }

    pub(super) async fn send_one(
        &self,
        ctx: &impl CacheHttp,
        channel: ChannelId,
        message: CreateMessage,
    ) -> Result<Message, Failure> {
        let mut retried = false;
        loop {
            if self.token_rejected.is_cancelled() {
                return Err(Failure::Unauthorized);
            }
            if self.is_forbidden(channel) {
                return Err(Failure::Forbidden);
            }
            let error = match channel.send_message(ctx, message.clone()).await {
                Ok(sent) => return Ok(sent),
                Err(e) => e,
            };
            let failure = classify(&error);
            match failure {
                Failure::Unauthorized => self.reject_token("sending a message"),
                Failure::Forbidden => self.mark_forbidden(channel, &error),
                Failure::RateLimited | Failure::Transient if !retried => {
                    retried = true;
                    tracing::warn!(
                        character = %self.character,
                        channel_id = %channel,
                        error = %error,
                        ?failure,
                        "message not sent; retrying once"
                    );
                    tokio::time::sleep(SEND_RETRY_WAIT).await;
                    continue;
                }
                _ => tracing::warn!(
                    character = %self.character,
                    channel_id = %channel,
                    error = %error,
                    ?failure,
                    "message not sent"
                ),
            }
            return Err(failure);
        }
    }

    pub(super) fn is_forbidden(&self, channel: ChannelId) -> bool {
        self.forbidden
            .lock()
            .expect("forbidden lock")
            .is_forbidden(channel.get(), Instant::now())
    }

    pub(super) fn mark_forbidden(&self, channel: ChannelId, error: &serenity::Error) {
        tracing::warn!(
            character = %self.character,
            channel_id = %channel,
            error = %error,
            skip_s = FORBIDDEN_FOR.as_secs(),
            "no permission to post in this channel (403); not retrying, skipping it for a while"
        );
        self.forbidden
            .lock()
            .expect("forbidden lock")
            .mark(channel.get(), Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    /// Who a sent message pings, as Discord decides it from the content and the message's
    /// `allowed_mentions`: `@everyone`/`@here` only with `everyone` in `parse`, a user's
    /// `<@id>`/`<@!id>` only when parsed or listed, a role's `<@&id>` likewise.
    fn pinged(body: &Value) -> Vec<String> {
        let content = body["content"].as_str().unwrap_or_default();
        let allowed = &body["allowed_mentions"];
        let listed = |key: &str, id: &str| {
            allowed[key]
                .as_array()
                .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(id)))
        };
        let parsed = |kind: &str| {
            allowed.get("parse").is_none()
                || allowed["parse"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|v| v.as_str() == Some(kind)))
        };
        let mut out = Vec::new();
        for everyone in ["@everyone", "@here"] {
            if content.contains(everyone) && parsed("everyone") {
                out.push(everyone.to_string());
            }
        }
        for (i, _) in content.match_indices("<@") {
            let rest = &content[i + 2..];
            let (role, rest) = match rest.strip_prefix('&') {
                Some(r) => (true, r),
                None => (false, rest.strip_prefix('!').unwrap_or(rest)),
            };
            let id: String = rest.chars().take_while(char::is_ascii_digit).collect();
            if id.is_empty() || !rest[id.len()..].starts_with('>') {
                continue;
            }
            let (kind, key) = if role {
                ("roles", "roles")
            } else {
                ("users", "users")
            };
            if parsed(kind) || listed(key, &id) {
                out.push(format!("{kind}:{id}"));
            }
        }
        out
    }

    proptest! {
        #[test]
        fn no_mention_but_the_author_survives_any_reply(
            words in prop::collection::vec(
                prop_oneof![
                    3 => "[a-z]{1,10}",
                    1 => prop::sample::select(vec![
                        "@everyone", "@here", "<@7>", "<@!7>", "<@8>", "<@!8>", "<@&5>",
                        "<@&7>", "@\u{200b}everyone", "<@&&5>", "<@!!8>",
                    ]).prop_map(str::to_string),
                    1 => "<@[!&]?[0-9]{1,20}>",
                ],
                0..400,
            ),
            author in 1u64..20,
        ) {
            let text = words.join(" ");
            let target = ReplyTarget {
                channel: ChannelId::new(200),
                guild: Some(GuildId::new(9)),
                message: MessageId::new(300),
                author: UserId::new(author),
            };
            let chunks = chunk_with_footer(&text, None, DISCORD_MESSAGE_LIMIT);
            for kind in [SendKind::Reply, SendKind::Notice] {
                for m in build_messages(&chunks, &target, kind) {
                    let body = serde_json::to_value(&m).unwrap();
                    for who in pinged(&body) {
                        prop_assert_eq!(&who, &format!("users:{author}"), "{}", body);
                    }
                }
            }
        }
    }

    #[test]
    fn every_message_allows_only_the_author_to_be_pinged() {
        let target = ReplyTarget {
            channel: ChannelId::new(200),
            guild: Some(GuildId::new(9)),
            message: MessageId::new(300),
            author: UserId::new(7),
        };
        let chunks = vec![
            "@everyone @here <@&5> <@8> look".to_string(),
            "second".to_string(),
        ];
        let built = build_messages(&chunks, &target, SendKind::Reply);
        assert_eq!(built.len(), 2);
        for (i, m) in built.iter().enumerate() {
            let body = serde_json::to_value(m).unwrap();
            let mentions = &body["allowed_mentions"];
            assert_eq!(mentions["parse"], json!([]), "{body}");
            assert_eq!(mentions["users"], json!(["7"]), "{body}");
            assert_eq!(mentions["roles"], json!([]), "{body}");
            assert_eq!(body["content"], json!(chunks[i]));
            // Only the first piece is a reply to the user's message.
            assert_eq!(body.get("message_reference").is_some(), i == 0, "{body}");
            // A retry of the same piece is de-duplicated by Discord.
            assert_eq!(body["nonce"], json!(format!("300r{i}")), "{body}");
            assert_eq!(body["enforce_nonce"], json!(true), "{body}");
        }
        let first = serde_json::to_value(&built[0]).unwrap();
        assert_eq!(first["message_reference"]["message_id"], json!("300"));
        assert_eq!(
            first["message_reference"]["fail_if_not_exists"],
            json!(false)
        );
    }
}
