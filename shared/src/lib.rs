//! Everything the whisperfleet services share: the wire contract, topology, configuration,
//! telemetry, shutdown, and the ports (traits) the pipeline is written against.

pub mod character;
pub mod llm;
