//! One runner per turn: a lease in the turn's record (`turn:<id>` field `lease`), taken
//! before a turn runs, renewed while it runs, given back when it is settled.
//!
//! A turn can reach two workers at once: the gateway republishes it after a lost confirm
//! (two messages, one `turn_id`), or a consumer channel resets mid-turn and RabbitMQ
//! redelivers it while the first worker is still on it. The second one waits for the lease
//! instead of running the turn too (two LLM calls, the loser's answer overwriting the
//! stored one); when the lease is given back it reads the record and finds the turn done,
//! or, when the holder died, takes the lease over once it ran out.
//!
//! Without a cache (or while Redis is down) turns run unleased: a turn is never refused for
//! want of a lease, and the records' other guards still hold.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;
use whisperfleet_shared::ports::cache::Cache;
use whisperfleet_shared::records;

/// How long a lease lasts without renewal: a dead holder's turn waits this long at most.
pub const LEASE: Duration = Duration::from_secs(6);
/// Renewed this often while the turn runs (well inside [`LEASE`]).
const RENEW_EVERY: Duration = Duration::from_secs(2);
/// How often a waiting worker looks again.
const POLL: Duration = Duration::from_millis(250);

/// A held lease; renewed in the background until [`Lease::release`] or drop.
pub struct Lease {
    cache: Arc<dyn Cache>,
    key: String,
    holder: String,
    renewer: JoinHandle<()>,
}

/// What [`acquire`] found.
pub enum Acquired {
    /// This delivery holds the turn now.
    Held(Lease),
    /// No lease could be kept (no cache, Redis down): run anyway.
    Unleased,
}

/// Takes the turn's lease for `holder`, waiting while another holder keeps it, for at most
/// `max_wait` (then it runs unleased rather than never). `waited` tells the caller to read
/// the record again: the other holder may have finished the turn meanwhile.
pub async fn acquire(
    cache: Option<&Arc<dyn Cache>>,
    turn_id: &str,
    holder: String,
    record_ttl: Duration,
    max_wait: Duration,
) -> (Acquired, bool) {
    let Some(cache) = cache else {
        return (Acquired::Unleased, false);
    };
    let key = records::turn_key(&turn_id);
    let started = Instant::now();
    let mut waited = false;
    loop {
        match cache
            .lease(&key, records::LEASE, &holder, LEASE, record_ttl)
            .await
        {
            Ok(None) => {
                let renewer = tokio::spawn(renew(
                    cache.clone(),
                    key.clone(),
                    holder.clone(),
                    record_ttl,
                ));
                let lease = Lease {
                    cache: cache.clone(),
                    key,
                    holder,
                    renewer,
                };
                return (Acquired::Held(lease), waited);
            }
            Ok(Some(other)) => {
                if started.elapsed() >= max_wait {
                    tracing::warn!(
                        holder = %other,
                        "turn still leased by another runner after {max_wait:?}; running it anyway"
                    );
                    return (Acquired::Unleased, true);
                }
                if !waited {
                    tracing::info!(holder = %other, "turn is running elsewhere; waiting for it");
                }
                waited = true;
                tokio::time::sleep(POLL).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "turn lease unavailable; running the turn unleased");
                return (Acquired::Unleased, waited);
            }
        }
    }
}

async fn renew(cache: Arc<dyn Cache>, key: String, holder: String, ttl: Duration) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        match cache.lease(&key, records::LEASE, &holder, LEASE, ttl).await {
            Ok(None) => {}
            Ok(Some(other)) => {
                // Only after this runner stalled past LEASE: the other one goes on, this one
                // finishes (its records make the overlap harmless, as without a lease).
                tracing::warn!(holder = %other, "turn lease taken over while still running");
                return;
            }
            Err(e) => tracing::debug!(error = %e, "turn lease not renewed"),
        }
    }
}

impl Acquired {
    /// Gives the lease back (after the delivery was settled).
    pub async fn release(self) {
        if let Self::Held(lease) = self {
            lease.renewer.abort();
            if let Err(e) = lease
                .cache
                .release(&lease.key, records::LEASE, &lease.holder)
                .await
            {
                tracing::debug!(error = %e, "turn lease not given back; it runs out by itself");
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.renewer.abort();
    }
}
