//! The one place that turns configuration into connected ports, used by the gateway, the
//! worker, the metrics-writer and the CLI (`up`, `chat`, `bench`, `characters`, `memory`).
//!
//! Each port is picked on its own: the configured service when its URL is set; otherwise
//! the embedded implementation when the caller runs everything in one process
//! ([`Missing::Embedded`]), or a [`ConnectError::Missing`] naming the variable when it is a
//! standalone binary ([`Missing::Refuse`]). A backend whose cargo feature this build lacks is
//! [`ConnectError::NotBuilt`], so a binary links only what it can use.

use std::sync::Arc;

use secrecy::ExposeSecret;
use whisperfleet_shared::config::{Config, ConfigError};
use whisperfleet_shared::ports::{
    Broker, Cache, CharacterStore, Embedder, Llm, MemoryPorts, MetricsSink, VectorMemory,
};
use whisperfleet_shared::topology::TopologySettings;

/// What to do when a port's URL is not configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// Standalone binaries: refuse to start, naming the variable.
    Refuse,
    /// `whisperfleet up`/`chat`/`bench`: the embedded implementation, state under the data
    /// directory.
    Embedded,
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// A required URL is not set or cannot be used (not retryable: fix the configuration).
    #[error(transparent)]
    Missing(#[from] ConfigError),
    /// The configuration asks for a backend this binary was built without.
    #[error(
        "{port}: this build has no {backend} support (cargo feature `{feature}` of whisperfleet-adapters)"
    )]
    NotBuilt {
        port: &'static str,
        backend: &'static str,
        feature: &'static str,
    },
    /// The backend could not be opened or reached.
    #[error("{what}")]
    Backend {
        what: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ConnectError {
    fn backend(what: impl Into<String>, e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Backend {
            what: what.into(),
            source: Box::new(e),
        }
    }
}

// Unused in a build with every feature on.
#[allow(dead_code)]
fn not_built(port: &'static str, backend: &'static str, feature: &'static str) -> ConnectError {
    ConnectError::NotBuilt {
        port,
        backend,
        feature,
    }
}

/// The broker: RabbitMQ when `AMQP_URL` is set. `client` names the connection in
/// RabbitMQ's management view (`<client>@<gateway id>`).
pub async fn broker(
    config: &Config,
    client: &str,
    missing: Missing,
) -> Result<Arc<dyn Broker>, ConnectError> {
    let topology = TopologySettings::from_config(config);
    match (&config.backends.amqp_url, missing) {
        (Some(url), _) => {
            #[cfg(feature = "rabbitmq")]
            {
                let b = crate::broker::rabbitmq::RabbitBroker::connect(
                    url.clone(),
                    &format!("{client}@{}", config.gateway.id),
                    topology,
                    config.backends.broker_timeout,
                )
                .await
                .map_err(|e| {
                    ConnectError::backend("connecting to RabbitMQ (WHISPERFLEET_AMQP_URL)", e)
                })?;
                Ok(b)
            }
            #[cfg(not(feature = "rabbitmq"))]
            {
                let _ = (url, client, topology);
                Err(not_built("broker", "RabbitMQ", "rabbitmq"))
            }
        }
        (None, Missing::Refuse) => Err(config.require_amqp(describe(client)).unwrap_err().into()),
        (None, Missing::Embedded) => {
            #[cfg(feature = "embedded")]
            {
                Ok(crate::broker::embedded::EmbeddedBroker::new(topology))
            }
            #[cfg(not(feature = "embedded"))]
            {
                Err(not_built("broker", "embedded", "embedded"))
            }
        }
    }
}

/// The cache: Redis when `REDIS_URL` is set (connected lazily, so a process starts while
/// Redis is down and runs degraded until it is back).
pub fn cache(
    config: &Config,
    client: &str,
    missing: Missing,
) -> Result<Arc<dyn Cache>, ConnectError> {
    match (&config.backends.redis_url, missing) {
        (Some(url), _) => {
            #[cfg(feature = "redis")]
            {
                let c = crate::cache::redis::RedisCache::new(
                    url.clone(),
                    &config.backends.redis_prefix,
                    config.backends.redis_timeout,
                )
                .map_err(|e| ConnectError::backend("opening Redis (WHISPERFLEET_REDIS_URL)", e))?;
                Ok(Arc::new(c))
            }
            #[cfg(not(feature = "redis"))]
            {
                let _ = url;
                Err(not_built("cache", "Redis", "redis"))
            }
        }
        (None, Missing::Refuse) => Err(config.require_redis(describe(client)).unwrap_err().into()),
        (None, Missing::Embedded) => {
            #[cfg(feature = "embedded")]
            {
                Ok(Arc::new(crate::cache::embedded::EmbeddedCache::new()))
            }
            #[cfg(not(feature = "embedded"))]
            {
                Err(not_built("cache", "embedded", "embedded"))
            }
        }
    }
}

/// The broker only when `AMQP_URL` is set: for commands that tell a running fleet about a
/// change when there is one (`characters import`), and need no embedded broker of their own.
pub async fn configured_broker(
    config: &Config,
    client: &str,
) -> Result<Option<Arc<dyn Broker>>, ConnectError> {
    match config.backends.amqp_url {
        Some(_) => Ok(Some(broker(config, client, Missing::Refuse).await?)),
        None => Ok(None),
    }
}

/// Redis only when `REDIS_URL` is set: a per-process cache would hold nothing a command
/// could use or clean up.
pub fn configured_cache(
    config: &Config,
    client: &str,
) -> Result<Option<Arc<dyn Cache>>, ConnectError> {
    match config.backends.redis_url {
        Some(_) => Ok(Some(cache(config, client, Missing::Refuse)?)),
        None => Ok(None),
    }
}

/// Whether a failed migration stops the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrations {
    /// Commands and `up`: a store that cannot be migrated is an error.
    Required,
    /// The standalone worker: start anyway, turns get fallbacks until the database is back.
    BestEffort,
}

/// The character store: PostgreSQL when `DATABASE_URL` is set, else (embedded) SQLite in the
/// data directory.
pub async fn characters(
    config: &Config,
    client: &str,
    missing: Missing,
    migrations: Migrations,
) -> Result<Arc<dyn CharacterStore>, ConnectError> {
    match (&config.backends.database_url, missing) {
        (Some(url), _) => {
            #[cfg(feature = "postgres")]
            {
                let store = crate::characters::postgres::PgCharacterStore::connect(
                    url.clone(),
                    // Turns touch PostgreSQL briefly (relationship row, a rare character
                    // load): a few connections serve many turns, and a fleet of workers must
                    // stay well under the server's max_connections.
                    u32::from(config.worker.concurrency).clamp(2, 8),
                    config.backends.database_timeout,
                )
                .await
                .map_err(|e| {
                    ConnectError::backend("opening PostgreSQL (WHISPERFLEET_DATABASE_URL)", e)
                })?;
                if let Err(e) = store.migrate().await {
                    match migrations {
                        Migrations::Required => {
                            return Err(ConnectError::backend("applying migrations", e));
                        }
                        Migrations::BestEffort => tracing::warn!(
                            error = %e,
                            "could not apply migrations now; turns will get fallbacks until the database is back"
                        ),
                    }
                }
                Ok(Arc::new(store))
            }
            #[cfg(not(feature = "postgres"))]
            {
                let _ = (url, migrations);
                Err(not_built("characters", "PostgreSQL", "postgres"))
            }
        }
        (None, Missing::Refuse) => Err(config
            .require_database(describe(client))
            .unwrap_err()
            .into()),
        (None, Missing::Embedded) => {
            #[cfg(feature = "sqlite")]
            {
                let path = config.data_dir().join("characters.sqlite");
                let store = crate::characters::sqlite::SqliteCharacterStore::open(&path)
                    .await
                    .map_err(|e| {
                        ConnectError::backend(
                            format!("opening the embedded character store {}", path.display()),
                            e,
                        )
                    })?;
                Ok(Arc::new(store))
            }
            #[cfg(not(feature = "sqlite"))]
            {
                Err(not_built("characters", "SQLite", "sqlite"))
            }
        }
    }
}

/// The LLM: the OpenAI-compatible endpoint when `LLM_BASE_URL` is set, else the built-in
/// offline responder (so `up`/`chat` and a worker without an endpoint still answer).
pub fn llm(config: &Config) -> Result<Arc<dyn Llm>, ConnectError> {
    match &config.backends.llm_base_url {
        Some(url) => {
            #[cfg(feature = "openai")]
            {
                use crate::llm::openai::{LlmClientConfig, OpenAiClient};
                let mut cfg = LlmClientConfig::new(
                    url.expose_secret().to_owned(),
                    config.backends.llm_model.clone(),
                );
                cfg.api_key = config.backends.llm_api_key.clone();
                cfg.timeout = config.backends.llm_timeout;
                cfg.max_retries = config.backends.llm_max_retries;
                cfg.stream_idle_timeout = config.backends.llm_stream_idle_timeout;
                let client = OpenAiClient::new(cfg)
                    .map_err(|e| ConnectError::backend("building the LLM client", e))?;
                Ok(Arc::new(client))
            }
            #[cfg(not(feature = "openai"))]
            {
                let _ = url;
                Err(not_built("llm", "OpenAI-compatible", "openai"))
            }
        }
        None => {
            #[cfg(feature = "builtin")]
            {
                Ok(Arc::new(crate::llm::offline::OfflineResponder))
            }
            #[cfg(not(feature = "builtin"))]
            {
                Err(not_built("llm", "offline responder", "builtin"))
            }
        }
    }
}

/// Vector memory (Qdrant when `QDRANT_URL` is set, else the embedded SQLite store under the
/// data directory), embeddings (the configured endpoint, else the built-in hashing embedder)
/// and the lexicon emotion analyzer.
pub async fn memory(config: &Config) -> Result<MemoryPorts, ConnectError> {
    Ok(MemoryPorts {
        memory: vector_memory(config).await?,
        embedder: embedder(config)?,
        emotions: emotions()?,
    })
}

fn embedder(config: &Config) -> Result<Arc<dyn Embedder>, ConnectError> {
    match &config.backends.embeddings_url {
        Some(url) => {
            #[cfg(feature = "openai")]
            {
                use crate::embeddings::openai::{EmbedderConfig, OpenAiEmbedder};
                let mut cfg = EmbedderConfig::new(
                    url.expose_secret().to_owned(),
                    config
                        .backends
                        .embeddings_model
                        .clone()
                        .unwrap_or_else(|| "text-embedding-3-small".into()),
                    config.backends.embeddings_dims,
                );
                cfg.api_key = config.backends.embeddings_api_key.clone();
                cfg.timeout = config.backends.embeddings_timeout;
                let e = OpenAiEmbedder::new(cfg)
                    .map_err(|e| ConnectError::backend("building the embeddings client", e))?;
                Ok(Arc::new(e))
            }
            #[cfg(not(feature = "openai"))]
            {
                let _ = url;
                Err(not_built("embeddings", "OpenAI-compatible", "openai"))
            }
        }
        None => {
            #[cfg(feature = "builtin")]
            {
                Ok(Arc::new(crate::embeddings::hashing::HashEmbedder::new(
                    config.backends.embeddings_dims,
                )))
            }
            #[cfg(not(feature = "builtin"))]
            {
                Err(not_built("embeddings", "built-in hashing", "builtin"))
            }
        }
    }
}

async fn vector_memory(config: &Config) -> Result<Arc<dyn VectorMemory>, ConnectError> {
    match &config.backends.qdrant_url {
        Some(url) => {
            #[cfg(feature = "qdrant")]
            {
                let q = crate::memory::qdrant::QdrantMemory::connect(
                    url.expose_secret(),
                    config.backends.qdrant_api_key.clone(),
                    &config.backends.qdrant_collection,
                    config.backends.embeddings_dims,
                    config.backends.qdrant_timeout,
                )
                .map_err(|e| {
                    ConnectError::backend("connecting to Qdrant (WHISPERFLEET_QDRANT_URL)", e)
                })?;
                // A server that is merely down is retried on use; turns go without memories.
                if let Err(e) = q.ensure_collection().await {
                    tracing::warn!(error = %e, "qdrant not ready; turns go without memories until it is");
                }
                Ok(Arc::new(q))
            }
            #[cfg(not(feature = "qdrant"))]
            {
                let _ = url;
                Err(not_built("memory", "Qdrant", "qdrant"))
            }
        }
        None => {
            #[cfg(feature = "sqlite")]
            {
                let path = config.data_dir().join("memories.sqlite");
                let m = crate::memory::sqlite::SqliteMemory::open(&path)
                    .await
                    .map_err(|e| {
                        ConnectError::backend(
                            format!("opening the embedded vector memory at {}", path.display()),
                            e,
                        )
                    })?;
                Ok(Arc::new(m))
            }
            #[cfg(not(feature = "sqlite"))]
            {
                Err(not_built("memory", "SQLite", "sqlite"))
            }
        }
    }
}

fn emotions() -> Result<Arc<dyn whisperfleet_shared::ports::EmotionAnalyzer>, ConnectError> {
    #[cfg(feature = "builtin")]
    {
        Ok(Arc::new(crate::emotion::lexicon::LexiconAnalyzer::new()))
    }
    #[cfg(not(feature = "builtin"))]
    {
        Err(not_built("emotions", "lexicon", "builtin"))
    }
}

/// The ports a turn runs on: a standalone worker's, or the one-process fleet's.
pub struct TurnPorts {
    pub broker: Arc<dyn Broker>,
    pub cache: Arc<dyn Cache>,
    pub store: Arc<dyn CharacterStore>,
    pub llm: Arc<dyn Llm>,
    pub memory: MemoryPorts,
}

/// Every port a turn needs, each picked as the functions above pick it.
pub async fn turn_ports(
    config: &Config,
    client: &str,
    missing: Missing,
    migrations: Migrations,
) -> Result<TurnPorts, ConnectError> {
    Ok(TurnPorts {
        broker: broker(config, client, missing).await?,
        cache: cache(config, client, missing)?,
        store: characters(config, client, missing, migrations).await?,
        llm: llm(config)?,
        memory: memory(config).await?,
    })
}

/// Write requests a sink has made so far (reported on the writer's health point).
pub type RequestCounter = Arc<dyn Fn() -> u64 + Send + Sync>;

/// The metrics sink and what comes with it.
pub struct Metrics {
    pub sink: Arc<dyn MetricsSink>,
    pub requests: RequestCounter,
    /// Stage percentiles of the embedded metrics file (none when InfluxDB is configured).
    #[cfg(feature = "embedded")]
    pub summary: Option<Arc<crate::metrics::file::MetricsSummary>>,
}

/// The metrics sink: InfluxDB when `INFLUX_URL` is set, else (embedded) a line-protocol file
/// `metrics.lp` in the data directory.
pub fn metrics(config: &Config, missing: Missing) -> Result<Metrics, ConnectError> {
    match (&config.backends.influx_url, missing) {
        (Some(url), _) => {
            #[cfg(feature = "influx")]
            {
                crate::http::check_http_url("WHISPERFLEET_INFLUX_URL", url.expose_secret())?;
                let sink = Arc::new(
                    crate::metrics::influx::InfluxSink::from_config(url.expose_secret(), config)
                        .map_err(|e| {
                            ConnectError::backend(
                                "building the InfluxDB sink (WHISPERFLEET_INFLUX_URL)",
                                e,
                            )
                        })?,
                );
                let s = sink.clone();
                Ok(Metrics {
                    sink,
                    requests: Arc::new(move || s.requests()),
                    #[cfg(feature = "embedded")]
                    summary: None,
                })
            }
            #[cfg(not(feature = "influx"))]
            {
                let _ = url;
                Err(not_built("metrics", "InfluxDB", "influx"))
            }
        }
        (None, Missing::Refuse) => Err(ConfigError::Missing {
            what: "the metrics-writer",
            var: "WHISPERFLEET_INFLUX_URL",
            example: "http://influxdb:8086",
        }
        .into()),
        (None, Missing::Embedded) => {
            #[cfg(feature = "embedded")]
            {
                use crate::metrics::file::{FileSink, MetricsSummary};
                let summary = MetricsSummary::new();
                let path = config.data_dir().join("metrics.lp");
                let sink = Arc::new(FileSink::open(&path, summary.clone()).map_err(|e| {
                    ConnectError::backend(format!("opening the metrics file {}", path.display()), e)
                })?);
                let s = sink.clone();
                Ok(Metrics {
                    sink,
                    requests: Arc::new(move || s.requests()),
                    summary: Some(summary),
                })
            }
            #[cfg(not(feature = "embedded"))]
            {
                Err(not_built("metrics", "line-protocol file", "embedded"))
            }
        }
    }
}

/// `worker` → "the worker", as the missing-variable errors say it.
fn describe(client: &str) -> &'static str {
    match client {
        "gateway" => "the gateway",
        "worker" => "the worker",
        "metrics-writer" => "the metrics-writer",
        _ => "this command",
    }
}
