//! The Redis cache (the fleet's): one multiplexed, auto-reconnecting connection per process,
//! made lazily so a process starts (degraded) while Redis is down. Every call has a short
//! timeout: a slow or dead Redis degrades a turn, it never stalls one.
//!
//! **Bounded, and never stuck on a dead connection.** Each call — waiting for a connection
//! (re)made by the manager included — runs under `REDIS_TIMEOUT_MS` ([`RedisCache::bounded`]).
//! The manager reconnects by itself only when a connection reports an error; a connection
//! that merely stops answering (a hung server, a network or proxy that drops packets) would
//! time out every call forever while looking alive. So a call that times out replaces the
//! whole manager with a fresh lazy one: the next call connects anew, and the old connection
//! is closed once the calls still on it have timed out.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};
use whisperfleet_shared::config::redact_secret_url;
use whisperfleet_shared::ports::cache::{Appended, Cache, CacheError};

/// Connection trouble is `Unavailable` (callers degrade); anything else is a refused command.
fn classify(e: redis::RedisError) -> CacheError {
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        CacheError::Unavailable(e.to_string())
    } else {
        CacheError::Command(e.to_string())
    }
}

pub struct RedisCache {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// The current manager and its generation (so that of many calls timing out on one dead
    /// connection, only the first replaces it).
    conn: Mutex<(u64, ConnectionManager)>,
    timeout: Duration,
    prefix: String,
    url: SecretString,
}

// KEYS: list, record. ARGV: done, unless, record_ttl_ms, keep, list_ttl_ms, entries…
// Returns 1 appended, 0 already done, 2 refused.
const APPEND_ONCE: &str = r"
if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return 2 end
if redis.call('HSETNX', KEYS[2], ARGV[1], '1') == 0 then return 0 end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
for i = 6, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[4]), -1)
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
";

// KEYS: record. ARGV: field, holder, lease_ms, ttl_ms. The value is `<until_ms> <holder>`.
// Returns false when taken or renewed, else the current holder.
const LEASE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local sp = string.find(cur, ' ', 1, true)
  local untl = tonumber(string.sub(cur, 1, sp - 1))
  local who = string.sub(cur, sp + 1)
  if who ~= ARGV[2] and untl > now then return who end
end
redis.call('HSET', KEYS[1], ARGV[1], tostring(now + tonumber(ARGV[3])) .. ' ' .. ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return false
";

// KEYS: record. ARGV: field, holder.
const RELEASE: &str = r"
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local sp = string.find(cur, ' ', 1, true)
  if string.sub(cur, sp + 1) == ARGV[2] then redis.call('HDEL', KEYS[1], ARGV[1]) end
end
return 0
";

// KEYS: record, list. ARGV: field, value, record_ttl_ms, needle.
const MARK_AND_PRUNE: &str = r"
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
local removed = 0
for _, item in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  if string.find(item, ARGV[4], 1, true) then
    removed = removed + redis.call('LREM', KEYS[2], 0, item)
  end
end
return removed
";

// KEYS: registry. ARGV: member, ttl_ms. Scored by the server's clock (milliseconds), so
// the clocks of the processes that beat and read never have to agree.
const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
";

// KEYS: registry. ARGV: max_age_ms. Drops members at least max_age old, returns the rest.
const ALIVE: &str = r"
local t = redis.call('TIME')
local oldest = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', oldest)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. oldest, '+inf')
";

// KEYS: index. ARGV: member, ttl_ms, member, ttl_ms, … Each member scored by its expiry
// (server clock); expired members dropped; the index lives as long as its longest member.
const INDEX_ADD: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local longest = 0
for i = 1, #ARGV, 2 do
  local ttl = tonumber(ARGV[i + 1])
  redis.call('ZADD', KEYS[1], 'GT', now + ttl, ARGV[i])
  if ttl > longest then longest = ttl end
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('PTTL', KEYS[1]) < longest then redis.call('PEXPIRE', KEYS[1], longest) end
return 0
";

// KEYS: index. Returns the members whose expiry is still ahead.
const INDEX_MEMBERS: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
return redis.call('ZRANGEBYSCORE', KEYS[1], '(' .. now, '+inf')
";

fn ms(d: Duration) -> u64 {
    d.as_millis().clamp(1, u128::from(u64::MAX)) as u64
}

impl RedisCache {
    /// Does not need Redis to be up: the connection is made on first use and remade after
    /// failures, so a worker starts (degraded) while Redis is down. `timeout` bounds every
    /// call (`REDIS_TIMEOUT_MS`).
    pub fn new(url: SecretString, prefix: &str, timeout: Duration) -> Result<Self, CacheError> {
        let client = redis::Client::open(url.expose_secret())
            .map_err(|e| CacheError::Command(format!("invalid redis url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
            .map_err(classify)?;
        Ok(Self {
            client,
            config,
            conn: Mutex::new((0, conn)),
            timeout,
            prefix: prefix.to_string(),
            url,
        })
    }

    /// The current connection (a cheap clone of the manager) and its generation.
    fn conn(&self) -> (u64, ConnectionManager) {
        let guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        (guard.0, guard.1.clone())
    }

    /// Runs one call made on the connection of generation `generation`, within the timeout;
    /// a timeout (ours or the manager's) replaces that connection, see the module doc.
    async fn bounded<T>(
        &self,
        generation: u64,
        call: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, CacheError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                if e.is_timeout() {
                    self.replace(generation);
                }
                Err(classify(e))
            }
            Err(_) => {
                self.replace(generation);
                Err(CacheError::Unavailable(format!(
                    "no answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
        }
    }

    /// A fresh lazy manager instead of generation `generation`, unless already replaced.
    fn replace(&self, generation: u64) {
        let mut guard = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        if guard.0 != generation {
            return;
        }
        match ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone()) {
            Ok(fresh) => {
                *guard = (generation + 1, fresh);
                tracing::debug!("redis timed out; the next call connects anew");
            }
            Err(e) => tracing::warn!(error = %e, "could not make a new redis connection manager"),
        }
    }

    fn k(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let (g, mut c) = self.conn();
        self.bounded(g, redis::cmd("GET").arg(self.k(key)).query_async(&mut c))
            .await
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        let (g, mut c) = self.conn();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.k(key))
            .arg(value)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        self.bounded(g, cmd.query_async(&mut c)).await
    }

    async fn set_nx(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, CacheError> {
        let (g, mut c) = self.conn();
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.k(key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        let r: Option<String> = self.bounded(g, cmd.query_async(&mut c)).await?;
        Ok(r.is_some())
    }

    async fn del(&self, keys: &[&str]) -> Result<(), CacheError> {
        if keys.is_empty() {
            return Ok(());
        }
        let (g, mut c) = self.conn();
        let mut cmd = redis::cmd("DEL");
        for k in keys {
            cmd.arg(self.k(k));
        }
        let _: i64 = self.bounded(g, cmd.query_async(&mut c)).await?;
        Ok(())
    }

    async fn hash_get_all(&self, key: &str) -> Result<HashMap<String, Vec<u8>>, CacheError> {
        let (g, mut c) = self.conn();
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(self.k(key));
        self.bounded(g, cmd.query_async(&mut c)).await
    }

    async fn hash_get(&self, key: &str, field: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let (g, mut c) = self.conn();
        let mut cmd = redis::cmd("HGET");
        cmd.arg(self.k(key)).arg(field);
        self.bounded(g, cmd.query_async(&mut c)).await
    }

    async fn hash_set(
        &self,
        key: &str,
        field: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let (g, mut c) = self.conn();
        let key = self.k(key);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&key)
            .arg(field)
            .arg(value)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ms(ttl))
            .ignore();
        let _: () = self.bounded(g, pipe.query_async(&mut c)).await?;
        Ok(())
    }

    async fn lease(
        &self,
        key: &str,
        field: &str,
        holder: &str,
        lease: Duration,
        ttl: Duration,
    ) -> Result<Option<String>, CacheError> {
        let (g, mut c) = self.conn();
        let script = redis::Script::new(LEASE);
        let mut inv = script.key(self.k(key));
        inv.arg(field).arg(holder).arg(ms(lease)).arg(ms(ttl));
        self.bounded(g, inv.invoke_async(&mut c)).await
    }

    async fn release(&self, key: &str, field: &str, holder: &str) -> Result<(), CacheError> {
        let (g, mut c) = self.conn();
        let script = redis::Script::new(RELEASE);
        let mut inv = script.key(self.k(key));
        inv.arg(field).arg(holder);
        let _: i64 = self.bounded(g, inv.invoke_async(&mut c)).await?;
        Ok(())
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
        let (g, mut c) = self.conn();
        let script = redis::Script::new(APPEND_ONCE);
        let mut inv = script.key(self.k(list));
        inv.key(self.k(record))
            .arg(done)
            .arg(unless)
            .arg(ms(record_ttl))
            .arg(keep.max(1))
            .arg(ms(list_ttl));
        for e in entries {
            inv.arg(e.as_slice());
        }
        let n: i64 = self.bounded(g, inv.invoke_async(&mut c)).await?;
        Ok(match n {
            1 => Appended::Appended,
            2 => Appended::Refused,
            _ => Appended::AlreadyDone,
        })
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
        let (g, mut c) = self.conn();
        let script = redis::Script::new(MARK_AND_PRUNE);
        let mut inv = script.key(self.k(record));
        inv.key(self.k(list))
            .arg(field)
            .arg(value)
            .arg(ms(record_ttl))
            .arg(needle);
        self.bounded(g, inv.invoke_async(&mut c)).await
    }

    async fn list_tail(&self, list: &str, n: usize) -> Result<Vec<Vec<u8>>, CacheError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let (g, mut c) = self.conn();
        let mut cmd = redis::cmd("LRANGE");
        cmd.arg(self.k(list)).arg(-(n as i64)).arg(-1);
        self.bounded(g, cmd.query_async(&mut c)).await
    }

    async fn hash_del(&self, key: &str, fields: &[&str]) -> Result<u64, CacheError> {
        if fields.is_empty() {
            return Ok(0);
        }
        let (g, mut c) = self.conn();
        let mut cmd = redis::cmd("HDEL");
        cmd.arg(self.k(key)).arg(fields);
        self.bounded(g, cmd.query_async(&mut c)).await
    }

    async fn index_add(
        &self,
        index: &str,
        members: &[(String, Duration)],
    ) -> Result<(), CacheError> {
        if members.is_empty() {
            return Ok(());
        }
        let (g, mut c) = self.conn();
        let script = redis::Script::new(INDEX_ADD);
        let mut inv = script.key(self.k(index));
        for (m, ttl) in members {
            inv.arg(m).arg(ms(*ttl));
        }
        self.bounded(g, inv.invoke_async::<i64>(&mut c))
            .await
            .map(drop)
    }

    async fn index_members(&self, index: &str) -> Result<Vec<String>, CacheError> {
        let (g, mut c) = self.conn();
        let script = redis::Script::new(INDEX_MEMBERS);
        let inv = script.key(self.k(index));
        self.bounded(g, inv.invoke_async(&mut c)).await
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64, CacheError> {
        let keys = self.scan(pattern).await?;
        let mut removed = 0u64;
        for chunk in keys.chunks(500) {
            let (g, mut c) = self.conn();
            let mut cmd = redis::cmd("DEL");
            cmd.arg(chunk);
            let n: u64 = self.bounded(g, cmd.query_async(&mut c)).await?;
            removed += n;
        }
        Ok(removed)
    }

    async fn heartbeat(
        &self,
        registry: &str,
        member: &str,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let (g, mut c) = self.conn();
        let script = redis::Script::new(HEARTBEAT);
        let mut inv = script.key(self.k(registry));
        inv.arg(member).arg(ms(ttl));
        self.bounded(g, inv.invoke_async(&mut c)).await
    }

    async fn alive(&self, registry: &str, max_age: Duration) -> Result<Vec<String>, CacheError> {
        let (g, mut c) = self.conn();
        let script = redis::Script::new(ALIVE);
        let mut inv = script.key(self.k(registry));
        inv.arg(ms(max_age));
        self.bounded(g, inv.invoke_async(&mut c)).await
    }

    fn describe(&self) -> String {
        format!(
            "redis at {} (prefix {:?})",
            redact_secret_url(&self.url),
            self.prefix
        )
    }
}

impl RedisCache {
    /// Every (prefixed) key matching `pattern` (unprefixed), by `SCAN`: each round trip is
    /// bounded, the whole walk is as long as the keyspace. For `delete_matching` only (the
    /// privacy command and tests), never on a turn's or a sample's path.
    async fn scan(&self, pattern: &str) -> Result<Vec<String>, CacheError> {
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (g, mut c) = self.conn();
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(self.k(pattern))
                .arg("COUNT")
                .arg(500);
            let (next, keys): (u64, Vec<String>) = self.bounded(g, cmd.query_async(&mut c)).await?;
            out.extend(keys);
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }
}
