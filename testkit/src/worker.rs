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
use whisperfleet_shared::config::Config;
use whisperfleet_shared::ports::cache::{Cache, CacheError};
use whisperfleet_shared::ports::{MemoryError, MemoryPoint, MemoryScope, VectorMemory};
use whisperfleet_shared::{shutdown, telemetry};
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
    // Innermost, so the seed's extra queries are counted too.
    ports.memory.memory = Arc::new(CountedMemory {
        inner: ports.memory.memory,
        counts,
    });
    let (mut ports, strategies) = pipeline.apply(config, ports)?;
    if args.pause_after_llm_ms > 0 || args.pause_after_memory_ms > 0 {
        ports.cache = Arc::new(PausingCache {
            inner: ports.cache,
            after_llm: Duration::from_millis(args.pause_after_llm_ms),
            before_memory_record: Duration::from_millis(args.pause_after_memory_ms),
        });
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
}

impl MemoryCounts {
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "memory_recent": self.recent.load(Ordering::Relaxed),
            "memory_search": self.search.load(Ordering::Relaxed),
            "memory_upsert": self.upsert.load(Ordering::Relaxed),
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
    async fn forget(&self, user_id: &str, character: Option<&str>) -> Result<u64, MemoryError> {
        self.inner.forget(user_id, character).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// Fault injection at the turn's records: the turn writes `turn:<id>:llm` (the LLM answer)
/// right after the LLM answered and before the reply, and `turn:<id>:memory` right after
/// memory_store, so pausing there opens exactly the windows the tests need.
struct PausingCache {
    inner: Arc<dyn Cache>,
    after_llm: Duration,
    before_memory_record: Duration,
}

fn turn_record(key: &str, what: &str) -> bool {
    key.starts_with("turn:") && key.strip_suffix(what).is_some_and(|k| k.ends_with(':'))
}

#[async_trait]
impl Cache for PausingCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        self.inner.get(key).await
    }
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        if !self.before_memory_record.is_zero() && turn_record(key, "memory") {
            tokio::time::sleep(self.before_memory_record).await;
        }
        let r = self.inner.set(key, value, ttl).await;
        if !self.after_llm.is_zero() && turn_record(key, "llm") {
            tokio::time::sleep(self.after_llm).await;
        }
        r
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
        marker: &str,
        marker_ttl: Duration,
    ) -> Result<bool, CacheError> {
        self.inner
            .append_once(list, entries, keep, list_ttl, marker, marker_ttl)
            .await
    }
    async fn list_tail(&self, list: &str, n: usize) -> Result<Vec<Vec<u8>>, CacheError> {
        self.inner.list_tail(list, n).await
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_match_only_the_turn_records() {
        assert!(turn_record("turn:0190-ab:llm", "llm"));
        assert!(turn_record("turn:0190-ab:memory", "memory"));
        assert!(!turn_record("turn:0190-ab:replied", "llm"));
        assert!(!turn_record("cdl:doc:nora", "memory"));
        assert!(!turn_record("turn:0190-ab:xllm", "llm"));
    }
}
