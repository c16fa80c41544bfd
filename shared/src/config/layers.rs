//! Reads the file and env layers into one value per declared key, whichever spelling was
//! used: flat (`history_len`, `WHISPERFLEET_HISTORY_LEN`) or by section (`[worker]
//! history_len`, `WHISPERFLEET_WORKER__HISTORY_LEN`). Later layers win; the same key spelled
//! twice in one layer is refused, so which one counts is never a guess.

use std::collections::BTreeMap;
use std::path::Path;

use figment::providers::{Format, Toml};
use figment::value::{Dict, Value};
use figment::{Profile, Provider};

use super::declare::{Key, Kind};
use super::{ConfigError, ENV_PREFIX, keys};

/// The values given so far, by key, with the spelling that gave each (for messages).
#[derive(Default)]
pub(crate) struct Given {
    values: BTreeMap<&'static str, (&'static Key, String, Value)>,
}

impl Given {
    /// Sets `key` for this layer; `seen` holds the keys the layer already set.
    fn set(
        &mut self,
        seen: &mut BTreeMap<&'static str, String>,
        key: &'static Key,
        spelling: String,
        value: Value,
    ) -> Result<(), ConfigError> {
        if let Some(first) = seen.insert(key.flat, spelling.clone()) {
            return Err(ConfigError::Invalid(format!(
                "{first} and {spelling} are the same setting; set only one"
            )));
        }
        self.values.insert(key.flat, (key, spelling, value));
        Ok(())
    }

    /// `{section: {field: value}}`, the shape [`super::Config`] deserializes from.
    pub fn into_sections(self) -> Dict {
        let mut sections = Dict::new();
        for (_, (key, _, value)) in self.values {
            let section = sections
                .entry(key.section.to_string())
                .or_insert_with(|| Value::from(Dict::new()));
            if let Value::Dict(_, fields) = section {
                fields.insert(key.field.to_string(), value);
            }
        }
        sections
    }
}

/// The TOML file: flat keys at the top, or keys inside their section's table. Unknown keys
/// are ignored, as they always were.
pub(crate) fn file(path: &Path, given: &mut Given) -> Result<(), ConfigError> {
    if !path.exists() {
        return Err(ConfigError::Invalid(format!(
            "config file {} does not exist",
            path.display()
        )));
    }
    let mut data = Toml::file(path)
        .data()
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
    let top = data.remove(&Profile::Default).unwrap_or_default();
    let mut seen = BTreeMap::new();
    let where_ = path.display();
    for (name, value) in top {
        if let Value::Dict(_, table) = &value
            && keys().any(|k| k.section == name)
        {
            for (inner, value) in table {
                if let Some(key) = keys().find(|k| k.section == name && k.nested() == inner) {
                    let spelling = format!("[{name}] {inner} in {where_}");
                    check_choice(key, &spelling, value)?;
                    given.set(&mut seen, key, spelling, value.clone())?;
                }
            }
        } else if let Some(key) = keys().find(|k| k.flat == name) {
            let spelling = format!("{name} in {where_}");
            check_choice(key, &spelling, &value)?;
            given.set(&mut seen, key, spelling, value)?;
        }
    }
    Ok(())
}

/// `WHISPERFLEET_<FLAT>` or `WHISPERFLEET_<SECTION>__<NAME>`, typed by the key's kind.
pub(crate) fn env(
    vars: impl IntoIterator<Item = (String, String)>,
    given: &mut Given,
) -> Result<(), ConfigError> {
    let mut seen = BTreeMap::new();
    for (name, raw) in vars {
        if !name.starts_with(ENV_PREFIX) {
            continue;
        }
        let upper = name.to_ascii_uppercase();
        let Some(key) = keys().find(|k| k.env() == upper || k.nested_env() == upper) else {
            continue;
        };
        // `WHISPERFLEET_X=` (as compose files write optional settings) means unset.
        if raw.trim().is_empty() {
            continue;
        }
        // figment's own Env provider would turn a token or id made only of digits into a
        // number and then fail to load it as a string, so env values are typed by key here.
        let value = match key.kind {
            Kind::Text => Value::from(raw),
            Kind::Choice(_) => {
                let value = Value::from(raw);
                check_choice(key, &name, &value)?;
                value
            }
            Kind::Bool => match raw.trim().to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Value::from(true),
                "0" | "false" | "no" | "off" => Value::from(false),
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "{name} must be true or false, not {raw:?}"
                    )));
                }
            },
            Kind::Number => match raw.trim().parse::<u64>() {
                Ok(n) => Value::from(n),
                Err(_) => {
                    return Err(ConfigError::Invalid(format!(
                        "{name} must be a whole number, not {raw:?}"
                    )));
                }
            },
        };
        given.set(&mut seen, key, name, value)?;
    }
    Ok(())
}

/// A choice key's value is one of its choices: "X is "xml"; use plain or json".
fn check_choice(key: &Key, spelling: &str, value: &Value) -> Result<(), ConfigError> {
    let Kind::Choice(choices) = key.kind else {
        return Ok(());
    };
    if value.as_str().is_some_and(|v| choices.contains(&v)) {
        return Ok(());
    }
    let shown = match value.as_str() {
        Some(s) => format!("{s:?}"),
        None => value.to_actual().to_string(),
    };
    let (last, rest) = choices.split_last().expect("a choice key has choices");
    Err(ConfigError::Invalid(format!(
        "{spelling} is {shown}; use {} or {last}",
        rest.join(", ")
    )))
}
