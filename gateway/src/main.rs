//! `gateway` binary: telemetry → config → `Application::build` → `run_until_stopped`.

/// mimalloc: glibc malloc/free were a measured share of every turn's CPU (docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use whisperfleet_gateway::startup::Application;
use whisperfleet_shared::{shutdown, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = telemetry::bootstrap().context("loading configuration")?;
    let app = Application::build(&config).await?;
    let result = app.run_until_stopped(shutdown::on_signals()).await;
    // Spans still batched for OTLP (feature `otlp`) leave before the process does.
    telemetry::flush();
    result
}
