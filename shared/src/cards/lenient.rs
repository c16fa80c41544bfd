//! How a card's typed view reads values written by many tools: `null` as "none", a number
//! where the spec says string (`"character_version": 2`), a comma-separated string where it
//! says a list of keys. The typed view is only what prompts read — the card's original JSON
//! is kept whole beside it — so reading leniently loses nothing; a value that cannot mean the
//! field at all (an object where text belongs) is still an error naming the field.

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer};
use serde_json::{Map, Number, Value};

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Text: a string, or a number/boolean written as one; `null` is empty.
pub fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(String::new()),
        v => scalar_text(&v).ok_or_else(|| de::Error::custom(format!("expected text, found {v}"))),
    }
}

/// A list of texts; a single string is a list of one, `null` an empty list.
pub fn texts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => Ok(items.iter().filter_map(scalar_text).collect()),
        v => scalar_text(&v)
            .map(|s| vec![s])
            .ok_or_else(|| de::Error::custom(format!("expected a list of texts, found {v}"))),
    }
}

/// Lorebook keys: a list, or one string of comma-separated keys (as V3 describes
/// `secondary_keys`).
pub fn keys<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    match Value::deserialize(d)? {
        Value::String(s) => Ok(s
            .split(',')
            .map(|k| k.trim().to_string())
            .filter(|k| !k.is_empty())
            .collect()),
        Value::Null => Ok(Vec::new()),
        Value::Array(items) => Ok(items.iter().filter_map(scalar_text).collect()),
        v => Err(de::Error::custom(format!(
            "expected a list of keys, found {v}"
        ))),
    }
}

/// An object (`extensions`); `null` or anything else is empty here (the original keeps it).
pub fn object<'de, D: Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Object(m) => m,
        _ => Map::new(),
    })
}

fn truthy(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => Some(n.as_f64() != Some(0.0)),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Some(true),
            "false" | "no" | "0" | "" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A flag; `null` is false.
pub fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(opt_flag(d)?.unwrap_or(false))
}

/// A flag that is on unless said otherwise (`enabled`); `null` is true.
pub fn flag_on<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(opt_flag(d)?.unwrap_or(true))
}

/// An optional flag; `null` is unset.
pub fn opt_flag<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        v => truthy(&v)
            .map(Some)
            .ok_or_else(|| de::Error::custom(format!("expected true or false, found {v}"))),
    }
}

/// An optional number, also written as a string; `null` or unreadable text is unset.
pub fn opt_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    })
}

/// A number (`insertion_order`); unset is 0.
pub fn number<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(opt_number(d)?.unwrap_or(0.0))
}

/// An optional count (`scan_depth`, `token_budget`); negative or unreadable is unset.
pub fn opt_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    Ok(opt_number(d)?
        .filter(|n| n.is_finite() && *n >= 0.0)
        .map(|n| n.min(f64::from(u32::MAX)) as u32))
}

/// A date in Unix seconds as the card wrote it; anything but a number is unset here.
pub fn date<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Number>, D::Error> {
    Ok(match Value::deserialize(d)? {
        Value::Number(n) => Some(n),
        Value::String(s) => s.trim().parse::<i64>().ok().map(Number::from),
        _ => None,
    })
}

/// Any other value; `null` reads as the type's default.
pub fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: DeserializeOwned + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}
