//! `worker` binary: telemetry → config → `Application::build` → `run_until_stopped`.

use anyhow::Context;
use whisperfleet_shared::{config::Config, shutdown, telemetry};
use whisperfleet_worker::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    telemetry::install_crypto_provider();
    let config = Config::load().context("loading configuration")?;
    telemetry::init(&config.log_format);
    let app = Application::build(&config).await?;
    app.run_until_stopped(shutdown::on_signals()).await
}
