//! The newcomer's path: `whisperfleet chat` and `up` with every service URL unset run the
//! whole fleet on embedded ports (in-process broker and cache, SQLite characters and
//! memories, offline LLM, metrics file) from a fresh data directory — and keep what they
//! should across a restart.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use whisperfleet_testkit::*;

/// A fresh data dir and HOME, and an environment with no service configured at all.
fn fresh_dir(test: &str) -> PathBuf {
    let dir = bin_dir()
        .join("test-logs")
        .join(format!("{test}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn embedded(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(bin("whisperfleet"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", dir.join("home"))
        .env("WHISPERFLEET_DATA_DIR", dir.join("data"))
        .env("WHISPERFLEET_GATEWAY_ID", "embedded-test")
        .args(args);
    cmd
}

/// Pipes `lines` into `whisperfleet chat` and returns (stdout lines, stderr).
fn chat(dir: &Path, extra: &[&str], lines: &[&str]) -> (Vec<String>, String) {
    let mut args = vec!["chat"];
    args.extend_from_slice(extra);
    let mut child = embedded(dir, &args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = child.stdin.take().unwrap();
        for l in lines {
            writeln!(stdin, "{l}").unwrap();
        }
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "chat failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    (stdout.lines().map(str::to_string).collect(), stderr)
}

#[test]
fn piped_chat_answers_in_order_remembers_and_keeps_memories_across_a_restart() {
    let dir = fresh_dir("chat-embedded");
    let (replies, stderr) = chat(
        &dir,
        &["--user", "ada"],
        &[
            "My sister lives in Bergen.",
            "I like rainy days.",
            "Where does my sister live?",
        ],
    );
    // Nothing configured: every port is embedded, and says so.
    for port in ["broker:     embedded", "cache:      embedded", "llm:"] {
        assert!(stderr.contains(port), "{port:?} missing from:\n{stderr}");
    }
    assert!(stderr.contains("offline responder"), "{stderr}");
    assert_eq!(
        replies.len(),
        3,
        "one reply line per input line: {replies:#?}"
    );
    for r in &replies {
        assert!(r.ends_with("[offline responder]"), "{r}");
    }
    // In order: each reply answers its own line…
    assert!(replies[0].contains("sister"), "{}", replies[0]);
    assert!(replies[1].contains("rainy"), "{}", replies[1]);
    // …and line 3 recalls the fact from line 1.
    assert!(replies[2].contains("Bergen"), "{}", replies[2]);
    // Timing lines go to stderr, one per turn.
    assert_eq!(stderr.matches(" ms · LLM ").count(), 3, "{stderr}");

    let data = dir.join("data");
    for f in ["characters.sqlite", "memories.sqlite", "metrics.lp"] {
        assert!(data.join(f).exists(), "{f} not in the data dir");
    }
    let metrics = std::fs::read_to_string(data.join("metrics.lp")).unwrap();
    assert_eq!(
        metrics.lines().filter(|l| l.starts_with("turn,")).count(),
        3,
        "{metrics}"
    );
    assert!(metrics.contains("memory_store_ms="), "{metrics}");

    // A new process on the same data dir: history (in-process) is gone, the long-term
    // memory is not.
    let (again, _) = chat(&dir, &["--user", "ada"], &["Where does my sister live?"]);
    assert_eq!(again.len(), 1);
    assert!(again[0].contains("Bergen"), "{}", again[0]);
    // Memories are private to their user.
    let (other, _) = chat(&dir, &["--user", "bob"], &["Where does my sister live?"]);
    assert!(!other[0].contains("Bergen"), "{}", other[0]);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn chat_commands_list_switch_and_report_stats() {
    let dir = fresh_dir("chat-commands");
    let (out, _) = chat(
        &dir,
        &[],
        &[
            "/characters",
            "/switch nobody-at-all",
            "/switch old wick",
            "Good evening, keeper.",
            "/stats",
            "/quit",
            "this line is never sent",
        ],
    );
    let text = out.join("\n");
    for name in ["Vellum", "Nora Halvorsen", "Old Wick"] {
        assert!(text.contains(name), "{name} not listed:\n{text}");
    }
    assert!(
        text.contains("no character called \"nobody-at-all\""),
        "{text}"
    );
    assert!(text.contains("now talking to Old Wick"), "{text}");
    let stats_at = out
        .iter()
        .position(|l| l.starts_with("stage"))
        .expect(&text);
    let stages: Vec<&str> = out[stats_at + 1..]
        .iter()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    for s in ["queue_wait", "cdl_load", "context", "llm", "end_to_end"] {
        assert!(stages.contains(&s), "{s} not in /stats:\n{text}");
    }
    assert!(!text.contains("never sent"), "{text}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The interactive chat in a real terminal (tmux): banner, prompt, reply with its timing
/// line, and `/quit` exits 0.
#[test]
fn interactive_chat_in_a_terminal() {
    let dir = fresh_dir("chat-tty");
    let session = format!("wf{}", uuid::Uuid::new_v4().simple());
    let status_file = dir.join("status");
    // The command line tmux runs: the same clean environment as `embedded()`.
    let script = format!(
        "env -i PATH={path:?} HOME={home:?} WHISPERFLEET_DATA_DIR={data:?} {bin:?} chat; echo \"exit=$?\" > {status:?}",
        path = std::env::var("PATH").unwrap_or_default(),
        home = dir.join("home"),
        data = dir.join("data"),
        bin = bin("whisperfleet"),
        status = status_file,
    );
    let tmux = |args: &[&str]| {
        let out = Command::new("tmux")
            .args(["-L", &session])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    tmux(&[
        "new-session",
        "-d",
        "-x",
        "200",
        "-y",
        "50",
        "-s",
        "chat",
        &script,
    ]);
    let screen = || tmux(&["capture-pane", "-p", "-t", "chat"]);
    let wait_for = |what: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = screen();
            if s.contains(what) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{what:?} never appeared on screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // capture-pane drops trailing blanks: the prompt reads "you>".
    let s = wait_for("you>");
    assert!(s.contains("Talking to Vellum"), "{s}");
    assert!(s.contains("broker:"), "{s}");
    tmux(&[
        "send-keys",
        "-t",
        "chat",
        "Hello there, archivist!",
        "Enter",
    ]);
    // The timing line: "first words … · done …" when the reply was printed as it was
    // written (the usual case), the plain one when it all came at once.
    let s = wait_for("⏱");
    let s = if s.contains("⏱ first words") {
        wait_for(" s · done ")
    } else {
        wait_for(" ms · LLM ")
    };
    assert!(s.contains("Vellum> "), "{s}");
    assert!(s.contains("[offline responder]"), "{s}");
    tmux(&["send-keys", "-t", "chat", "/quit", "Enter"]);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !status_file.exists() {
        assert!(
            Instant::now() < deadline,
            "chat did not exit:\n{}",
            screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    tmux(&["kill-server"]);
    assert_eq!(
        std::fs::read_to_string(&status_file).unwrap().trim(),
        "exit=0"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The core issue's ordering/exactly-once scenario, on embedded ports: `up` with two
/// workers, 20 conversations × 10 turns, the mock LLM (the only configured port) records
/// every prompt.
#[tokio::test(flavor = "multi_thread")]
async fn up_on_embedded_ports_keeps_order_and_answers_exactly_once() {
    whisperfleet_shared::telemetry::install_crypto_provider();
    let dir = fresh_dir("up-embedded");
    let record = dir.join("llm.jsonl");
    let mock =
        whisperfleet_testkit::mock_llm::spawn(whisperfleet_testkit::mock_llm::MockLlmOptions {
            latency: Duration::from_millis(5),
            record: Some(record.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.join("up.log")).unwrap();
    let mut child = embedded(&dir, &["up", "--workers", "2"])
        .env("WHISPERFLEET_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("WHISPERFLEET_LLM_BASE_URL", mock.base_url())
        .env("WHISPERFLEET_LLM_MODEL", "mock")
        .env("WHISPERFLEET_WORKER_CONCURRENCY", "4")
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let base = Arc::new(format!("http://127.0.0.1:{port}"));
    let client = reqwest::Client::new();
    eventually(Duration::from_secs(30), "up is ready", || {
        let client = client.clone();
        let base = base.clone();
        async move {
            client
                .get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await;
    let banner = std::fs::read_to_string(dir.join("up.log")).unwrap();
    assert!(banner.contains("broker:     embedded"), "{banner}");
    assert!(
        banner.contains(&format!("http://127.0.0.1:{port}/v1/turns")),
        "{banner}"
    );

    assert_ordered_exactly_once(&base, "Vellum", &record, 20, 10).await;

    // SIGTERM drains and exits 0; the metric events of all 200 turns reached the file.
    let pid = child.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "up exited with {status}");
    let metrics = std::fs::read_to_string(dir.join("data/metrics.lp")).unwrap();
    assert_eq!(
        metrics.lines().filter(|l| l.starts_with("turn,")).count(),
        200
    );
    assert_eq!(
        metrics
            .lines()
            .filter(|l| l.starts_with("delivery,"))
            .count(),
        200
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Ports are picked one by one: with only the AMQP URL set, the broker is RabbitMQ (this
/// test's vhost) and everything else stays embedded.
#[test]
fn only_the_configured_port_leaves_the_process() {
    let fleet = Fleet::new("chat-mixed").unwrap();
    let dir = fresh_dir("chat-mixed");
    let mut child = embedded(&dir, &["chat", "--user", "mixed"])
        .env("WHISPERFLEET_AMQP_URL", fleet.amqp_url())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(
        child.stdin.take().unwrap(),
        "Hello through the real broker!"
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("broker:     rabbitmq at amqp://127.0.0.1:5672/"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("guest:guest"),
        "credentials in the banner: {stderr}"
    );
    assert!(stderr.contains("cache:      embedded"), "{stderr}");
    assert!(stderr.contains("note: the broker is RabbitMQ"), "{stderr}");
    assert!(stderr.contains("characters: sqlite"), "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.contains("[offline responder]"), "{stdout}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A character imported by another process (`characters import` next to a running `up`,
/// both on the embedded SQLite store) is what the next turns use within seconds.
#[tokio::test(flavor = "multi_thread")]
async fn an_import_reaches_a_running_embedded_fleet() {
    whisperfleet_shared::telemetry::install_crypto_provider();
    let dir = fresh_dir("import-embedded");
    let character = |interest: &str| {
        let path = dir.join(format!("{interest}.yaml"));
        std::fs::write(
            &path,
            format!(
                "name: Testy Quill\noccupation: tester\ninterests:\n  - category: hobby\n    interest_text: {interest}\n    proficiency_level: 9\n    importance: high\n"
            ),
        )
        .unwrap();
        path
    };
    let import = |path: PathBuf| {
        let out = embedded(&dir, &["characters", "import", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    import(character("kite flying"));
    let port = free_port();
    let log = std::fs::File::create(dir.join("up.log")).unwrap();
    let mut child = embedded(&dir, &["up"])
        .env("WHISPERFLEET_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::from(log.try_clone().unwrap()))
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let ask = || {
        let (client, base) = (client.clone(), base.clone());
        async move {
            let (status, body) = post_turn(
                &client,
                &base,
                json!({"character": "Testy Quill", "user_id": "u", "text": "Tell me something."}),
            )
            .await
            .unwrap_or((0, serde_json::Value::Null));
            (status == 200).then(|| body["text"].as_str().unwrap_or_default().to_string())
        }
    };
    eventually(Duration::from_secs(30), "up answers", || async {
        ask().await.is_some()
    })
    .await;
    assert!(ask().await.unwrap().contains("kite flying"));
    import(character("zeppelin restoration"));
    eventually(
        Duration::from_secs(20),
        "the imported version is used",
        || async {
            ask()
                .await
                .is_some_and(|t| t.contains("zeppelin restoration"))
        },
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
