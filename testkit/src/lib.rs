//! Test harness for end-to-end tests: each test gets its own RabbitMQ vhost, PostgreSQL
//! database, Redis prefix and gateway id on the machine's real services, runs the real
//! binaries from the target directory (built by `scripts/test` first), and cleans up after
//! itself. Also the parts tests are built from: the contract suites every port's
//! implementations share, the mock LLM server, the Discord stand-in, the TCP fault proxy and
//! RabbitMQ faults (a memory alarm, closed connections: [`rabbitmq`]);
//! and the testkit worker (`worker`, with the seed's "before" in `naive`), which the bench
//! and the fault-injection tests run instead of the fleet's `worker` binary.

pub mod contracts;
pub mod discord;
pub mod mock_llm;
pub mod naive;
pub mod prompt;
pub mod proxy;
pub mod rabbitmq;
pub mod report;
pub mod tap;
pub mod worker;

pub use proxy::TcpProxy;
pub use rabbitmq::MemoryAlarm;

use std::collections::HashMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

pub const AMQP_BASE: &str = "amqp://guest:guest@127.0.0.1:5672";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
pub const PG_BASE: &str = "postgres://postgres@127.0.0.1:5432";

/// Where cargo put the workspace's binaries (the test exe lives in `<target>/<profile>/deps`).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    exe.parent()
        .and_then(|p| p.parent())
        .expect("target dir")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: build the workspace binaries first (scripts/test does `cargo build --workspace --bins`)",
        p.display()
    );
    p
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// One test's private slice of the shared services.
pub struct Fleet {
    pub name: String,
    pub vhost: String,
    pub database: String,
    pub prefix: String,
    pub env: HashMap<String, String>,
    children: Vec<(String, Child)>,
}

impl Fleet {
    /// Whether `key` (under this fleet's Redis prefix) exists, asked of Redis itself.
    pub async fn redis_exists(&self, key: &str) -> bool {
        redis::cmd("EXISTS")
            .arg(format!("{}{key}", self.prefix))
            .query_async::<i64>(&mut redis_connection().await)
            .await
            .unwrap()
            == 1
    }

    /// Whether the hash `key` (under this fleet's Redis prefix) has `field`.
    pub async fn redis_hexists(&self, key: &str, field: &str) -> bool {
        redis::cmd("HEXISTS")
            .arg(format!("{}{key}", self.prefix))
            .arg(field)
            .query_async(&mut redis_connection().await)
            .await
            .unwrap()
    }

    pub fn new(test: &str) -> anyhow::Result<Self> {
        whisperfleet_shared::telemetry::install_crypto_provider();
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_string();
        let name = format!("wf_{}_{}", test.replace('-', "_"), suffix);
        let vhost = name.clone();
        run(Command::new("rabbitmqctl").args(["add_vhost", &vhost]))?;
        run(Command::new("rabbitmqctl").args([
            "set_permissions",
            "-p",
            &vhost,
            "guest",
            ".*",
            ".*",
            ".*",
        ]))?;
        run(Command::new("psql").args([
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-qc",
            &format!("CREATE DATABASE {name}"),
        ]))?;
        let prefix = format!("{name}:");
        let mut env = HashMap::new();
        env.insert(
            "WHISPERFLEET_AMQP_URL".into(),
            format!("{AMQP_BASE}/{vhost}"),
        );
        env.insert("WHISPERFLEET_REDIS_URL".into(), REDIS_URL.into());
        env.insert(
            "WHISPERFLEET_DATABASE_URL".into(),
            format!("{PG_BASE}/{name}"),
        );
        env.insert("WHISPERFLEET_REDIS_PREFIX".into(), prefix.clone());
        env.insert("WHISPERFLEET_GATEWAY_ID".into(), format!("gw-{suffix}"));
        env.insert("RUST_LOG".into(), "info".into());
        // Embedded vector memory (SQLite) of this test's workers.
        env.insert(
            "WHISPERFLEET_DATA_DIR".into(),
            bin_dir()
                .join("test-logs")
                .join(format!("{name}-data"))
                .display()
                .to_string(),
        );
        Ok(Self {
            name,
            vhost,
            database: String::new(),
            prefix,
            env,
            children: Vec::new(),
        })
    }

    pub fn amqp_url(&self) -> String {
        self.env["WHISPERFLEET_AMQP_URL"].clone()
    }

    pub fn data_dir(&self) -> PathBuf {
        PathBuf::from(&self.env["WHISPERFLEET_DATA_DIR"])
    }

    /// Points in this fleet's embedded vector memory, counted in the store itself.
    pub async fn memory_points(&self) -> i64 {
        let path = self.data_dir().join("memories.sqlite");
        if !path.exists() {
            return 0;
        }
        let opts = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(path)
            .read_only(true);
        let Ok(mut c) = sqlx::ConnectOptions::connect(&opts).await else {
            return 0;
        };
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM memories")
            .fetch_one(&mut c)
            .await
            .unwrap_or(0)
    }

    /// Turn records (`turn:<id>` hashes) of this fleet that have `field` set.
    pub fn turn_records_with(&self, field: &str) -> usize {
        const COUNT: &str = "local n = 0 \
            for _, k in ipairs(redis.call('KEYS', ARGV[1])) do \
              if redis.call('TYPE', k).ok == 'hash' and redis.call('HEXISTS', k, ARGV[2]) == 1 then n = n + 1 end \
            end return n";
        std::process::Command::new("redis-cli")
            .args(["EVAL", COUNT, "0", &format!("{}turn:*", self.prefix), field])
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(0)
    }

    pub fn database_url(&self) -> String {
        self.env["WHISPERFLEET_DATABASE_URL"].clone()
    }

    pub fn set(&mut self, k: &str, v: impl Into<String>) {
        self.env.insert(k.into(), v.into());
    }

    fn command(&self, bin_name: &str, extra: &[(&str, String)]) -> Command {
        let mut cmd = Command::new(bin(bin_name));
        cmd.env_clear();
        cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        for (k, v) in extra {
            cmd.env(k, v);
        }
        cmd
    }

    /// Runs `whisperfleet <args>` to completion and returns stdout.
    pub fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        run(self.command("whisperfleet", &[]).args(args))
    }

    /// Runs `whisperfleet <args>` with this fleet's env plus `extra` to completion, whatever
    /// its exit status (for commands whose failure is the point: `doctor`).
    pub fn cli_output(
        &self,
        args: &[&str],
        extra: &[(&str, String)],
    ) -> anyhow::Result<std::process::Output> {
        let mut cmd = self.command("whisperfleet", extra);
        cmd.args(args);
        cmd.output().with_context(|| format!("running {cmd:?}"))
    }

    /// Starts a service binary with this fleet's env plus `extra`; its logs go to
    /// `target/test-logs/<fleet>-<label>.log`.
    pub fn spawn(
        &mut self,
        bin_name: &str,
        label: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<u32> {
        self.spawn_args(bin_name, label, &[], extra)
    }

    /// [`Fleet::spawn`] with command-line arguments (the testkit worker's flags).
    pub fn spawn_args(
        &mut self,
        bin_name: &str,
        label: &str,
        args: &[&str],
        extra: &[(&str, String)],
    ) -> anyhow::Result<u32> {
        let logs = bin_dir().join("test-logs");
        std::fs::create_dir_all(&logs)?;
        let log = std::fs::File::create(logs.join(format!("{}-{label}.log", self.name)))?;
        let child = self
            .command(bin_name, extra)
            .args(args)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("starting {bin_name}"))?;
        let pid = child.id();
        self.children.push((label.to_string(), child));
        Ok(pid)
    }

    /// Starts a gateway on a free port and waits until it is ready; returns its base URL.
    pub async fn spawn_gateway(&mut self, extra: &[(&str, String)]) -> anyhow::Result<String> {
        self.spawn_http("gateway", "gateway", &[], extra).await
    }

    /// Starts a binary that serves the gateway's HTTP API (`gateway`, or `whisperfleet up`
    /// with `args`) on a free loopback port, waits until `/readyz` says ready and returns
    /// its base URL.
    pub async fn spawn_http(
        &mut self,
        bin_name: &str,
        label: &str,
        args: &[&str],
        extra: &[(&str, String)],
    ) -> anyhow::Result<String> {
        let port = free_port();
        let mut extra = extra.to_vec();
        extra.push(("WHISPERFLEET_HTTP_ADDR", format!("127.0.0.1:{port}")));
        self.spawn_args(bin_name, label, args, &extra)?;
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await
                && r.status().is_success()
            {
                return Ok(base);
            }
            if Instant::now() > deadline {
                bail!(
                    "{label} did not become ready; see target/test-logs/{}-{label}.log",
                    self.name
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends a signal to a child by label.
    pub fn signal(&mut self, label: &str, signal: &str) -> anyhow::Result<()> {
        let (_, child) = self
            .children
            .iter()
            .find(|(l, _)| l == label)
            .with_context(|| format!("no child {label}"))?;
        run(Command::new("kill").args([&format!("-{signal}"), &child.id().to_string()]))?;
        Ok(())
    }

    /// Waits for a child to exit and returns its exit code.
    pub async fn wait_exit(
        &mut self,
        label: &str,
        timeout: Duration,
    ) -> anyhow::Result<Option<i32>> {
        let idx = self
            .children
            .iter()
            .position(|(l, _)| l == label)
            .with_context(|| format!("no child {label}"))?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.children[idx].1.try_wait()? {
                self.children.remove(idx);
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                bail!("{label} did not exit within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn log_of(&self, label: &str) -> String {
        std::fs::read_to_string(
            bin_dir()
                .join("test-logs")
                .join(format!("{}-{label}.log", self.name)),
        )
        .unwrap_or_default()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Some(d) = self.env.get("WHISPERFLEET_DATA_DIR") {
            let _ = std::fs::remove_dir_all(d);
        }
        let _ = Command::new("rabbitmqctl")
            .args(["delete_vhost", &self.vhost])
            .output();
        let _ = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-qc",
                &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            ])
            .output();
        let _ = Command::new("redis-cli")
            .args([
                "-h",
                "127.0.0.1",
                "--scan",
                "--pattern",
                &format!("{}*", self.prefix),
            ])
            .output()
            .map(|out| {
                let keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .map(str::to_string)
                    .collect();
                for chunk in keys.chunks(500) {
                    let _ = Command::new("redis-cli")
                        .args(["-h", "127.0.0.1", "DEL"])
                        .args(chunk)
                        .output();
                }
            });
    }
}

/// POSTs one turn without an API key (a loopback gateway without keys); returns status and
/// JSON body.
pub async fn post_turn(
    client: &reqwest::Client,
    base: &str,
    body: serde_json::Value,
) -> anyhow::Result<(u16, serde_json::Value)> {
    post_turn_with_key(client, base, None, body).await
}

/// POSTs one turn, with `Authorization: Bearer <key>` when a key is given.
pub async fn post_turn_with_key(
    client: &reqwest::Client,
    base: &str,
    key: Option<&str>,
    body: serde_json::Value,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let mut req = client.post(format!("{base}/v1/turns")).json(&body);
    if let Some(key) = key {
        req = req.bearer_auth(key);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    let v = r.json().await?;
    Ok((status, v))
}

/// Root of the repository (for sample characters).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every request a mock-llm recorded (`--record`), one JSON value each.
pub fn recorded(path: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// All message contents of a recorded request, joined.
pub fn prompt_text(req: &serde_json::Value) -> String {
    req["messages"]
        .as_array()
        .map(|m| {
            m.iter()
                .filter_map(|x| x["content"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// The last user message of a recorded request.
pub fn last_user(req: &serde_json::Value) -> String {
    req["messages"]
        .as_array()
        .and_then(|m| m.iter().rev().find(|x| x["role"] == "user"))
        .and_then(|x| x["content"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// A test fleet with the sample characters imported and an in-process mock LLM (configured
/// by `opts`) that records every prompt to `record`.
pub struct Setup {
    pub fleet: Fleet,
    pub mock: crate::mock_llm::MockLlmHandle,
    pub record: PathBuf,
}

pub async fn setup(test: &str, mut opts: crate::mock_llm::MockLlmOptions) -> Setup {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut fleet = Fleet::new(test).expect("fleet");
    let record = bin_dir()
        .join("test-logs")
        .join(format!("{}-llm.jsonl", fleet.name));
    std::fs::create_dir_all(record.parent().unwrap()).unwrap();
    opts.record = Some(record.clone());
    let mock = crate::mock_llm::spawn(opts).await.expect("mock llm");
    fleet.set("WHISPERFLEET_LLM_BASE_URL", mock.base_url());
    fleet.set("WHISPERFLEET_LLM_MODEL", "mock");
    let chars = repo_root().join("characters");
    fleet
        .cli(&["characters", "import", chars.to_str().unwrap()])
        .expect("import sample characters");
    Setup {
        fleet,
        mock,
        record,
    }
}

/// A mock LLM answering after `latency_ms`.
pub fn mock_latency(latency_ms: u64) -> crate::mock_llm::MockLlmOptions {
    crate::mock_llm::MockLlmOptions {
        latency: Duration::from_millis(latency_ms),
        ..Default::default()
    }
}

/// A private victoria-metrics (the InfluxDB-API server in tests): `/api/v2/write` in,
/// `/api/v1/export` out. Started with `-dedup.minScrapeInterval=1ms`, so rewriting the same
/// point overwrites it as InfluxDB does (it keeps millisecond timestamps).
pub struct VictoriaMetrics {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl VictoriaMetrics {
    pub async fn start() -> anyhow::Result<Self> {
        whisperfleet_shared::telemetry::install_crypto_provider();
        let port = free_port();
        let dir = bin_dir()
            .join("test-logs")
            .join(format!("vm-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir)?;
        let mut vm = Self {
            port,
            dir,
            child: None,
        };
        vm.resume().await?;
        Ok(vm)
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port and data.
    pub async fn resume(&mut self) -> anyhow::Result<()> {
        let log = std::fs::File::create(self.dir.join("vm.log"))?;
        let child = Command::new("victoria-metrics")
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!(
                "-storageDataPath={}",
                self.dir.join("data").display()
            ))
            .arg("-dedup.minScrapeInterval=1ms")
            .arg("-retentionPeriod=100y")
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting victoria-metrics (scripts/test installs it)")?;
        self.child = Some(child);
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(r) = client.get(format!("{}/health", self.url())).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("victoria-metrics did not start")
    }

    /// Stops the server gracefully (SIGTERM): it persists what it acknowledged, as a real
    /// InfluxDB does. (SIGKILL would lose points victoria-metrics had answered 204 for,
    /// which no writer could detect.)
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .output();
            for _ in 0..100 {
                if matches!(c.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Every stored sample of series whose name matches `name_regex`:
    /// (labels, values, timestamps) per series.
    pub async fn export(&self, name_regex: &str) -> anyhow::Result<Vec<serde_json::Value>> {
        let client = reqwest::Client::new();
        client
            .post(format!("{}/internal/force_flush", self.url()))
            .send()
            .await?;
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/export", self.url()),
            &[("match[]", format!("{{__name__=~\"{name_regex}\"}}"))],
        )?;
        let body = client.get(url).send().await?.text().await?;
        Ok(body
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect())
    }

    /// Number of samples stored for series matching `name_regex`.
    pub async fn count(&self, name_regex: &str) -> anyhow::Result<usize> {
        Ok(self
            .export(name_regex)
            .await?
            .iter()
            .map(|s| s["values"].as_array().map_or(0, Vec::len))
            .sum())
    }

    /// Write requests the server received, by its own count.
    pub async fn write_requests(&self) -> anyhow::Result<u64> {
        let text = reqwest::get(format!("{}/metrics", self.url()))
            .await?
            .text()
            .await?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with("vm_http_requests_total{path=\"/influx/write\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum())
    }
}

impl Drop for VictoriaMetrics {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Resident memory of a process in KiB (from /proc), for bounded-memory checks.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// A fault-injecting HTTP proxy in front of victoria-metrics (which answers 204 even to bad
/// lines): rejects any write whose body contains `poison` with 400 and a reason, answers
/// the next `fail_next` writes with 429 + `Retry-After: 1`, forwards the rest.
pub struct FaultProxy {
    pub url: String,
    pub fail_next: std::sync::Arc<std::sync::atomic::AtomicU32>,
    pub requests: std::sync::Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: String) -> anyhow::Result<Self> {
        use axum::body::Bytes;
        use axum::http::{HeaderMap, StatusCode, Uri};
        use std::io::Read;
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
        let fail_next = Arc::new(AtomicU32::new(0));
        let requests = Arc::new(AtomicU64::new(0));
        let client = reqwest::Client::new();
        let (f, r) = (fail_next.clone(), requests.clone());
        let handler = move |uri: Uri, headers: HeaderMap, body: Bytes| {
            let (f, r, client, upstream) = (f.clone(), r.clone(), client.clone(), upstream.clone());
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                let gz = headers
                    .get("content-encoding")
                    .is_some_and(|v| v.as_bytes() == b"gzip");
                let mut plain = Vec::new();
                if gz {
                    let _ = flate2::read::GzDecoder::new(&body[..]).read_to_end(&mut plain);
                } else {
                    plain = body.to_vec();
                }
                if String::from_utf8_lossy(&plain).contains("poison") {
                    return (
                        StatusCode::BAD_REQUEST,
                        HeaderMap::new(),
                        r#"{"code":"invalid","message":"poison point rejected by the server"}"#
                            .to_string(),
                    );
                }
                if f.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let mut h = HeaderMap::new();
                    h.insert("retry-after", "1".parse().unwrap());
                    return (StatusCode::TOO_MANY_REQUESTS, h, "slow down".to_string());
                }
                let mut req = client
                    .post(format!(
                        "{upstream}{}",
                        uri.path_and_query().map_or("", |p| p.as_str())
                    ))
                    .body(body.to_vec());
                if gz {
                    req = req.header("content-encoding", "gzip");
                }
                match req.send().await {
                    Ok(resp) => (
                        StatusCode::from_u16(resp.status().as_u16()).unwrap(),
                        HeaderMap::new(),
                        resp.text().await.unwrap_or_default(),
                    ),
                    Err(e) => (StatusCode::BAD_GATEWAY, HeaderMap::new(), e.to_string()),
                }
            }
        };
        let app = axum::Router::new().route("/api/v2/write", axum::routing::post(handler));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url,
            fail_next,
            requests,
            task,
        })
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The broker timeout of the adapters tests build themselves: the fleet's default.
fn broker_timeout() -> Duration {
    whisperfleet_shared::config::Backends::default().broker_timeout
}

/// Connects to the fleet's vhost with the real broker adapter and declares the topology.
pub async fn broker_for(
    fleet: &Fleet,
) -> std::sync::Arc<whisperfleet_adapters::broker::rabbitmq::RabbitBroker> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let b = whisperfleet_adapters::broker::rabbitmq::RabbitBroker::connect(
        fleet.amqp_url().into(),
        "test",
        Default::default(),
        broker_timeout(),
    )
    .await
    .expect("broker");
    use whisperfleet_shared::ports::broker::Broker;
    b.ensure_topology().await.expect("topology");
    b
}

/// Ready count and consumers of `turns`, as the broker adapter reads them.
pub async fn turns_stats(
    broker: &dyn whisperfleet_shared::ports::Broker,
) -> whisperfleet_shared::ports::broker::QueueStats {
    broker
        .queue_stats(whisperfleet_shared::topology::TURNS_QUEUE)
        .await
        .unwrap()
        .expect("the turns queue exists")
}

/// Waits until `check` returns true, polling; fails after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Connects to the fleet's vhost with the real broker adapter and `topology` (e.g. a small
/// delivery limit), without declaring it.
pub async fn broker_with(
    fleet: &Fleet,
    topology: whisperfleet_shared::topology::TopologySettings,
) -> std::sync::Arc<whisperfleet_adapters::broker::rabbitmq::RabbitBroker> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    whisperfleet_adapters::broker::rabbitmq::RabbitBroker::connect(
        fleet.amqp_url().into(),
        "test",
        topology,
        broker_timeout(),
    )
    .await
    .expect("broker")
}

/// `conversations` users each send `turns` messages **without waiting for the replies**
/// (20 ms apart), so a conversation's next message always arrives while its previous turn is
/// still running: every turn must be answered once, and each prompt must hold the turn the
/// gateway sequenced before it (order is what the gateway's `seq` says, since concurrent
/// requests may reach it in any order).
pub async fn assert_ordered_exactly_once(
    base: &str,
    character: &str,
    record: &std::path::Path,
    conversations: usize,
    turns: usize,
) {
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for conv in 0..conversations {
        let (client, base, character) = (client.clone(), base.to_string(), character.to_string());
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for i in 0..turns {
                let body = serde_json::json!({
                    "character": character,
                    "user_id": format!("user{conv}"),
                    "text": format!("conv{conv} msg{i} about kelp"),
                });
                let (client, base) = (client.clone(), base.clone());
                sent.push(tokio::spawn(async move {
                    post_turn(&client, &base, body).await.unwrap()
                }));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let mut replies = Vec::new();
            for s in sent {
                replies.push(s.await.unwrap());
            }
            replies
        }));
    }
    let mut turn_ids = std::collections::HashSet::new();
    // Per conversation: message index by seq.
    let mut by_seq: HashMap<String, HashMap<u64, usize>> = HashMap::new();
    for (conv, t) in tasks.into_iter().enumerate() {
        let replies = t.await.unwrap();
        assert_eq!(replies.len(), turns);
        let mut seqs = Vec::new();
        for (i, (status, r)) in replies.iter().enumerate() {
            assert_eq!(*status, 200, "{r}");
            assert_eq!(r["outcome"], "ok", "{r}");
            assert!(
                r["text"]
                    .as_str()
                    .unwrap()
                    .contains(&format!("conv{conv} msg{i} ")),
                "reply {i} of conversation {conv} answers another message: {}",
                r["text"]
            );
            assert!(turn_ids.insert(r["turn_id"].as_str().unwrap().to_string()));
            let seq = r["seq"].as_u64().unwrap();
            seqs.push(seq);
            by_seq
                .entry(format!("conv{conv}"))
                .or_default()
                .insert(seq, i);
        }
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (1..=turns as u64).collect::<Vec<_>>(),
            "conversation {conv}: every turn sequenced once"
        );
    }
    assert_eq!(turn_ids.len(), conversations * turns);
    let prompts = recorded(record);
    assert_eq!(
        prompts.len(),
        conversations * turns,
        "one LLM call per turn"
    );
    let mut seen: HashMap<String, usize> = HashMap::new();
    for p in &prompts {
        let user = last_user(p);
        *seen.entry(user.clone()).or_default() += 1;
        let mut words = user.split_whitespace();
        let conv = words.next().unwrap().to_string();
        let i: usize = words.next().unwrap()[3..].parse().unwrap();
        let seqs = &by_seq[&conv];
        let seq = seqs
            .iter()
            .find(|(_, m)| **m == i)
            .map(|(s, _)| *s)
            .unwrap();
        if seq > 1 {
            let previous = format!("{conv} msg{} about kelp", seqs[&(seq - 1)]);
            assert!(
                prompt_text(p).contains(&previous),
                "prompt of {user:?} (seq {seq}) lacks the turn before it, {previous:?}"
            );
        }
    }
    assert!(
        seen.values().all(|&n| n == 1),
        "a turn reached the LLM twice"
    );
}

/// A fresh connection to the shared test Redis.
async fn redis_connection() -> redis::aio::MultiplexedConnection {
    redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}
