//! The request-scoped cache: one load per key per turn, with DataLoader/singleflight
//! semantics.
//!
//! - Concurrent loads of the same key inside one turn share one call (a `OnceCell` per key).
//! - Errors are not cached: the next caller tries again.
//! - Values are also written to the [`Cache`] as field `<key>` of the turn's record
//!   (`turn:<turn_id>`, see [`crate::records`]), so a turn that is
//!   redelivered to another worker reuses what the first attempt finished (above all the LLM
//!   answer: a crash after the LLM call neither pays twice nor answers differently).
//! - The scope dies with the turn (drop), and the Redis copies expire by TTL.
//! - Hits are counted by level: in-process (this turn loaded the key already, or is loading
//!   it) and the backing cache (an earlier attempt of this turn finished it), so a
//!   dashboard tells sharing within a turn from work a redelivery did not repeat.

use std::any::Any;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::OnceCell;

use crate::ports::cache::Cache;

type Cell = Arc<OnceCell<Arc<dyn Any + Send + Sync>>>;

pub struct RequestCache {
    turn_id: String,
    backing: Option<Arc<dyn Cache>>,
    cells: Mutex<HashMap<String, Cell>>,
    local_hits: AtomicU32,
    backing_hits: AtomicU32,
    misses: AtomicU32,
    round_trips: AtomicU32,
}

impl RequestCache {
    pub fn new(turn_id: impl Into<String>, backing: Option<Arc<dyn Cache>>) -> Self {
        Self {
            turn_id: turn_id.into(),
            backing,
            cells: Mutex::new(HashMap::new()),
            local_hits: AtomicU32::new(0),
            backing_hits: AtomicU32::new(0),
            misses: AtomicU32::new(0),
            round_trips: AtomicU32::new(0),
        }
    }

    /// Returns the value for `key`, calling `loader` at most once per turn across all
    /// concurrent callers (unless it fails, in which case the next caller retries).
    /// With `persist = Some(ttl)` the value is also kept in the backing cache for a
    /// redelivered turn; `None` keeps it in this process only (for values that have their
    /// own cross-request cache, like characters).
    pub async fn load<T, E, F, Fut>(
        &self,
        key: &str,
        persist: Option<Duration>,
        loader: F,
    ) -> Result<T, E>
    where
        T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let cell = {
            let mut cells = self.cells.lock().expect("request cache lock");
            cells.entry(key.to_string()).or_default().clone()
        };
        if let Some(v) = cell.get() {
            self.local_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(downcast::<T>(v));
        }
        let mut ran_here = false;
        let v = cell
            .get_or_try_init(|| async {
                ran_here = true;
                if persist.is_some()
                    && let Some(v) = self.backing_get::<T>(key).await
                {
                    self.backing_hits.fetch_add(1, Ordering::Relaxed);
                    return Ok(Arc::new(v) as Arc<dyn Any + Send + Sync>);
                }
                self.misses.fetch_add(1, Ordering::Relaxed);
                let v = loader().await?;
                if let Some(ttl) = persist {
                    self.backing_set(key, &v, ttl).await;
                }
                Ok(Arc::new(v) as Arc<dyn Any + Send + Sync>)
            })
            .await?;
        if !ran_here {
            // Waited on another caller's load: shared in this process, so a local hit.
            self.local_hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(downcast::<T>(v))
    }

    async fn backing_get<T: DeserializeOwned>(&self, key: &str) -> Option<T> {
        let backing = self.backing.as_ref()?;
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        match backing
            .hash_get(&crate::records::turn_key(&self.turn_id), key)
            .await
        {
            Ok(Some(bytes)) => serde_json::from_slice(&bytes).ok(),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(error = %e, key, "request cache read failed; loading directly");
                None
            }
        }
    }

    async fn backing_set<T: Serialize>(&self, key: &str, v: &T, ttl: Duration) {
        let Some(backing) = self.backing.as_ref() else {
            return;
        };
        let Ok(bytes) = serde_json::to_vec(v) else {
            return;
        };
        self.round_trips.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = backing
            .hash_set(&crate::records::turn_key(&self.turn_id), key, &bytes, ttl)
            .await
        {
            tracing::debug!(error = %e, key, "request cache write failed");
        }
    }

    /// Hits at either level.
    pub fn hits(&self) -> u32 {
        self.local_hits() + self.backing_hits()
    }

    /// Served in this process: the key was loaded (or being loaded) in this turn already.
    pub fn local_hits(&self) -> u32 {
        self.local_hits.load(Ordering::Relaxed)
    }

    /// Served from the backing cache (Redis): an earlier attempt of this turn finished it.
    pub fn backing_hits(&self) -> u32 {
        self.backing_hits.load(Ordering::Relaxed)
    }

    pub fn misses(&self) -> u32 {
        self.misses.load(Ordering::Relaxed)
    }

    pub fn round_trips(&self) -> u32 {
        self.round_trips.load(Ordering::Relaxed)
    }
}

fn downcast<T: Clone + 'static>(v: &Arc<dyn Any + Send + Sync>) -> T {
    v.downcast_ref::<T>()
        .expect("one key is always loaded as one type")
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn concurrent_loads_share_one_call_and_errors_are_not_cached() {
        let rc = RequestCache::new("t1", None);
        let calls = AtomicUsize::new(0);
        let load = || async {
            calls.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            Ok::<_, String>(42u32)
        };
        let results = futures::future::join_all(
            (0..10).map(|_| rc.load("k", Some(Duration::from_secs(1)), load)),
        )
        .await;
        assert!(results.iter().all(|r| r.as_ref() == Ok(&42)));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(rc.misses(), 1);
        assert_eq!(rc.hits(), 9);
        assert_eq!(
            (rc.local_hits(), rc.backing_hits()),
            (9, 0),
            "shared in-process"
        );

        let err: Result<u32, String> = rc
            .load("bad", None, || async { Err("boom".to_string()) })
            .await;
        assert!(err.is_err());
        let ok: Result<u32, String> = rc.load("bad", None, || async { Ok(7) }).await;
        assert_eq!(ok, Ok(7));
    }
}
