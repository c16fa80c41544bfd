//! The prompt's data model: what a [`Component`] is and which kinds exist (with their order,
//! headings and priorities), the per-turn inputs the context builders take (history, memories,
//! emotions, relationship), and the token estimate the budget uses.

use serde::{Deserialize, Serialize};
use whisperfleet_shared::ports::llm::Role;

/// Which part of the prompt a [`Component`] is. The declaration order here is *not* the
/// prompt order; see [`ComponentKind::CANONICAL_ORDER`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ComponentKind {
    CharacterIdentity,
    CharacterMode,
    AiIdentityGuidance,
    CharacterPersonality,
    CharacterVoice,
    FinalResponseGuidance,
    Memories,
    EmotionContext,
    Relationship,
}

impl ComponentKind {
    /// The order components appear in the system message, whatever order they were built in
    /// (they are built concurrently). Who the character is comes first; the situational
    /// guidance sits close to the end; final guidance is last because models weigh the end of
    /// the system prompt most.
    pub const CANONICAL_ORDER: [ComponentKind; 9] = [
        Self::CharacterIdentity,
        Self::CharacterMode,
        Self::CharacterPersonality,
        Self::CharacterVoice,
        Self::AiIdentityGuidance,
        Self::Relationship,
        Self::EmotionContext,
        Self::Memories,
        Self::FinalResponseGuidance,
    ];

    /// Stable snake_case name (logs, metrics, tests).
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::CharacterIdentity => "character_identity",
            Self::CharacterMode => "character_mode",
            Self::AiIdentityGuidance => "ai_identity_guidance",
            Self::CharacterPersonality => "character_personality",
            Self::CharacterVoice => "character_voice",
            Self::FinalResponseGuidance => "final_response_guidance",
            Self::Memories => "memories",
            Self::EmotionContext => "emotion_context",
            Self::Relationship => "relationship",
        }
    }

    /// The Markdown heading each component's text starts with. Other code (the offline
    /// responder) recognises sections by it, so it is part of the module's contract.
    pub fn heading(&self) -> &'static str {
        match self {
            Self::CharacterIdentity => "# Character Identity",
            Self::CharacterMode => "# Character Mode",
            Self::AiIdentityGuidance => "# AI Identity Guidance",
            Self::CharacterPersonality => "# Personality",
            Self::CharacterVoice => "# Voice",
            Self::FinalResponseGuidance => "# Response Guidance",
            Self::Memories => "# Memories",
            Self::EmotionContext => "# Emotional Context",
            Self::Relationship => "# Relationship",
        }
    }

    /// Higher is more important. Used by [`assemble`](fn@super::assemble) to decide what to drop
    /// first when the prompt is over budget; builders set it, callers may override it.
    pub fn default_priority(&self) -> u8 {
        match self {
            Self::CharacterIdentity => 100,
            Self::CharacterMode => 95,
            Self::FinalResponseGuidance => 90,
            // Situational safety guidance outranks style: it is the last optional part to go.
            Self::AiIdentityGuidance => 80,
            Self::CharacterPersonality => 70,
            Self::CharacterVoice => 60,
            Self::Memories => 40,
            Self::Relationship => 30,
            Self::EmotionContext => 20,
        }
    }

    /// Identity, mode and final guidance define who speaks and how; a prompt without them is
    /// not this character, so the budget never removes them.
    pub fn is_required(&self) -> bool {
        matches!(
            self,
            Self::CharacterIdentity | Self::CharacterMode | Self::FinalResponseGuidance
        )
    }

    pub(super) fn rank(self) -> usize {
        Self::CANONICAL_ORDER
            .iter()
            .position(|k| *k == self)
            .unwrap_or(Self::CANONICAL_ORDER.len())
    }

    /// Per-turn context goes before the CDL's optional components when trimming, whatever
    /// priorities a caller set: the character's own definition matters more than extras.
    pub(super) fn drop_tier(self) -> u8 {
        match self {
            Self::Memories | Self::EmotionContext | Self::Relationship => 0,
            _ => 1,
        }
    }
}

/// One section of the system message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub kind: ComponentKind,
    /// Higher is kept longer under a token budget (see [`ComponentKind::default_priority`]).
    pub priority: u8,
    pub text: String,
}

impl Component {
    /// A component with its kind's default priority.
    pub fn new(kind: ComponentKind, text: impl Into<String>) -> Self {
        Self {
            kind,
            priority: kind.default_priority(),
            text: text.into(),
        }
    }
}

/// One line of short-term conversation history, oldest first in the slices passed around.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub role: Role,
    pub text: String,
    /// The turn the entry belongs to; a user message and its reply share it, which is how
    /// [`assemble`](fn@super::assemble) keeps the previous turn whole.
    pub turn_id: String,
}

/// A memory retrieved from vector memory for this turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemorySnippet {
    pub text: String,
    /// `user` or `assistant` (who said it).
    pub role: String,
    pub emotion: Option<String>,
    /// Relevance, higher first.
    pub score: f32,
}

/// An emotion label (the original's label set) with intensity 0..1.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmotionSummary {
    pub label: String,
    pub intensity: f32,
}

/// The user × character relationship; `trust`, `affection`, `attunement` are 0..1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RelationshipSummary {
    pub trust: f32,
    pub affection: f32,
    pub attunement: f32,
    pub interactions: i64,
}

/// Token estimate used for budgeting: one token per 4 characters (Unicode scalar values, not
/// bytes, so accents and emoji are not over-counted), rounded up. Close enough for English
/// with OpenAI-style tokenizers and needs no tokenizer per model; the budget should leave a
/// margin for the error.
pub fn estimate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}
