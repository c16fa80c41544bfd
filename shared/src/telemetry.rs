//! Logging setup shared by every binary: `tracing` with an env filter (`RUST_LOG`, default
//! `info`), plain or JSON lines (`WHISPERFLEET_LOG_FORMAT`), written to stderr so stdout
//! stays free for program output (`chat`, `queues --json`).

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// Installs the global subscriber once; later calls (tests, `up` starting several services)
/// are no-ops.
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,lapin=error,sqlx=warn,h2=warn,hyper=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE);
    let _ = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// TLS backends: rustls 0.23 finds two crypto providers in this dependency tree and refuses
/// to pick one, so every binary installs ring before building any TLS client.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// What every binary does first: TLS provider, configuration, logging.
pub fn bootstrap() -> Result<crate::config::Config, crate::config::ConfigError> {
    install_crypto_provider();
    let config = crate::config::Config::load()?;
    init(&config.log_format);
    Ok(config)
}
