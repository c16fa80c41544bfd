//! Contract suites: the behaviour every implementation of a port must show, as async checks
//! that panic on the first difference. Each runs against the embedded implementation (in
//! `whisperfleet-adapters`' own tests, no services needed) and the real service (in `tests/`).

pub mod broker;
pub mod cache;
pub mod memory;
pub mod store;
