//! An incremental reader of server-sent events (the WHATWG `text/event-stream` format), as
//! OpenAI-compatible servers stream completions and as the gateway's HTTP API streams
//! replies: bytes go in as they arrive, whole events come out.
//!
//! What it keeps from the format: lines end in `\n`, `\r\n` or `\r`; a blank line ends an
//! event; `data:` lines of one event are joined with `\n`; `event:` names it; a line
//! starting with `:` is a comment (servers send them as keep-alives) and is skipped; one
//! space after the colon is dropped; unknown fields are ignored. An event without data is
//! not dispatched, as the format says. Bytes are buffered until their line is complete, so
//! a UTF-8 character split across network chunks is never cut.

/// One dispatched event.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SseEvent {
    /// The `event:` field; empty when the server named none (the format's "message").
    pub event: String,
    pub data: String,
}

/// Feeds on bytes, yields events.
#[derive(Debug, Default)]
pub struct SseParser {
    buf: Vec<u8>,
    event: String,
    data: Vec<String>,
    /// A `\r` ended the last line: a `\n` right after it belongs to the same line end.
    after_cr: bool,
    /// Comment lines seen (keep-alives), for tests and logs.
    pub comments: u64,
}

/// A line longer than this without an end is refused: a server that never ends a line must
/// not grow our memory without bound.
pub const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// Why the stream cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SseError {
    #[error("an event-stream line is longer than {MAX_LINE_BYTES} bytes")]
    LineTooLong,
}

impl SseParser {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds bytes; returns the events they completed, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<SseEvent>, SseError> {
        let mut events = Vec::new();
        for &b in bytes {
            if self.after_cr {
                self.after_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' => self.line(&mut events),
                b'\r' => {
                    self.after_cr = true;
                    self.line(&mut events);
                }
                _ => {
                    if self.buf.len() >= MAX_LINE_BYTES {
                        return Err(SseError::LineTooLong);
                    }
                    self.buf.push(b);
                }
            }
        }
        Ok(events)
    }

    /// The event the stream ended in the middle of, if it had data (a server that closes
    /// without the final blank line).
    pub fn finish(&mut self) -> Option<SseEvent> {
        if !self.buf.is_empty() {
            let mut events = Vec::new();
            self.line(&mut events);
        }
        self.dispatch()
    }

    fn line(&mut self, events: &mut Vec<SseEvent>) {
        let line = String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned();
        if line.is_empty() {
            events.extend(self.dispatch());
            return;
        }
        if line.starts_with(':') {
            self.comments += 1;
            return;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line.as_str(), ""),
        };
        match field {
            "data" => self.data.push(value.to_string()),
            "event" => self.event = value.to_string(),
            // `id`, `retry` and anything else: not needed by our readers.
            _ => {}
        }
    }

    fn dispatch(&mut self) -> Option<SseEvent> {
        let event = std::mem::take(&mut self.event);
        if self.data.is_empty() {
            return None;
        }
        Some(SseEvent {
            event,
            data: std::mem::take(&mut self.data).join("\n"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &[&[u8]]) -> (Vec<SseEvent>, SseParser) {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for chunk in input {
            out.extend(p.feed(chunk).unwrap());
        }
        (out, p)
    }

    fn data(d: &str) -> SseEvent {
        SseEvent {
            event: String::new(),
            data: d.into(),
        }
    }

    #[test]
    fn openai_stream_with_keepalives() {
        let (events, p) = all(&[
            b": OPENROUTER PROCESSING\n\n",
            b"data: {\"a\":1}\n\n",
            b": keep-alive\n\ndata: [DONE]\n\n",
        ]);
        assert_eq!(events, vec![data("{\"a\":1}"), data("[DONE]")]);
        assert_eq!(p.comments, 2);
    }

    #[test]
    fn events_split_anywhere_come_out_whole() {
        let text = "data: {\"content\":\"héllo wörld\"}\n\nevent: done\ndata: x\n\n";
        let bytes = text.as_bytes();
        for cut in 0..bytes.len() {
            let (events, _) = all(&[&bytes[..cut], &bytes[cut..]]);
            assert_eq!(
                events,
                vec![
                    data("{\"content\":\"héllo wörld\"}"),
                    SseEvent {
                        event: "done".into(),
                        data: "x".into()
                    }
                ],
                "cut at {cut}"
            );
        }
        // Byte by byte too.
        let chunks: Vec<&[u8]> = bytes.chunks(1).collect();
        assert_eq!(all(&chunks).0.len(), 2);
    }

    #[test]
    fn crlf_cr_multiline_and_no_space() {
        let (events, _) = all(&[b"data:a\r\ndata: b\r\n\r\ndata: c\r\rdata: d\n\n"]);
        assert_eq!(events, vec![data("a\nb"), data("c"), data("d")]);
    }

    #[test]
    fn fields_without_data_dispatch_nothing() {
        let (events, _) = all(&[b"event: ping\n\nid: 3\nretry: 10\n\n"]);
        assert!(events.is_empty());
    }

    #[test]
    fn an_unterminated_last_event_is_recovered_by_finish() {
        let mut p = SseParser::new();
        assert!(p.feed(b"data: tail").unwrap().is_empty());
        assert_eq!(p.finish(), Some(data("tail")));
        assert_eq!(p.finish(), None);
    }

    #[test]
    fn endless_lines_are_refused() {
        let mut p = SseParser::new();
        let big = vec![b'x'; MAX_LINE_BYTES];
        assert!(p.feed(&big).is_ok());
        assert_eq!(p.feed(b"x"), Err(SseError::LineTooLong));
    }
}
