//! Builds a worker from configuration (`Application::build`) and runs it until the shutdown
//! token fires (`run_until_stopped`). The standalone worker needs RabbitMQ, Redis and
//! PostgreSQL and says which variable is missing; the LLM is the configured
//! OpenAI-compatible endpoint or, without `LLM_BASE_URL`, the offline responder.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use whisperfleet_shared::amqp::RabbitBroker;
use whisperfleet_shared::broker::{Broker, Subscription};
use whisperfleet_shared::cache::{Cache, RedisCache};
use whisperfleet_shared::character::CharacterStore;
use whisperfleet_shared::config::Config;
use whisperfleet_shared::llm::Llm;
use whisperfleet_shared::topology::{self, TopologySettings};

use crate::cdl::CharacterCache;
use crate::embed::{EmbedderConfig, HashEmbedder, OpenAiEmbedder};
use crate::emotion::LexiconAnalyzer;
use crate::llm::{LlmClientConfig, OpenAiClient};
use crate::offline::OfflineResponder;
use crate::qdrant::QdrantMemory;
use crate::sqlite_memory::SqliteMemory;
use crate::store::PgCharacterStore;
use crate::turn::{Deps, MemoryPorts, PipelineOptions, TurnSettings};
use whisperfleet_shared::influx::InfluxSink;
use whisperfleet_shared::ports::{Embedder, MetricsSink, VectorMemory};

pub struct Application {
    deps: Arc<Deps>,
    turns: Subscription,
    control: Option<Subscription>,
    grace: Duration,
}

pub fn turn_settings(config: &Config) -> TurnSettings {
    TurnSettings {
        history_len: config.history_len,
        prompt_budget_tokens: config.prompt_budget_tokens,
        turn_deadline: config.turn_deadline(),
        delivery_limit: config.delivery_limit,
        record_ttl: Duration::from_secs(config.turn_record_ttl_s),
        llm_model: Some(config.llm_model.clone()),
        pause_after_llm: Duration::from_millis(config.test_pause_after_llm_ms),
        pause_after_memory: Duration::from_millis(config.test_pause_after_memory_ms),
        memory_top_k: config.memory_top_k,
        recent_states: config.recent_emotional_states,
    }
}

/// The worker's PostgreSQL character store (not yet migrated: callers decide whether a
/// failed migration is fatal).
pub async fn connect_store(
    config: &Config,
    url: secrecy::SecretString,
) -> anyhow::Result<PgCharacterStore> {
    PgCharacterStore::connect(
        url,
        // Turns touch PostgreSQL briefly (relationship row, a rare character load): a few
        // connections serve many turns, and a fleet of workers must stay well under the
        // server's max_connections.
        u32::from(config.worker_concurrency).clamp(2, 8),
    )
    .await
    .context("opening PostgreSQL (WHISPERFLEET_DATABASE_URL)")
}

/// The configured LLM: an OpenAI-compatible endpoint, or the offline responder.
pub fn build_llm(config: &Config) -> anyhow::Result<Arc<dyn Llm>> {
    Ok(match &config.llm_base_url {
        Some(url) => {
            let mut cfg = LlmClientConfig::new(url.clone(), config.llm_model.clone());
            cfg.api_key = config.llm_api_key.clone();
            cfg.timeout = Duration::from_millis(config.llm_timeout_ms);
            cfg.max_retries = config.llm_max_retries;
            Arc::new(OpenAiClient::new(cfg).context("building the LLM client")?)
        }
        None => Arc::new(OfflineResponder),
    })
}

/// Vector memory (Qdrant when `QDRANT_URL` is set, else the embedded SQLite store under
/// the data directory), embeddings (the configured endpoint, else the built-in hashing
/// embedder) and the lexicon emotion analyzer.
pub async fn build_memory(config: &Config) -> anyhow::Result<MemoryPorts> {
    let embedder: Arc<dyn Embedder> = match &config.embeddings_url {
        Some(url) => {
            let mut cfg = EmbedderConfig::new(
                url.clone(),
                config
                    .embeddings_model
                    .clone()
                    .unwrap_or_else(|| "text-embedding-3-small".into()),
                config.embeddings_dims,
            );
            cfg.api_key = config.embeddings_api_key.clone();
            Arc::new(OpenAiEmbedder::new(cfg).map_err(|e| anyhow::anyhow!("{e}"))?)
        }
        None => Arc::new(HashEmbedder::new(config.embeddings_dims)),
    };
    let memory: Arc<dyn VectorMemory> = match &config.qdrant_url {
        Some(url) => {
            let q = QdrantMemory::connect(
                url,
                config.qdrant_api_key.clone(),
                &config.qdrant_collection,
                config.embeddings_dims,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            // A server that is merely down is retried on use; turns go without memories.
            if let Err(e) = q.ensure_collection().await {
                tracing::warn!(error = %e, "qdrant not ready; turns go without memories until it is");
            }
            Arc::new(q)
        }
        None => {
            let path = config.data_dir().join("memories.sqlite");
            Arc::new(SqliteMemory::open(&path).await.with_context(|| {
                format!("opening the embedded vector memory at {}", path.display())
            })?)
        }
    };
    Ok(MemoryPorts {
        memory,
        embedder,
        emotions: Arc::new(LexiconAnalyzer::new()),
    })
}

impl Application {
    /// The standalone worker: RabbitMQ + Redis + PostgreSQL from configuration.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        let amqp = config.require_amqp("the worker")?.clone();
        let redis = config.require_redis("the worker")?.clone();
        let db = config.require_database("the worker")?.clone();
        let broker = RabbitBroker::connect(
            amqp,
            &format!("worker@{}", config.gateway_id),
            TopologySettings::from_config(config),
        )
        .await
        .context("connecting to RabbitMQ")?;
        let cache: Arc<dyn Cache> = Arc::new(RedisCache::new(redis, &config.redis_prefix)?);
        let store = connect_store(config, db).await?;
        if let Err(e) = store.migrate().await {
            tracing::warn!(error = %e, "could not apply migrations now; turns will get fallbacks until the database is back");
        }
        let llm = build_llm(config)?;
        let memory = build_memory(config).await?;
        Self::build_with(
            config,
            broker,
            Some(cache),
            Arc::new(store),
            llm,
            memory,
            PipelineOptions::parse(&config.pipeline)
                .map_err(|e| anyhow::anyhow!("WHISPERFLEET_PIPELINE: {e}"))?,
        )
        .await
    }

    /// Any combination of ports (the embedded `up` and the bench use this).
    pub async fn build_with(
        config: &Config,
        broker: Arc<dyn Broker>,
        cache: Option<Arc<dyn Cache>>,
        store: Arc<dyn CharacterStore>,
        llm: Arc<dyn Llm>,
        memory: MemoryPorts,
        options: PipelineOptions,
    ) -> anyhow::Result<Self> {
        broker
            .ensure_topology()
            .await
            .context("declaring the fleet topology")?;
        tracing::info!(
            broker = broker.describe(),
            cache = cache
                .as_ref()
                .map(|c| c.describe())
                .unwrap_or_else(|| "none".into()),
            characters = store.describe(),
            llm = llm.describe(),
            memory = memory.memory.describe(),
            embedder = memory.embedder.describe(),
            concurrency = config.worker_concurrency,
            "worker starting"
        );
        // A per-process cache would keep serving a character imported by another process
        // (`characters import` next to `up`): without a shared one, the character cache
        // re-checks the store every few seconds instead.
        let cdl_cache = cache.clone().filter(|c| c.is_shared());
        let characters = CharacterCache::new(store, cdl_cache, options.character_cache);
        let turns = broker
            .consume(topology::TURNS_QUEUE, config.worker_concurrency)
            .await
            .context("consuming turns")?;
        let control = match broker.subscribe_control().await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "no control subscription; character changes arrive through Redis only");
                None
            }
        };
        let direct_metrics: Option<Arc<dyn MetricsSink>> = if options.batched_metrics {
            None
        } else {
            let url = config.influx_url.as_deref().ok_or_else(|| {
                anyhow::anyhow!(
                    "batched_metrics=off writes InfluxDB directly: set WHISPERFLEET_INFLUX_URL"
                )
            })?;
            Some(Arc::new(
                InfluxSink::new(
                    url,
                    &config.influx_org,
                    &config.influx_bucket,
                    config.influx_token.clone(),
                    false,
                    Duration::from_secs(10),
                )
                .map_err(|e| anyhow::anyhow!("{e}"))?,
            ))
        };
        let mut deps = Deps::new(
            broker,
            cache,
            characters,
            llm,
            memory,
            turn_settings(config),
            options,
        );
        deps.direct_metrics = direct_metrics;
        let deps = Arc::new(deps);
        Ok(Self {
            deps,
            turns,
            control,
            grace: config.shutdown_grace(),
        })
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        crate::consumer::run(self.deps, self.turns, self.control, shutdown, self.grace).await;
        tracing::info!("worker stopped");
        Ok(())
    }
}
