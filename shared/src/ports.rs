//! The ports of the memory and metrics stages, declared here so every service agrees on
//! their contracts. Their implementations arrive with their stages: vector memory (Qdrant and
//! the embedded exact-cosine store) and embeddings (OpenAI-compatible `/v1/embeddings` and the
//! built-in deterministic embedder) with the memory stage; the InfluxDB sink with the
//! metrics-writer. The broker, cache, character store and LLM ports live in their own modules
//! (`broker`, `cache`, `character`, `llm`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Embedding failures; network ones are retryable, the turn degrades without memories.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embedding service unavailable: {0}")]
    Unavailable(String),
    #[error("embedding service answered something unusable: {0}")]
    Invalid(String),
}

#[async_trait]
pub trait Embedder: Send + Sync + 'static {
    /// One L2-normalised vector per text, in order, all of `dimensions()` length.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
    fn dimensions(&self) -> usize;
    fn describe(&self) -> String;
}

/// One stored memory: a user message or a reply, with its emotion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryPoint {
    /// Derived from `turn_id` + role, so a redelivered turn overwrites instead of duplicating.
    pub id: uuid::Uuid,
    pub character: String,
    pub user_id: String,
    pub role: String,
    pub text: String,
    pub emotion: String,
    pub intensity: f32,
    pub channel_id: String,
    pub is_dm: bool,
    pub timestamp: DateTime<Utc>,
    pub vector: Vec<f32>,
}

/// Who may see a memory: always one user and one character; guild channels never see DM
/// memories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryScope {
    pub character: String,
    pub user_id: String,
    /// `false` (a guild channel) excludes memories made in DMs.
    pub include_dm: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("vector memory unavailable: {0}")]
    Unavailable(String),
    #[error("vector memory error: {0}")]
    Other(String),
}

#[async_trait]
pub trait VectorMemory: Send + Sync + 'static {
    /// Upserts one turn's points in one call (idempotent by id).
    async fn upsert(&self, points: &[MemoryPoint]) -> Result<(), MemoryError>;
    /// The `k` most similar memories within `scope`, best first, with their scores.
    async fn search(
        &self,
        scope: &MemoryScope,
        vector: &[f32],
        k: usize,
    ) -> Result<Vec<(MemoryPoint, f32)>, MemoryError>;
    /// The `n` most recent memories within `scope` (the emotional trajectory), newest first.
    async fn recent(&self, scope: &MemoryScope, n: usize) -> Result<Vec<MemoryPoint>, MemoryError>;
    /// Removes a user's memories (all characters when `character` is `None`); returns how many.
    async fn forget(&self, user_id: &str, character: Option<&str>) -> Result<u64, MemoryError>;
    fn describe(&self) -> String;
}

/// Why a metrics write failed, classified the way the writer's retry policy needs.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// 429, 5xx, timeouts, connection errors: retry with backoff (honour `retry_after_s`).
    #[error("metrics sink temporarily unavailable: {reason}")]
    Retryable {
        reason: String,
        retry_after_s: Option<f64>,
    },
    /// 413: split the batch and try the halves.
    #[error("batch too large for the metrics sink")]
    TooLarge,
    /// 400/422: some lines are bad; bisect to find them, dead-letter them with this reason.
    #[error("metrics sink rejected points: {0}")]
    Rejected(String),
    /// 401/403: keep everything, log loudly, back off.
    #[error("metrics sink refused our credentials: {0}")]
    Unauthorized(String),
}

#[async_trait]
pub trait MetricsSink: Send + Sync + 'static {
    /// Writes line-protocol lines (already validated) in one request.
    async fn write(&self, lines: &[&str]) -> Result<(), SinkError>;
    fn describe(&self) -> String;
}

/// The original platform's emotion labels.
pub const EMOTION_LABELS: [&str; 12] = [
    "anger",
    "anticipation",
    "disgust",
    "fear",
    "joy",
    "love",
    "optimism",
    "pessimism",
    "sadness",
    "surprise",
    "trust",
    "neutral",
];

/// One text's emotion: the label that won, how strongly it is expressed, and how sure the
/// analyzer is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmotionResult {
    /// One of [`EMOTION_LABELS`].
    pub primary: String,
    /// How strongly the emotion is expressed, 0..1.
    pub intensity: f32,
    /// How sure the analyzer is of `primary`, 0..1.
    pub confidence: f32,
    /// Other labels with their score, best first, at most 3.
    pub secondary: Vec<(String, f32)>,
}

/// Runs once per text per turn; pure and synchronous so a model-backed implementation can
/// replace it behind the same trait (wrapped in spawn_blocking if slow).
pub trait EmotionAnalyzer: Send + Sync + 'static {
    fn analyze(&self, text: &str) -> EmotionResult;
    fn describe(&self) -> String;
}
