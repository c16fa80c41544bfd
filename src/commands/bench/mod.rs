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

mod cpu;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
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

/// Stores `n` memories of one HTTP user with `character` where this run's workers will
/// look (the embedded store in `data_dir`, or Qdrant when configured), embedded by the
/// workers' embedder so searches score them as they would real ones.
async fn seed(
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

/// The fleet's binaries, next to this one.
struct Bins {
    worker: PathBuf,
    gateway: PathBuf,
    writer: PathBuf,
}

/// A bench failure with the last lines each of the run's processes logged.
fn with_logs(e: anyhow::Error, procs: &Procs) -> anyhow::Error {
    let mut msg = String::new();
    for (label, _) in &procs.children {
        let tail = procs.log_tail(label);
        if !tail.is_empty() {
            msg.push_str(&format!("\n--- {label} log ends:\n{tail}"));
        }
    }
    e.context(format!("the run's processes logged:{msg}"))
}

/// RabbitMQ's count of socket reads and writes (`recv_cnt`, `send_cnt`) on the bench vhost's
/// connections, from `rabbitmqctl` when the broker runs on this machine; `None` otherwise.
/// Read outside the CPU window: rabbitmqctl is an Erlang VM of its own.
fn broker_packets(config: &Config) -> Option<(u64, u64)> {
    use secrecy::ExposeSecret;
    let url = config.backends.amqp_url.as_ref()?;
    let url = reqwest::Url::parse(url.expose_secret()).ok()?;
    if !matches!(
        url.host_str(),
        Some("127.0.0.1" | "localhost" | "::1" | "[::1]")
    ) {
        return None;
    }
    let vhost = match url.path().trim_start_matches('/') {
        "" => "/".to_string(),
        p => p.replace("%2f", "/").replace("%2F", "/"),
    };
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

/// The processes of one run (workers, gateway, metrics-writer, mock LLM): stopped with
/// SIGTERM (so workers write their counts and drain), killed if the bench fails.
struct Procs {
    children: Vec<(String, Child)>,
    logs: PathBuf,
}

impl Procs {
    /// Starts `bin` with the bench's env plus `env`; its output goes to `<logs>/<label>.log`.
    fn spawn(
        &mut self,
        label: &str,
        bin: &Path,
        args: &[&str],
        env: &[(&str, String)],
    ) -> anyhow::Result<u32> {
        let log = std::fs::File::create(self.logs.join(format!("{label}.log")))?;
        let child = Command::new(bin)
            .args(args)
            .envs(
                std::env::vars().filter(|(k, _)| k.starts_with("WHISPERFLEET_") || k == "RUST_LOG"),
            )
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {label} ({})", bin.display()))?;
        let pid = child.id();
        self.children.push((label.to_string(), child));
        Ok(pid)
    }

    /// The last lines a process logged, for an error message.
    fn log_tail(&self, label: &str) -> String {
        let text =
            std::fs::read_to_string(self.logs.join(format!("{label}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// SIGTERM to the processes whose label starts with `prefix`, then waits for them.
    fn stop(&mut self, prefix: &str) {
        for (_, c) in self.children.iter().filter(|(l, _)| l.starts_with(prefix)) {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .output();
        }
        for (_, c) in self
            .children
            .iter_mut()
            .filter(|(l, _)| l.starts_with(prefix))
        {
            let _ = c.wait();
        }
        self.children.retain(|(l, _)| !l.starts_with(prefix));
    }
}

impl Drop for Procs {
    fn drop(&mut self) {
        for (_, c) in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits until `GET {base}/readyz` answers 2xx.
async fn ready(
    client: &reqwest::Client,
    base: &str,
    procs: &Procs,
    label: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = client.get(format!("{base}/readyz")).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{label} did not become ready; its log ends:\n{}",
                procs.log_tail(label)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The mock LLM as its own process (`whisperfleet mock-llm`), so its CPU is not the fleet's;
/// returns its base URL.
fn spawn_mock_llm(procs: &mut Procs, args: &BenchArgs) -> anyhow::Result<(String, u32)> {
    let port = free_port()?;
    let mut a: Vec<String> = vec![
        "mock-llm".into(),
        "--port".into(),
        port.to_string(),
        "--latency-ms".into(),
        args.llm_latency_ms.to_string(),
        "--ttft-ms".into(),
        args.llm_ttft_ms.to_string(),
    ];
    if let Some(t) = args.llm_tokens_per_s {
        a.extend(["--tokens-per-s".into(), t.to_string()]);
    }
    if let Some(n) = args.llm_reply_tokens {
        let text = (0..n)
            .map(|i| format!("word{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        a.extend(["--reply".into(), text]);
    }
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let pid = procs.spawn("mock-llm", &std::env::current_exe()?, &a, &[])?;
    Ok((format!("http://127.0.0.1:{port}/v1"), pid))
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
    let port = free_port()?;
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
        if let Some(m) = p["memory_backend"].as_str() {
            println!("  vector memory: {m}");
        }
        let cpu = &p["cpu"];
        if cpu.is_object() {
            println!(
                "  CPU per turn (ms), over {:.1} s: fleet's own processes {:.2}, machine {:.2}",
                cpu["window_s"].as_f64().unwrap_or(0.0),
                cpu["own_ms_per_turn"].as_f64().unwrap_or(0.0),
                cpu["machine_ms_per_turn"].as_f64().unwrap_or(0.0)
            );
            for f in cpu::FAMILIES {
                let v = &cpu["families"][f];
                println!(
                    "    {f:<42} {:>7.3} ms  {:>5.2} cores",
                    v["ms_per_turn"].as_f64().unwrap_or(0.0),
                    v["cores"].as_f64().unwrap_or(0.0)
                );
            }
        }
        if p["broker_packets"].is_object() {
            println!(
                "  broker socket reads/writes per turn: {:.2} / {:.2}",
                p["broker_packets"]["received_per_turn"]
                    .as_f64()
                    .unwrap_or(0.0),
                p["broker_packets"]["sent_per_turn"].as_f64().unwrap_or(0.0)
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
    for (n, m) in out["memory_scale"].as_object().into_iter().flatten() {
        println!(
            "memory scale: {n:>6} memories of one user → context p50 {:.2} p99 {:.2} ms, overhead p50 {:.2} ms ({})",
            m["context"]["p50"].as_f64().unwrap_or(f64::NAN),
            m["context"]["p99"].as_f64().unwrap_or(f64::NAN),
            m["overhead"]["p50"].as_f64().unwrap_or(f64::NAN),
            m["memory_backend"].as_str().unwrap_or("?")
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
