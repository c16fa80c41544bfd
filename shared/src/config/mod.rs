//! Typed, layered configuration by section: built-in defaults < optional TOML file
//! (`whisperfleet.toml`, or the path in `WHISPERFLEET_CONFIG`) < environment.
//!
//! Every key is declared once, in its section's file ([`backends`], [`gateway`], [`discord`],
//! [`worker`], [`metrics`], [`process`]), with its flat name: `history_len` is
//! `WHISPERFLEET_HISTORY_LEN` and `history_len = 20` at the top of the file. By section works
//! too, with the name inside the section (the flat name without the section's prefix):
//! `[worker] history_len = 20`, `WHISPERFLEET_WORKER__HISTORY_LEN` (`__` for nesting),
//! `[worker] concurrency` for `worker_concurrency`.
//!
//! Values are typed: enums for choices, [`Duration`](std::time::Duration)s for `*_ms`/`*_s`
//! keys (given as a number in that unit). Secrets are [`SecretString`]s: their `Debug` prints
//! `[REDACTED]`, and URLs that may carry credentials are shown through [`redact_url`] only.
//!
//! No service URL has a localhost default: unset means "embedded" for `whisperfleet up`/`chat`
//! and "missing" for the standalone binaries, which refuse to start naming the variable.

pub mod api_keys;
pub mod backends;
mod declare;
pub mod discord;
pub mod entries;
pub mod gateway;
mod layers;
pub mod metrics;
pub mod process;
pub mod worker;

use std::path::PathBuf;

use figment::Figment;
use figment::providers::Serialized;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

pub use api_keys::{ApiKey, ApiKeysError};
pub use backends::Backends;
pub use discord::{Discord, FooterMode};
pub use gateway::Gateway;
pub use metrics::Metrics;
pub use process::{LogFormat, Process};
pub use worker::Worker;

use declare::Key;

pub const ENV_PREFIX: &str = "WHISPERFLEET_";

/// Every setting of every service, by section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct Config {
    pub backends: Backends,
    pub gateway: Gateway,
    pub discord: Discord,
    pub worker: Worker,
    pub metrics: Metrics,
    pub process: Process,
}

/// Every declared key, section by section.
fn keys() -> impl Iterator<Item = &'static Key> {
    [
        Backends::KEYS,
        Gateway::KEYS,
        Discord::KEYS,
        Worker::KEYS,
        Metrics::KEYS,
        Process::KEYS,
    ]
    .into_iter()
    .flatten()
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration is invalid: {0}")]
    Invalid(String),
    #[error("{what} needs {var} to be set (e.g. {example})")]
    Missing {
        what: &'static str,
        var: &'static str,
        example: &'static str,
    },
}

impl Config {
    /// Defaults < file < env. The file is `$WHISPERFLEET_CONFIG` or `./whisperfleet.toml`
    /// when present.
    pub fn load() -> Result<Self, ConfigError> {
        let file = std::env::var_os("WHISPERFLEET_CONFIG")
            .map(PathBuf::from)
            .or_else(|| {
                let p = PathBuf::from("whisperfleet.toml");
                p.exists().then_some(p)
            });
        Self::load_from(file, std::env::vars())
    }

    fn load_from(
        file: Option<PathBuf>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let mut given = layers::Given::default();
        if let Some(path) = file {
            layers::file(&path, &mut given)?;
        }
        layers::env(env, &mut given)?;
        // Whatever is not given comes from `Config::default()` through `#[serde(default)]`.
        let cfg: Config = Figment::from(Serialized::defaults(given.into_sections()))
            .extract()
            .map_err(named)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config keys this build reads, by their flat names (used to document and to check
    /// deploy files: `WHISPERFLEET_` + the name upper-cased is the env name).
    pub fn known_keys() -> impl Iterator<Item = &'static str> {
        keys().map(|k| k.flat)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.worker
            .validate()
            .and_then(|()| self.gateway.validate())
            .and_then(|()| self.metrics.validate())
            .and_then(|()| self.discord.validate())
            .map_err(ConfigError::Invalid)
    }

    pub fn require_amqp(&self, what: &'static str) -> Result<&SecretString, ConfigError> {
        self.backends.amqp_url.as_ref().ok_or(ConfigError::Missing {
            what,
            var: "WHISPERFLEET_AMQP_URL",
            example: "amqp://user:pass@rabbitmq:5672/%2f",
        })
    }

    pub fn require_redis(&self, what: &'static str) -> Result<&SecretString, ConfigError> {
        self.backends
            .redis_url
            .as_ref()
            .ok_or(ConfigError::Missing {
                what,
                var: "WHISPERFLEET_REDIS_URL",
                example: "redis://redis:6379",
            })
    }

    pub fn require_database(&self, what: &'static str) -> Result<&SecretString, ConfigError> {
        self.backends
            .database_url
            .as_ref()
            .ok_or(ConfigError::Missing {
                what,
                var: "WHISPERFLEET_DATABASE_URL",
                example: "postgres://whisperfleet@postgres/whisperfleet",
            })
    }

    /// `DATA_DIR`, else the platform's data directory (`$XDG_DATA_HOME/whisperfleet`, else
    /// `~/.local/share/whisperfleet`), else `./.data`.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(d) = &self.backends.data_dir {
            return d.clone();
        }
        if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
            return PathBuf::from(x).join("whisperfleet");
        }
        if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
            return PathBuf::from(h).join(".local/share/whisperfleet");
        }
        PathBuf::from(".data")
    }
}

/// A type error from deserializing, named by the variable of the key it is about.
fn named(e: figment::Error) -> ConfigError {
    let key = match e.path.as_slice() {
        [section, field, ..] => keys().find(|k| k.section == section && k.field == field),
        _ => None,
    };
    match key {
        Some(key) => ConfigError::Invalid(format!("{}: {}", key.env(), e.kind)),
        None => ConfigError::Invalid(e.to_string()),
    }
}

/// A URL with any user info removed, for logs and startup banners.
pub fn redact_url(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let (authority, path) = match rest.find('/') {
                Some(i) => rest.split_at(i),
                None => (rest, ""),
            };
            let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
            // Query strings can carry tokens too.
            let path = path.split('?').next().unwrap_or("");
            format!("{scheme}://{host}{path}")
        }
        None => "<unparseable url>".into(),
    }
}

/// [`redact_url`] of a secret URL.
pub fn redact_secret_url(url: &SecretString) -> String {
    redact_url(url.expose_secret())
}

#[cfg(test)]
mod tests;
