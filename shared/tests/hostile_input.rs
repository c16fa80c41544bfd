//! Property tests over the shared decoders of untrusted input: the wire bodies that come off
//! the broker (`TurnRequest`, `TurnReply`, `PrivacyRequest`, `PrivacyReply`, the dead-letter
//! salvages) and character files.
//! Whatever the bytes, a decoder answers with a value or an error; it never panics.

use chrono::Utc;
use proptest::prelude::*;
use uuid::Uuid;
use whisperfleet_shared::character::{Character, CharacterFileError};
use whisperfleet_shared::identity::Identity;
use whisperfleet_shared::wire::{
    Conversation, PrivacyAction, PrivacyReply, PrivacyRequest, TurnReply, TurnRequest,
    WIRE_VERSION, WireError, salvage_privacy_address, salvage_reply_address,
};

fn sample_request() -> TurnRequest {
    TurnRequest {
        v: WIRE_VERSION,
        turn_id: Uuid::now_v7(),
        conversation: Conversation {
            platform: "discord".into(),
            namespace: String::new(),
            channel_id: "10".into(),
            user_id: "20".into(),
            guild_id: Some("30".into()),
            is_dm: false,
        },
        character: "Vellum".into(),
        user_name: "Sam".into(),
        text: "hello".into(),
        seq: 3,
        platform_sent_at: Some(Utc::now()),
        received_at: Utc::now(),
        published_at: Utc::now(),
        reply_to: "gw1".into(),
        platform_message_id: Some("40".into()),
        stream: false,
    }
}

fn sample_privacy_request() -> PrivacyRequest {
    PrivacyRequest {
        v: WIRE_VERSION,
        request_id: Uuid::now_v7(),
        identity: Identity::new("http", "acme", "a:b*? [c]\n"),
        character: Some("Vellum".into()),
        action: PrivacyAction::Forget,
        reply_to: "gw1".into(),
        expires_at: Utc::now(),
    }
}

/// A valid body with some bytes overwritten, some cut off or some inserted: the inputs a
/// byte-level fuzzer reaches slowly, a property test reaches at once.
fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len();
    (
        prop::collection::vec((0..len, any::<u8>()), 0..8),
        0..=len,
        prop::collection::vec(any::<u8>(), 0..8),
        0..=len,
    )
        .prop_map(move |(flips, cut, insert, at)| {
            let mut body = valid.clone();
            for (i, b) in flips {
                body[i] = b;
            }
            let at = at.min(body.len());
            body.splice(at..at, insert);
            body.truncate(cut.max(1));
            body
        })
}

/// JSON values of any shape, to put where the wire expects a given type.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Checks the contract of a decode result: an error says which body it could not read.
fn readable_error(e: &WireError, kind: &str) {
    let text = e.to_string();
    assert!(!text.is_empty());
    if let WireError::Malformed { kind: k, .. } | WireError::Version { kind: k, .. } = e {
        assert_eq!(*k, kind);
    }
}

proptest! {
    #[test]
    fn any_bytes_decode_to_a_turn_or_an_error(body in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = TurnRequest::decode(&body) {
            readable_error(&e, "TurnRequest");
        }
        if let Err(e) = TurnReply::decode(&body) {
            readable_error(&e, "TurnReply");
        }
        let _ = salvage_reply_address(&body);
    }

    #[test]
    fn any_bytes_decode_to_a_privacy_request_or_an_error(
        body in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        if let Err(e) = PrivacyRequest::decode(&body) {
            readable_error(&e, "PrivacyRequest");
        }
        if let Err(e) = PrivacyReply::decode(&body) {
            readable_error(&e, "PrivacyReply");
        }
        let _ = salvage_privacy_address(&body);
    }

    #[test]
    fn mutated_privacy_requests_decode_or_fail_cleanly(
        body in mutated(sample_privacy_request().encode()),
    ) {
        match PrivacyRequest::decode(&body) {
            // Whatever got through names one user and somewhere to answer.
            Ok(r) => {
                prop_assert!(!r.reply_to.is_empty());
                prop_assert!(!r.identity.platform.is_empty() && !r.identity.user_id.is_empty());
                let _ = r.identity.key();
            }
            Err(e) => readable_error(&e, "PrivacyRequest"),
        }
        if let Some((reply_to, _, _)) = salvage_privacy_address(&body) {
            prop_assert!(!reply_to.is_empty());
        }
    }

    #[test]
    fn mutated_turns_decode_or_fail_cleanly(body in mutated(sample_request().encode())) {
        match TurnRequest::decode(&body) {
            // Whatever got through is a turn the worker can run: it names a character and
            // has somewhere to send the reply.
            Ok(t) => {
                prop_assert!(!t.reply_to.is_empty());
                prop_assert!(!t.character.trim().is_empty());
                let _ = t.conversation_key();
            }
            Err(e) => readable_error(&e, "TurnRequest"),
        }
        if let Some((reply_to, _, _)) = salvage_reply_address(&body) {
            prop_assert!(!reply_to.is_empty());
        }
    }

    #[test]
    fn any_value_in_any_field_decodes_or_fails_cleanly(
        field in prop::sample::select(vec![
            "v", "turn_id", "conversation", "character", "user_name", "text", "seq",
            "platform_sent_at", "received_at", "published_at", "reply_to",
            "platform_message_id", "outcome", "timings", "counters",
        ]),
        value in json_value(),
    ) {
        let mut turn = serde_json::to_value(sample_request()).unwrap();
        turn[field] = value.clone();
        let body = serde_json::to_vec(&turn).unwrap();
        if let Err(e) = TurnRequest::decode(&body) {
            readable_error(&e, "TurnRequest");
        }
        let _ = salvage_reply_address(&body);
        let mut reply = turn;
        reply["outcome"] = "ok".into();
        reply[field] = value;
        if let Err(e) = TurnReply::decode(&serde_json::to_vec(&reply).unwrap()) {
            readable_error(&e, "TurnReply");
        }
    }

    #[test]
    fn any_text_is_a_character_or_a_clear_error(text in ".{0,300}") {
        check_character_file(&text);
    }

    #[test]
    fn mutated_character_files_are_read_or_refused_clearly(
        body in prop_oneof![
            mutated(SAMPLE_CHARACTER.as_bytes().to_vec()).boxed(),
            mutated(sample_character_json()).boxed(),
        ],
    ) {
        check_character_file(&String::from_utf8_lossy(&body));
    }
}

fn sample_character_json() -> Vec<u8> {
    serde_json::to_vec(&Character::from_file_text(SAMPLE_CHARACTER).unwrap()).unwrap()
}

const SAMPLE_CHARACTER: &str = "name: Vellum\noccupation: archivist\narchetype: narrative_ai\n\
personality:\n  openness: 0.9\n  neuroticism: 0.2\nspeech_patterns:\n  - pattern_type: \
signature_expression\n    pattern_value: Filed and found.\n    priority: 3\nllm:\n  \
temperature: 0.7\n";

fn check_character_file(text: &str) {
    match Character::from_file_text(text) {
        Ok(c) => {
            // What the store and the prompt rely on holds for every accepted file.
            assert!(!c.name.trim().is_empty());
            assert!(!c.normalized_name.is_empty());
            for (_, v) in c.personality.traits() {
                assert!((0.0..=1.0).contains(&v));
            }
        }
        Err(e) => {
            let text = e.to_string();
            assert!(!text.is_empty());
            match e {
                CharacterFileError::Json(_) => assert!(text.contains("JSON")),
                CharacterFileError::Yaml(_) => assert!(text.contains("YAML")),
                CharacterFileError::Invalid(_) => {}
            }
        }
    }
}

#[test]
fn deeply_nested_and_aliased_character_files_are_refused_not_crashed() {
    // Nesting past the parsers' recursion limits, and a YAML alias bomb.
    let deep_json = format!("{{\"name\":{}1{}}}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(Character::from_file_text(&deep_json).is_err());
    let deep_yaml = format!("name: {}x{}", "[".repeat(10_000), "]".repeat(10_000));
    assert!(Character::from_file_text(&deep_yaml).is_err());
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..10 {
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n",
            p = if i == 1 {
                String::new()
            } else {
                (i - 1).to_string()
            }
        ));
    }
    bomb.push_str("name: Vellum\n");
    // Unknown keys are ignored without expanding them: read, not blown up.
    assert_eq!(Character::from_file_text(&bomb).unwrap().name, "Vellum");
    bomb.push_str("interests: *a9\n");
    assert!(Character::from_file_text(&bomb).is_err());
    assert!(Character::from_file_text(SAMPLE_CHARACTER).is_ok());
}
