//! Everything the whisperfleet services share: the wire contract, topology, configuration,
//! telemetry, the trace context of a turn, shutdown, retry, the prompt's layout contract, and the ports (traits) the pipeline
//! is written against. No backend lives here: implementations are in `whisperfleet-adapters`.
//! See ARCHITECTURE.md.

pub mod cards;
pub mod character;
pub mod config;
pub mod health;
pub mod identity;
pub mod lineproto;
pub mod metric_batch;
pub mod ports;
pub mod prompt;
pub mod records;
pub mod request_cache;
pub mod retry;
pub mod shutdown;
pub mod sse;
pub mod telemetry;
pub mod topology;
pub mod trace;
pub mod wire;
