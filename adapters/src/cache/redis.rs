//! The Redis cache (the fleet's): one multiplexed, auto-reconnecting connection per process,
//! made lazily so a process starts (degraded) while Redis is down. Every call has a short
//! timeout: a slow or dead Redis degrades a turn, it never stalls one.

use std::collections::HashMap;
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
    conn: ConnectionManager,
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

fn ms(d: Duration) -> u64 {
    d.as_millis().clamp(1, u128::from(u64::MAX)) as u64
}

impl RedisCache {
    /// Does not need Redis to be up: the connection is made on first use and remade after
    /// failures, so a worker starts (degraded) while Redis is down.
    pub fn new(url: SecretString, prefix: &str) -> Result<Self, CacheError> {
        let client = redis::Client::open(url.expose_secret())
            .map_err(|e| CacheError::Command(format!("invalid redis url: {e}")))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(200));
        let conn = ConnectionManager::new_lazy_with_config(client, config).map_err(classify)?;
        Ok(Self {
            conn,
            prefix: prefix.to_string(),
            url,
        })
    }

    fn k(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

#[async_trait]
impl Cache for RedisCache {
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut c = self.conn.clone();
        Ok(redis::cmd("GET")
            .arg(self.k(key))
            .query_async(&mut c)
            .await
            .map_err(classify)?)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        let mut c = self.conn.clone();
        let () = redis::cmd("SET")
            .arg(self.k(key))
            .arg(value)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut c)
            .await
            .map_err(classify)?;
        Ok(())
    }

    async fn set_nx(&self, key: &str, value: &[u8], ttl: Duration) -> Result<bool, CacheError> {
        let mut c = self.conn.clone();
        let r: Option<String> = redis::cmd("SET")
            .arg(self.k(key))
            .arg(value)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut c)
            .await
            .map_err(classify)?;
        Ok(r.is_some())
    }

    async fn del(&self, keys: &[&str]) -> Result<(), CacheError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut c = self.conn.clone();
        let mut cmd = redis::cmd("DEL");
        for k in keys {
            cmd.arg(self.k(k));
        }
        let _: i64 = cmd.query_async(&mut c).await.map_err(classify)?;
        Ok(())
    }

    async fn hash_get_all(&self, key: &str) -> Result<HashMap<String, Vec<u8>>, CacheError> {
        let mut c = self.conn.clone();
        redis::cmd("HGETALL")
            .arg(self.k(key))
            .query_async(&mut c)
            .await
            .map_err(classify)
    }

    async fn hash_get(&self, key: &str, field: &str) -> Result<Option<Vec<u8>>, CacheError> {
        let mut c = self.conn.clone();
        redis::cmd("HGET")
            .arg(self.k(key))
            .arg(field)
            .query_async(&mut c)
            .await
            .map_err(classify)
    }

    async fn hash_set(
        &self,
        key: &str,
        field: &str,
        value: &[u8],
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let mut c = self.conn.clone();
        let key = self.k(key);
        let _: () = redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(&key)
            .arg(field)
            .arg(value)
            .ignore()
            .cmd("PEXPIRE")
            .arg(&key)
            .arg(ms(ttl))
            .ignore()
            .query_async(&mut c)
            .await
            .map_err(classify)?;
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
        let mut c = self.conn.clone();
        redis::Script::new(LEASE)
            .key(self.k(key))
            .arg(field)
            .arg(holder)
            .arg(ms(lease))
            .arg(ms(ttl))
            .invoke_async(&mut c)
            .await
            .map_err(classify)
    }

    async fn release(&self, key: &str, field: &str, holder: &str) -> Result<(), CacheError> {
        let mut c = self.conn.clone();
        let _: i64 = redis::Script::new(RELEASE)
            .key(self.k(key))
            .arg(field)
            .arg(holder)
            .invoke_async(&mut c)
            .await
            .map_err(classify)?;
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
        let mut c = self.conn.clone();
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
        let n: i64 = inv.invoke_async(&mut c).await.map_err(classify)?;
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
        let mut c = self.conn.clone();
        redis::Script::new(MARK_AND_PRUNE)
            .key(self.k(record))
            .key(self.k(list))
            .arg(field)
            .arg(value)
            .arg(ms(record_ttl))
            .arg(needle)
            .invoke_async(&mut c)
            .await
            .map_err(classify)
    }

    async fn list_tail(&self, list: &str, n: usize) -> Result<Vec<Vec<u8>>, CacheError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let mut c = self.conn.clone();
        Ok(redis::cmd("LRANGE")
            .arg(self.k(list))
            .arg(-(n as i64))
            .arg(-1)
            .query_async(&mut c)
            .await
            .map_err(classify)?)
    }

    async fn delete_matching(&self, pattern: &str) -> Result<u64, CacheError> {
        let keys: Vec<String> = self
            .keys_matching(pattern)
            .await?
            .iter()
            .map(|k| self.k(k))
            .collect();
        let mut c = self.conn.clone();
        let mut removed = 0u64;
        for chunk in keys.chunks(500) {
            let n: u64 = redis::cmd("DEL")
                .arg(chunk)
                .query_async(&mut c)
                .await
                .map_err(classify)?;
            removed += n;
        }
        Ok(removed)
    }

    async fn keys_matching(&self, pattern: &str) -> Result<Vec<String>, CacheError> {
        let mut c = self.conn.clone();
        let mut cursor: u64 = 0;
        let mut out = Vec::new();
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(self.k(pattern))
                .arg("COUNT")
                .arg(500)
                .query_async(&mut c)
                .await
                .map_err(classify)?;
            out.extend(
                keys.into_iter()
                    .filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_string)),
            );
            if next == 0 {
                return Ok(out);
            }
            cursor = next;
        }
    }

    fn describe(&self) -> String {
        format!(
            "redis at {} (prefix {:?})",
            redact_secret_url(&self.url),
            self.prefix
        )
    }
}
