use std::time::Duration;

use super::declare::Kind;
use super::*;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A file with this text, removed when dropped.
struct TempToml(PathBuf);

impl TempToml {
    fn new(text: &str) -> Self {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "wf-config-{}-{}.toml",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&path, text).unwrap();
        Self(path)
    }
}

impl Drop for TempToml {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

impl Config {
    fn debug_key(&self, key: &Key) -> String {
        match key.section {
            "backends" => self.backends.debug_field(key.field),
            "gateway" => self.gateway.debug_field(key.field),
            "discord" => self.discord.debug_field(key.field),
            "worker" => self.worker.debug_field(key.field),
            "metrics" => self.metrics.debug_field(key.field),
            "process" => self.process.debug_field(key.field),
            _ => None,
        }
        .unwrap_or_else(|| panic!("{key:?} names no field"))
    }
}

/// A valid value unlike any default, as env text and as a TOML value.
fn sample(kind: Kind) -> (&'static str, &'static str) {
    match kind {
        Kind::Text => ("abc", "\"abc\""),
        Kind::Number => ("7", "7"),
        Kind::Bool => ("false", "false"),
        Kind::Choice(choices) => match *choices.last().unwrap() {
            "full" => ("full", "\"full\""),
            "json" => ("json", "\"json\""),
            other => panic!("add a sample for {other}"),
        },
    }
}

#[test]
fn defaults_are_valid() {
    let cfg = Config::load_from(None, Vec::new()).unwrap();
    assert_eq!(cfg.gateway.max_text_chars, 4000);
    assert!(
        cfg.backends.amqp_url.is_none(),
        "no localhost default for services"
    );
}

#[test]
fn env_overrides_file_and_digits_stay_strings() {
    let file = TempToml::new(
        "max_text_chars = 10\ngateway_id = \"from-file\"\nhttp_addr = \"0.0.0.0:1\"\n",
    );
    let cfg = Config::load_from(
        Some(file.0.clone()),
        env(&[
            ("WHISPERFLEET_GATEWAY_ID", "12345"),
            ("WHISPERFLEET_LLM_API_KEY", "0123456789"),
            ("WHISPERFLEET_REPLY_TIMEOUT_MS", "1500"),
            ("OTHER_VAR", "ignored"),
        ]),
    )
    .unwrap();
    assert_eq!(cfg.gateway.max_text_chars, 10, "file beats defaults");
    assert_eq!(cfg.gateway.http_addr, "0.0.0.0:1");
    assert_eq!(
        cfg.gateway.id, "12345",
        "env beats file, digits stay a string"
    );
    assert_eq!(cfg.gateway.reply_timeout, Duration::from_millis(1500));
    assert_eq!(
        cfg.backends.llm_api_key.unwrap().expose_secret(),
        "0123456789"
    );
}

#[test]
fn secrets_never_show_in_debug() {
    let cfg = Config::load_from(
        None,
        env(&[
            ("WHISPERFLEET_DISCORD_TOKEN", "super-secret-token-value"),
            ("WHISPERFLEET_AMQP_URL", "amqp://u:hunter2@rabbit:5672/%2f"),
            ("WHISPERFLEET_INFLUX_URL", "http://u:hunter2@influx:8086"),
            ("WHISPERFLEET_LLM_BASE_URL", "http://u:hunter2@llm/v1"),
            ("WHISPERFLEET_EMBEDDINGS_URL", "http://u:hunter2@emb/v1"),
            ("WHISPERFLEET_QDRANT_URL", "http://u:hunter2@qdrant:6334"),
            (
                "WHISPERFLEET_HTTP_API_KEYS",
                "acme=super-secret-api-key-value",
            ),
        ]),
    )
    .unwrap();
    let dbg = format!("{cfg:?}");
    assert!(!dbg.contains("super-secret-token-value"));
    assert!(!dbg.contains("hunter2"));
    assert!(!dbg.contains("super-secret-api-key-value"));
    assert_eq!(
        redact_secret_url(cfg.backends.amqp_url.as_ref().unwrap()),
        "amqp://rabbit:5672/%2f"
    );
}

#[test]
fn every_key_loads_from_env() {
    let pairs = keys().map(|k| (k.env(), sample(k.kind).0.to_string()));
    let cfg = Config::load_from(None, pairs).unwrap();
    assert_eq!(cfg.metrics.batch_size, 7);
    assert_eq!(cfg.discord.character.as_deref(), Some("abc"));
}

/// Each key, alone, in each of its four spellings, lands in its own field; durations in the
/// unit their name says.
#[test]
fn every_key_loads_into_its_field_in_every_spelling() {
    let default = Config::default();
    for key in keys() {
        let (raw, toml) = sample(key.kind);
        // A record TTL of 7 s is only valid with a shorter turn deadline (same section).
        let companion = (key.flat == "turn_record_ttl_s").then_some(("turn_deadline_ms", "1000"));
        let extra_line = companion.map_or(String::new(), |(k, v)| format!("{k} = {v}\n"));
        let file_flat = TempToml::new(&format!("{} = {toml}\n{extra_line}", key.flat));
        let file_nested = TempToml::new(&format!(
            "[{}]\n{} = {toml}\n{extra_line}",
            key.section,
            key.nested()
        ));
        let with = |name: &str| {
            let mut vars = vec![(name.to_string(), raw.to_string())];
            if let Some((k, v)) = companion {
                vars.push((format!("WHISPERFLEET_{}", k.to_uppercase()), v.to_string()));
            }
            vars
        };
        let loads = [
            (key.env(), Config::load_from(None, with(&key.env()))),
            (
                key.nested_env(),
                Config::load_from(None, with(&key.nested_env())),
            ),
            (
                format!("file {}", key.flat),
                Config::load_from(Some(file_flat.0.clone()), Vec::new()),
            ),
            (
                format!("file [{}] {}", key.section, key.nested()),
                Config::load_from(Some(file_nested.0.clone()), Vec::new()),
            ),
        ];
        for (spelling, cfg) in loads {
            let cfg = cfg.unwrap_or_else(|e| panic!("{spelling}: {e}"));
            let got = cfg.debug_key(key);
            assert_ne!(got, default.debug_key(key), "{spelling} did not load");
            if key.flat.ends_with("_ms") {
                assert_eq!(got, "7ms", "{spelling} is in milliseconds");
            } else if key.flat.ends_with("_s") {
                assert_eq!(got, "7s", "{spelling} is in seconds");
            }
        }
    }
}

/// The names are a contract (README, deploy files, operators' environments): a key is
/// never renamed by moving it.
#[test]
fn known_keys_are_todays_names() {
    let mut names: Vec<&str> = Config::known_keys().collect();
    names.sort_unstable();
    let mut today = vec![
        "amqp_url",
        "redis_url",
        "redis_timeout_ms",
        "database_url",
        "database_timeout_ms",
        "qdrant_url",
        "qdrant_timeout_ms",
        "embeddings_timeout_ms",
        "qdrant_api_key",
        "qdrant_collection",
        "llm_base_url",
        "llm_api_key",
        "embeddings_url",
        "embeddings_model",
        "embeddings_api_key",
        "influx_url",
        "influx_org",
        "influx_bucket",
        "influx_token",
        "data_dir",
        "gateway_id",
        "health_addr",
        "redis_prefix",
        "http_addr",
        "http_api_keys",
        "http_api_keys_file",
        "http_rate_requests",
        "http_rate_window_s",
        "http_max_body_bytes",
        "max_text_chars",
        "reply_timeout_ms",
        "privacy_timeout_ms",
        "max_queued_per_conversation",
        "discord_token",
        "discord_character",
        "discord_bots",
        "discord_bots_file",
        "discord_api_base",
        "discord_rate_turns",
        "discord_rate_window_s",
        "discord_footer",
        "discord_stream",
        "discord_admission_depth",
        "discord_typing_interval_ms",
        "worker_concurrency",
        "turn_deadline_ms",
        "delivery_limit",
        "llm_model",
        "llm_timeout_ms",
        "broker_timeout_ms",
        "llm_max_retries",
        "llm_stream_idle_timeout_ms",
        "history_len",
        "prompt_budget_tokens",
        "turn_record_ttl_s",
        "memory_top_k",
        "recent_emotional_states",
        "embeddings_dims",
        "metrics_batch_size",
        "metrics_flush_interval_ms",
        "metrics_sample_interval_ms",
        "metrics_max_pending",
        "influx_gzip",
        "rabbitmq_management_url",
        "log_format",
        "shutdown_grace_ms",
    ];
    today.sort_unstable();
    assert_eq!(names, today);
    // Every spelling names one key only.
    let mut spellings: Vec<String> = keys().flat_map(|k| [k.env(), k.nested_env()]).collect();
    spellings.sort_unstable();
    spellings.dedup();
    assert_eq!(spellings.len(), 2 * today.len());
}

#[test]
fn sections_in_the_file_and_nested_env() {
    let file = TempToml::new(
        "history_len = 3\n[worker]\nconcurrency = 4\n[discord]\nfooter = \"timing\"\n",
    );
    let cfg = Config::load_from(
        Some(file.0.clone()),
        env(&[("WHISPERFLEET_WORKER__HISTORY_LEN", "9")]),
    )
    .unwrap();
    assert_eq!(cfg.worker.concurrency, 4);
    assert_eq!(cfg.worker.history_len, 9, "env beats file in any spelling");
    assert_eq!(cfg.discord.footer, FooterMode::Timing);
}

#[test]
fn one_key_twice_in_one_layer_is_refused() {
    let err = Config::load_from(
        None,
        env(&[
            ("WHISPERFLEET_HISTORY_LEN", "3"),
            ("WHISPERFLEET_WORKER__HISTORY_LEN", "4"),
        ]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("WHISPERFLEET_HISTORY_LEN"), "{err}");
    assert!(err.contains("WHISPERFLEET_WORKER__HISTORY_LEN"), "{err}");
    let file = TempToml::new("history_len = 3\n[worker]\nhistory_len = 4\n");
    let err = Config::load_from(Some(file.0.clone()), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(err.contains("same setting"), "{err}");
}

#[test]
fn choices_load_as_enums() {
    for (raw, mode) in [
        ("off", FooterMode::Off),
        ("timing", FooterMode::Timing),
        ("full", FooterMode::Full),
    ] {
        let cfg = Config::load_from(None, env(&[("WHISPERFLEET_DISCORD_FOOTER", raw)])).unwrap();
        assert_eq!(cfg.discord.footer, mode);
    }
    let cfg = Config::load_from(None, env(&[("WHISPERFLEET_LOG_FORMAT", "json")])).unwrap();
    assert_eq!(cfg.process.log_format, LogFormat::Json);
    assert_eq!(Config::default().discord.footer, FooterMode::Off);
    assert_eq!(Config::default().process.log_format, LogFormat::Plain);
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
    assert!(cfg.backends.llm_base_url.is_none());
    assert_eq!(cfg.worker.history_len, Config::default().worker.history_len);
}

#[test]
fn bad_values_are_named() {
    let err = Config::load_from(None, env(&[("WHISPERFLEET_LOG_FORMAT", "xml")])).unwrap_err();
    assert!(err.to_string().contains("WHISPERFLEET_LOG_FORMAT"));
    assert!(err.to_string().contains("use plain or json"), "{err}");
    let err = Config::load_from(None, env(&[("WHISPERFLEET_DISCORD_FOOTER", "x")])).unwrap_err();
    assert!(
        err.to_string()
            .contains("WHISPERFLEET_DISCORD_FOOTER is \"x\"; use off, timing or full"),
        "{err}"
    );
    let err = Config::load_from(None, env(&[("WHISPERFLEET_HISTORY_LEN", "many")])).unwrap_err();
    assert!(err.to_string().contains("WHISPERFLEET_HISTORY_LEN"));
    let err = Config::load_from(Some("/nonexistent/wf.toml".into()), Vec::new()).unwrap_err();
    assert!(err.to_string().contains("does not exist"));
    // Out of the type's range, or the wrong type in the file: named by the variable too.
    let err =
        Config::load_from(None, env(&[("WHISPERFLEET_WORKER_CONCURRENCY", "70000")])).unwrap_err();
    assert!(
        err.to_string().contains("WHISPERFLEET_WORKER_CONCURRENCY"),
        "{err}"
    );
    let file = TempToml::new("[worker]\nhistory_len = \"many\"\n");
    let err = Config::load_from(Some(file.0.clone()), Vec::new()).unwrap_err();
    assert!(
        err.to_string().contains("WHISPERFLEET_HISTORY_LEN"),
        "{err}"
    );
    let file = TempToml::new("log_format = \"xml\"\n");
    let err = Config::load_from(Some(file.0.clone()), Vec::new()).unwrap_err();
    assert!(err.to_string().contains("log_format in"), "{err}");
}

#[test]
fn validation_messages_name_the_variables() {
    for (var, raw, says) in [
        (
            "WHISPERFLEET_WORKER_CONCURRENCY",
            "0",
            "WHISPERFLEET_WORKER_CONCURRENCY must be at least 1",
        ),
        (
            "WHISPERFLEET_MAX_TEXT_CHARS",
            "0",
            "WHISPERFLEET_MAX_TEXT_CHARS must be at least 1",
        ),
        (
            "WHISPERFLEET_METRICS_MAX_PENDING",
            "0",
            "WHISPERFLEET_METRICS_MAX_PENDING must be at least 1",
        ),
        (
            "WHISPERFLEET_DELIVERY_LIMIT",
            "0",
            "WHISPERFLEET_DELIVERY_LIMIT must be at least 1",
        ),
        (
            "WHISPERFLEET_GATEWAY_ID",
            "a b",
            "WHISPERFLEET_GATEWAY_ID \"a b\" must be non-empty",
        ),
        (
            "WHISPERFLEET_DISCORD_RATE_WINDOW_S",
            "0",
            "WHISPERFLEET_DISCORD_RATE_WINDOW_S must be at least 1",
        ),
        (
            "WHISPERFLEET_HTTP_RATE_WINDOW_S",
            "0",
            "WHISPERFLEET_HTTP_RATE_WINDOW_S must be at least 1",
        ),
        (
            "WHISPERFLEET_HTTP_MAX_BODY_BYTES",
            "0",
            "WHISPERFLEET_HTTP_MAX_BODY_BYTES must be at least 1",
        ),
    ] {
        let err = Config::load_from(None, env(&[(var, raw)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains(says), "{var}={raw}: {err}");
    }
}
