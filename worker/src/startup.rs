//! Builds a worker from configuration (`Application::build`) and runs it until the shutdown
//! token fires (`run_until_stopped`). The standalone worker needs RabbitMQ, Redis and
//! PostgreSQL and says which variable is missing; the LLM is the configured
//! OpenAI-compatible endpoint or, without `LLM_BASE_URL`, the offline responder.
//!
//! `Application::build_with` takes any combination of ports plus the turn's [`Strategies`],
//! whose defaults are the fleet's: the embedded `up` passes the defaults, the bench's and the
//! fault tests' testkit worker passes wrapped ports and the seed's strategies.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;
use whisperfleet_adapters::connect::{self, Migrations, Missing, TurnPorts};
use whisperfleet_shared::config::Config;
use whisperfleet_shared::health;
use whisperfleet_shared::ports::broker::Subscription;
use whisperfleet_shared::ports::{Broker, Cache, CharacterStore, Llm};
use whisperfleet_shared::topology;

use crate::cdl::{CharacterCache, CharacterSource};
use crate::compose::{Composition, FromLoaded};
use crate::finish::{Finish, MetricEvent, ReplyFirst, TurnMetrics};
use crate::turn::{Deps, MemoryPorts, TurnSettings};

pub struct Application {
    deps: Arc<Deps>,
    turns: Subscription,
    /// Privacy requests (show or forget one user's data) from gateways.
    privacy: Subscription,
    control: Option<Subscription>,
    grace: Duration,
    /// `/healthz` and `/readyz` (the standalone worker only).
    health: Option<tokio::net::TcpListener>,
}

pub fn turn_settings(config: &Config) -> TurnSettings {
    TurnSettings {
        history_len: config.worker.history_len,
        prompt_budget_tokens: config.worker.prompt_budget_tokens,
        turn_deadline: config.worker.turn_deadline,
        delivery_limit: config.worker.delivery_limit,
        record_ttl: config.worker.turn_record_ttl,
        llm_model: Some(config.backends.llm_model.clone()),
        memory_top_k: config.worker.memory_top_k,
        recent_states: config.worker.recent_emotional_states,
    }
}

/// The standalone worker's ports: RabbitMQ + Redis + PostgreSQL (refused without them), the
/// configured LLM and memory.
pub async fn connect_ports(config: &Config) -> anyhow::Result<TurnPorts> {
    // Checked before connecting anything, so a missing variable is the error shown.
    config.require_amqp("the worker")?;
    config.require_redis("the worker")?;
    config.require_database("the worker")?;
    Ok(connect::turn_ports(config, "worker", Missing::Refuse, Migrations::BestEffort).await?)
}

/// The parts of a turn that are strategies rather than ports; each `None` is the fleet's
/// own, so `Strategies::default()` is the production turn.
#[derive(Clone, Default)]
pub struct Strategies {
    /// How `cdl_load` finds the character: by default the cross-request
    /// [`CharacterCache`] over the store (and the cache, when it is shared).
    pub characters: Option<Arc<dyn CharacterSource>>,
    /// How `compose` builds the prompt: by default [`FromLoaded`].
    pub composition: Option<Arc<dyn Composition>>,
    /// The order of the turn's last steps: by default [`ReplyFirst`].
    pub finish: Option<Arc<dyn Finish>>,
    /// How the turn's metric points leave: by default one [`MetricEvent`] on the broker.
    pub metrics: Option<Arc<dyn TurnMetrics>>,
}

impl Application {
    /// The standalone worker: RabbitMQ + Redis + PostgreSQL from configuration.
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        // First, so a taken address is the error shown, before anything connects.
        let health = health::bind(config, health::WORKER_DEFAULT).await?;
        let p = connect_ports(config).await?;
        let mut app = Self::build_with(
            config,
            p.broker,
            Some(p.cache),
            p.store,
            p.llm,
            p.memory,
            Strategies::default(),
        )
        .await?;
        app.health = health;
        Ok(app)
    }

    /// Any combination of ports (the embedded `up` and the testkit worker use this).
    pub async fn build_with(
        config: &Config,
        broker: Arc<dyn Broker>,
        cache: Option<Arc<dyn Cache>>,
        store: Arc<dyn CharacterStore>,
        llm: Arc<dyn Llm>,
        memory: MemoryPorts,
        strategies: Strategies,
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
        let characters = strategies.characters.unwrap_or_else(|| {
            // A per-process cache would keep serving a character imported by another process
            // (`characters import` next to `up`): without a shared one, the character cache
            // re-checks the store every few seconds instead.
            let cdl_cache = cache.clone().filter(|c| c.is_shared());
            Arc::new(CharacterCache::new(store.clone(), cdl_cache))
        });
        let turns = broker
            .consume(topology::TURNS_QUEUE, config.worker.concurrency)
            .await
            .context("consuming turns")?;
        let privacy = broker
            .consume(
                topology::PRIVACY_QUEUE,
                crate::privacy_requests::PRIVACY_PREFETCH,
            )
            .await
            .context("consuming privacy requests")?;
        let control = match broker.subscribe_control().await {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "no control subscription; character changes arrive through Redis only");
                None
            }
        };
        let deps = Arc::new(Deps {
            metrics: strategies
                .metrics
                .unwrap_or_else(|| Arc::new(MetricEvent::new(broker.clone()))),
            broker,
            cache,
            store,
            characters,
            llm,
            memory,
            composition: strategies
                .composition
                .unwrap_or_else(|| Arc::new(FromLoaded)),
            finish: strategies.finish.unwrap_or_else(|| Arc::new(ReplyFirst)),
            settings: turn_settings(config),
            // Host and pid: which process holds a turn's lease, readable in Redis.
            instance: format!("{}:{}", config.gateway.id, std::process::id()),
            conversations: Mutex::default(),
        });
        Ok(Self {
            deps,
            turns,
            privacy,
            control,
            grace: config.process.shutdown_grace,
            health: None,
        })
    }

    /// Ready while the worker consumes `turns` and `privacy` and the broker takes its
    /// replies.
    fn readiness(&self) -> health::Readiness {
        let (consuming, broker) = (self.turns.consuming.clone(), self.deps.broker.clone());
        let privacy = self.privacy.consuming.clone();
        Arc::new(move || {
            let (consuming, broker, privacy) = (consuming.clone(), broker.clone(), privacy.clone());
            Box::pin(async move {
                if !consuming.now() {
                    return Err(format!("not consuming {}", topology::TURNS_QUEUE));
                }
                if !privacy.now() {
                    return Err(format!("not consuming {}", topology::PRIVACY_QUEUE));
                }
                broker
                    .readiness()
                    .await
                    .map_err(|e| format!("replies cannot be published: {e}"))
            })
        })
    }

    pub async fn run_until_stopped(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        if let Some(listener) = self.health.take() {
            health::spawn(listener, "worker", self.readiness(), shutdown.clone());
        }
        let privacy = tokio::spawn(crate::privacy_requests::run(
            self.deps.clone(),
            self.privacy,
            shutdown.clone(),
            self.grace,
        ));
        crate::consumer::run(self.deps, self.turns, self.control, shutdown, self.grace).await;
        if let Err(e) = privacy.await {
            tracing::warn!(error = %e, "the privacy consumer ended abnormally");
        }
        tracing::info!("worker stopped");
        Ok(())
    }
}
