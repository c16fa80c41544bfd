//! InfluxDB: its `/health` route (version where the server says it), then one real write of
//! a harmless point (`whisperfleet_doctor ok=1i`) through the sink the metrics-writer uses,
//! since only a write proves the URL, token, org and bucket together.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use whisperfleet_shared::config::Config;
use whisperfleet_shared::ports::{MetricsSink, SinkError};

use super::{Check, host_port};
use crate::metrics::influx::InfluxSink;

const B: &str = "influxdb";
const VAR: &str = "WHISPERFLEET_INFLUX_URL";

pub async fn checks(config: &Config, url: &SecretString) -> Vec<Check> {
    let raw = url.expose_secret();
    let at = host_port(raw, 8086);
    let mut out = Vec::new();
    match health(raw).await {
        Ok(server) => out.push(Check::ok(B, "reachable", format!("{server} at {at}"))),
        Err(e) => {
            out.push(Check::fail(
                B,
                "reachable",
                format!("{VAR}: {e} — is InfluxDB running?"),
                format!("start InfluxDB, or point {VAR} at its HTTP API (http://host:8086)"),
            ));
            return out;
        }
    }
    let sink = match InfluxSink::from_config(raw, config) {
        Ok(s) => s,
        Err(e) => {
            out.push(Check::fail(
                B,
                "writable",
                e.to_string(),
                format!("check {VAR}"),
            ));
            return out;
        }
    };
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let line = format!("whisperfleet_doctor ok=1i {now}");
    let b = &config.backends;
    out.push(match sink.write(&[line.as_str()]).await {
        Ok(()) => Check::ok(
            B,
            "writable",
            format!("wrote a test point to org {:?}, bucket {:?}", b.influx_org, b.influx_bucket),
        ),
        Err(SinkError::Unauthorized(why)) => Check::fail(
            B,
            "writable",
            format!("InfluxDB refused the token: {why}"),
            "set WHISPERFLEET_INFLUX_TOKEN to a token with write access to the bucket",
        ),
        Err(SinkError::Retryable { reason, .. }) if reason.contains("404") => Check::fail(
            B,
            "writable",
            format!("the org or bucket does not exist: {reason}"),
            "set WHISPERFLEET_INFLUX_ORG and WHISPERFLEET_INFLUX_BUCKET to ones that exist (influx bucket list)",
        ),
        Err(e) => Check::fail(
            B,
            "writable",
            format!("{VAR}: a test write to {at} failed: {e}"),
            format!(
                "check that InfluxDB at {at} takes writes (disk, limits); the metrics-writer holds \
                 events in the `metrics` queue until it does"
            ),
        ),
    });
    out
}

/// `InfluxDB v2.7.1` from `GET /health` (InfluxDB 2 answers JSON with its version; other
/// servers of the same API, victoria-metrics for one, just `OK`).
async fn health(base: &str) -> Result<String, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let mut u = reqwest::Url::parse(base).map_err(|e| format!("{VAR} is not a URL: {e}"))?;
    let _ = u.set_username("");
    let _ = u.set_password(None);
    let url = format!("{}/health", u.as_str().trim_end_matches('/'));
    let at = host_port(base, 8086);
    let resp = client.get(&url).send().await.map_err(|e| {
        let timeout = e.is_timeout();
        let chain = crate::http::error_chain(&e.without_url());
        if chain.contains("Connection refused") {
            format!("connection refused at {at}")
        } else if timeout {
            format!("no answer from {at}")
        } else {
            format!("cannot reach {at}: {chain}")
        }
    })?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(format!("{at}/health answered {status}"));
    }
    let json: Option<serde_json::Value> = serde_json::from_str(&text).ok();
    Ok(match json {
        Some(v) => format!(
            "{} {}",
            v["name"].as_str().unwrap_or("InfluxDB"),
            v["version"].as_str().unwrap_or("(version unknown)")
        ),
        None => "an InfluxDB-API server (version not reported)".into(),
    })
}
