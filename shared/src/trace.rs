//! One trace per turn across processes: the W3C trace context (`traceparent`, version 00)
//! the gateway creates for each platform event, carried in the AMQP header
//! [`crate::topology::HEADER_TRACEPARENT`] of the turn and of every message published for
//! it (reply, metric events). A process that receives it continues the trace with a child
//! span id; its logs for the turn carry `turn_id` and `trace_id` as span fields.
//!
//! While a turn runs, its context is the task's current one ([`scope`]), so code that
//! publishes for the turn ([`crate::ports::broker::Message::traced`]) needs no parameter
//! threaded through every stage.

use std::fmt;
use std::future::Future;

/// A trace id and the id of the span that is current in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceContext {
    trace_id: [u8; 16],
    span_id: [u8; 8],
    sampled: bool,
}

tokio::task_local! {
    static CURRENT: TraceContext;
}

impl TraceContext {
    /// A new trace (random ids, sampled): one per platform event.
    pub fn new_root() -> Self {
        Self {
            trace_id: nonzero(),
            span_id: nonzero(),
            sampled: true,
        }
    }

    /// The same trace, a new span of this process whose parent is `self`.
    pub fn child(&self) -> Self {
        Self {
            span_id: nonzero(),
            ..*self
        }
    }

    /// Reads a `traceparent` header: version 00 (and, as the spec asks, later versions by
    /// their first four fields), ids in lower-case hex, not all zero. `None` when it is not
    /// one: the receiver then starts a trace of its own.
    pub fn parse(header: &str) -> Option<Self> {
        let mut parts = header.trim().split('-');
        let version = parts.next()?;
        let trace = parts.next()?;
        let span = parts.next()?;
        let flags = parts.next()?;
        if version.len() != 2 || version == "ff" || !is_hex(version) {
            return None;
        }
        if version == "00" && parts.next().is_some() {
            return None;
        }
        let trace_id: [u8; 16] = hex_bytes(trace)?;
        let span_id: [u8; 8] = hex_bytes(span)?;
        let [flags]: [u8; 1] = hex_bytes(flags)?;
        if trace_id == [0; 16] || span_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            span_id,
            sampled: flags & 1 == 1,
        })
    }

    /// `00-<trace id>-<span id>-<flags>`, with this span as the receiver's parent.
    pub fn header(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.span_id),
            u8::from(self.sampled)
        )
    }

    /// 32 lower-case hex digits: what logs carry as `trace_id`.
    pub fn trace_id(&self) -> String {
        hex(&self.trace_id)
    }

    /// 16 lower-case hex digits.
    pub fn span_id(&self) -> String {
        hex(&self.span_id)
    }

    pub fn trace_id_bytes(&self) -> [u8; 16] {
        self.trace_id
    }

    pub fn span_id_bytes(&self) -> [u8; 8] {
        self.span_id
    }

    pub fn sampled(&self) -> bool {
        self.sampled
    }
}

impl fmt::Display for TraceContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.header())
    }
}

/// Attaches `span` (a turn's span in this process) to the trace `parent` belongs to, as
/// a child of the span it names, for the OTLP export (feature `otlp`; nothing otherwise).
pub fn link(span: &tracing::Span, parent: &TraceContext) {
    #[cfg(feature = "otlp")]
    crate::telemetry::otlp::link(span, parent);
    #[cfg(not(feature = "otlp"))]
    let _ = (span, parent);
}

/// Runs `fut` with `ctx` as the current trace context of its task.
pub async fn scope<F: Future>(ctx: TraceContext, fut: F) -> F::Output {
    CURRENT.scope(ctx, fut).await
}

/// The current task's trace context, if it runs within [`scope`].
pub fn current() -> Option<TraceContext> {
    CURRENT.try_with(|c| *c).ok()
}

fn nonzero<const N: usize>() -> [u8; N] {
    loop {
        let b: [u8; N] = rand::random();
        if b != [0; N] {
            return b;
        }
    }
}

fn is_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !is_hex(s) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_root_round_trips_and_a_child_keeps_the_trace() {
        let root = TraceContext::new_root();
        let h = root.header();
        assert_eq!(h.len(), 55, "{h}");
        assert!(h.starts_with("00-") && h.ends_with("-01"), "{h}");
        assert_eq!(TraceContext::parse(&h), Some(root));
        let child = root.child();
        assert_eq!(child.trace_id(), root.trace_id());
        assert_ne!(child.span_id(), root.span_id());
        assert_ne!(TraceContext::new_root().trace_id(), root.trace_id());
    }

    #[test]
    fn the_spec_examples_parse_and_bad_ones_do_not() {
        let ok = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let c = TraceContext::parse(ok).unwrap();
        assert_eq!(c.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(c.span_id(), "00f067aa0ba902b7");
        assert!(c.sampled());
        assert!(
            !TraceContext::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00")
                .unwrap()
                .sampled()
        );
        // A later version may add fields; its first four still read.
        assert!(TraceContext::parse(&format!("01{}-extra", &ok[2..])).is_some());
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert_eq!(TraceContext::parse(bad), None, "{bad:?}");
        }
    }

    #[tokio::test]
    async fn the_current_context_is_the_scopes() {
        assert_eq!(current(), None);
        let c = TraceContext::new_root();
        assert_eq!(scope(c, async { current() }).await, Some(c));
    }
}
