//! `[backends]`: where the services and models are, and where embedded state lives. No URL
//! has a default: unset means embedded in `up`/`chat` and missing in the standalone binaries.
//! Every URL is a [`SecretString`]: any of them may carry `user:password@`.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

use super::declare::{millis, section};

section! {
    /// Backends: RabbitMQ, Redis, PostgreSQL, Qdrant, the LLM, embeddings, InfluxDB.
    pub struct Backends in "backends" {
        amqp_url: Option<SecretString> = None => "amqp_url",
        /// Bound on every wait for RabbitMQ: connecting, opening a channel, a declaration,
        /// a publish's confirm. Past it the broker counts as unavailable (a caller retries or
        /// answers 503) instead of holding its caller.
        #[serde(deserialize_with = "millis")]
        broker_timeout: Duration = Duration::from_millis(5_000) => "broker_timeout_ms",
        redis_url: Option<SecretString> = None => "redis_url",
        /// Prefix of every Redis key this fleet writes (lets fleets/tests share one Redis).
        redis_prefix: String = "wf:".into() => "redis_prefix",
        /// Bound of every Redis call, connecting included: Redis sits on every turn's path,
        /// and a turn without it (no request cache, no history) beats a stalled one.
        #[serde(deserialize_with = "millis")]
        redis_timeout: Duration = Duration::from_millis(500) => "redis_timeout_ms",
        database_url: Option<SecretString> = None => "database_url",
        /// PostgreSQL's `statement_timeout`, the pool's acquire timeout (connecting
        /// included), and half the client's bound of each store call.
        #[serde(deserialize_with = "millis")]
        database_timeout: Duration = Duration::from_millis(2_000) => "database_timeout_ms",
        qdrant_url: Option<SecretString> = None => "qdrant_url",
        qdrant_api_key: Option<SecretString> = None => "qdrant_api_key",
        /// The one collection all characters' memories share (multi-tenant by payload).
        qdrant_collection: String = "whisperfleet_memories".into() => "qdrant_collection",
        /// Per Qdrant request, and for connecting.
        #[serde(deserialize_with = "millis")]
        qdrant_timeout: Duration = Duration::from_millis(2_000) => "qdrant_timeout_ms",
        llm_base_url: Option<SecretString> = None => "llm_base_url",
        llm_api_key: Option<SecretString> = None => "llm_api_key",
        /// The default model (characters may override).
        llm_model: String = "openai/gpt-4o-mini".into() => "llm_model",
        /// Per attempt.
        #[serde(deserialize_with = "millis")]
        llm_timeout: Duration = Duration::from_millis(30_000) => "llm_timeout_ms",
        llm_max_retries: u32 = 2 => "llm_max_retries",
        /// Streamed answers: the longest wait for the next chunk (keep-alives count).
        #[serde(deserialize_with = "millis")]
        llm_stream_idle_timeout: Duration = Duration::from_millis(20_000) => "llm_stream_idle_timeout_ms",
        embeddings_url: Option<SecretString> = None => "embeddings_url",
        embeddings_model: Option<String> = None => "embeddings_model",
        embeddings_api_key: Option<SecretString> = None => "embeddings_api_key",
        /// Per embeddings attempt (connect, send, whole answer); retried twice with backoff.
        #[serde(deserialize_with = "millis")]
        embeddings_timeout: Duration = Duration::from_millis(5_000) => "embeddings_timeout_ms",
        /// Vector length of the embedder (built-in: 384; must match the model when
        /// `EMBEDDINGS_URL` is set).
        embeddings_dims: usize = 384 => "embeddings_dims",
        influx_url: Option<SecretString> = None => "influx_url",
        influx_org: String = "whisperfleet".into() => "influx_org",
        influx_bucket: String = "whisperfleet".into() => "influx_bucket",
        influx_token: Option<SecretString> = None => "influx_token",
        /// Gzip write bodies (InfluxDB and victoria-metrics accept `Content-Encoding: gzip`).
        influx_gzip: bool = true => "influx_gzip",
        /// Where embedded state (SQLite, metrics file) lives; see [`super::Config::data_dir`].
        data_dir: Option<PathBuf> = None => "data_dir",
    }
}
