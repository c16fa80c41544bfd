use super::*;
use whisperfleet_shared::cards::{Card, Container};
use whisperfleet_shared::ports::llm::Role;

fn lyra() -> Character {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/cards/v2.json");
    let card = Card::from_json(&std::fs::read_to_string(path).unwrap(), Container::Json).unwrap();
    Character::from_card(card).unwrap()
}

fn said(texts: &[&str]) -> Vec<HistoryEntry> {
    texts
        .iter()
        .enumerate()
        .map(|(i, t)| HistoryEntry {
            role: if i % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            },
            text: t.to_string(),
            turn_id: format!("t{}", i / 2),
        })
        .collect()
}

fn tags(hits: &[LoreHit]) -> Vec<String> {
    hits.iter()
        .map(|h| h.content.split(':').next().unwrap().to_string())
        .collect()
}

#[test]
fn keys_constant_disabled_regex_selective_and_case() {
    let c = lyra();
    let got = |text: &str| tags(&lore_hits(&c, &[], text));
    assert_eq!(got("hello there"), ["LORE-CONSTANT"], "constant only");
    assert!(got("Tell me of the SILVER HARBOR").contains(&"LORE-HARBOR".to_string()));
    assert!(!got("the moon is up").iter().any(|t| t == "LORE-DISABLED"));
    assert!(got("Any DRAGONS here?").contains(&"LORE-DRAGON".to_string()));
    assert!(!got("a dragonfly").contains(&"LORE-DRAGON".to_string()));
    assert!(!got("the tower").contains(&"LORE-TOWER-NIGHT".to_string()));
    assert!(got("the tower at night").contains(&"LORE-TOWER-NIGHT".to_string()));
    assert!(!got("the archivist").contains(&"LORE-CASE".to_string()));
    assert!(got("the Archivist").contains(&"LORE-CASE".to_string()));
}

#[test]
fn scan_depth_limits_how_far_back_keys_count() {
    let c = lyra();
    // scan_depth 4: the new message and the last three of history.
    let h = said(&["silver harbor?", "a", "b", "c"]);
    assert!(!tags(&lore_hits(&c, &h, "d")).contains(&"LORE-HARBOR".to_string()));
    let h = said(&["x", "silver harbor?", "b", "c"]);
    assert!(tags(&lore_hits(&c, &h, "d")).contains(&"LORE-HARBOR".to_string()));
}

#[test]
fn budget_keeps_the_highest_priority_and_orders_by_insertion() {
    let c = lyra();
    let hits = lore_hits(&c, &[], "the silver harbor and the library");
    let t = tags(&hits);
    // Budget 60 tokens: constant (12) + harbor (18) + the recursively found lighthouse (12)
    // fit; the library (≈70) does not.
    assert!(!t.contains(&"LORE-LIBRARY".to_string()), "{t:?}");
    assert_eq!(t, ["LORE-HARBOR", "LORE-CONSTANT", "LORE-LIGHTHOUSE"]);
    let used: usize = hits.iter().map(|h| estimate_tokens(&h.content)).sum();
    assert!(used <= 60, "{used}");
    // Over the budget even alone; without a budget it is in.
    assert!(!tags(&lore_hits(&c, &[], "the library")).contains(&"LORE-LIBRARY".to_string()));
    let mut unbounded = c.clone();
    let book = unbounded
        .card
        .as_mut()
        .unwrap()
        .data
        .character_book
        .as_mut()
        .unwrap();
    book.token_budget = None;
    assert!(tags(&lore_hits(&unbounded, &[], "the library")).contains(&"LORE-LIBRARY".to_string()));
}

#[test]
fn recursion_positions_and_decorators() {
    let mut c = lyra();
    // The harbor entry mentions the lighthouse: recursive scanning activates it, after the
    // character block.
    let hits = lore_hits(&c, &[], "silver harbor");
    let after = lorebook(&c, "Sam", &hits, LorePosition::AfterChar).unwrap();
    assert_eq!(after.kind, ComponentKind::WorldInfoAfter);
    assert!(after.text.contains("LORE-LIGHTHOUSE"));
    let before = lorebook(&c, "Sam", &hits, LorePosition::BeforeChar).unwrap();
    assert!(before.text.starts_with("# World Info\n"));
    assert!(!before.text.contains("LORE-LIGHTHOUSE"));
    // Without recursion it stays out.
    let book = c
        .card
        .as_mut()
        .unwrap()
        .data
        .character_book
        .as_mut()
        .unwrap();
    book.recursive_scanning = Some(false);
    book.entries[0].content =
        "@@depth 4\n@@@instruct_depth 4\nLORE-HARBOR: see the lighthouse".into();
    let hits = lore_hits(&c, &[], "silver harbor");
    assert!(lorebook(&c, "Sam", &hits, LorePosition::AfterChar).is_none());
    assert!(
        hits.iter()
            .any(|h| h.content == "LORE-HARBOR: see the lighthouse")
    );
    // An invalid regex never matches, and never panics.
    let book = c
        .card
        .as_mut()
        .unwrap()
        .data
        .character_book
        .as_mut()
        .unwrap();
    book.entries[1].keys = vec!["(unclosed".into()];
    assert!(!tags(&lore_hits(&c, &[], "(unclosed")).contains(&"LORE-DRAGON".to_string()));
}

#[test]
fn attached_lorebooks_count_for_any_character() {
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/cards/world_info.json"),
    )
    .unwrap();
    let mut c = crate::prompt::test_support::sample(
        whisperfleet_shared::character::Archetype::RealWorld,
        false,
    );
    c.lorebooks
        .push(whisperfleet_shared::cards::Lorebook::from_json(&text).unwrap());
    assert!(lore_hits(&c, &[], "what sleeps under the pier?").is_empty());
    let hits = lore_hits(&c, &[], "Is the KRAKEN real?");
    assert_eq!(tags(&hits), ["LORE-WI-KRAKEN"]);
    let section = lorebook(&c, "", &hits, LorePosition::BeforeChar).unwrap();
    assert!(section.text.contains("The kraken sleeps under the pier."));
}
