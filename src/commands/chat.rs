//! `whisperfleet chat`: talk to a character from the terminal, through the whole fleet run
//! in this process. One message per line; with piped stdin, replies go to stdout and what
//! runs to stderr, for scripting. Exits the process when done (stdin's reader cannot be
//! cancelled).

use anyhow::Context;
use whisperfleet_shared::{config::Config, shutdown};

use crate::fleet;

pub async fn run(
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
    config.gateway.id = format!(
        "{}-chat-{}",
        config.gateway.id,
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let config = &config;
    let ports = fleet::Ports::build(config, "chat").await?;
    ports.seed_characters().await?;
    let backend = fleet::Backend::start(config, &ports, workers).await?;
    let mut connected = whisperfleet_gateway::gateway::Connected::start(
        config,
        ports.turn.broker.clone(),
        Some(ports.turn.cache.clone()),
    )
    .await
    .context("starting the gateway")?;
    connected.serve_unclaimed();
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
        Some(ports.turn.store.clone()),
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
