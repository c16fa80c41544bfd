//! The streaming exchange of [`OpenAiClient`]: `"stream": true`, read as server-sent events
//! (`data: {chat.completion.chunk}` … `data: [DONE]`, `:` keep-alive comments, usage in the
//! last chunk when `stream_options.include_usage` is honoured).
//!
//! Bounds: the whole exchange by the client's `timeout`, and the wait for each next chunk by
//! `stream_idle_timeout`. How it ends: `[DONE]` (or the body closing after a
//! `finish_reason`) is a whole answer; anything else — a broken connection, a stall, an
//! error chunk, an unreadable chunk — is an error while no text was handed on (the caller
//! retries it as a failed `complete`), and after that a **partial** answer: the text so far,
//! [`ChatResponse::partial`] set, never retried. A server that ignores `stream` and answers
//! with one JSON body is read as a whole answer handed on in one piece.

use std::time::Instant;

use serde::Deserialize;
use whisperfleet_shared::ports::llm::{ChatResponse, LlmError, OnText};
use whisperfleet_shared::sse::{SseEvent, SseParser};

use super::{OpenAiClient, WireRequest, WireUsage, duration_ms, map_reqwest_error};
use crate::http::retry_after_seconds;

/// What a stream has delivered so far.
#[derive(Default)]
struct SoFar {
    text: String,
    model: Option<String>,
    usage: Option<WireUsage>,
    /// A chunk carried a `finish_reason`: the answer is complete even if `[DONE]` is missing.
    finished: bool,
    first_token_ms: Option<f64>,
}

#[derive(Deserialize)]
struct Chunk {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    choices: Vec<ChunkChoice>,
    #[serde(default)]
    usage: Option<WireUsage>,
    /// OpenRouter reports errors that happen mid-stream as a chunk with an `error` object.
    #[serde(default)]
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ChunkChoice {
    #[serde(default)]
    delta: Option<ChunkDelta>,
    #[serde(default)]
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct ChunkDelta {
    #[serde(default)]
    content: Option<String>,
}

/// The stream is over: `[DONE]`.
struct Done;

impl OpenAiClient {
    /// One streaming exchange; see the module doc for how it ends.
    pub(super) async fn stream_attempt(
        &self,
        body: &WireRequest<'_>,
        turn_id: &str,
        on_text: OnText<'_>,
    ) -> Result<ChatResponse, LlmError> {
        let started = Instant::now();
        let mut so_far = SoFar::default();
        let result = self
            .read_stream(body, turn_id, on_text, started, &mut so_far)
            .await;
        let partial = match result {
            Ok(()) => false,
            Err(e) if so_far.text.is_empty() => return Err(e),
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    chars = so_far.text.chars().count(),
                    "the LLM stream broke after text was handed on; the answer ends there, marked partial"
                );
                true
            }
        };
        let usage = so_far.usage.unwrap_or_default();
        Ok(ChatResponse {
            text: so_far.text,
            model: so_far
                .model
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| body.model.to_owned()),
            prompt_tokens: usage.prompt_tokens,
            completion_tokens: usage.completion_tokens,
            partial,
            first_token_ms: so_far.first_token_ms,
        })
    }

    async fn read_stream(
        &self,
        body: &WireRequest<'_>,
        turn_id: &str,
        on_text: OnText<'_>,
        started: Instant,
        so_far: &mut SoFar,
    ) -> Result<(), LlmError> {
        let deadline = tokio::time::Instant::from_std(started + self.timeout);
        let overall = LlmError::Timeout(duration_ms(self.timeout));
        let mut resp = tokio::time::timeout_at(deadline, self.post(body, turn_id).send())
            .await
            .map_err(|_| LlmError::Timeout(duration_ms(self.timeout)))?
            .map_err(|e| map_reqwest_error(e, self.timeout))?;
        let status = resp.status();
        if !status.is_success() {
            let retry_after_s = retry_after_seconds(resp.headers());
            let bytes = tokio::time::timeout_at(deadline, resp.bytes())
                .await
                .map_err(|_| LlmError::Timeout(duration_ms(self.timeout)))?
                .map_err(|e| map_reqwest_error(e, self.timeout))?;
            return Err(LlmError::Http {
                status: status.as_u16(),
                body: self.quote_body(&bytes),
                retry_after_s,
            });
        }
        let is_sse = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if !is_sse {
            // A server that ignored `stream`: one whole answer.
            let bytes = tokio::time::timeout_at(deadline, resp.bytes())
                .await
                .map_err(|_| LlmError::Timeout(duration_ms(self.timeout)))?
                .map_err(|e| map_reqwest_error(e, self.timeout))?;
            let whole = self.parse_completion(&bytes, body.model)?;
            so_far.first_token_ms = Some(ms_since(started));
            on_text(&whole.text);
            so_far.text = whole.text;
            so_far.model = Some(whole.model);
            so_far.usage = Some(WireUsage {
                prompt_tokens: whole.prompt_tokens,
                completion_tokens: whole.completion_tokens,
            });
            return Ok(());
        }

        let mut parser = SseParser::new();
        loop {
            let idle = tokio::time::Instant::now() + self.stream_idle_timeout;
            let chunk = match tokio::time::timeout_at(idle.min(deadline), resp.chunk()).await {
                Ok(c) => c.map_err(|e| map_reqwest_error(e, self.timeout))?,
                Err(_) if idle < deadline => {
                    return Err(LlmError::Timeout(duration_ms(self.stream_idle_timeout)));
                }
                Err(_) => return Err(overall),
            };
            let Some(bytes) = chunk else {
                // The body ended. Without `[DONE]` that is a complete answer only if the
                // server said it finished.
                let tail = parser.finish();
                if let Some(event) = tail
                    && let Some(Done) = self.event(&event, started, on_text, so_far)?
                {
                    return Ok(());
                }
                return if so_far.finished {
                    Ok(())
                } else {
                    Err(LlmError::Transport(
                        "the LLM stream ended before [DONE]".into(),
                    ))
                };
            };
            let events = parser
                .feed(&bytes)
                .map_err(|e| LlmError::InvalidResponse(e.to_string()))?;
            for event in events {
                if let Some(Done) = self.event(&event, started, on_text, so_far)? {
                    return Ok(());
                }
            }
        }
    }

    /// Applies one event; `Some(Done)` at `[DONE]`.
    fn event(
        &self,
        event: &SseEvent,
        started: Instant,
        on_text: OnText<'_>,
        so_far: &mut SoFar,
    ) -> Result<Option<Done>, LlmError> {
        let data = event.data.trim();
        if data == "[DONE]" {
            return Ok(Some(Done));
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(|e| {
            LlmError::InvalidResponse(format!(
                "{e}; stream chunk: {}",
                self.quote_body(data.as_bytes())
            ))
        })?;
        if let Some(error) = chunk.error {
            // Retryable like a dropped connection when nothing was handed on yet.
            return Err(LlmError::Transport(format!(
                "the LLM stream reported an error: {}",
                self.quote_body(error.to_string().as_bytes())
            )));
        }
        if chunk.model.is_some() {
            so_far.model = chunk.model;
        }
        if chunk.usage.is_some() {
            so_far.usage = chunk.usage;
        }
        if let Some(choice) = chunk.choices.into_iter().next() {
            if choice.finish_reason.is_some() {
                so_far.finished = true;
            }
            if let Some(content) = choice.delta.and_then(|d| d.content)
                && !content.is_empty()
            {
                so_far
                    .first_token_ms
                    .get_or_insert_with(|| ms_since(started));
                so_far.text.push_str(&content);
                on_text(&content);
            }
        }
        Ok(None)
    }
}

fn ms_since(start: Instant) -> f64 {
    start.elapsed().as_secs_f64() * 1000.0
}
