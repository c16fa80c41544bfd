//! The mock LLM's streamed answers: OpenAI's `chat.completion.chunk` server-sent events,
//! paced like a model writing ([`Pacing`]: time to first token, tokens per second), with a
//! keep-alive comment first (as OpenRouter sends while a model warms up), usage in the last
//! chunk when asked, `data: [DONE]` at the end — or, in the breaking mode, a connection cut
//! in the middle of the answer.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;
use futures::StreamExt;
use serde_json::{Value, json};

/// How long a break waits after the last token it follows (see `break_after_tokens`).
const BREAK_AFTER_FLUSH: Duration = Duration::from_millis(50);

/// How a model would write the answer. A token here is a word with the space after it.
#[derive(Debug, Clone, Default)]
pub struct Pacing {
    /// Request received (after `latency`) → first token.
    pub ttft: Duration,
    /// Tokens written per second after the first; `None`: all at once (a streamed answer
    /// then comes in four pieces).
    pub tokens_per_s: Option<f64>,
    /// Breaking mode: a streamed answer stops after this many tokens and the connection is
    /// cut (no `finish_reason`, no `[DONE]`). 0 breaks before any text.
    pub break_after_tokens: Option<usize>,
}

impl Pacing {
    /// The wait between two tokens.
    fn gap(&self) -> Duration {
        match self.tokens_per_s {
            Some(tps) if tps > 0.0 => Duration::from_secs_f64(1.0 / tps),
            _ => Duration::ZERO,
        }
    }

    /// How long the model takes to write all of `text`: what a non-streamed answer waits.
    pub fn whole_answer(&self, text: &str) -> Duration {
        let tokens = tokens(text).len().max(1) as u32;
        self.ttft + self.gap() * (tokens - 1)
    }
}

/// `text` as tokens (words with their following space); they concatenate back to `text`.
pub(super) fn tokens(text: &str) -> Vec<&str> {
    text.split_inclusive(' ').collect()
}

#[derive(Clone, Copy)]
pub(super) struct Usage {
    pub(super) prompt: u64,
    pub(super) completion: u64,
}

impl Usage {
    pub(super) fn json(self) -> Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
        })
    }
}

/// One frame of the body and the wait before it.
type Frame = (Duration, Result<Bytes, std::io::Error>);

/// SSE in OpenAI's streaming shape: a role chunk, the content chunks, a `finish_reason`
/// chunk, optionally a usage chunk (`stream_options.include_usage`), then `[DONE]`.
pub(super) fn sse_response(
    pacing: &Pacing,
    id: &str,
    created: u64,
    model: &str,
    text: &str,
    usage: Option<Usage>,
) -> Response {
    let chunk = |delta: Value, finish: Value| {
        json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": null,
            "choices": [{ "index": 0, "delta": delta, "logprobs": null, "finish_reason": finish }],
        })
    };
    let data = |v: Value| Ok(Bytes::from(format!("data: {v}\n\n")));
    let mut frames: Vec<Frame> = vec![
        (Duration::ZERO, Ok(Bytes::from_static(b": keep-alive\n\n"))),
        (
            Duration::ZERO,
            data(chunk(
                json!({ "role": "assistant", "content": "" }),
                Value::Null,
            )),
        ),
    ];
    let pieces: Vec<String> = if pacing.tokens_per_s.is_some() {
        tokens(text).into_iter().map(str::to_owned).collect()
    } else {
        split_pieces(text, 4)
    };
    for (i, piece) in pieces.into_iter().enumerate() {
        if pacing.break_after_tokens == Some(i) {
            // The break waits long enough for the tokens before it to leave: the server drops
            // the connection on the error, and with it whatever it had not flushed yet, so a
            // break one fast gap later would sometimes take the last token with it.
            frames.push((
                if i == 0 {
                    pacing.ttft
                } else {
                    pacing.gap().max(BREAK_AFTER_FLUSH)
                },
                Err(std::io::Error::other("mock LLM: stream broken on purpose")),
            ));
            return response(frames);
        }
        let wait = if i == 0 { pacing.ttft } else { pacing.gap() };
        frames.push((wait, data(chunk(json!({ "content": piece }), Value::Null))));
    }
    if let Some(n) = pacing.break_after_tokens {
        // Fewer tokens than the break point: break where the answer would finish.
        frames.push((
            if n == 0 {
                pacing.ttft
            } else {
                BREAK_AFTER_FLUSH
            },
            Err(std::io::Error::other("mock LLM: stream broken on purpose")),
        ));
        return response(frames);
    }
    frames.push((Duration::ZERO, data(chunk(json!({}), json!("stop")))));
    if let Some(usage) = usage {
        frames.push((
            Duration::ZERO,
            data(json!({
                "id": id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
                "system_fingerprint": null,
                "choices": [],
                "usage": usage.json(),
            })),
        ));
    }
    frames.push((Duration::ZERO, Ok(Bytes::from_static(b"data: [DONE]\n\n"))));
    response(frames)
}

/// The frames as a body, each after its wait; an `Err` frame cuts the connection. Waits
/// add up from the start (each frame at its own time, not after the previous sleep ended),
/// so timer granularity does not stretch a long answer beyond its pace.
fn response(frames: Vec<Frame>) -> Response {
    let start = tokio::time::Instant::now();
    let mut at = Duration::ZERO;
    let timed: Vec<_> = frames
        .into_iter()
        .map(|(wait, frame)| {
            at += wait;
            (at, frame)
        })
        .collect();
    let body = futures::stream::iter(timed).then(move |(at, frame)| async move {
        tokio::time::sleep_until(start + at).await;
        frame
    });
    let mut resp = Response::new(Body::from_stream(body));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// Splits `text` into at most `n` pieces at word boundaries; the pieces concatenate back to
/// `text` exactly.
fn split_pieces(text: &str, n: usize) -> Vec<String> {
    let words = tokens(text);
    if words.is_empty() {
        return Vec::new();
    }
    let per_piece = words.len().div_ceil(n);
    words.chunks(per_piece).map(|c| c.concat()).collect()
}

#[cfg(test)]
mod tests {
    use super::super::{MockLlmOptions, MockReply, spawn};
    use super::*;

    fn http() -> reqwest::Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        reqwest::Client::new()
    }

    fn chat_body(stream: bool) -> Value {
        json!({
            "stream": stream,
            "messages": [{ "role": "user", "content": "hi" }],
        })
    }

    #[tokio::test]
    async fn paced_stream_arrives_over_time_and_breaking_mode_cuts_it() {
        let mock = spawn(MockLlmOptions {
            reply: MockReply::Fixed("a b c d e f".into()),
            pacing: Pacing {
                ttft: Duration::from_millis(200),
                tokens_per_s: Some(20.0),
                break_after_tokens: None,
            },
            ..Default::default()
        })
        .await
        .unwrap();
        let started = std::time::Instant::now();
        let mut resp = http()
            .post(format!("{}/v1/chat/completions", mock.base_url()))
            .json(&chat_body(true))
            .send()
            .await
            .unwrap();
        let mut raw = String::new();
        let mut first_text_at = None;
        while let Some(chunk) = resp.chunk().await.unwrap() {
            raw.push_str(std::str::from_utf8(&chunk).unwrap());
            if first_text_at.is_none() && raw.contains("\"content\":\"a ") {
                first_text_at = Some(started.elapsed());
            }
        }
        let done = started.elapsed();
        let first = first_text_at.expect("text came");
        assert!(first >= Duration::from_millis(200), "{first:?}");
        // Five gaps of 50 ms after the first token, each at its time from the start.
        assert!(done >= Duration::from_millis(450), "{first:?} {done:?}");
        assert!(raw.starts_with(": keep-alive"));
        assert!(raw.ends_with("data: [DONE]\n\n"));

        // Breaking mode: two tokens, then the connection is cut without [DONE].
        let mock = spawn(MockLlmOptions {
            reply: MockReply::Fixed("a b c d e f".into()),
            pacing: Pacing {
                ttft: Duration::from_millis(20),
                tokens_per_s: Some(100.0),
                break_after_tokens: Some(2),
            },
            ..Default::default()
        })
        .await
        .unwrap();
        let mut resp = http()
            .post(format!("{}/v1/chat/completions", mock.base_url()))
            .json(&chat_body(true))
            .send()
            .await
            .unwrap();
        let mut raw = String::new();
        let broke = loop {
            match resp.chunk().await {
                Ok(Some(c)) => raw.push_str(std::str::from_utf8(&c).unwrap()),
                Ok(None) => break false,
                Err(_) => break true,
            }
        };
        assert!(broke, "the body ends in an error, not cleanly: {raw}");
        assert!(!raw.contains("[DONE]"));
        assert!(raw.contains("\"content\":\"a \""), "{raw}");
        assert!(!raw.contains("\"content\":\"c \""), "{raw}");
    }

    #[tokio::test]
    async fn non_streamed_answer_waits_for_the_whole_answer() {
        let mock = spawn(MockLlmOptions {
            reply: MockReply::Fixed("a b c d e".into()),
            pacing: Pacing {
                ttft: Duration::from_millis(100),
                tokens_per_s: Some(20.0),
                break_after_tokens: None,
            },
            ..Default::default()
        })
        .await
        .unwrap();
        let started = std::time::Instant::now();
        let resp = http()
            .post(format!("{}/v1/chat/completions", mock.base_url()))
            .json(&chat_body(false))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }

    #[test]
    fn pieces_concatenate_back() {
        for text in [
            "",
            "single",
            "a b",
            "one two three four five six seven eight nine",
        ] {
            let pieces = split_pieces(text, 4);
            assert!(pieces.len() <= 4);
            assert_eq!(pieces.concat(), text);
        }
    }

    #[test]
    fn whole_answer_takes_the_model_time() {
        let p = Pacing {
            ttft: Duration::from_millis(500),
            tokens_per_s: Some(40.0),
            break_after_tokens: None,
        };
        let text = "w ".repeat(300);
        assert_eq!(p.whole_answer(&text), Duration::from_millis(500 + 299 * 25));
        assert_eq!(Pacing::default().whole_answer(&text), Duration::ZERO);
    }
}
