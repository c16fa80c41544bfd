//! Typed, layered configuration: built-in defaults < optional TOML file (`whisperfleet.toml`,
//! or the path in `WHISPERFLEET_CONFIG`) < environment (`WHISPERFLEET_<NAME>`, `__` for
//! nesting). Secrets are [`SecretString`]s: their `Debug` prints `[REDACTED]`, and URLs that
//! may carry credentials are shown through [`redact_url`] only.
//!
//! No service URL has a localhost default: unset means "embedded" for `whisperfleet up`/`chat`
//! and "missing" for the standalone binaries, which refuse to start naming the variable.

use std::path::PathBuf;
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use figment::value::Value;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

pub const ENV_PREFIX: &str = "WHISPERFLEET_";

/// Every setting of every service, flat so each has one obvious env name
/// (`WHISPERFLEET_` + the field name in upper case).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct Config {
    // --- backends (unset = embedded in `up`/`chat`, refused by standalone binaries) ---
    pub amqp_url: Option<SecretString>,
    pub redis_url: Option<SecretString>,
    pub database_url: Option<SecretString>,
    pub qdrant_url: Option<String>,
    pub qdrant_api_key: Option<SecretString>,
    /// The one collection all characters' memories share (multi-tenant by payload).
    pub qdrant_collection: String,
    pub llm_base_url: Option<String>,
    pub llm_api_key: Option<SecretString>,
    pub embeddings_url: Option<String>,
    pub embeddings_model: Option<String>,
    pub embeddings_api_key: Option<SecretString>,
    pub influx_url: Option<String>,
    pub influx_org: String,
    pub influx_bucket: String,
    pub influx_token: Option<SecretString>,
    /// Where embedded state (SQLite, metrics file) lives.
    pub data_dir: Option<PathBuf>,

    // --- identity and naming ---
    /// Stable id of a gateway instance; its reply queue is `replies.<gateway_id>`.
    pub gateway_id: String,
    /// Prefix of every Redis key this fleet writes (lets fleets/tests share one Redis).
    pub redis_prefix: String,

    // --- gateway ---
    pub http_addr: String,
    pub max_text_chars: usize,
    pub reply_timeout_ms: u64,
    /// Turns of one conversation waiting behind the one in flight before we answer "slow down".
    pub max_queued_per_conversation: usize,
    pub discord_token: Option<SecretString>,
    pub discord_character: Option<String>,
    pub discord_bots: Option<SecretString>,
    pub discord_bots_file: Option<PathBuf>,
    pub discord_api_base: String,
    /// Per-user token bucket: at most this many turns per `discord_rate_window_s`.
    pub discord_rate_turns: u32,
    pub discord_rate_window_s: u64,
    /// `off`, `timing` (end-to-end, LLM, overhead ms) or `full` (every stage).
    pub discord_footer: String,
    /// Ready turns in the `turns` queue above which new users are told the fleet is busy.
    pub discord_admission_depth: u64,
    /// Renewal period of the typing indicator (Discord shows it for ~10 s).
    pub discord_typing_interval_ms: u64,

    // --- worker ---
    /// Turns one worker process runs at once (its AMQP prefetch).
    pub worker_concurrency: u16,
    /// A turn older than this when a worker starts it is answered with an apology.
    pub turn_deadline_ms: u64,
    /// Deliveries of one turn before RabbitMQ dead-letters it (`x-delivery-limit`).
    pub delivery_limit: u32,
    pub llm_model: String,
    pub llm_timeout_ms: u64,
    pub llm_max_retries: u32,
    /// Messages (user + assistant) of short-term history kept per conversation.
    pub history_len: usize,
    /// Rough prompt budget in tokens (chars / 4).
    pub prompt_budget_tokens: usize,
    /// How long side-effect records (`turn:<id>:…`) live; must outlive any backlog.
    pub turn_record_ttl_s: u64,
    pub memory_top_k: usize,
    /// Recent emotional states (the trajectory) fetched once per turn.
    pub recent_emotional_states: usize,
    /// Vector length of the embedder (built-in: 384; must match the model when
    /// `EMBEDDINGS_URL` is set).
    pub embeddings_dims: usize,

    // --- metrics-writer ---
    pub metrics_batch_size: usize,
    pub metrics_flush_interval_ms: u64,
    pub metrics_sample_interval_ms: u64,
    /// Metric events held unacked (waiting for a successful write) before consumption
    /// pauses: the writer's memory bound while InfluxDB is down.
    pub metrics_max_pending: u16,
    /// Gzip write bodies (InfluxDB and victoria-metrics accept `Content-Encoding: gzip`).
    pub influx_gzip: bool,
    /// RabbitMQ management API (e.g. `http://user:pass@rabbitmq:15672`), for unacked counts.
    pub rabbitmq_management_url: Option<SecretString>,

    // --- process ---
    /// `plain` or `json`.
    pub log_format: String,
    /// Time in-flight work gets to finish after SIGTERM/SIGINT.
    pub shutdown_grace_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            amqp_url: None,
            redis_url: None,
            database_url: None,
            qdrant_url: None,
            qdrant_api_key: None,
            qdrant_collection: "whisperfleet_memories".into(),
            llm_base_url: None,
            llm_api_key: None,
            embeddings_url: None,
            embeddings_model: None,
            embeddings_api_key: None,
            influx_url: None,
            influx_org: "whisperfleet".into(),
            influx_bucket: "whisperfleet".into(),
            influx_token: None,
            data_dir: None,
            gateway_id: default_gateway_id(),
            redis_prefix: "wf:".into(),
            http_addr: "127.0.0.1:8080".into(),
            max_text_chars: 4000,
            reply_timeout_ms: 60_000,
            max_queued_per_conversation: 16,
            discord_token: None,
            discord_character: None,
            discord_bots: None,
            discord_bots_file: None,
            discord_api_base: "https://discord.com".into(),
            discord_rate_turns: 5,
            discord_rate_window_s: 30,
            discord_footer: "off".into(),
            discord_admission_depth: 500,
            discord_typing_interval_ms: 8000,
            worker_concurrency: 16,
            turn_deadline_ms: 120_000,
            delivery_limit: 5,
            llm_model: "openai/gpt-4o-mini".into(),
            llm_timeout_ms: 30_000,
            llm_max_retries: 2,
            history_len: 20,
            prompt_budget_tokens: 6_000,
            turn_record_ttl_s: 86_400,
            memory_top_k: 8,
            recent_emotional_states: 10,
            embeddings_dims: 384,
            metrics_batch_size: 5_000,
            metrics_flush_interval_ms: 100,
            metrics_sample_interval_ms: 5_000,
            metrics_max_pending: 10_000,
            influx_gzip: true,
            rabbitmq_management_url: None,
            log_format: "plain".into(),
            shutdown_grace_ms: 30_000,
        }
    }
}

/// The host name, so a gateway restarted on the same host finds its reply queue again.
fn default_gateway_id() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "gateway".into())
}

enum Kind {
    Text,
    Number,
    Bool,
}

/// Every key, with how its env value is read. Keep in step with [`Config`]'s fields (a test
/// checks that each key loads).
const KEYS: &[(&str, Kind)] = &[
    ("amqp_url", Kind::Text),
    ("redis_url", Kind::Text),
    ("database_url", Kind::Text),
    ("qdrant_url", Kind::Text),
    ("qdrant_api_key", Kind::Text),
    ("qdrant_collection", Kind::Text),
    ("llm_base_url", Kind::Text),
    ("llm_api_key", Kind::Text),
    ("embeddings_url", Kind::Text),
    ("embeddings_model", Kind::Text),
    ("embeddings_api_key", Kind::Text),
    ("influx_url", Kind::Text),
    ("influx_org", Kind::Text),
    ("influx_bucket", Kind::Text),
    ("influx_token", Kind::Text),
    ("data_dir", Kind::Text),
    ("gateway_id", Kind::Text),
    ("redis_prefix", Kind::Text),
    ("http_addr", Kind::Text),
    ("max_text_chars", Kind::Number),
    ("reply_timeout_ms", Kind::Number),
    ("max_queued_per_conversation", Kind::Number),
    ("discord_token", Kind::Text),
    ("discord_character", Kind::Text),
    ("discord_bots", Kind::Text),
    ("discord_bots_file", Kind::Text),
    ("discord_api_base", Kind::Text),
    ("discord_rate_turns", Kind::Number),
    ("discord_rate_window_s", Kind::Number),
    ("discord_footer", Kind::Text),
    ("discord_admission_depth", Kind::Number),
    ("discord_typing_interval_ms", Kind::Number),
    ("worker_concurrency", Kind::Number),
    ("turn_deadline_ms", Kind::Number),
    ("delivery_limit", Kind::Number),
    ("llm_model", Kind::Text),
    ("llm_timeout_ms", Kind::Number),
    ("llm_max_retries", Kind::Number),
    ("history_len", Kind::Number),
    ("prompt_budget_tokens", Kind::Number),
    ("turn_record_ttl_s", Kind::Number),
    ("memory_top_k", Kind::Number),
    ("recent_emotional_states", Kind::Number),
    ("embeddings_dims", Kind::Number),
    ("metrics_batch_size", Kind::Number),
    ("metrics_flush_interval_ms", Kind::Number),
    ("metrics_sample_interval_ms", Kind::Number),
    ("metrics_max_pending", Kind::Number),
    ("influx_gzip", Kind::Bool),
    ("rabbitmq_management_url", Kind::Text),
    ("log_format", Kind::Text),
    ("shutdown_grace_ms", Kind::Number),
];

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

/// Empty base layer: the defaults come from `Config::default()` through `#[serde(default)]`.
#[derive(Serialize)]
struct Nothing {}

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
        let mut fig = Figment::from(Serialized::defaults(Nothing {}));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!(
                    "config file {} does not exist",
                    path.display()
                )));
            }
            fig = fig.merge(Toml::file(path));
        }
        // figment's own Env provider would turn a token or id made only of digits into a
        // number and then fail to load it as a string, so env values are typed by field here.
        let mut layer = figment::value::Dict::new();
        for (name, raw) in env {
            let Some(key) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let key = key.to_ascii_lowercase();
            let Some((_, kind)) = KEYS.iter().find(|(k, _)| *k == key) else {
                continue;
            };
            // `WHISPERFLEET_X=` (as compose files write optional settings) means unset.
            if raw.trim().is_empty() {
                continue;
            }
            let value = match kind {
                Kind::Text => Value::from(raw),
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
            layer.insert(key, value);
        }
        let cfg: Config = fig
            .merge(Serialized::defaults(layer))
            .extract()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config keys this build reads (used to document and to check deploy files).
    pub fn known_keys() -> impl Iterator<Item = &'static str> {
        KEYS.iter().map(|(k, _)| *k)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.worker_concurrency == 0 {
            return bad("WHISPERFLEET_WORKER_CONCURRENCY must be at least 1".into());
        }
        if self.max_text_chars == 0 {
            return bad("WHISPERFLEET_MAX_TEXT_CHARS must be at least 1".into());
        }
        if self.metrics_batch_size == 0 || self.metrics_max_pending == 0 {
            return bad(
                "WHISPERFLEET_METRICS_BATCH_SIZE and WHISPERFLEET_METRICS_MAX_PENDING must be at least 1"
                    .into(),
            );
        }
        if self.delivery_limit == 0 {
            return bad("WHISPERFLEET_DELIVERY_LIMIT must be at least 1".into());
        }
        if self.gateway_id.is_empty()
            || !self
                .gateway_id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return bad(format!(
                "WHISPERFLEET_GATEWAY_ID {:?} must be non-empty ASCII letters, digits, '-', '_' or '.'",
                self.gateway_id
            ));
        }
        if !matches!(self.discord_footer.as_str(), "off" | "timing" | "full") {
            return bad(format!(
                "WHISPERFLEET_DISCORD_FOOTER is {:?}; use off, timing or full",
                self.discord_footer
            ));
        }
        if self.discord_rate_turns == 0 || self.discord_rate_window_s == 0 {
            return bad(
                "WHISPERFLEET_DISCORD_RATE_TURNS and WHISPERFLEET_DISCORD_RATE_WINDOW_S must be at least 1"
                    .into(),
            );
        }
        if !matches!(self.log_format.as_str(), "plain" | "json") {
            return bad(format!(
                "WHISPERFLEET_LOG_FORMAT is {:?}; use plain or json",
                self.log_format
            ));
        }
        Ok(())
    }

    pub fn require_amqp(&self, what: &'static str) -> Result<&SecretString, ConfigError> {
        self.amqp_url.as_ref().ok_or(ConfigError::Missing {
            what,
            var: "WHISPERFLEET_AMQP_URL",
            example: "amqp://user:pass@rabbitmq:5672/%2f",
        })
    }

    pub fn require_redis(&self, what: &'static str) -> Result<&SecretString, ConfigError> {
        self.redis_url.as_ref().ok_or(ConfigError::Missing {
            what,
            var: "WHISPERFLEET_REDIS_URL",
            example: "redis://redis:6379",
        })
    }

    pub fn require_database(&self, what: &'static str) -> Result<&SecretString, ConfigError> {
        self.database_url.as_ref().ok_or(ConfigError::Missing {
            what,
            var: "WHISPERFLEET_DATABASE_URL",
            example: "postgres://whisperfleet@postgres/whisperfleet",
        })
    }

    /// `DATA_DIR`, else the platform's data directory (`$XDG_DATA_HOME/whisperfleet`, else
    /// `~/.local/share/whisperfleet`), else `./.data`.
    pub fn data_dir(&self) -> PathBuf {
        if let Some(d) = &self.data_dir {
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

    pub fn reply_timeout(&self) -> Duration {
        Duration::from_millis(self.reply_timeout_ms)
    }

    pub fn shutdown_grace(&self) -> Duration {
        Duration::from_millis(self.shutdown_grace_ms)
    }

    pub fn turn_deadline(&self) -> Duration {
        Duration::from_millis(self.turn_deadline_ms)
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
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let cfg = Config::load_from(None, Vec::new()).unwrap();
        assert_eq!(cfg.max_text_chars, 4000);
        assert!(cfg.amqp_url.is_none(), "no localhost default for services");
    }

    #[test]
    fn env_overrides_file_and_digits_stay_strings() {
        let file = std::env::temp_dir().join(format!("wf-config-{}.toml", std::process::id()));
        std::fs::write(
            &file,
            "max_text_chars = 10\ngateway_id = \"from-file\"\nhttp_addr = \"0.0.0.0:1\"\n",
        )
        .unwrap();
        let cfg = Config::load_from(
            Some(file.clone()),
            env(&[
                ("WHISPERFLEET_GATEWAY_ID", "12345"),
                ("WHISPERFLEET_LLM_API_KEY", "0123456789"),
                ("WHISPERFLEET_REPLY_TIMEOUT_MS", "1500"),
                ("OTHER_VAR", "ignored"),
            ]),
        )
        .unwrap();
        std::fs::remove_file(file).unwrap();
        assert_eq!(cfg.max_text_chars, 10, "file beats defaults");
        assert_eq!(cfg.http_addr, "0.0.0.0:1");
        assert_eq!(
            cfg.gateway_id, "12345",
            "env beats file, digits stay a string"
        );
        assert_eq!(cfg.reply_timeout_ms, 1500);
        assert_eq!(cfg.llm_api_key.unwrap().expose_secret(), "0123456789");
    }

    #[test]
    fn secrets_never_show_in_debug() {
        let cfg = Config::load_from(
            None,
            env(&[
                ("WHISPERFLEET_DISCORD_TOKEN", "super-secret-token-value"),
                ("WHISPERFLEET_AMQP_URL", "amqp://u:hunter2@rabbit:5672/%2f"),
            ]),
        )
        .unwrap();
        let dbg = format!("{cfg:?}");
        assert!(!dbg.contains("super-secret-token-value"));
        assert!(!dbg.contains("hunter2"));
        assert_eq!(
            redact_secret_url(cfg.amqp_url.as_ref().unwrap()),
            "amqp://rabbit:5672/%2f"
        );
    }

    #[test]
    fn every_key_loads_from_env() {
        let pairs = KEYS.iter().map(|(k, kind)| {
            let v = match kind {
                Kind::Text if *k == "log_format" => "json",
                Kind::Text if *k == "discord_footer" => "timing",
                Kind::Text => "abc",
                Kind::Number => "7",
                Kind::Bool => "false",
            };
            (format!("{ENV_PREFIX}{}", k.to_uppercase()), v.to_string())
        });
        let cfg = Config::load_from(None, pairs).unwrap();
        assert_eq!(cfg.metrics_batch_size, 7);
        assert_eq!(cfg.discord_character.as_deref(), Some("abc"));
    }

    #[test]
    fn empty_values_mean_unset() {
        let cfg = Config::load_from(
            None,
            env(&[
                ("WHISPERFLEET_LLM_BASE_URL", ""),
                ("WHISPERFLEET_HISTORY_LEN", " "),
            ]),
        )
        .unwrap();
        assert!(cfg.llm_base_url.is_none());
        assert_eq!(cfg.history_len, Config::default().history_len);
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::load_from(None, env(&[("WHISPERFLEET_LOG_FORMAT", "xml")])).unwrap_err();
        assert!(err.to_string().contains("WHISPERFLEET_LOG_FORMAT"));
        let err =
            Config::load_from(None, env(&[("WHISPERFLEET_HISTORY_LEN", "many")])).unwrap_err();
        assert!(err.to_string().contains("WHISPERFLEET_HISTORY_LEN"));
        let err = Config::load_from(Some("/nonexistent/wf.toml".into()), Vec::new()).unwrap_err();
        assert!(err.to_string().contains("does not exist"));
    }
}
