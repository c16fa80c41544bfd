//! The library half of the `whisperfleet` package: what the CLI and the deploy tests share.
//! `grafana` checks the Grafana provisioning files against what the code writes (used by
//! `whisperfleet doctor` and `tests/tests/deploy.rs`).

pub mod grafana;
