//! Everything the whisperfleet services share: the wire contract, topology, configuration,
//! telemetry, shutdown, and the ports (traits) the pipeline is written against.

pub mod amqp;
pub mod backoff;
pub mod broker;
pub mod broker_contract;
pub mod cache;
pub mod cache_contract;
pub mod character;
pub mod config;
pub mod embedded_broker;
pub mod embedded_cache;
pub mod http;
pub mod influx;
pub mod lineproto;
pub mod llm;
pub mod metrics_file;
pub mod ports;
pub mod request_cache;
pub mod shutdown;
pub mod telemetry;
pub mod topology;
pub mod wire;
