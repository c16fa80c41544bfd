//! Stage `compose`: the six CDL components (Character Identity, Character Mode, AI Identity
//! Guidance, Character Personality, Character Voice, Final Response Guidance), a card's
//! example dialogue and lorebook sections, plus the per-turn context components, assembled
//! into the chat messages under a token budget. A card character's text has its macros
//! resolved first ([`prompt::for_prompt`]); its greeting opens a new conversation's history
//! and its post-history instructions follow the history.
//!
//! Building a prompt is a pure function of the character `cdl_load` loaded and the turn's
//! context ([`compose`]). The stage runs it through a [`Composition`]: the fleet's is
//! [`FromLoaded`]; the bench passes the seed's (each component loading the character again,
//! one after another), built from the same [`CDL_COMPONENTS`] and [`assemble`]. A
//! composition that loads can fail: an optional component whose load fails is left out (the
//! turn degrades), a required one (identity, mode, final guidance) fails the stage.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use whisperfleet_shared::cards::LorePosition;
use whisperfleet_shared::character::Character;
use whisperfleet_shared::ports::characters::StoreError;
use whisperfleet_shared::ports::llm::{ChatMessage, Role};

use crate::cdl::{CdlCounts, CharacterSource};
use crate::prompt::{
    self, Component, EmotionSummary, HistoryEntry, MemorySnippet, RelationshipSummary,
};

/// Everything but the character that goes into a prompt.
#[derive(Debug, Clone, Default)]
pub struct ComposeContext {
    pub user_name: String,
    pub user_text: String,
    pub history: Vec<HistoryEntry>,
    pub memories: Vec<MemorySnippet>,
    pub user_emotion: Option<EmotionSummary>,
    pub trajectory: Vec<EmotionSummary>,
    pub relationship: Option<RelationshipSummary>,
    pub budget_tokens: usize,
    /// The conversation's key: which greeting a card character opens it with.
    pub conversation_key: String,
    /// The lorebook entries this turn activates, found once for the two lore sections and
    /// the count (scanning a large lorebook costs more than the rest of the prompt).
    pub lore: OnceLock<Vec<prompt::LoreHit>>,
}

/// The composed prompt and what was left out.
#[derive(Debug, Clone)]
pub struct Composed {
    pub messages: Vec<ChatMessage>,
    pub components: Vec<&'static str>,
    pub degraded: Vec<String>,
    /// Lorebook entries in the prompt (the turn's `lore_entries_used`).
    pub lore_entries_used: u32,
}

/// One CDL component: a pure builder, and whether a prompt cannot go without it.
#[derive(Clone, Copy)]
pub struct CdlComponent {
    pub required: bool,
    pub build: fn(&Character, &ComposeContext) -> Option<Component>,
}

/// The CDL components in prompt order, and what a card adds (its lore before and after the
/// character block, its example dialogue). Each builder sees the character with its card
/// macros resolved; a character without a card is passed through as it is.
pub const CDL_COMPONENTS: [CdlComponent; 9] = [
    CdlComponent {
        required: true,
        build: |c, ctx| {
            Some(prompt::character_identity(&prompt::for_prompt(
                c,
                &ctx.user_name,
            )))
        },
    },
    CdlComponent {
        required: true,
        build: |c, ctx| {
            Some(prompt::character_mode(&prompt::for_prompt(
                c,
                &ctx.user_name,
            )))
        },
    },
    CdlComponent {
        required: false,
        build: |c, ctx| prompt::ai_identity_guidance(c, &ctx.user_text),
    },
    // A card says who its character is in words; the Big Five defaults and an empty voice
    // profile would only contradict it.
    CdlComponent {
        required: false,
        build: |c, _| c.card.is_none().then(|| prompt::character_personality(c)),
    },
    CdlComponent {
        required: false,
        build: |c, _| c.card.is_none().then(|| prompt::character_voice(c)),
    },
    CdlComponent {
        required: true,
        build: |c, ctx| Some(prompt::final_response_guidance(c, &ctx.user_name)),
    },
    CdlComponent {
        required: false,
        build: |c, ctx| lore(c, ctx, LorePosition::BeforeChar),
    },
    CdlComponent {
        required: false,
        build: |c, ctx| lore(c, ctx, LorePosition::AfterChar),
    },
    CdlComponent {
        required: false,
        build: |c, ctx| prompt::example_dialogue(&prompt::for_prompt(c, &ctx.user_name)),
    },
];

/// The lore section at `position` for this turn.
fn lore(c: &Character, ctx: &ComposeContext, position: LorePosition) -> Option<prompt::Component> {
    if c.lore_entry_count() == 0 {
        return None;
    }
    prompt::lorebook(c, &ctx.user_name, lore_hits(c, ctx), position)
}

/// This turn's lore hits, found on first use. Keys match what was written (the card's and
/// the conversation's own text); contents are resolved where they are placed.
fn lore_hits<'a>(c: &Character, ctx: &'a ComposeContext) -> &'a [prompt::LoreHit] {
    ctx.lore.get_or_init(|| {
        let history = with_greeting(&prompt::for_prompt(c, &ctx.user_name), ctx);
        prompt::lore_hits(c, &history, &ctx.user_text)
    })
}

/// The history a prompt shows: a card character's greeting opens a conversation that has
/// none yet (the turn appends the same greeting with its first exchange, so it is kept).
fn with_greeting(c: &Character, ctx: &ComposeContext) -> Vec<HistoryEntry> {
    if !ctx.history.is_empty() {
        return ctx.history.clone();
    }
    prompt::greeting(c, &ctx.conversation_key)
        .map(|text| HistoryEntry {
            role: Role::Assistant,
            text,
            turn_id: String::new(),
        })
        .into_iter()
        .collect()
}

/// The greeting entry a new conversation's history starts with, if the character has one
/// and the conversation has no history yet: what the turn appends before its first exchange.
pub fn opening_greeting(c: &Character, ctx: &ComposeContext) -> Option<HistoryEntry> {
    if !ctx.history.is_empty() {
        return None;
    }
    let c = prompt::for_prompt(c, &ctx.user_name);
    with_greeting(&c, ctx).pop()
}

/// The prompt for `character` in this turn's context.
pub fn compose(character: &Character, ctx: &ComposeContext) -> Composed {
    let cdl = CDL_COMPONENTS
        .iter()
        .filter_map(|c| (c.build)(character, ctx))
        .collect();
    assemble(character, cdl, ctx, Vec::new())
}

/// The CDL components built, plus the per-turn context components, assembled under the
/// budget with the conversation's history (a greeting opening a new one) and, last, a card's
/// post-history instructions; `degraded` says what was left out and why.
pub fn assemble(
    character: &Character,
    mut parts: Vec<Component>,
    ctx: &ComposeContext,
    degraded: Vec<String>,
) -> Composed {
    parts.extend(prompt::memories(&ctx.memories));
    parts.extend(prompt::emotion_context(
        ctx.user_emotion.as_ref(),
        &ctx.trajectory,
    ));
    parts.extend(prompt::relationship(ctx.relationship.as_ref()));
    let names = parts.iter().map(|c| c.kind.as_str()).collect();
    let resolved = prompt::for_prompt(character, &ctx.user_name);
    let history = with_greeting(&resolved, ctx);
    let mut messages = prompt::assemble(
        parts,
        &history,
        &ctx.user_name,
        &ctx.user_text,
        ctx.budget_tokens,
    );
    // What the budget kept of the lore: the hits of the sections still in the prompt.
    let system = messages.first().map_or("", |m| m.content.as_str());
    let lore_entries_used = if character.lore_entry_count() == 0 {
        0
    } else {
        lore_hits(character, ctx)
            .iter()
            .filter(|h| {
                system
                    .lines()
                    .any(|l| l == prompt::lore_kind(h.position).heading())
            })
            .count() as u32
    };
    if let Some(text) = prompt::post_history(&resolved) {
        messages.push(ChatMessage::new(Role::System, text));
    }
    Composed {
        messages,
        components: names,
        degraded,
        lore_entries_used,
    }
}

/// The turn's way back to its character, for a composition that loads it again; what it
/// loads is counted in the turn's `cdl_queries`.
pub struct Reload<'a> {
    characters: &'a dyn CharacterSource,
    name: &'a str,
    counts: &'a CdlCounts,
}

impl<'a> Reload<'a> {
    pub fn new(characters: &'a dyn CharacterSource, name: &'a str, counts: &'a CdlCounts) -> Self {
        Self {
            characters,
            name,
            counts,
        }
    }

    /// The character again, from the turn's character source.
    pub async fn load(&self) -> Result<Arc<Character>, StoreError> {
        self.characters
            .get(self.name, self.counts)
            .await?
            .ok_or_else(|| StoreError::Data("character vanished".into()))
    }
}

/// How the compose stage builds the turn's prompt.
#[async_trait]
pub trait Composition: Send + Sync {
    async fn compose(
        &self,
        character: &Arc<Character>,
        ctx: &ComposeContext,
        reload: &Reload<'_>,
    ) -> Result<Composed, StoreError>;
}

/// The fleet's composition: every component from the one character `cdl_load` loaded.
pub struct FromLoaded;

#[async_trait]
impl Composition for FromLoaded {
    async fn compose(
        &self,
        character: &Arc<Character>,
        ctx: &ComposeContext,
        _reload: &Reload<'_>,
    ) -> Result<Composed, StoreError> {
        Ok(compose(character, ctx))
    }
}
