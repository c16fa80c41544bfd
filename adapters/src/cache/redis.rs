//! The Redis cache (the fleet's): one multiplexed, auto-reconnecting connection per process,
//! made lazily so a process starts (degraded) while Redis is down. Every call has a short
//! timeout: a slow or dead Redis degrades a turn, it never stalls one.

use std::time::Duration;

use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use secrecy::{ExposeSecret, SecretString};
use whisperfleet_shared::config::redact_secret_url;
use whisperfleet_shared::ports::cache::{Cache, CacheError};

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
        let n: i64 = inv.invoke_async(&mut c).await.map_err(classify)?;
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
