//! Builds a worker from configuration (`Application::build`) and runs it until the shutdown
//! token fires (`run_until_stopped`). The standalone worker needs RabbitMQ, Redis and
//! PostgreSQL and says which variable is missing; the LLM is the configured
//! OpenAI-compatible endpoint or, without `LLM_BASE_URL`, the offline responder.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use whisperfleet_adapters::connect::{self, Migrations, Missing};
use whisperfleet_adapters::metrics::influx::InfluxSink;
use whisperfleet_shared::config::Config;
use whisperfleet_shared::ports::broker::Subscription;
use whisperfleet_shared::ports::{Broker, Cache, CharacterStore, Llm, MetricsSink};
use whisperfleet_shared::topology;

use crate::cdl::CharacterCache;
use crate::turn::{Deps, MemoryPorts, PipelineOptions, TurnSettings};

pub struct Application {
    deps: Arc<Deps>,
    turns: Subscription,
    control: Option<Subscription>,
    grace: Duration,
}

pub fn turn_settings(config: &Config) -> TurnSettings {
    TurnSettings {
        history_len: config.worker.history_len,
        prompt_budget_tokens: config.worker.prompt_budget_tokens,
        turn_deadline: config.worker.turn_deadline,
        delivery_limit: config.worker.delivery_limit,
        record_ttl: config.worker.turn_record_ttl,
        llm_model: Some(config.backends.llm_model.clone()),
        // The test pauses left the configuration (production `Config` carries no test
        // settings); tests get them from a test-only worker instead.
        pause_after_llm: Duration::ZERO,
        pause_after_memory: Duration::ZERO,
        memory_top_k: config.worker.memory_top_k,
        recent_states: config.worker.recent_emotional_states,
    }
}

impl Application {
    /// The standalone worker: RabbitMQ + Redis + PostgreSQL from configuration.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        // Checked before connecting anything, so a missing variable is the error shown.
        config.require_amqp("the worker")?;
        config.require_redis("the worker")?;
        config.require_database("the worker")?;
        let broker = connect::broker(config, "worker", Missing::Refuse).await?;
        let cache = connect::cache(config, "worker", Missing::Refuse)?;
        let store =
            connect::characters(config, "worker", Missing::Refuse, Migrations::BestEffort).await?;
        let llm = connect::llm(config)?;
        let memory = connect::memory(config).await?;
        Self::build_with(
            config,
            broker,
            Some(cache),
            store,
            llm,
            memory,
            PipelineOptions::default(),
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
            concurrency = config.worker.concurrency,
            "worker starting"
        );
        // A per-process cache would keep serving a character imported by another process
        // (`characters import` next to `up`): without a shared one, the character cache
        // re-checks the store every few seconds instead.
        let cdl_cache = cache.clone().filter(|c| c.is_shared());
        let characters = CharacterCache::new(store, cdl_cache, options.character_cache);
        let turns = broker
            .consume(topology::TURNS_QUEUE, config.worker.concurrency)
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
            let url = config.backends.influx_url.as_deref().ok_or_else(|| {
                anyhow::anyhow!(
                    "batched_metrics=off writes InfluxDB directly: set WHISPERFLEET_INFLUX_URL"
                )
            })?;
            Some(Arc::new(
                InfluxSink::new(
                    url,
                    &config.backends.influx_org,
                    &config.backends.influx_bucket,
                    config.backends.influx_token.clone(),
                    false,
                    Duration::from_secs(10),
                )
                .context("setting up the direct InfluxDB sink (batched_metrics=off)")?,
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
            grace: config.process.shutdown_grace,
        })
    }

    pub async fn run_until_stopped(self, shutdown: CancellationToken) -> anyhow::Result<()> {
        crate::consumer::run(self.deps, self.turns, self.control, shutdown, self.grace).await;
        tracing::info!("worker stopped");
        Ok(())
    }
}
