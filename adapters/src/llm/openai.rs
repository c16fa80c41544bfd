//! OpenAI-compatible chat completion client: the [`Llm`] port against any server that speaks
//! `POST /v1/chat/completions` (OpenRouter, Ollama, vLLM, `whisperfleet mock-llm`).
//!
//! One [`reqwest::Client`] is built per [`OpenAiClient`] and reused, so connections are pooled
//! across turns. Every attempt runs under the configured timeout.
//!
//! **Retries** go through [`whisperfleet_shared::retry`]. An attempt is retried when
//! [`LlmError::is_retryable`] says so — timeouts, connection failures, HTTP 429 and 5xx — up
//! to `max_retries` extra attempts. The wait before retry `n` (0-based) is "full jitter":
//! uniform in `[1 ms, min(backoff_max, backoff_base·2ⁿ)]`. When the server sends
//! `Retry-After` (delta-seconds or an HTTP-date; `retry-after-ms` is also read) we wait at
//! least that long, but never more than `4 × backoff_max` ([`RETRY_AFTER_CAP_FACTOR`]): a
//! server asking for minutes must not hold a user's turn hostage — the turn would be stale by
//! then, so failing and letting the caller fall back is better. Other 4xx and unreadable
//! answers are returned at once.
//!
//! **Streaming** (`Llm::stream`, in [`stream`]): the same request with `"stream": true`, read
//! as server-sent events, each piece handed on as it comes; bounded by the same overall
//! timeout and, between two chunks, by `stream_idle_timeout`.
//!
//! **Secrets.** The API key is a [`SecretString`]: it is only exposed to build the
//! `Authorization` header (which reqwest marks sensitive), `Debug` output redacts it, and any
//! server body quoted in an error has it scrubbed.

use std::fmt;
use std::time::Duration;

use crate::http::{
    error_chain, openai_endpoint, redact_userinfo, retry_after_seconds, truncate_chars,
};
use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use whisperfleet_shared::ports::llm::{
    ChatMessage, ChatRequest, ChatResponse, Llm, LlmError, OnText,
};
use whisperfleet_shared::retry::{RetryPolicy, retry};

mod stream;

/// A `Retry-After` longer than `backoff_max × RETRY_AFTER_CAP_FACTOR` is cut down to that.
pub const RETRY_AFTER_CAP_FACTOR: u32 = 4;

/// Server bodies quoted in [`LlmError::Http`] / [`LlmError::InvalidResponse`] are cut to this
/// many characters: enough to read the server's error message, not enough to flood a log line.
pub const MAX_ERROR_BODY_CHARS: usize = 300;

/// How to reach an OpenAI-compatible endpoint.
///
/// `Debug` is derived on purpose: [`SecretString`] prints as `[REDACTED]`.
#[derive(Debug, Clone)]
pub struct LlmClientConfig {
    /// Server root, e.g. `http://127.0.0.1:9000` or `https://openrouter.ai/api`. A trailing
    /// slash, `/v1` or `/v1/chat/completions` is tolerated; the client appends
    /// `/v1/chat/completions`.
    pub base_url: String,
    /// Sent as `Authorization: Bearer …` when set (Ollama and vLLM usually need none).
    pub api_key: Option<SecretString>,
    /// Used when a [`ChatRequest`] names no model.
    pub default_model: String,
    /// Per attempt, covering connect, send and reading the whole answer.
    pub timeout: Duration,
    /// Extra attempts after the first one fails with a retryable error.
    pub max_retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Streaming: the longest wait for the next chunk (keep-alive comments count), so a
    /// server that stalls mid-answer is noticed long before the overall timeout.
    pub stream_idle_timeout: Duration,
}

impl LlmClientConfig {
    /// A config with conservative defaults: 60 s timeout, 3 retries, 250 ms–8 s backoff.
    pub fn new(base_url: impl Into<String>, default_model: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key: None,
            default_model: default_model.into(),
            timeout: Duration::from_secs(60),
            max_retries: 3,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(8),
            stream_idle_timeout: Duration::from_secs(20),
        }
    }
}

/// The [`Llm`] port over HTTP. Cheap to share behind an `Arc`; clones of the inner
/// `reqwest::Client` share one connection pool.
pub struct OpenAiClient {
    http: reqwest::Client,
    /// Full `…/v1/chat/completions` URL, credentials included if the config had any.
    request_url: String,
    /// `request_url` without any userinfo, for `describe`, `Debug` and [`Self::endpoint`].
    endpoint_display: String,
    api_key: Option<SecretString>,
    default_model: String,
    timeout: Duration,
    stream_idle_timeout: Duration,
    retry: RetryPolicy,
}

impl fmt::Debug for OpenAiClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hand-written so neither the key nor URL credentials can leak through a `{:?}`.
        f.debug_struct("OpenAiClient")
            .field("endpoint", &self.endpoint_display)
            .field("api_key", &self.api_key.as_ref().map(|_| "[REDACTED]"))
            .field("default_model", &self.default_model)
            .field("timeout", &self.timeout)
            .field("retry", &self.retry)
            .finish()
    }
}

impl OpenAiClient {
    /// Builds the client and its connection pool. Fails only on an unusable `base_url` or if
    /// the HTTP client cannot be built (reported as [`LlmError::Transport`]).
    pub fn new(cfg: LlmClientConfig) -> Result<Self, LlmError> {
        let endpoint = chat_completions_url(&cfg.base_url)?;
        let endpoint_display = redact_userinfo(&endpoint);

        // reqwest is built with `rustls-no-provider` and panics without a process-wide crypto
        // provider, even for plain http. Installing one is idempotent: if someone else already
        // did, `install_default` returns Err and theirs stays.
        let _ = rustls::crypto::ring::default_provider().install_default();

        let http = reqwest::Client::builder()
            .user_agent(concat!("whisperfleet/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(cfg.timeout.min(Duration::from_secs(10)))
            .pool_idle_timeout(Duration::from_secs(90))
            .build()
            .map_err(|e| LlmError::Transport(error_chain(&e.without_url())))?;

        Ok(Self {
            http,
            request_url: endpoint,
            endpoint_display,
            api_key: cfg.api_key.filter(|k| !k.expose_secret().is_empty()),
            default_model: cfg.default_model,
            timeout: cfg.timeout,
            stream_idle_timeout: cfg.stream_idle_timeout,
            retry: RetryPolicy::new(cfg.max_retries, cfg.backoff_base, cfg.backoff_max)
                .with_retry_after_cap(cfg.backoff_max.saturating_mul(RETRY_AFTER_CAP_FACTOR)),
        })
    }

    /// The full chat-completions URL requests go to (without credentials).
    pub fn endpoint(&self) -> &str {
        &self.endpoint_display
    }

    /// The request, with the key and the turn id.
    fn post(&self, body: &WireRequest<'_>, turn_id: &str) -> reqwest::RequestBuilder {
        let mut req = self.http.post(&self.request_url).json(body);
        if let Some(key) = &self.api_key {
            // `bearer_auth` marks the header value sensitive, so it is redacted in
            // reqwest/hyper debug output too.
            req = req.bearer_auth(key.expose_secret());
        }
        if !turn_id.is_empty() {
            req = req.header("x-request-id", turn_id);
        }
        req
    }

    /// One HTTP exchange, bounded by `self.timeout`.
    async fn attempt(
        &self,
        body: &WireRequest<'_>,
        turn_id: &str,
    ) -> Result<ChatResponse, LlmError> {
        let exchange = async {
            let resp = self
                .post(body, turn_id)
                .send()
                .await
                .map_err(|e| map_reqwest_error(e, self.timeout))?;
            let status = resp.status();
            let retry_after_s = retry_after_seconds(resp.headers());
            let bytes = resp
                .bytes()
                .await
                .map_err(|e| map_reqwest_error(e, self.timeout))?;
            if !status.is_success() {
                return Err(LlmError::Http {
                    status: status.as_u16(),
                    body: self.quote_body(&bytes),
                    retry_after_s,
                });
            }
            self.parse_completion(&bytes, body.model)
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(LlmError::Timeout(duration_ms(self.timeout))),
        }
    }

    fn parse_completion(
        &self,
        bytes: &[u8],
        requested_model: &str,
    ) -> Result<ChatResponse, LlmError> {
        let parsed: WireResponse = serde_json::from_slice(bytes).map_err(|e| {
            LlmError::InvalidResponse(format!("{e}; body: {}", self.quote_body(bytes)))
        })?;
        let text = parsed
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .ok_or_else(|| {
                LlmError::InvalidResponse(format!(
                    "no choices[0].message.content; body: {}",
                    self.quote_body(bytes)
                ))
            })?;
        let usage = parsed.usage.unwrap_or_default();
        Ok(ChatResponse {
            text,
            model: parsed
                .model
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| requested_model.to_owned()),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            partial: false,
            first_token_ms: None,
        })
    }

    /// A server body made safe to put in an error: lossy UTF-8, key scrubbed (a debugging
    /// proxy may echo request headers), cut to [`MAX_ERROR_BODY_CHARS`].
    fn quote_body(&self, bytes: &[u8]) -> String {
        let mut text = String::from_utf8_lossy(bytes).into_owned();
        if let Some(key) = &self.api_key {
            text = text.replace(key.expose_secret(), "[REDACTED]");
        }
        truncate_chars(text.trim(), MAX_ERROR_BODY_CHARS)
    }
}

#[async_trait]
impl Llm for OpenAiClient {
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let body = WireRequest {
            model: request.model.as_deref().unwrap_or(&self.default_model),
            messages: &request.messages,
            temperature: request.temperature,
            max_tokens: request.max_tokens,
            stream: false,
            stream_options: None,
        };
        retry(&self.retry, "LLM request", |_| {
            self.attempt(&body, &request.turn_id)
        })
        .await
    }

    async fn stream(
        &self,
        request: &ChatRequest,
        on_text: OnText<'_>,
    ) -> Result<ChatResponse, LlmError> {
        let body = WireRequest {
            model: request.model.as_deref().unwrap_or(&self.default_model),
            messages: &request.messages,
            temperature: request.temperature,
            max_tokens: request.max_tokens,
            stream: true,
            stream_options: Some(StreamOptions {
                include_usage: true,
            }),
        };
        // An attempt that handed text on never fails (it ends partial), so only failures
        // before any text are retried: the user never sees a second beginning.
        retry(&self.retry, "LLM stream", |_| {
            self.stream_attempt(&body, &request.turn_id, on_text)
        })
        .await
    }

    fn describe(&self) -> String {
        format!(
            "openai-compatible at {} (model {})",
            self.endpoint_display, self.default_model
        )
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: &'a [ChatMessage],
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<StreamOptions>,
}

/// Asks for the usage chunk at the end of a stream (OpenAI, OpenRouter, vLLM honour it).
#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

#[derive(Deserialize)]
struct WireResponse {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<WireChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct WireChoice {
    message: WireMessage,
}

#[derive(Deserialize)]
struct WireMessage {
    #[serde(default)]
    content: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: Option<u32>,
    #[serde(default)]
    completion_tokens: Option<u32>,
}

/// `base_url` → `…/v1/chat/completions`, accepting the forms people paste.
fn chat_completions_url(base_url: &str) -> Result<String, LlmError> {
    openai_endpoint(base_url, "chat/completions")
        .map_err(|e| LlmError::Transport(format!("LLM {e}")))
}

fn map_reqwest_error(err: reqwest::Error, timeout: Duration) -> LlmError {
    if err.is_timeout() {
        // Only reachable through connect_timeout (≤ timeout); the overall timeout is ours.
        return LlmError::Timeout(duration_ms(timeout));
    }
    // The URL is dropped: it is in `describe()` already and may carry credentials.
    LlmError::Transport(error_chain(&err.without_url()))
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Instant;

    use whisperfleet_shared::ports::llm::Role;

    use rand::Rng;
    use whisperfleet_shared::retry::Retryable;

    use super::*;
    use crate::http::parse_retry_after;
    use whisperfleet_testkit::mock_llm::{self, MockLlmOptions, MockReply};

    fn config(base_url: String) -> LlmClientConfig {
        LlmClientConfig {
            base_url,
            api_key: None,
            default_model: "mock".into(),
            timeout: Duration::from_secs(5),
            max_retries: 3,
            backoff_base: Duration::from_millis(10),
            backoff_max: Duration::from_millis(50),
            stream_idle_timeout: Duration::from_secs(5),
        }
    }

    fn request(text: &str) -> ChatRequest {
        ChatRequest {
            model: None,
            messages: vec![
                ChatMessage::new(Role::System, "You are Elena, a marine biologist.\nBe kind."),
                ChatMessage::new(Role::User, text),
            ],
            temperature: Some(0.7),
            max_tokens: Some(100),
            turn_id: "turn-test".into(),
            character: None,
        }
    }

    #[tokio::test]
    async fn plain_completion() {
        let mock = mock_llm::spawn(MockLlmOptions::default()).await.unwrap();
        let client = OpenAiClient::new(config(mock.base_url())).unwrap();
        let resp = client.complete(&request("hello there")).await.unwrap();
        assert_eq!(resp.text, "[mock] Elena heard: hello there");
        assert_eq!(resp.model, "mock");
        assert!(resp.prompt_tokens.unwrap() > 0);
        assert!(resp.completion_tokens.unwrap() > 0);
        assert_eq!(mock.stats.requests(), 1);

        // The request's model wins over the default and is echoed back.
        let mut req = request("again");
        req.model = Some("other-model".into());
        assert_eq!(client.complete(&req).await.unwrap().model, "other-model");
    }

    #[tokio::test]
    async fn fixed_reply_comes_back_verbatim() {
        let text = format!("@everyone {}", "long line ".repeat(300));
        let mock = mock_llm::spawn(MockLlmOptions {
            reply: MockReply::Fixed(text.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
        let client = OpenAiClient::new(config(mock.base_url())).unwrap();
        assert_eq!(client.complete(&request("x")).await.unwrap().text, text);
    }

    #[tokio::test]
    async fn base_url_forms_are_tolerated() {
        let mock = mock_llm::spawn(MockLlmOptions::default()).await.unwrap();
        for suffix in ["/", "/v1", "/v1/", "/v1/chat/completions"] {
            let client = OpenAiClient::new(config(format!("{}{suffix}", mock.base_url()))).unwrap();
            assert_eq!(
                client.endpoint(),
                format!("{}/v1/chat/completions", mock.base_url())
            );
            client.complete(&request("hi")).await.unwrap();
        }
        assert!(OpenAiClient::new(config("not a url".into())).is_err());
        assert!(OpenAiClient::new(config("ftp://example.com".into())).is_err());
    }

    #[tokio::test]
    async fn retries_503_then_succeeds() {
        let mock = mock_llm::spawn(MockLlmOptions {
            fail_first: 2,
            fail_status: 503,
            ..Default::default()
        })
        .await
        .unwrap();
        let client = OpenAiClient::new(config(mock.base_url())).unwrap();
        let resp = client.complete(&request("persist")).await.unwrap();
        assert_eq!(resp.text, "[mock] Elena heard: persist");
        assert_eq!(mock.stats.requests(), 3);
    }

    #[tokio::test]
    async fn gives_up_after_max_retries() {
        let mock = mock_llm::spawn(MockLlmOptions {
            fail_first: 100,
            fail_status: 500,
            ..Default::default()
        })
        .await
        .unwrap();
        let mut cfg = config(mock.base_url());
        cfg.max_retries = 2;
        let client = OpenAiClient::new(cfg).unwrap();
        let err = client.complete(&request("x")).await.unwrap_err();
        assert!(matches!(err, LlmError::Http { status: 500, .. }), "{err:?}");
        assert_eq!(mock.stats.requests(), 3);
    }

    #[tokio::test]
    async fn honours_retry_after() {
        let mock = mock_llm::spawn(MockLlmOptions {
            fail_first: 1,
            fail_status: 429,
            retry_after_s: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut cfg = config(mock.base_url());
        // The cap (4 × backoff_max) must allow a 1 s Retry-After.
        cfg.backoff_max = Duration::from_millis(500);
        let client = OpenAiClient::new(cfg).unwrap();
        let started = Instant::now();
        client.complete(&request("wait for it")).await.unwrap();
        // Lower bound only: a loaded machine may take longer, never shorter.
        assert!(
            started.elapsed() >= Duration::from_millis(950),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(mock.stats.requests(), 2);
    }

    #[tokio::test]
    async fn bad_request_is_not_retried() {
        let mock = mock_llm::spawn(MockLlmOptions {
            fail_first: 5,
            fail_status: 400,
            ..Default::default()
        })
        .await
        .unwrap();
        let client = OpenAiClient::new(config(mock.base_url())).unwrap();
        let err = client.complete(&request("x")).await.unwrap_err();
        match &err {
            LlmError::Http { status, body, .. } => {
                assert_eq!(*status, 400);
                assert!(body.contains("error"), "{body}");
                assert!(body.chars().count() <= MAX_ERROR_BODY_CHARS);
            }
            other => panic!("expected Http 400, got {other:?}"),
        }
        assert!(!err.is_retryable());
        assert_eq!(mock.stats.requests(), 1);
    }

    #[tokio::test]
    async fn slow_server_times_out() {
        let mock = mock_llm::spawn(MockLlmOptions {
            latency: Duration::from_secs(3),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut cfg = config(mock.base_url());
        cfg.timeout = Duration::from_millis(200);
        cfg.max_retries = 0;
        let client = OpenAiClient::new(cfg).unwrap();
        let err = client.complete(&request("x")).await.unwrap_err();
        assert!(matches!(err, LlmError::Timeout(200)), "{err:?}");
        assert!(err.is_retryable());
    }

    #[tokio::test]
    async fn unreachable_server_is_a_transport_error() {
        // Bind then drop, so the port is (almost certainly) closed.
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let mut cfg = config(format!("http://{addr}"));
        cfg.max_retries = 1;
        let client = OpenAiClient::new(cfg).unwrap();
        let err = client.complete(&request("x")).await.unwrap_err();
        assert!(matches!(err, LlmError::Transport(_)), "{err:?}");
    }

    #[tokio::test]
    async fn record_file_has_one_json_line_per_request() {
        let path = std::env::temp_dir().join(format!(
            "whisperfleet-llm-record-{}-{}.jsonl",
            std::process::id(),
            rand::rng().random::<u64>()
        ));
        let mock = mock_llm::spawn(MockLlmOptions {
            record: Some(path.clone()),
            ..Default::default()
        })
        .await
        .unwrap();
        let client = Arc::new(OpenAiClient::new(config(mock.base_url())).unwrap());
        let calls = (0..8).map(|i| {
            let client = client.clone();
            async move { client.complete(&request(&format!("message {i}"))).await }
        });
        for r in futures::future::join_all(calls).await {
            r.unwrap();
        }
        let recorded = std::fs::read_to_string(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        let lines: Vec<serde_json::Value> = recorded
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 8);
        let mut seen: Vec<String> = lines
            .iter()
            .map(|l| {
                assert!(l["received_at"].is_string());
                assert_eq!(l["model"], "mock");
                assert_eq!(l["messages"][0]["role"], "system");
                l["messages"][1]["content"].as_str().unwrap().to_owned()
            })
            .collect();
        seen.sort();
        let expected: Vec<String> = (0..8).map(|i| format!("message {i}")).collect();
        assert_eq!(seen, expected);
    }

    #[tokio::test]
    async fn sends_bearer_key_and_never_shows_it() {
        use axum::http::HeaderMap as AxumHeaders;

        const KEY: &str = "sk-super-secret-key-12345";
        // A server that echoes the Authorization header back in an error body.
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(|headers: AxumHeaders| async move {
                let auth = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                (
                    axum::http::StatusCode::UNAUTHORIZED,
                    format!("bad auth: {auth}"),
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });

        let mut cfg = config(format!("http://{addr}"));
        cfg.api_key = Some(SecretString::from(KEY));
        assert!(!format!("{cfg:?}").contains(KEY));
        let client = OpenAiClient::new(cfg).unwrap();
        assert!(!format!("{client:?}").contains(KEY));
        assert!(!client.describe().contains(KEY));

        let err = client.complete(&request("x")).await.unwrap_err();
        let LlmError::Http { status, body, .. } = &err else {
            panic!("expected Http, got {err:?}");
        };
        assert_eq!(*status, 401);
        // The header arrived as a bearer token, and the echo was scrubbed.
        assert_eq!(body, "bad auth: Bearer [REDACTED]");
        assert!(!err.to_string().contains(KEY));
        assert!(!format!("{err:?}").contains(KEY));
    }

    /// Collects what a stream hands on.
    #[derive(Default)]
    struct Pieces(std::sync::Mutex<Vec<String>>);

    impl Pieces {
        fn take(&self) -> Vec<String> {
            std::mem::take(&mut *self.0.lock().unwrap())
        }
    }

    async fn stream_with(
        client: &OpenAiClient,
        text: &str,
        pieces: &Pieces,
    ) -> Result<ChatResponse, LlmError> {
        client
            .stream(&request(text), &|t: &str| {
                pieces.0.lock().unwrap().push(t.to_string())
            })
            .await
    }

    #[tokio::test]
    async fn streams_pieces_in_order_with_usage() {
        let text = "one two three four five six seven eight";
        let mock = mock_llm::spawn(MockLlmOptions {
            reply: MockReply::Fixed(text.into()),
            pacing: mock_llm::Pacing {
                ttft: Duration::from_millis(50),
                tokens_per_s: Some(200.0),
                break_after_tokens: None,
            },
            ..Default::default()
        })
        .await
        .unwrap();
        let client = OpenAiClient::new(config(mock.base_url())).unwrap();
        let pieces = Pieces::default();
        let resp = stream_with(&client, "x", &pieces).await.unwrap();
        let pieces = pieces.take();
        assert_eq!(resp.text, text);
        assert!(!resp.partial);
        assert_eq!(pieces.len(), 8, "one piece per token: {pieces:?}");
        assert_eq!(pieces.concat(), text);
        assert!(
            resp.completion_tokens.unwrap() > 0,
            "usage from the last chunk"
        );
        assert!(resp.first_token_ms.unwrap() >= 50.0);
        assert_eq!(mock.stats.requests(), 1);
    }

    #[tokio::test]
    async fn a_stream_broken_before_text_is_retried_after_text_ends_partial() {
        let text = "alpha beta gamma delta epsilon";
        let broken = |after| MockLlmOptions {
            reply: MockReply::Fixed(text.into()),
            pacing: mock_llm::Pacing {
                break_after_tokens: Some(after),
                tokens_per_s: Some(1000.0),
                ..Default::default()
            },
            ..Default::default()
        };
        // Before any text: an error, retried like a failed completion.
        let mock = mock_llm::spawn(broken(0)).await.unwrap();
        let mut cfg = config(mock.base_url());
        cfg.max_retries = 2;
        let client = OpenAiClient::new(cfg).unwrap();
        let pieces = Pieces::default();
        let err = stream_with(&client, "x", &pieces).await.unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        assert!(pieces.take().is_empty());
        assert_eq!(mock.stats.requests(), 3);

        // After text: the text so far, partial, and no second attempt.
        let mock = mock_llm::spawn(broken(2)).await.unwrap();
        let client = OpenAiClient::new(config(mock.base_url())).unwrap();
        let resp = stream_with(&client, "x", &pieces).await.unwrap();
        assert!(resp.partial);
        assert_eq!(resp.text, "alpha beta ");
        assert_eq!(pieces.take().concat(), "alpha beta ");
        assert_eq!(mock.stats.requests(), 1, "never a second beginning");
    }

    #[tokio::test]
    async fn a_stalled_stream_hits_the_idle_timeout() {
        let mock = mock_llm::spawn(MockLlmOptions {
            reply: MockReply::Fixed("slow words here".into()),
            pacing: mock_llm::Pacing {
                ttft: Duration::from_millis(10),
                tokens_per_s: Some(1.0),
                break_after_tokens: None,
            },
            ..Default::default()
        })
        .await
        .unwrap();
        let mut cfg = config(mock.base_url());
        cfg.stream_idle_timeout = Duration::from_millis(300);
        cfg.max_retries = 0;
        let client = OpenAiClient::new(cfg).unwrap();
        let pieces = Pieces::default();
        let resp = stream_with(&client, "x", &pieces).await.unwrap();
        assert!(resp.partial, "stalled after the first word");
        assert_eq!(resp.text, "slow ");
    }

    #[tokio::test]
    async fn a_server_ignoring_stream_is_read_whole() {
        // Answers plain JSON whatever the request said.
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(|| async {
                axum::Json(serde_json::json!({
                    "model": "m",
                    "choices": [{ "message": { "content": "whole answer" } }],
                }))
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = OpenAiClient::new(config(format!("http://{addr}"))).unwrap();
        let pieces = Pieces::default();
        let resp = stream_with(&client, "x", &pieces).await.unwrap();
        assert_eq!(resp.text, "whole answer");
        assert_eq!(pieces.take(), vec!["whole answer".to_string()]);
    }

    #[tokio::test]
    async fn an_error_chunk_mid_stream_ends_partial() {
        let body = concat!(
            ": OPENROUTER PROCESSING\n\n",
            "data: {\"choices\":[{\"delta\":{\"content\":\"Hello \"}}]}\n\n",
            "data: {\"error\":{\"message\":\"provider died\",\"code\":502}}\n\n",
        );
        let app = axum::Router::new().route(
            "/v1/chat/completions",
            axum::routing::post(
                move || async move { ([("content-type", "text/event-stream")], body) },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = OpenAiClient::new(config(format!("http://{addr}"))).unwrap();
        let pieces = Pieces::default();
        let resp = stream_with(&client, "x", &pieces).await.unwrap();
        assert!(resp.partial);
        assert_eq!(resp.text, "Hello ");
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after("2"), Some(2.0));
        assert_eq!(parse_retry_after(" 1.5 "), Some(1.5));
        assert_eq!(parse_retry_after("-1"), None);
        assert_eq!(parse_retry_after("soon"), None);
        // A date in the past means "now".
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(0.0)
        );
        let future = (chrono::Utc::now() + chrono::Duration::seconds(30))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        let secs = parse_retry_after(&future).unwrap();
        assert!((28.0..=30.0).contains(&secs), "{secs}");
    }

    #[test]
    fn retry_delay_is_bounded_and_honours_retry_after() {
        let client = OpenAiClient::new(LlmClientConfig {
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(1),
            ..config("http://127.0.0.1:1".into())
        })
        .unwrap();
        // The wait the retry driver computes after `err`, under this client's policy.
        let retry_delay = |retry: u32, err: &LlmError| {
            client
                .retry
                .delay_for(retry, err.retry_action().retry_after())
        };
        let transport = LlmError::Transport("x".into());
        for retry in 0..40 {
            let ceiling =
                Duration::from_millis(100 * 2u64.saturating_pow(retry)).min(Duration::from_secs(1));
            assert!(retry_delay(retry, &transport) <= ceiling);
        }
        let asked = |secs| LlmError::Http {
            status: 429,
            body: String::new(),
            retry_after_s: Some(secs),
        };
        assert!(retry_delay(0, &asked(2.0)) >= Duration::from_secs(2));
        // Capped at 4 × backoff_max.
        assert_eq!(retry_delay(0, &asked(3600.0)), Duration::from_secs(4));
    }

    #[test]
    fn truncation_is_char_safe() {
        assert_eq!(truncate_chars("héllo", 3), "hé…");
        assert_eq!(truncate_chars("héllo", 5), "héllo");
        assert_eq!(truncate_chars(&"x".repeat(1000), 300).chars().count(), 300);
    }
}
