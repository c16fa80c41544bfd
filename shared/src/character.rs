//! The character (CDL) model: one type for the import file format, the PostgreSQL/SQLite
//! store, the cross-request cache and the prompt components, so a character never has to be
//! translated between layers.
//!
//! Field names follow the original platform's CDL tables (`characters`, `personality_traits`,
//! `communication_styles`, `character_values`, …) so its data maps over one to one.

use serde::{Deserialize, Serialize};

use crate::cards::{Card, Lorebook};

/// A character as stored, cached and composed into prompts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Character {
    pub name: String,
    /// Lookup key: lower-cased, whitespace folded to `_` (see [`normalize_name`]).
    pub normalized_name: String,
    pub occupation: String,
    pub description: String,
    pub archetype: Archetype,
    /// Fantasy/narrative characters may stay fully in role even when asked whether they are an AI.
    pub allow_full_roleplay: bool,
    /// `none | low | moderate | high`.
    pub emoji_frequency: String,
    /// Free text, e.g. `warm_nature` or `none`.
    pub emoji_style: String,
    /// Bumped by the store on every change; caches compare it to detect staleness.
    pub version: i64,
    pub personality: BigFive,
    pub communication: CommunicationStyle,
    pub values: Vec<CharacterValue>,
    pub voice_traits: Vec<VoiceTrait>,
    pub speech_patterns: Vec<SpeechPattern>,
    pub interests: Vec<Interest>,
    pub background: Vec<BackgroundEntry>,
    pub response_guidelines: Vec<ResponseGuideline>,
    pub ai_scenarios: Vec<AiScenario>,
    pub llm: LlmSettings,
    /// The community card this character was imported from, kept whole (`None`: the
    /// project's own format). Prompts read its fields; exports give it back unchanged.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card: Option<Card>,
    /// Lorebooks attached with `characters import --lorebook` (a card's own book is in
    /// `card`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lorebooks: Vec<Lorebook>,
}

impl Default for Character {
    fn default() -> Self {
        Self {
            name: String::new(),
            normalized_name: String::new(),
            occupation: String::new(),
            description: String::new(),
            archetype: Archetype::RealWorld,
            allow_full_roleplay: false,
            emoji_frequency: "moderate".into(),
            emoji_style: "none".into(),
            version: 0,
            personality: BigFive::default(),
            communication: CommunicationStyle::default(),
            values: Vec::new(),
            voice_traits: Vec::new(),
            speech_patterns: Vec::new(),
            interests: Vec::new(),
            background: Vec::new(),
            response_guidelines: Vec::new(),
            ai_scenarios: Vec::new(),
            llm: LlmSettings::default(),
            card: None,
            lorebooks: Vec::new(),
        }
    }
}

/// How a character answers "are you an AI?": the original platform's three archetypes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Archetype {
    /// A realistic human persona: honest about being an AI when asked directly.
    RealWorld,
    /// A mythical/fictional being: may stay in role when `allow_full_roleplay`.
    Fantasy,
    /// A character whose story is being an AI: its AI nature is part of the narrative.
    NarrativeAi,
}

impl Archetype {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RealWorld => "real_world",
            Self::Fantasy => "fantasy",
            Self::NarrativeAi => "narrative_ai",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "real_world" => Some(Self::RealWorld),
            "fantasy" => Some(Self::Fantasy),
            "narrative_ai" => Some(Self::NarrativeAi),
            _ => None,
        }
    }
}

/// Big Five traits, each 0..1 (the original's `personality_traits`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BigFive {
    pub openness: f32,
    pub conscientiousness: f32,
    pub extraversion: f32,
    pub agreeableness: f32,
    pub neuroticism: f32,
}

impl BigFive {
    /// The five traits by their canonical names (as stored in `personality_traits`).
    pub fn traits(&self) -> [(&'static str, f32); 5] {
        [
            ("openness", self.openness),
            ("conscientiousness", self.conscientiousness),
            ("extraversion", self.extraversion),
            ("agreeableness", self.agreeableness),
            ("neuroticism", self.neuroticism),
        ]
    }
}

impl Default for BigFive {
    fn default() -> Self {
        Self {
            openness: 0.5,
            conscientiousness: 0.5,
            extraversion: 0.5,
            agreeableness: 0.5,
            neuroticism: 0.5,
        }
    }
}

/// The original's `communication_styles` row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CommunicationStyle {
    /// e.g. `high`, `moderate`.
    pub engagement_level: String,
    /// e.g. `casual`, `professional`.
    pub formality: String,
    /// e.g. `expressive`, `reserved`.
    pub emotional_expression: String,
    /// e.g. `short`, `medium`, `long`.
    pub response_length: String,
    pub conversation_flow_guidance: String,
    pub ai_identity_handling: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CharacterValue {
    pub key: String,
    pub description: String,
    /// `low | medium | high | critical`.
    pub importance: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct VoiceTrait {
    /// e.g. `tone`, `pace`, `vocabulary`.
    pub trait_type: String,
    pub trait_value: String,
    pub situational_context: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpeechPattern {
    /// e.g. `signature_expression`, `preferred_word`, `avoided_word`.
    pub pattern_type: String,
    pub pattern_value: String,
    /// e.g. `often`, `sometimes`, `rarely`.
    pub usage_frequency: String,
    pub context: String,
    /// Higher first.
    pub priority: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Interest {
    pub category: String,
    pub interest_text: String,
    /// 1..10.
    pub proficiency_level: i32,
    pub importance: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BackgroundEntry {
    /// e.g. `education`, `career`, `personal`.
    pub category: String,
    pub period: String,
    pub title: String,
    pub description: String,
    /// 1..10.
    pub importance_level: i32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResponseGuideline {
    /// e.g. `response_length`, `core_principle`, `formatting`.
    pub guideline_type: String,
    pub guideline_name: String,
    pub guideline_content: String,
    /// Higher first.
    pub priority: i32,
    pub is_critical: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AiScenario {
    /// e.g. `ai_identity_question`, `roleplay_invitation`, `romantic_interest`, `advice`.
    pub scenario_type: String,
    /// Lower-case phrases whose presence in the user's message triggers this scenario.
    pub trigger_phrases: Vec<String>,
    pub response_guidance: String,
}

/// Per-character LLM overrides (the fleet-wide defaults apply where `None`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LlmSettings {
    pub model: Option<String>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
}

/// One line of `characters list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CharacterSummary {
    pub name: String,
    pub normalized_name: String,
    pub occupation: String,
    pub archetype: Archetype,
    pub version: i64,
}

/// The lookup key for a character name: trimmed, lower-cased, inner whitespace and `-` as `_`.
pub fn normalize_name(name: &str) -> String {
    name.split(|c: char| c.is_whitespace() || c == '-')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join("_")
        .to_lowercase()
}

/// Why a character file could not be imported: which format it was read as and what is
/// wrong with it, so the operator can fix the file.
#[derive(Debug, thiserror::Error)]
pub enum CharacterFileError {
    #[error("not a valid character (JSON): {0}")]
    Json(#[source] serde_json::Error),
    #[error("not a valid character (YAML): {0}")]
    Yaml(#[source] serde_norway::Error),
    #[error("{0}")]
    Invalid(String),
}

impl Character {
    /// Reads a character file's text (the import format: JSON when it looks like JSON, YAML
    /// otherwise) and validates it. Any text gives a character or an error saying what is
    /// wrong; nothing in a file can make the import panic.
    pub fn from_file_text(text: &str) -> Result<Self, CharacterFileError> {
        let mut c: Character = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(CharacterFileError::Json)?
        } else {
            serde_norway::from_str(text).map_err(CharacterFileError::Yaml)?
        };
        c.validate().map_err(CharacterFileError::Invalid)?;
        Ok(c)
    }

    /// Fills derived fields and checks what the store and the prompt rely on.
    pub fn validate(&mut self) -> Result<(), String> {
        if self.name.trim().is_empty() {
            return Err("character has no name".into());
        }
        self.name = self.name.trim().to_string();
        self.normalized_name = normalize_name(&self.name);
        for (trait_name, v) in self.personality.traits() {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!(
                    "{}: personality.{trait_name} is {v}, must be between 0 and 1",
                    self.name
                ));
            }
        }
        Ok(())
    }

    /// A character made from a community card: the name and description the model's own
    /// fields hold (lists, the identity section), the card kept whole for everything else.
    /// Card characters are fictional personas: the fantasy archetype, honest when asked
    /// directly whether they are an AI.
    pub fn from_card(card: Card) -> Result<Self, String> {
        let mut c = Character {
            name: card.data.name.clone(),
            description: card.data.description.clone(),
            archetype: Archetype::Fantasy,
            card: Some(card),
            ..Default::default()
        };
        c.validate()?;
        Ok(c)
    }

    /// A copy without the card and the lorebooks (the heavy, rarely needed parts: a prompt
    /// builder takes from the card only what it uses). Every field named, so a new field
    /// cannot be forgotten here.
    pub fn clone_without_card(&self) -> Self {
        Self {
            name: self.name.clone(),
            normalized_name: self.normalized_name.clone(),
            occupation: self.occupation.clone(),
            description: self.description.clone(),
            archetype: self.archetype,
            allow_full_roleplay: self.allow_full_roleplay,
            emoji_frequency: self.emoji_frequency.clone(),
            emoji_style: self.emoji_style.clone(),
            version: self.version,
            personality: self.personality,
            communication: self.communication.clone(),
            values: self.values.clone(),
            voice_traits: self.voice_traits.clone(),
            speech_patterns: self.speech_patterns.clone(),
            interests: self.interests.clone(),
            background: self.background.clone(),
            response_guidelines: self.response_guidelines.clone(),
            ai_scenarios: self.ai_scenarios.clone(),
            llm: self.llm.clone(),
            card: None,
            lorebooks: Vec::new(),
        }
    }

    /// Lorebook entries this character has: its card's own and the attached ones.
    pub fn lore_entry_count(&self) -> usize {
        self.card.as_ref().map_or(0, Card::lore_entries)
            + self
                .lorebooks
                .iter()
                .map(|b| b.entries.len())
                .sum::<usize>()
    }

    pub fn summary(&self) -> CharacterSummary {
        CharacterSummary {
            name: self.name.clone(),
            normalized_name: self.normalized_name.clone(),
            occupation: self.occupation.clone(),
            archetype: self.archetype,
            version: self.version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_names() {
        assert_eq!(normalize_name("  Elena  Rodriguez "), "elena_rodriguez");
        assert_eq!(normalize_name("Dr-Marcus"), "dr_marcus");
    }

    #[test]
    fn rejects_out_of_range_traits() {
        let mut c = Character {
            name: "X".into(),
            ..Default::default()
        };
        c.personality.openness = 1.5;
        assert!(c.validate().unwrap_err().contains("openness"));
    }
}

/// The user × character relationship, each value 0..1.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Relationship {
    pub trust: f32,
    pub affection: f32,
    pub attunement: f32,
    pub interactions: i64,
}

impl Default for Relationship {
    /// Where every relationship starts (the table's defaults).
    fn default() -> Self {
        Self {
            trust: 0.3,
            affection: 0.3,
            attunement: 0.3,
            interactions: 0,
        }
    }
}

/// How one turn moves a relationship (added, then clamped to 0..1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct RelationshipDelta {
    pub trust: f32,
    pub affection: f32,
    pub attunement: f32,
}

impl Relationship {
    /// What `CharacterStore::apply_relationship` does, for checking it.
    pub fn apply(self, d: RelationshipDelta) -> Self {
        Self {
            trust: (self.trust + d.trust).clamp(0.0, 1.0),
            affection: (self.affection + d.affection).clamp(0.0, 1.0),
            attunement: (self.attunement + d.attunement).clamp(0.0, 1.0),
            interactions: self.interactions + 1,
        }
    }
}
