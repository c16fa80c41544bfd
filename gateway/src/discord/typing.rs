//! The typing indicator: shown as soon as a turn is submitted and renewed before Discord
//! lets it lapse (about 10 s), until the turn is done. It stops on its own when the token
//! is rejected or the channel forbids posting, so it never piles up invalid requests.

use std::sync::Arc;

use serenity::all::{ChannelId, Http};
use tokio::task::JoinHandle;

use super::client::Bot;
use super::delivery::{Failure, classify};

/// Aborts the typing loop when the turn is done (or its handler ends early).
pub(super) struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Bot {
    /// Shows "… is typing" now and renews it before it lapses, until dropped.
    pub(super) fn start_typing(
        self: &Arc<Self>,
        http: Arc<Http>,
        channel: ChannelId,
    ) -> AbortOnDrop {
        let bot = self.clone();
        let every = self.shared.settings.typing_every;
        AbortOnDrop(tokio::spawn(async move {
            loop {
                if bot.token_rejected.is_cancelled() || bot.is_forbidden(channel) {
                    return;
                }
                if let Err(e) = http.broadcast_typing(channel).await {
                    match classify(&e) {
                        Failure::Unauthorized => {
                            bot.reject_token("showing the typing indicator");
                            return;
                        }
                        Failure::Forbidden => {
                            bot.mark_forbidden(channel, &e);
                            return;
                        }
                        _ => tracing::debug!(error = %e, "typing indicator not shown"),
                    }
                }
                tokio::time::sleep(every).await;
            }
        }))
    }
}
