//! Streams a reply's progress to its gateway while the LLM writes it: the pieces the model
//! hands on are coalesced ([`Coalescer`]) into [`TurnReplyDelta`]s, published to the
//! gateway's reply queue (header `x-whisperfleet-kind: delta`, not persistent).
//!
//! **When a delta goes out.** The first as soon as the answer has visible text (its first
//! word or phrase: what makes the first words appear as soon as the model wrote them), then
//! at most one every [`DELTA_INTERVAL`], carrying everything written since the last one.
//!
//! **Best effort, off the turn's path.** The turn only pushes pieces into a channel; one
//! task per turn publishes, one delta at a time (so they leave in order), each bounded by
//! [`DELTA_PUBLISH_TIMEOUT`]. A delta the broker does not take is dropped and the next one
//! carries on from the text it covers (deltas are idempotent by `index`): a failed delta
//! never fails or delays the turn. When the answer is complete the task stops: the final
//! `TurnReply` carries the whole text, so nothing is flushed after it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;
use whisperfleet_shared::ports::broker::{Broker, Message};
use whisperfleet_shared::topology;
use whisperfleet_shared::wire::{TurnReplyDelta, TurnRequest, WIRE_VERSION};

/// Between two deltas of one turn.
pub const DELTA_INTERVAL: Duration = Duration::from_millis(300);

/// The longest one delta publish may take before it is given up.
pub const DELTA_PUBLISH_TIMEOUT: Duration = Duration::from_secs(1);

/// Gathers the pieces of an answer and says when the next delta is due.
#[derive(Debug)]
pub struct Coalescer {
    interval: Duration,
    /// Characters covered by deltas already taken.
    sent_chars: u64,
    pending: String,
    next_seq: u64,
    last_sent: Option<Instant>,
}

enum When {
    Nothing,
    Now,
    At(Instant),
}

/// A delta's content, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    pub seq: u64,
    pub index: u64,
    pub text: String,
}

impl Coalescer {
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            sent_chars: 0,
            pending: String::new(),
            next_seq: 0,
            last_sent: None,
        }
    }

    pub fn push(&mut self, piece: &str) {
        self.pending.push_str(piece);
    }

    /// When the pending text may go out: at once for the first visible text, then
    /// `interval` after the last delta. `None` while there is nothing to send.
    pub fn due_at(&self) -> Option<Instant> {
        match self.when() {
            When::Nothing => None,
            When::Now => Some(Instant::now()),
            When::At(t) => Some(t),
        }
    }

    fn when(&self) -> When {
        if self.pending.is_empty() {
            return When::Nothing;
        }
        match self.last_sent {
            // Whitespace alone is not worth showing.
            None if self.pending.trim().is_empty() => When::Nothing,
            None => When::Now,
            Some(t) => When::At(t + self.interval),
        }
    }

    /// The next delta, if one is due at `now`.
    pub fn take(&mut self, now: Instant) -> Option<Due> {
        match self.when() {
            When::Nothing => return None,
            When::At(t) if t > now => return None,
            _ => {}
        }
        let text = std::mem::take(&mut self.pending);
        let due = Due {
            seq: self.next_seq,
            index: self.sent_chars,
            text,
        };
        self.sent_chars += due.text.chars().count() as u64;
        self.next_seq += 1;
        self.last_sent = Some(now);
        Some(due)
    }
}

/// The running delta stream of one turn. Dropping it (or [`Deltas::finish`]) ends the
/// stream; text pushed after that is ignored.
pub struct Deltas {
    tx: mpsc::UnboundedSender<String>,
}

impl Deltas {
    /// Starts publishing `req`'s deltas to its gateway.
    pub fn start(broker: Arc<dyn Broker>, req: &TurnRequest) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        // Deltas belong to the turn's trace like its reply: the same `traceparent`, and the
        // publisher's logs in the turn's span.
        let trace = whisperfleet_shared::trace::current();
        tokio::spawn(
            publish_loop(broker, req.reply_to.clone(), req.turn_id, trace, rx)
                .instrument(tracing::Span::current()),
        );
        Self { tx }
    }

    /// Hands on a piece of the answer (never blocks).
    pub fn push(&self, piece: &str) {
        let _ = self.tx.send(piece.to_string());
    }

    /// The answer is complete: nothing more goes out (the reply carries the rest).
    pub fn finish(self) {}
}

async fn publish_loop(
    broker: Arc<dyn Broker>,
    reply_to: String,
    turn_id: uuid::Uuid,
    trace: Option<whisperfleet_shared::trace::TraceContext>,
    mut rx: mpsc::UnboundedReceiver<String>,
) {
    let mut c = Coalescer::new(DELTA_INTERVAL);
    loop {
        let due_at = c.due_at();
        tokio::select! {
            piece = rx.recv() => match piece {
                Some(p) => c.push(&p),
                // The answer is complete; the reply carries everything.
                None => return,
            },
            _ = tokio::time::sleep_until(due_at.unwrap_or_else(Instant::now)), if due_at.is_some() => {}
        }
        // Take every piece already waiting, so one delta carries them all.
        while let Ok(p) = rx.try_recv() {
            c.push(&p);
        }
        let Some(due) = c.take(Instant::now()) else {
            continue;
        };
        let delta = TurnReplyDelta {
            v: WIRE_VERSION,
            turn_id,
            seq: due.seq,
            index: due.index,
            text: due.text,
        };
        let mut msg = Message::json(topology::REPLIES_EXCHANGE, &reply_to, delta.encode());
        msg.persistent = false;
        msg.headers
            .insert(topology::HEADER_KIND.into(), topology::KIND_DELTA.into());
        if let Some(t) = &trace {
            msg = msg.with_trace(t);
        }
        match tokio::time::timeout(DELTA_PUBLISH_TIMEOUT, broker.publish(msg)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, seq = delta.seq, "delta not published"),
            Err(_) => tracing::debug!(seq = delta.seq, "delta publish timed out"),
        }
    }
}

/// The text of an answer that broke off, followed by an honest note, so it is not taken for
/// a whole answer. The note comes after the text (never before), so what was already shown
/// stays the reply's beginning.
pub fn cut_off(text: &str) -> String {
    format!("{text} …\n*(my answer was cut off here)*")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn first_visible_text_at_once_then_every_interval() {
        let mut c = Coalescer::new(Duration::from_millis(300));
        assert_eq!(c.due_at(), None);
        // Whitespace alone is not worth a message.
        c.push("  ");
        assert_eq!(c.due_at(), None);
        c.push("Hello");
        let first = c.take(Instant::now()).expect("the first word goes at once");
        assert_eq!(
            (first.seq, first.index, first.text.as_str()),
            (0, 0, "  Hello")
        );
        assert_eq!(c.due_at(), None, "nothing pending");

        c.push(" there,");
        c.push(" friend");
        let t0 = Instant::now();
        assert!(c.take(t0).is_none(), "too soon after the first");
        assert_eq!(c.due_at(), Some(t0 + Duration::from_millis(300)));
        tokio::time::advance(Duration::from_millis(300)).await;
        let second = c.take(Instant::now()).unwrap();
        assert_eq!(
            (second.seq, second.index, second.text.as_str()),
            (1, 7, " there, friend")
        );
        // Indexes count characters, not bytes.
        c.push("ünï");
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(c.take(Instant::now()).unwrap().index, 21);
        c.push("x");
        tokio::time::advance(Duration::from_millis(300)).await;
        assert_eq!(c.take(Instant::now()).unwrap().index, 24);
    }

    #[tokio::test(start_paused = true)]
    async fn deltas_concatenate_to_the_text() {
        let mut c = Coalescer::new(Duration::from_millis(300));
        let words: Vec<String> = (0..100).map(|i| format!("w{i} ")).collect();
        let mut out = Vec::new();
        for w in &words {
            c.push(w);
            if let Some(d) = c.take(Instant::now()) {
                out.push(d);
            }
            tokio::time::advance(Duration::from_millis(25)).await;
        }
        // 100 words at 40/s is 2.5 s: the first delta, then one per 300 ms.
        assert!((8..=10).contains(&out.len()), "{}", out.len());
        let mut shown = 0u64;
        let mut text = String::new();
        for d in &out {
            assert_eq!(d.index, shown);
            shown += d.text.chars().count() as u64;
            text.push_str(&d.text);
        }
        tokio::time::advance(Duration::from_millis(300)).await;
        if let Some(d) = c.take(Instant::now()) {
            text.push_str(&d.text);
        }
        assert_eq!(text, words.concat());
    }
}
