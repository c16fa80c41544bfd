//! `[process]`: what every binary does the same way: log format and shutdown grace.

use std::time::Duration;

use serde::Deserialize;

use super::declare::{Kind, Setting, millis, section};

section! {
    /// Every process.
    pub struct Process in "process" {
        /// Logs go to stderr; `RUST_LOG` filters.
        log_format: LogFormat = LogFormat::Plain => "log_format",
        /// Time in-flight work gets to finish after SIGTERM/SIGINT.
        #[serde(deserialize_with = "millis")]
        shutdown_grace: Duration = Duration::from_millis(30_000) => "shutdown_grace_ms",
        /// Where the worker and the metrics-writer serve `/healthz` and `/readyz`; unset:
        /// each binary's loopback default (`health::WORKER_DEFAULT`, `WRITER_DEFAULT`).
        health_addr: Option<String> = None => "health_addr",
    }
}

/// `log_format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Plain,
    /// One JSON object a line.
    Json,
}

impl Setting for LogFormat {
    const KIND: Kind = Kind::Choice(&["plain", "json"]);
}
