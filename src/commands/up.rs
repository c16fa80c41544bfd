//! `whisperfleet up`: the whole fleet in one process — gateway (HTTP, plus Discord bots when
//! tokens are set), workers and the metrics writer — on embedded defaults where nothing is
//! configured. Prints what runs and how to send a turn, then serves until a signal or until
//! the backend fails.

use whisperfleet_shared::{config::Config, shutdown};

use crate::fleet;

pub async fn run(config: &Config, workers: usize) -> anyhow::Result<()> {
    let shutdown = shutdown::on_signals();
    let ports = fleet::Ports::build(config, "up").await?;
    let seeded = ports.seed_characters().await?;
    let mut backend = fleet::Backend::start(config, &ports, workers).await?;
    let gateway = whisperfleet_gateway::startup::Application::build_with(
        config,
        ports.turn.broker.clone(),
        Some(ports.turn.cache.clone()),
    )
    .await?;
    let addr = gateway.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        use std::io::Write;
        let _ = writeln!(
            out,
            "whisperfleet up: gateway {:?}, {} worker(s), metrics writer",
            config.gateway.id,
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
        // With keys configured every call needs one; the key itself is never printed.
        let auth = if config.gateway.http_api_keys.is_some()
            || config.gateway.http_api_keys_file.is_some()
        {
            " -H \"authorization: Bearer $KEY\""
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "  curl -s http://{addr}/v1/turns -H 'content-type: application/json'{auth} \\\n    -d '{{\"character\":\"{}\",\"user_id\":\"me\",\"text\":\"Hello!\"}}'",
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
