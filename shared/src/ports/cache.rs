//! The cache port: Redis in the fleet, in-process when embedded. Keys are given without the
//! fleet prefix; the implementation adds `WHISPERFLEET_REDIS_PREFIX`, so fleets (and tests)
//! can share one Redis. Implementations keep every call short: a slow or dead cache degrades
//! a turn (no request cache, no history), it never stalls one.

use crate::retry::{RetryAction, Retryable};
use std::time::Duration;

use std::collections::HashMap;

use async_trait::async_trait;

/// What [`Cache::append_once`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    Appended,
    /// `done` was already set: an earlier delivery appended.
    AlreadyDone,
    /// `unless` was set (the turn was abandoned): nothing appended.
    Refused,
}

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Redis unreachable or too slow: retryable, and callers degrade instead.
    #[error("cache unavailable: {0}")]
    Unavailable(String),
    #[error("cache refused the command: {0}")]
    Command(String),
}

impl Retryable for CacheError {
    /// Unavailability is worth another try (callers degrade meanwhile); a refused command is not.
    fn retry_action(&self) -> RetryAction {
        match self {
            Self::Unavailable(_) => RetryAction::Retry,
            _ => RetryAction::DontRetry,
        }
    }
}

#[async_trait]
pub trait Cache: Send + Sync + 'static {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError>;
    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError>;
    /// Sets only if absent; true when this call set it.
    async fn set_nx(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, CacheError>;
    async fn del(&self, keys: &[&str]) -> Result<(), CacheError>;
    /// All fields of a hash; empty when the key does not exist.
    async fn hash_get_all(&self, key: &str) -> Result<HashMap<String, Vec<u8>>, CacheError>;
    async fn hash_get(&self, key: &str, field: &str) -> Result<Option<Vec<u8>>, CacheError>;
    /// Sets one field and (re)sets the whole key's TTL.
    async fn hash_set(
        &self,
        key: &str,
        field: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), CacheError>;
    /// Takes or renews a lease kept in `field` of the hash `key`: succeeds (`None`) when the
    /// field is empty, its lease has run out, or `holder` already holds it; then it is held by
    /// `holder` for `lease` (the server's clock decides). Otherwise returns the holder.
    /// Sets the key's TTL to `ttl` either way it is written.
    async fn lease(
        &self,
        key: &str,
        field: &str,
        holder: &str,
        lease: Duration,
        ttl: Duration,
    ) -> Result<Option<String>, CacheError>;
    /// Gives a lease back, if `holder` still holds it.
    async fn release(&self, key: &str, field: &str, holder: &str) -> Result<(), CacheError>;
    /// Atomically: unless `record` has `done` or `unless`, append `entries` to the list, keep
    /// its last `keep` items, refresh its TTL and set `done` in `record` (with `record_ttl`).
    /// This is what makes a redelivered turn never write its history twice, and a turn
    /// whose reply nobody will see never write it at all.
    #[allow(clippy::too_many_arguments)]
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
    ) -> Result<Appended, CacheError>;
    /// Atomically: sets `field` of `record` to `value` (with `record_ttl`) and removes from
    /// `list` every item that contains `needle`; returns how many it removed. How a turn is
    /// marked abandoned and its history taken back in one step.
    async fn mark_and_prune(
        &self,
        record: &str,
        field: &str,
        value: &[u8],
        record_ttl: Duration,
        list: &str,
        needle: &str,
    ) -> Result<u64, CacheError>;
    /// The last `n` items of a list, oldest first.
    async fn list_tail(&self, list: &str, n: usize) -> Result<Vec<Vec<u8>>, CacheError>;
    /// Removes fields of a hash; returns how many were there.
    async fn hash_del(&self, key: &str, fields: &[&str]) -> Result<u64, CacheError>;
    /// Adds `members` to the index `index`, each alive for its own TTL (by the cache's
    /// clock; adding a member again extends it), drops members whose time is up, and keeps
    /// the index at least as long as its longest-lived member. An index is one key (a
    /// sorted set scored by expiry in Redis), so it names the keys that belong to someone
    /// without a keyspace scan, and it is bounded by its members' TTLs.
    async fn index_add(
        &self,
        index: &str,
        members: &[(String, Duration)],
    ) -> Result<(), CacheError>;
    /// The live members of `index` (empty when it does not exist).
    async fn index_members(&self, index: &str) -> Result<Vec<String>, CacheError>;
    /// Removes every key matching `pattern` (glob, unprefixed); returns how many. Walks the
    /// keyspace: for tests and fixed patterns only, never a turn's path and never a pattern
    /// made of user-supplied text (user data is found through indexes, see
    /// `records::identity_index`).
    async fn delete_matching(&self, pattern: &str) -> Result<u64, CacheError>;
    /// Registers `member` in the registry `registry` as alive now, by the cache's own clock,
    /// and keeps the registry `ttl` longer. A registry is one key (a sorted set scored by
    /// heartbeat time in Redis), so reading who is alive costs one call, not a keyspace scan.
    async fn heartbeat(
        &self,
        registry: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), CacheError>;
    /// The members of `registry` whose last heartbeat is younger than `max_age` (by the
    /// cache's clock); older ones are removed on the way.
    async fn alive(&self, registry: &str, max_age: Duration) -> Result<Vec<String>, CacheError>;
    fn describe(&self) -> String;
    /// Whether other processes see what this cache holds (Redis: yes; the embedded cache:
    /// no). A per-process cache cannot carry news from other processes, such as a character
    /// import, so callers that rely on that must not trust it for it.
    fn is_shared(&self) -> bool {
        true
    }
}
