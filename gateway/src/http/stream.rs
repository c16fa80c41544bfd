//! `POST /v1/turns` as server-sent events (`"stream": true` in the body, or `Accept:
//! text/event-stream`): the reply's text as it is written, then the reply.
//!
//! Events, each `data` one JSON object:
//! - `delta` — `{"index": n, "text": "…"}`: new text, `index` the character offset where
//!   it starts in the reply (the deltas concatenate to the start of the final text);
//! - `done` — the reply exactly as the non-streaming API returns it (with `timings`,
//!   `first_visible` among them), once, last;
//! - `error` — `{"error": code, "message": …, "status": n}` with the code and status the
//!   non-streaming API would have answered (a refused turn, a timeout, an unknown
//!   character, a turn the fleet gave up), once, last.
//!
//! The response is 200 with `text/event-stream` as soon as the turn is accepted for
//! reading; errors found later can only travel as an event. The submit runs inside the
//! response body, so a client that disconnects cancels it like a non-streaming client
//! that goes away: the turn is given up, and what it did not see is not kept as said.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::json;
use tokio::sync::mpsc;

use super::{reply_body, submit_error};
use crate::gateway::{GatewayCore, Pending, SubmitError, TurnInput};

/// Whether the client asked for an event stream in `Accept`.
pub fn accepts_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|m| {
            m.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("text/event-stream"))
        })
}

type Submit = Pin<Box<dyn Future<Output = Result<Pending, SubmitError>> + Send>>;

enum State {
    Waiting {
        core: Arc<GatewayCore>,
        submit: Submit,
        text: mpsc::UnboundedReceiver<String>,
        shown: u64,
        first_visible: Option<Instant>,
    },
    Over,
}

/// The SSE response for one turn.
pub fn respond(core: Arc<GatewayCore>, input: TurnInput) -> Response {
    let (tx, rx) = mpsc::unbounded_channel();
    let submitter = core.clone();
    let submit: Submit = Box::pin(async move { submitter.submit_streaming(input, tx).await });
    let state = State::Waiting {
        core,
        submit,
        text: rx,
        shown: 0,
        first_visible: None,
    };
    let body = futures::stream::unfold(state, |state| async move {
        let State::Waiting {
            core,
            mut submit,
            mut text,
            mut shown,
            mut first_visible,
        } = state
        else {
            return None;
        };
        tokio::select! {
            biased;
            Some(piece) = text.recv() => {
                let frame = delta(&mut shown, &piece);
                // Handed to the connection now: the user's first words.
                first_visible.get_or_insert_with(Instant::now);
                Some((Ok::<_, std::convert::Infallible>(frame), State::Waiting { core, submit, text, shown, first_visible }))
            }
            result = &mut submit => {
                let mut frame = Vec::new();
                // Text that arrived with the reply still goes out first, in order.
                while let Ok(piece) = text.try_recv() {
                    frame.extend_from_slice(&delta(&mut shown, &piece));
                    first_visible.get_or_insert_with(Instant::now);
                }
                frame.extend_from_slice(&last(&core, result, first_visible));
                Some((Ok(Bytes::from(frame)), State::Over))
            }
        }
    });
    let mut resp = Response::new(Body::from_stream(body));
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // Proxies that buffer (nginx) would hold the first words back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    resp
}

fn event(name: &str, data: &serde_json::Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

fn delta(shown: &mut u64, piece: &str) -> Bytes {
    let frame = event("delta", &json!({ "index": *shown, "text": piece }));
    *shown += piece.chars().count() as u64;
    frame
}

/// The `done` or `error` event that ends the stream.
fn last(
    core: &GatewayCore,
    result: Result<Pending, SubmitError>,
    first_visible: Option<Instant>,
) -> Bytes {
    let mut pending = match result {
        Ok(p) => p,
        Err(e) => {
            let (status, code) = submit_error(&e);
            return event(
                "error",
                &json!({ "error": code, "message": e.to_string(), "status": status.as_u16() }),
            );
        }
    };
    pending.first_visible = first_visible;
    let timings = core.complete(&pending);
    core.publish_delivery_metrics(&pending, &timings);
    let (status, mut out) = reply_body(&pending.reply, &timings);
    if status == StatusCode::OK {
        return event("done", &out);
    }
    out["status"] = json!(status.as_u16());
    if out.get("error").is_none() {
        out["error"] = json!(pending.reply.reason.as_deref().unwrap_or("turn_failed"));
        out["message"] = json!(pending.reply.text);
    }
    event("error", &out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_header_forms() {
        let h = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT, HeaderValue::from_str(v).unwrap());
            accepts_event_stream(&m)
        };
        assert!(h("text/event-stream"));
        assert!(h("application/json, Text/Event-Stream;q=0.9"));
        assert!(!h("application/json"));
        assert!(!h("*/*"));
        assert!(!accepts_event_stream(&HeaderMap::new()));
    }
}
