//! Privacy a Discord user can exercise, as slash commands of each character bot:
//! `/memories` lists what this bot's character remembers about the caller, `/forget` asks
//! first (a confirmation button) and only the click forgets — the clicking user's data with
//! this bot's character, nothing else. Every answer is ephemeral (only the caller sees it)
//! and pings nobody (allowed mentions empty: a memory may hold `@everyone` or `<@id>`).
//!
//! Discord wants the first answer to an interaction within 3 seconds; the work crosses the
//! broker to a worker, so the command (or the click) is deferred at once — `/memories` with
//! a deferred ephemeral message (callback type 5, flag 64), the button with a deferred
//! update of the confirmation (type 6) — and the result edits that original answer. The
//! commands are registered per bot with one bulk overwrite (`PUT
//! /applications/{id}/commands`) on its first READY.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use serenity::all::{
    ButtonStyle, Command, CommandInteraction, ComponentInteraction, Context, CreateActionRow,
    CreateAllowedMentions, CreateButton, CreateCommand, CreateInteractionResponse,
    CreateInteractionResponseMessage, EditInteractionResponse, Interaction,
};
use whisperfleet_shared::identity::Identity;
use whisperfleet_shared::wire::{PrivacyAction, PrivacyReply};

use super::client::Bot;
use super::text::DISCORD_MESSAGE_LIMIT;
use crate::gateway::PrivacyError;

pub const MEMORIES: &str = "memories";
pub const FORGET: &str = "forget";
/// The confirmation's buttons (their `custom_id`s).
pub const FORGET_CONFIRM: &str = "whisperfleet:forget:confirm";
pub const FORGET_CANCEL: &str = "whisperfleet:forget:cancel";

/// Memory lines shown at most; the rest is counted.
const SHOWN_MAX: usize = 25;
/// One memory's text is cut here, so one long message does not take the whole answer.
const MEMORY_CHARS: usize = 160;

/// The commands every character bot registers.
pub fn definitions(character: &str) -> Vec<CreateCommand> {
    vec![
        CreateCommand::new(MEMORIES).description(cut(
            &format!("What {character} remembers about you (only you see it)"),
            100,
        )),
        CreateCommand::new(FORGET).description(cut(
            &format!("Make {character} forget everything about you (asks first)"),
            100,
        )),
    ]
}

/// Nobody is pinged by what these answers say.
fn no_pings() -> CreateAllowedMentions {
    CreateAllowedMentions::new()
}

impl Bot {
    /// Registers the commands once per bot process (a later READY after a reconnect does
    /// not register again; a failed attempt is retried at the next READY).
    pub(super) async fn register_commands(&self, ctx: &Context) {
        if self.commands_registered.swap(true, Ordering::SeqCst) {
            return;
        }
        match Command::set_global_commands(&ctx.http, definitions(&self.character)).await {
            Ok(c) => {
                tracing::info!(character = %self.character, commands = c.len(), "slash commands registered")
            }
            Err(e) => {
                self.commands_registered.store(false, Ordering::SeqCst);
                tracing::warn!(character = %self.character, error = %e, "slash commands not registered; trying again at the next READY");
            }
        }
    }

    pub(super) async fn on_interaction(&self, ctx: Context, interaction: Interaction) {
        match interaction {
            Interaction::Command(cmd) if cmd.data.name == MEMORIES => {
                self.memories(&ctx, &cmd).await
            }
            Interaction::Command(cmd) if cmd.data.name == FORGET => {
                self.ask_forget(&ctx, &cmd).await
            }
            Interaction::Component(c) if c.data.custom_id == FORGET_CONFIRM => {
                self.forget(&ctx, &c).await
            }
            Interaction::Component(c) if c.data.custom_id == FORGET_CANCEL => {
                let msg = CreateInteractionResponseMessage::new()
                    .content("Nothing was forgotten.")
                    .components(Vec::new())
                    .allowed_mentions(no_pings());
                if let Err(e) = c
                    .create_response(&ctx.http, CreateInteractionResponse::UpdateMessage(msg))
                    .await
                {
                    tracing::warn!(character = %self.character, error = %e, "could not answer a cancelled /forget");
                }
            }
            other => {
                tracing::debug!(kind = ?other.kind(), "interaction not for privacy commands; ignored")
            }
        }
    }

    fn identity_of(user_id: u64) -> Identity {
        // Discord vouches for the user id; Discord identities have no namespace.
        Identity::new("discord", "", user_id.to_string())
    }

    async fn memories(&self, ctx: &Context, cmd: &CommandInteraction) {
        let defer = CreateInteractionResponse::Defer(
            CreateInteractionResponseMessage::new()
                .ephemeral(true)
                .allowed_mentions(no_pings()),
        );
        if let Err(e) = cmd.create_response(&ctx.http, defer).await {
            tracing::warn!(character = %self.character, error = %e, "could not defer /memories");
            return;
        }
        let result = self
            .core
            .privacy(
                Self::identity_of(cmd.user.id.get()),
                Some(self.character.clone()),
                PrivacyAction::Show,
            )
            .await;
        let text = match result {
            Ok(reply) => memories_text(&self.character, &reply),
            Err(e) => failure_text(&e, "look that up"),
        };
        let edit = EditInteractionResponse::new()
            .content(text)
            .allowed_mentions(no_pings());
        if let Err(e) = cmd.edit_response(&ctx.http, edit).await {
            tracing::warn!(character = %self.character, error = %e, "could not answer /memories");
        }
    }

    async fn ask_forget(&self, ctx: &Context, cmd: &CommandInteraction) {
        let buttons = CreateActionRow::Buttons(vec![
            CreateButton::new(FORGET_CONFIRM)
                .label("Forget me")
                .style(ButtonStyle::Danger),
            CreateButton::new(FORGET_CANCEL)
                .label("Cancel")
                .style(ButtonStyle::Secondary),
        ]);
        let msg = CreateInteractionResponseMessage::new()
            .ephemeral(true)
            .content(format!(
                "This makes {} forget everything about you: memories, your conversation \
                 history and your relationship. It cannot be undone. Sure?",
                self.character
            ))
            .components(vec![buttons])
            .allowed_mentions(no_pings());
        if let Err(e) = cmd
            .create_response(&ctx.http, CreateInteractionResponse::Message(msg))
            .await
        {
            tracing::warn!(character = %self.character, error = %e, "could not answer /forget");
        }
    }

    /// The confirmation button: forgets the clicking user's data with this character.
    async fn forget(&self, ctx: &Context, click: &ComponentInteraction) {
        if let Err(e) = click
            .create_response(&ctx.http, CreateInteractionResponse::Acknowledge)
            .await
        {
            tracing::warn!(character = %self.character, error = %e, "could not defer the /forget confirmation");
            return;
        }
        let result = self
            .core
            .privacy(
                Self::identity_of(click.user.id.get()),
                Some(self.character.clone()),
                PrivacyAction::Forget,
            )
            .await;
        let text = match result {
            Ok(reply) => {
                let f = reply.forgotten.unwrap_or_default();
                format!(
                    "Done: {} has forgotten you ({} memories, {} conversation histories, {} \
                     relationship{}).",
                    self.character,
                    f.memories,
                    f.histories,
                    f.relationships,
                    if f.relationships == 1 { "" } else { "s" }
                )
            }
            Err(e) => failure_text(&e, "forget you"),
        };
        let edit = EditInteractionResponse::new()
            .content(text)
            .components(Vec::new())
            .allowed_mentions(no_pings());
        if let Err(e) = click.edit_response(&ctx.http, edit).await {
            tracing::warn!(character = %self.character, error = %e, "could not answer the /forget confirmation");
        }
    }
}

fn failure_text(e: &PrivacyError, what: &str) -> String {
    let why = match e {
        PrivacyError::Timeout(_) => "nobody answered in time",
        PrivacyError::BrokerDown(_) | PrivacyError::Failed(_) => "a store is unavailable",
    };
    format!(
        "Sorry, I could not {what} right now ({why}). Nothing was changed; please try again later."
    )
}

/// `/memories`' answer: newest first, within Discord's 2,000 characters.
pub fn memories_text(character: &str, reply: &PrivacyReply) -> String {
    if reply.memories.is_empty() {
        return format!("{character} remembers nothing about you.");
    }
    let total = reply.memories.len();
    let mut out = format!("**What {character} remembers about you** ({total}, newest first):\n");
    let mut shown = 0;
    for m in reply.memories.iter().take(SHOWN_MAX) {
        let who = if m.role == "user" { "you" } else { character };
        let line = format!(
            "• {} {who}: {}\n",
            m.timestamp.format("%Y-%m-%d"),
            cut(&m.text.replace('\n', " "), MEMORY_CHARS)
        );
        // Room for the "… and N more" line.
        if out.chars().count() + line.chars().count() + 40 > DISCORD_MESSAGE_LIMIT {
            break;
        }
        out.push_str(&line);
        shown += 1;
    }
    if shown < total {
        let _ = write!(
            out,
            "… and {} more. `/forget` removes them all.",
            total - shown
        );
    }
    out
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    let mut t: String = s.chars().take(max.saturating_sub(1)).collect();
    t.push('…');
    t
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use whisperfleet_shared::wire::{PrivacyOutcome, ShownMemory, WIRE_VERSION};

    use super::*;

    fn reply(n: usize, text: &str) -> PrivacyReply {
        PrivacyReply {
            v: WIRE_VERSION,
            request_id: uuid::Uuid::now_v7(),
            action: PrivacyAction::Show,
            outcome: PrivacyOutcome::Ok,
            memories: (0..n)
                .map(|i| ShownMemory {
                    character: "nora".into(),
                    role: if i % 2 == 0 { "user" } else { "assistant" }.into(),
                    text: format!("{text} {i}"),
                    emotion: "joy".into(),
                    intensity: 0.5,
                    channel_id: "1".into(),
                    is_dm: true,
                    timestamp: Utc::now(),
                })
                .collect(),
            relationships: Vec::new(),
            histories: Vec::new(),
            cached_answers: 0,
            forgotten: None,
            error: None,
        }
    }

    #[test]
    fn the_list_fits_one_discord_message_and_says_what_it_left_out() {
        let none = memories_text("Nora", &reply(0, ""));
        assert!(none.contains("remembers nothing"), "{none}");
        let few = memories_text("Nora", &reply(3, "My cat is Pumpernickel"));
        assert!(few.contains("you: My cat is Pumpernickel 0"), "{few}");
        assert!(few.contains("Nora: My cat is Pumpernickel 1"), "{few}");
        assert!(!few.contains("more"), "{few}");
        let many = memories_text("Nora", &reply(400, &"long words ".repeat(40)));
        assert!(
            many.chars().count() <= DISCORD_MESSAGE_LIMIT,
            "{}",
            many.len()
        );
        assert!(many.contains("more."), "{many}");
    }

    #[test]
    fn command_descriptions_fit_discords_limit() {
        let long = "A".repeat(200);
        for c in definitions(&long) {
            let v = serde_json::to_value(&c).unwrap();
            assert!(v["description"].as_str().unwrap().chars().count() <= 100);
        }
    }
}
