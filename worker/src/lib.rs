//! The stateless turn worker: consumes `turns`, runs each turn through the pipeline stages
//! (one module per stage: `cdl`, `context`, `compose`, `llm`, …) and publishes the reply
//! and one metric event. Any number of workers can consume the same queue.

pub mod cdl;
pub mod compose;
pub mod consumer;
pub mod context;
pub mod embed;
pub mod emotion;
pub mod llm;
pub mod memory;
pub mod mock_llm;
pub mod offline;
pub mod prompt;
pub mod qdrant;
pub mod sqlite_memory;
pub mod sqlite_store;
pub mod startup;
pub mod store;
pub mod store_contract;
pub mod turn;
