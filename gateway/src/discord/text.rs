//! Pure text work of the Discord adapter: taking the bot's mention out of what the user
//! wrote, cutting a reply into messages that fit Discord's 2,000-character limit, the
//! optional timing footer, and the platform's own send time (`platform_lag`).
//!
//! Lengths are counted in Unicode scalar values (`char`s), as Discord and serenity's
//! `check_length` count them; cutting on `char` boundaries means no chunk ever splits a
//! UTF-8 sequence.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use whisperfleet_shared::wire::Stage;

/// Discord refuses message content longer than this.
pub const DISCORD_MESSAGE_LIMIT: usize = 2000;

/// Discord's epoch (2015-01-01T00:00:00Z) in Unix milliseconds: snowflake ids count from it.
pub const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// Sent instead of an empty reply: Discord rejects empty content.
pub const EMPTY_REPLY: &str = "…";

/// The message without the bot's own mention (`<@id>` or the legacy nickname form
/// `<@!id>`); other users' mentions stay. Neighbouring spaces and a leading `,`/`:` ("@Nora,
/// how are you?") go with it so the text reads as if typed without the mention.
pub fn strip_mention(content: &str, bot_id: u64) -> String {
    let forms = [format!("<@{bot_id}>"), format!("<@!{bot_id}>")];
    let mut out = String::with_capacity(content.len());
    let mut rest = content;
    loop {
        let hit = forms
            .iter()
            .filter_map(|f| rest.find(f.as_str()).map(|i| (i, f.len())))
            .min();
        let Some((at, len)) = hit else {
            out.push_str(rest);
            break;
        };
        out.push_str(&rest[..at]);
        rest = &rest[at + len..];
        if out.trim().is_empty() {
            rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',' || c == ':');
        } else if out.ends_with(char::is_whitespace) {
            if rest.starts_with([',', '.', '!', '?', ':', ';']) {
                out.truncate(out.trim_end().len());
            } else {
                rest = rest.trim_start_matches(' ');
            }
        }
    }
    out.trim().to_string()
}

/// Whether the content mentions the bot in either form (a stand-in or an old client may not
/// fill the `mentions` array).
pub fn mentions(content: &str, bot_id: u64) -> bool {
    content.contains(&format!("<@{bot_id}>")) || content.contains(&format!("<@!{bot_id}>"))
}

/// A code-block fence. Discord opens or closes a block at every one, wherever it stands.
pub const FENCE: &str = "```";

/// Longest language name kept when a block is reopened in the next piece.
const MAX_LANGUAGE_CHARS: usize = 32;

/// The language of a block whose opening fence `after_fence` follows: the word right after
/// the fence when a line break (or the end of the text) ends it, as Discord reads it; else
/// none.
fn fence_language(after_fence: &str) -> &str {
    let end = after_fence
        .find(|c: char| !(c.is_ascii_alphanumeric() || "_+-.#".contains(c)))
        .unwrap_or(after_fence.len());
    let lang = &after_fence[..end];
    let ends_line = after_fence[end..].starts_with('\n') || end == after_fence.len();
    if lang.len() <= MAX_LANGUAGE_CHARS && ends_line {
        lang
    } else {
        ""
    }
}

/// Cuts `text` into pieces of at most `limit` chars, in order. Preference, among breaks in
/// the second half of a piece (so pieces stay long): paragraph, line, sentence end; then
/// the last whitespace anywhere; only a word longer than `limit` is cut hard. Whitespace
/// at a break is dropped; nothing else is.
///
/// A break inside a code block closes the block at the end of the piece and reopens it,
/// with its language, at the start of the next one (room for both is kept inside the
/// limit), so no piece leaves a block open and the code renders as code on both sides.
pub fn chunk(text: &str, limit: usize) -> Vec<String> {
    assert!(limit > 0, "chunk limit must be positive");
    let mut out = Vec::new();
    let mut rest = text.trim();
    // The language of the block the next piece starts inside, if it does.
    let mut open: Option<String> = None;
    let fenced = text.contains(FENCE);
    while !rest.is_empty() {
        let reopen = open
            .as_ref()
            .map(|lang| format!("{FENCE}{lang}\n"))
            .unwrap_or_default();
        let room = limit.saturating_sub(reopen.chars().count());
        if rest.chars().nth(room).is_none() {
            out.push(format!("{reopen}{rest}"));
            break;
        }
        // Keep room for closing a block this piece may end inside.
        let room = if fenced {
            room.saturating_sub(CLOSE.chars().count())
        } else {
            room
        };
        let (mut head, mut tail) = split_piece(rest, room.max(1));
        let mut ends_in = block_after(open.clone(), head);
        // A piece never ends on a block's opening fence: the block starts in the next one.
        if ends_in.is_some()
            && let Some(at) = head.rfind(FENCE)
            && block_after(open.clone(), &head[..at]).is_none()
            && !head[..at].trim().is_empty()
            && head[at + FENCE.len()..].trim().len()
                == fence_language(&rest[at + FENCE.len()..]).len()
        {
            (head, tail) = (head[..at].trim_end(), rest[at..].trim_start());
            ends_in = None;
        }
        let mut piece = format!("{reopen}{head}");
        if ends_in.is_some() {
            piece.push_str(CLOSE);
        }
        out.push(piece);
        open = ends_in;
        rest = tail;
    }
    out
}

/// Closes a block at the end of a piece.
const CLOSE: &str = "\n```";

/// The next piece of at most `limit` chars (trimmed) and what is left after it.
fn split_piece(rest: &str, limit: usize) -> (&str, &str) {
    let Some((window_end, next)) = rest.char_indices().nth(limit) else {
        return (rest, "");
    };
    // The `limit` chars that could go out, plus the one after them: whitespace there
    // makes the whole window a clean piece.
    let cut = best_break(&rest[..window_end + next.len_utf8()], window_end, limit);
    let (head, tail) = rest.split_at(cut);
    (head.trim_end(), tail.trim_start())
}

/// The block (its language) `text` ends inside, starting inside `open`.
fn block_after(mut open: Option<String>, text: &str) -> Option<String> {
    let mut rest = text;
    while let Some(at) = rest.find(FENCE) {
        rest = &rest[at + FENCE.len()..];
        open = match open {
            Some(_) => None,
            None => Some(fence_language(rest).to_string()),
        };
    }
    open
}

/// Byte index where the piece ends: `scan` is `limit + 1` chars, of which the first `limit`
/// (`..window_end`) may go out; a break is a whitespace char the piece stops before.
fn best_break(scan: &str, window_end: usize, limit: usize) -> usize {
    const TERMINATORS: [char; 7] = ['.', '!', '?', '…', '。', '！', '？'];
    const CLOSERS: [char; 8] = ['"', '\'', '”', '’', ')', ']', '*', '_'];
    let half = limit / 2;
    let (mut paragraph, mut line, mut sentence, mut space) = (None, None, None, None);
    let mut prev = '\0';
    for (n, (i, c)) in scan.char_indices().enumerate() {
        if i > 0 && c.is_whitespace() {
            space = Some(i);
            if n >= half {
                if c == '\n' {
                    line = Some(i);
                    if prev == '\n' {
                        paragraph = Some(i - 1);
                    }
                }
                let before = scan[..i].trim_end_matches(CLOSERS);
                if before.ends_with(TERMINATORS) {
                    sentence = Some(i);
                }
            }
        }
        prev = c;
    }
    paragraph
        .or(line)
        .or(sentence)
        .or(space)
        .filter(|&i| i > 0)
        .unwrap_or(window_end)
}

/// The reply as the messages to send: chunks of at most `limit` chars, the footer (if any)
/// on a line of its own at the end of the last one, inside the limit. A footer that could
/// never fit is dropped, never the reply.
pub fn chunk_with_footer(text: &str, footer: Option<&str>, limit: usize) -> Vec<String> {
    let mut chunks = chunk(text, limit);
    if chunks.is_empty() {
        chunks.push(EMPTY_REPLY.to_string());
    }
    let Some(footer) = footer.map(str::trim).filter(|f| !f.is_empty()) else {
        return chunks;
    };
    let reserve = footer.chars().count() + 1;
    if reserve >= limit {
        return chunks;
    }
    let last = chunks.pop().expect("at least one chunk");
    let mut tail = if last.chars().count() + reserve <= limit {
        vec![last]
    } else {
        chunk(&last, limit - reserve)
    };
    if let Some(end) = tail.last_mut() {
        end.push('\n');
        end.push_str(footer);
    }
    chunks.extend(tail);
    chunks
}

/// `discord_footer`: what, if anything, is appended to a reply about its timing (a typed
/// config value; the config refuses anything but off, timing and full).
pub use whisperfleet_shared::config::FooterMode;

/// The footer line (Discord's `-#` small text) for the timings known when the send starts.
pub fn render_footer(mode: FooterMode, timings: &BTreeMap<String, f64>) -> Option<String> {
    let ms = |stage: &str| timings.get(stage).copied().unwrap_or(0.0).max(0.0);
    let total = ms(Stage::EndToEnd.as_str());
    match mode {
        FooterMode::Off => None,
        // A streamed reply: when the first words showed, and when it was done.
        FooterMode::Timing
            if timings
                .get(Stage::FirstVisible.as_str())
                .is_some_and(|fv| *fv < total) =>
        {
            Some(format!(
                "-# ⏱ first words {:.1} s · done {:.1} s",
                ms(Stage::FirstVisible.as_str()) / 1000.0,
                total / 1000.0
            ))
        }
        FooterMode::Timing => Some(format!(
            "-# ⏱ {total:.0} ms · LLM {:.0} ms · overhead {:.0} ms",
            ms(Stage::Llm.as_str()),
            ms(Stage::Overhead.as_str())
        )),
        FooterMode::Full => {
            let mut parts = vec![format!("-# ⏱ {total:.0} ms")];
            // The total leads the line; every other stage follows in pipeline order.
            let mut order: Vec<&str> = Stage::ALL
                .into_iter()
                .filter(|s| *s != Stage::EndToEnd && timings.contains_key(s.as_str()))
                .map(Stage::as_str)
                .collect();
            order.extend(
                timings
                    .keys()
                    .map(String::as_str)
                    .filter(|s| Stage::parse(s).is_none()),
            );
            for stage in order {
                parts.push(format!("{stage} {:.0} ms", ms(stage)));
            }
            Some(parts.join(" · "))
        }
    }
}

/// When Discord created the message, from its snowflake id.
pub fn snowflake_time(id: u64) -> Option<DateTime<Utc>> {
    let ms = (id >> 22).checked_add(DISCORD_EPOCH_MS)?;
    DateTime::from_timestamp_millis(i64::try_from(ms).ok()?)
}

/// The platform's send time for `platform_lag`: the snowflake's time, else the message's
/// `timestamp`, whichever is plausible (not after our receipt by more than clock skew, not
/// a day before it: a stand-in's made-up ids must not report years of lag).
pub fn platform_sent_at(
    message_id: u64,
    timestamp: Option<DateTime<Utc>>,
    received_at: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let plausible = |t: &DateTime<Utc>| {
        *t <= received_at + TimeDelta::seconds(5) && *t >= received_at - TimeDelta::days(1)
    };
    snowflake_time(message_id)
        .filter(plausible)
        .or(timestamp.filter(plausible))
        // A slightly fast platform clock would give a negative lag.
        .map(|t| t.min(received_at))
}

/// The notices the gateway itself sends. Short, and never silent: a user whose message was
/// not turned into a turn is told why and what to do.
pub fn rate_limited_notice(retry_after: std::time::Duration) -> String {
    let secs = retry_after.as_secs_f64().ceil().max(1.0) as u64;
    format!(
        "You're sending messages faster than I can answer. Please try again in {secs} s \
         (I'll skip messages until then)."
    )
}

pub fn too_long_notice(chars: usize, limit: usize) -> String {
    format!(
        "That message is {chars} characters long; I can read up to {limit}. Could you shorten \
         it or split it up?"
    )
}

pub fn busy_notice(position: u64) -> String {
    format!(
        "I'm very busy right now: you are number {position} in line, so I can't take your \
         message yet. Please try again in a minute."
    )
}

pub const CONVERSATION_BUSY_NOTICE: &str = "I'm still working through your earlier messages. \
     Please wait for my replies before sending more.";

pub const BROKER_DOWN_NOTICE: &str = "Something went wrong on my side and your message didn't \
     get through. Please try again in a moment.";

pub const TIMEOUT_NOTICE: &str = "Sorry, I'm slow right now: my answer will follow here as soon \
     as it is ready.";

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn chars(s: &str) -> usize {
        s.chars().count()
    }

    #[test]
    fn strips_only_the_bots_own_mention_in_both_forms() {
        assert_eq!(strip_mention("<@42> hello there", 42), "hello there");
        assert_eq!(strip_mention("<@!42> hello", 42), "hello");
        assert_eq!(
            strip_mention("hey <@42> how are you", 42),
            "hey how are you"
        );
        assert_eq!(strip_mention("thanks <@42>!", 42), "thanks!");
        assert_eq!(strip_mention("<@42>, what's up?", 42), "what's up?");
        assert_eq!(strip_mention("ask <@7> not <@42>", 42), "ask <@7> not");
        assert_eq!(strip_mention("<@420> hi", 42), "<@420> hi");
        assert_eq!(strip_mention("<@42> <@!42>", 42), "");
        assert_eq!(
            strip_mention("line one\n<@42> line two", 42),
            "line one\nline two"
        );
        assert!(mentions("yo <@!42>", 42) && mentions("<@42>", 42));
        assert!(!mentions("<@420>", 42));
    }

    #[test]
    fn five_thousand_chars_make_three_ordered_chunks() {
        let sentence = "The quick brown fox jumps over the lazy dog again. ";
        let text: String = sentence.repeat(100); // 5,100 chars
        let text = text.trim();
        let chunks = chunk(text, 2000);
        assert_eq!(
            chunks.len(),
            3,
            "{:?}",
            chunks.iter().map(|c| chars(c)).collect::<Vec<_>>()
        );
        assert!(chunks.iter().all(|c| chars(c) <= 2000));
        // In order and nothing lost but the whitespace at the breaks.
        assert_eq!(chunks.join(" "), text);
        // Sentence boundaries preferred over word boundaries.
        assert!(chunks[..2].iter().all(|c| c.ends_with('.')), "{chunks:?}");
    }

    #[test]
    fn paragraphs_and_lines_beat_sentences() {
        let para = format!(
            "{}\n\n{}",
            "a b. ".repeat(300).trim(),
            "c d. ".repeat(300).trim()
        );
        let chunks = chunk(&para, 2000);
        assert!(
            chunks[0].ends_with("a b."),
            "{}",
            &chunks[0][chunks[0].len() - 10..]
        );
        assert!(chunks[1].starts_with("c d."));
    }

    #[test]
    fn words_are_the_fallback_without_sentences() {
        let text = "lorem ipsum dolor sit amet ".repeat(200);
        let chunks = chunk(&text, 2000);
        assert!(chunks.len() >= 3);
        for c in &chunks {
            assert!(chars(c) <= 2000);
            assert!(!c.starts_with(' ') && !c.ends_with(' '));
            for word in c.split(' ') {
                assert!(
                    ["lorem", "ipsum", "dolor", "sit", "amet"].contains(&word),
                    "{word}"
                );
            }
        }
        assert_eq!(chunks.join(" "), text.trim());
    }

    #[test]
    fn a_word_longer_than_the_limit_is_cut_hard() {
        let word = "x".repeat(4500);
        let chunks = chunk(&format!("short start {word} end"), 2000);
        let lens: Vec<usize> = chunks.iter().map(|c| chars(c)).collect();
        assert!(lens.iter().all(|&n| n <= 2000), "{lens:?}");
        assert_eq!(chunks.concat().matches('x').count(), 4500);
        assert!(chunks.last().unwrap().ends_with("end"));
    }

    #[test]
    fn multi_byte_chars_are_never_split() {
        // 2-, 3- and 4-byte chars with no whitespace: every cut is a hard cut.
        let text = "é字😀".repeat(1700); // 5,100 chars, 15,300 bytes
        let chunks = chunk(&text, 2000);
        assert_eq!(
            chunks.iter().map(|c| chars(c)).collect::<Vec<_>>(),
            [2000, 2000, 1100]
        );
        assert_eq!(chunks.concat(), text);
        let spaced = "日本語のテキスト。".repeat(600);
        for c in chunk(&spaced, 2000) {
            assert!(chars(&c) <= 2000);
        }
    }

    #[test]
    fn short_and_empty_texts() {
        assert_eq!(chunk("  hi  ", 2000), ["hi"]);
        assert!(chunk("   ", 2000).is_empty());
        assert_eq!(chunk_with_footer("", None, 2000), [EMPTY_REPLY]);
        assert_eq!(chunk(&"a".repeat(2000), 2000).len(), 1);
        assert_eq!(chunk(&"a".repeat(2001), 2000).len(), 2);
    }

    #[test]
    fn footer_fits_inside_the_last_chunk() {
        let footer = "-# ⏱ 1234 ms · LLM 1100 ms · overhead 134 ms";
        let short = chunk_with_footer("Hello!", Some(footer), 2000);
        assert_eq!(short, [format!("Hello!\n{footer}")]);
        // A last chunk too full for the footer is split again, so the footer still fits.
        for len in [1990, 2000, 3999, 4000] {
            let text = "word ".repeat(len / 5);
            let chunks = chunk_with_footer(&text, Some(footer), 2000);
            assert!(chunks.iter().all(|c| chars(c) <= 2000), "len {len}");
            assert!(chunks.last().unwrap().ends_with(footer));
            assert_eq!(chunks.iter().filter(|c| c.contains("⏱")).count(), 1);
        }
        let huge = "x".repeat(2500);
        assert_eq!(chunk_with_footer("hi", Some(&huge), 2000), ["hi"]);
    }

    #[test]
    fn a_split_inside_a_code_block_closes_and_reopens_it_with_its_language() {
        let code = "let answer = 42;\n".repeat(200); // 3,400 chars of rust
        let text = format!("Here you go:\n```rust\n{code}```\nThat's all.");
        let chunks = chunk(&text, 2000);
        assert_eq!(chunks.len(), 2, "{chunks:?}");
        assert!(chunks[0].starts_with("Here you go:\n```rust\nlet answer"));
        assert!(
            chunks[0].ends_with("let answer = 42;\n```"),
            "closed where it was cut"
        );
        assert!(
            chunks[1].starts_with("```rust\nlet answer"),
            "reopened as rust"
        );
        assert!(chunks[1].ends_with("```\nThat's all."));
        assert!(chunks.iter().all(|c| chars(c) <= 2000));
        // An opening fence at the end of a piece moves to the next one instead.
        let text = format!("{}\n```py\nprint(1)\n```", "word ".repeat(398).trim_end());
        let chunks = chunk(&text, 2000);
        assert_eq!(chunks.len(), 2, "{chunks:?}");
        assert!(!chunks[0].contains(FENCE), "{:?}", chunks[0]);
        assert_eq!(chunks[1], "```py\nprint(1)\n```");
    }

    /// How Discord renders a message, char by char: each visible (non-whitespace) char with
    /// the code block it sits in (`Some(language)`) or `None`. A ``` toggles a block
    /// wherever it stands; an opening one takes the language right after it when a newline
    /// follows. Fence markers and the language itself are not visible chars.
    fn rendered(text: &str) -> Vec<(char, Option<String>)> {
        let mut out = Vec::new();
        let mut block: Option<String> = None;
        let mut rest = text;
        while let Some(c) = rest.chars().next() {
            if let Some(after) = rest.strip_prefix(FENCE) {
                rest = after;
                block = match block {
                    Some(_) => None,
                    None => {
                        let lang = fence_language(after);
                        rest = &rest[lang.len()..];
                        Some(lang.to_string())
                    }
                };
                continue;
            }
            if !c.is_whitespace() {
                out.push((c, block.clone()));
            }
            rest = &rest[c.len_utf8()..];
        }
        out
    }

    fn fences(text: &str) -> usize {
        text.matches(FENCE).count()
    }

    /// Markdown-ish replies: words, sentences, paragraphs, fenced blocks with or without a
    /// language, mentions, and now and then a word longer than a message.
    fn reply_text() -> impl Strategy<Value = String> {
        let token = prop_oneof![
            8 => "[a-zA-Z]{1,12}",
            2 => Just(". ".to_string()),
            2 => Just("\n".to_string()),
            1 => Just("\n\n".to_string()),
            1 => prop::sample::select(vec!["\n```rust\n", "\n```\n", "\n```py\n", "```", "\n```\n"])
                .prop_map(str::to_string),
            1 => prop::sample::select(vec!["@everyone", "@here", "<@8>", "<@!8>", "<@&5>", "<@7>"])
                .prop_map(str::to_string),
            1 => "[é字😀]{1,6}",
        ];
        (
            prop::collection::vec(token, 0..600),
            prop::option::weighted(0.1, 1900usize..2600),
        )
            .prop_map(|(tokens, long)| {
                let mut text = tokens.join(" ");
                if let Some(n) = long {
                    text.push_str(&format!(" {} end", "x".repeat(n)));
                }
                text
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        #[test]
        fn chunks_fit_keep_the_text_and_never_leave_a_block_open(
            text in reply_text(),
            limit in prop::sample::select(vec![2000usize, 300, 60]),
        ) {
            let chunks = chunk(&text, limit);
            for c in &chunks {
                prop_assert!(chars(c) <= limit, "{} > {limit}: {c:?}", chars(c));
                prop_assert!(!c.trim().is_empty());
            }
            // No block left open across a split: only the last piece may end inside one,
            // and only when the text itself does.
            if let Some((last, rest)) = chunks.split_last() {
                for c in rest {
                    prop_assert!(fences(c).is_multiple_of(2), "open block in {c:?}");
                }
                prop_assert_eq!(fences(last) % 2, fences(&text) % 2, "{:?}", chunks);
            }
            // Every visible char is there, in order, in the block (and language) it was in.
            let pieces: Vec<(char, Option<String>)> =
                chunks.iter().flat_map(|c| rendered(c)).collect();
            prop_assert_eq!(pieces, rendered(&text));
        }

        #[test]
        fn footer_keeps_every_piece_within_the_limit(
            text in reply_text(),
            footer in prop::option::of("-# [a-z0-9 ]{0,60}"),
        ) {
            let chunks = chunk_with_footer(&text, footer.as_deref(), DISCORD_MESSAGE_LIMIT);
            prop_assert!(!chunks.is_empty());
            for c in &chunks {
                prop_assert!(chars(c) <= DISCORD_MESSAGE_LIMIT);
            }
        }
    }

    fn sample_timings() -> BTreeMap<String, f64> {
        [
            ("end_to_end", 1234.4),
            ("llm", 1100.2),
            ("overhead", 134.2),
            ("platform_lag", 80.0),
            ("ingress", 3.4),
            ("queue_wait", 1.0),
            ("delivery", 5.0),
            ("worker_total", 1130.0),
            ("zeta_custom", 2.0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    #[test]
    fn footer_formats() {
        let t = sample_timings();
        assert_eq!(render_footer(FooterMode::Off, &t), None);
        assert_eq!(
            render_footer(FooterMode::Timing, &t).unwrap(),
            "-# ⏱ 1234 ms · LLM 1100 ms · overhead 134 ms"
        );
        assert_eq!(
            render_footer(FooterMode::Full, &t).unwrap(),
            "-# ⏱ 1234 ms · platform_lag 80 ms · ingress 3 ms · queue_wait 1 ms · llm 1100 ms \
             · worker_total 1130 ms · delivery 5 ms · overhead 134 ms · zeta_custom 2 ms"
        );
        // Streamed: the first words came before the end.
        let mut streamed = t.clone();
        streamed.insert("first_visible".into(), 612.0);
        streamed.insert("end_to_end".into(), 7890.0);
        assert_eq!(
            render_footer(FooterMode::Timing, &streamed).unwrap(),
            "-# ⏱ first words 0.6 s · done 7.9 s"
        );
        // Not streamed: first visible is the end, and the footer is the usual one.
        let mut whole = t.clone();
        whole.insert("first_visible".into(), t["end_to_end"]);
        assert_eq!(
            render_footer(FooterMode::Timing, &whole).unwrap(),
            "-# ⏱ 1234 ms · LLM 1100 ms · overhead 134 ms"
        );
    }

    #[test]
    fn notices_say_what_to_do() {
        let n = rate_limited_notice(std::time::Duration::from_millis(5200));
        assert!(n.contains("try again in 6 s"), "{n}");
        assert!(rate_limited_notice(std::time::Duration::ZERO).contains("in 1 s"));
        assert!(
            too_long_notice(4100, 4000).contains("4100")
                && too_long_notice(4100, 4000).contains("4000")
        );
        assert!(busy_notice(612).contains("number 612 in line"));
        for n in [CONVERSATION_BUSY_NOTICE, BROKER_DOWN_NOTICE, TIMEOUT_NOTICE] {
            assert!(
                !n.contains("  ") && n.chars().count() < DISCORD_MESSAGE_LIMIT,
                "{n}"
            );
        }
    }

    #[test]
    fn snowflake_times_and_plausibility() {
        // Discord's documented example: 175928847299117063 → 2016-04-30T11:18:25.796Z.
        let t = snowflake_time(175_928_847_299_117_063).unwrap();
        assert_eq!(t.to_rfc3339(), "2016-04-30T11:18:25.796+00:00");
        let now = Utc::now();
        let id = ((now.timestamp_millis() as u64 - 250 - DISCORD_EPOCH_MS) << 22) | 7;
        let sent = platform_sent_at(id, None, now).unwrap();
        assert_eq!((now - sent).num_milliseconds(), 250);
        // A made-up small id falls back to the message timestamp, or to nothing.
        let ts = now - TimeDelta::milliseconds(40);
        assert_eq!(platform_sent_at(5, Some(ts), now), Some(ts));
        assert_eq!(platform_sent_at(5, None, now), None);
        // A fast platform clock never gives negative lag.
        let ahead = now + TimeDelta::seconds(2);
        assert_eq!(platform_sent_at(5, Some(ahead), now), Some(now));
    }
}
