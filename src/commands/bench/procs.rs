//! The bench's processes: the fleet's own binaries next to this one, started with the
//! bench's environment, logged to files, waited for and stopped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::BenchArgs;
use whisperfleet_testkit::free_port;

/// The fleet's binaries, next to this one.
pub(super) struct Bins {
    pub(super) worker: PathBuf,
    pub(super) gateway: PathBuf,
    pub(super) writer: PathBuf,
}

/// A bench failure with the last lines each of the run's processes logged.
pub(super) fn with_logs(e: anyhow::Error, procs: &Procs) -> anyhow::Error {
    let mut msg = String::new();
    for (label, _) in &procs.children {
        let tail = procs.log_tail(label);
        if !tail.is_empty() {
            msg.push_str(&format!("\n--- {label} log ends:\n{tail}"));
        }
    }
    e.context(format!("the run's processes logged:{msg}"))
}

pub(super) fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
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

/// The processes of one run (workers, gateway, metrics-writer, mock LLM): stopped with
/// SIGTERM (so workers write their counts and drain), killed if the bench fails.
pub(super) struct Procs {
    pub(super) children: Vec<(String, Child)>,
    pub(super) logs: PathBuf,
}

impl Procs {
    /// Starts `bin` with the bench's env plus `env`; its output goes to `<logs>/<label>.log`.
    pub(super) fn spawn(
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
    pub(super) fn log_tail(&self, label: &str) -> String {
        let text =
            std::fs::read_to_string(self.logs.join(format!("{label}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// SIGTERM to the processes whose label starts with `prefix`, then waits for them.
    pub(super) fn stop(&mut self, prefix: &str) {
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
pub(super) async fn ready(
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

/// The mock LLM as its own process (`whisperfleet mock-llm`), so its CPU is not the fleet's;
/// returns its base URL.
pub(super) fn spawn_mock_llm(procs: &mut Procs, args: &BenchArgs) -> anyhow::Result<(String, u32)> {
    let port = free_port();
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
