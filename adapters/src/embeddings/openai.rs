//! [`OpenAiEmbedder`]: a client for any OpenAI-compatible `POST /v1/embeddings` (OpenAI,
//! Ollama, vLLM, TEI, `whisperfleet mock-llm`).
//!
//! Same conventions as the chat client in [`crate::llm::openai`]: one pooled
//! `reqwest::Client`, a per-attempt timeout, retries (through [`whisperfleet_shared::retry`])
//! on timeouts, connection errors, 429 and 5xx with full-jitter backoff that waits at least
//! what `Retry-After` asks (capped at `4 × backoff_max`), and the API key only ever exposed to build the `Authorization` header —
//! `Debug`, `describe`, logs and errors never contain it. Answers are checked (one vector per
//! input, ordered by `index`, each of the configured dimensions, all finite) and
//! L2-normalised, so either embedder can feed the same vector store.

use std::fmt;
use std::time::Duration;

use crate::http::{error_chain, openai_endpoint, redact_userinfo, retry_after_seconds};
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use whisperfleet_shared::ports::{EmbedError, Embedder};
use whisperfleet_shared::retry::{RetryAction, RetryPolicy, Retryable, retry};

use super::l2_normalise;

/// A `Retry-After` longer than `backoff_max × RETRY_AFTER_CAP_FACTOR` is cut down to that: an
/// embedding sits on the turn's context path, and a turn without memories beats a late one.
pub const RETRY_AFTER_CAP_FACTOR: u32 = 4;

/// Inputs sent per request; longer batches are split. Well under OpenAI's 2048-input limit
/// and small enough for local servers.
pub const MAX_INPUTS_PER_REQUEST: usize = 256;

/// Server bodies quoted in errors are cut to this many characters.
const MAX_ERROR_BODY_CHARS: usize = 300;

/// How to reach an OpenAI-compatible embeddings endpoint.
///
/// `Debug` is derived on purpose: [`SecretString`] prints as `[REDACTED]`.
#[derive(Debug, Clone)]
pub struct EmbedderConfig {
    /// Server root, e.g. `http://127.0.0.1:11434` or `https://api.openai.com`. A trailing
    /// slash, `/v1` or `/v1/embeddings` is tolerated; the client appends `/v1/embeddings`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …` when set.
    pub api_key: Option<SecretString>,
    pub model: String,
    /// The model's vector length; answers of any other length are rejected, since the vector
    /// store's collection has a fixed size.
    pub dims: usize,
    /// Per attempt, covering connect, send and reading the whole answer.
    pub timeout: Duration,
    /// Extra attempts after the first one fails with a retryable error.
    pub max_retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
}

impl EmbedderConfig {
    /// A config with defaults for the turn's context path: 10 s timeout, 2 retries,
    /// 100 ms–2 s backoff.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>, dims: usize) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            model: model.into(),
            dims,
            timeout: Duration::from_secs(10),
            max_retries: 2,
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(2),
        }
    }
}

/// The [`Embedder`] port over HTTP. Cheap to share behind an `Arc`.
pub struct OpenAiEmbedder {
    http: reqwest::Client,
    /// Full `…/v1/embeddings` URL, credentials included if the config had any.
    request_url: String,
    /// `request_url` without userinfo, for `describe`, `Debug` and logs.
    endpoint_display: String,
    api_key: Option<SecretString>,
    model: String,
    dims: usize,
    timeout: Duration,
    retry: RetryPolicy,
}

impl fmt::Debug for OpenAiEmbedder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hand-written so neither the key nor URL credentials can leak through a `{:?}`.
        f.debug_struct("OpenAiEmbedder")
            .field("endpoint", &self.endpoint_display)
            .field("api_key", &self.api_key.as_ref().map(|_| "[REDACTED]"))
            .field("model", &self.model)
            .field("dims", &self.dims)
            .field("timeout", &self.timeout)
            .field("max_retries", &self.retry.max_retries)
            .finish_non_exhaustive()
    }
}

/// Why one attempt failed, classified for the retry loop.
#[derive(Debug)]
enum Failure {
    /// Timeouts, connection errors, 429, 5xx.
    Retryable {
        message: String,
        retry_after_s: Option<f64>,
    },
    /// Anything retrying will not fix.
    Fatal(EmbedError),
}

impl Failure {
    fn into_error(self) -> EmbedError {
        match self {
            Failure::Retryable { message, .. } => EmbedError::Unavailable(message),
            Failure::Fatal(err) => err,
        }
    }
}

impl Retryable for Failure {
    fn retry_action(&self) -> RetryAction {
        match self {
            Failure::Retryable { retry_after_s, .. } => RetryAction::after_secs(*retry_after_s),
            Failure::Fatal(_) => RetryAction::DontRetry,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Retryable { message, .. } => f.write_str(message),
            Failure::Fatal(err) => err.fmt(f),
        }
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    input: &'a [&'a str],
}

#[derive(Deserialize)]
struct WireResponse {
    data: Vec<WireEmbedding>,
}

#[derive(Deserialize)]
struct WireEmbedding {
    #[serde(default)]
    index: Option<usize>,
    embedding: Vec<f32>,
}

impl OpenAiEmbedder {
    /// Builds the client and its connection pool. Fails on an unusable `base_url`, zero
    /// `dims`, or if the HTTP client cannot be built.
    pub fn new(cfg: EmbedderConfig) -> Result<Self, EmbedError> {
        let request_url = embeddings_url(&cfg.base_url)?;
        if cfg.dims == 0 {
            return Err(EmbedError::Invalid(
                "embedding dims must be at least 1".into(),
            ));
        }
        // reqwest is built with `rustls-no-provider`; installing one is idempotent.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = reqwest::Client::builder()
            .user_agent(concat!("whisperfleet/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| EmbedError::Unavailable(error_chain(&e.without_url())))?;
        Ok(Self {
            http,
            endpoint_display: redact_userinfo(&request_url),
            request_url,
            api_key: cfg.api_key.filter(|k| !k.expose_secret().is_empty()),
            model: cfg.model,
            dims: cfg.dims,
            timeout: cfg.timeout,
            retry: RetryPolicy::new(cfg.max_retries, cfg.backoff_base, cfg.backoff_max)
                .with_retry_after_cap(cfg.backoff_max.saturating_mul(RETRY_AFTER_CAP_FACTOR)),
        })
    }

    /// The full embeddings URL requests go to (without credentials).
    pub fn endpoint(&self) -> &str {
        &self.endpoint_display
    }

    /// One batch with retries.
    async fn embed_batch(&self, inputs: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
        retry(&self.retry, "embedding request", |_| self.attempt(inputs))
            .await
            .map_err(Failure::into_error)
    }

    /// One HTTP exchange, bounded by `self.timeout`.
    async fn attempt(&self, inputs: &[&str]) -> Result<Vec<Vec<f32>>, Failure> {
        let exchange = async {
            let mut req = self.http.post(&self.request_url).json(&WireRequest {
                model: &self.model,
                input: inputs,
            });
            if let Some(key) = &self.api_key {
                // `bearer_auth` marks the header sensitive for reqwest/hyper debug output.
                req = req.bearer_auth(key.expose_secret());
            }
            let resp = req.send().await.map_err(|e| self.transport_failure(e))?;
            let status = resp.status();
            let retry_after_s = retry_after_seconds(resp.headers());
            let bytes = resp.bytes().await.map_err(|e| self.transport_failure(e))?;
            if !status.is_success() {
                let message = format!("HTTP {}: {}", status.as_u16(), self.quote_body(&bytes));
                return Err(if status.as_u16() == 429 || status.is_server_error() {
                    Failure::Retryable {
                        message,
                        retry_after_s,
                    }
                } else {
                    Failure::Fatal(EmbedError::Unavailable(message))
                });
            }
            self.parse(&bytes, inputs.len()).map_err(Failure::Fatal)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Failure::Retryable {
                message: format!("timed out after {} ms", self.timeout.as_millis()),
                retry_after_s: None,
            }),
        }
    }

    /// Checks and normalises an answer to `expected` inputs.
    fn parse(&self, bytes: &[u8], expected: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        let parsed: WireResponse = serde_json::from_slice(bytes)
            .map_err(|e| EmbedError::Invalid(format!("{e}; body: {}", self.quote_body(bytes))))?;
        if parsed.data.len() != expected {
            return Err(EmbedError::Invalid(format!(
                "asked for {expected} embeddings, got {}",
                parsed.data.len()
            )));
        }
        let mut slots: Vec<Option<Vec<f32>>> = vec![None; expected];
        let indexed = parsed.data.iter().all(|d| d.index.is_some());
        for (position, item) in parsed.data.into_iter().enumerate() {
            // OpenAI orders by `index`; servers that omit it answer in input order.
            let i = if indexed {
                item.index.unwrap_or(position)
            } else {
                position
            };
            let slot = slots.get_mut(i).ok_or_else(|| {
                EmbedError::Invalid(format!("embedding index {i} out of range 0..{expected}"))
            })?;
            if slot.is_some() {
                return Err(EmbedError::Invalid(format!("embedding index {i} repeated")));
            }
            if item.embedding.len() != self.dims {
                return Err(EmbedError::Invalid(format!(
                    "embedding {i} has {} dimensions, expected {} (check the model and dims)",
                    item.embedding.len(),
                    self.dims
                )));
            }
            if !item.embedding.iter().all(|x| x.is_finite()) {
                return Err(EmbedError::Invalid(format!(
                    "embedding {i} has non-finite values"
                )));
            }
            let mut v = item.embedding;
            l2_normalise(&mut v);
            *slot = Some(v);
        }
        // Every slot is filled: `expected` distinct in-range indices were seen.
        Ok(slots.into_iter().flatten().collect())
    }

    fn transport_failure(&self, err: reqwest::Error) -> Failure {
        let message = if err.is_timeout() {
            format!("timed out after {} ms", self.timeout.as_millis())
        } else {
            // The URL is dropped: it is in `describe()` already and may carry credentials.
            error_chain(&err.without_url())
        };
        Failure::Retryable {
            message,
            retry_after_s: None,
        }
    }

    /// A server body made safe for an error: lossy UTF-8, key scrubbed, cut short.
    fn quote_body(&self, bytes: &[u8]) -> String {
        let mut text = String::from_utf8_lossy(bytes).into_owned();
        if let Some(key) = &self.api_key {
            text = text.replace(key.expose_secret(), "[REDACTED]");
        }
        let text = text.trim();
        if text.chars().count() <= MAX_ERROR_BODY_CHARS {
            return text.to_owned();
        }
        let mut out: String = text.chars().take(MAX_ERROR_BODY_CHARS - 1).collect();
        out.push('…');
        out
    }
}

#[async_trait]
impl Embedder for OpenAiEmbedder {
    /// Blank texts get zero vectors without a request (servers reject empty input), like
    /// [`HashEmbedder`]; the rest go in batches of [`MAX_INPUTS_PER_REQUEST`].
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut out = vec![Vec::new(); texts.len()];
        let wanted: Vec<usize> = (0..texts.len())
            .filter(|&i| !texts[i].trim().is_empty())
            .collect();
        for i in (0..texts.len()).filter(|i| texts[*i].trim().is_empty()) {
            out[i] = vec![0.0; self.dims];
        }
        for chunk in wanted.chunks(MAX_INPUTS_PER_REQUEST) {
            let inputs: Vec<&str> = chunk.iter().map(|&i| texts[i].as_str()).collect();
            let vectors = self.embed_batch(&inputs).await?;
            for (&i, v) in chunk.iter().zip(vectors) {
                out[i] = v;
            }
        }
        Ok(out)
    }

    fn dimensions(&self) -> usize {
        self.dims
    }

    fn describe(&self) -> String {
        format!(
            "openai-compatible embeddings at {} (model {}, {} dims)",
            self.endpoint_display, self.model, self.dims
        )
    }
}

/// `base_url` → `…/v1/embeddings`, accepting the forms people paste.
fn embeddings_url(base_url: &str) -> Result<String, EmbedError> {
    openai_endpoint(base_url, "embeddings")
        .map_err(|e| EmbedError::Invalid(format!("embeddings {e}")))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    use axum::http::StatusCode;
    use axum::response::IntoResponse;

    use reqwest::header::{HeaderMap, RETRY_AFTER};

    use super::*;
    use crate::embeddings::cosine;
    use crate::embeddings::hashing::{DEFAULT_HASH_DIMS, HashEmbedder};

    fn norm(v: &[f32]) -> f32 {
        v.iter().map(|x| x * x).sum::<f32>().sqrt()
    }
    use whisperfleet_testkit::mock_llm::{self, MockLlmOptions};

    fn config(base_url: String, dims: usize) -> EmbedderConfig {
        EmbedderConfig {
            timeout: Duration::from_secs(5),
            max_retries: 3,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            ..EmbedderConfig::new(base_url, "mock-embed", dims)
        }
    }

    #[tokio::test]
    async fn openai_embedder_against_the_mock() {
        let mock = mock_llm::spawn(MockLlmOptions::default()).await.unwrap();
        let client = OpenAiEmbedder::new(config(mock.base_url(), DEFAULT_HASH_DIMS)).unwrap();
        assert_eq!(
            client.endpoint(),
            format!("{}/v1/embeddings", mock.base_url())
        );
        let texts: Vec<String> = [
            "my dog is called Biscuit",
            "",
            "what is my dog's name?",
            "the stock market fell today",
        ]
        .map(String::from)
        .to_vec();
        let out = client.embed(&texts).await.unwrap();
        assert_eq!(out.len(), 4);
        assert!(out.iter().all(|v| v.len() == DEFAULT_HASH_DIMS));
        // The mock embeds with HashEmbedder, so the answers are meaningful and in order.
        let local = HashEmbedder::default();
        assert!(cosine(&out[0], &local.embed_one(&texts[0])) > 0.9999);
        assert!(cosine(&out[3], &local.embed_one(&texts[3])) > 0.9999);
        assert_eq!(out[1], vec![0.0; DEFAULT_HASH_DIMS]);
        assert!((norm(&out[2]) - 1.0).abs() < 1e-4);
        assert!(cosine(&out[0], &out[2]) > cosine(&out[0], &out[3]));
        // One request for the three non-blank texts; chat completions are counted apart.
        assert_eq!(mock.stats.embedding_requests(), 1);
        assert_eq!(mock.stats.requests(), 0);
        // Nothing to embed, nothing sent.
        assert!(client.embed(&[]).await.unwrap().is_empty());
        assert_eq!(mock.stats.embedding_requests(), 1);
    }

    #[tokio::test]
    async fn wrong_dimensions_are_rejected() {
        let mock = mock_llm::spawn(MockLlmOptions::default()).await.unwrap();
        let client = OpenAiEmbedder::new(config(mock.base_url(), 1536)).unwrap();
        let err = client.embed(&["hi".to_owned()]).await.unwrap_err();
        assert!(
            matches!(&err, EmbedError::Invalid(m) if m.contains("384") && m.contains("1536")),
            "{err:?}"
        );
        // Not retried: another attempt would get the same answer.
        assert_eq!(mock.stats.embedding_requests(), 1);
    }

    #[test]
    fn config_errors() {
        assert!(OpenAiEmbedder::new(config("not a url".into(), 8)).is_err());
        assert!(OpenAiEmbedder::new(config("ftp://example.com".into(), 8)).is_err());
        assert!(OpenAiEmbedder::new(config("http://127.0.0.1:1".into(), 0)).is_err());
        for suffix in ["", "/", "/v1", "/v1/", "/v1/embeddings"] {
            let c = OpenAiEmbedder::new(config(format!("http://h:1{suffix}"), 8)).unwrap();
            assert_eq!(c.endpoint(), "http://h:1/v1/embeddings");
        }
    }

    /// A scripted embeddings server: answers the first `fail` requests with `status` (and
    /// `Retry-After: retry_after`), then echoes valid 4-dim embeddings in reverse order (with
    /// indices) to check the client reorders them. Returns its base URL and request counter.
    async fn scripted_server(
        fail: u32,
        status: u16,
        retry_after: Option<&'static str>,
        delay: Duration,
    ) -> (String, Arc<AtomicU32>) {
        let count = Arc::new(AtomicU32::new(0));
        let seen = count.clone();
        let app = axum::Router::new().route(
            "/v1/embeddings",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, body: axum::Json<serde_json::Value>| {
                    let seen = seen.clone();
                    async move {
                        let n = seen.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        if n < fail {
                            let auth = headers
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let mut resp = (
                                StatusCode::from_u16(status).unwrap(),
                                format!("failure {n}; you sent {auth}"),
                            )
                                .into_response();
                            if let Some(ra) = retry_after {
                                resp.headers_mut()
                                    .insert("retry-after", ra.parse().unwrap());
                            }
                            return resp;
                        }
                        let inputs = body["input"].as_array().cloned().unwrap_or_default();
                        let data: Vec<serde_json::Value> = inputs
                            .iter()
                            .enumerate()
                            .rev()
                            .map(|(i, _)| {
                                serde_json::json!({
                                    "object": "embedding",
                                    "index": i,
                                    "embedding": [i as f32 + 1.0, 0.0, 0.0, 3.0],
                                })
                            })
                            .collect();
                        axum::Json(serde_json::json!({ "object": "list", "data": data }))
                            .into_response()
                    }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (format!("http://{addr}"), count)
    }

    #[tokio::test]
    async fn answers_are_reordered_by_index_and_normalised() {
        let (url, _) = scripted_server(0, 500, None, Duration::ZERO).await;
        let client = OpenAiEmbedder::new(config(url, 4)).unwrap();
        let out = client
            .embed(&["a".to_owned(), "b".to_owned()])
            .await
            .unwrap();
        // Index 0 → [1,0,0,3]/√10, index 1 → [2,0,0,3]/√13.
        assert!((out[0][0] - 1.0 / 10f32.sqrt()).abs() < 1e-6, "{out:?}");
        assert!((out[1][0] - 2.0 / 13f32.sqrt()).abs() < 1e-6, "{out:?}");
    }

    #[tokio::test]
    async fn retries_5xx_then_succeeds() {
        let (url, count) = scripted_server(2, 503, None, Duration::ZERO).await;
        let client = OpenAiEmbedder::new(config(url, 4)).unwrap();
        client.embed(&["x".to_owned()]).await.unwrap();
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn gives_up_after_max_retries() {
        let (url, count) = scripted_server(100, 500, None, Duration::ZERO).await;
        let mut cfg = config(url, 4);
        cfg.max_retries = 2;
        let client = OpenAiEmbedder::new(cfg).unwrap();
        let err = client.embed(&["x".to_owned()]).await.unwrap_err();
        assert!(
            matches!(&err, EmbedError::Unavailable(m) if m.contains("500")),
            "{err:?}"
        );
        assert_eq!(count.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn honours_retry_after() {
        let (url, count) = scripted_server(1, 429, Some("1"), Duration::ZERO).await;
        let mut cfg = config(url, 4);
        // The cap (4 × backoff_max) must allow a 1 s Retry-After.
        cfg.backoff_max = Duration::from_millis(500);
        let client = OpenAiEmbedder::new(cfg).unwrap();
        let started = Instant::now();
        client.embed(&["x".to_owned()]).await.unwrap();
        assert!(
            started.elapsed() >= Duration::from_millis(950),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn client_errors_are_not_retried() {
        let (url, count) = scripted_server(5, 400, None, Duration::ZERO).await;
        let client = OpenAiEmbedder::new(config(url, 4)).unwrap();
        let err = client.embed(&["x".to_owned()]).await.unwrap_err();
        assert!(
            matches!(&err, EmbedError::Unavailable(m) if m.contains("400")),
            "{err:?}"
        );
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn timeouts_are_retried_then_reported() {
        let (url, count) = scripted_server(0, 500, None, Duration::from_secs(3)).await;
        let mut cfg = config(url, 4);
        cfg.timeout = Duration::from_millis(150);
        cfg.max_retries = 1;
        let client = OpenAiEmbedder::new(cfg).unwrap();
        let err = client.embed(&["x".to_owned()]).await.unwrap_err();
        assert!(
            matches!(&err, EmbedError::Unavailable(m) if m.contains("timed out")),
            "{err:?}"
        );
        assert_eq!(count.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn unreachable_server_is_unavailable() {
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let mut cfg = config(format!("http://{addr}"), 4);
        cfg.max_retries = 1;
        let client = OpenAiEmbedder::new(cfg).unwrap();
        let err = client.embed(&["x".to_owned()]).await.unwrap_err();
        assert!(matches!(err, EmbedError::Unavailable(_)), "{err:?}");
    }

    #[tokio::test]
    async fn key_is_sent_as_bearer_and_never_shown() {
        const KEY: &str = "sk-embed-secret-98765";
        let (url, _) = scripted_server(100, 401, None, Duration::ZERO).await;
        let mut cfg = config(url, 4);
        cfg.api_key = Some(SecretString::from(KEY));
        assert!(!format!("{cfg:?}").contains(KEY));
        let client = OpenAiEmbedder::new(cfg).unwrap();
        assert!(!format!("{client:?}").contains(KEY));
        assert!(!client.describe().contains(KEY));
        let err = client.embed(&["x".to_owned()]).await.unwrap_err();
        let text = err.to_string();
        // The server echoed the header; the client scrubbed the key from the quoted body.
        assert!(text.contains("Bearer [REDACTED]"), "{text}");
        assert!(!text.contains(KEY));
        assert!(!format!("{err:?}").contains(KEY));
    }

    #[test]
    fn retry_after_forms() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after_seconds(&h), None);
        h.insert(RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after_seconds(&h), Some(2.0));
        h.insert(
            RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after_seconds(&h), Some(0.0));
        h.insert("retry-after-ms", "250".parse().unwrap());
        assert_eq!(retry_after_seconds(&h), Some(0.25));
    }
}
