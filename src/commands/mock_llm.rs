//! `whisperfleet mock-llm`: a local OpenAI-compatible chat completion server with a fixed
//! latency, for benches and tests — echoes the user or answers a fixed text, can record
//! every request and fail the first N; streams paced like a model (`--ttft-ms`,
//! `--tokens-per-s`) or breaks mid-stream (`--break-after-tokens`). Prints its address as the first stdout line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use whisperfleet_shared::shutdown;
use whisperfleet_testkit::mock_llm::{self, MockLlmOptions, MockReply, Pacing};

#[derive(Args)]
pub struct MockLlmArgs {
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    #[arg(long, default_value_t = 9000)]
    pub port: u16,
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Append every request received as one JSON line to this file.
    #[arg(long)]
    pub record: Option<PathBuf>,
    /// Answer with this text instead of echoing the user.
    #[arg(long)]
    pub reply: Option<String>,
    /// Fail the first N requests with --fail-status.
    #[arg(long, default_value_t = 0)]
    pub fail_first: u32,
    #[arg(long, default_value_t = 503)]
    pub fail_status: u16,
    #[arg(long)]
    pub retry_after_s: Option<u32>,
    /// Time to the first token of an answer (after --latency-ms).
    #[arg(long, default_value_t = 0)]
    pub ttft_ms: u64,
    /// Tokens (words) per second after the first; a non-streamed answer waits for all of them.
    #[arg(long)]
    pub tokens_per_s: Option<f64>,
    /// Cut every streamed answer after this many tokens (0: before any text), without [DONE].
    #[arg(long)]
    pub break_after_tokens: Option<usize>,
}

pub async fn run(args: MockLlmArgs) -> anyhow::Result<()> {
    let MockLlmArgs {
        host,
        port,
        latency_ms,
        record,
        reply,
        fail_first,
        fail_status,
        retry_after_s,
        ttft_ms,
        tokens_per_s,
        break_after_tokens,
    } = args;
    let listener = tokio::net::TcpListener::bind((host.as_str(), port))
        .await
        .with_context(|| format!("binding {host}:{port}"))?;
    // Tests read the address from the first stdout line (port 0 picks a free one).
    println!("mock-llm listening on http://{}", listener.local_addr()?);
    let opts = MockLlmOptions {
        latency: Duration::from_millis(latency_ms),
        record,
        reply: reply.map_or(MockReply::Echo, MockReply::Fixed),
        fail_first,
        fail_status,
        retry_after_s,
        pacing: Pacing {
            ttft: Duration::from_millis(ttft_ms),
            tokens_per_s,
            break_after_tokens,
        },
    };
    let stop = shutdown::on_signals();
    mock_llm::serve(listener, opts, async move { stop.cancelled().await }).await
}
