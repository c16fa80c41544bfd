//! The system message's layout: which sections exist, the order they appear in, the heading
//! each starts with, the line naming the user, and the token estimate used to budget it.

/// Which section of the system message a component is. The declaration order here is *not*
/// the prompt order; see [`ComponentKind::CANONICAL_ORDER`].
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
    /// Lorebook entries placed before the character block (`position: before_char`).
    WorldInfoBefore,
    /// Lorebook entries placed after the character block (`position: after_char`).
    WorldInfoAfter,
    /// A card's `mes_example`: example dialogue in the character's voice.
    ExampleDialogue,
}

impl ComponentKind {
    /// The order components appear in the system message, whatever order they were built in
    /// (they are built concurrently). Who the character is comes first; the situational
    /// guidance sits close to the end; final guidance is last because models weigh the end of
    /// the system prompt most.
    pub const CANONICAL_ORDER: [ComponentKind; 12] = [
        Self::WorldInfoBefore,
        Self::CharacterIdentity,
        Self::WorldInfoAfter,
        Self::CharacterMode,
        Self::CharacterPersonality,
        Self::CharacterVoice,
        Self::ExampleDialogue,
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
            Self::WorldInfoBefore => "world_info_before",
            Self::WorldInfoAfter => "world_info_after",
            Self::ExampleDialogue => "example_dialogue",
        }
    }

    /// The Markdown heading each component's text starts with. Readers of the prompt (the
    /// offline responder) recognise sections by it, so it is part of the contract.
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
            Self::WorldInfoBefore => "# World Info",
            Self::WorldInfoAfter => "# Lore",
            Self::ExampleDialogue => "# Example Dialogue",
        }
    }
}

/// The line the composer adds to the system message so the model (and the offline
/// responder) knows who it talks to: `You are talking with {name}.`
pub const TALKING_WITH: &str = "You are talking with ";

/// Token estimate used for budgeting: one token per 4 characters (Unicode scalar values, not
/// bytes, so accents and emoji are not over-counted), rounded up. Close enough for English
/// with OpenAI-style tokenizers and needs no tokenizer per model; the budget should leave a
/// margin for the error.
pub fn estimate_tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_one_place_and_its_own_heading() {
        let order = ComponentKind::CANONICAL_ORDER;
        for (i, k) in order.iter().enumerate() {
            assert!(!order[i + 1..].contains(k), "{k:?} twice in the order");
            assert!(k.heading().starts_with("# "), "{k:?}");
            assert!(
                order[i + 1..].iter().all(|o| o.heading() != k.heading()),
                "{k:?} shares its heading"
            );
        }
        assert_eq!(order.last(), Some(&ComponentKind::FinalResponseGuidance));
        assert_eq!(estimate_tokens("héllo"), 2, "characters, not bytes");
    }
}
