//! How a configuration key is declared: one line in a section's [`section!`] block gives the
//! field, its type, its default, its doc and its flat name (`history_len`, read from
//! `WHISPERFLEET_HISTORY_LEN`); how its env value is read follows from the type
//! ([`Setting`]). The loader ([`super::layers`]) and `known_keys` read the generated tables.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::{Deserialize, Deserializer};

use super::ENV_PREFIX;

/// How a raw env value becomes a config value (TOML values are already typed).
#[derive(Debug, Clone, Copy)]
pub(crate) enum Kind {
    Text,
    Number,
    Bool,
    /// Text that must be one of these (an enum's serde names).
    Choice(&'static [&'static str]),
}

/// A field type's [`Kind`], so a key's declaration does not repeat it.
pub(crate) trait Setting {
    const KIND: Kind;
}

macro_rules! kinds {
    ($kind:ident: $($ty:ty),*) => { $(impl Setting for $ty { const KIND: Kind = Kind::$kind; })* };
}
kinds!(Text: String, PathBuf, SecretString);
kinds!(Number: u16, u32, u64, usize, Duration);
kinds!(Bool: bool);

impl<T: Setting> Setting for Option<T> {
    const KIND: Kind = T::KIND;
}

/// One declared key.
#[derive(Debug)]
pub(crate) struct Key {
    /// The section it belongs to (`worker`), the field of [`super::Config`] holding it.
    pub section: &'static str,
    /// The Rust field inside the section.
    pub field: &'static str,
    /// Today's flat name: the file key and, upper-cased after `WHISPERFLEET_`, the env name.
    pub flat: &'static str,
    pub kind: Kind,
}

impl Key {
    /// The name inside its section (`[worker] history_len`, `WHISPERFLEET_WORKER__HISTORY_LEN`):
    /// the flat name without the section's own prefix (`worker_concurrency` is
    /// `[worker] concurrency`).
    pub fn nested(&self) -> &'static str {
        self.flat
            .strip_prefix(self.section)
            .and_then(|rest| rest.strip_prefix('_'))
            .unwrap_or(self.flat)
    }

    /// `WHISPERFLEET_HISTORY_LEN`.
    pub fn env(&self) -> String {
        format!("{ENV_PREFIX}{}", self.flat.to_ascii_uppercase())
    }

    /// `WHISPERFLEET_WORKER__HISTORY_LEN`.
    pub fn nested_env(&self) -> String {
        format!(
            "{ENV_PREFIX}{}__{}",
            self.section.to_ascii_uppercase(),
            self.nested().to_ascii_uppercase()
        )
    }
}

/// Declares one section: its struct (every field `pub`, docs kept), its `Default`, and its
/// key table `KEYS`. A key is one entry: `/// doc`, optional `#[serde(..)]`, then
/// `field: Type = default => "flat_name",`.
macro_rules! section {
    (
        $(#[$meta:meta])*
        pub struct $name:ident in $section:literal {
            $(
                $(#[$attr:meta])*
                $field:ident : $ty:ty = $default:expr => $flat:literal,
            )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, serde::Deserialize)]
        #[serde(default)]
        pub struct $name {
            $(
                $(#[$attr])*
                pub $field: $ty,
            )*
        }

        impl Default for $name {
            fn default() -> Self {
                Self { $($field: $default,)* }
            }
        }

        impl $name {
            /// This section's keys, in declaration order.
            pub(crate) const KEYS: &'static [$crate::config::declare::Key] = &[$(
                $crate::config::declare::Key {
                    section: $section,
                    field: stringify!($field),
                    flat: $flat,
                    kind: <$ty as $crate::config::declare::Setting>::KIND,
                },
            )*];

            /// The `Debug` text of one field, by name (tests check each key lands in its own
            /// field).
            #[cfg(test)]
            pub(crate) fn debug_field(&self, field: &str) -> Option<String> {
                match field {
                    $(stringify!($field) => Some(format!("{:?}", self.$field)),)*
                    _ => None,
                }
            }
        }
    };
}
pub(crate) use section;

/// A duration given in milliseconds (`*_ms` keys).
pub(crate) fn millis<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

/// A duration given in seconds (`*_s` keys).
pub(crate) fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_secs)
}
