//! Everything the whisperfleet services share: the wire contract, topology, configuration,
//! telemetry, shutdown, and the ports (traits) the pipeline is written against.

pub mod character;
pub mod llm;
pub mod config;
pub mod wire;
pub mod amqp;
pub mod backoff;
pub mod broker;
pub mod shutdown;
pub mod telemetry;
pub mod topology;
pub mod cache;
pub mod request_cache;
pub mod lineproto;
