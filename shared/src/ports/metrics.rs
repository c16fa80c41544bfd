//! The metrics sink port: where the metrics-writer sends validated line protocol (InfluxDB's
//! v2 write API in the fleet, a line-protocol file when embedded). Its errors are classified
//! the way the writer's retry policy needs them.

use async_trait::async_trait;

use crate::retry::{RetryAction, Retryable};

/// Why a metrics write failed, classified the way the writer's retry policy needs.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// 429, 5xx, timeouts, connection errors: retry with backoff (honour `retry_after_s`).
    #[error("metrics sink temporarily unavailable: {reason}")]
    Retryable {
        reason: String,
        retry_after_s: Option<f64>,
    },
    /// 413: split the batch and try the halves.
    #[error("batch too large for the metrics sink")]
    TooLarge,
    /// 400/422: some lines are bad; bisect to find them, dead-letter them with this reason.
    #[error("metrics sink rejected points: {0}")]
    Rejected(String),
    /// 401/403: keep everything, log loudly, back off.
    #[error("metrics sink refused our credentials: {0}")]
    Unauthorized(String),
}

impl Retryable for SinkError {
    /// Outages are retried (at least `Retry-After`), and so are refused credentials, which an
    /// operator can fix without losing events; a batch too large or with bad points needs
    /// splitting, not another try.
    fn retry_action(&self) -> RetryAction {
        match self {
            Self::Retryable { retry_after_s, .. } => RetryAction::after_secs(*retry_after_s),
            Self::Unauthorized(_) => RetryAction::Retry,
            Self::TooLarge | Self::Rejected(_) => RetryAction::DontRetry,
        }
    }
}

#[async_trait]
pub trait MetricsSink: Send + Sync + 'static {
    /// Writes line-protocol lines (already validated) in one request.
    async fn write(&self, lines: &[&str]) -> Result<(), SinkError>;
    fn describe(&self) -> String;
}
