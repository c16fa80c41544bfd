//! The one-process fleet behind `whisperfleet up` and `chat`: gateway, workers and the
//! metrics writer in one process. Every port is picked on its own: the configured service
//! when its URL is set, the embedded implementation otherwise (set only
//! `WHISPERFLEET_AMQP_URL` and only the broker becomes RabbitMQ). Embedded state lives under
//! the data directory, so characters, relationships and memories survive a restart.

use std::sync::Arc;

use anyhow::Context;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use whisperfleet_adapters::connect::TurnPorts;
use whisperfleet_adapters::connect::{self, Migrations, Missing};
use whisperfleet_adapters::metrics::file::MetricsSummary;
use whisperfleet_shared::character::Character;
use whisperfleet_shared::config::Config;
use whisperfleet_shared::ports::{CharacterStore, MetricsSink};
use whisperfleet_worker::startup::Strategies;

/// The sample characters, compiled in so a fresh machine has someone to talk to wherever
/// the binary runs from.
const SAMPLES: [(&str, &str); 3] = [
    ("vellum.yaml", include_str!("../characters/vellum.yaml")),
    (
        "nora-halvorsen.yaml",
        include_str!("../characters/nora-halvorsen.yaml"),
    ),
    ("old-wick.yaml", include_str!("../characters/old-wick.yaml")),
];

/// The character `chat` talks to when none is named.
pub const DEFAULT_CHARACTER: &str = "Vellum";

pub struct Ports {
    /// What the workers run on (and the gateway's broker and cache).
    pub turn: TurnPorts,
    pub sink: Arc<dyn MetricsSink>,
    pub sink_requests: whisperfleet_metrics_writer::RequestCounter,
    /// Stage percentiles of the embedded metrics file (none when InfluxDB is configured).
    pub summary: Option<Arc<MetricsSummary>>,
}

/// The character store: PostgreSQL when `DATABASE_URL` is set, else SQLite in the data dir.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn CharacterStore>> {
    Ok(connect::characters(
        config,
        "whisperfleet",
        Missing::Embedded,
        Migrations::Required,
    )
    .await?)
}

impl Ports {
    pub async fn build(config: &Config, client_name: &str) -> anyhow::Result<Self> {
        let turn =
            connect::turn_ports(config, client_name, Missing::Embedded, Migrations::Required)
                .await?;
        let metrics = connect::metrics(config, Missing::Embedded)?;
        Ok(Self {
            turn,
            sink: metrics.sink,
            sink_requests: metrics.requests,
            summary: metrics.summary,
        })
    }

    /// What each port runs on, for the start banner (no credentials).
    pub fn report(&self, config: &Config) -> Vec<(&'static str, String)> {
        vec![
            ("broker", self.turn.broker.describe()),
            ("cache", self.turn.cache.describe()),
            ("characters", self.turn.store.describe()),
            ("memory", self.turn.memory.memory.describe()),
            ("embeddings", self.turn.memory.embedder.describe()),
            ("llm", self.turn.llm.describe()),
            ("metrics", self.sink.describe()),
            ("data dir", config.data_dir().display().to_string()),
        ]
    }

    /// What an operator should know about this mix of ports: a RabbitMQ broker is shared
    /// with every process on its vhost, and this process's workers and metrics writer take
    /// their share of its queues with whatever else is local here.
    pub fn warnings(&self, config: &Config) -> Vec<String> {
        if config.backends.amqp_url.is_none() {
            return Vec::new();
        }
        let mut local = Vec::new();
        if config.backends.database_url.is_none() {
            local.push("characters from the local SQLite store");
        }
        if config.backends.llm_base_url.is_none() {
            local.push("the offline responder");
        }
        if config.backends.qdrant_url.is_none() {
            local.push("local memories");
        }
        let mut out = Vec::new();
        if !local.is_empty() {
            out.push(format!(
                "the broker is RabbitMQ: turns published by any gateway on its vhost may be \
                 answered here, with {}; use a vhost of your own unless this should join that \
                 fleet",
                local.join(", ")
            ));
        }
        if config.backends.influx_url.is_none() {
            out.push(
                "metric events of every process on the broker's vhost may land in this \
                 process's metrics file"
                    .into(),
            );
        }
        out
    }

    /// Imports the sample characters into an empty store (first start); returns their names.
    pub async fn seed_characters(&self) -> anyhow::Result<Vec<String>> {
        if !self
            .turn
            .store
            .list()
            .await
            .context("listing characters")?
            .is_empty()
        {
            return Ok(Vec::new());
        }
        let mut names = Vec::new();
        for (file, yaml) in SAMPLES {
            let mut c: Character =
                serde_norway::from_str(yaml).with_context(|| format!("sample character {file}"))?;
            c.validate()
                .map_err(|e| anyhow::anyhow!("sample character {file}: {e}"))?;
            self.turn
                .store
                .upsert(&c)
                .await
                .with_context(|| format!("importing sample character {}", c.name))?;
            names.push(c.name);
        }
        Ok(names)
    }
}

pub fn print_report(out: &mut impl std::io::Write, rows: &[(&'static str, String)]) {
    for (k, v) in rows {
        let _ = writeln!(out, "  {:<11} {v}", format!("{k}:"));
    }
}

/// Workers and the metrics writer, stopped in that order so the last turns' metric events
/// are still written.
pub struct Backend {
    workers: JoinSet<anyhow::Result<()>>,
    /// `None` once it ended (a `JoinHandle` must not be awaited twice).
    writer: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    stop_workers: CancellationToken,
    stop_writer: CancellationToken,
}

impl Backend {
    pub async fn start(config: &Config, ports: &Ports, workers: usize) -> anyhow::Result<Self> {
        let stop_workers = CancellationToken::new();
        let stop_writer = CancellationToken::new();
        let writer = whisperfleet_metrics_writer::Application::build_with(
            config,
            ports.turn.broker.clone(),
            Some(ports.turn.cache.clone()),
            ports.sink.clone(),
            ports.sink_requests.clone(),
            None,
        )
        .await
        .context("starting the metrics writer")?;
        let writer = tokio::spawn(writer.run_until_stopped(stop_writer.clone()));
        let mut set = JoinSet::new();
        for _ in 0..workers.max(1) {
            let w = whisperfleet_worker::startup::Application::build_with(
                config,
                ports.turn.broker.clone(),
                Some(ports.turn.cache.clone()),
                ports.turn.store.clone(),
                ports.turn.llm.clone(),
                ports.turn.memory.clone(),
                Strategies::default(),
            )
            .await
            .context("starting a worker")?;
            set.spawn(w.run_until_stopped(stop_workers.clone()));
        }
        Ok(Self {
            workers: set,
            writer: Some(writer),
            stop_workers,
            stop_writer,
        })
    }

    /// Resolves when a worker or the writer ends on its own: they run until stopped, so
    /// that is a failure.
    pub async fn failed(&mut self) -> anyhow::Error {
        let (workers, writer) = (&mut self.workers, &mut self.writer);
        let writer_ended = async {
            match writer.as_mut() {
                Some(w) => w.await,
                None => std::future::pending().await,
            }
        };
        let (error, writer_done) = tokio::select! {
            Some(r) = workers.join_next() => (match r {
                Ok(Err(e)) => e.context("a worker failed"),
                Ok(Ok(())) => anyhow::anyhow!("a worker stopped unexpectedly"),
                Err(e) => anyhow::Error::new(e).context("a worker panicked"),
            }, false),
            r = writer_ended => (match r {
                Ok(Err(e)) => e.context("the metrics writer failed"),
                Ok(Ok(())) => anyhow::anyhow!("the metrics writer stopped unexpectedly"),
                Err(e) => anyhow::Error::new(e).context("the metrics writer panicked"),
            }, true),
        };
        if writer_done {
            self.writer = None;
        }
        error
    }

    /// Drains workers (in-flight turns finish), then the writer (their metric events);
    /// the writer is stopped and awaited even when a worker failed. The first error wins.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.stop_workers.cancel();
        let mut first: Option<anyhow::Error> = None;
        while let Some(r) = self.workers.join_next().await {
            let r = r.map_err(anyhow::Error::from).and_then(|r| r);
            if let (Err(e), None) = (r, &first) {
                first = Some(e.context("worker"));
            }
        }
        self.stop_writer.cancel();
        if let Some(writer) = self.writer.take() {
            let r = writer.await.map_err(anyhow::Error::from).and_then(|r| r);
            if let (Err(e), None) = (r, &first) {
                first = Some(e.context("metrics writer"));
            }
        }
        first.map_or(Ok(()), Err)
    }
}
