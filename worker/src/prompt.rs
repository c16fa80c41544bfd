//! The prompt's building blocks and how they become the chat messages sent to the LLM.
//!
//! The six CDL components of the original platform, each built from the character alone (plus
//! the user's message or name where noted):
//! - **Character Identity** ([`character_identity`]): name, occupation, description, top
//!   background entries and values;
//! - **Character Mode** ([`character_mode`]): how the archetype treats the character's AI
//!   nature, and emoji usage;
//! - **AI Identity Guidance** ([`ai_identity_guidance`]): situational guidance when the message
//!   asks about the AI nature, a meeting, romance or professional advice
//!   ([`detect_sensitive_topics`]) or hits one of the character's own scenario triggers;
//! - **Character Personality** ([`character_personality`]): the Big Five profile in words and
//!   the communication style;
//! - **Character Voice** ([`character_voice`]): voice traits, speech patterns, favourite topics;
//! - **Final Response Guidance** ([`final_response_guidance`]): response guidelines, length and
//!   the standing rules every reply obeys;
//!
//! plus, for characters imported from community cards ([`card`](mod@card)): the card's
//! framing (`system_prompt`), [`example_dialogue`] and the [`lorebook`](fn@lorebook) entries
//! the conversation activates, with the card macros resolved ([`for_prompt`]);
//!
//! plus the per-turn context components built from what the `context` stage fetched:
//! [`memories`](fn@memories), [`emotion_context`] and [`relationship`](fn@relationship).
//!
//! [`assemble`](fn@assemble) puts the components into one system message in
//! [`ComponentKind::CANONICAL_ORDER`] (final guidance last, with a "You are talking with …"
//! line before it), appends the history and the user's message, and trims optional components
//! and then old history to the token budget. User text (the name, the message, history,
//! memories) passes [`whisperfleet_shared::prompt::hygiene`] on its way in, so it stays user
//! content: it cannot forge a heading, the "talking with" line or a chat-template role.
//!
//! Everything here is pure — no I/O, no async, no clock — so the `compose` stage can build the
//! components concurrently from data the `context` stage already fetched, and so the same
//! inputs always give the same prompt (which makes prompts testable and cacheable).
//!
//! A builder that has nothing to say returns `None` (or an empty section is skipped) rather
//! than emitting a hollow heading: every token in the prompt costs latency.
//!
//! One file per component; `model` holds the shared types and budget rules, `text` the helpers
//! several builders share. The layout readers of prompts rely on — section kinds and headings,
//! the "You are talking with …" line, the token estimate and the sensitive-topic classifier —
//! is [`whisperfleet_shared::prompt`], re-exported here.

mod ai_identity;
mod assemble;
mod card;
mod emotion;
mod final_guidance;
mod identity;
mod lorebook;
mod macros;
mod memories;
mod mode;
mod model;
mod personality;
mod relationship;
#[cfg(test)]
mod test_support;
mod text;
mod voice;

pub use ai_identity::ai_identity_guidance;
pub use assemble::assemble;
pub use card::{example_dialogue, for_prompt, greeting, post_history, resolve_text};
pub use emotion::emotion_context;
pub use final_guidance::final_response_guidance;
pub use identity::character_identity;
pub use lorebook::{DEFAULT_SCAN_DEPTH, LoreHit, lore_hits, lore_kind, lorebook};
pub use macros::resolve as resolve_macros;
pub use memories::memories;
pub use mode::character_mode;
pub use model::{
    BudgetRules, Component, EmotionSummary, HistoryEntry, MemorySnippet, RelationshipSummary,
};
pub use personality::{character_personality, trait_level};
pub use relationship::relationship;
pub use voice::character_voice;
pub use whisperfleet_shared::prompt::{
    ComponentKind, SensitiveTopic, TALKING_WITH, detect_sensitive_topics, estimate_tokens,
};

#[cfg(test)]
mod tests {
    use super::*;
    use whisperfleet_shared::character::Character;

    #[test]
    fn sample_characters_load_and_compose() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../characters");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .expect("characters/ exists")
            .map(|e| e.unwrap().path())
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml")))
            .collect();
        files.sort();
        assert!(files.len() >= 2, "sample characters in {}", dir.display());
        for path in files {
            let raw = std::fs::read_to_string(&path).unwrap();
            let mut c: Character =
                serde_norway::from_str(&raw).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            c.validate()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            // Character ignores unknown fields, so a misspelt key would vanish silently:
            // every key in the file must exist in the model.
            let file_value: serde_json::Value = serde_norway::from_str(&raw).unwrap();
            let model_value = serde_json::to_value(&c).unwrap();
            assert_keys_known(&file_value, &model_value, &path.display().to_string());

            let traits = file_value["personality"].as_object().map_or(0, |o| o.len());
            assert_eq!(traits, 5, "{}: all five traits set", path.display());
            assert!(c.values.len() >= 3, "{}", path.display());
            assert!(!c.voice_traits.is_empty(), "{}", path.display());
            assert!(c.speech_patterns.len() >= 4, "{}", path.display());
            assert!(c.interests.len() >= 3, "{}", path.display());
            assert!(c.background.len() >= 3, "{}", path.display());
            assert!(c.response_guidelines.len() >= 3, "{}", path.display());
            assert!(c.ai_scenarios.len() >= 2, "{}", path.display());
            assert!(c.llm.temperature.is_some(), "{}", path.display());

            let comps = vec![
                character_identity(&c),
                character_mode(&c),
                ai_identity_guidance(&c, "Are you an AI?").expect("fires"),
                character_personality(&c),
                character_voice(&c),
                final_response_guidance(&c, "Sam"),
            ];
            for comp in &comps {
                assert!(comp.text.lines().count() > 1, "{}", comp.text);
            }
            let msgs = assemble(comps, &[], "Sam", "Are you an AI?", 8_000);
            assert!(msgs[0].content.contains(&c.name));
        }
    }

    fn assert_keys_known(file: &serde_json::Value, model: &serde_json::Value, at: &str) {
        use serde_json::Value;
        match (file, model) {
            (Value::Object(f), Value::Object(m)) => {
                for (k, v) in f {
                    let inner = m
                        .get(k)
                        .unwrap_or_else(|| panic!("{at}: unknown field `{k}`"));
                    assert_keys_known(v, inner, &format!("{at}.{k}"));
                }
            }
            (Value::Array(f), Value::Array(m)) => {
                for (i, (fv, mv)) in f.iter().zip(m).enumerate() {
                    assert_keys_known(fv, mv, &format!("{at}[{i}]"));
                }
            }
            _ => {}
        }
    }
}
