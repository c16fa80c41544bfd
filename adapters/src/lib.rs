//! Every backend of every port, one folder per port and one file per backend, each behind a
//! cargo feature so a binary links only what it can use (the gateway neither sqlx nor
//! qdrant-client; the metrics-writer neither serenity, sqlx nor qdrant-client). [`connect`]
//! is the one place that turns configuration into connected ports. See ARCHITECTURE.md.

pub mod broker;
pub mod cache;
pub mod characters;
pub mod connect;
pub mod embeddings;
pub mod emotion;
#[cfg(any(feature = "openai", feature = "influx"))]
pub mod http;
pub mod llm;
pub mod memory;
pub mod metrics;
pub mod probe;
