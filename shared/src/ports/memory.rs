//! The vector memory port: one collection of memories, multi-tenant by payload (character,
//! and the user's whole identity: platform, namespace, user id), searched by similarity and by recency (Qdrant in the fleet, exact cosine search over
//! the embedded SQLite store otherwise).

use crate::identity::Identity;
use crate::retry::{RetryAction, Retryable};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// One stored memory: a user message or a reply, with its emotion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryPoint {
    /// Derived from `turn_id` + role, so a redelivered turn overwrites instead of duplicating.
    pub id: uuid::Uuid,
    pub character: String,
    /// Whose memory it is: platform, namespace and user id (flattened: three payload fields).
    #[serde(flatten)]
    pub identity: Identity,
    pub role: String,
    pub text: String,
    pub emotion: String,
    pub intensity: f32,
    pub channel_id: String,
    pub is_dm: bool,
    pub timestamp: DateTime<Utc>,
    pub vector: Vec<f32>,
}

/// Who may see a memory: always one identity (platform, namespace, user id) and one
/// character; guild channels never see DM memories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryScope {
    pub character: String,
    pub identity: Identity,
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

impl Retryable for MemoryError {
    /// Only an unreachable vector store is worth another try.
    fn retry_action(&self) -> RetryAction {
        match self {
            Self::Unavailable(_) => RetryAction::Retry,
            _ => RetryAction::DontRetry,
        }
    }
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
    /// The `limit` most recent memories of `identity` (with all characters when `character`
    /// is `None`), DM or not, newest first: what `memory show` lists.
    async fn list(
        &self,
        identity: &Identity,
        character: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MemoryPoint>, MemoryError>;
    /// Removes the memories of exactly `identity` (with all characters when `character` is
    /// `None`); returns how many.
    async fn forget(
        &self,
        identity: &Identity,
        character: Option<&str>,
    ) -> Result<u64, MemoryError>;
    fn describe(&self) -> String;
}
