//! Messages written to a publish connection that the broker blocked before confirming them.
//!
//! RabbitMQ sends `connection.blocked` in answer to the first publish after a resource alarm
//! and then stops reading the socket: that message is already on its way, and the broker
//! takes it (and confirms it) when the alarm clears. The publish itself fails fast, so the
//! caller can answer "unavailable" at once; but a caller that retries the same message would
//! then put a second copy on the queue after the alarm. So the confirm of such a message is
//! kept here, by message id, and a later publish of the same id on the same connection waits
//! for that confirm instead of writing again. A connection that closed took its unread
//! copies with it: then the message is sent afresh.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;

use lapin::{Connection, PublisherConfirm};
use tokio::time::Instant;
use whisperfleet_shared::ports::broker::{BrokerError, Message};

use super::{Live, check_confirm};

/// More than a blocked connection can have in flight in practice; past it, nothing more is
/// kept (a retry of such a message may then be delivered twice, as without this map).
const MAX_KEPT: usize = 4096;

type Confirm = Pin<Box<PublisherConfirm>>;

/// Unconfirmed messages of the current publish connection, by message id.
#[derive(Default)]
pub(super) struct Unconfirmed {
    kept: std::sync::Mutex<HashMap<String, (Arc<Connection>, Confirm)>>,
}

/// What became of a message kept here, when it is published again.
pub(super) enum Resumed {
    /// Nothing was kept for it (or its connection is gone): send it.
    Send,
    /// The earlier copy's outcome, which stands for this publish too.
    Settled(Result<(), BrokerError>),
}

impl Unconfirmed {
    /// Keeps `confirm` of `msg`, written on `live`, when the message has an id to find it by.
    pub(super) fn keep(&self, live: &Live, msg: &Message, confirm: Confirm) {
        let Some(id) = &msg.message_id else { return };
        let mut kept = self.kept.lock().expect("unconfirmed map poisoned");
        // Copies on an older connection are gone with it.
        kept.retain(|_, (conn, _)| Arc::ptr_eq(conn, &live.conn));
        if kept.len() < MAX_KEPT {
            kept.insert(id.clone(), (live.conn.clone(), confirm));
        }
    }

    /// For a message published again: waits for the earlier copy's confirm (until
    /// `deadline`, or at once while the broker still blocks: then it stays kept).
    pub(super) async fn resume(&self, live: &Live, msg: &Message, deadline: Instant) -> Resumed {
        let Some(id) = &msg.message_id else {
            return Resumed::Send;
        };
        let taken = self
            .kept
            .lock()
            .expect("unconfirmed map poisoned")
            .remove(id);
        let Some((conn, mut confirm)) = taken else {
            return Resumed::Send;
        };
        if !Arc::ptr_eq(&conn, &live.conn) {
            return Resumed::Send;
        }
        let outcome = tokio::select! {
            biased;
            c = &mut confirm => c,
            e = live.until_blocked() => {
                self.keep(live, msg, confirm);
                return Resumed::Settled(Err(e));
            }
            () = tokio::time::sleep_until(deadline) => {
                self.keep(live, msg, confirm);
                return Resumed::Settled(Err(BrokerError::Unavailable(format!(
                    "an earlier copy of the message to {}/{} is still unconfirmed",
                    msg.exchange, msg.routing_key
                ))));
            }
        };
        match outcome {
            Ok(c) => Resumed::Settled(check_confirm(c, msg)),
            // The connection failed before the broker read the copy: send it again.
            Err(_) => Resumed::Send,
        }
    }
}
