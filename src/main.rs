//! `whisperfleet`: the operator CLI. `up` runs gateway, workers and metrics writer in one
//! process and `chat` talks to a character from the terminal — both on embedded defaults
//! where nothing is configured; `characters` manages character data, `queues` shows queue
//! depth, `bench` measures, `mock-llm` serves a local OpenAI-compatible endpoint.

mod bench;
mod characters;
mod fleet;
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
    let quiet = matches!(cli.command, Command::Chat { .. });
    let mut config = if quiet {
        telemetry::bootstrap_with("warn,lapin=error,sqlx=error")
    } else {
        telemetry::bootstrap()
    }
    .context("loading configuration")?;
    if let Some(dir) = cli.data_dir {
        config.data_dir = Some(dir);
    }
    match cli.command {
        Command::Up { workers } => up(&config, workers).await,
        Command::Chat {
            character,
            user,
            workers,
        } => chat(&config, character, user, workers).await,
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
            use whisperfleet_testkit::mock_llm::{self, MockLlmOptions, MockReply};
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
    let ports = fleet::Ports::build(config, "up").await?;
    let seeded = ports.seed_characters().await?;
    let mut backend = fleet::Backend::start(config, &ports, workers).await?;
    let gateway = whisperfleet_gateway::startup::Application::build_with(
        config,
        ports.broker.clone(),
        Some(ports.cache.clone()),
    )
    .await?;
    let addr = gateway.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        use std::io::Write;
        let _ = writeln!(
            out,
            "whisperfleet up: gateway {:?}, {} worker(s), metrics writer",
            config.gateway_id,
            workers.max(1)
        );
        fleet::print_report(&mut out, &ports.report(config));
        for w in ports.warnings(config) {
            let _ = writeln!(out, "  note: {w}");
        }
        let bots = gateway.discord_characters();
        let _ = writeln!(
            out,
            "  {:<11} {}",
            "discord:",
            if bots.is_empty() {
                "off (no bot tokens set)".to_string()
            } else {
                format!("bots for {}", bots.join(", "))
            }
        );
        if !seeded.is_empty() {
            let _ = writeln!(
                out,
                "  imported the sample characters: {}",
                seeded.join(", ")
            );
        }
        let _ = writeln!(out, "send turns to http://{addr}/v1/turns, e.g.");
        let _ = writeln!(
            out,
            "  curl -s http://{addr}/v1/turns -H 'content-type: application/json' \\\n    -d '{{\"character\":\"{}\",\"user_id\":\"me\",\"text\":\"Hello!\"}}'",
            fleet::DEFAULT_CHARACTER
        );
        let _ = out.flush();
    }
    let served = tokio::select! {
        r = gateway.run_until_stopped(shutdown.clone()) => r,
        e = backend.failed() => {
            shutdown.cancel();
            Err(e)
        }
    };
    let stopped = backend.stop().await;
    served?;
    stopped
}

async fn chat(
    config: &Config,
    character: Option<String>,
    user: String,
    workers: usize,
) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let shutdown = shutdown::on_signals();
    // A reply queue of its own: sharing the configured gateway's (same host, same id) would
    // split that gateway's replies between the two processes.
    let mut config = config.clone();
    config.gateway_id = format!(
        "{}-chat-{}",
        config.gateway_id,
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let config = &config;
    let ports = fleet::Ports::build(config, "chat").await?;
    ports.seed_characters().await?;
    let backend = fleet::Backend::start(config, &ports, workers).await?;
    let connected = whisperfleet_gateway::gateway::Connected::start(config, ports.broker.clone())
        .await
        .context("starting the gateway")?;
    let interactive = std::io::stdin().is_terminal();
    let report = ports.report(config);
    let banner = if interactive {
        let mut b = Vec::new();
        b.extend_from_slice(b"whisperfleet chat, running:\n");
        fleet::print_report(&mut b, &report);
        for w in ports.warnings(config) {
            b.extend_from_slice(format!("  note: {w}\n").as_bytes());
        }
        Some(String::from_utf8_lossy(&b).trim_end().to_string())
    } else {
        // Scripts read replies from stdout; what runs goes to stderr.
        fleet::print_report(&mut std::io::stderr(), &report);
        for w in ports.warnings(config) {
            eprintln!("  note: {w}");
        }
        None
    };
    let chat = whisperfleet_gateway::terminal::Chat::new(
        connected.core.clone(),
        Some(ports.store.clone()),
        ports.summary.clone(),
    );
    let opts = whisperfleet_gateway::terminal::ChatOptions {
        character: character.unwrap_or_else(|| fleet::DEFAULT_CHARACTER.to_string()),
        user_name: user.clone(),
        user_id: user,
        interactive,
        banner,
    };
    let result = chat
        .run(
            opts,
            tokio::io::BufReader::new(tokio::io::stdin()),
            tokio::io::stdout(),
            tokio::io::stderr(),
            shutdown.clone(),
        )
        .await;
    connected.stop();
    let stopped = backend.stop().await;
    // Stdin is read on a blocking thread that cannot be cancelled (tokio's documented
    // limitation): exit instead of waiting for one more line, on success and on error.
    if let Err(e) = result.and(stopped) {
        eprintln!("Error: {e:#}");
        std::process::exit(1);
    }
    std::process::exit(0);
}
