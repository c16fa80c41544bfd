//! InfluxDB line protocol encoding for metric events. A metric event is one AMQP message per
//! turn whose body is all of that turn's points, newline-separated; the metrics-writer
//! parses and validates them and never re-encodes.

use std::fmt::Write;

use chrono::{DateTime, Utc};

#[derive(Debug, Clone, PartialEq)]
pub enum FieldValue {
    Float(f64),
    Int(i64),
    UInt(u64),
    Bool(bool),
    Str(String),
}

/// One point. Tags must have low cardinality (character, platform, outcome, queue, …):
/// never user ids.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub measurement: String,
    pub tags: Vec<(String, String)>,
    pub fields: Vec<(String, FieldValue)>,
    pub timestamp: DateTime<Utc>,
}

impl Point {
    pub fn new(measurement: &str, timestamp: DateTime<Utc>) -> Self {
        Self {
            measurement: measurement.to_string(),
            tags: Vec::new(),
            fields: Vec::new(),
            timestamp,
        }
    }

    pub fn tag(mut self, k: &str, v: &str) -> Self {
        if !v.is_empty() {
            self.tags.push((k.to_string(), v.to_string()));
        }
        self
    }

    pub fn field(mut self, k: &str, v: FieldValue) -> Self {
        // NaN and infinities are not representable in line protocol.
        if let FieldValue::Float(f) = v
            && !f.is_finite()
        {
            return self;
        }
        self.fields.push((k.to_string(), v));
        self
    }

    pub fn float(self, k: &str, v: f64) -> Self {
        self.field(k, FieldValue::Float(v))
    }

    pub fn int(self, k: &str, v: i64) -> Self {
        self.field(k, FieldValue::Int(v))
    }

    /// Appends the line (without newline). A point without fields is not valid line
    /// protocol and is skipped.
    pub fn write_to(&self, out: &mut String) -> bool {
        if self.fields.is_empty() {
            return false;
        }
        escape(out, &self.measurement, &[',', ' ']);
        let mut tags: Vec<_> = self.tags.iter().collect();
        // Sorted tags are what InfluxDB recommends for write performance.
        tags.sort();
        for (k, v) in tags {
            // A value that is nothing but what line protocol cannot hold is no tag.
            if element(v).is_empty() {
                continue;
            }
            out.push(',');
            escape(out, k, &[',', '=', ' ']);
            out.push('=');
            escape(out, v, &[',', '=', ' ']);
        }
        for (i, (k, v)) in self.fields.iter().enumerate() {
            out.push(if i == 0 { ' ' } else { ',' });
            escape(out, k, &[',', '=', ' ']);
            out.push('=');
            match v {
                FieldValue::Float(f) => {
                    let _ = write!(out, "{f}");
                }
                FieldValue::Int(i) => {
                    let _ = write!(out, "{i}i");
                }
                FieldValue::UInt(u) => {
                    let _ = write!(out, "{u}u");
                }
                FieldValue::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
                FieldValue::Str(s) => {
                    out.push('"');
                    for c in s.chars() {
                        match c {
                            '"' | '\\' => {
                                out.push('\\');
                                out.push(c);
                            }
                            '\n' => out.push_str("\\n"),
                            _ => out.push(c),
                        }
                    }
                    out.push('"');
                }
            }
        }
        // Past 2262 nanoseconds overflow an i64: such a time is written as the last
        // representable one rather than overflowing.
        let ns = self
            .timestamp
            .timestamp_nanos_opt()
            .unwrap_or_else(|| self.timestamp.timestamp_millis().saturating_mul(1_000_000));
        let _ = write!(out, " {ns}");
        true
    }
}

/// What line protocol can hold of a measurement, tag key or tag value. Control characters
/// (line breaks, tabs, NUL) end a line or an element and cannot be escaped, so they become
/// spaces; nor may an element end with a backslash, even an escaped one, so trailing
/// backslashes go. A value from outside (a character name) can thus never break an event or
/// add a point of its own.
fn element(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect::<String>()
        .trim_end_matches('\\')
        .to_string()
}

/// Writes [`element`]`(s)`, escaping `\\` and the `special` characters.
fn escape(out: &mut String, s: &str, special: &[char]) {
    for c in element(s).chars() {
        if c == '\\' || special.contains(&c) {
            out.push('\\');
        }
        out.push(c);
    }
}

/// Encodes points as one metric-event body.
pub fn encode(points: &[Point]) -> String {
    let mut out = String::new();
    for p in points {
        let start = out.len();
        if !out.is_empty() {
            out.push('\n');
        }
        if !p.write_to(&mut out) {
            out.truncate(start);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_and_types() {
        let ts = DateTime::from_timestamp(1_700_000_000, 5).unwrap();
        let p = Point::new("turn", ts)
            .tag("character", "Elena Rodriguez")
            .tag("outcome", "ok")
            .float("llm_ms", 12.5)
            .int("cdl_queries", 1)
            .field("note", FieldValue::Str("say \"hi\"".into()))
            .float("nan", f64::NAN);
        let line = encode(&[p]);
        assert_eq!(
            line,
            "turn,character=Elena\\ Rodriguez,outcome=ok llm_ms=12.5,cdl_queries=1i,note=\"say \\\"hi\\\"\" 1700000000000000005"
        );
    }

    #[test]
    fn outside_values_never_break_a_line_and_far_times_do_not_overflow() {
        // Found by the writer's property tests: a tab or a trailing backslash in a tag value
        // made the event unparseable, and a time past 2262 overflowed (a panic in debug).
        let far = DateTime::from_timestamp_millis(10_000_000_000_000).unwrap();
        let p = Point::new("turn", far)
            .tag("character", "Tab\tName\\")
            .tag("platform", "\\")
            .int("a", 1);
        assert_eq!(
            encode(&[p]),
            format!("turn,character=Tab\\ Name a=1i {}", i64::MAX)
        );
    }

    #[test]
    fn skips_points_without_fields() {
        let ts = Utc::now();
        let body = encode(&[Point::new("empty", ts), Point::new("x", ts).int("a", 1)]);
        assert_eq!(body.lines().count(), 1);
        assert!(body.starts_with("x a=1i "));
    }
}
