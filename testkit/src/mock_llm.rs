//! A local OpenAI-compatible server (`whisperfleet mock-llm`) for benchmarks and tests: it
//! answers `POST /v1/chat/completions` after a fixed latency, so a benchmark measures the
//! fleet's own overhead against a known LLM time, and tests exercise the real HTTP client.
//!
//! Routes:
//! - `POST /v1/chat/completions` — OpenAI's non-streaming shape, or SSE `chat.completion.chunk`
//!   events ending in `data: [DONE]` when the body says `"stream": true`. The text comes from
//!   [`MockReply`]. Token counts are estimated as characters / 4.
//! - `POST /v1/embeddings` — OpenAI's embeddings shape for `input` as a string or an array of
//!   strings, vectors from the built-in [`HashEmbedder`] (so similar texts get similar
//!   vectors; 384 dimensions unless the body asks for `dimensions`). Counted apart from
//!   completions, and not subject to `latency` or failure injection, so a benchmark's LLM
//!   time stays what it configured.
//! - `GET /v1/models` — one model, `mock`. `GET /stats` — `{"requests": N,
//!   "embedding_requests": M}`. `GET /healthz`.
//!
//! Failure injection: the first `fail_first` completion requests (counted in arrival order,
//! malformed ones included) get `fail_status` with an OpenAI-style error body and, if
//! `retry_after_s` is set, a `Retry-After` header. A body that is not a JSON object with a
//! `messages` array gets 400.
//!
//! Recording: with `record` set, every well-formed request body is appended to the file as one
//! JSON line with a `received_at` field added (RFC 3339, UTC). Lines are written whole under a
//! lock and flushed, so concurrent requests never interleave and a reader can tail the file.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use whisperfleet_adapters::embeddings::hashing::{DEFAULT_HASH_DIMS, HashEmbedder};

mod stream;
pub use stream::Pacing;
use stream::{Usage, sse_response};

/// Model name reported by `/v1/models` and used when a request names none.
pub const MOCK_MODEL: &str = "mock";

/// Largest `dimensions` an embeddings request may ask for.
const MAX_EMBEDDING_DIMS: usize = 8192;

/// How much of the last user message the echo reply quotes.
const ECHO_MAX_CHARS: usize = 200;

/// How the answer text is built.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum MockReply {
    /// `[mock] <Name> heard: <last user message, ≤ 200 chars>`, where `<Name>` is taken from a
    /// `You are <Name>, …` on the first system-prompt line that has one (omitted if there is none).
    #[default]
    Echo,
    /// This text, verbatim.
    Fixed(String),
}

#[derive(Debug, Clone)]
pub struct MockLlmOptions {
    /// Slept (asynchronously) before every completion answer, failures included.
    pub latency: Duration,
    /// Append each request body to this file as a JSON line.
    pub record: Option<PathBuf>,
    pub reply: MockReply,
    /// Answer the first N completion requests with `fail_status`.
    pub fail_first: u32,
    pub fail_status: u16,
    /// Sent as `Retry-After` on injected failures.
    pub retry_after_s: Option<u32>,
    /// Pacing of the answer like a model writing it: see [`stream::Pacing`].
    pub pacing: Pacing,
}

impl Default for MockLlmOptions {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            record: None,
            reply: MockReply::Echo,
            fail_first: 0,
            fail_status: 503,
            retry_after_s: None,
            pacing: Pacing::default(),
        }
    }
}

/// Counters shared between the server and whoever started it.
#[derive(Debug, Clone, Default)]
pub struct MockStats {
    requests: Arc<AtomicU64>,
    embedding_requests: Arc<AtomicU64>,
}

impl MockStats {
    /// Completion requests received so far (failed and malformed ones included).
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Embeddings requests received so far (malformed ones included); not in
    /// [`Self::requests`].
    pub fn embedding_requests(&self) -> u64 {
        self.embedding_requests.load(Ordering::Relaxed)
    }
}

/// A mock server running in this process (see [`spawn`]). Dropping it stops the server.
#[derive(Debug)]
pub struct MockLlmHandle {
    pub addr: SocketAddr,
    pub stats: MockStats,
    shutdown: CancellationToken,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl MockLlmHandle {
    /// `http://127.0.0.1:<port>`, ready for `LlmClientConfig::base_url`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits for in-flight requests to finish.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => task.await.context("mock LLM server task panicked")?,
            None => Ok(()),
        }
    }
}

impl Drop for MockLlmHandle {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Binds `127.0.0.1:0` and serves in a background task, for tests and the in-process bench.
pub async fn spawn(opts: MockLlmOptions) -> anyhow::Result<MockLlmHandle> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the mock LLM to 127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let stats = MockStats::default();
    let shutdown = CancellationToken::new();
    // Build the app here so a bad option or record path fails `spawn`, not the task.
    let app = app(opts, stats.clone()).await?;
    let signal = shutdown.clone().cancelled_owned();
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .await
            .context("mock LLM server")
    });
    Ok(MockLlmHandle {
        addr,
        stats,
        shutdown,
        task: Some(task),
    })
}

/// Serves until `shutdown` completes (the `whisperfleet mock-llm` command).
pub async fn serve(
    listener: TcpListener,
    opts: MockLlmOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    serve_with_stats(listener, opts, MockStats::default(), shutdown).await
}

/// [`serve`], counting into `stats` the caller keeps.
pub async fn serve_with_stats(
    listener: TcpListener,
    opts: MockLlmOptions,
    stats: MockStats,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let addr = listener.local_addr()?;
    let app = app(opts, stats).await?;
    tracing::info!(%addr, "mock LLM listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .context("mock LLM server")
}

struct AppState {
    opts: MockLlmOptions,
    fail_status: StatusCode,
    stats: MockStats,
    record: Option<Mutex<tokio::fs::File>>,
    /// For unique `chatcmpl-…` ids.
    next_id: AtomicU64,
}

async fn app(opts: MockLlmOptions, stats: MockStats) -> anyhow::Result<Router> {
    let fail_status = StatusCode::from_u16(opts.fail_status)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .with_context(|| format!("fail_status {} is not a 4xx/5xx status", opts.fail_status))?;
    let record = match &opts.record {
        Some(path) => {
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .await
                .with_context(|| format!("opening record file {}", path.display()))?;
            Some(Mutex::new(file))
        }
        None => None,
    };
    let state = Arc::new(AppState {
        opts,
        fail_status,
        stats,
        record,
        next_id: AtomicU64::new(1),
    });
    Ok(Router::new()
        .route("/v1/chat/completions", post(chat_completions))
        .route("/v1/embeddings", post(embeddings))
        .route("/v1/models", get(models))
        .route("/stats", get(stats_route))
        .route("/healthz", get(|| async { "ok" }))
        // Long prompts (memories + history) can exceed axum's 2 MB default.
        .layer(DefaultBodyLimit::max(16 * 1024 * 1024))
        .with_state(state))
}

async fn stats_route(State(state): State<Arc<AppState>>) -> Response {
    axum::Json(json!({
        "requests": state.stats.requests(),
        "embedding_requests": state.stats.embedding_requests(),
    }))
    .into_response()
}

async fn embeddings(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    state
        .stats
        .embedding_requests
        .fetch_add(1, Ordering::Relaxed);
    let (model, inputs, dims) = match parse_embeddings_request(&body) {
        Ok(parsed) => parsed,
        Err(msg) => {
            return error_response(StatusCode::BAD_REQUEST, "invalid_request_error", &msg, None);
        }
    };
    let embedder = HashEmbedder::new(dims);
    let data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| {
            json!({ "object": "embedding", "index": index, "embedding": embedder.embed_one(text) })
        })
        .collect();
    let tokens = estimate_tokens(inputs.iter().map(|t| t.chars().count()).sum());
    axum::Json(json!({
        "object": "list",
        "data": data,
        "model": model,
        "usage": { "prompt_tokens": tokens, "total_tokens": tokens },
    }))
    .into_response()
}

/// `(model, inputs, dimensions)` from an embeddings body: `input` is a non-empty string or a
/// non-empty array of strings (token arrays are not supported), as OpenAI accepts.
fn parse_embeddings_request(body: &[u8]) -> Result<(String, Vec<String>, usize), String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    if !value.is_object() {
        return Err("request body must be a JSON object".into());
    }
    let inputs = match value.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| "'input' items must be strings".to_owned())
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(Value::Array(_)) => return Err("'input' must not be empty".into()),
        _ => return Err("'input' is a required property: a string or an array of strings".into()),
    };
    let dims = match value.get("dimensions") {
        None | Some(Value::Null) => DEFAULT_HASH_DIMS,
        Some(d) => d
            .as_u64()
            .and_then(|d| usize::try_from(d).ok())
            .filter(|d| (1..=MAX_EMBEDDING_DIMS).contains(d))
            .ok_or_else(|| {
                format!("'dimensions' must be an integer in 1..={MAX_EMBEDDING_DIMS}")
            })?,
    };
    let model = value
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .unwrap_or(MOCK_MODEL)
        .to_owned();
    Ok((model, inputs, dims))
}

async fn models() -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{ "id": MOCK_MODEL, "object": "model", "created": 0, "owned_by": "whisperfleet" }],
    }))
    .into_response()
}

async fn chat_completions(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let seq = state.stats.requests.fetch_add(1, Ordering::Relaxed);

    let request = match parse_request(&body) {
        Ok(v) => v,
        Err(msg) => {
            return error_response(StatusCode::BAD_REQUEST, "invalid_request_error", &msg, None);
        }
    };
    if let Some(file) = &state.record {
        record(file, &request).await;
    }

    tokio::time::sleep(state.opts.latency).await;

    if seq < u64::from(state.opts.fail_first) {
        let kind = match state.fail_status.as_u16() {
            429 => "rate_limit_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        };
        let msg = format!("injected failure {} of {}", seq + 1, state.opts.fail_first);
        return error_response(state.fail_status, kind, &msg, state.opts.retry_after_s);
    }

    let model = request
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
        .unwrap_or(MOCK_MODEL)
        .to_owned();
    let messages = request["messages"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let text = match &state.opts.reply {
        MockReply::Fixed(text) => text.clone(),
        MockReply::Echo => echo_reply(messages),
    };
    let prompt_chars: usize = messages
        .iter()
        .map(|m| content_text(m).chars().count())
        .sum();
    let usage = Usage {
        prompt: estimate_tokens(prompt_chars),
        completion: estimate_tokens(text.chars().count()),
    };
    let id = format!(
        "chatcmpl-mock{:08}",
        state.next_id.fetch_add(1, Ordering::Relaxed)
    );
    let created = unix_now();

    if request.get("stream").and_then(Value::as_bool) == Some(true) {
        let include_usage = request
            .pointer("/stream_options/include_usage")
            .and_then(Value::as_bool)
            == Some(true);
        sse_response(
            &state.opts.pacing,
            &id,
            created,
            &model,
            &text,
            include_usage.then_some(usage),
        )
    } else {
        // As long as the model would take to write it all.
        tokio::time::sleep(state.opts.pacing.whole_answer(&text)).await;
        axum::Json(json!({
            "id": id,
            "object": "chat.completion",
            "created": created,
            "model": model,
            "choices": [{
                "index": 0,
                "message": { "role": "assistant", "content": text },
                "logprobs": null,
                "finish_reason": "stop",
            }],
            "usage": usage.json(),
            "system_fingerprint": null,
        }))
        .into_response()
    }
}

/// The body must be a JSON object with a `messages` array, as OpenAI requires.
fn parse_request(body: &[u8]) -> Result<Value, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("request body is not valid JSON: {e}"))?;
    if !value.is_object() {
        return Err("request body must be a JSON object".into());
    }
    if !value.get("messages").is_some_and(Value::is_array) {
        return Err("'messages' is a required property and must be an array".into());
    }
    Ok(value)
}

async fn record(file: &Mutex<tokio::fs::File>, request: &Value) {
    let mut line = request.clone();
    if let Some(obj) = line.as_object_mut() {
        obj.insert(
            "received_at".into(),
            Value::String(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
    }
    let mut bytes = line.to_string().into_bytes();
    bytes.push(b'\n');
    // One write_all of the whole line under the lock: lines never interleave.
    let mut file = file.lock().await;
    let result = async {
        file.write_all(&bytes).await?;
        file.flush().await
    }
    .await;
    if let Err(e) = result {
        // A recording problem must not change what the client sees; say so loudly instead.
        tracing::error!(error = %e, "mock LLM could not append to the record file");
    }
}

fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

fn error_response(
    status: StatusCode,
    kind: &str,
    message: &str,
    retry_after_s: Option<u32>,
) -> Response {
    let body = json!({
        "error": { "message": message, "type": kind, "param": null, "code": null },
    });
    let mut resp = (status, axum::Json(body)).into_response();
    if let Some(secs) = retry_after_s {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    resp
}

/// The deterministic [`MockReply::Echo`] answer.
fn echo_reply(messages: &[Value]) -> String {
    let name = messages
        .iter()
        .find(|m| m["role"] == "system")
        .and_then(|m| character_name(&content_text(m)));
    let heard = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .map(|m| {
            content_text(m)
                .chars()
                .take(ECHO_MAX_CHARS)
                .collect::<String>()
        })
        .unwrap_or_default();
    match name {
        Some(name) => format!("[mock] {name} heard: {heard}"),
        None => format!("[mock] heard: {heard}"),
    }
}

/// `X` from "You are X, a …" / "You are X." on the first system-prompt line that says
/// "you are" (the identity section may start with a heading).
fn character_name(system_prompt: &str) -> Option<String> {
    let first_line = system_prompt
        .lines()
        .find(|l| l.to_ascii_lowercase().contains("you are "))?;
    let lower = first_line.to_ascii_lowercase();
    let start = lower.find("you are ")? + "you are ".len();
    let rest = &first_line[start..];
    let end = rest
        .find([',', '.', ';', ':', '!', '?', '(', '—', '–'])
        .or_else(|| rest.find(" - "))
        .unwrap_or(rest.len());
    let name = rest[..end].trim();
    (!name.is_empty()).then(|| name.chars().take(60).collect())
}

/// A message's text: a plain string, or the `text` parts of OpenAI's content-part array.
fn content_text(message: &Value) -> String {
    match &message["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn http() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    fn chat_body(stream: bool) -> Value {
        json!({
            "model": "tiny",
            "stream": stream,
            "messages": [
                { "role": "system", "content": "You are Marcus Chen, an AI researcher.\nStay in character." },
                { "role": "user", "content": "first" },
                { "role": "assistant", "content": "ok" },
                { "role": "user", "content": "what is a transformer?" },
            ],
        })
    }

    #[tokio::test]
    async fn completion_has_openai_shape() {
        let mock = spawn(MockLlmOptions::default()).await.unwrap();
        let resp = http()
            .post(format!("{}/v1/chat/completions", mock.base_url()))
            .json(&chat_body(false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let v: Value = resp.json().await.unwrap();
        assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
        assert_eq!(v["object"], "chat.completion");
        assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
        assert_eq!(v["model"], "tiny");
        assert_eq!(v["choices"][0]["index"], 0);
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "[mock] Marcus Chen heard: what is a transformer?"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        let u = &v["usage"];
        assert_eq!(
            u["total_tokens"].as_u64().unwrap(),
            u["prompt_tokens"].as_u64().unwrap() + u["completion_tokens"].as_u64().unwrap()
        );
        assert_eq!(mock.stats.requests(), 1);
        mock.shutdown().await.unwrap();
    }

    #[tokio::test]
    async fn streaming_answer_is_sse() {
        let text = "one two three four five six seven";
        let mock = spawn(MockLlmOptions {
            reply: MockReply::Fixed(text.into()),
            ..Default::default()
        })
        .await
        .unwrap();
        let mut body = chat_body(true);
        body["stream_options"] = json!({ "include_usage": true });
        let resp = http()
            .post(format!("{}/v1/chat/completions", mock.base_url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "text/event-stream");
        let raw = resp.text().await.unwrap();

        // A keep-alive comment first, as OpenRouter sends while the model warms up.
        assert!(raw.starts_with(": keep-alive\n\n"));
        let datas: Vec<&str> = raw
            .split("\n\n")
            .filter(|e| !e.is_empty() && !e.starts_with(':'))
            .map(|e| {
                e.strip_prefix("data: ")
                    .expect("every event is a data line")
            })
            .collect();
        assert_eq!(datas.last(), Some(&"[DONE]"));
        let chunks: Vec<Value> = datas[..datas.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        assert!(
            chunks
                .iter()
                .all(|c| c["object"] == "chat.completion.chunk")
        );
        assert!(chunks.iter().all(|c| c["id"] == chunks[0]["id"]));
        assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
        let assembled: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert_eq!(assembled, text);
        let content_chunks = chunks
            .iter()
            .filter(|c| {
                c["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|s| !s.is_empty())
            })
            .count();
        assert!(content_chunks > 1, "split into several pieces");
        let finish: Vec<&Value> = chunks
            .iter()
            .filter(|c| c["choices"][0]["finish_reason"] == "stop")
            .collect();
        assert_eq!(finish.len(), 1);
        let last = chunks.last().unwrap();
        assert_eq!(last["choices"], json!([]));
        assert!(last["usage"]["total_tokens"].as_u64().unwrap() > 0);
    }

    #[tokio::test]
    async fn bad_json_is_400_with_openai_error() {
        let mock = spawn(MockLlmOptions::default()).await.unwrap();
        let client = http();
        let url = format!("{}/v1/chat/completions", mock.base_url());
        for body in ["{not json", "[1,2]", r#"{"model":"m"}"#] {
            let resp = client
                .post(&url)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 400, "{body}");
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["error"]["type"], "invalid_request_error");
            assert!(v["error"]["message"].is_string());
        }
    }

    #[tokio::test]
    async fn injected_failures_carry_retry_after() {
        let mock = spawn(MockLlmOptions {
            fail_first: 1,
            fail_status: 429,
            retry_after_s: Some(7),
            ..Default::default()
        })
        .await
        .unwrap();
        let client = http();
        let url = format!("{}/v1/chat/completions", mock.base_url());
        let first = client
            .post(&url)
            .json(&chat_body(false))
            .send()
            .await
            .unwrap();
        assert_eq!(first.status(), 429);
        assert_eq!(first.headers()[header::RETRY_AFTER], "7");
        let v: Value = first.json().await.unwrap();
        assert_eq!(v["error"]["type"], "rate_limit_error");
        let second = client
            .post(&url)
            .json(&chat_body(false))
            .send()
            .await
            .unwrap();
        assert_eq!(second.status(), 200);
        assert_eq!(mock.stats.requests(), 2);
    }

    #[tokio::test]
    async fn side_routes() {
        let mock = spawn(MockLlmOptions::default()).await.unwrap();
        let client = http();
        let base = mock.base_url();
        assert_eq!(
            client
                .get(format!("{base}/healthz"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        let models: Value = client
            .get(format!("{base}/v1/models"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(models["object"], "list");
        assert_eq!(models["data"][0]["id"], MOCK_MODEL);
        client
            .post(format!("{base}/v1/chat/completions"))
            .json(&chat_body(false))
            .send()
            .await
            .unwrap();
        let stats: Value = client
            .get(format!("{base}/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(stats, json!({ "requests": 1, "embedding_requests": 0 }));
    }

    #[tokio::test]
    async fn embeddings_have_openai_shape() {
        let mock = spawn(MockLlmOptions {
            // Embeddings are neither delayed nor failed by the completion knobs.
            latency: Duration::from_secs(30),
            fail_first: 10,
            ..Default::default()
        })
        .await
        .unwrap();
        let client = http();
        let url = format!("{}/v1/embeddings", mock.base_url());
        let v: Value = client
            .post(&url)
            .json(&json!({ "model": "emb", "input": ["my dog is called Biscuit", "hello"] }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["model"], "emb");
        assert_eq!(v["data"].as_array().unwrap().len(), 2);
        for (i, item) in v["data"].as_array().unwrap().iter().enumerate() {
            assert_eq!(item["object"], "embedding");
            assert_eq!(item["index"], i);
            assert_eq!(
                item["embedding"].as_array().unwrap().len(),
                DEFAULT_HASH_DIMS
            );
        }
        let first: Vec<f32> = serde_json::from_value(v["data"][0]["embedding"].clone()).unwrap();
        assert_eq!(
            first,
            HashEmbedder::default().embed_one("my dog is called Biscuit")
        );
        assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

        // A single string and an explicit size work too.
        let v: Value = client
            .post(&url)
            .json(&json!({ "input": "hi", "dimensions": 8 }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(v["model"], MOCK_MODEL);
        assert_eq!(v["data"][0]["embedding"].as_array().unwrap().len(), 8);

        for bad in [
            json!({ "model": "m" }),
            json!({ "input": [] }),
            json!({ "input": [[1, 2, 3]] }),
            json!({ "input": "x", "dimensions": 0 }),
        ] {
            let resp = client.post(&url).json(&bad).send().await.unwrap();
            assert_eq!(resp.status(), 400, "{bad}");
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["error"]["type"], "invalid_request_error");
        }
        assert_eq!(mock.stats.embedding_requests(), 6);
        assert_eq!(mock.stats.requests(), 0);
    }

    #[tokio::test]
    async fn latency_is_applied() {
        let mock = spawn(MockLlmOptions {
            latency: Duration::from_millis(300),
            ..Default::default()
        })
        .await
        .unwrap();
        let started = std::time::Instant::now();
        let resp = http()
            .post(format!("{}/v1/chat/completions", mock.base_url()))
            .json(&chat_body(false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[tokio::test]
    async fn invalid_fail_status_is_rejected() {
        let err = spawn(MockLlmOptions {
            fail_status: 200,
            ..Default::default()
        })
        .await
        .unwrap_err();
        assert!(err.to_string().contains("fail_status"));
    }

    #[test]
    fn echo_reply_forms() {
        let msgs = |system: &str, user: &str| {
            vec![
                json!({ "role": "system", "content": system }),
                json!({ "role": "user", "content": user }),
            ]
        };
        assert_eq!(
            echo_reply(&msgs("You are Elena Rodriguez, a marine biologist.", "hi")),
            "[mock] Elena Rodriguez heard: hi"
        );
        assert_eq!(
            echo_reply(&msgs("Roleplay. You are Gabriel.\nMore.", "yo")),
            "[mock] Gabriel heard: yo"
        );
        // Our prompts open with a section heading; the identity line follows it.
        assert_eq!(
            echo_reply(&msgs(
                "# Character Identity\nYou are Vellum, an archivist.",
                "x"
            )),
            "[mock] Vellum heard: x"
        );
        assert_eq!(echo_reply(&msgs("Be helpful.", "x")), "[mock] heard: x");
        let long = "é".repeat(500);
        let reply = echo_reply(&msgs("You are A", &long));
        assert_eq!(reply, format!("[mock] A heard: {}", "é".repeat(200)));
        // Content-part arrays are read too.
        let parts =
            vec![json!({ "role": "user", "content": [{ "type": "text", "text": "parts" }] })];
        assert_eq!(echo_reply(&parts), "[mock] heard: parts");
    }
}
