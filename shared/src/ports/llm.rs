//! The LLM port: an OpenAI-style chat completion, whatever serves it (an OpenAI-compatible
//! endpoint, the offline responder, `mock-llm`). The pipeline only sees this trait.

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::character::Character;
use crate::retry::{RetryAction, Retryable};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
        }
    }
}

/// One chat completion request.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    /// Overrides the configured default model (per-character LLM settings).
    pub model: Option<String>,
    pub messages: Vec<ChatMessage>,
    pub temperature: Option<f32>,
    pub max_tokens: Option<u32>,
    /// For logs and for servers that accept a request id.
    pub turn_id: String,
    /// The character being voiced; only the offline responder reads it (a real model gets
    /// everything it needs from `messages`).
    pub character: Option<Arc<Character>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatResponse {
    pub text: String,
    pub model: String,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
    /// The stream broke after text was already passed on: `text` is what came before the
    /// break, not a whole answer. Never retried (the user may have seen the start of it, and
    /// a second, different answer must not follow); the turn ends with it, marked partial.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    /// Request sent → first text, when the answer was streamed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_token_ms: Option<f64>,
}

/// Why a completion failed. `is_retryable` is the single place that decides what is retried.
#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("LLM request timed out after {0} ms")]
    Timeout(u64),
    #[error("LLM endpoint answered HTTP {status}: {body}")]
    Http {
        status: u16,
        body: String,
        /// Seconds the server asked us to wait (`Retry-After`), if it said.
        retry_after_s: Option<f64>,
    },
    #[error("could not reach the LLM endpoint: {0}")]
    Transport(String),
    #[error("LLM endpoint sent an answer we cannot read: {0}")]
    InvalidResponse(String),
}

impl LlmError {
    /// 429, 5xx, timeouts and connection failures are worth another try; 4xx are not.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout(_) | Self::Transport(_) => true,
            Self::Http { status, .. } => *status == 429 || *status >= 500,
            Self::InvalidResponse(_) => false,
        }
    }
}

impl Retryable for LlmError {
    /// What [`LlmError::is_retryable`] says, waiting at least what a `Retry-After` asked.
    fn retry_action(&self) -> RetryAction {
        if !self.is_retryable() {
            return RetryAction::DontRetry;
        }
        match self {
            Self::Http { retry_after_s, .. } => RetryAction::after_secs(*retry_after_s),
            _ => RetryAction::Retry,
        }
    }
}

/// Where a streamed answer's text goes as it is written: called with each new piece, in
/// order; the pieces concatenate to the answer's text.
pub type OnText<'a> = &'a (dyn Fn(&str) + Send + Sync);

#[async_trait]
pub trait Llm: Send + Sync + 'static {
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError>;

    /// The same answer as [`Llm::complete`], its text handed to `on_text` as it is written.
    /// A failure before any text was handed on is an `Err` (retryable as `complete`'s); a
    /// break after that is `Ok` with [`ChatResponse::partial`] set and the text so far.
    /// Backends that cannot stream answer whole (this default): one piece, at the end.
    async fn stream(
        &self,
        request: &ChatRequest,
        on_text: OnText<'_>,
    ) -> Result<ChatResponse, LlmError> {
        let started = std::time::Instant::now();
        let mut answer = self.complete(request).await?;
        answer.first_token_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        on_text(&answer.text);
        Ok(answer)
    }

    /// Short description for startup logs (`openai-compatible at http://…`, `offline`).
    fn describe(&self) -> String;
}
