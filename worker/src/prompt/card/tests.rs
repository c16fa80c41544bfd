use whisperfleet_shared::cards::{Card, Container};
use whisperfleet_shared::ports::llm::Role;

use crate::compose::{ComposeContext, compose, opening_greeting};
use crate::prompt::HistoryEntry;

use super::*;

fn lyra() -> Character {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/cards/v2.json");
    let card = Card::from_json(&std::fs::read_to_string(path).unwrap(), Container::Json).unwrap();
    Character::from_card(card).unwrap()
}

fn ctx(user: &str, text: &str, history: Vec<HistoryEntry>) -> ComposeContext {
    ComposeContext {
        user_name: user.into(),
        user_text: text.into(),
        history,
        budget_tokens: 100_000,
        conversation_key: "http:ns:u1:c1:lyra_vale".into(),
        ..Default::default()
    }
}

#[test]
fn card_prompt_has_framing_examples_post_history_and_no_creator_notes() {
    let c = lyra();
    let out = compose(&c, &ctx("Sam", "hello", Vec::new()));
    let system = &out.messages[0].content;
    assert_eq!(out.messages[0].role, Role::System);
    // Macros resolved everywhere, in any case.
    assert!(
        system.contains("Lyra Vale keeps the harbor archive and talks to Sam"),
        "{system}"
    );
    assert!(!system.to_lowercase().contains("{{user}}") && !system.contains("<USER>"));
    // The card's system prompt replaces the framing; {{original}} inserts the default.
    let mode = system
        .split("# Character Mode\n")
        .nth(1)
        .expect("the mode section");
    assert!(
        mode.starts_with("CARD-SYSTEM: You play Lyra Vale for Sam."),
        "{mode}"
    );
    assert!(
        mode.contains("Emoji"),
        "the default framing follows: {mode}"
    );
    assert!(system.contains("EXAMPLE-DIALOGUE"));
    assert!(system.contains("Personality: curious, precise"));
    assert!(system.contains("Scenario: The archive of a foggy port town."));
    assert!(
        !system.contains("CREATOR-NOTES"),
        "creator notes never in a prompt"
    );
    assert!(
        out.messages
            .iter()
            .all(|m| !m.content.contains("CREATOR-NOTES"))
    );
    // Post-history instructions come after the history and the user's message.
    let last = out.messages.last().unwrap();
    assert_eq!(last.role, Role::System);
    assert_eq!(last.content, "POST-HISTORY: stay in the archive, Sam.");
    assert_eq!(out.messages[out.messages.len() - 2].content, "hello");
    // The constant lore entry is in; the count says so.
    assert!(system.contains("LORE-CONSTANT"));
    assert_eq!(out.lore_entries_used, 1);
    assert!(
        !system.contains("# Personality\n"),
        "no Big Five defaults for a card"
    );
}

#[test]
fn a_new_conversation_opens_with_one_greeting_kept() {
    let c = lyra();
    let first = ctx("Sam", "hi", Vec::new());
    let greeting = opening_greeting(&c, &first).expect("a greeting");
    assert_eq!(greeting.role, Role::Assistant);
    let out = compose(&c, &first);
    assert_eq!(out.messages[1].role, Role::Assistant);
    assert_eq!(out.messages[1].content, greeting.text);
    // Same conversation, same greeting; the options are first_mes and the alternates.
    assert_eq!(opening_greeting(&c, &first).unwrap(), greeting);
    let picked: std::collections::BTreeSet<String> = (0..40)
        .map(|i| {
            let mut x = ctx("Sam", "hi", Vec::new());
            x.conversation_key = format!("conv-{i}");
            opening_greeting(&c, &x).unwrap().text
        })
        .map(|t| t.split(':').next().unwrap().to_string())
        .collect();
    assert_eq!(
        picked.into_iter().collect::<Vec<_>>(),
        ["ALT-GREETING-1", "ALT-GREETING-2", "FIRST-GREETING"]
    );
    // A conversation with history gets no new greeting.
    let later = ctx(
        "Sam",
        "again",
        vec![HistoryEntry {
            role: Role::Assistant,
            text: greeting.text.clone(),
            turn_id: "t0".into(),
        }],
    );
    assert!(opening_greeting(&c, &later).is_none());
}

#[test]
fn own_format_characters_are_unchanged() {
    let c = crate::prompt::test_support::sample(
        whisperfleet_shared::character::Archetype::RealWorld,
        false,
    );
    assert!(matches!(for_prompt(&c, "Sam"), Cow::Borrowed(_)));
    let out = compose(&c, &ctx("Sam", "hi", Vec::new()));
    assert_eq!(out.messages.len(), 2, "no greeting, no post-history");
    assert_eq!(out.lore_entries_used, 0);
}
