//! `whisperfleet`: the operator CLI. `up` runs a gateway and workers in one process,
//! `characters` manages character data, `queues` shows queue depth, `mock-llm` serves a
//! local OpenAI-compatible endpoint for tests and benchmarks.

mod bench;
mod characters;
mod memory;
mod queues;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use whisperfleet_shared::{config::Config, shutdown, telemetry};

#[derive(Parser)]
#[command(
    name = "whisperfleet",
    version,
    about = "AI character bots as a fleet of services"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a gateway (HTTP) and workers in one process.
    Up {
        /// Worker instances to run in this process.
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
    /// Manage characters (PostgreSQL, WHISPERFLEET_DATABASE_URL).
    Characters {
        #[command(subcommand)]
        command: characters::CharactersCommand,
    },
    /// Drive turns through the whole fleet and report where every millisecond goes.
    Bench(bench::BenchArgs),
    /// Privacy: forget what is stored about a user.
    Memory {
        #[command(subcommand)]
        command: memory::MemoryCommand,
    },
    /// Depth and consumers of every fleet queue.
    Queues {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Refresh every N seconds until interrupted.
        #[arg(long, value_name = "SECONDS")]
        watch: Option<u64>,
    },
    /// A local OpenAI-compatible chat completion server with fixed latency.
    MockLlm {
        #[arg(long, default_value = "127.0.0.1")]
        host: String,
        #[arg(long, default_value_t = 9000)]
        port: u16,
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// Append every request received as one JSON line to this file.
        #[arg(long)]
        record: Option<PathBuf>,
        /// Answer with this text instead of echoing the user.
        #[arg(long)]
        reply: Option<String>,
        /// Fail the first N requests with --fail-status.
        #[arg(long, default_value_t = 0)]
        fail_first: u32,
        #[arg(long, default_value_t = 503)]
        fail_status: u16,
        #[arg(long)]
        retry_after_s: Option<u32>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = telemetry::bootstrap().context("loading configuration")?;
    match cli.command {
        Command::Up { workers } => up(&config, workers).await,
        Command::Characters { command } => characters::run(&config, command).await,
        Command::Memory { command } => memory::run(&config, command).await,
        Command::Bench(args) => bench::run(&config, args).await,
        Command::Queues { json, watch } => queues::run(&config, json, watch).await,
        Command::MockLlm {
            host,
            port,
            latency_ms,
            record,
            reply,
            fail_first,
            fail_status,
            retry_after_s,
        } => {
            use whisperfleet_worker::mock_llm::{self, MockLlmOptions, MockReply};
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
            };
            let stop = shutdown::on_signals();
            mock_llm::serve(listener, opts, async move { stop.cancelled().await }).await
        }
    }
}

async fn up(config: &Config, workers: usize) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signals();
    let gateway = whisperfleet_gateway::startup::Application::build(config)
        .await
        .context(
            "whisperfleet up needs RabbitMQ, Redis and PostgreSQL for now: set \
             WHISPERFLEET_AMQP_URL, WHISPERFLEET_REDIS_URL and WHISPERFLEET_DATABASE_URL",
        )?;
    println!("gateway: http://{}/v1/turns", gateway.local_addr()?);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..workers.max(1) {
        let w = whisperfleet_worker::startup::Application::build(config).await?;
        tasks.spawn(w.run_until_stopped(shutdown.clone()));
    }
    tasks.spawn(gateway.run_until_stopped(shutdown.clone()));
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok(())
}
