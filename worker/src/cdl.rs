//! Stage `cdl_load`: the character, from the cross-request cache or the store.
//!
//! Two cache levels, so a character is read from PostgreSQL at most once per change, not
//! once per turn or per component:
//! - in-process: `Arc<Character>` by normalized name;
//! - Redis: `cdl:ver:<name>` (the current version) and `cdl:doc:<name>` (the document).
//!
//! Each turn asks Redis for the version (one small GET). Equal to the local copy → use it.
//! Otherwise the Redis document if it has that version, else one store load. `characters
//! import` SETs the new version after committing, and a worker only ever writes the version
//! with NX, so a worker that loaded the old row just before an import can never make the old
//! version current again. A `fleet.control` message additionally drops the local copy.
//! With Redis down, the local copy is trusted for `LOCAL_TTL`, then the store is asked.
//!
//! The turn asks a [`CharacterSource`]; [`CharacterCache`] is the fleet's. The bench passes
//! an uncached one to reproduce the seed, which loaded the character from PostgreSQL for
//! every prompt component of every turn.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use whisperfleet_shared::character::Character;
use whisperfleet_shared::ports::cache::Cache;
use whisperfleet_shared::ports::characters::{CharacterStore, StoreError};

const LOCAL_TTL: Duration = Duration::from_secs(5);
const REDIS_TTL: Duration = Duration::from_secs(24 * 3600);

pub fn version_key(name: &str) -> String {
    format!("cdl:ver:{name}")
}

pub fn doc_key(name: &str) -> String {
    format!("cdl:doc:{name}")
}

/// Where a turn's character comes from, by normalized name.
#[async_trait]
pub trait CharacterSource: Send + Sync {
    /// The character named `name`, or `None` when unknown; every store load and cache
    /// round trip it makes is counted in `counts`.
    async fn get(
        &self,
        name: &str,
        counts: &CdlCounts,
    ) -> Result<Option<Arc<Character>>, StoreError>;

    /// Forgets any copy of `name` (a `fleet.control` invalidation).
    fn invalidate(&self, _name: &str) {}
}

struct Entry {
    character: Arc<Character>,
    checked: Instant,
}

pub struct CharacterCache {
    store: Arc<dyn CharacterStore>,
    redis: Option<Arc<dyn Cache>>,
    local: Mutex<HashMap<String, Entry>>,
}

/// Per-turn counts this stage contributes.
#[derive(Default)]
pub struct CdlCounts {
    /// Loads from the store (PostgreSQL).
    pub queries: AtomicU32,
    pub redis_round_trips: AtomicU32,
    /// Served by this worker's own copy, still current.
    pub local_hits: AtomicU32,
    /// Served by Redis's shared copy.
    pub redis_hits: AtomicU32,
}

impl CharacterCache {
    pub fn new(store: Arc<dyn CharacterStore>, redis: Option<Arc<dyn Cache>>) -> Self {
        Self {
            store,
            redis,
            local: Mutex::new(HashMap::new()),
        }
    }

    fn local_get(&self, name: &str) -> Option<(Arc<Character>, Instant)> {
        self.local
            .lock()
            .expect("cdl cache lock")
            .get(name)
            .map(|e| (e.character.clone(), e.checked))
    }

    fn local_put(&self, c: Arc<Character>) {
        self.local.lock().expect("cdl cache lock").insert(
            c.normalized_name.clone(),
            Entry {
                character: c,
                checked: Instant::now(),
            },
        );
    }

    async fn load_from_store(
        &self,
        name: &str,
        counts: &CdlCounts,
    ) -> Result<Option<Arc<Character>>, StoreError> {
        counts.queries.fetch_add(1, Ordering::Relaxed);
        Ok(self.store.load(name).await?.map(Arc::new))
    }

    /// A local copy younger than `LOCAL_TTL`, else one store load (kept locally).
    async fn local_or_store(
        &self,
        name: &str,
        local: Option<(Arc<Character>, Instant)>,
        counts: &CdlCounts,
    ) -> Result<Option<Arc<Character>>, StoreError> {
        if let Some((c, checked)) = local
            && checked.elapsed() < LOCAL_TTL
        {
            counts.local_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(c));
        }
        let c = self.load_from_store(name, counts).await?;
        if let Some(c) = &c {
            self.local_put(c.clone());
        }
        Ok(c)
    }
}

#[async_trait]
impl CharacterSource for CharacterCache {
    async fn get(
        &self,
        name: &str,
        counts: &CdlCounts,
    ) -> Result<Option<Arc<Character>>, StoreError> {
        let local = self.local_get(name);
        let Some(redis) = &self.redis else {
            // No shared cache (embedded): local copies live until invalidated by control
            // messages, re-checked every LOCAL_TTL.
            return self.local_or_store(name, local, counts).await;
        };
        counts.redis_round_trips.fetch_add(1, Ordering::Relaxed);
        let current = match redis.get(&version_key(name)).await {
            Ok(v) => v.and_then(|b| String::from_utf8(b).ok()?.parse::<i64>().ok()),
            Err(e) => {
                tracing::debug!(error = %e, "redis down: character cache falls back to local copies");
                return self.local_or_store(name, local, counts).await;
            }
        };
        if let (Some(v), Some((c, _))) = (current, &local)
            && c.version == v
        {
            counts.local_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(Some(c.clone()));
        }
        if let Some(v) = current {
            counts.redis_round_trips.fetch_add(1, Ordering::Relaxed);
            if let Ok(Some(doc)) = redis.get(&doc_key(name)).await
                && let Ok(c) = serde_json::from_slice::<Character>(&doc)
                && c.version == v
            {
                counts.redis_hits.fetch_add(1, Ordering::Relaxed);
                let c = Arc::new(c);
                self.local_put(c.clone());
                return Ok(Some(c));
            }
        }
        let Some(c) = self.load_from_store(name, counts).await? else {
            return Ok(None);
        };
        self.local_put(c.clone());
        if let Ok(doc) = serde_json::to_vec(&*c) {
            counts.redis_round_trips.fetch_add(2, Ordering::Relaxed);
            let _ = redis.set(&doc_key(name), &doc, REDIS_TTL).await;
            let _ = redis
                .set_nx(
                    &version_key(name),
                    c.version.to_string().as_bytes(),
                    REDIS_TTL,
                )
                .await;
        }
        Ok(Some(c))
    }

    fn invalidate(&self, name: &str) {
        self.local.lock().expect("cdl cache lock").remove(name);
    }
}

/// What `characters import` does after committing a new version: make it current for every
/// worker (overwrites the version; the document is rebuilt by the next reader).
pub async fn publish_version(
    redis: &dyn Cache,
    name: &str,
    version: i64,
) -> Result<(), whisperfleet_shared::ports::cache::CacheError> {
    redis
        .set(
            &version_key(name),
            version.to_string().as_bytes(),
            REDIS_TTL,
        )
        .await?;
    redis.del(&[&doc_key(name)]).await
}
