//! The testkit worker (`testkit-worker` binary): the fleet's worker, built with
//! `Application::build_with` from the standalone worker's ports, wrapped where this binary's
//! own flags say. The bench runs it (the seed's "before" and backend-side counts), and so do
//! the tests that must kill a worker between two steps of a turn. Production `Config`
//! carries no bench or test settings: everything here comes from these flags.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use clap::Parser;
use std::collections::HashMap;
use whisperfleet_shared::config::Config;

use whisperfleet_shared::ports::cache::{Appended, Cache, CacheError};
use whisperfleet_shared::ports::{MemoryError, MemoryPoint, MemoryScope, VectorMemory};
use whisperfleet_shared::records;
use whisperfleet_shared::{shutdown, telemetry};
use whisperfleet_worker::finish::{MetricEvent, MetricsNotSent, TurnMetrics};
use whisperfleet_worker::startup::{Application, connect_ports};

use crate::naive::Pipeline;

/// Flags of the `testkit-worker` binary (the rest of its configuration is the worker's).
#[derive(Parser, Debug, Clone)]
#[command(
    name = "testkit-worker",
    about = "The fleet's worker with test and bench wrappers"
)]
pub struct Args {
    /// `optimized` (the fleet's turn) or `naive` (the seed's "before"), then any
    /// `switch=on|off` overrides: request_cache, character_cache, parallel_compose,
    /// recent_states_once, memory_after_reply, batched_metrics.
    #[arg(long, default_value = "optimized")]
    pub pipeline: String,
    /// Every turn waits this long after the LLM answered and the answer was recorded, before
    /// the reply is published: the window in which a test kills the worker.
    #[arg(long, default_value_t = 0)]
    pub pause_after_llm_ms: u64,
    /// Every turn waits this long after memory_store, before recording that it ran.
    #[arg(long, default_value_t = 0)]
    pub pause_after_memory_ms: u64,
    /// Every turn waits this long after its history append, before the reply.
    #[arg(long, default_value_t = 0)]
    pub pause_after_history_ms: u64,
    /// Every turn waits this long after its reply was confirmed and recorded.
    #[arg(long, default_value_t = 0)]
    pub pause_after_reply_ms: u64,
    /// Every turn waits this long after its metric event was published, before the ack.
    #[arg(long, default_value_t = 0)]
    pub pause_after_metrics_ms: u64,
    /// On exit, write the vector-memory calls counted at the backend (under every
    /// wrapper) to this file as JSON.
    #[arg(long)]
    pub counts_out: Option<PathBuf>,
}

/// The binary: configuration from the environment, as the worker's; then the wrapped worker
/// until SIGTERM; then the counts.
pub async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config = telemetry::bootstrap().context("loading configuration")?;
    let pipeline =
        Pipeline::parse(&args.pipeline).map_err(|e| anyhow::anyhow!("--pipeline: {e}"))?;
    let counts = Arc::new(MemoryCounts::default());
    let app = build(&config, &args, &pipeline, counts.clone()).await?;
    app.run_until_stopped(shutdown::on_signals()).await?;
    if let Some(path) = &args.counts_out {
        std::fs::write(path, serde_json::to_vec(&counts.to_json())?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn build(
    config: &Config,
    args: &Args,
    pipeline: &Pipeline,
    counts: Arc<MemoryCounts>,
) -> anyhow::Result<Application> {
    let mut ports = connect_ports(config).await?;
    let _ = counts.backend.set(ports.memory.memory.describe());
    // Innermost, so the seed's extra queries are counted too.
    ports.memory.memory = Arc::new(CountedMemory {
        inner: ports.memory.memory,
        counts,
    });
    let (mut ports, mut strategies) = pipeline.apply(config, ports)?;
    let ms = Duration::from_millis;
    let pauses = PausingCache {
        inner: ports.cache.clone(),
        after_llm: ms(args.pause_after_llm_ms),
        before_memory_record: ms(args.pause_after_memory_ms),
        after_history: ms(args.pause_after_history_ms),
        after_reply: ms(args.pause_after_reply_ms),
    };
    if pauses.any() {
        ports.cache = Arc::new(pauses);
    }
    if args.pause_after_metrics_ms > 0 {
        let inner = strategies
            .metrics
            .take()
            .unwrap_or_else(|| Arc::new(MetricEvent::new(ports.broker.clone())));
        strategies.metrics = Some(Arc::new(PausingMetrics {
            inner,
            after: ms(args.pause_after_metrics_ms),
        }));
    }
    Application::build_with(
        config,
        ports.broker,
        Some(ports.cache),
        ports.store,
        ports.llm,
        ports.memory,
        strategies,
    )
    .await
}

/// Vector-memory calls as the backend received them, over the whole process.
#[derive(Default)]
pub struct MemoryCounts {
    pub recent: AtomicU64,
    pub search: AtomicU64,
    pub upsert: AtomicU64,
    /// What the vector memory runs on (its `describe()`: no credentials), for the report.
    pub backend: std::sync::OnceLock<String>,
}

impl MemoryCounts {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "memory_recent": self.recent.load(Ordering::Relaxed),
            "memory_search": self.search.load(Ordering::Relaxed),
            "memory_upsert": self.upsert.load(Ordering::Relaxed),
            "memory_backend": self.backend.get(),
        })
    }
}

struct CountedMemory {
    inner: Arc<dyn VectorMemory>,
    counts: Arc<MemoryCounts>,
}

#[async_trait]
impl VectorMemory for CountedMemory {
    async fn upsert(&self, points: &[MemoryPoint]) -> Result<(), MemoryError> {
        self.counts.upsert.fetch_add(1, Ordering::Relaxed);
        self.inner.upsert(points).await
    }
    async fn search(
        &self,
        scope: &MemoryScope,
        vector: &[f32],
        k: usize,
    ) -> Result<Vec<(MemoryPoint, f32)>, MemoryError> {
        self.counts.search.fetch_add(1, Ordering::Relaxed);
        self.inner.search(scope, vector, k).await
    }
    async fn recent(&self, scope: &MemoryScope, n: usize) -> Result<Vec<MemoryPoint>, MemoryError> {
        self.counts.recent.fetch_add(1, Ordering::Relaxed);
        self.inner.recent(scope, n).await
    }
    async fn list(
        &self,
        identity: &whisperfleet_shared::identity::Identity,
        character: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MemoryPoint>, MemoryError> {
        self.inner.list(identity, character, limit).await
    }
    async fn forget(
        &self,
        identity: &whisperfleet_shared::identity::Identity,
        character: Option<&str>,
    ) -> Result<u64, MemoryError> {
        self.inner.forget(identity, character).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Fault injection at the turn's record: the turn writes its `llm` field (the LLM answer)
/// right after the LLM answered and before the reply, its `history` field together with the
/// history append, `replied` after the reply's confirm, and its `memory` field right after
/// memory_store, so pausing there opens exactly the windows the tests need.
struct PausingCache {
    inner: Arc<dyn Cache>,
    after_llm: Duration,
    before_memory_record: Duration,
    after_history: Duration,
    after_reply: Duration,
}

impl PausingCache {
    fn any(&self) -> bool {
        [
            self.after_llm,
            self.before_memory_record,
            self.after_history,
            self.after_reply,
        ]
        .iter()
        .any(|d| !d.is_zero())
    }
}

/// Pauses after each turn's metric event left: the window between metrics and ack.
struct PausingMetrics {
    inner: Arc<dyn TurnMetrics>,
    after: Duration,
}

#[async_trait]
impl TurnMetrics for PausingMetrics {
    async fn send(
        &self,
        points: Vec<whisperfleet_shared::lineproto::Point>,
    ) -> Result<(), MetricsNotSent> {
        let r = self.inner.send(points).await;
        tokio::time::sleep(self.after).await;
        r
    }
}

#[async_trait]
impl Cache for PausingCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.inner.get(key).await
    }
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        self.inner.set(key, value, ttl).await
    }
    async fn hash_get_all(&self, key: &str) -> Result<HashMap<String, Vec<u8>>, CacheError> {
        self.inner.hash_get_all(key).await
    }
    async fn hash_get(&self, key: &str, field: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.inner.hash_get(key, field).await
    }
    /// The pauses: before the `memory` field of a turn record is written, after its `llm`.
    async fn hash_set(
        &self,
        key: &str,
        field: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let record = key.starts_with("turn:");
        if record && field == records::MEMORY && !self.before_memory_record.is_zero() {
            tokio::time::sleep(self.before_memory_record).await;
        }
        let r = self.inner.hash_set(key, field, value, ttl).await;
        if record && field == records::LLM && !self.after_llm.is_zero() {
            tokio::time::sleep(self.after_llm).await;
        }
        if record && field == records::REPLIED && !self.after_reply.is_zero() {
            tokio::time::sleep(self.after_reply).await;
        }
        r
    }
    async fn lease(
        &self,
        key: &str,
        field: &str,
        holder: &str,
        lease: Duration,
        ttl: Duration,
    ) -> Result<Option<String>, CacheError> {
        self.inner.lease(key, field, holder, lease, ttl).await
    }
    async fn release(&self, key: &str, field: &str, holder: &str) -> Result<(), CacheError> {
        self.inner.release(key, field, holder).await
    }
    async fn mark_and_prune(
        &self,
        record: &str,
        field: &str,
        value: &[u8],
        record_ttl: Duration,
        list: &str,
        needle: &str,
    ) -> Result<u64, CacheError> {
        self.inner
            .mark_and_prune(record, field, value, record_ttl, list, needle)
            .await
    }
    async fn set_nx(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, CacheError> {
        self.inner.set_nx(key, value, ttl).await
    }
    async fn del(&self, keys: &[&str]) -> Result<(), CacheError> {
        self.inner.del(keys).await
    }
    async fn append_once(
        &self,
        list: &str,
        entries: &[Vec<u8>],
        keep: usize,
        list_ttl: Duration,
        record: &str,
        done: &str,
        unless: &str,
        record_ttl: Duration,
    ) -> Result<Appended, CacheError> {
        let r = self
            .inner
            .append_once(
                list, entries, keep, list_ttl, record, done, unless, record_ttl,
            )
            .await;
        if record.starts_with("turn:") && done == records::HISTORY && !self.after_history.is_zero()
        {
            tokio::time::sleep(self.after_history).await;
        }
        r
    }
    async fn list_tail(&self, list: &str, n: usize) -> Result<Vec<Vec<u8>>, CacheError> {
        self.inner.list_tail(list, n).await
    }
    async fn hash_del(&self, key: &str, fields: &[&str]) -> Result<u64, CacheError> {
        self.inner.hash_del(key, fields).await
    }
    async fn index_add(
        &self,
        index: &str,
        members: &[(String, Duration)],
    ) -> Result<(), CacheError> {
        self.inner.index_add(index, members).await
    }
    async fn index_members(&self, index: &str) -> Result<Vec<String>, CacheError> {
        self.inner.index_members(index).await
    }
    async fn delete_matching(&self, pattern: &str) -> Result<u64, CacheError> {
        self.inner.delete_matching(pattern).await
    }
    async fn heartbeat(
        &self,
        registry: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        self.inner.heartbeat(registry, member, ttl).await
    }
    async fn alive(&self, registry: &str, max_age: Duration) -> Result<Vec<String>, CacheError> {
        self.inner.alive(registry, max_age).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn is_shared(&self) -> bool {
        self.inner.is_shared()
    }
}
