//! Test harness for end-to-end tests: each test gets its own RabbitMQ vhost, PostgreSQL
//! database, Redis prefix and gateway id on the machine's real services, runs the real
//! binaries from the target directory (built by `scripts/test` first), and cleans up after
//! itself.

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
    pub fn new(test: &str) -> anyhow::Result<Self> {
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

    /// Starts a service binary with this fleet's env plus `extra`; its logs go to
    /// `target/test-logs/<fleet>-<label>.log`.
    pub fn spawn(
        &mut self,
        bin_name: &str,
        label: &str,
        extra: &[(&str, String)],
    ) -> anyhow::Result<u32> {
        let logs = bin_dir().join("test-logs");
        std::fs::create_dir_all(&logs)?;
        let log = std::fs::File::create(logs.join(format!("{}-{label}.log", self.name)))?;
        let child = self
            .command(bin_name, extra)
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
        let port = free_port();
        let mut extra = extra.to_vec();
        extra.push(("WHISPERFLEET_HTTP_ADDR", format!("127.0.0.1:{port}")));
        self.spawn("gateway", "gateway", &extra)?;
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
                    "gateway did not become ready; see target/test-logs/{}-gateway.log",
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

/// POSTs one turn; returns status and JSON body.
pub async fn post_turn(
    client: &reqwest::Client,
    base: &str,
    body: serde_json::Value,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let r = client
        .post(format!("{base}/v1/turns"))
        .json(&body)
        .send()
        .await?;
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
    pub mock: whisperfleet_worker::mock_llm::MockLlmHandle,
    pub record: PathBuf,
}

pub async fn setup(test: &str, mut opts: whisperfleet_worker::mock_llm::MockLlmOptions) -> Setup {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut fleet = Fleet::new(test).expect("fleet");
    let record = bin_dir()
        .join("test-logs")
        .join(format!("{}-llm.jsonl", fleet.name));
    std::fs::create_dir_all(record.parent().unwrap()).unwrap();
    opts.record = Some(record.clone());
    let mock = whisperfleet_worker::mock_llm::spawn(opts)
        .await
        .expect("mock llm");
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
pub fn mock_latency(latency_ms: u64) -> whisperfleet_worker::mock_llm::MockLlmOptions {
    whisperfleet_worker::mock_llm::MockLlmOptions {
        latency: Duration::from_millis(latency_ms),
        ..Default::default()
    }
}
