//! The cache port (Redis in the fleet, in-process when embedded) and its Redis
//! implementation. Keys are given without the fleet prefix; the implementation adds
//! `WHISPERFLEET_REDIS_PREFIX`, so fleets (and tests) can share one Redis.
//!
//! Every call has a short timeout: a slow or dead Redis degrades a turn (no request cache,
//! no history), it never stalls one.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};

use crate::config::redact_secret_url;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// Redis unreachable or too slow: retryable, and callers degrade instead.
    #[error("cache unavailable: {0}")]
    Unavailable(String),
    #[error("cache refused the command: {0}")]
    Command(String),
}

impl From<redis::RedisError> for CacheError {
    fn from(e: redis::RedisError) -> Self {
        if e.is_io_error()
            || e.is_timeout()
            || e.is_connection_dropped()
            || e.is_connection_refusal()
        {
            Self::Unavailable(e.to_string())
        } else {
            Self::Command(e.to_string())
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
    /// Atomically: unless `marker` exists, append `entries` to the list, keep its last `keep`
    /// items, refresh its TTL and set `marker`. Returns whether it appended. This is what
    /// makes a redelivered turn never write its history twice.
    async fn append_once(
        &self,
        list: &str,
        entries: &[Vec<u8>],
        keep: usize,
        list_ttl: Duration,
        marker: &str,
        marker_ttl: Duration,
    ) -> Result<bool, CacheError>;
    /// The last `n` items of a list, oldest first.
    async fn list_tail(&self, list: &str, n: usize) -> Result<Vec<Vec<u8>>, CacheError>;
    /// Removes every key matching `pattern` (glob, unprefixed); returns how many.
    async fn delete_matching(&self, pattern: &str) -> Result<u64, CacheError>;
    /// Keys matching `pattern` (glob, unprefixed), returned unprefixed.
    async fn keys_matching(&self, pattern: &str) -> Result<Vec<String>, CacheError>;
    fn describe(&self) -> String;
    /// Whether other processes see what this cache holds (Redis: yes; the embedded cache:
    /// no). A per-process cache cannot carry news from other processes, such as a character
    /// import, so callers that rely on that must not trust it for it.
    fn is_shared(&self) -> bool {
        true
    }
}

pub struct RedisCache {
    conn: ConnectionManager,
    prefix: String,
    url: SecretString,
}

const APPEND_ONCE: &str = r"
if redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  for i = 4, #ARGV do redis.call('RPUSH', KEYS[1], ARGV[i]) end
  redis.call('LTRIM', KEYS[1], -tonumber(ARGV[2]), -1)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
return 0
";

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
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
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
            .await?)
    }

    async fn set(&self, key: &str, value: &[u8], ttl: Duration) -> Result<(), CacheError> {
        let mut c = self.conn.clone();
        let () = redis::cmd("SET")
            .arg(self.k(key))
            .arg(value)
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64)
            .query_async(&mut c)
            .await?;
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
            .await?;
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
        let _: i64 = cmd.query_async(&mut c).await?;
        Ok(())
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
        let mut c = self.conn.clone();
        let script = redis::Script::new(APPEND_ONCE);
        let mut inv = script.key(self.k(list));
        inv.key(self.k(marker))
            .arg(marker_ttl.as_millis().max(1) as u64)
            .arg(keep.max(1))
            .arg(list_ttl.as_millis().max(1) as u64);
        for e in entries {
            inv.arg(e.as_slice());
        }
        let n: i64 = inv.invoke_async(&mut c).await?;
        Ok(n == 1)
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
            .await?)
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
            let n: u64 = redis::cmd("DEL").arg(chunk).query_async(&mut c).await?;
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
                .await?;
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
