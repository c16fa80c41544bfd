//! The seed's "before" (`whisperfleet bench --pipeline naive`), built as wrappers around the
//! fleet's ports and as turn strategies, so the same turn code runs it:
//! - no cross-request character cache: [`UncachedCharacters`] loads from the store every time;
//! - no request cache: [`ReloadingComposition`] loads the character again for each of the six
//!   CDL components (≈7 loads per turn with `cdl_load`'s). The LLM answer's per-turn record
//!   stays, like the other records that keep a reply single: they are the fleet's
//!   exactly-once guarantee, and hiding them would only make the Redis counters lie;
//! - sequential composition (the components one after another);
//! - the recent emotional states queried again while the message is stored:
//!   [`RepeatRecentQueries`] (the seed's "5+ redundant queries": 6 per turn in all);
//! - memory stored and every metric point written to InfluxDB before the reply:
//!   [`SeedOrder`] and [`PointByPoint`] (one synchronous write per point, ≈6 per turn).
//!
//! Each is one switch of a [`Pipeline`] spec, so the bench can also measure one alone
//! (`optimized,request_cache=off`). Only the testkit worker binary builds these.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use whisperfleet_adapters::connect::TurnPorts as Ports;
use whisperfleet_adapters::metrics::influx::InfluxSink;
use whisperfleet_shared::character::Character;
use whisperfleet_shared::config::Config;
use whisperfleet_shared::lineproto::{self, Point};
use whisperfleet_shared::ports::characters::{CharacterStore, StoreError};
use whisperfleet_shared::ports::{
    MemoryError, MemoryPoint, MemoryScope, MetricsSink, VectorMemory,
};
use whisperfleet_worker::cdl::{CdlCounts, CharacterSource};
use whisperfleet_worker::compose::{
    self, CDL_COMPONENTS, CdlComponent, ComposeContext, Composed, Composition, Reload,
};
use whisperfleet_worker::finish::{Finish, MetricsNotSent, NotPublished, Tail, TurnMetrics};
use whisperfleet_worker::startup::Strategies;

/// Recent-emotional-state queries the seed made while storing one message (its field
/// report: "5+ redundant queries during message storage").
pub const SEED_RECENT_QUERIES_IN_STORE: u32 = 5;

/// Which of the fleet's optimisations a bench worker runs with; each `false` swaps in the
/// seed's way of doing that part.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pipeline {
    /// One load per key per turn (request-scoped cache).
    pub request_cache: bool,
    /// Cross-request character cache (in-process + Redis).
    pub character_cache: bool,
    /// Components built concurrently (matters only when they load: `request_cache=off`).
    pub parallel_compose: bool,
    /// Recent emotional states fetched once per turn (else again while storing memory).
    pub recent_states_once: bool,
    /// Memory stored after the reply left (else before it).
    pub memory_after_reply: bool,
    /// One metric event per turn for the metrics-writer (else every point written to
    /// InfluxDB individually and synchronously before the reply).
    pub batched_metrics: bool,
}

impl Default for Pipeline {
    fn default() -> Self {
        Self {
            request_cache: true,
            character_cache: true,
            parallel_compose: true,
            recent_states_once: true,
            memory_after_reply: true,
            batched_metrics: true,
        }
    }
}

impl Pipeline {
    pub fn naive() -> Self {
        Self {
            request_cache: false,
            character_cache: false,
            parallel_compose: false,
            recent_states_once: false,
            memory_after_reply: false,
            batched_metrics: false,
        }
    }

    /// `optimized` or `naive`, then any `switch=on|off` overrides, comma-separated.
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut opts = Self::default();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "optimized" => opts = Self::default(),
                "naive" => opts = Self::naive(),
                _ => {
                    let (key, value) = part
                        .split_once('=')
                        .ok_or_else(|| format!("pipeline switch {part:?} is not key=on|off"))?;
                    let on = match value {
                        "on" | "true" => true,
                        "off" | "false" => false,
                        _ => {
                            return Err(format!(
                                "pipeline switch {key}: use on or off, not {value:?}"
                            ));
                        }
                    };
                    let slot = match key {
                        "request_cache" | "cache" => &mut opts.request_cache,
                        "character_cache" => &mut opts.character_cache,
                        "parallel_compose" => &mut opts.parallel_compose,
                        "recent_states_once" => &mut opts.recent_states_once,
                        "memory_after_reply" => &mut opts.memory_after_reply,
                        "batched_metrics" => &mut opts.batched_metrics,
                        _ => {
                            return Err(format!(
                                "unknown pipeline switch {key:?} (request_cache, character_cache, \
                                 parallel_compose, recent_states_once, memory_after_reply, batched_metrics)"
                            ));
                        }
                    };
                    *slot = on;
                }
            }
        }
        Ok(opts)
    }

    /// Wraps `ports` and picks the turn's strategies for this pipeline; the default
    /// pipeline leaves both as the fleet runs them.
    pub fn apply(&self, config: &Config, mut ports: Ports) -> anyhow::Result<(Ports, Strategies)> {
        let mut strategies = Strategies::default();
        if !self.character_cache {
            strategies.characters = Some(Arc::new(UncachedCharacters {
                store: ports.store.clone(),
            }));
        }
        if !self.request_cache {
            strategies.composition = Some(Arc::new(ReloadingComposition {
                parallel: self.parallel_compose,
            }));
        }
        if !self.recent_states_once {
            ports.memory.memory = Arc::new(RepeatRecentQueries {
                inner: ports.memory.memory,
                extra: SEED_RECENT_QUERIES_IN_STORE,
                n: config.worker.recent_emotional_states,
            });
        }
        if !self.memory_after_reply || !self.batched_metrics {
            strategies.finish = Some(Arc::new(SeedOrder {
                memory_first: !self.memory_after_reply,
                metrics_first: !self.batched_metrics,
            }));
        }
        if !self.batched_metrics {
            let url = config.backends.influx_url.as_ref().context(
                "batched_metrics=off writes InfluxDB directly: set WHISPERFLEET_INFLUX_URL",
            )?;
            let sink = InfluxSink::new(
                secrecy::ExposeSecret::expose_secret(url),
                &config.backends.influx_org,
                &config.backends.influx_bucket,
                config.backends.influx_token.clone(),
                false,
                Duration::from_secs(10),
            )
            .context("building the per-point InfluxDB sink")?;
            strategies.metrics = Some(Arc::new(PointByPoint {
                sink: Arc::new(sink),
            }));
        }
        Ok((ports, strategies))
    }
}

/// Every character lookup is a store load (the seed had no character cache).
pub struct UncachedCharacters {
    pub store: Arc<dyn CharacterStore>,
}

#[async_trait]
impl CharacterSource for UncachedCharacters {
    async fn get(
        &self,
        name: &str,
        counts: &CdlCounts,
    ) -> Result<Option<Arc<Character>>, StoreError> {
        counts
            .queries
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.store.load(name).await?.map(Arc::new))
    }
}

/// The seed's component factories: each loads the character itself (one after another
/// unless `parallel`), instead of using the one `cdl_load` loaded.
pub struct ReloadingComposition {
    pub parallel: bool,
}

#[async_trait]
impl Composition for ReloadingComposition {
    async fn compose(
        &self,
        loaded: &Arc<Character>,
        ctx: &ComposeContext,
        reload: &Reload<'_>,
    ) -> Result<Composed, StoreError> {
        let build = |c: CdlComponent| async move {
            let character = reload.load().await?;
            Ok::<_, StoreError>((c.build)(&character, ctx))
        };
        let built = if self.parallel {
            futures::future::join_all(CDL_COMPONENTS.map(build)).await
        } else {
            let mut out = Vec::with_capacity(CDL_COMPONENTS.len());
            for c in CDL_COMPONENTS {
                out.push(build(c).await);
            }
            out
        };
        let mut parts = Vec::with_capacity(CDL_COMPONENTS.len());
        let mut degraded = Vec::new();
        for (c, r) in CDL_COMPONENTS.iter().zip(built) {
            match r {
                Ok(part) => parts.extend(part),
                Err(e) if c.required => return Err(e),
                Err(e) => degraded.push(format!("component: {e}")),
            }
        }
        // The history and post-history part reads the character the turn loaded, as the
        // seed's final assembly did.
        Ok(compose::assemble(loaded, parts, ctx, degraded))
    }
}

/// Vector memory that, while a message is stored, queries the user's recent emotional
/// states `extra` more times, as the seed's memory storage did.
pub struct RepeatRecentQueries {
    pub inner: Arc<dyn VectorMemory>,
    pub extra: u32,
    /// States each query asks for.
    pub n: usize,
}

#[async_trait]
impl VectorMemory for RepeatRecentQueries {
    async fn upsert(&self, points: &[MemoryPoint]) -> Result<(), MemoryError> {
        let scope = points.first().map(|p| MemoryScope {
            character: p.character.clone(),
            identity: p.identity.clone(),
            include_dm: p.is_dm,
        });
        let repeats = async {
            if let Some(scope) = &scope {
                for _ in 0..self.extra {
                    let _ = self.inner.recent(scope, self.n).await;
                }
            }
        };
        let (stored, ()) = tokio::join!(self.inner.upsert(points), repeats);
        stored
    }
    async fn search(
        &self,
        scope: &MemoryScope,
        vector: &[f32],
        k: usize,
    ) -> Result<Vec<(MemoryPoint, f32)>, MemoryError> {
        self.inner.search(scope, vector, k).await
    }
    async fn recent(&self, scope: &MemoryScope, n: usize) -> Result<Vec<MemoryPoint>, MemoryError> {
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

/// The seed's order: memory stored and/or the metric points written before the reply.
pub struct SeedOrder {
    pub memory_first: bool,
    pub metrics_first: bool,
}

#[async_trait]
impl Finish for SeedOrder {
    async fn finish(&self, tail: &mut Tail<'_>) -> Result<(), NotPublished> {
        if self.memory_first {
            tail.store_memory().await;
        }
        if self.metrics_first {
            tail.send_metrics().await;
        }
        tail.publish_reply().await?;
        // Both run at most once: these are no-ops for what already ran above.
        tail.store_memory().await;
        tail.send_metrics().await;
        Ok(())
    }
}

/// The seed's metrics path: every point its own synchronous InfluxDB write.
pub struct PointByPoint {
    pub sink: Arc<dyn MetricsSink>,
}

#[async_trait]
impl TurnMetrics for PointByPoint {
    async fn send(&self, points: Vec<Point>) -> Result<(), MetricsNotSent> {
        for p in &points {
            let line = lineproto::encode(std::slice::from_ref(p));
            if let Err(e) = self.sink.write(&[line.as_str()]).await {
                tracing::warn!(error = %e, "metric point not written");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_specs_parse() {
        assert_eq!(Pipeline::parse("optimized").unwrap(), Pipeline::default());
        assert_eq!(Pipeline::parse("naive").unwrap(), Pipeline::naive());
        let one = Pipeline::parse("optimized,cache=off").unwrap();
        assert!(!one.request_cache && one.character_cache);
        assert!(
            Pipeline::parse("naive,bogus=on")
                .unwrap_err()
                .contains("unknown")
        );
        assert!(Pipeline::parse("cache=maybe").is_err());
    }
}
