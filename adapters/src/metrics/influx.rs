//! InfluxDB v2 write API sink (`POST /api/v2/write`), on reqwest: used by the metrics-writer
//! (batched) and by the bench's `naive` worker (one point per request, as the seed did).
//!
//! Not the `influxdb2` crate: it hides response headers (we need `Retry-After`) and cannot
//! gzip. Status codes map onto the writer's retry policy (Telegraf's `outputs.influxdb_v2`
//! is the bar): 2xx written; 429/5xx/timeouts/connection errors retryable; 413 split; 400/422
//! bad points (bisect, dead-letter); 401/403 keep everything and back off.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use whisperfleet_shared::ports::{MetricsSink, SinkError};

pub struct InfluxSink {
    client: reqwest::Client,
    /// May hold `user:password@` (sent as basic auth): never shown, see `shown_url`.
    write_url: String,
    /// The write endpoint without credentials or query, for `describe` and `Debug`.
    shown_url: String,
    token: Option<SecretString>,
    gzip: bool,
    requests: AtomicU64,
}

impl std::fmt::Debug for InfluxSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InfluxSink")
            .field("write_url", &self.shown_url)
            .field("gzip", &self.gzip)
            .finish_non_exhaustive()
    }
}

impl InfluxSink {
    /// The sink for `url` with the configured org, bucket, token and gzip, and a 10 s
    /// request timeout (what every process that writes InfluxDB uses).
    pub fn from_config(
        url: &str,
        config: &whisperfleet_shared::config::Config,
    ) -> Result<Self, SinkError> {
        Self::new(
            url,
            &config.backends.influx_org,
            &config.backends.influx_bucket,
            config.backends.influx_token.clone(),
            config.backends.influx_gzip,
            Duration::from_secs(10),
        )
    }

    pub fn new(
        base_url: &str,
        org: &str,
        bucket: &str,
        token: Option<SecretString>,
        gzip: bool,
        timeout: Duration,
    ) -> Result<Self, SinkError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| SinkError::Retryable {
                reason: format!("http client: {e}"),
                retry_after_s: None,
            })?;
        let base = base_url.trim_end_matches('/');
        Ok(Self {
            client,
            write_url: format!(
                "{base}/api/v2/write?org={}&bucket={}&precision=ns",
                urlencode(org),
                urlencode(bucket)
            ),
            shown_url: format!(
                "{}/api/v2/write",
                crate::http::redact_userinfo(base).trim_end_matches('/')
            ),
            token,
            gzip,
            requests: AtomicU64::new(0),
        })
    }

    /// Write requests sent so far (for the writer's health point and benchmarks).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[async_trait]
impl MetricsSink for InfluxSink {
    async fn write(&self, lines: &[&str]) -> Result<(), SinkError> {
        let mut body = Vec::with_capacity(lines.iter().map(|l| l.len() + 1).sum());
        for l in lines {
            body.extend_from_slice(l.as_bytes());
            body.push(b'\n');
        }
        let mut req = self
            .client
            .post(&self.write_url)
            .header("content-type", "text/plain; charset=utf-8");
        if self.gzip {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            let _ = enc.write_all(&body);
            body = enc.finish().map_err(|e| SinkError::Retryable {
                reason: format!("gzip: {e}"),
                retry_after_s: None,
            })?;
            req = req.header("content-encoding", "gzip");
        }
        if let Some(t) = &self.token {
            // Sensitive: redacted wherever the request or its headers are shown.
            let mut value =
                reqwest::header::HeaderValue::from_str(&format!("Token {}", t.expose_secret()))
                    .map_err(|_| {
                        SinkError::Unauthorized(
                            "WHISPERFLEET_INFLUX_TOKEN holds characters not allowed in a header"
                                .into(),
                        )
                    })?;
            value.set_sensitive(true);
            req = req.header(reqwest::header::AUTHORIZATION, value);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
        let resp = match req.body(body).send().await {
            Ok(r) => r,
            Err(e) => {
                return Err(SinkError::Retryable {
                    reason: if e.is_timeout() {
                        "write timed out".into()
                    } else {
                        format!("cannot reach the server: {}", e.without_url())
                    },
                    retry_after_s: None,
                });
            }
        };
        let status = resp.status().as_u16();
        if (200..300).contains(&status) {
            return Ok(());
        }
        let wait = crate::http::retry_after_seconds(resp.headers());
        let text: String = resp
            .text()
            .await
            .unwrap_or_default()
            .chars()
            .take(500)
            .collect();
        Err(match status {
            413 => SinkError::TooLarge,
            400 | 422 => SinkError::Rejected(format!("HTTP {status}: {text}")),
            401 | 403 => SinkError::Unauthorized(format!("HTTP {status}: {text}")),
            _ => SinkError::Retryable {
                reason: format!("HTTP {status}: {text}"),
                retry_after_s: wait,
            },
        })
    }

    fn describe(&self) -> String {
        format!("influxdb v2 write API at {}", self.shown_url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_the_url_are_never_shown() {
        whisperfleet_shared::telemetry::install_crypto_provider();
        let sink = InfluxSink::new(
            "http://writer:hunter2@influx:8086/",
            "org",
            "bucket",
            Some(SecretString::from("tok-123".to_string())),
            true,
            Duration::from_secs(1),
        )
        .unwrap();
        for shown in [sink.describe(), format!("{sink:?}")] {
            assert!(
                !shown.contains("hunter2") && !shown.contains("writer:"),
                "{shown}"
            );
            assert!(!shown.contains("tok-123"), "{shown}");
            assert!(shown.contains("http://influx:8086/api/v2/write"), "{shown}");
        }
    }
}
