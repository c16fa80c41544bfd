//! Stage `context`: everything the prompt needs besides the character, gathered
//! concurrently — short-term history (Redis), the user's emotion (analysed once), the
//! message's embedding, the top-k relevant memories, the recent emotional states (fetched
//! ONCE per turn: the seed fetched them ~7 times) and the relationship row.
//!
//! Every part is optional: a failing backend leaves its part empty and is reported in
//! `degraded`, it never fails the turn. Memory access goes through [`CountingMemory`], so
//! the per-turn counters are counted at the port, not claimed by the pipeline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use async_trait::async_trait;
use whisperfleet_shared::character::Relationship;
use whisperfleet_shared::identity::Identity;
use whisperfleet_shared::ports::cache::Cache;
use whisperfleet_shared::ports::characters::CharacterStore;
use whisperfleet_shared::ports::{
    Embedder, EmotionAnalyzer, EmotionResult, MemoryError, MemoryPoint, MemoryScope, VectorMemory,
};

use crate::prompt::HistoryEntry;

pub use whisperfleet_shared::records::{HISTORY_TTL, history_key};

/// A turn's view of the vector memory port that counts what it asks.
pub struct CountingMemory {
    inner: Arc<dyn VectorMemory>,
    pub searches: AtomicU32,
    pub recents: AtomicU32,
    pub upserts: AtomicU32,
}

impl CountingMemory {
    pub fn new(inner: Arc<dyn VectorMemory>) -> Self {
        Self {
            inner,
            searches: AtomicU32::new(0),
            recents: AtomicU32::new(0),
            upserts: AtomicU32::new(0),
        }
    }
}

#[async_trait]
impl VectorMemory for CountingMemory {
    async fn upsert(&self, points: &[MemoryPoint]) -> Result<(), MemoryError> {
        self.upserts.fetch_add(1, Ordering::Relaxed);
        self.inner.upsert(points).await
    }
    async fn search(
        &self,
        scope: &MemoryScope,
        vector: &[f32],
        k: usize,
    ) -> Result<Vec<(MemoryPoint, f32)>, MemoryError> {
        self.searches.fetch_add(1, Ordering::Relaxed);
        self.inner.search(scope, vector, k).await
    }
    async fn recent(&self, scope: &MemoryScope, n: usize) -> Result<Vec<MemoryPoint>, MemoryError> {
        self.recents.fetch_add(1, Ordering::Relaxed);
        self.inner.recent(scope, n).await
    }
    async fn list(
        &self,
        identity: &Identity,
        character: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MemoryPoint>, MemoryError> {
        self.inner.list(identity, character, limit).await
    }
    async fn forget(
        &self,
        identity: &Identity,
        character: Option<&str>,
    ) -> Result<u64, MemoryError> {
        self.inner.forget(identity, character).await
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
}

/// What the context stage needs to know about the turn.
pub struct Request<'a> {
    pub conversation_key: &'a str,
    pub history_len: usize,
    pub scope: &'a MemoryScope,
    pub user_text: &'a str,
    pub top_k: usize,
    pub recent_states: usize,
}

/// The context stage's ports.
pub struct Ports<'a> {
    pub cache: Option<&'a Arc<dyn Cache>>,
    pub memory: &'a CountingMemory,
    pub embedder: &'a dyn Embedder,
    pub emotions: &'a dyn EmotionAnalyzer,
    pub store: &'a dyn CharacterStore,
}

#[derive(Debug, Default)]
pub struct Gathered {
    pub history: Vec<HistoryEntry>,
    pub user_emotion: Option<EmotionResult>,
    /// The user message's embedding (reused by `memory_store`).
    pub user_vector: Option<Vec<f32>>,
    pub memories: Vec<(MemoryPoint, f32)>,
    /// Recent emotional states, newest first.
    pub recent: Vec<MemoryPoint>,
    pub relationship: Option<Relationship>,
    pub degraded: Vec<String>,
    pub redis_round_trips: u32,
}

pub async fn gather(ports: &Ports<'_>, req: &Request<'_>) -> Gathered {
    let history = async {
        let Some(cache) = ports.cache else {
            return (
                Vec::new(),
                0,
                Some("history: no cache configured".to_string()),
            );
        };
        match cache
            .list_tail(&history_key(req.conversation_key), req.history_len)
            .await
        {
            Ok(items) => (
                items
                    .iter()
                    .filter_map(|b| serde_json::from_slice(b).ok())
                    .collect(),
                1,
                None,
            ),
            Err(e) => (Vec::new(), 1, Some(format!("history: {e}"))),
        }
    };
    let memories = async {
        let vector = match ports.embedder.embed(&[req.user_text.to_string()]).await {
            Ok(mut v) if !v.is_empty() => v.swap_remove(0),
            Ok(_) => {
                return (
                    None,
                    Vec::new(),
                    Some("embedding: empty answer".to_string()),
                );
            }
            Err(e) => return (None, Vec::new(), Some(format!("embedding: {e}"))),
        };
        match ports.memory.search(req.scope, &vector, req.top_k).await {
            Ok(hits) => (Some(vector), hits, None),
            Err(e) => (
                Some(vector),
                Vec::new(),
                Some(format!("memory search: {e}")),
            ),
        }
    };
    let recent = async {
        match ports.memory.recent(req.scope, req.recent_states).await {
            Ok(r) => (r, None),
            Err(e) => (Vec::new(), Some(format!("recent emotional states: {e}"))),
        }
    };
    let relationship = async {
        match ports
            .store
            .relationship(&req.scope.identity, &req.scope.character)
            .await
        {
            Ok(r) => (r, None),
            Err(e) => (None, Some(format!("relationship: {e}"))),
        }
    };
    // The emotion analyzer is pure CPU work of a few microseconds: no task of its own.
    let user_emotion = ports.emotions.analyze(req.user_text);
    let ((history, trips, e1), (user_vector, memories, e2), (recent, e3), (relationship, e4)) =
        tokio::join!(history, memories, recent, relationship);
    let degraded = [e1, e2, e3, e4].into_iter().flatten().collect();
    Gathered {
        history,
        user_emotion: Some(user_emotion),
        user_vector,
        memories,
        recent,
        relationship,
        degraded,
        redis_round_trips: trips,
    }
}
