//! Property tests over the writer's decoder of untrusted input, the metric event (line
//! protocol): any bytes are parsed or rejected with a reason, never a panic; and whatever a
//! tag or field value holds (a character name, a platform, a queue name), the encoder in
//! `shared::lineproto` writes exactly one valid line per point, so a value can neither break
//! an event nor smuggle in a point of its own.

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use whisperfleet_metrics_writer::batch::validate;
use whisperfleet_shared::lineproto::{FieldValue, Point, encode};

fn line_protocol_ish() -> impl Strategy<Value = String> {
    // The alphabet line protocol cares about, so the parser's corners are reached often.
    prop::collection::vec(
        prop_oneof![
            prop::sample::select(vec![
                " ", ",", "=", "\"", "\\", "\n", "\r", "#", "i", "u", "t", "f", "1", "-", ".", "e",
                "turn", "llm_ms", "true", "é", "😀", "\t",
            ])
            .prop_map(str::to_string),
            "[a-z0-9]{1,4}",
        ],
        0..40,
    )
    .prop_map(|parts| parts.concat())
}

fn field_value() -> impl Strategy<Value = FieldValue> {
    prop_oneof![
        any::<f64>().prop_map(FieldValue::Float),
        any::<i64>().prop_map(FieldValue::Int),
        any::<u64>().prop_map(FieldValue::UInt),
        any::<bool>().prop_map(FieldValue::Bool),
        ".{0,30}".prop_map(FieldValue::Str),
    ]
}

fn timestamp() -> impl Strategy<Value = DateTime<Utc>> {
    // Beyond the range of nanosecond timestamps too (the encoder falls back to milliseconds).
    (-10_000_000_000_000i64..10_000_000_000_000i64)
        .prop_map(|ms| DateTime::from_timestamp_millis(ms).unwrap_or_else(Utc::now))
}

/// A point as the fleet writes them: measurement, tag keys and field keys are the code's own
/// names; tag values and string fields carry what came from outside.
fn fleet_point() -> impl Strategy<Value = Point> {
    (
        prop::sample::select(vec!["turn", "delivery", "cache", "fleet_queue", "emotion"]),
        prop::collection::vec(
            (
                prop::sample::select(vec!["character", "platform", "outcome", "queue"]),
                ".{0,24}",
            ),
            0..4,
        ),
        prop::collection::vec(
            (
                prop::sample::select(vec!["llm_ms", "end_to_end_ms", "cdl_queries", "note"]),
                field_value(),
            ),
            0..4,
        ),
        timestamp(),
    )
        .prop_map(|(measurement, tags, fields, ts)| {
            let mut p = Point::new(measurement, ts);
            for (k, v) in tags {
                // One value per tag key, as every caller writes them.
                if !p.tags.iter().any(|(t, _)| t == k) {
                    p = p.tag(k, &v);
                }
            }
            for (k, v) in fields {
                if !p.fields.iter().any(|(f, _)| f == k) {
                    p = p.field(k, v);
                }
            }
            p
        })
}

proptest! {
    #[test]
    fn any_bytes_are_parsed_or_rejected_with_a_reason(body in prop::collection::vec(any::<u8>(), 0..256)) {
        match validate(&body) {
            Ok(lines) => prop_assert!(!lines.is_empty()),
            Err(reason) => prop_assert!(!reason.is_empty()),
        }
    }

    #[test]
    fn any_line_protocol_like_text_is_parsed_or_rejected(text in line_protocol_ish()) {
        match validate(text.as_bytes()) {
            Ok(lines) => {
                for line in &lines {
                    prop_assert!(!line.is_empty() && !line.contains('\n'));
                    // What the writer forwards is what it validated, line by line.
                    prop_assert_eq!(validate(line.as_bytes()).unwrap(), vec![line.clone()]);
                }
            }
            Err(reason) => prop_assert!(!reason.is_empty()),
        }
    }

    #[test]
    fn encoded_points_are_one_valid_line_each(points in prop::collection::vec(fleet_point(), 1..5)) {
        let body = encode(&points);
        let expected = points.iter().filter(|p| !p.fields.is_empty()).count();
        if expected == 0 {
            prop_assert!(validate(body.as_bytes()).is_err());
            return Ok(());
        }
        let lines = validate(body.as_bytes())
            .map_err(|e| TestCaseError::fail(format!("{e}\nbody: {body:?}")))?;
        prop_assert_eq!(lines.len(), expected, "body: {:?}", body);
        let written: Vec<&Point> = points.iter().filter(|p| !p.fields.is_empty()).collect();
        for (line, point) in lines.iter().zip(written) {
            let parsed = influxdb_line_protocol::parse_lines(line).next().unwrap().unwrap();
            prop_assert_eq!(parsed.series.measurement.as_str(), point.measurement.as_str());
            // Tag values come back as written, less what line protocol cannot hold (control
            // characters become spaces, trailing backslashes go); nothing left, no tag.
            let expected_tags: Vec<(&str, String)> = point
                .tags
                .iter()
                .map(|(k, v)| {
                    let v: String = v.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
                    (k.as_str(), v.trim_end_matches('\\').to_string())
                })
                .filter(|(_, v)| !v.is_empty())
                .collect();
            let tags = parsed.series.tag_set.as_ref().map_or(0, |t| t.len());
            prop_assert_eq!(tags, expected_tags.len(), "line: {:?}", line);
            for (k, v) in expected_tags {
                prop_assert_eq!(parsed.tag_value(k).map(|t| t.as_str()), Some(v.as_str()));
            }
            prop_assert_eq!(parsed.field_set.len(), point.fields.len(), "line: {:?}", line);
            for (key, value) in &point.fields {
                if let FieldValue::Str(s) = value {
                    let got = parsed.field_value(key).cloned();
                    let Some(influxdb_line_protocol::FieldValue::String(got)) = got else {
                        return Err(TestCaseError::fail(format!("{key} missing in {line:?}")));
                    };
                    // Newlines are written as `\n`; everything else comes back as it was.
                    prop_assert_eq!(got.as_str(), s.replace('\n', "\\n"), "line: {:?}", line);
                }
            }
        }
    }
}
