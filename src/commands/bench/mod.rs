//! `whisperfleet bench`: drives turns through the whole fleet — gateway HTTP API →
//! RabbitMQ → worker processes → replies — against `mock-llm` with a fixed latency, and
//! reports where every millisecond went, for the `optimized` pipeline and the seed's
//! `naive` "before". The fleet runs as deployed, each part its own process next to this
//! binary: `gateway`, `metrics-writer`, the mock LLM (`whisperfleet mock-llm`) and the
//! workers, which are the testkit worker: the fleet's turn code, with the seed's wrappers
//! around its ports for `naive` (`whisperfleet_testkit::naive`).
//!
//! Counts come from the backends' side: character SQL loads from PostgreSQL's own
//! statistics (`pg_stat_user_tables`, read after the workers exit so their stats are
//! flushed), InfluxDB write requests from a local InfluxDB-API stand-in that counts what it
//! receives, emotion-state queries from each worker's count of the vector-memory calls its
//! backend received (written when it exits), CPU per turn per process family from `/proc`
//! ([`cpu`]), RabbitMQ's socket reads and writes from `rabbitmqctl`. With `--stream both`
//! each pipeline runs twice, its turns asking for a streamed (SSE) answer or not, and the
//! report sets `first_visible` against `end_to_end` for the two, with what the fleet adds
//! to the model's first token (`first_visible − llm_first_token`); `--llm-ttft-ms`,
//! `--llm-tokens-per-s` and `--llm-reply-tokens` make the mock LLM write like a model.
//! `--rate` starts turns at Poisson arrival times instead of in lockstep; `--memory-scale`
//! measures `context` against one user's N stored memories. Needs RabbitMQ, Redis and
//! PostgreSQL configured; use a vhost without other workers (they would take the bench's
//! turns). With `WHISPERFLEET_QDRANT_URL` set the workers use Qdrant, and the report says so.

mod backends;
mod cpu;
mod procs;
mod report;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use whisperfleet_adapters::characters::postgres::PgCharacterStore;
use whisperfleet_shared::character::Character;
use whisperfleet_shared::config::Config;
use whisperfleet_shared::ports::characters::CharacterStore;
use whisperfleet_shared::wire::Stage;

use backends::{
    RedisFootprint, broker_packets, character_loads, influx_stand_in, redis_footprint, seed,
};
use procs::{Bins, Procs, ready, sibling_binary, spawn_mock_llm, with_logs};
use whisperfleet_testkit::free_port;

use report::{machine, print_tables};

/// The character every bench turn talks to (shipped in the binary, so the bench runs anywhere).
const BENCH_CHARACTER: &str = include_str!("../../../characters/nora-halvorsen.yaml");

#[derive(Args, Debug, Clone)]
pub struct BenchArgs {
    /// Measured turns per run (after a short warm-up).
    #[arg(long, default_value_t = 500)]
    pub turns: usize,
    /// Turns in flight at once (at most one per conversation).
    #[arg(long, default_value_t = 20)]
    pub concurrency: usize,
    /// Open-loop arrivals: start turns at random (Poisson) times at this many per second,
    /// as independent users do, instead of a new turn as soon as one ends (which keeps
    /// `--concurrency` turns in lockstep: with a fixed LLM latency they arrive in bursts).
    /// `--concurrency` still caps the turns in flight.
    #[arg(long, value_name = "TURNS_PER_S")]
    pub rate: Option<f64>,
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
    /// Turns each worker process runs at once (fixed, so adding workers is what scales);
    /// the fleet's default `WORKER_CONCURRENCY`.
    #[arg(long, default_value_t = 64)]
    pub worker_concurrency: u16,
    /// optimized | naive | both
    #[arg(long, default_value = "both")]
    pub pipeline: String,
    /// Extra pipeline switches for the optimized run, e.g. `--set cache=off`.
    #[arg(long = "set", value_name = "SWITCH=on|off")]
    pub set: Vec<String>,
    /// Also measure what the vector memory's size costs a turn: for each count, one user
    /// with that many stored memories talks (one turn at a time, --turns turns; at most
    /// 200), and the report gives the `context` stage (memory search) per count.
    #[arg(long, value_delimiter = ',', value_name = "N,N,…")]
    pub memory_scale: Vec<usize>,
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
    let bins = Bins {
        worker: sibling_binary("testkit-worker")?,
        gateway: sibling_binary("gateway")?,
        writer: sibling_binary("metrics-writer")?,
    };
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
                    config, &args, spec, workers, &bins, &store, &character, stream, None,
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
    // The vector memory's cost per stored memory of a user: the optimized pipeline, one
    // conversation, one turn at a time, after seeding its user's memories.
    let mut memory_scale = serde_json::Map::new();
    for &n in &args.memory_scale {
        let mut one = args.clone();
        one.turns = args.turns.min(200);
        one.concurrency = 1;
        one.conversations = 1;
        let r = run_one(
            config,
            &one,
            &optimized_spec(&args),
            args.workers[0],
            &bins,
            &store,
            &character,
            false,
            Some(n),
        )
        .await?;
        memory_scale.insert(
            n.to_string(),
            json!({
                "context": r["stages"][Stage::Context.as_str()].clone(),
                "overhead": r["stages"][Stage::Overhead.as_str()].clone(),
                "memory_backend": r["memory_backend"].clone(),
                "memories_used_per_turn": r["per_turn"]["memories_used"].clone(),
                "user_memories_after": r["user_memories"].clone(),
                "cpu_own_ms_per_turn": r["cpu"]["own_ms_per_turn"].clone(),
            }),
        );
    }
    let out = json!({
        "pipelines": results,
        "memory_scale": memory_scale,
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

#[allow(clippy::too_many_arguments)]
async fn run_one(
    config: &Config,
    args: &BenchArgs,
    spec: &str,
    workers: usize,
    bins: &Bins,
    store: &PgCharacterStore,
    character: &Character,
    stream: bool,
    seed_memories: Option<usize>,
) -> anyhow::Result<Value> {
    let run_id = uuid::Uuid::new_v4().simple().to_string()[..8].to_string();
    let prefix = format!("{}bench-{run_id}:", config.backends.redis_prefix);
    let data_dir = std::env::temp_dir().join(format!("whisperfleet-bench-{run_id}"));
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating {}", data_dir.display()))?;
    let influx = influx_stand_in().await?;
    let mut procs = Procs {
        children: Vec::new(),
        logs: data_dir.clone(),
    };
    let mut roles = cpu::Roles {
        bench: std::process::id(),
        ..cpu::Roles::default()
    };
    if let Some(n) = seed_memories {
        let user = format!("bench-{run_id}-0");
        seed(config, &data_dir, &character.name, &user, n)
            .await
            .with_context(|| format!("storing {n} memories for the memory-scale run"))?;
    }
    let (llm_url, pid) = spawn_mock_llm(&mut procs, args)?;
    roles.mock_llm.push(pid);
    // What every fleet process of this run shares: its own Redis prefix, the InfluxDB
    // stand-in, and no queue-depth sampling inside the window.
    let common = [
        ("WHISPERFLEET_REDIS_PREFIX", prefix.clone()),
        ("WHISPERFLEET_INFLUX_URL", influx.url.clone()),
        (
            "WHISPERFLEET_METRICS_SAMPLE_INTERVAL_MS",
            "3600000".to_string(),
        ),
    ];

    // PostgreSQL publishes a backend's statistics when it exits: count from before the
    // workers start to after they stopped, over every turn they ran (warm-up included).
    let loads_before = character_loads(store).await?;
    // Worker processes: the testkit worker (the fleet's worker, wrapped for `spec`),
    // configured for this run; each writes its backend-side counts when it exits.
    let counts_file = |w: usize| data_dir.join(format!("worker-{w}-counts.json"));
    for w in 0..workers {
        let counts = counts_file(w).display().to_string();
        let mut env = common.to_vec();
        env.extend([
            ("WHISPERFLEET_GATEWAY_ID", format!("bench-{run_id}-w{w}")),
            ("WHISPERFLEET_LLM_BASE_URL", llm_url.clone()),
            ("WHISPERFLEET_LLM_MODEL", "mock".to_string()),
            (
                "WHISPERFLEET_WORKER_CONCURRENCY",
                args.worker_concurrency.to_string(),
            ),
            ("WHISPERFLEET_DATA_DIR", data_dir.display().to_string()),
        ]);
        let pid = procs.spawn(
            &format!("worker-{w}"),
            &bins.worker,
            &["--pipeline", spec, "--counts-out", &counts],
            &env,
        )?;
        roles.workers.push(pid);
    }
    let mut env = common.to_vec();
    env.push(("WHISPERFLEET_GATEWAY_ID", format!("bench-{run_id}-mw")));
    roles
        .writer
        .push(procs.spawn("metrics-writer", &bins.writer, &[], &env)?);
    // The gateway as deployed, on a loopback port. The bench measures the fleet, not the
    // HTTP API's trust boundary: it takes the bench's turns without a key or a rate limit.
    let port = free_port();
    let mut env = common.to_vec();
    env.extend([
        ("WHISPERFLEET_GATEWAY_ID", format!("bench-{run_id}")),
        ("WHISPERFLEET_HTTP_ADDR", format!("127.0.0.1:{port}")),
        ("WHISPERFLEET_HTTP_API_KEYS", String::new()),
        ("WHISPERFLEET_HTTP_API_KEYS_FILE", String::new()),
        ("WHISPERFLEET_HTTP_RATE_REQUESTS", "0".to_string()),
        (
            "WHISPERFLEET_MAX_QUEUED_PER_CONVERSATION",
            args.turns.max(16).to_string(),
        ),
    ]);
    roles
        .gateway
        .push(procs.spawn("gateway", &bins.gateway, &[], &env)?);
    let base = format!("http://127.0.0.1:{port}");

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .build()?;
    ready(&client, &base, &procs, "gateway").await?;
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
        None,
    )
    .await
    .map_err(|e| with_logs(e, &procs))?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let packets_before = broker_packets(config);
    let influx_before = influx.requests.load(Ordering::Relaxed);
    let cpu_before = cpu::Snapshot::take(&roles);
    let started = Instant::now();
    let replies = drive(
        &client,
        &base,
        (warmup..warmup + args.turns).map(turn).collect(),
        args.concurrency,
        Some(args.turns),
        args.rate,
    )
    .await
    .map_err(|e| with_logs(e, &procs))?;
    let elapsed = started.elapsed().as_secs_f64();
    // Let the metrics-writer flush and the last turns store their memories: their CPU is
    // part of the window (as the warm-up's tail was), then stop the workers so PostgreSQL
    // has their statistics.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let cpu_after = cpu::Snapshot::take(&roles);
    let influx_requests = influx.requests.load(Ordering::Relaxed) - influx_before;
    let packets_after = broker_packets(config);
    procs.stop("gateway");
    procs.stop("worker-");
    procs.stop("metrics-writer");
    procs.stop("mock-llm");
    tokio::time::sleep(Duration::from_millis(700)).await;
    let loads = character_loads(store).await? - loads_before;
    let footprint = match &config.backends.redis_url {
        Some(url) => redis_footprint(url, &prefix).await?,
        None => RedisFootprint::default(),
    };
    // Recent-emotional-state queries as the workers' memory backends received them.
    let mut recent_queries = 0u64;
    let mut memory_backend = Value::Null;
    for w in 0..workers {
        let path = counts_file(w);
        let counts: Value = serde_json::from_slice(&std::fs::read(&path).with_context(|| {
            format!(
                "reading {} (the worker's log ends:\n{})",
                path.display(),
                procs.log_tail(&format!("worker-{w}"))
            )
        })?)?;
        recent_queries += counts["memory_recent"].as_u64().unwrap_or(0);
        memory_backend = counts["memory_backend"].clone();
    }
    // The user's memories as the store holds them after a memory-scale run (seeded and
    // stored by the run's turns), read back from where the workers searched.
    let user_memories = match seed_memories {
        Some(_) => {
            let mut cfg = config.clone();
            cfg.backends.data_dir = Some(data_dir.clone());
            let ports = whisperfleet_adapters::connect::memory(&cfg).await?;
            let identity = whisperfleet_shared::identity::Identity::new(
                "http",
                "",
                format!("bench-{run_id}-0"),
            );
            json!(ports.memory.list(&identity, None, usize::MAX).await?.len())
        }
        None => Value::Null,
    };
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
    let cpu = cpu::per_turn(&cpu_before, &cpu_after, &roles, replies.len());
    let broker = match (packets_before, packets_after) {
        (Some(a), Some(b)) => json!({
            "received_per_turn": b.0.saturating_sub(a.0) as f64 / n,
            "sent_per_turn": b.1.saturating_sub(a.1) as f64 / n,
        }),
        _ => Value::Null,
    };
    Ok(json!({
        "pipeline": spec,
        "stream": stream,
        "memory_backend": memory_backend,
        "user_memories": user_memories,
        "cpu": cpu,
        "broker_packets": broker,
        "first_words_overhead": first_words_overhead,
        "workers": workers,
        "arrivals": args.rate.map_or(json!("closed loop"), |r| json!({"poisson_per_s": r})),
        "turns": replies.len(),
        "ok": ok,
        "throughput_tps": n / elapsed,
        "stages": stages,
        "per_turn": {
            "cdl_queries": loads as f64 / (n + warmup as f64),
            "cdl_queries_reported": mean("cdl_queries"),
            "emotion_queries": recent_queries as f64 / (n + warmup as f64),
            "vector_searches": mean("memory_searches"),
            "memories_used": mean("memories_used"),
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

/// Sends `turns` with at most `concurrency` in flight, each as soon as a slot is free or,
/// with `rate`, at Poisson arrival times; shows progress on stderr when asked.
async fn drive(
    client: &reqwest::Client,
    base: &str,
    turns: Vec<Value>,
    concurrency: usize,
    progress: Option<usize>,
    rate: Option<f64>,
) -> anyhow::Result<Vec<Value>> {
    use futures::StreamExt;
    let total = turns.len();
    let done = AtomicU64::new(0);
    let started = tokio::time::Instant::now();
    // Arrival times: exponential gaps at `rate` per second (none: all at once, slot-bound),
    // from a fixed seed, so every run (before and after a change) sees the same arrivals.
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(18);
    let mut at = Duration::ZERO;
    let arrivals: Vec<Option<tokio::time::Instant>> = turns
        .iter()
        .map(|_| {
            rate.filter(|r| *r > 0.0).map(|r| {
                let u: f64 = rng.random::<f64>();
                at += Duration::from_secs_f64(-(1.0 - u).ln() / r);
                started + at
            })
        })
        .collect();
    let results: Vec<anyhow::Result<Value>> =
        futures::stream::iter(turns.into_iter().zip(arrivals))
            .map(|(t, arrival)| {
                let done = &done;
                async move {
                    if let Some(a) = arrival {
                        tokio::time::sleep_until(a).await;
                    }
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
