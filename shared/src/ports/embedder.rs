//! The embeddings port: text to vectors for the memory stage (an OpenAI-compatible
//! `/v1/embeddings` endpoint in the fleet, the built-in hashing embedder when embedded).

use crate::retry::{RetryAction, Retryable};
use async_trait::async_trait;

/// Embedding failures; network ones are retryable, the turn degrades without memories.
#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("embedding service unavailable: {0}")]
    Unavailable(String),
    #[error("embedding service answered something unusable: {0}")]
    Invalid(String),
}

impl Retryable for EmbedError {
    /// Network trouble is worth another try; an unusable answer is not.
    fn retry_action(&self) -> RetryAction {
        match self {
            Self::Unavailable(_) => RetryAction::Retry,
            _ => RetryAction::DontRetry,
        }
    }
}

#[async_trait]
pub trait Embedder: Send + Sync + 'static {
    /// One L2-normalised vector per text, in order, all of `dimensions()` length.
    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError>;
    fn dimensions(&self) -> usize;
    fn describe(&self) -> String;
}
