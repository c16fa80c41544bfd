//! Logging setup shared by every binary: `tracing` with an env filter (`RUST_LOG`, default
//! `info`), plain or JSON lines (`WHISPERFLEET_LOG_FORMAT`), written to stderr so stdout
//! stays free for program output (`chat`, `queues --json`). With the cargo feature `otlp`
//! and `OTEL_EXPORTER_OTLP_ENDPOINT` set, spans are also exported over OTLP ([`otlp`]);
//! without the feature none of that is compiled in.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::LogFormat;

#[cfg(feature = "otlp")]
pub mod otlp;

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
    let lines = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let lines = if format == LogFormat::Json {
        lines.json().flatten_event(true).boxed()
    } else {
        lines.boxed()
    };
    let registry = tracing_subscriber::registry().with(filter).with(lines);
    #[cfg(feature = "otlp")]
    let registry = registry.with(otlp::layer());
    let _ = registry.try_init();
}

/// Sends what the OTLP exporter still holds (a no-op without the `otlp` feature); binaries
/// call it before they exit.
pub fn flush() {
    #[cfg(feature = "otlp")]
    otlp::flush();
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
