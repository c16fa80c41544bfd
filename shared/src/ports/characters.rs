//! The character store port: characters (CDL) and user × character relationships, PostgreSQL
//! in the fleet and SQLite when embedded. A relationship belongs to a user's whole
//! [`Identity`] (platform, namespace, user id).

use crate::character::{Character, CharacterSummary, Relationship, RelationshipDelta};
use crate::identity::Identity;
use crate::retry::{RetryAction, Retryable};

/// Errors of the character store port.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Database unreachable or timed out: retryable, and the turn degrades to a fallback.
    #[error("character store unavailable: {0}")]
    Unavailable(String),
    /// Stored data that does not fit the model, or a constraint violation: not retryable.
    #[error("character store error: {0}")]
    Data(String),
}

impl Retryable for StoreError {
    /// Only an unreachable or timed-out database is worth another try.
    fn retry_action(&self) -> RetryAction {
        match self {
            Self::Unavailable(_) => RetryAction::Retry,
            _ => RetryAction::DontRetry,
        }
    }
}

/// The character store port: PostgreSQL in the fleet, SQLite when embedded.
#[async_trait::async_trait]
pub trait CharacterStore: Send + Sync + 'static {
    /// Loads a whole character in one round trip; `None` when unknown.
    async fn load(&self, normalized_name: &str) -> Result<Option<Character>, StoreError>;
    /// Creates or replaces a character; returns its new version.
    async fn upsert(&self, character: &Character) -> Result<i64, StoreError>;
    async fn list(&self) -> Result<Vec<CharacterSummary>, StoreError>;
    /// The relationship of a user with a character (`None` before their first turn).
    async fn relationship(
        &self,
        identity: &Identity,
        character: &str,
    ) -> Result<Option<Relationship>, StoreError>;
    /// Every relationship of a user, by normalized character name (what `memory show` lists).
    async fn relationships_of(
        &self,
        identity: &Identity,
    ) -> Result<Vec<(String, Relationship)>, StoreError>;
    /// Applies one turn's delta in one atomic statement, at most once per `turn_id`
    /// (a redelivered turn changes nothing); returns the relationship afterwards.
    async fn apply_relationship(
        &self,
        turn_id: uuid::Uuid,
        identity: &Identity,
        character: &str,
        delta: RelationshipDelta,
    ) -> Result<Option<Relationship>, StoreError>;
    /// Removes the relationships of exactly `identity` (with one character, or all);
    /// returns how many.
    async fn forget_user(
        &self,
        identity: &Identity,
        character: Option<&str>,
    ) -> Result<u64, StoreError>;
    fn describe(&self) -> String;
}
