//! Streamed replies end to end, through the real `gateway` and `worker` binaries against
//! RabbitMQ, Redis and PostgreSQL, with the mock LLM writing at a model's pace: text is
//! visible before the LLM finished, the final reply stays authoritative, a stream broken
//! mid-way ends as one honest partial reply.

use std::time::Duration;

use serde_json::{Value, json};
use whisperfleet_shared::sse::{SseEvent, SseParser};
use whisperfleet_shared::topology;
use whisperfleet_shared::wire::{TurnReply, TurnReplyDelta};
use whisperfleet_testkit::mock_llm::{MockLlmOptions, MockReply, Pacing};
use whisperfleet_testkit::tap::{MessageTap, ReplyTap};
use whisperfleet_testkit::*;

/// `n` distinct words, so every piece of the answer is told apart.
fn words(n: usize) -> String {
    (0..n)
        .map(|i| format!("word{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn paced(reply: String, break_after_tokens: Option<usize>) -> MockLlmOptions {
    MockLlmOptions {
        reply: MockReply::Fixed(reply),
        pacing: Pacing {
            ttft: Duration::from_millis(100),
            tokens_per_s: Some(40.0),
            break_after_tokens,
        },
        ..Default::default()
    }
}

/// What an SSE response brought: the events in order, and how many events had arrived
/// when each network chunk was read (to tell "before the end" from "with the end").
struct Streamed {
    events: Vec<SseEvent>,
    /// Events seen when the first `delta` was read, and whether `done` was among them.
    first_delta_with_done: Option<bool>,
}

async fn stream_turn(base: &str, body: Value, accept_header: bool) -> Streamed {
    let client = reqwest::Client::new();
    let mut req = client.post(format!("{base}/v1/turns")).json(&body);
    if accept_header {
        req = req.header("accept", "text/event-stream");
    }
    let mut resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    let mut first_delta_with_done = None;
    while let Some(chunk) = resp.chunk().await.unwrap() {
        events.extend(parser.feed(&chunk).unwrap());
        if first_delta_with_done.is_none() && events.iter().any(|e| e.event == "delta") {
            first_delta_with_done = Some(events.iter().any(|e| e.event != "delta"));
        }
    }
    Streamed {
        events,
        first_delta_with_done,
    }
}

fn deltas(events: &[SseEvent]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.event == "delta")
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect()
}

/// The deltas' texts joined, checking each starts where the previous ended.
fn joined(deltas: &[Value]) -> String {
    let mut text = String::new();
    for d in deltas {
        assert_eq!(
            d["index"].as_u64().unwrap(),
            text.chars().count() as u64,
            "{d}"
        );
        text.push_str(d["text"].as_str().unwrap());
    }
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn sse_shows_text_before_the_llm_finished_and_ends_with_the_reply() {
    let answer = words(40);
    let mut s = setup("stream_sse", paced(answer.clone(), None)).await;
    s.fleet.spawn("worker", "worker", &[]).unwrap();
    let gateway_id = s.fleet.env["WHISPERFLEET_GATEWAY_ID"].clone();
    let tap = ReplyTap::bind(&s.fleet.amqp_url(), &gateway_id)
        .await
        .unwrap();
    // The same messages with their headers: deltas belong to the turn's trace.
    let headers = MessageTap::bind(&s.fleet.amqp_url(), topology::REPLIES_EXCHANGE, &gateway_id)
        .await
        .unwrap();
    let base = s.fleet.spawn_gateway(&[]).await.unwrap();

    for (i, accept_header) in [false, true].into_iter().enumerate() {
        let mut body =
            json!({"character": "Nora Halvorsen", "user_id": format!("sse{i}"), "text": "tell me"});
        if !accept_header {
            body["stream"] = json!(true);
        }
        let got = stream_turn(&base, body, accept_header).await;
        // The first words were read off the connection before the reply existed.
        assert_eq!(
            got.first_delta_with_done,
            Some(false),
            "the first delta came alone, before the end"
        );
        let ds = deltas(&got.events);
        assert!(ds.len() >= 2, "{} deltas", ds.len());
        let last = got.events.last().unwrap();
        assert_eq!(last.event, "done", "{:?}", got.events);
        assert_eq!(
            got.events.iter().filter(|e| e.event != "delta").count(),
            1,
            "one final event"
        );
        let done: Value = serde_json::from_str(&last.data).unwrap();
        assert_eq!(done["text"], answer);
        assert_eq!(done["outcome"], "ok");
        assert!(done.get("partial").is_none());
        let shown = joined(&ds);
        assert!(!shown.is_empty() && answer.starts_with(&shown), "{shown}");
        let t = &done["timings"];
        let first_visible = t["first_visible"].as_f64().unwrap();
        let end_to_end = t["end_to_end"].as_f64().unwrap();
        assert!(t["llm_first_token"].as_f64().is_some(), "{t}");
        assert!(first_visible < end_to_end, "{t}");

        // At the broker: one reply, and the deltas apart from it.
        let turn_id: uuid::Uuid = done["turn_id"].as_str().unwrap().parse().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(tap.count(turn_id), 1);
        assert!(tap.deltas(turn_id).len() >= ds.len());
        let of_turn: Vec<_> = headers
            .seen()
            .into_iter()
            .filter(|m| {
                TurnReply::decode(&m.body).is_ok_and(|r| r.turn_id == turn_id)
                    || TurnReplyDelta::decode(&m.body).is_ok_and(|d| d.turn_id == turn_id)
            })
            .collect();
        assert!(of_turn.len() >= 2, "the reply and its deltas tapped");
        let trace = &of_turn[0].headers[topology::HEADER_TRACEPARENT];
        for m in &of_turn {
            assert_eq!(
                &m.headers[topology::HEADER_TRACEPARENT],
                trace,
                "deltas and the reply carry the worker's traceparent: {:?}",
                m.headers
            );
        }
    }

    // Without asking for a stream the API is unchanged: one JSON body.
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/turns"))
        .json(&json!({"character": "Nora Halvorsen", "user_id": "plain", "text": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["text"], answer);
    let turn_id: uuid::Uuid = v["turn_id"].as_str().unwrap().parse().unwrap();
    assert!(tap.deltas(turn_id).is_empty(), "no deltas nobody asked for");

    // An error ends the stream as one `error` event with the plain API's code and status.
    let got = stream_turn(
        &base,
        json!({"character": "Nobody Here", "user_id": "err", "text": "hi", "stream": true}),
        false,
    )
    .await;
    assert_eq!(got.events.len(), 1, "{:?}", got.events);
    assert_eq!(got.events[0].event, "error");
    let e: Value = serde_json::from_str(&got.events[0].data).unwrap();
    assert_eq!(e["status"], 404, "{e}");
    assert_eq!(e["error"], "unknown_character", "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_broken_midway_ends_as_one_honest_partial_reply() {
    let answer = words(30);
    let mut s = setup("stream_broken", paced(answer.clone(), Some(8))).await;
    s.fleet.spawn("worker", "worker", &[]).unwrap();
    let gateway_id = s.fleet.env["WHISPERFLEET_GATEWAY_ID"].clone();
    let tap = ReplyTap::bind(&s.fleet.amqp_url(), &gateway_id)
        .await
        .unwrap();
    let base = s.fleet.spawn_gateway(&[]).await.unwrap();

    let got = stream_turn(
        &base,
        json!({"character": "Nora Halvorsen", "user_id": "broken", "text": "go on", "stream": true}),
        false,
    )
    .await;
    let last = got.events.last().unwrap();
    assert_eq!(last.event, "done", "{:?}", got.events);
    let done: Value = serde_json::from_str(&last.data).unwrap();
    let text = done["text"].as_str().unwrap();
    let written = words(8) + " ";
    assert!(text.starts_with(&written), "{text}");
    assert!(text.contains("cut off"), "said honestly: {text}");
    assert!(!text.contains("word8"), "nothing beyond the break: {text}");
    assert_eq!(done["partial"], true);
    assert_eq!(done["reason"], "llm_stream_interrupted");
    let shown = joined(&deltas(&got.events));
    assert!(
        text.starts_with(&shown),
        "shown {shown:?} is the start of {text:?}"
    );
    assert!(!shown.is_empty());

    let turn_id: uuid::Uuid = done["turn_id"].as_str().unwrap().parse().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(tap.count(turn_id), 1, "exactly one reply");
    assert_eq!(s.mock.stats.requests(), 1, "never a second attempt");

    // The next turn's prompt holds the partial answer as said (it was seen), not more.
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/turns"))
        .json(&json!({"character": "Nora Halvorsen", "user_id": "broken", "text": "and then?"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let prompts = recorded(&s.record);
    let prompt = prompt_text(prompts.last().unwrap());
    assert!(prompt.contains("word7"), "history has what was said");
    assert!(!prompt.contains("word8"), "and nothing the user never saw");
}

mod discord {
    //! Streaming to Discord, through the real gateway's Discord adapter and the stand-in.

    use std::time::Duration;

    use whisperfleet_gateway::discord::text::{DISCORD_MESSAGE_LIMIT, chunk};
    use whisperfleet_testkit::discord::{DiscordStandIn, Recorded, UserMessage};
    use whisperfleet_testkit::mock_llm::{MockLlmOptions, MockReply, Pacing};
    use whisperfleet_testkit::tap::ReplyTap;
    use whisperfleet_testkit::*;

    const TOKEN: &str = "vellum-bot-token";
    const BOT: u64 = 9_001;
    const ALICE: u64 = 42;
    const GUILD: u64 = 500;
    const CHANNEL: u64 = 600;

    /// A long answer: sentences with mass mentions and role pings in them.
    fn long_answer(chars: usize) -> String {
        let sentences = [
            "The tide turns slowly over the kelp. ",
            "@everyone should see the moon tonight! ",
            "Ask <@&5> and <@43> about the map, @here. ",
            "Salt and ink keep the archive honest. ",
        ];
        let mut text = String::new();
        let mut i = 0;
        while text.chars().count() < chars {
            text.push_str(sentences[i % sentences.len()]);
            i += 1;
        }
        text.trim_end().to_string()
    }

    struct Rig {
        s: Setup,
        discord: DiscordStandIn,
        tap: ReplyTap,
    }

    async fn rig(test: &str, llm: MockLlmOptions, worker: &str) -> Rig {
        let discord = DiscordStandIn::start(&[(TOKEN, BOT, "Vellum")])
            .await
            .unwrap();
        let mut s = setup(test, llm).await;
        s.fleet.spawn("worker", worker, &[]).unwrap();
        let gateway_id = s.fleet.env["WHISPERFLEET_GATEWAY_ID"].clone();
        let tap = ReplyTap::bind(&s.fleet.amqp_url(), &gateway_id)
            .await
            .unwrap();
        s.fleet
            .spawn_gateway(&[
                ("WHISPERFLEET_DISCORD_API_BASE", discord.base_url()),
                ("WHISPERFLEET_DISCORD_BOTS", format!("Vellum={TOKEN}")),
                ("WHISPERFLEET_DISCORD_RATE_TURNS", "1000".into()),
            ])
            .await
            .unwrap();
        discord
            .wait_ready(1, Duration::from_secs(20))
            .await
            .unwrap();
        Rig { s, discord, tap }
    }

    /// Asserts nobody but the user is pinged by a post or an edit.
    fn pings_only_the_user(r: &Recorded) {
        let am = &r.body["allowed_mentions"];
        assert_eq!(am["parse"], serde_json::json!([]), "{}", r.body);
        assert_eq!(
            am["users"],
            serde_json::json!([ALICE.to_string()]),
            "{}",
            r.body
        );
        assert_eq!(am["roles"], serde_json::json!([]), "{}", r.body);
        let m = &r.response;
        assert_eq!(m["mention_everyone"], false, "{m}");
        for u in m["mentions"].as_array().into_iter().flatten() {
            assert_eq!(u["id"], ALICE.to_string(), "{m}");
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_long_streamed_answer_becomes_ordered_messages_edited_at_most_once_a_second() {
        let answer = long_answer(5_000);
        let r = rig(
            "stream_discord",
            MockLlmOptions {
                reply: MockReply::Fixed(answer.clone()),
                pacing: Pacing {
                    ttft: Duration::from_millis(100),
                    tokens_per_s: Some(250.0),
                    break_after_tokens: None,
                },
                ..Default::default()
            },
            "worker",
        )
        .await;
        let asked = r.discord.user_message(
            UserMessage::guild(GUILD, CHANNEL, ALICE, "alice", "tell me everything")
                .mentioning(BOT, "Vellum"),
        );
        let bot_id = BOT.to_string();
        let expected = chunk(&answer, DISCORD_MESSAGE_LIMIT);
        assert_eq!(expected.len(), 3, "5,000 characters need three messages");
        // Done when the channel shows the whole answer.
        let shown = r
            .discord
            .wait_until(Duration::from_secs(60), || {
                let msgs: Vec<String> = r
                    .discord
                    .channel_messages(CHANNEL)
                    .iter()
                    .filter(|m| m["author"]["id"].as_str() == Some(bot_id.as_str()))
                    .map(|m| m["content"].as_str().unwrap_or_default().to_string())
                    .collect();
                (msgs == expected).then_some(msgs)
            })
            .await;
        let shown = match shown {
            Ok(s) => s,
            Err(e) => panic!(
                "{e:#}\nchannel: {:#?}\ngateway log:\n{}",
                r.discord.channel_messages(CHANNEL),
                r.s.fleet.log_of("gateway")
            ),
        };
        assert!(
            shown
                .iter()
                .all(|m| m.chars().count() <= DISCORD_MESSAGE_LIMIT)
        );

        let posts = r.discord.sent_messages(CHANNEL);
        assert_eq!(posts.len(), 3, "one post per message, nothing posted twice");
        // The first words went out before the answer was complete: the first post was
        // later edited to hold more.
        let first = posts[0].content().unwrap();
        assert!(
            first.chars().count() < expected[0].chars().count(),
            "first post was partial: {} chars",
            first.chars().count()
        );
        assert!(expected[0].starts_with(first.trim_end()), "{first}");
        // The first post replies to the user's message.
        assert_eq!(
            posts[0].body["message_reference"]["message_id"].as_str(),
            Some(asked.as_str())
        );
        let mut edits_total = 0;
        for post in &posts {
            pings_only_the_user(post);
            let id = post.message_id().unwrap();
            let edits = r.discord.edits(id);
            edits_total += edits.len();
            let mut last = post.at;
            for e in &edits {
                pings_only_the_user(e);
                // At most one edit per second per message (the stand-in's receipt times;
                // a little slack for scheduling between two requests).
                let gap = e.at.duration_since(last);
                assert!(
                    gap >= Duration::from_millis(900),
                    "{id}: edits {gap:?} apart"
                );
                last = e.at;
            }
        }
        assert!(edits_total >= 1, "the text grew by edits");

        // The final text is the reply's, and the reply was one.
        let replies = r.tap.replies();
        assert_eq!(replies.len(), 1);
        assert_eq!(replies[0].text, answer);
        assert_eq!(chunk(&replies[0].text, DISCORD_MESSAGE_LIMIT), shown);
        assert!(!r.tap.deltas(replies[0].turn_id).is_empty());
    }

    /// Bot messages in the channel now, oldest first.
    fn shown(r: &Rig) -> Vec<String> {
        let bot_id = BOT.to_string();
        r.discord
            .channel_messages(CHANNEL)
            .iter()
            .filter(|m| m["author"]["id"].as_str() == Some(bot_id.as_str()))
            .map(|m| m["content"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_worker_killed_mid_stream_yields_one_final_reply_and_no_doubled_text() {
        let answer = long_answer(600);
        let mut r = rig(
            "stream_discord_kill",
            MockLlmOptions {
                reply: MockReply::Fixed(answer.clone()),
                pacing: Pacing {
                    ttft: Duration::from_millis(100),
                    tokens_per_s: Some(20.0),
                    break_after_tokens: None,
                },
                ..Default::default()
            },
            "worker-a",
        )
        .await;
        r.discord.user_message(
            UserMessage::guild(GUILD, CHANNEL, ALICE, "alice", "tell me a story")
                .mentioning(BOT, "Vellum"),
        );
        // The first words are on screen while worker A is still streaming: kill it there.
        r.discord
            .wait_until(Duration::from_secs(30), || {
                (!shown(&r).is_empty()).then_some(())
            })
            .await
            .unwrap();
        let partial = shown(&r);
        assert!(partial[0].chars().count() < answer.chars().count());
        r.s.fleet.signal("worker-a", "KILL").unwrap();
        r.s.fleet
            .wait_exit("worker-a", Duration::from_secs(5))
            .await
            .unwrap();
        r.s.fleet.spawn("worker", "worker-b", &[]).unwrap();

        // Redelivered to worker B, answered once; the message ends as the answer, once.
        let expected = chunk(&answer, DISCORD_MESSAGE_LIMIT);
        let done = r
            .discord
            .wait_until(Duration::from_secs(60), || {
                let now = shown(&r);
                (now == expected).then_some(now)
            })
            .await;
        if done.is_err() {
            panic!(
                "channel: {:#?}\ngateway log:\n{}",
                shown(&r),
                r.s.fleet.log_of("gateway")
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(shown(&r), expected, "no doubled text");
        assert_eq!(
            r.discord.sent_messages(CHANNEL).len(),
            1,
            "one post, then edits"
        );
        let replies = r.tap.replies();
        assert_eq!(replies.len(), 1, "one final reply: {replies:?}");
        assert_eq!(replies[0].text, answer);
        assert_eq!(
            r.s.mock.stats.requests(),
            2,
            "the killed stream, then the redelivery"
        );
        for e in r.discord.all_edits() {
            pings_only_the_user(&e);
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn refused_edits_send_the_rest_as_new_messages_never_lost_never_twice() {
        let answer = long_answer(600);
        let r = rig(
            "stream_discord_refused",
            MockLlmOptions {
                reply: MockReply::Fixed(answer.clone()),
                pacing: Pacing {
                    ttft: Duration::from_millis(100),
                    tokens_per_s: Some(30.0),
                    break_after_tokens: None,
                },
                ..Default::default()
            },
            "worker",
        )
        .await;
        // Every edit is refused (no permission to edit, say).
        r.discord.refuse_next_edits(1000, 403);
        r.discord.user_message(
            UserMessage::guild(GUILD, CHANNEL, ALICE, "alice", "go on").mentioning(BOT, "Vellum"),
        );
        let words = |t: &str| t.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        let want = words(&answer);
        let done = r
            .discord
            .wait_until(Duration::from_secs(60), || {
                let now: Vec<String> = shown(&r).iter().flat_map(|m| words(m)).collect();
                (now.len() >= want.len()).then_some(now)
            })
            .await;
        let Ok(got) = done else {
            panic!(
                "channel: {:#?}\ngateway log:\n{}",
                shown(&r),
                r.s.fleet.log_of("gateway")
            );
        };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let messages = shown(&r);
        assert!(
            messages.len() >= 2,
            "the rest came as new messages: {messages:#?}"
        );
        assert_eq!(got, want, "every word once, in order");
        assert!(r.discord.all_edits().is_empty());
        for post in r.discord.sent_messages(CHANNEL) {
            pings_only_the_user(&post);
        }
        assert_eq!(r.tap.replies().len(), 1);
    }
}
