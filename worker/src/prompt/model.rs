//! The prompt's data model: what a [`Component`] is and the budget rules for each
//! [`ComponentKind`] (the kinds, their order and headings are shared with readers of prompts,
//! see [`whisperfleet_shared::prompt`]), and the per-turn inputs the context builders take
//! (history, memories, emotions, relationship).

use serde::{Deserialize, Serialize};
use whisperfleet_shared::ports::llm::Role;
pub use whisperfleet_shared::prompt::ComponentKind;

/// The composer's trimming rules for each section kind. The kinds themselves, their order and
/// headings are the layout contract shared with readers of prompts
/// ([`whisperfleet_shared::prompt`]); what to drop first under a budget is the composer's own.
pub trait BudgetRules {
    /// Higher is more important. Used by [`assemble`](fn@super::assemble) to decide what to
    /// drop first when the prompt is over budget; builders set it, callers may override it.
    fn default_priority(&self) -> u8;

    /// Identity, mode and final guidance define who speaks and how; a prompt without them is
    /// not this character, so the budget never removes them.
    fn is_required(&self) -> bool;
}

impl BudgetRules for ComponentKind {
    fn default_priority(&self) -> u8 {
        match self {
            Self::CharacterIdentity => 100,
            Self::CharacterMode => 95,
            Self::FinalResponseGuidance => 90,
            // Situational safety guidance outranks style: it is the last optional part to go.
            Self::AiIdentityGuidance => 80,
            Self::CharacterPersonality => 70,
            Self::CharacterVoice => 60,
            Self::WorldInfoBefore | Self::WorldInfoAfter => 65,
            Self::ExampleDialogue => 50,
            Self::Memories => 40,
            Self::Relationship => 30,
            Self::EmotionContext => 20,
        }
    }

    fn is_required(&self) -> bool {
        matches!(
            self,
            Self::CharacterIdentity | Self::CharacterMode | Self::FinalResponseGuidance
        )
    }
}

/// Position in [`ComponentKind::CANONICAL_ORDER`].
pub(super) fn rank(kind: ComponentKind) -> usize {
    ComponentKind::CANONICAL_ORDER
        .iter()
        .position(|k| *k == kind)
        .unwrap_or(ComponentKind::CANONICAL_ORDER.len())
}

/// Per-turn context goes before the CDL's optional components when trimming, whatever
/// priorities a caller set: the character's own definition matters more than extras.
pub(super) fn drop_tier(kind: ComponentKind) -> u8 {
    match kind {
        ComponentKind::Memories | ComponentKind::EmotionContext | ComponentKind::Relationship => 0,
        _ => 1,
    }
}

/// One section of the system message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub kind: ComponentKind,
    /// Higher is kept longer under a token budget (see [`BudgetRules::default_priority`]).
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
