//! Redis: reachable, its version, an eviction policy that never drops what must not be lost
//! (ARCHITECTURE.md, "Redis keys": turn records and history carry TTLs, so only
//! `noeviction` keeps them from being evicted like caches), how full it is, and the gateway
//! registry, read without pruning it (the sampler's `alive` drops stale members; a doctor
//! only looks).

use secrecy::{ExposeSecret, SecretString};
use whisperfleet_shared::config::Config;
use whisperfleet_shared::topology;

use super::{Check, Status, host_port};

const B: &str = "redis";
const VAR: &str = "WHISPERFLEET_REDIS_URL";

/// The checks, and the ids of the gateways alive in the registry (`None` when it could not
/// be read).
pub async fn checks(config: &Config, url: &SecretString) -> (Vec<Check>, Option<Vec<String>>) {
    let raw = url.expose_secret();
    let at = host_port(raw, 6379);
    // Connecting is bounded like every Redis call of the fleet, with room for a slow link:
    // a doctor may wait a moment longer than a turn would.
    let timeout = config
        .backends
        .redis_timeout
        .max(std::time::Duration::from_secs(2));
    let client = match redis::Client::open(raw) {
        Ok(c) => c,
        Err(e) => {
            return (
                vec![Check::fail(
                    B,
                    "reachable",
                    format!("{VAR} is not a Redis URL: {e}"),
                    format!("set {VAR}=redis://host:6379 (or rediss://, with :password@)"),
                )],
                None,
            );
        }
    };
    let conn = tokio::time::timeout(timeout, client.get_multiplexed_async_connection()).await;
    let mut conn = match conn {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            let words = if e.is_connection_refusal() {
                format!("connection refused at {at}")
            } else if e.kind() == redis::ErrorKind::AuthenticationFailed {
                return (
                    vec![Check::fail(
                        B,
                        "reachable",
                        format!("{VAR}: Redis at {at} refused the password"),
                        format!("put the right password in {VAR} (redis://:password@host:6379)"),
                    )],
                    None,
                );
            } else {
                format!("cannot connect to {at}: {e}")
            };
            return (
                vec![Check::fail(
                    B,
                    "reachable",
                    format!("{VAR}: {words} — is Redis running?"),
                    format!("start Redis, or point {VAR} at the host and port it listens on"),
                )],
                None,
            );
        }
        Err(_) => {
            return (
                vec![Check::fail(
                    B,
                    "reachable",
                    format!("{VAR}: no answer from {at} within {timeout:?}"),
                    format!("check {VAR} and the network to {at}"),
                )],
                None,
            );
        }
    };
    let mut out = Vec::new();
    let info: Result<String, _> =
        tokio::time::timeout(timeout, redis::cmd("INFO").query_async(&mut conn))
            .await
            .map_err(|_| "no answer to INFO".to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
    let info = match info {
        Ok(i) => parse_info(&i),
        Err(e) => {
            out.push(Check::fail(
                B,
                "reachable",
                format!("{VAR}: Redis at {at} did not answer INFO: {e}"),
                format!("check that the user in {VAR} may run INFO"),
            ));
            return (out, None);
        }
    };
    let get = |k: &str| info.get(k).map(String::as_str);
    out.push(Check::ok(
        B,
        "reachable",
        format!(
            "Redis {} at {at}",
            get("redis_version").unwrap_or("(version unknown)")
        ),
    ));
    let policy = get("maxmemory_policy").unwrap_or("unknown");
    let max: u64 = get("maxmemory").and_then(|v| v.parse().ok()).unwrap_or(0);
    let used: u64 = get("used_memory").and_then(|v| v.parse().ok()).unwrap_or(0);
    out.push(eviction(policy, max, used));

    let registry = format!(
        "{}{}",
        config.backends.redis_prefix,
        topology::GATEWAY_REGISTRY
    );
    let gateways = alive_gateways(&mut conn, &registry, timeout).await;
    if let Err(e) = &gateways {
        out.push(Check::warn(
            B,
            "gateway registry",
            format!("cannot read {registry}: {e}"),
            format!("check that the user in {VAR} may read keys under WHISPERFLEET_REDIS_PREFIX"),
        ));
    }
    (out, gateways.ok())
}

/// The eviction-policy verdict. Only `noeviction` keeps Redis from dropping turn records and
/// history, which carry TTLs like the caches do (so `volatile-*` would pick them too); a
/// Redis near `maxmemory` refuses writes, and turns run degraded: worth a warning. Without
/// `maxmemory` nothing is evicted, but the host's memory is the limit.
pub fn eviction(policy: &str, maxmemory: u64, used: u64) -> Check {
    const MB: u64 = 1 << 20;
    if policy != "noeviction" {
        return Check::fail(
            B,
            "eviction policy",
            format!(
                "maxmemory-policy is {policy}: when full, Redis would evict turn records and \
                 history (a redelivered turn would pay the LLM and answer twice)"
            ),
            "redis-cli CONFIG SET maxmemory-policy noeviction (and `maxmemory-policy noeviction` \
             in redis.conf, or `--maxmemory-policy noeviction` on its command line)",
        );
    }
    if maxmemory == 0 {
        return Check::new(
            B,
            "eviction policy",
            Status::Ok,
            format!(
                "noeviction, no maxmemory set ({} MiB used): the host's memory is the limit",
                used / MB
            ),
        );
    }
    let full = used as f64 / maxmemory as f64;
    let words = format!(
        "noeviction, {} of {} MiB used ({:.0}%)",
        used / MB,
        maxmemory / MB,
        full * 100.0
    );
    if full >= 0.9 {
        Check::warn(
            B,
            "eviction policy",
            format!("{words}: near full, Redis will refuse writes and turns run degraded"),
            "give Redis more memory (maxmemory) or shorten WHISPERFLEET_TURN_RECORD_TTL_S; never enable eviction",
        )
    } else {
        Check::ok(B, "eviction policy", words)
    }
}

fn parse_info(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.trim_end().split_once(':'))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Members of the registry whose heartbeat is younger than [`topology::GATEWAY_ALIVE`], by
/// the server's clock (as the heartbeats are scored).
async fn alive_gateways(
    conn: &mut redis::aio::MultiplexedConnection,
    registry: &str,
    timeout: std::time::Duration,
) -> Result<Vec<String>, String> {
    let read = async {
        let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await?;
        let now_ms = secs * 1000 + micros / 1000;
        let oldest = now_ms.saturating_sub(topology::GATEWAY_ALIVE.as_millis() as u64);
        redis::cmd("ZRANGEBYSCORE")
            .arg(registry)
            .arg(format!("({oldest}"))
            .arg("+inf")
            .query_async::<Vec<String>>(conn)
            .await
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_noeviction_passes_and_a_nearly_full_redis_warns() {
        for policy in [
            "allkeys-lru",
            "volatile-lru",
            "volatile-ttl",
            "allkeys-random",
            "volatile-lfu",
        ] {
            let c = eviction(policy, 1 << 30, 0);
            assert_eq!(c.status, Status::Fail, "{policy}: {c:?}");
            assert!(c.message.contains(policy), "{c:?}");
            assert!(
                c.fix.as_deref().is_some_and(|f| f.contains("noeviction")),
                "{c:?}"
            );
        }
        assert_eq!(eviction("noeviction", 0, 5 << 20).status, Status::Ok);
        assert_eq!(
            eviction("noeviction", 100 << 20, 10 << 20).status,
            Status::Ok
        );
        let near = eviction("noeviction", 100 << 20, 95 << 20);
        assert_eq!(near.status, Status::Warn, "{near:?}");
        assert!(near.message.contains("95%"), "{near:?}");
    }

    #[test]
    fn info_is_read_by_key() {
        let i = parse_info(
            "# Server\r\nredis_version:7.0.15\r\n\r\n# Memory\r\nmaxmemory_policy:noeviction\r\n",
        );
        assert_eq!(i["redis_version"], "7.0.15");
        assert_eq!(i["maxmemory_policy"], "noeviction");
    }
}
