//! `whisperfleet bench`: drives turns through the whole fleet — gateway HTTP API →
//! RabbitMQ → worker processes → replies — against `mock-llm` with a fixed latency, and
//! reports where every millisecond went, for the `optimized` pipeline and the seed's
//! `naive` "before". The worker processes are the testkit worker: the fleet's turn code,
//! with the seed's wrappers around its ports for `naive` (`whisperfleet_testkit::naive`).
//!
//! Counts come from the backends' side: character SQL loads from PostgreSQL's own
//! statistics (`pg_stat_user_tables`, read after the workers exit so their stats are
//! flushed), InfluxDB write requests from a local InfluxDB-API stand-in that counts what it
//! receives, emotion-state queries from each worker's count of the vector-memory calls its
//! backend received (written when it exits). With `--stream both` each pipeline runs
//! twice, its turns asking for a streamed (SSE) answer or not, and the report sets
//! `first_visible` against `end_to_end` for the two, with what the fleet adds to the model's
//! first token (`first_visible − llm_first_token`); `--llm-ttft-ms`, `--llm-tokens-per-s`
//! and `--llm-reply-tokens` make the mock LLM write like a model. Needs RabbitMQ, Redis and PostgreSQL
//! configured; use a vhost without other workers (they would take the bench's turns).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use sqlx::Row;
use tokio_util::sync::CancellationToken;
use whisperfleet_adapters::characters::postgres::PgCharacterStore;
use whisperfleet_shared::character::Character;
use whisperfleet_shared::config::Config;
use whisperfleet_shared::ports::characters::CharacterStore;
use whisperfleet_shared::wire::Stage;
use whisperfleet_testkit::mock_llm::{self, MockLlmOptions, MockReply, Pacing};

/// The character every bench turn talks to (shipped in the binary, so the bench runs anywhere).
const BENCH_CHARACTER: &str = include_str!("../../characters/nora-halvorsen.yaml");

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Measured turns per run (after a short warm-up).
    #[arg(long, default_value_t = 500)]
    pub turns: usize,
    /// Turns in flight at once (at most one per conversation).
    #[arg(long, default_value_t = 20)]
    pub concurrency: usize,
    /// Distinct conversations the turns are spread over.
    #[arg(long, default_value_t = 50)]
    pub conversations: usize,
    #[arg(long, default_value_t = 0)]
    pub llm_latency_ms: u64,
    /// The mock LLM's time to first token (after --llm-latency-ms).
    #[arg(long, default_value_t = 0)]
    pub llm_ttft_ms: u64,
    /// The mock LLM writes this many tokens (words) per second after the first.
    #[arg(long)]
    pub llm_tokens_per_s: Option<f64>,
    /// The mock LLM answers this many tokens (words) instead of echoing the user.
    #[arg(long)]
    pub llm_reply_tokens: Option<usize>,
    /// on | off | both: turns ask for a streamed answer (SSE) or not; `both` measures
    /// `first_visible` against `end_to_end` with and without streaming in one run.
    #[arg(long, default_value = "off")]
    pub stream: String,
    /// Worker processes; a list (`1,2,4`) measures scaling, one run per count.
    #[arg(long, default_value = "2", value_delimiter = ',')]
    pub workers: Vec<usize>,
    /// Turns each worker process runs at once (fixed, so adding workers is what scales).
    #[arg(long, default_value_t = 16)]
    pub worker_concurrency: u16,
    /// optimized | naive | both
    #[arg(long, default_value = "both")]
    pub pipeline: String,
    /// Extra pipeline switches for the optimized run, e.g. `--set cache=off`.
    #[arg(long = "set", value_name = "SWITCH=on|off")]
    pub set: Vec<String>,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Also write the JSON to this file.
    #[arg(long)]
    pub out: Option<PathBuf>,
}

pub async fn run(config: &Config, args: BenchArgs) -> anyhow::Result<()> {
    config.require_amqp("whisperfleet bench")?;
    config.require_redis("whisperfleet bench")?;
    let db = config.require_database("whisperfleet bench")?;
    if args.turns == 0 || args.concurrency == 0 || args.conversations == 0 {
        bail!("--turns, --concurrency and --conversations must be at least 1");
    }
    if args.workers.is_empty() || args.workers.contains(&0) {
        bail!("--workers takes counts of at least 1");
    }
    let pipelines: Vec<(&str, String)> = match args.pipeline.as_str() {
        "optimized" => vec![("optimized", optimized_spec(&args))],
        "naive" => vec![("naive", "naive".to_string())],
        "both" => vec![
            ("optimized", optimized_spec(&args)),
            ("naive", "naive".to_string()),
        ],
        other => bail!("--pipeline is optimized, naive or both, not {other:?}"),
    };
    let streams: Vec<bool> = match args.stream.as_str() {
        "off" => vec![false],
        "on" => vec![true],
        "both" => vec![false, true],
        other => bail!("--stream is on, off or both, not {other:?}"),
    };
    let worker_bin = sibling_binary("testkit-worker")?;
    let mut character: Character = serde_norway::from_str(BENCH_CHARACTER)?;
    character.validate().map_err(|e| anyhow::anyhow!(e))?;
    let store = PgCharacterStore::connect(db.clone(), 2, config.backends.database_timeout).await?;
    store
        .migrate()
        .await
        .context("migrating the bench database")?;
    store.upsert(&character).await?;

    let mut results = serde_json::Map::new();
    let mut scaling = serde_json::Map::new();
    let mut streaming = serde_json::Map::new();
    for (name, spec) in &pipelines {
        let mut per_count = serde_json::Map::new();
        for (i, &workers) in args.workers.iter().enumerate() {
            // Streaming on and off are compared at the first worker count.
            let modes = if i == 0 { &streams[..] } else { &streams[..1] };
            for &stream in modes {
                let r = run_one(
                    config,
                    &args,
                    spec,
                    workers,
                    &worker_bin,
                    &store,
                    &character,
                    stream,
                )
                .await?;
                if stream == streams[0] {
                    per_count.insert(workers.to_string(), json!(r["throughput_tps"]));
                }
                if i == 0 {
                    let key = if stream && streams.len() > 1 {
                        format!("{name}+stream")
                    } else {
                        (*name).to_string()
                    };
                    results.insert(key, r);
                }
            }
        }
        if streams.len() > 1
            && let (Some(off), Some(on)) =
                (results.get(*name), results.get(&format!("{name}+stream")))
        {
            let q = |v: &Value, stage: Stage, p: &str| v["stages"][stage.as_str()][p].clone();
            streaming.insert(
                (*name).to_string(),
                json!({
                    "first_visible": {
                        "stream_on": {"p50": q(on, Stage::FirstVisible, "p50"), "p99": q(on, Stage::FirstVisible, "p99")},
                        "stream_off": {"p50": q(off, Stage::FirstVisible, "p50"), "p99": q(off, Stage::FirstVisible, "p99")},
                    },
                    "end_to_end": {
                        "stream_on": {"p50": q(on, Stage::EndToEnd, "p50"), "p99": q(on, Stage::EndToEnd, "p99")},
                        "stream_off": {"p50": q(off, Stage::EndToEnd, "p50"), "p99": q(off, Stage::EndToEnd, "p99")},
                    },
                    "first_visible_minus_llm_first_token": on["first_words_overhead"].clone(),
                }),
            );
        }
        if args.workers.len() > 1 {
            scaling.insert((*name).to_string(), Value::Object(per_count));
        }
    }
    let mut ratio = serde_json::Map::new();
    if let (Some(o), Some(n)) = (results.get("optimized"), results.get("naive")) {
        for (key, stage, q) in [
            ("overhead_p50", Stage::Overhead, "p50"),
            ("overhead_p99", Stage::Overhead, "p99"),
            ("end_to_end_p50", Stage::EndToEnd, "p50"),
            ("worker_total_p50", Stage::WorkerTotal, "p50"),
        ] {
            let get = |v: &Value| v["stages"][stage.as_str()][q].as_f64();
            if let (Some(a), Some(b)) = (get(n), get(o))
                && b > 0.0
            {
                ratio.insert(key.into(), json!(a / b));
            }
        }
        if let (Some(a), Some(b)) = (n["throughput_tps"].as_f64(), o["throughput_tps"].as_f64())
            && a > 0.0
        {
            ratio.insert("throughput".into(), json!(b / a));
        }
    }
    let out = json!({
        "pipelines": results,
        "streaming": streaming,
        "ratio": ratio,
        "scaling": scaling,
        "machine": machine(),
        "command": std::env::args().collect::<Vec<_>>().join(" "),
        "date": chrono::Utc::now().to_rfc3339(),
    });
    if let Some(path) = &args.out {
        std::fs::write(path, serde_json::to_vec_pretty(&out)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&out)?);
    } else {
        print_tables(&out);
    }
    Ok(())
}

fn optimized_spec(args: &BenchArgs) -> String {
    std::iter::once("optimized".to_string())
        .chain(args.set.iter().cloned())
        .collect::<Vec<_>>()
        .join(",")
}

fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.with_file_name(name);
    if !p.exists() {
        bail!(
            "{} not found next to {}: build the workspace (cargo build --release --workspace --bins)",
            p.display(),
            exe.display()
        );
    }
    Ok(p)
}

/// A local InfluxDB v2 write API that counts the requests it receives.
struct InfluxStandIn {
    url: String,
    requests: Arc<AtomicU64>,
    stop: CancellationToken,
}

async fn influx_stand_in() -> anyhow::Result<InfluxStandIn> {
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
async fn character_loads(store: &PgCharacterStore) -> anyhow::Result<i64> {
    let row = sqlx::query(
        "SELECT COALESCE(idx_scan, 0) + COALESCE(seq_scan, 0) AS n FROM pg_stat_user_tables \
         WHERE relname = 'personality_traits'",
    )
    .fetch_one(store.pool())
    .await?;
    Ok(row.get::<i64, _>("n"))
}

struct Workers(Vec<Child>);

impl Workers {
    fn stop(&mut self) {
        for c in &self.0 {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .output();
        }
        for c in &mut self.0 {
            let _ = c.wait();
        }
        self.0.clear();
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn run_one(
    config: &Config,
    args: &BenchArgs,
    spec: &str,
    workers: usize,
    worker_bin: &PathBuf,
    store: &PgCharacterStore,
    character: &Character,
    stream: bool,
) -> anyhow::Result<Value> {
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let prefix = format!("{}bench-{run_id}:", config.backends.redis_prefix);
    let data_dir = std::env::temp_dir().join(format!("whisperfleet-bench-{run_id}"));
    let influx = influx_stand_in().await?;
    let mock = mock_llm::spawn(MockLlmOptions {
        latency: Duration::from_millis(args.llm_latency_ms),
        reply: args.llm_reply_tokens.map_or(MockReply::Echo, |n| {
            MockReply::Fixed(
                (0..n)
                    .map(|i| format!("word{i}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            )
        }),
        pacing: Pacing {
            ttft: Duration::from_millis(args.llm_ttft_ms),
            tokens_per_s: args.llm_tokens_per_s,
            break_after_tokens: None,
        },
        ..Default::default()
    })
    .await?;
    let mut cfg = config.clone();
    cfg.backends.redis_prefix = prefix.clone();
    cfg.gateway.id = format!("bench-{run_id}");
    cfg.gateway.http_addr = "127.0.0.1:0".into();
    // The bench measures the fleet, not the HTTP API's trust boundary: its own loopback
    // gateway takes its turns without a key and without a rate limit.
    cfg.gateway.http_api_keys = None;
    cfg.gateway.http_api_keys_file = None;
    cfg.gateway.http_rate_requests = 0;
    cfg.backends.influx_url = Some(influx.url.clone().into());
    cfg.metrics.sample_interval = Duration::from_secs(3600);
    cfg.gateway.max_queued_per_conversation = args.turns.max(16);

    // PostgreSQL publishes a backend's statistics when it exits: count from before the
    // workers start to after they stopped, over every turn they ran (warm-up included).
    let loads_before = character_loads(store).await?;
    // Worker processes: the testkit worker (the fleet's worker, wrapped for `spec`),
    // configured for this run; each writes its backend-side counts when it exits.
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let counts_file = |w: usize| data_dir.join(format!("worker-{w}-counts.json"));
    let mut children = Workers(Vec::new());
    for w in 0..workers {
        let child = Command::new(worker_bin)
            .args(["--pipeline", spec, "--counts-out"])
            .arg(counts_file(w))
            .envs(
                std::env::vars().filter(|(k, _)| k.starts_with("WHISPERFLEET_") || k == "RUST_LOG"),
            )
            .env("WHISPERFLEET_REDIS_PREFIX", &prefix)
            .env("WHISPERFLEET_GATEWAY_ID", format!("bench-{run_id}-w{w}"))
            .env("WHISPERFLEET_LLM_BASE_URL", mock.base_url())
            .env("WHISPERFLEET_LLM_MODEL", "mock")
            .env(
                "WHISPERFLEET_WORKER_CONCURRENCY",
                args.worker_concurrency.to_string(),
            )
            .env("WHISPERFLEET_INFLUX_URL", &influx.url)
            .env("WHISPERFLEET_DATA_DIR", &data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting a worker process")?;
        children.0.push(child);
    }
    let shutdown = CancellationToken::new();
    let writer = whisperfleet_metrics_writer::Application::build(&cfg).await?;
    let writer_task = tokio::spawn(writer.run_until_stopped(shutdown.clone()));
    let gateway = whisperfleet_gateway::startup::Application::build(&cfg).await?;
    let base = format!("http://{}", gateway.local_addr()?);
    let gateway_task = tokio::spawn(gateway.run_until_stopped(shutdown.clone()));

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .build()?;
    let turn = |i: usize| {
        let k = i % args.conversations;
        json!({"character": character.name, "user_id": format!("bench-{run_id}-{k}"),
               "channel_id": format!("bench-{k}"), "text": format!("Message {i}: how is the kelp forest doing this week?"),
               "stream": stream})
    };
    // Warm-up (not measured): every worker's caches, connections and the conversations.
    let warmup = args.conversations.min(args.turns).max(workers * 4);
    drive(
        &client,
        &base,
        (0..warmup).map(turn).collect(),
        args.concurrency,
        None,
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let influx_before = influx.requests.load(Ordering::Relaxed);
    let started = Instant::now();
    let replies = drive(
        &client,
        &base,
        (warmup..warmup + args.turns).map(turn).collect(),
        args.concurrency,
        Some(args.turns),
    )
    .await?;
    let elapsed = started.elapsed().as_secs_f64();
    // Let the metrics-writer flush, then stop the workers so PostgreSQL has their statistics.
    tokio::time::sleep(Duration::from_millis(500)).await;
    children.stop();
    shutdown.cancel();
    let _ = gateway_task.await;
    let _ = writer_task.await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let loads = character_loads(store).await? - loads_before;
    let footprint = match &config.backends.redis_url {
        Some(url) => redis_footprint(url, &prefix).await?,
        None => RedisFootprint::default(),
    };
    let influx_requests = influx.requests.load(Ordering::Relaxed) - influx_before;
    // Recent-emotional-state queries as the workers' memory backends received them.
    let mut recent_queries = 0u64;
    for w in 0..workers {
        let path = counts_file(w);
        let counts: Value = serde_json::from_slice(
            &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
        )?;
        recent_queries += counts["memory_recent"].as_u64().unwrap_or(0);
    }
    influx.stop.cancel();
    let _ = std::fs::remove_dir_all(&data_dir);

    let n = replies.len() as f64;
    let ok = replies.iter().filter(|r| r["outcome"] == "ok").count();
    let mut stages = serde_json::Map::new();
    for stage in Stage::ALL {
        let mut xs: Vec<f64> = replies
            .iter()
            .filter_map(|r| r["timings"][stage.as_str()].as_f64())
            .collect();
        if xs.is_empty() {
            continue;
        }
        xs.sort_by(f64::total_cmp);
        let pct = |p: f64| xs[((p / 100.0) * (xs.len() - 1) as f64).round() as usize];
        stages.insert(
            stage.to_string(),
            json!({"p50": pct(50.0), "p95": pct(95.0), "p99": pct(99.0)}),
        );
    }
    let mean = |key: &str| {
        replies
            .iter()
            .filter_map(|r| r["counters"][key].as_f64())
            .sum::<f64>()
            / n
    };
    let (hits, misses) = (mean("cache_hits"), mean("cache_misses"));
    let hit_rate = if hits + misses > 0.0 {
        hits / (hits + misses)
    } else {
        0.0
    };
    // What the fleet adds to the model's first token before the user sees it.
    let mut first_words: Vec<f64> = replies
        .iter()
        .filter_map(|r| {
            let t = &r["timings"];
            Some(t["first_visible"].as_f64()? - t["llm_first_token"].as_f64()?)
        })
        .collect();
    first_words.sort_by(f64::total_cmp);
    let first_words_overhead = if first_words.is_empty() {
        Value::Null
    } else {
        let pct =
            |p: f64| first_words[((p / 100.0) * (first_words.len() - 1) as f64).round() as usize];
        json!({"p50": pct(50.0), "p99": pct(99.0)})
    };
    Ok(json!({
        "pipeline": spec,
        "stream": stream,
        "first_words_overhead": first_words_overhead,
        "workers": workers,
        "turns": replies.len(),
        "ok": ok,
        "throughput_tps": n / elapsed,
        "stages": stages,
        "per_turn": {
            "cdl_queries": loads as f64 / (n + warmup as f64),
            "cdl_queries_reported": mean("cdl_queries"),
            "emotion_queries": recent_queries as f64 / (n + warmup as f64),
            "vector_searches": mean("memory_searches"),
            "influx_writes": influx_requests as f64 / n,
            "redis_round_trips": mean("redis_round_trips"),
            // Cache effectiveness: the request cache's hit rate, and where characters came
            // from (each turn's loads at each level, as the workers counted them).
            "request_cache_hit_rate": hit_rate,
            "request_cache_local_hits": mean("cache_local_hits"),
            "request_cache_redis_hits": mean("cache_redis_hits"),
            "character_local_hits": mean("cdl_local_hits"),
            "character_redis_hits": mean("cdl_redis_hits"),
            "llm_calls": mean("llm_calls"),
            "redis_keys": footprint.keys as f64 / (n + warmup as f64),
            "redis_bytes": footprint.bytes as f64 / (n + warmup as f64),
            "redis_record_bytes": footprint.record_bytes as f64 / (n + warmup as f64),
        },
    }))
}

/// What the run left in Redis under its prefix, right after it: keys, and bytes as
/// `MEMORY USAGE` counts them, all and the turn records (`turn:*`) alone. Divided by the
/// turns it is what a turn costs Redis while its record lives (`TURN_RECORD_TTL_S`);
/// conversations' history lists are per conversation, not per turn.
#[derive(Default)]
struct RedisFootprint {
    keys: u64,
    bytes: u64,
    record_bytes: u64,
}

async fn redis_footprint(
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

/// Sends `turns` with at most `concurrency` in flight; shows progress on stderr when asked.
async fn drive(
    client: &reqwest::Client,
    base: &str,
    turns: Vec<Value>,
    concurrency: usize,
    progress: Option<usize>,
) -> anyhow::Result<Vec<Value>> {
    use futures::StreamExt;
    let total = turns.len();
    let done = AtomicU64::new(0);
    let results: Vec<anyhow::Result<Value>> = futures::stream::iter(turns)
        .map(|t| {
            let done = &done;
            async move {
                let r = client
                    .post(format!("{base}/v1/turns"))
                    .json(&t)
                    .send()
                    .await?;
                let v = if t["stream"] == true {
                    done_event(r).await?
                } else {
                    r.json().await?
                };
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                if progress.is_some() && (d.is_multiple_of(10) || d as usize == total) {
                    let width = 30;
                    let filled = (d as usize * width) / total.max(1);
                    eprint!(
                        "\r  [{}{}] {d}/{total}",
                        "=".repeat(filled),
                        " ".repeat(width - filled)
                    );
                    let _ = std::io::stderr().flush();
                }
                Ok(v)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    if progress.is_some() {
        eprintln!();
    }
    let replies: Vec<Value> = results.into_iter().collect::<anyhow::Result<_>>()?;
    if let Some(bad) = replies.iter().find(|r| r["timings"].is_null()) {
        bail!("a bench turn failed: {bad}");
    }
    Ok(replies)
}

/// The reply of a streamed turn: its SSE body's `done` event (an `error` event fails).
async fn done_event(mut r: reqwest::Response) -> anyhow::Result<Value> {
    let mut parser = whisperfleet_shared::sse::SseParser::new();
    while let Some(chunk) = r.chunk().await? {
        for e in parser.feed(&chunk)? {
            match e.event.as_str() {
                "done" => return Ok(serde_json::from_str(&e.data)?),
                "error" => bail!("a streamed bench turn failed: {}", e.data),
                _ => {}
            }
        }
    }
    bail!("a streamed bench turn ended without a done event")
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "os": std::env::consts::OS,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

fn print_tables(out: &Value) {
    for (name, p) in out["pipelines"].as_object().into_iter().flatten() {
        println!(
            "\n{name}: {:.1} turns/s over {} turns ({} ok) with {} worker(s)",
            p["throughput_tps"].as_f64().unwrap_or(0.0),
            p["turns"],
            p["ok"],
            p["workers"]
        );
        println!(
            "  {:<14} {:>9} {:>9} {:>9}",
            "stage (ms)", "p50", "p95", "p99"
        );
        for stage in Stage::ALL {
            let s = &p["stages"][stage.as_str()];
            if s.is_null() {
                continue;
            }
            println!(
                "  {:<14} {:>9.2} {:>9.2} {:>9.2}",
                stage.as_str(),
                s["p50"].as_f64().unwrap_or(0.0),
                s["p95"].as_f64().unwrap_or(0.0),
                s["p99"].as_f64().unwrap_or(0.0)
            );
        }
        println!("  per turn:");
        let mut counts: BTreeMap<&str, f64> = BTreeMap::new();
        for (k, v) in p["per_turn"].as_object().into_iter().flatten() {
            counts.insert(k, v.as_f64().unwrap_or(0.0));
        }
        for (k, v) in counts {
            println!("    {k:<24} {v:>8.2}");
        }
    }
    for (p, s) in out["streaming"].as_object().into_iter().flatten() {
        let ms = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
        for stage in ["first_visible", "end_to_end"] {
            println!(
                "{p} {stage:<14} stream on p50 {:>8.1} p99 {:>8.1} · off p50 {:>8.1} p99 {:>8.1} ms",
                ms(&s[stage]["stream_on"]["p50"]),
                ms(&s[stage]["stream_on"]["p99"]),
                ms(&s[stage]["stream_off"]["p50"]),
                ms(&s[stage]["stream_off"]["p99"]),
            );
        }
        let fw = &s["first_visible_minus_llm_first_token"];
        println!(
            "{p} first_visible − llm_first_token (streamed): p50 {:.1} p99 {:.1} ms",
            ms(&fw["p50"]),
            ms(&fw["p99"])
        );
    }
    for (k, v) in out["ratio"].as_object().into_iter().flatten() {
        println!(
            "ratio naive/optimized {k}: {:.2}",
            v.as_f64().unwrap_or(0.0)
        );
    }
    for (p, counts) in out["scaling"].as_object().into_iter().flatten() {
        for (w, tps) in counts.as_object().into_iter().flatten() {
            println!(
                "scaling {p}: {w} worker(s) → {:.1} turns/s",
                tps.as_f64().unwrap_or(0.0)
            );
        }
    }
}
