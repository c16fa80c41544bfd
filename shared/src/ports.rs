//! Every port the pipeline is written against, one file per port. Implementations live in the
//! `whisperfleet-adapters` crate (one folder per port, one file per backend); the pipeline
//! never knows which one it has. Each port's error type says which of its errors are
//! retryable.

pub mod broker;
pub mod cache;
pub mod characters;
pub mod embedder;
pub mod emotion;
pub mod llm;
pub mod memory;
pub mod metrics;

pub use broker::{Broker, BrokerError};
pub use cache::{Cache, CacheError};
pub use characters::{CharacterStore, StoreError};
pub use embedder::{EmbedError, Embedder};
pub use emotion::{EMOTION_LABELS, EmotionAnalyzer, EmotionResult};
pub use llm::{Llm, LlmError};
pub use memory::{MemoryError, MemoryPoint, MemoryScope, VectorMemory};
pub use metrics::{MetricsSink, SinkError};

/// The memory stage's ports: vector memory, embeddings, emotion analysis.
#[derive(Clone)]
pub struct MemoryPorts {
    pub memory: std::sync::Arc<dyn VectorMemory>,
    pub embedder: std::sync::Arc<dyn Embedder>,
    pub emotions: std::sync::Arc<dyn EmotionAnalyzer>,
}
