//! Receiving: serenity's event handler, and the path from an incoming Discord message to a
//! submitted turn: the decision (is it for this bot), replay drop, the per-user rate limit,
//! the length limit and the admission limit (the `turns` queue depth), each refusal answered
//! with a notice and nothing published. The typing indicator runs while the turn is pending.
//! READY also registers the bot's slash commands, and interactions (slash commands, buttons)
//! go to `commands`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::Instrument;

use chrono::{DateTime, Utc};
use serenity::all::{
    Context, EventHandler, Interaction, Message, MessageType, Ready, ResumedEvent,
};
use whisperfleet_shared::ports::broker::Broker;
use whisperfleet_shared::topology;
use whisperfleet_shared::wire::Conversation;

use super::client::Bot;
use super::delivery::ReplyTarget;
use super::policy::{Decision, Incoming, RateDecision, decide};
use super::stream::Streamed;
use super::text;
use crate::gateway::{SubmitError, TurnInput};

/// How long the depth sample of the `turns` queue may take before admission gives up on it.
const DEPTH_SAMPLE_TIMEOUT: Duration = Duration::from_millis(500);

pub(super) struct Handler(pub(super) Arc<Bot>);

#[serenity::async_trait]
impl EventHandler for Handler {
    async fn ready(&self, ctx: Context, ready: Ready) {
        self.0.bot_id.store(ready.user.id.get(), Ordering::Relaxed);
        tracing::info!(
            character = %self.0.character,
            bot_user = %ready.user.name,
            guilds = ready.guilds.len(),
            "discord bot ready"
        );
        self.0.register_commands(&ctx).await;
    }

    async fn interaction_create(&self, ctx: Context, interaction: Interaction) {
        let _in_flight = self.0.shared.in_flight.token();
        self.0.on_interaction(ctx, interaction).await;
    }

    async fn resume(&self, _ctx: Context, _event: ResumedEvent) {
        tracing::info!(character = %self.0.character, "discord session resumed");
    }

    async fn message(&self, ctx: Context, msg: Message) {
        // serenity runs each event in its own task; the token lets shutdown wait for it.
        let _in_flight = self.0.shared.in_flight.token();
        self.0.on_message(ctx, msg).await;
    }
}

/// The decision's view of a serenity message.
fn incoming<'a>(msg: &'a Message, mentions: &'a [u64]) -> Incoming<'a> {
    Incoming {
        author_id: msg.author.id.get(),
        author_is_bot: msg.author.bot || msg.webhook_id.is_some(),
        // Over the gateway, guild messages always carry their guild id.
        is_dm: msg.guild_id.is_none(),
        mentions,
        replied_to_author: msg.referenced_message.as_ref().map(|m| m.author.id.get()),
        is_user_message: matches!(msg.kind, MessageType::Regular | MessageType::InlineReply),
        content: &msg.content,
    }
}

fn turn_input(
    character: &str,
    msg: &Message,
    text: String,
    received: Instant,
    received_at: DateTime<Utc>,
) -> TurnInput {
    let timestamp = msg
        .timestamp
        .to_rfc3339()
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.with_timezone(&Utc));
    let user_name = msg
        .member
        .as_ref()
        .and_then(|m| m.nick.clone())
        .unwrap_or_else(|| msg.author.display_name().to_string());
    TurnInput {
        conversation: Conversation {
            platform: "discord".into(),
            namespace: String::new(),
            channel_id: msg.channel_id.to_string(),
            user_id: msg.author.id.to_string(),
            guild_id: msg.guild_id.map(|g| g.to_string()),
            is_dm: msg.guild_id.is_none(),
        },
        character: character.to_string(),
        user_name,
        text,
        platform_sent_at: text::platform_sent_at(msg.id.get(), timestamp, received_at),
        platform_message_id: Some(msg.id.to_string()),
        received,
        received_at,
    }
}

async fn turns_depth(broker: Arc<dyn Broker>) -> Option<u64> {
    match tokio::time::timeout(
        DEPTH_SAMPLE_TIMEOUT,
        broker.queue_stats(topology::TURNS_QUEUE),
    )
    .await
    {
        Ok(Ok(stats)) => stats.map(|s| s.ready),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "turns queue depth not sampled");
            None
        }
        Err(_) => None,
    }
}

impl Bot {
    async fn on_message(self: &Arc<Self>, ctx: Context, msg: Message) {
        let received = Instant::now();
        let received_at = Utc::now();
        if self.token_rejected.is_cancelled() {
            return;
        }
        let bot_id = self.bot_id.load(Ordering::Relaxed);
        if bot_id == 0 {
            tracing::debug!(character = %self.character, "message before the bot knows its own id; ignored");
            return;
        }
        let mention_ids: Vec<u64> = msg.mentions.iter().map(|u| u.id.get()).collect();
        let text = match decide(&incoming(&msg, &mention_ids), bot_id) {
            Decision::Answer { text, why } => {
                tracing::debug!(character = %self.character, ?why, message_id = %msg.id, "answering");
                text
            }
            Decision::Ignore(why) => {
                tracing::trace!(character = %self.character, ?why, message_id = %msg.id, "not for this bot");
                return;
            }
        };
        if !self
            .seen
            .lock()
            .expect("seen lock")
            .first_time(msg.id.get())
        {
            tracing::info!(character = %self.character, message_id = %msg.id, "dropping a replayed message (already handled)");
            return;
        }
        if self.is_forbidden(msg.channel_id) {
            tracing::debug!(character = %self.character, channel_id = %msg.channel_id, "no permission to post here; message not answered");
            return;
        }
        let rate = self
            .shared
            .limiter
            .lock()
            .expect("limiter lock")
            .check(msg.author.id.get(), Instant::now());
        if let RateDecision::Limited {
            retry_after,
            tell_user,
        } = rate
        {
            tracing::info!(character = %self.character, user_id = %msg.author.id, tell_user, "user over the rate limit; nothing published");
            if tell_user {
                self.say(&ctx, &msg, &text::rate_limited_notice(retry_after))
                    .await;
            }
            return;
        }
        match self.core.validate(&text) {
            Ok(()) => {}
            Err(SubmitError::TooLong { chars, limit }) => {
                self.say(&ctx, &msg, &text::too_long_notice(chars, limit))
                    .await;
                return;
            }
            Err(_) => return,
        }
        let broker = self.core.broker().clone();
        if let Some(position) = self.shared.admission.position(|| turns_depth(broker)).await {
            tracing::warn!(character = %self.character, position, "turns queue over the admission depth; message refused");
            self.say(&ctx, &msg, &text::busy_notice(position)).await;
            return;
        }
        let mut typing = Some(self.start_typing(ctx.http.clone(), msg.channel_id));
        let input = turn_input(&self.character, &msg, text, received, received_at);
        let mut streamed = Streamed::new(ReplyTarget::of(&msg));
        let result = if self.shared.settings.stream {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let submit = self.core.submit_streaming(input, tx);
            tokio::pin!(submit);
            loop {
                tokio::select! {
                    biased;
                    Some(piece) = rx.recv() => {
                        self.stream_piece(&ctx, &mut streamed, &piece).await;
                        if streamed.shown() {
                            // Text is visible: "typing…" would only say it again.
                            typing = None;
                        }
                    }
                    r = &mut submit => break r,
                }
            }
        } else {
            self.core.submit(input).await
        };
        drop(typing);
        match result {
            Ok(pending) => {
                // Delivery logs belong to the turn's trace.
                let span = pending.span.clone();
                if streamed.shown() {
                    self.finish_streamed(&ctx, streamed, pending)
                        .instrument(span)
                        .await
                } else {
                    self.deliver(&ctx, &msg, pending).instrument(span).await
                }
            }
            Err(SubmitError::Empty) => {}
            Err(SubmitError::TooLong { chars, limit }) => {
                self.say(&ctx, &msg, &text::too_long_notice(chars, limit))
                    .await;
            }
            Err(SubmitError::Busy(e)) => {
                tracing::info!(character = %self.character, error = %e, "conversation has too many messages waiting");
                self.say(&ctx, &msg, text::CONVERSATION_BUSY_NOTICE).await;
            }
            Err(SubmitError::BrokerDown(e)) => {
                tracing::warn!(character = %self.character, error = %e, "turn not published");
                self.say(&ctx, &msg, text::BROKER_DOWN_NOTICE).await;
            }
            Err(SubmitError::Timeout(after)) => {
                tracing::warn!(character = %self.character, after_ms = after.as_millis() as u64, "no reply in time");
                self.say(&ctx, &msg, text::TIMEOUT_NOTICE).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn message(value: serde_json::Value) -> Message {
        let mut base = json!({
            "id": "1300000000000000000",
            "channel_id": "200",
            "author": {"id": "7", "username": "ada", "discriminator": "0", "global_name": "Ada"},
            "content": "",
            "timestamp": "2024-11-01T10:00:00.000000+00:00",
            "edited_timestamp": null,
            "tts": false,
            "mention_everyone": false,
            "mentions": [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": false,
            "type": 0
        });
        for (k, v) in value.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(base).expect("a Discord message")
    }

    fn answer_of(msg: &Message, bot: u64) -> Decision {
        let ids: Vec<u64> = msg.mentions.iter().map(|u| u.id.get()).collect();
        decide(&incoming(msg, &ids), bot)
    }

    #[test]
    fn serenity_messages_map_onto_the_decision() {
        let bot = json!({"id": "42", "username": "vellum", "discriminator": "0", "bot": true});
        let mention = message(json!({
            "guild_id": "9",
            "content": "<@42> hello",
            "mentions": [bot.clone()],
        }));
        assert!(
            matches!(answer_of(&mention, 42), Decision::Answer { ref text, .. } if text == "hello")
        );
        let dm = message(json!({"content": "hi there"}));
        assert!(matches!(answer_of(&dm, 42), Decision::Answer { .. }));
        let chatter = message(json!({"guild_id": "9", "content": "hi all"}));
        assert!(matches!(answer_of(&chatter, 42), Decision::Ignore(_)));
        let own_reply = message(json!({
            "id": "1300000000000000001",
            "channel_id": "200",
            "author": bot.clone(),
            "content": "I am Vellum",
            "timestamp": "2024-11-01T10:00:00.000000+00:00",
            "edited_timestamp": null, "tts": false, "mention_everyone": false,
            "mentions": [], "mention_roles": [], "attachments": [], "embeds": [],
            "pinned": false, "type": 0
        }));
        let reply = message(json!({
            "guild_id": "9",
            "content": "and then?",
            "type": 19,
            "referenced_message": own_reply,
        }));
        assert!(matches!(answer_of(&reply, 42), Decision::Answer { .. }));
        let from_bot = message(json!({"author": bot, "content": "hi"}));
        assert!(matches!(answer_of(&from_bot, 42), Decision::Ignore(_)));
        let webhook = message(json!({"guild_id": "9", "webhook_id": "5", "content": "<@42> hi"}));
        assert!(matches!(answer_of(&webhook, 42), Decision::Ignore(_)));
    }

    #[test]
    fn turn_input_carries_the_conversation_and_platform_time() {
        let received_at = Utc::now();
        let id = ((received_at.timestamp_millis() as u64 - 120 - text::DISCORD_EPOCH_MS) << 22) | 1;
        let msg = message(json!({
            "id": id.to_string(),
            "guild_id": "9",
            "member": {"nick": "Countess", "roles": [], "joined_at": null, "deaf": false,
                       "mute": false, "flags": 0},
            "content": "<@42> hi",
        }));
        let input = turn_input("Vellum", &msg, "hi".into(), Instant::now(), received_at);
        assert_eq!(input.conversation.platform, "discord");
        assert_eq!(input.conversation.channel_id, "200");
        assert_eq!(input.conversation.user_id, "7");
        assert_eq!(input.conversation.guild_id.as_deref(), Some("9"));
        assert!(!input.conversation.is_dm);
        assert_eq!(input.user_name, "Countess");
        assert_eq!(input.platform_message_id, Some(id.to_string()));
        let lag = received_at - input.platform_sent_at.unwrap();
        assert_eq!(lag.num_milliseconds(), 120);
        let dm = message(json!({"content": "hi"}));
        let input = turn_input("Vellum", &dm, "hi".into(), Instant::now(), received_at);
        assert!(input.conversation.is_dm);
        assert_eq!(input.user_name, "Ada");
    }
}
