//! Property tests over the HTTP adapter's decoder of untrusted input: the body of
//! `POST /v1/turns`. Any JSON value (and any bytes) is a `TurnBody` or a rejection whose
//! status is a client error (the handler answers every rejection with 400); never a panic,
//! never a server error.

use axum::Json;
use axum::response::IntoResponse;
use proptest::prelude::*;
use serde_json::{Value, json};
use whisperfleet_gateway::http::TurnBody;

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,16}".prop_map(Value::from),
        Just(Value::from("2026-12-07T18:00:00Z")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map(".{0,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A body shaped like a turn, with any value in any of its fields (or an unknown one).
fn turn_like() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec![
            "character",
            "user_id",
            "text",
            "channel_id",
            "guild_id",
            "is_dm",
            "user_name",
            "sent_at",
            "unknown",
        ]),
        json_value(),
    )
        .prop_map(|(field, value)| {
            let mut body = json!({"character": "Vellum", "user_id": "u", "text": "hi"});
            body[field] = value;
            body
        })
}

fn check(bytes: &[u8]) -> Result<(), TestCaseError> {
    match Json::<TurnBody>::from_bytes(bytes) {
        Ok(Json(body)) => {
            // What the handler goes on with: strings it validates next, nothing to panic on.
            let _ = (
                body.character.trim(),
                body.user_id.trim(),
                body.text.chars().count(),
            );
        }
        Err(rejection) => {
            let status = rejection.into_response().status();
            prop_assert!(status.is_client_error(), "{status}");
        }
    }
    Ok(())
}

proptest! {
    #[test]
    fn any_json_value_is_a_turn_body_or_a_client_error(value in prop_oneof![json_value(), turn_like()]) {
        let bytes = serde_json::to_vec(&value).unwrap();
        check(&bytes)?;
        // The extractor and plain serde agree on what a turn body is.
        let direct = serde_json::from_value::<TurnBody>(value);
        prop_assert_eq!(direct.is_ok(), Json::<TurnBody>::from_bytes(&bytes).is_ok());
    }

    #[test]
    fn any_bytes_are_a_turn_body_or_a_client_error(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        check(&bytes)?;
    }
}
