//! The stateless turn worker: consumes `turns`, runs each turn through the pipeline stages
//! (one module per stage: `cdl`, `context`, `compose`, `memory`, …; `finish` for the reply,
//! memory and metric event at the end) and publishes the reply and one metric event. Any
//! number of workers can consume the same queue. See ARCHITECTURE.md for the invariants the
//! turn keeps.

pub mod cdl;
pub mod compose;
pub mod consumer;
pub mod context;
pub mod finish;
pub mod lease;
pub mod memory;
pub mod privacy;
pub mod privacy_requests;
pub mod prompt;
pub mod startup;
pub mod stream;
pub mod turn;
