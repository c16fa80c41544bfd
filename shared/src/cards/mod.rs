//! Community character cards (Character Card V1, V2 and V3, as JSON, PNG/APNG or CHARX) and
//! lorebooks, read into the character model without losing anything.
//!
//! A card keeps its original JSON text ([`Card::raw`]) beside a typed view of it
//! ([`Card::data`]): the typed view is what prompts read, the original is what an export in the
//! card's own spec gives back, so every field and every `extensions` entry survives an
//! import/export round trip unchanged (byte for byte in the same spec). Both specs are
//! `malfoyslastname/character-card-spec-v2` (spec_v2.md) and `kwaroran/character-card-spec-v3`
//! (SPEC_V3.md).
//!
//! Everything here is a pure function of bytes: the CLI reads files and stores the result; a
//! bad card gives a [`CardError`] saying what is wrong (the CLI adds the file's name), never a
//! panic and never a half-read card.

pub mod charx;
pub mod lenient;
pub mod lorebook;
pub mod png;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use lorebook::{LoreEntry, LorePosition, Lorebook};

/// Largest card file read (PNG or CHARX; images are not needed for chat, but they come along).
pub const MAX_FILE_BYTES: usize = 32 * 1024 * 1024;
/// Largest card or lorebook JSON accepted, after base64 decoding or unzipping.
pub const MAX_JSON_BYTES: usize = 4 * 1024 * 1024;

/// Why a card (or lorebook) could not be read. One line each; the CLI prefixes the file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CardError {
    #[error("{what} is {size} bytes, over the limit of {limit} bytes")]
    TooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    #[error("PNG has no character card (no `ccv3` or `chara` tEXt chunk)")]
    NoCardChunk,
    #[error("not a valid PNG: {0}")]
    BadPng(String),
    #[error("`{chunk}` chunk is not valid base64: {reason}")]
    BadBase64 { chunk: String, reason: String },
    #[error("invalid JSON: {0}")]
    Json(String),
    #[error("card has no name")]
    MissingName,
    #[error("unknown card spec {0:?} (expected chara_card_v2 or chara_card_v3)")]
    UnknownSpec(String),
    #[error("CHARX has no card.json at the root of the archive")]
    NoCardJson,
    #[error("not a valid CHARX (zip) archive: {0}")]
    BadZip(String),
    #[error("field {field}: {reason}")]
    Field { field: String, reason: String },
    #[error("not a lorebook: {0}")]
    NotLorebook(String),
}

/// Which spec a card follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Spec {
    /// Flat JSON: name, description, personality, scenario, first_mes, mes_example.
    V1,
    /// `spec: "chara_card_v2"`, fields under `data`.
    V2,
    /// `spec: "chara_card_v3"`.
    V3,
}

impl Spec {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::V1 => "v1",
            Self::V2 => "chara_card_v2",
            Self::V3 => "chara_card_v3",
        }
    }
}

/// The container a card came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Container {
    Json,
    Png,
    Charx,
}

impl Container {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "json",
            Self::Png => "png",
            Self::Charx => "charx",
        }
    }
}

/// A CHARX/V3 asset reference (`data.assets`); images are listed, not needed for chat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Asset {
    #[serde(rename = "type", deserialize_with = "lenient::text")]
    pub kind: String,
    #[serde(deserialize_with = "lenient::text")]
    pub uri: String,
    #[serde(deserialize_with = "lenient::text")]
    pub name: String,
    #[serde(deserialize_with = "lenient::text")]
    pub ext: String,
}

/// The typed view of a card's `data` (V2/V3) or of a V1 card's top level. Absent and `null`
/// fields read as empty; unknown fields stay in [`Card::raw`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CardData {
    #[serde(deserialize_with = "lenient::text")]
    pub name: String,
    #[serde(deserialize_with = "lenient::text")]
    pub nickname: String,
    #[serde(deserialize_with = "lenient::text")]
    pub description: String,
    #[serde(deserialize_with = "lenient::text")]
    pub personality: String,
    #[serde(deserialize_with = "lenient::text")]
    pub scenario: String,
    #[serde(deserialize_with = "lenient::text")]
    pub first_mes: String,
    #[serde(deserialize_with = "lenient::text")]
    pub mes_example: String,
    #[serde(deserialize_with = "lenient::text")]
    pub system_prompt: String,
    #[serde(deserialize_with = "lenient::text")]
    pub post_history_instructions: String,
    #[serde(deserialize_with = "lenient::texts")]
    pub alternate_greetings: Vec<String>,
    #[serde(deserialize_with = "lenient::texts")]
    pub group_only_greetings: Vec<String>,
    #[serde(deserialize_with = "lenient::texts")]
    pub tags: Vec<String>,
    #[serde(deserialize_with = "lenient::text")]
    pub creator: String,
    #[serde(deserialize_with = "lenient::text")]
    pub character_version: String,
    /// Shown to people, never put into a prompt.
    #[serde(deserialize_with = "lenient::text")]
    pub creator_notes: String,
    /// Never put into a prompt.
    #[serde(deserialize_with = "lenient::object")]
    pub creator_notes_multilingual: Map<String, Value>,
    #[serde(deserialize_with = "lenient::texts")]
    pub source: Vec<String>,
    /// Unix seconds (the spec's numbers), kept as written.
    #[serde(deserialize_with = "lenient::date")]
    pub creation_date: Option<serde_json::Number>,
    #[serde(deserialize_with = "lenient::date")]
    pub modification_date: Option<serde_json::Number>,
    #[serde(deserialize_with = "lenient::or_default")]
    pub assets: Vec<Asset>,
    #[serde(deserialize_with = "lenient::object")]
    pub extensions: Map<String, Value>,
    #[serde(deserialize_with = "lenient::or_default")]
    pub character_book: Option<Lorebook>,
}

/// A card as imported: where it came from, its spec, the original JSON text and the typed
/// view. Stored and cached as `{container, json}` ([`CardRecord`]); the rest is derived again
/// when read, so the stored form cannot disagree with itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "CardRecord", into = "CardRecord")]
pub struct Card {
    pub container: Container,
    pub spec: Spec,
    /// `spec_version` as written (`"2.0"`, `"3.0"`, …); empty for V1.
    pub spec_version: String,
    /// The card's JSON text exactly as found in the file.
    pub raw: String,
    pub data: CardData,
    /// Things the import should tell the operator (e.g. a newer spec minor version).
    pub warnings: Vec<String>,
}

/// How a [`Card`] is stored: the container and the original JSON text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CardRecord {
    pub container: Container,
    pub json: String,
}

impl TryFrom<CardRecord> for Card {
    type Error = CardError;
    fn try_from(r: CardRecord) -> Result<Self, CardError> {
        Card::from_json(&r.json, r.container)
    }
}

impl From<Card> for CardRecord {
    fn from(c: Card) -> Self {
        Self {
            container: c.container,
            json: c.raw,
        }
    }
}

/// What a file's bytes turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Imported {
    /// A community card.
    Card(Box<Card>),
    /// JSON that is not a card: the project's own character format.
    OwnFormat,
}

/// Does this JSON object look like a V1 card rather than the project's own format? V1 has no
/// `spec`; its `personality` is text (the project's is the Big Five object) and it has
/// greeting/example fields the project's format does not.
fn looks_like_v1(obj: &Map<String, Value>) -> bool {
    ["first_mes", "mes_example", "char_greeting", "char_persona"]
        .iter()
        .any(|k| obj.contains_key(*k))
        || obj.get("personality").is_some_and(Value::is_string)
        || obj.get("scenario").is_some_and(Value::is_string)
}

impl Card {
    /// Reads a card from its JSON text (V1, V2 or V3).
    pub fn from_json(text: &str, container: Container) -> Result<Self, CardError> {
        if text.len() > MAX_JSON_BYTES {
            return Err(CardError::TooLarge {
                what: "card JSON",
                size: text.len(),
                limit: MAX_JSON_BYTES,
            });
        }
        let value: Value =
            serde_json::from_str(text).map_err(|e| CardError::Json(e.to_string()))?;
        let Value::Object(obj) = &value else {
            return Err(CardError::Json("a card is a JSON object".into()));
        };
        let mut warnings = Vec::new();
        let (spec, spec_version, data_value) = match obj.get("spec") {
            None => (Spec::V1, String::new(), value.clone()),
            Some(Value::String(s)) if s == "chara_card_v2" || s == "chara_card_v3" => {
                let spec = if s == "chara_card_v2" {
                    Spec::V2
                } else {
                    Spec::V3
                };
                let version = match obj.get("spec_version") {
                    Some(Value::String(v)) => v.clone(),
                    Some(Value::Number(n)) => n.to_string(),
                    _ => String::new(),
                };
                if spec == Spec::V3 {
                    // The spec: compare as a float; newer imports the known fields.
                    match version.parse::<f64>() {
                        Ok(v) if v > 3.0 => warnings.push(format!(
                            "spec_version {version} is newer than 3.0: known fields imported, newer features ignored"
                        )),
                        Ok(_) => {}
                        Err(_) => warnings.push(format!(
                            "spec_version {version:?} is not a number; read as 3.0"
                        )),
                    }
                }
                let data = obj.get("data").cloned().ok_or_else(|| CardError::Field {
                    field: "data".into(),
                    reason: format!("missing (a {s} card keeps its fields under data)"),
                })?;
                (spec, version, data)
            }
            Some(other) => {
                return Err(CardError::UnknownSpec(match other {
                    Value::String(s) => s.clone(),
                    v => v.to_string(),
                }));
            }
        };
        let data_value = normalize_v1(spec, data_value);
        let mut data: CardData = serde_json::from_value(data_value.clone())
            .map_err(|e| field_error(spec, &data_value, e))?;
        if data.name.trim().is_empty() {
            return Err(CardError::MissingName);
        }
        data.name = data.name.trim().to_string();
        Ok(Self {
            container,
            spec,
            spec_version,
            raw: text.to_string(),
            data,
            warnings,
        })
    }

    /// Reads any card file's bytes: PNG/APNG (`ccv3` preferred over `chara`), CHARX (zip) or
    /// JSON. JSON that is not a card is [`Imported::OwnFormat`].
    pub fn from_bytes(bytes: &[u8]) -> Result<Imported, CardError> {
        if bytes.len() > MAX_FILE_BYTES {
            return Err(CardError::TooLarge {
                what: "file",
                size: bytes.len(),
                limit: MAX_FILE_BYTES,
            });
        }
        if bytes.starts_with(png::SIGNATURE) {
            let json = png::card_json(bytes)?;
            return Ok(Imported::Card(Box::new(Card::from_json(
                &json,
                Container::Png,
            )?)));
        }
        if bytes.starts_with(b"PK") {
            let json = charx::card_json(bytes)?;
            return Ok(Imported::Card(Box::new(Card::from_json(
                &json,
                Container::Charx,
            )?)));
        }
        let text = std::str::from_utf8(bytes)
            .map_err(|e| CardError::Json(format!("not UTF-8 text: {e}")))?;
        let trimmed = text.trim_start_matches('\u{feff}');
        if !trimmed.trim_start().starts_with('{') {
            return Ok(Imported::OwnFormat);
        }
        let value: Value =
            serde_json::from_str(trimmed).map_err(|e| CardError::Json(e.to_string()))?;
        match &value {
            Value::Object(o) if o.contains_key("spec") || looks_like_v1(o) => Ok(Imported::Card(
                Box::new(Card::from_json(trimmed, Container::Json)?),
            )),
            _ => Ok(Imported::OwnFormat),
        }
    }

    /// The name `{{char}}` stands for: the nickname when the card has one (V3).
    pub fn char_name(&self) -> &str {
        if self.data.nickname.trim().is_empty() {
            &self.data.name
        } else {
            self.data.nickname.trim()
        }
    }

    /// Entries of the card's own lorebook.
    pub fn lore_entries(&self) -> usize {
        self.data
            .character_book
            .as_ref()
            .map_or(0, |b| b.entries.len())
    }

    /// The card as JSON of `spec` (V2 or V3; V1 exports as V2). In the card's own spec this
    /// is its original text, byte for byte; otherwise the original JSON value with `spec` and
    /// `spec_version` changed (and a V1 card's fields moved under `data`), so no field or
    /// extension is lost either way.
    pub fn export(&self, spec: Spec) -> Result<String, CardError> {
        if spec == self.spec {
            return Ok(self.raw.clone());
        }
        let value: Value =
            serde_json::from_str(&self.raw).map_err(|e| CardError::Json(e.to_string()))?;
        let mut card = match self.spec {
            // V1's top level becomes V2's data; the spec's required fields are added empty.
            Spec::V1 => {
                let mut data = match value {
                    Value::Object(o) => o,
                    _ => Map::new(),
                };
                for (k, empty) in [
                    ("system_prompt", Value::String(String::new())),
                    ("post_history_instructions", Value::String(String::new())),
                    ("alternate_greetings", Value::Array(Vec::new())),
                    ("tags", Value::Array(Vec::new())),
                    ("creator", Value::String(String::new())),
                    ("character_version", Value::String(String::new())),
                    ("creator_notes", Value::String(String::new())),
                    ("extensions", Value::Object(Map::new())),
                ] {
                    data.entry(k).or_insert(empty);
                }
                let mut o = Map::new();
                o.insert("data".into(), Value::Object(data));
                o
            }
            Spec::V2 | Spec::V3 => match value {
                Value::Object(o) => o,
                _ => Map::new(),
            },
        };
        let (name, version) = match spec {
            Spec::V3 => ("chara_card_v3", "3.0"),
            Spec::V2 | Spec::V1 => ("chara_card_v2", "2.0"),
        };
        card.insert("spec".into(), Value::String(name.into()));
        card.insert("spec_version".into(), Value::String(version.into()));
        if spec == Spec::V3
            && let Some(Value::Object(data)) = card.get_mut("data")
        {
            // Required in V3 (may be empty).
            data.entry("group_only_greetings")
                .or_insert(Value::Array(Vec::new()));
        }
        serde_json::to_string(&Value::Object(card)).map_err(|e| CardError::Json(e.to_string()))
    }
}

/// Which field a typed read failed on: serde names the problem, not the field, so each
/// field is read alone until one fails.
fn field_error(spec: Spec, data: &Value, e: serde_json::Error) -> CardError {
    let prefix = if spec == Spec::V1 { "" } else { "data." };
    if let Value::Object(o) = data {
        for (k, v) in o {
            let mut one = Map::new();
            one.insert(k.clone(), v.clone());
            if let Err(e) = serde_json::from_value::<CardData>(Value::Object(one)) {
                return CardError::Field {
                    field: format!("{prefix}{k}"),
                    reason: e.to_string(),
                };
            }
        }
    }
    CardError::Field {
        field: if spec == Spec::V1 { "card" } else { "data" }.into(),
        reason: e.to_string(),
    }
}

/// V1 cards written by old tools use `char_name`/`char_persona`/`char_greeting`/
/// `world_scenario`/`example_dialogue`: read them as the V1 names when those are absent.
fn normalize_v1(spec: Spec, v: Value) -> Value {
    if spec != Spec::V1 {
        return v;
    }
    let Value::Object(mut o) = v else { return v };
    for (old, new) in [
        ("char_name", "name"),
        ("char_persona", "personality"),
        ("char_greeting", "first_mes"),
        ("world_scenario", "scenario"),
        ("example_dialogue", "mes_example"),
    ] {
        if !o.contains_key(new)
            && let Some(x) = o.get(old).cloned()
        {
            o.insert(new.into(), x);
        }
    }
    Value::Object(o)
}

/// A V3 card's JSON for a character made in the project's own format (no card imported):
/// what the model holds, in card fields.
pub fn card_from_model(name: &str, description: &str) -> String {
    serde_json::json!({
        "spec": "chara_card_v3",
        "spec_version": "3.0",
        "data": {
            "name": name, "description": description, "personality": "", "scenario": "",
            "first_mes": "", "mes_example": "", "creator_notes": "", "system_prompt": "",
            "post_history_instructions": "", "alternate_greetings": [], "tags": [],
            "creator": "", "character_version": "", "extensions": {},
            "group_only_greetings": []
        }
    })
    .to_string()
}

#[cfg(test)]
mod tests;
