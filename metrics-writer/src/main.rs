//! `metrics-writer` binary: telemetry → config → run until SIGTERM/SIGINT.

use anyhow::Context;
use whisperfleet_shared::{shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = telemetry::bootstrap().context("loading configuration")?;
    whisperfleet_metrics_writer::run(&config, shutdown::on_signals()).await
}
