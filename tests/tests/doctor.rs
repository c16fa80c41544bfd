//! `whisperfleet doctor`, the real binary against real services (a fresh vhost, database and
//! Redis prefix per test): a healthy fleet passes with exit status 0, and each injected
//! misconfiguration — a wrong RabbitMQ URL, a vhost without the topology, nobody consuming
//! `turns`, an InfluxDB that takes no writes, an unreachable PostgreSQL — is reported in
//! plain words with what fixes it, exit status 1, and no secret in the output.

use std::time::Duration;

use serde_json::Value;
use whisperfleet_testkit::*;

const HANG: Duration = Duration::from_secs(30);

struct Report {
    code: Option<i32>,
    json: Value,
    text: String,
}

impl Report {
    /// The one check of `backend` named `check`.
    fn check(&self, backend: &str, check: &str) -> &Value {
        self.json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["backend"] == backend && c["check"] == check)
            .unwrap_or_else(|| panic!("no {backend} {check} check in {}", self.json))
    }

    fn failed(&self) -> Vec<String> {
        self.json["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["status"] == "fail")
            .map(|c| format!("{} {}", c["backend"], c["check"]))
            .collect()
    }
}

/// Runs `doctor` twice (JSON and lines) with the fleet's env plus `extra`.
fn doctor(fleet: &Fleet, extra: &[(&str, String)]) -> Report {
    let grafana = repo_root().join("deploy/grafana").display().to_string();
    let json = fleet
        .cli_output(&["doctor", "--json", "--grafana", &grafana], extra)
        .unwrap();
    let text = fleet
        .cli_output(&["doctor", "--grafana", &grafana], extra)
        .unwrap();
    assert_eq!(json.status.code(), text.status.code(), "both formats agree");
    let stdout = String::from_utf8_lossy(&json.stdout);
    Report {
        code: json.status.code(),
        json: serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("doctor --json printed no JSON ({e}): {stdout}")),
        text: format!(
            "{}{}",
            String::from_utf8_lossy(&text.stdout),
            String::from_utf8_lossy(&text.stderr)
        ),
    }
}

fn assert_failed_with_fix(r: &Report, backend: &str, check: &str, says: &[&str], fix: &str) {
    let c = r.check(backend, check);
    assert_eq!(c["status"], "fail", "{c}");
    for s in says {
        assert!(
            c["message"].as_str().unwrap().contains(s),
            "{backend} {check} should say {s:?}: {c}"
        );
    }
    assert!(
        c["fix"].as_str().is_some_and(|f| f.contains(fix)),
        "{backend} {check} should name the fix {fix:?}: {c}"
    );
    assert_eq!(r.code, Some(1), "non-zero exit on a failure:\n{}", r.text);
    // The plain output says the same on one line with its fix.
    let line = r
        .text
        .lines()
        .find(|l| l.starts_with("FAIL") && l.contains(backend) && l.contains(check))
        .unwrap_or_else(|| panic!("no FAIL line for {backend} {check}:\n{}", r.text));
    assert!(line.contains("fix:") && line.contains(fix), "{line}");
}

/// The fleet's processes running (worker, gateway, metrics-writer) on fresh names, with a
/// private InfluxDB-API server: every check passes, exit status 0, and the test point
/// reached the server.
#[tokio::test(flavor = "multi_thread")]
async fn a_running_fleet_is_all_good() {
    let mut fleet = Fleet::new("doctor_good").unwrap();
    let vm = VictoriaMetrics::start().await.unwrap();
    fleet.set("WHISPERFLEET_INFLUX_URL", vm.url());
    let health = |p: u16| ("WHISPERFLEET_HEALTH_ADDR", format!("127.0.0.1:{p}"));
    fleet
        .spawn("worker", "worker", &[health(free_port())])
        .unwrap();
    fleet
        .spawn("metrics-writer", "writer", &[health(free_port())])
        .unwrap();
    fleet.spawn_gateway(&[]).await.unwrap();
    let characters = repo_root().join("characters").display().to_string();
    fleet.cli(&["characters", "import", &characters]).unwrap();
    let broker = broker_with(&fleet, Default::default()).await;
    eventually(HANG, "a worker consumes turns", || async {
        use whisperfleet_shared::ports::Broker;
        broker
            .queue_stats("turns")
            .await
            .ok()
            .flatten()
            .is_some_and(|s| s.consumers > 0)
    })
    .await;

    let r = doctor(&fleet, &[]);
    assert!(r.failed().is_empty(), "{:?}\n{}", r.failed(), r.text);
    assert_eq!(r.code, Some(0), "{}", r.text);
    assert_eq!(r.json["ok"], true);
    for (backend, check) in [
        ("rabbitmq", "reachable"),
        ("rabbitmq", "topology"),
        ("rabbitmq", "turns consumers"),
        ("rabbitmq", "metrics consumers"),
        ("rabbitmq", "reply queues"),
        ("redis", "reachable"),
        ("redis", "eviction policy"),
        ("postgres", "reachable"),
        ("postgres", "migrations"),
        ("postgres", "characters"),
        ("influxdb", "reachable"),
        ("influxdb", "writable"),
        ("grafana", "dashboards/whisperfleet.json"),
        ("grafana", "provisioning/alerting/whisperfleet.yml"),
    ] {
        assert_eq!(r.check(backend, check)["status"], "ok", "{backend} {check}");
    }
    assert!(
        r.check("rabbitmq", "reachable")["message"]
            .as_str()
            .unwrap()
            .contains("RabbitMQ 3."),
        "the server's version: {}",
        r.check("rabbitmq", "reachable")
    );
    assert!(r.text.contains("all good"), "{}", r.text);
    // The write check really wrote (victoria-metrics shows a new series after a moment).
    eventually(HANG, "the doctor's test point", || async {
        vm.count("whisperfleet_doctor.*").await.unwrap_or(0) >= 1
    })
    .await;
}

/// A RabbitMQ URL with nothing listening: said as such, with the variable, and the
/// password in that URL never printed.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_rabbitmq_url_is_reported_with_its_variable() {
    let fleet = Fleet::new("doctor_url").unwrap();
    let port = free_port();
    let url = format!(
        "amqp://guest:doctor-pw-9f3k@127.0.0.1:{port}/{}",
        fleet.vhost
    );
    let r = doctor(&fleet, &[("WHISPERFLEET_AMQP_URL", url)]);
    assert_failed_with_fix(
        &r,
        "rabbitmq",
        "reachable",
        &[
            "WHISPERFLEET_AMQP_URL",
            &format!("connection refused at 127.0.0.1:{port}"),
            "is RabbitMQ running?",
        ],
        "WHISPERFLEET_AMQP_URL",
    );
    assert!(!r.text.contains("doctor-pw-9f3k"), "{}", r.text);
    assert!(!r.json.to_string().contains("doctor-pw-9f3k"));
}

/// A vhost nobody declared the topology in: every missing exchange and queue named, and
/// what declares them.
#[tokio::test(flavor = "multi_thread")]
async fn a_vhost_without_the_topology_names_what_is_missing() {
    let fleet = Fleet::new("doctor_topology").unwrap();
    let r = doctor(&fleet, &[]);
    assert_failed_with_fix(
        &r,
        "rabbitmq",
        "topology",
        &["queue turns", "exchange fleet.turns", "queue metrics.dead"],
        "start the gateway, a worker or the metrics-writer",
    );
    // Looking declared nothing.
    let broker = broker_with(&fleet, Default::default()).await;
    use whisperfleet_shared::ports::Broker;
    assert!(broker.queue_stats("turns").await.unwrap().is_none());
}

/// The topology declared but no worker running: `turns` has no consumer.
#[tokio::test(flavor = "multi_thread")]
async fn no_consumer_on_turns_says_start_workers() {
    let fleet = Fleet::new("doctor_consumers").unwrap();
    let _broker = broker_for(&fleet).await;
    let r = doctor(&fleet, &[]);
    assert_eq!(r.check("rabbitmq", "topology")["status"], "ok");
    assert_failed_with_fix(
        &r,
        "rabbitmq",
        "turns consumers",
        &["no worker consumes `turns`"],
        "start workers",
    );
}

/// InfluxDB behind the TCP fault proxy: writable while it forwards, reported with its
/// variable once the proxy cuts every connection.
#[tokio::test(flavor = "multi_thread")]
async fn an_unwritable_influxdb_is_reported() {
    let fleet = Fleet::new("doctor_influx").unwrap();
    let vm = VictoriaMetrics::start().await.unwrap();
    let proxy = TcpProxy::start(&format!("127.0.0.1:{}", vm.port))
        .await
        .unwrap();
    let via = [(
        "WHISPERFLEET_INFLUX_URL",
        format!("http://{}", proxy.addr()),
    )];
    let before = doctor(&fleet, &via);
    assert_eq!(
        before.check("influxdb", "writable")["status"],
        "ok",
        "{}",
        before.text
    );
    proxy.cut();
    let r = doctor(&fleet, &via);
    let c = r.check("influxdb", "reachable");
    assert_failed_with_fix(
        &r,
        "influxdb",
        "reachable",
        &["WHISPERFLEET_INFLUX_URL", &proxy.addr().to_string()],
        "WHISPERFLEET_INFLUX_URL",
    );
    assert_ne!(c["status"], "ok");
}

/// A PostgreSQL URL with nothing listening.
#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_postgres_is_reported() {
    let fleet = Fleet::new("doctor_pg").unwrap();
    let port = free_port();
    let r = doctor(
        &fleet,
        &[(
            "WHISPERFLEET_DATABASE_URL",
            format!(
                "postgres://postgres:pg-pw-77x@127.0.0.1:{port}/{}",
                fleet.name
            ),
        )],
    );
    assert_failed_with_fix(
        &r,
        "postgres",
        "reachable",
        &[
            "WHISPERFLEET_DATABASE_URL",
            &format!("connection refused at 127.0.0.1:{port}"),
        ],
        "WHISPERFLEET_DATABASE_URL",
    );
    assert!(!r.text.contains("pg-pw-77x"), "{}", r.text);
}
