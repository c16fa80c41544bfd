//! A reply shown as it is written: the first words are posted as a reply to the user's
//! message as soon as they arrive, and the message is edited as the text grows.
//!
//! **What is shown** is always the text so far cut by the same rules as a whole reply
//! ([`chunk`]: at most 2,000 characters a message, at a paragraph, line, sentence or word
//! boundary, code fences closed and reopened): when the text passes the limit, the message
//! is closed at a boundary and the text continues in a new one. Every post and edit carries
//! the same `allowed_mentions` as any send ([`safe_mentions`](super::delivery::safe_mentions)),
//! so streamed text pings nobody but the user answered.
//!
//! **Pace.** At most one edit per message per [`EDIT_EVERY`]: text arriving sooner waits for
//! the next delta or the end. With the real API serenity's rate limiter keeps every request
//! within Discord's `X-RateLimit-*` buckets besides; a 429 or any other refusal of an edit
//! stops the editing of this reply.
//!
//! **The end.** The final reply is authoritative: the messages are brought to exactly its
//! chunks with the footer (waiting out each message's edit interval), new ones posted and
//! surplus ones deleted — so a redelivered turn whose text differs from what was streamed
//! is corrected, not shown twice. If edits were refused, what the messages already show is
//! matched against the start of the reply and only the rest is sent, as new messages:
//! nothing is lost and nothing shown twice.

use std::time::{Duration, Instant};

use serenity::all::{Context, EditMessage, MessageId};

use super::client::Bot;
use super::delivery::{Failure, ReplyTarget, SendKind, build_message, classify, safe_mentions};
use super::text::{DISCORD_MESSAGE_LIMIT, chunk, chunk_with_footer, render_footer};
use crate::gateway::Pending;

/// The least time between two edits of one message.
pub const EDIT_EVERY: Duration = Duration::from_secs(1);

struct Posted {
    id: MessageId,
    content: String,
    /// Posted or last edited: the next edit waits until [`EDIT_EVERY`] after this.
    touched: Instant,
}

/// The messages of one reply being streamed.
pub(super) struct Streamed {
    target: ReplyTarget,
    text: String,
    posted: Vec<Posted>,
    edits_refused: bool,
    /// A post failed: nothing more is tried until the reply decides.
    stalled: bool,
    /// When the first words were posted.
    pub(super) first_visible: Option<Instant>,
}

impl Streamed {
    pub(super) fn new(target: ReplyTarget) -> Self {
        Self {
            target,
            text: String::new(),
            posted: Vec::new(),
            edits_refused: false,
            stalled: false,
            first_visible: None,
        }
    }

    /// Whether any text was shown.
    pub(super) fn shown(&self) -> bool {
        !self.posted.is_empty()
    }

    /// How far into `text` the messages already match it (for sending only the rest).
    fn covered(&self, text: &str) -> usize {
        let mut pos = 0;
        for p in &self.posted {
            let rest = text[pos..].trim_start();
            if !rest.starts_with(p.content.as_str()) {
                break;
            }
            pos = text.len() - rest.len() + p.content.len();
        }
        pos
    }
}

impl Bot {
    /// New text of the reply: shown now if its message may be posted or edited now.
    pub(super) async fn stream_piece(&self, ctx: &Context, s: &mut Streamed, piece: &str) {
        s.text.push_str(piece);
        if s.stalled || s.edits_refused && s.shown() {
            return;
        }
        let desired = chunk(&s.text, DISCORD_MESSAGE_LIMIT);
        let _ = self.show(ctx, s, &desired, false).await;
    }

    /// Brings the messages to `desired`, in order: edits where the content differs (waiting
    /// for the edit interval when `wait`, else leaving it for later), posts what is missing.
    async fn show(
        &self,
        ctx: &Context,
        s: &mut Streamed,
        desired: &[String],
        wait: bool,
    ) -> Result<(), Failure> {
        for (i, want) in desired.iter().enumerate() {
            if let Some(p) = s.posted.get(i) {
                if p.content == *want || s.edits_refused {
                    continue;
                }
                let ready = p.touched + EDIT_EVERY;
                if Instant::now() < ready {
                    if !wait {
                        continue;
                    }
                    tokio::time::sleep_until(ready.into()).await;
                }
                let edit = EditMessage::new()
                    .content(want.as_str())
                    .allowed_mentions(safe_mentions(s.target.author));
                match s.target.channel.edit_message(ctx, p.id, edit).await {
                    Ok(_) => {
                        let p = &mut s.posted[i];
                        p.content = want.clone();
                        p.touched = Instant::now();
                    }
                    Err(e) => {
                        let failure = classify(&e);
                        if failure == Failure::Unauthorized {
                            self.reject_token("editing a message");
                        }
                        tracing::warn!(character = %self.character, error = %e, ?failure, "edit refused; the rest of this reply goes out as new messages");
                        s.edits_refused = true;
                    }
                }
            } else {
                let message = build_message(want, &s.target, SendKind::Reply, i);
                match self.send_one(ctx, s.target.channel, message).await {
                    Ok(sent) => {
                        s.posted.push(Posted {
                            id: sent.id,
                            content: want.clone(),
                            touched: Instant::now(),
                        });
                        s.first_visible.get_or_insert_with(Instant::now);
                    }
                    Err(f) => {
                        s.stalled = true;
                        return Err(f);
                    }
                }
            }
        }
        Ok(())
    }

    /// The reply arrived: the messages become exactly its text with the footer.
    pub(super) async fn finish_streamed(
        &self,
        ctx: &Context,
        mut s: Streamed,
        mut pending: Pending,
    ) {
        pending.first_visible = s.first_visible;
        let shown = self.core.complete(&pending);
        let footer = render_footer(self.shared.settings.footer, &shown);
        let text = &pending.reply.text;
        let desired = chunk_with_footer(text, footer.as_deref(), DISCORD_MESSAGE_LIMIT);
        let mut result = Ok(());
        if !s.edits_refused {
            s.stalled = false;
            result = self.show(ctx, &mut s, &desired, true).await;
            if !s.edits_refused {
                // A shorter final text (a corrected redelivery) leaves no stale message.
                for extra in s.posted.drain(desired.len()..).collect::<Vec<_>>() {
                    if let Err(e) = s.target.channel.delete_message(ctx, extra.id).await {
                        tracing::warn!(error = %e, "surplus streamed message not deleted");
                    }
                }
            }
        }
        if s.edits_refused && result.is_ok() {
            // Only what the messages do not show yet, as new messages.
            let rest = text[s.covered(text)..].trim();
            if !rest.is_empty() {
                let start = s.posted.len();
                for (n, piece) in chunk_with_footer(rest, footer.as_deref(), DISCORD_MESSAGE_LIMIT)
                    .iter()
                    .enumerate()
                {
                    let message = build_message(piece, &s.target, SendKind::Reply, start + n);
                    if let Err(f) = self.send_one(ctx, s.target.channel, message).await {
                        result = Err(f);
                        break;
                    }
                }
            }
        }
        match result {
            Ok(()) => {
                let timings = self.core.complete(&pending);
                self.core.publish_delivery_metrics(&pending, &timings);
                tracing::info!(
                    character = %self.character,
                    turn_id = %pending.reply.turn_id,
                    outcome = pending.reply.outcome.as_str(),
                    "streamed reply delivered"
                );
            }
            Err(failure) => tracing::warn!(
                character = %self.character,
                turn_id = %pending.reply.turn_id,
                ?failure,
                "streamed reply not delivered"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use serenity::all::{ChannelId, UserId};

    use super::*;

    #[test]
    fn covered_matches_what_the_messages_show() {
        let mut s = Streamed::new(ReplyTarget {
            channel: ChannelId::new(1),
            guild: None,
            message: MessageId::new(2),
            author: UserId::new(3),
        });
        let posted = |c: &str| Posted {
            id: MessageId::new(9),
            content: c.into(),
            touched: Instant::now(),
        };
        let text = "Hello there friend.\n\nSecond part goes on.";
        assert_eq!(s.covered(text), 0);
        s.posted.push(posted("Hello there friend."));
        assert_eq!(&text[s.covered(text)..], "\n\nSecond part goes on.");
        s.posted.push(posted("Second part"));
        assert_eq!(&text[s.covered(text)..], " goes on.");
        // A message that does not match the reply covers nothing after it.
        s.posted.push(posted("zzz"));
        assert_eq!(&text[s.covered(text)..], " goes on.");
    }
}
