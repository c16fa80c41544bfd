//! `whisperfleet`: the operator CLI. `up` runs gateway, workers and metrics writer in one
//! process and `chat` talks to a character from the terminal — both on embedded defaults
//! where nothing is configured; `characters` manages character data, `queues` shows queue
//! depth, `doctor` checks every configured backend, `bench` measures, `mock-llm` serves a
//! local OpenAI-compatible endpoint. This file
//! is the command line and its dispatch; each command's body is in `commands/`.

/// mimalloc: glibc malloc/free were a measured share of every turn's CPU (docs/PERFORMANCE.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod commands;
mod fleet;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use whisperfleet_shared::telemetry;

#[derive(Parser)]
#[command(
    name = "whisperfleet",
    version,
    about = "AI character bots as a fleet of services"
)]
struct Cli {
    /// Where embedded state lives (characters, relationships, memories, metrics file);
    /// overrides WHISPERFLEET_DATA_DIR. Default: the platform's data directory.
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the whole fleet in one process: gateway (HTTP, plus Discord bots when tokens are
    /// set), workers and the metrics writer, on embedded defaults where nothing is configured.
    Up {
        /// Worker instances to run in this process.
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
    /// Talk to a character from the terminal, through the whole fleet (runs it in this
    /// process). Reads one message per line; works with piped stdin for scripting.
    Chat {
        /// Who to talk to (see /characters).
        #[arg(long, short)]
        character: Option<String>,
        /// Your user id (memories and relationships are kept per user).
        #[arg(long, env = "USER", default_value = "you")]
        user: String,
        /// Worker instances to run in this process.
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
    /// Manage characters (PostgreSQL with WHISPERFLEET_DATABASE_URL, else the embedded store
    /// in the data directory).
    Characters {
        #[command(subcommand)]
        command: commands::characters::CharactersCommand,
    },
    /// Drive turns through the whole fleet and report where every millisecond goes.
    Bench(commands::bench::BenchArgs),
    /// Privacy: show or forget what is stored about one user (platform, namespace, id).
    Memory {
        #[command(subcommand)]
        command: commands::memory::MemoryCommand,
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
    /// Check every configured backend and the Grafana provisioning files; say what is wrong
    /// and what fixes it (exit status 1 when something is).
    Doctor(commands::doctor::DoctorArgs),
    /// A local OpenAI-compatible chat completion server with fixed latency.
    MockLlm(commands::mock_llm::MockLlmArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut config = match cli.command {
        Command::Chat { .. } => telemetry::bootstrap_with("warn,lapin=error,sqlx=error"),
        // The report is the output: lapin's own logging of the 404s a passive declaration
        // gets for a missing queue would only bury it.
        Command::Doctor(_) => telemetry::bootstrap_with("error,lapin=off"),
        _ => telemetry::bootstrap(),
    }
    .context("loading configuration")?;
    if let Some(dir) = cli.data_dir {
        config.backends.data_dir = Some(dir);
    }
    match cli.command {
        Command::Up { workers } => commands::up::run(&config, workers).await,
        Command::Chat {
            character,
            user,
            workers,
        } => commands::chat::run(&config, character, user, workers).await,
        Command::Characters { command } => commands::characters::run(&config, command).await,
        Command::Memory { command } => commands::memory::run(&config, command).await,
        Command::Bench(args) => commands::bench::run(&config, args).await,
        Command::Queues { json, watch } => commands::queues::run(&config, json, watch).await,
        Command::MockLlm(args) => commands::mock_llm::run(args).await,
        Command::Doctor(args) => {
            if !commands::doctor::run(&config, args).await? {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
