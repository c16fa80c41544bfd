//! Builds the gateway (`Application::build`) and runs it until shutdown
//! (`run_until_stopped`): HTTP adapter, Discord bots (one per configured character, none
//! without tokens), reply router, and a heartbeat that registers this gateway in Redis's
//! gateway registry ([`topology::GATEWAY_REGISTRY`]) so the metrics-writer samples its reply
//! queue.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use whisperfleet_adapters::connect::{self, Missing};
use whisperfleet_shared::config::Config;
use whisperfleet_shared::ports::{Broker, Cache};
use whisperfleet_shared::topology;

use crate::discord::{self, DiscordBots, DiscordSettings};
use crate::gateway::{Connected, GatewayCore};
use crate::http::auth::Access;

pub struct Application {
    core: Arc<GatewayCore>,
    access: Arc<Access>,
    max_body_bytes: usize,
    listener: TcpListener,
    connected: Connected,
    cache: Option<Arc<dyn Cache>>,
    grace: Duration,
    discord: DiscordBots,
}

impl Application {
    pub async fn build(config: &Config) -> anyhow::Result<Self> {
        config.require_amqp("the gateway")?;
        config.require_redis("the gateway")?;
        // Who may call is settled before anything is connected.
        let access = Access::from_config(config).await?;
        let broker = connect::broker(config, "gateway", Missing::Refuse).await?;
        let cache = connect::cache(config, "gateway", Missing::Refuse)?;
        Self::build_from(config, broker, cache.into(), access).await
    }

    pub async fn build_with(
        config: &Config,
        broker: Arc<dyn Broker>,
        cache: Option<Arc<dyn Cache>>,
    ) -> anyhow::Result<Self> {
        let access = Access::from_config(config).await?;
        Self::build_from(config, broker, cache, access).await
    }

    async fn build_from(
        config: &Config,
        broker: Arc<dyn Broker>,
        cache: Option<Arc<dyn Cache>>,
        access: Access,
    ) -> anyhow::Result<Self> {
        // A bad bot list is a configuration error: refuse to start before touching anything.
        let bots = discord::bots_from_config(config).context("reading the Discord bots")?;
        let connected = Connected::start(config, broker.clone(), cache.clone())
            .await
            .context("declaring the topology and consuming this gateway's replies")?;
        let core = connected.core.clone();
        let reply_queue = topology::reply_queue(&config.gateway.id);
        let listener = TcpListener::bind(&config.gateway.http_addr)
            .await
            .with_context(|| {
                format!(
                    "binding WHISPERFLEET_HTTP_ADDR {}",
                    config.gateway.http_addr
                )
            })?;
        tracing::info!(
            addr = %listener.local_addr()?,
            gateway_id = config.gateway.id,
            broker = broker.describe(),
            reply_queue,
            "gateway listening"
        );
        // Last, so a failed build leaves no bot connected.
        let discord = DiscordBots::start(bots, DiscordSettings::from_config(config), core.clone());
        let mut connected = connected;
        connected.serve_unclaimed();
        Ok(Self {
            core,
            access: Arc::new(access),
            max_body_bytes: config.gateway.http_max_body_bytes,
            listener,
            connected,
            cache,
            grace: config.process.shutdown_grace,
            discord,
        })
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    pub fn core(&self) -> Arc<GatewayCore> {
        self.core.clone()
    }

    /// The characters that have a Discord bot running in this gateway.
    pub fn discord_characters(&self) -> &[String] {
        self.discord.characters()
    }

    pub async fn run_until_stopped(mut self, shutdown: CancellationToken) -> anyhow::Result<()> {
        let heartbeat = self.cache.clone().map(|cache| {
            let id = self.core.id.clone();
            tokio::spawn(async move {
                loop {
                    // The registry outlives its last beat by as long as a member counts as
                    // alive, so it vanishes with the last gateway.
                    if let Err(e) = cache
                        .heartbeat(topology::GATEWAY_REGISTRY, &id, topology::GATEWAY_ALIVE)
                        .await
                    {
                        tracing::debug!(error = %e, "gateway heartbeat not written");
                    }
                    tokio::time::sleep(topology::GATEWAY_HEARTBEAT).await;
                }
            })
        });
        let app = crate::http::router(self.core.clone(), self.access.clone(), self.max_body_bytes);
        let stop = shutdown.clone();
        let server = axum::serve(self.listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await });
        // In-flight requests and Discord messages wait for their replies, so the reply
        // consumer stays up until the server and the bots have drained (or the grace period
        // ran out). The bots stop taking messages on shutdown, or when the server failed.
        let server_done = CancellationToken::new();
        let served = async {
            let r = server.await;
            if let Err(e) = &r {
                tracing::error!(error = %e, "http server failed");
            }
            server_done.cancel();
        };
        let discord = &mut self.discord;
        let bots_drained = async {
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = server_done.cancelled() => {}
            }
            discord.shutdown().await;
        };
        let drained = async {
            tokio::join!(served, bots_drained);
        };
        tokio::pin!(drained);
        tokio::select! {
            _ = &mut drained => {}
            _ = async { shutdown.cancelled().await; tokio::time::sleep(self.grace).await } => {
                tracing::warn!("grace period over with requests still open");
            }
        }
        // The last replies' delivery points leave before the broker connection closes.
        self.core.drain_metrics(Duration::from_secs(2)).await;
        self.connected.stop();
        if let Some(h) = heartbeat {
            h.abort();
        }
        tracing::info!("gateway stopped");
        Ok(())
    }
}
