//! Lorebooks (a card's `character_book`, a standalone `lorebook_v3`, or a SillyTavern World
//! Info JSON) as one typed model. Known fields are typed; everything else an entry or a book
//! carries stays in its `rest`, so what was imported is what is stored.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::{CardError, MAX_JSON_BYTES, lenient};

/// Where an entry's content goes: before or after the character block.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LorePosition {
    #[default]
    BeforeChar,
    AfterChar,
}

/// A lorebook (V2/V3 `Lorebook` object).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Lorebook {
    #[serde(deserialize_with = "lenient::text")]
    pub name: String,
    #[serde(deserialize_with = "lenient::text")]
    pub description: String,
    /// How many of the latest messages are scanned for keys (`None`: the worker's default).
    #[serde(deserialize_with = "lenient::opt_count")]
    pub scan_depth: Option<u32>,
    /// Tokens the lorebook's entries may take in one prompt (`None`: no own limit).
    #[serde(deserialize_with = "lenient::opt_count")]
    pub token_budget: Option<u32>,
    #[serde(deserialize_with = "lenient::opt_flag")]
    pub recursive_scanning: Option<bool>,
    #[serde(deserialize_with = "lenient::object")]
    pub extensions: Map<String, Value>,
    #[serde(deserialize_with = "lenient::or_default")]
    pub entries: Vec<LoreEntry>,
    /// Fields this model does not know, kept as found.
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

/// One lorebook entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoreEntry {
    #[serde(deserialize_with = "lenient::keys")]
    pub keys: Vec<String>,
    #[serde(deserialize_with = "lenient::text")]
    pub content: String,
    #[serde(deserialize_with = "lenient::object")]
    pub extensions: Map<String, Value>,
    #[serde(deserialize_with = "lenient::flag_on")]
    pub enabled: bool,
    #[serde(deserialize_with = "lenient::number")]
    pub insertion_order: f64,
    #[serde(deserialize_with = "lenient::opt_flag")]
    pub case_sensitive: Option<bool>,
    #[serde(deserialize_with = "lenient::flag")]
    pub use_regex: bool,
    #[serde(deserialize_with = "lenient::flag")]
    pub constant: bool,
    #[serde(deserialize_with = "lenient::text")]
    pub name: String,
    #[serde(deserialize_with = "lenient::opt_number")]
    pub priority: Option<f64>,
    pub id: Option<Value>,
    #[serde(deserialize_with = "lenient::text")]
    pub comment: String,
    #[serde(deserialize_with = "lenient::flag")]
    pub selective: bool,
    #[serde(deserialize_with = "lenient::keys")]
    pub secondary_keys: Vec<String>,
    #[serde(deserialize_with = "position")]
    pub position: LorePosition,
    #[serde(flatten)]
    pub rest: Map<String, Value>,
}

impl Default for LoreEntry {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            content: String::new(),
            extensions: Map::new(),
            enabled: true,
            insertion_order: 0.0,
            case_sensitive: None,
            use_regex: false,
            constant: false,
            name: String::new(),
            priority: None,
            id: None,
            comment: String::new(),
            selective: false,
            secondary_keys: Vec::new(),
            position: LorePosition::BeforeChar,
            rest: Map::new(),
        }
    }
}

/// `before_char`/`after_char` as the specs write it; SillyTavern's numbers (0 before, 1
/// after, others are placements this fleet does not have: after); absent or unknown: before.
fn position<'de, D: serde::Deserializer<'de>>(d: D) -> Result<LorePosition, D::Error> {
    Ok(match Option::<Value>::deserialize(d)? {
        Some(Value::String(s)) if s == "after_char" => LorePosition::AfterChar,
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| n != 0) => LorePosition::AfterChar,
        _ => LorePosition::BeforeChar,
    })
}

impl Lorebook {
    /// Reads a standalone lorebook file: `{spec: "lorebook_v3", data: Lorebook}`, a bare
    /// Lorebook object (`entries` as an array), or a SillyTavern World Info export (`entries`
    /// as an object of numbered entries with `key`, `keysecondary`, `disable`, `order`, …).
    pub fn from_json(text: &str) -> Result<Self, CardError> {
        if text.len() > MAX_JSON_BYTES {
            return Err(CardError::TooLarge {
                what: "lorebook JSON",
                size: text.len(),
                limit: MAX_JSON_BYTES,
            });
        }
        let value: Value = serde_json::from_str(text.trim_start_matches('\u{feff}'))
            .map_err(|e| CardError::Json(e.to_string()))?;
        let Value::Object(mut obj) = value else {
            return Err(CardError::NotLorebook("a lorebook is a JSON object".into()));
        };
        if let Some(spec) = obj.get("spec") {
            if spec != "lorebook_v3" {
                return Err(CardError::NotLorebook(format!(
                    "spec {spec} (expected lorebook_v3)"
                )));
            }
            let data = obj
                .remove("data")
                .ok_or_else(|| CardError::NotLorebook("lorebook_v3 without data".into()))?;
            return parse(data);
        }
        match obj.get("entries") {
            Some(Value::Array(_)) => parse(Value::Object(obj)),
            Some(Value::Object(_)) => Ok(from_world_info(obj)),
            _ => Err(CardError::NotLorebook("no entries".into())),
        }
    }
}

fn parse(v: Value) -> Result<Lorebook, CardError> {
    serde_json::from_value(v).map_err(|e| CardError::Field {
        field: "lorebook".into(),
        reason: e.to_string(),
    })
}

/// A SillyTavern World Info export as a lorebook: its fields mapped onto the spec's names;
/// the whole original entry also stays in `extensions.world_info` so nothing is lost.
fn from_world_info(mut obj: Map<String, Value>) -> Lorebook {
    let Some(Value::Object(entries)) = obj.remove("entries") else {
        return Lorebook::default();
    };
    let mut list: Vec<(f64, LoreEntry)> = entries
        .into_iter()
        .filter_map(|(k, e)| {
            let Value::Object(e) = e else { return None };
            let strings = |key: &str| -> Vec<String> {
                match e.get(key) {
                    Some(Value::Array(a)) => a
                        .iter()
                        .filter_map(|x| x.as_str().map(str::to_string))
                        .collect(),
                    Some(Value::String(s)) => s
                        .split(',')
                        .map(|p| p.trim().to_string())
                        .filter(|p| !p.is_empty())
                        .collect(),
                    _ => Vec::new(),
                }
            };
            let text = |key: &str| e.get(key).and_then(Value::as_str).unwrap_or("").to_string();
            let flag = |key: &str| e.get(key).and_then(Value::as_bool).unwrap_or(false);
            let uid = e
                .get("uid")
                .and_then(Value::as_f64)
                .or_else(|| k.parse().ok())
                .unwrap_or(0.0);
            let mut extensions = Map::new();
            extensions.insert("world_info".into(), Value::Object(e.clone()));
            let keys = strings("key");
            let entry = LoreEntry {
                use_regex: keys.iter().any(|k| is_slash_regex(k)),
                keys,
                secondary_keys: strings("keysecondary"),
                content: text("content"),
                comment: text("comment"),
                enabled: !flag("disable"),
                constant: flag("constant"),
                selective: flag("selective"),
                case_sensitive: e.get("caseSensitive").and_then(Value::as_bool),
                insertion_order: e.get("order").and_then(Value::as_f64).unwrap_or(100.0),
                position: match e.get("position").and_then(Value::as_i64) {
                    Some(0) | None => LorePosition::BeforeChar,
                    Some(_) => LorePosition::AfterChar,
                },
                id: e.get("uid").cloned(),
                extensions,
                ..LoreEntry::default()
            };
            Some((uid, entry))
        })
        .collect();
    list.sort_by(|a, b| a.0.total_cmp(&b.0));
    let scan_depth = obj
        .get("scan_depth")
        .and_then(Value::as_u64)
        .map(|d| d as u32);
    Lorebook {
        name: obj.get("name").and_then(Value::as_str).unwrap_or("").into(),
        scan_depth,
        entries: list.into_iter().map(|(_, e)| e).collect(),
        rest: obj,
        ..Lorebook::default()
    }
}

/// `/pattern/flags`: how SillyTavern writes a regular-expression key.
pub fn is_slash_regex(key: &str) -> bool {
    key.len() >= 2
        && key.starts_with('/')
        && key[1..]
            .rfind('/')
            .is_some_and(|end| key[1 + end + 1..].chars().all(|c| c.is_ascii_alphabetic()))
}
