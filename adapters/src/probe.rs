//! What `whisperfleet doctor` asks each configured backend, with the same configuration the
//! services use: is it reachable, which server and version, and is it set up the way the
//! fleet needs (RabbitMQ topology declared and consumed, Redis never evicting, migrations
//! applied, InfluxDB taking writes). One file per backend; each returns [`Check`]s that say
//! in plain words what is wrong and what fixes it (a variable or a command).
//!
//! Probes only look: RabbitMQ is inspected with passive declarations (a missing queue stays
//! missing), the gateway registry is read without pruning it, migrations are compared, not
//! applied. The one write is a harmless `whisperfleet_doctor` point to InfluxDB, because only
//! a write proves the token and bucket work.
//!
//! No check message holds a secret: every message goes through [`scrub`] before it leaves.

use secrecy::{ExposeSecret, SecretString};
use whisperfleet_shared::config::Config;

#[cfg(feature = "influx")]
mod influx;
#[cfg(any(feature = "qdrant", feature = "sqlite"))]
mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "rabbitmq")]
mod rabbitmq;
#[cfg(feature = "redis")]
pub mod redis;

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Works, but an operator should look (no exit status).
    Warn,
    /// Something the fleet needs is wrong: `doctor` exits non-zero.
    Fail,
    /// Not configured (embedded) or not checkable because an earlier check failed.
    Skip,
}

/// One line of the doctor's report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Check {
    /// `rabbitmq`, `redis`, `postgres`, `memory`, `influxdb`, `grafana`.
    pub backend: &'static str,
    /// Short name of what was checked (`reachable`, `topology`, `turns consumers`, …).
    pub check: String,
    pub status: Status,
    /// What was found, in plain words.
    pub message: String,
    /// The variable or command that fixes it (failures and warnings).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    pub fn new(
        backend: &'static str,
        check: impl Into<String>,
        status: Status,
        message: impl Into<String>,
    ) -> Self {
        Self {
            backend,
            check: check.into(),
            status,
            message: message.into(),
            fix: None,
        }
    }

    pub fn ok(backend: &'static str, check: impl Into<String>, message: impl Into<String>) -> Self {
        Self::new(backend, check, Status::Ok, message)
    }

    pub fn fail(
        backend: &'static str,
        check: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(backend, check, Status::Fail, message).with_fix(fix)
    }

    pub fn warn(
        backend: &'static str,
        check: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self::new(backend, check, Status::Warn, message).with_fix(fix)
    }

    pub fn skip(
        backend: &'static str,
        check: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(backend, check, Status::Skip, message)
    }

    pub fn with_fix(mut self, fix: impl Into<String>) -> Self {
        self.fix = Some(fix.into());
        self
    }
}

/// A check for a backend this build cannot talk to.
#[allow(dead_code)]
fn not_built(backend: &'static str, feature: &str) -> Check {
    Check::fail(
        backend,
        "reachable",
        format!("this build has no {backend} support"),
        format!("build with the `{feature}` feature of whisperfleet-adapters"),
    )
}

/// Every backend the configuration names, in the order an operator reads them: broker,
/// cache, database, vector memory, metrics.
pub async fn all(config: &Config) -> Vec<Check> {
    let mut out = Vec::new();
    // The gateway registry lives in Redis; the reply queues it names are RabbitMQ's.
    #[cfg(feature = "redis")]
    let (redis_checks, gateways) = match &config.backends.redis_url {
        Some(url) => redis::checks(config, url).await,
        None => (Vec::new(), None),
    };
    #[cfg(not(feature = "redis"))]
    let (redis_checks, gateways): (Vec<Check>, Option<Vec<String>>) = (Vec::new(), None);

    match &config.backends.amqp_url {
        None => out.push(Check::skip(
            "rabbitmq",
            "configured",
            "WHISPERFLEET_AMQP_URL is not set: only `whisperfleet up`/`chat` run (on the \
             in-process broker); gateway, worker and metrics-writer need it",
        )),
        Some(url) => {
            #[cfg(feature = "rabbitmq")]
            out.extend(rabbitmq::checks(config, url, gateways.as_deref()).await);
            #[cfg(not(feature = "rabbitmq"))]
            {
                let _ = (url, &gateways);
                out.push(not_built("rabbitmq", "rabbitmq"));
            }
        }
    }

    match &config.backends.redis_url {
        None => out.push(Check::skip(
            "redis",
            "configured",
            "WHISPERFLEET_REDIS_URL is not set: only `whisperfleet up`/`chat` run (on the \
             in-process cache); gateway and worker need it",
        )),
        Some(_) if cfg!(not(feature = "redis")) => out.push(not_built("redis", "redis")),
        Some(_) => out.extend(redis_checks),
    }

    match &config.backends.database_url {
        None => out.push(Check::skip(
            "postgres",
            "configured",
            format!(
                "WHISPERFLEET_DATABASE_URL is not set: characters live in the embedded SQLite \
                 store under {}; the worker needs PostgreSQL",
                config.data_dir().display()
            ),
        )),
        Some(url) => {
            #[cfg(feature = "postgres")]
            out.extend(postgres::checks(config, url).await);
            #[cfg(not(feature = "postgres"))]
            {
                let _ = url;
                out.push(not_built("postgres", "postgres"));
            }
        }
    }

    #[cfg(any(feature = "qdrant", feature = "sqlite"))]
    out.extend(memory::checks(config).await);

    match &config.backends.influx_url {
        None => out.push(Check::skip(
            "influxdb",
            "configured",
            "WHISPERFLEET_INFLUX_URL is not set: `up`/`chat` append metrics to metrics.lp in \
             the data directory; the metrics-writer needs InfluxDB",
        )),
        Some(url) => {
            #[cfg(feature = "influx")]
            out.extend(influx::checks(config, url).await);
            #[cfg(not(feature = "influx"))]
            {
                let _ = url;
                out.push(not_built("influxdb", "influx"));
            }
        }
    }

    let secrets = secrets(config);
    for c in &mut out {
        c.message = scrub(&c.message, &secrets);
        if let Some(f) = &mut c.fix {
            *f = scrub(f, &secrets);
        }
    }
    out
}

/// Every secret the configuration holds, and the passwords inside its URLs.
fn secrets(config: &Config) -> Vec<String> {
    let b = &config.backends;
    let mut out = Vec::new();
    let all: [&Option<SecretString>; 9] = [
        &b.amqp_url,
        &b.redis_url,
        &b.database_url,
        &b.qdrant_url,
        &b.qdrant_api_key,
        &b.llm_api_key,
        &b.embeddings_api_key,
        &b.influx_url,
        &b.influx_token,
    ];
    for s in all.into_iter().flatten() {
        let s = s.expose_secret();
        if let Some(pw) = url_password(s) {
            out.push(pw);
        }
    }
    for s in [
        &b.qdrant_api_key,
        &b.llm_api_key,
        &b.embeddings_api_key,
        &b.influx_token,
    ]
    .into_iter()
    .flatten()
    {
        out.push(s.expose_secret().to_string());
    }
    out.retain(|s| s.len() >= 3);
    out
}

/// The password in `scheme://user:password@host…`, as written and percent-decoded.
fn url_password(url: &str) -> Option<String> {
    let (_, rest) = url.split_once("://")?;
    let authority = &rest[..rest.find('/').unwrap_or(rest.len())];
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, pw) = userinfo.split_once(':')?;
    (!pw.is_empty()).then(|| pw.to_string())
}

/// `text` with every secret replaced by `***`.
pub fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        out = out.replace(s.as_str(), "***");
    }
    out
}

/// `host:port` of a URL, for messages (never its user info).
#[allow(dead_code)]
fn host_port(url: &str, default_port: u16) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = &rest[..rest.find(['/', '?']).unwrap_or(rest.len())];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host.contains(':') && !host.ends_with(']') {
        host.to_string()
    } else {
        format!("{host}:{default_port}")
    }
}

/// Plain words for a connection failure: "connection refused at 127.0.0.1:5673".
#[allow(dead_code)]
fn io_words(e: &std::io::Error, at: &str) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => format!("connection refused at {at}"),
        ConnectionReset | ConnectionAborted | UnexpectedEof | BrokenPipe => {
            format!("{at} closed the connection")
        }
        TimedOut => format!("no answer from {at}"),
        _ => format!("cannot reach {at}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_scrubbed_and_hosts_shown_without_user_info() {
        assert_eq!(
            url_password("amqp://guest:s3cr%2Ft@h:5672/v").as_deref(),
            Some("s3cr%2Ft")
        );
        assert_eq!(url_password("redis://h:6379"), None);
        assert_eq!(
            scrub("bad auth for s3cret at h", &["s3cret".into()]),
            "bad auth for *** at h"
        );
        assert_eq!(
            host_port("amqp://u:p@127.0.0.1:5673/v", 5672),
            "127.0.0.1:5673"
        );
        assert_eq!(host_port("redis://redis", 6379), "redis:6379");
    }
}
