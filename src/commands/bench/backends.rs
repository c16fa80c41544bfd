//! What the bench reads from the backends' side: an InfluxDB-API stand-in that counts
//! write requests, PostgreSQL's statistics, the Redis footprint, RabbitMQ's socket counts,
//! and the seeding of one user's memories for `--memory-scale`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context;
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use whisperfleet_adapters::characters::postgres::PgCharacterStore;
use whisperfleet_shared::config::Config;

/// Stores `n` memories of one HTTP user with `character` where this run's workers will
/// look (the embedded store in `data_dir`, or Qdrant when configured), embedded by the
/// workers' embedder so searches score them as they would real ones.
pub(super) async fn seed(
    config: &Config,
    data_dir: &Path,
    character: &str,
    user: &str,
    n: usize,
) -> anyhow::Result<()> {
    use whisperfleet_shared::identity::Identity;
    use whisperfleet_shared::ports::MemoryPoint;
    let mut cfg = config.clone();
    cfg.backends.data_dir = Some(data_dir.to_path_buf());
    let ports = whisperfleet_adapters::connect::memory(&cfg).await?;
    let identity = Identity::new("http", "", user);
    let character = whisperfleet_shared::character::normalize_name(character);
    let topics = [
        "kelp",
        "tides",
        "storms",
        "boats",
        "whales",
        "lighthouses",
        "nets",
    ];
    let now = chrono::Utc::now();
    for start in (0..n).step_by(500) {
        let texts: Vec<String> = (start..n.min(start + 500))
            .map(|i| {
                format!(
                    "Memory {i}: we talked about the {} and the week's {} near the harbour",
                    topics[i % topics.len()],
                    topics[(i / 7) % topics.len()]
                )
            })
            .collect();
        let vectors = ports.embedder.embed(&texts).await?;
        let points: Vec<MemoryPoint> = texts
            .into_iter()
            .zip(vectors)
            .enumerate()
            .map(|(j, (text, vector))| MemoryPoint {
                id: uuid::Uuid::new_v4(),
                character: character.clone(),
                identity: identity.clone(),
                role: if j % 2 == 0 { "user" } else { "assistant" }.into(),
                text,
                emotion: "neutral".into(),
                intensity: 0.3,
                channel_id: "bench-0".into(),
                is_dm: false,
                timestamp: now - chrono::Duration::seconds((n - start - j) as i64),
                vector,
            })
            .collect();
        ports.memory.upsert(&points).await?;
    }
    Ok(())
}

/// RabbitMQ's count of socket reads and writes (`recv_cnt`, `send_cnt`) on the bench vhost's
/// connections, from `rabbitmqctl` when the broker runs on this machine; `None` otherwise.
/// Read outside the CPU window: rabbitmqctl is an Erlang VM of its own.
pub(super) fn broker_packets(config: &Config) -> Option<(u64, u64)> {
    use secrecy::ExposeSecret;
    let url = config.backends.amqp_url.as_ref()?;
    // Parsed as `doctor`'s probe parses it (lapin's AMQP URI: the vhost percent-decoded).
    let uri: lapin::uri::AMQPUri = url.expose_secret().parse().ok()?;
    if !matches!(
        uri.authority.host.as_str(),
        "127.0.0.1" | "localhost" | "::1" | "[::1]"
    ) {
        return None;
    }
    let vhost = uri.vhost;
    let out = Command::new("rabbitmqctl")
        .args(["-q", "list_connections", "vhost", "recv_cnt", "send_cnt"])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let (mut recv, mut sent) = (0, 0);
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let cols: Vec<&str> = line.split('\t').collect();
        if let [v, r, s] = cols[..]
            && v == vhost
        {
            recv += r.parse::<u64>().unwrap_or(0);
            sent += s.parse::<u64>().unwrap_or(0);
        }
    }
    Some((recv, sent))
}

/// A local InfluxDB v2 write API that counts the requests it receives.
pub(super) struct InfluxStandIn {
    pub(super) url: String,
    pub(super) requests: Arc<AtomicU64>,
    pub(super) stop: CancellationToken,
}

pub(super) async fn influx_stand_in() -> anyhow::Result<InfluxStandIn> {
    let requests = Arc::new(AtomicU64::new(0));
    let r = requests.clone();
    let app = axum::Router::new().route(
        "/api/v2/write",
        axum::routing::post(move || {
            let r = r.clone();
            async move {
                r.fetch_add(1, Ordering::Relaxed);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let stop = CancellationToken::new();
    let s = stop.clone();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { s.cancelled().await })
            .await;
    });
    Ok(InfluxStandIn {
        url,
        requests,
        stop,
    })
}

/// Index scans of the table only character loads read, as PostgreSQL counts them.
pub(super) async fn character_loads(store: &PgCharacterStore) -> anyhow::Result<i64> {
    let row = sqlx::query(
        "SELECT COALESCE(idx_scan, 0) + COALESCE(seq_scan, 0) AS n FROM pg_stat_user_tables \
         WHERE relname = 'personality_traits'",
    )
    .fetch_one(store.pool())
    .await?;
    Ok(row.get::<i64, _>("n"))
}

/// What the run left in Redis under its prefix, right after it: keys, and bytes as
/// `MEMORY USAGE` counts them, all and the turn records (`turn:*`) alone. Divided by the
/// turns it is what a turn costs Redis while its record lives (`TURN_RECORD_TTL_S`);
/// conversations' history lists are per conversation, not per turn.
#[derive(Default)]
pub(super) struct RedisFootprint {
    pub(super) keys: u64,
    pub(super) bytes: u64,
    pub(super) record_bytes: u64,
}

pub(super) async fn redis_footprint(
    url: &secrecy::SecretString,
    prefix: &str,
) -> anyhow::Result<RedisFootprint> {
    use secrecy::ExposeSecret;
    const FOOTPRINT: &str = r"
local n, b, r = 0, 0, 0
for _, k in ipairs(redis.call('KEYS', ARGV[1] .. '*')) do
  local u = redis.call('MEMORY', 'USAGE', k) or 0
  n = n + 1
  b = b + u
  if string.sub(k, 1, #ARGV[1] + 5) == ARGV[1] .. 'turn:' then r = r + u end
end
return {n, b, r}
";
    let client = redis::Client::open(url.expose_secret()).context("opening Redis")?;
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to Redis")?;
    let (keys, bytes, record_bytes): (u64, u64, u64) = redis::Script::new(FOOTPRINT)
        .arg(prefix)
        .invoke_async(&mut c)
        .await
        .context("measuring the run's Redis keys")?;
    Ok(RedisFootprint {
        keys,
        bytes,
        record_bytes,
    })
}
