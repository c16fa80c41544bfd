//! The behaviour every [`CharacterStore`] must share, as one async check that panics on the
//! first difference. The tests run it against [`whisperfleet_adapters::characters::postgres::PgCharacterStore`] and
//! [`whisperfleet_adapters::characters::sqlite::SqliteCharacterStore`], so the embedded store cannot drift from the
//! fleet's.
//!
//! Names and users carry a fresh id per run, so the suite can share a database with other
//! data (it only asserts about its own rows).

use whisperfleet_shared::cards::{Card, Container, Lorebook};
use whisperfleet_shared::character::{
    AiScenario, Archetype, BackgroundEntry, BigFive, Character, CharacterValue, CommunicationStyle,
    Interest, LlmSettings, Relationship, RelationshipDelta, ResponseGuideline, SpeechPattern,
    VoiceTrait, normalize_name,
};
use whisperfleet_shared::identity::Identity;
use whisperfleet_shared::ports::characters::CharacterStore;

/// A character with every field set away from its default, so a column that is not stored
/// or not read back shows up as a difference.
pub fn full_character(name: &str) -> Character {
    Character {
        name: name.into(),
        normalized_name: String::new(),
        occupation: "archivist of lost letters".into(),
        description: "Keeps what others forget. Quotes \"exactly\", with unicode: café, 字, 🦉."
            .into(),
        archetype: Archetype::Fantasy,
        allow_full_roleplay: true,
        emoji_frequency: "low".into(),
        emoji_style: "warm_nature".into(),
        // Ignored on write: the store owns versions.
        version: 999,
        personality: BigFive {
            openness: 0.9,
            conscientiousness: 0.75,
            extraversion: 0.2,
            agreeableness: 0.65,
            neuroticism: 0.1,
        },
        communication: CommunicationStyle {
            engagement_level: "high".into(),
            formality: "formal".into(),
            emotional_expression: "reserved".into(),
            response_length: "medium".into(),
            conversation_flow_guidance: "let silences breathe".into(),
            ai_identity_handling: "stay in the archive".into(),
        },
        values: vec![
            CharacterValue {
                key: "memory".into(),
                description: "nothing is truly lost".into(),
                importance: "critical".into(),
            },
            CharacterValue {
                key: "patience".into(),
                description: "ink dries slowly".into(),
                importance: "high".into(),
            },
        ],
        voice_traits: vec![VoiceTrait {
            trait_type: "tone".into(),
            trait_value: "hushed".into(),
            situational_context: "always".into(),
        }],
        speech_patterns: vec![
            SpeechPattern {
                pattern_type: "signature_expression".into(),
                pattern_value: "as the margins say".into(),
                usage_frequency: "often".into(),
                context: "openings".into(),
                priority: 3,
            },
            SpeechPattern {
                pattern_type: "avoided_word".into(),
                pattern_value: "delete".into(),
                usage_frequency: "rarely".into(),
                context: String::new(),
                priority: -1,
            },
        ],
        interests: vec![Interest {
            category: "craft".into(),
            interest_text: "bookbinding".into(),
            proficiency_level: 9,
            importance: "high".into(),
        }],
        background: vec![BackgroundEntry {
            category: "career".into(),
            period: "before the fire".into(),
            title: "Keeper".into(),
            description: "tended the east wing".into(),
            importance_level: 8,
        }],
        response_guidelines: vec![ResponseGuideline {
            guideline_type: "core_principle".into(),
            guideline_name: "quiet".into(),
            guideline_content: "answer in a low voice".into(),
            priority: 10,
            is_critical: true,
        }],
        ai_scenarios: vec![AiScenario {
            scenario_type: "ai_identity_question".into(),
            trigger_phrases: vec!["are you real".into(), "are you an ai".into()],
            response_guidance: "speak of the archive".into(),
        }],
        llm: LlmSettings {
            model: Some("archive-model".into()),
            temperature: Some(0.35),
            max_tokens: Some(321),
        },
        // The project's own format: no card (card characters have their own check).
        card: None,
        lorebooks: Vec::new(),
    }
}

fn close(a: f32, b: f32) -> bool {
    (a - b).abs() < 1e-5
}

/// Relationship values equal up to float rounding (PostgreSQL computes the first turn's
/// `0.3 + delta` in double precision before storing a REAL).
fn assert_relationship(got: Relationship, want: Relationship, what: &str) {
    assert!(
        close(got.trust, want.trust)
            && close(got.affection, want.affection)
            && close(got.attunement, want.attunement)
            && got.interactions == want.interactions,
        "{what}: got {got:?}, want {want:?}"
    );
}

/// Asserts the whole contract against `store`. Panics (with what differed) on failure.
pub async fn contract(store: &dyn CharacterStore) {
    let run = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
    let name = format!("Contract {run} Archivist");
    let key = normalize_name(&name);
    characters(store, &name, &key).await;
    let other = format!("Contract {run} Bare");
    let other_key = normalize_name(&other);
    bare_character(store, &other, &other_key).await;
    widest_values(store, &format!("Contract {run} Widest")).await;
    card_character(store, &format!("Contract {run} Card")).await;
    relationships(store, &run, &key, &other_key).await;
}

async fn characters(store: &dyn CharacterStore, name: &str, key: &str) {
    assert_eq!(
        store.load(&format!("{key}_unknown")).await.unwrap(),
        None,
        "an unknown character"
    );

    let written = full_character(name);
    let v1 = store.upsert(&written).await.unwrap();
    let mut want = written.clone();
    want.normalized_name = key.to_string();
    want.version = v1;
    let loaded = store
        .load(key)
        .await
        .unwrap()
        .expect("the upserted character");
    assert_eq!(loaded, want, "round trip of every field");

    // Changed fields and shorter child lists: the children are replaced, not appended to.
    let mut changed = written.clone();
    changed.occupation = "restorer".into();
    changed.archetype = Archetype::NarrativeAi;
    changed.allow_full_roleplay = false;
    changed.personality.openness = 0.4;
    changed.values.truncate(1);
    changed.values[0].importance = "medium".into();
    changed.speech_patterns.reverse();
    changed.ai_scenarios.clear();
    changed.llm = LlmSettings {
        model: None,
        temperature: Some(1.25),
        max_tokens: None,
    };
    let v2 = store.upsert(&changed).await.unwrap();
    assert_eq!(v2, v1 + 1, "a re-upsert bumps the version by one");
    let mut want = changed.clone();
    want.normalized_name = key.to_string();
    want.version = v2;
    assert_eq!(
        store.load(key).await.unwrap().expect("still there"),
        want,
        "the re-upserted character"
    );

    let list = store.list().await.unwrap();
    let mine: Vec<_> = list.iter().filter(|s| s.normalized_name == key).collect();
    assert_eq!(mine.len(), 1, "listed once");
    assert_eq!(*mine[0], want.summary());
    assert!(
        list.windows(2).all(|w| w[0].name <= w[1].name),
        "listed by name: {list:?}"
    );
}

async fn bare_character(store: &dyn CharacterStore, name: &str, key: &str) {
    // Only a name: every default survives the round trip (empty lists, no LLM overrides).
    let bare = Character {
        name: format!("  {name} "),
        ..Default::default()
    };
    let v = store.upsert(&bare).await.unwrap();
    let want = Character {
        name: name.to_string(),
        normalized_name: key.to_string(),
        version: v,
        ..Default::default()
    };
    assert_eq!(
        store.load(key).await.unwrap(),
        Some(want),
        "a bare character"
    );
    let err = store.upsert(&Character::default()).await;
    assert!(err.is_err(), "a character without a name is refused");
}

/// The extremes of the model's numeric types round-trip unchanged on every store: a column
/// or a bind narrower than the field (an i32 for the u32 `max_tokens`) shows up here.
async fn widest_values(store: &dyn CharacterStore, name: &str) {
    let mut widest = full_character(name);
    widest.llm.max_tokens = Some(u32::MAX);
    widest.speech_patterns[0].priority = i32::MIN;
    widest.interests[0].proficiency_level = i32::MAX;
    let v = store.upsert(&widest).await.unwrap();
    let mut want = widest.clone();
    want.normalized_name = normalize_name(name);
    want.version = v;
    assert_eq!(
        store.load(&want.normalized_name).await.unwrap(),
        Some(want),
        "the widest values of each numeric field"
    );
}

/// A character imported from a community card keeps the card's JSON text exactly (key
/// order, number spelling, escapes: what a database JSON type would normalize) and its
/// attached lorebooks with their unknown fields.
async fn card_character(store: &dyn CharacterStore, name: &str) {
    let raw = format!(
        r#"{{"spec_version":"2.0","spec":"chara_card_v2","data":{{"name":"{name}","description":"d","zeta":1.0,"alpha":12345678901234567890,"extensions":{{"b":[null,true],"a":"caf\u00e9"}},"character_book":{{"entries":[{{"keys":["k"],"content":"c","extensions":{{}},"enabled":true,"insertion_order":1}}]}}}}}}"#
    );
    let card = Card::from_json(&raw, Container::Png).unwrap();
    let mut c = Character::from_card(card).unwrap();
    c.lorebooks.push(
        Lorebook::from_json(
            r#"{"entries":[{"keys":["x"],"content":"y","x_unknown":{"q":1}}],"x_book":"kept"}"#,
        )
        .unwrap(),
    );
    let v = store.upsert(&c).await.unwrap();
    let loaded = store
        .load(&c.normalized_name)
        .await
        .unwrap()
        .expect("the card character");
    let card = loaded.card.as_ref().expect("the card");
    assert_eq!(card.raw, raw, "the card's JSON text, byte for byte");
    assert_eq!(card.container, Container::Png);
    assert_eq!(loaded.lorebooks[0].rest["x_book"], "kept");
    assert_eq!(loaded.lorebooks[0].entries[0].rest["x_unknown"]["q"], 1);
    let mut want = c.clone();
    want.version = v;
    assert_eq!(loaded, want, "a card character round-trips whole");
    assert_eq!(loaded.lore_entry_count(), 2);
}

async fn relationships(store: &dyn CharacterStore, run: &str, key: &str, other_key: &str) {
    // A user is an identity: the same user id on another platform, or in another HTTP
    // namespace, is someone else.
    let user = Identity::new("discord", "", format!("user:*? [{run}]"));
    let bystander = Identity::new("discord", "", format!("bystander-{run}"));
    let same_id_http = Identity::new("http", "", user.user_id.clone());
    let same_id_ns = Identity::new("http", "key:1", user.user_id.clone());
    assert_eq!(
        store.relationship(&user, key).await.unwrap(),
        None,
        "no relationship before the first turn"
    );

    let d1 = RelationshipDelta {
        trust: 0.05,
        affection: 0.1,
        attunement: -0.02,
    };
    let t1 = uuid::Uuid::new_v4();
    let r1 = store
        .apply_relationship(t1, &user, key, d1)
        .await
        .unwrap()
        .expect("the first turn applies");
    assert_relationship(r1, Relationship::default().apply(d1), "first turn");
    assert_eq!(store.relationship(&user, key).await.unwrap(), Some(r1));

    assert_eq!(
        store.apply_relationship(t1, &user, key, d1).await.unwrap(),
        None,
        "a redelivered turn applies nothing"
    );
    assert_eq!(
        store.relationship(&user, key).await.unwrap(),
        Some(r1),
        "a redelivered turn moved the relationship"
    );

    let d2 = RelationshipDelta {
        trust: 0.1,
        affection: -0.05,
        attunement: 0.2,
    };
    let r2 = store
        .apply_relationship(uuid::Uuid::new_v4(), &user, key, d2)
        .await
        .unwrap()
        .expect("another turn applies");
    assert_relationship(r2, r1.apply(d2), "second turn accumulates");
    assert_eq!(r2.interactions, 2);

    // Clamped to 0..1.
    let big = RelationshipDelta {
        trust: 5.0,
        affection: -5.0,
        attunement: 0.0,
    };
    let r3 = store
        .apply_relationship(uuid::Uuid::new_v4(), &user, key, big)
        .await
        .unwrap()
        .unwrap();
    assert_relationship(r3, r2.apply(big), "clamped");
    assert!(r3.trust == 1.0 && r3.affection == 0.0);

    // Concurrent turns: none lost; one turn delivered concurrently: applied once.
    let small = RelationshipDelta {
        trust: 0.0,
        affection: 0.0,
        attunement: 0.001,
    };
    let distinct = futures::future::join_all(
        (0..6).map(|_| store.apply_relationship(uuid::Uuid::new_v4(), &user, key, small)),
    )
    .await;
    assert!(distinct.iter().all(|r| matches!(r, Ok(Some(_)))));
    let same = uuid::Uuid::new_v4();
    let dup = futures::future::join_all(
        (0..4).map(|_| store.apply_relationship(same, &user, key, small)),
    )
    .await;
    assert_eq!(
        dup.iter().filter(|r| matches!(r, Ok(Some(_)))).count(),
        1,
        "one turn applied once: {dup:?}"
    );
    let now = store.relationship(&user, key).await.unwrap().unwrap();
    assert_eq!(
        now.interactions,
        r3.interactions + 7,
        "a concurrent turn was lost"
    );

    assert_eq!(
        store
            .apply_relationship(uuid::Uuid::new_v4(), &user, &format!("{key}_unknown"), d1)
            .await
            .unwrap(),
        None,
        "an unknown character has no relationship"
    );

    // forget_user: one character, then all; others' relationships stay.
    store
        .apply_relationship(uuid::Uuid::new_v4(), &user, other_key, d1)
        .await
        .unwrap()
        .unwrap();
    for other in [&bystander, &same_id_http, &same_id_ns] {
        store
            .apply_relationship(uuid::Uuid::new_v4(), other, key, d1)
            .await
            .unwrap()
            .unwrap();
    }
    let listed = store.relationships_of(&user).await.unwrap();
    let mut want = vec![key, other_key];
    want.sort();
    assert_eq!(
        listed.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
        want,
        "relationships_of lists the user's, by character name"
    );
    assert_eq!(
        Some(listed.iter().find(|(k, _)| k == key).unwrap().1),
        store.relationship(&user, key).await.unwrap()
    );
    assert_eq!(
        store
            .forget_user(&user, Some(&format!("{key}_unknown")))
            .await
            .unwrap(),
        0
    );
    assert_eq!(store.forget_user(&user, Some(key)).await.unwrap(), 1);
    assert_eq!(store.relationship(&user, key).await.unwrap(), None);
    assert!(
        store
            .relationship(&user, other_key)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(store.forget_user(&user, None).await.unwrap(), 1);
    assert_eq!(store.relationship(&user, other_key).await.unwrap(), None);
    assert_eq!(store.forget_user(&user, None).await.unwrap(), 0);
    for other in [&bystander, &same_id_http, &same_id_ns] {
        assert_relationship(
            store
                .relationship(other, key)
                .await
                .unwrap()
                .expect("a neighbour's relationship was removed"),
            Relationship::default().apply(d1),
            &format!("forgetting {user} touched {other}'s relationship"),
        );
    }
    assert!(store.relationships_of(&user).await.unwrap().is_empty());
    // Forgotten, the user starts over (from the defaults) on the next turn.
    let fresh = store
        .apply_relationship(uuid::Uuid::new_v4(), &user, key, d1)
        .await
        .unwrap()
        .unwrap();
    assert_relationship(fresh, Relationship::default().apply(d1), "after forgetting");
    assert_eq!(store.forget_user(&user, None).await.unwrap(), 1);
    for other in [&bystander, &same_id_http, &same_id_ns] {
        assert_eq!(store.forget_user(other, None).await.unwrap(), 1);
    }
}
