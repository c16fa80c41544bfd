//! `metrics-writer` binary: telemetry → config → run until SIGTERM/SIGINT.

use anyhow::Context;
use whisperfleet_shared::{config::Config, shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::install_crypto_provider();
    let config = Config::load().context("loading configuration")?;
    telemetry::init(&config.log_format);
    whisperfleet_metrics_writer::run(&config, shutdown::on_signals()).await
}
