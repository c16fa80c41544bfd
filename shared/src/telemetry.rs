//! Logging setup shared by every binary: `tracing` with an env filter (`RUST_LOG`, default
//! `info`), plain or JSON lines (`WHISPERFLEET_LOG_FORMAT`), written to stderr so stdout
//! stays free for program output (`chat`, `queues --json`).

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use tracing_subscriber::fmt::format::FmtSpan;

/// Installs the global subscriber once; later calls (tests, `up` starting several services)
/// are no-ops.
pub fn init(format: LogFormat) {
    init_with(format, DEFAULT_FILTER);
}

/// The log filter when `RUST_LOG` is unset.
pub const DEFAULT_FILTER: &str = "info,lapin=error,sqlx=warn,h2=warn,hyper=warn,serenity=warn";

/// Like [`init`] with another default filter (`chat` logs only warnings, so the
/// conversation stays readable).
pub fn init_with(format: LogFormat, default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::NONE);
    let _ = if format == LogFormat::Json {
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
    bootstrap_with(DEFAULT_FILTER)
}

pub fn bootstrap_with(
    default_filter: &str,
) -> Result<crate::config::Config, crate::config::ConfigError> {
    install_crypto_provider();
    let config = crate::config::Config::load()?;
    init_with(config.process.log_format, default_filter);
    Ok(config)
}
