//! Stage `compose`: the six CDL components (Character Identity, Character Mode, AI Identity
//! Guidance, Character Personality, Character Voice, Final Response Guidance) plus the
//! per-turn context components, assembled into the chat messages under a token budget.
//!
//! Building a prompt is a pure function of the character `cdl_load` loaded and the turn's
//! context ([`compose`]). The stage runs it through a [`Composition`]: the fleet's is
//! [`FromLoaded`]; the bench passes the seed's (each component loading the character again,
//! one after another), built from the same [`CDL_COMPONENTS`] and [`assemble`]. A
//! composition that loads can fail: an optional component whose load fails is left out (the
//! turn degrades), a required one (identity, mode, final guidance) fails the stage.

use std::sync::Arc;

use async_trait::async_trait;
use whisperfleet_shared::character::Character;
use whisperfleet_shared::ports::characters::StoreError;
use whisperfleet_shared::ports::llm::ChatMessage;

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
}

/// The composed prompt and what was left out.
#[derive(Debug, Clone)]
pub struct Composed {
    pub messages: Vec<ChatMessage>,
    pub components: Vec<&'static str>,
    pub degraded: Vec<String>,
}

/// One CDL component: a pure builder, and whether a prompt cannot go without it.
#[derive(Clone, Copy)]
pub struct CdlComponent {
    pub required: bool,
    pub build: fn(&Character, &ComposeContext) -> Option<Component>,
}

/// The six CDL components, in prompt order.
pub const CDL_COMPONENTS: [CdlComponent; 6] = [
    CdlComponent {
        required: true,
        build: |c, _| Some(prompt::character_identity(c)),
    },
    CdlComponent {
        required: true,
        build: |c, _| Some(prompt::character_mode(c)),
    },
    CdlComponent {
        required: false,
        build: |c, ctx| prompt::ai_identity_guidance(c, &ctx.user_text),
    },
    CdlComponent {
        required: false,
        build: |c, _| Some(prompt::character_personality(c)),
    },
    CdlComponent {
        required: false,
        build: |c, _| Some(prompt::character_voice(c)),
    },
    CdlComponent {
        required: true,
        build: |c, ctx| Some(prompt::final_response_guidance(c, &ctx.user_name)),
    },
];

/// The prompt for `character` in this turn's context.
pub fn compose(character: &Character, ctx: &ComposeContext) -> Composed {
    let cdl = CDL_COMPONENTS
        .iter()
        .filter_map(|c| (c.build)(character, ctx))
        .collect();
    assemble(cdl, ctx, Vec::new())
}

/// The CDL components built, plus the per-turn context components, assembled under the
/// budget; `degraded` says what was left out and why.
pub fn assemble(
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
    let messages = prompt::assemble(
        parts,
        &ctx.history,
        &ctx.user_name,
        &ctx.user_text,
        ctx.budget_tokens,
    );
    Composed {
        messages,
        components: names,
        degraded,
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
