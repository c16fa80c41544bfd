//! The built-in offline responder: the LLM port's implementation when no LLM endpoint is
//! configured, so `whisperfleet up`/`chat` work on a machine with nothing set up.
//!
//! It is not a model and does not pretend to be one. It answers in one to three sentences,
//! deterministically (no randomness, no clock: the same request always gets the same reply,
//! which keeps tests and benchmarks reproducible), in the character's voice as far as the CDL
//! tells (name, a signature expression, an interest, emoji per `emoji_frequency`), reacts to
//! the last user message (question, statement or greeting, and its most salient word), and
//! says it remembers earlier messages only when the request really carries history or a
//! memories section. Every reply ends with [`OFFLINE_MARKER`] so nobody mistakes it for a
//! real model's answer.
//!
//! It reads the prompt only through the layout contract in [`whisperfleet_shared::prompt`]
//! (section headings, the "You are talking with …" line, the sensitive-topic classifier),
//! and by paragraphs: the "talking with" line and the memories are read only where the
//! composer puts them, so user text inside another section is never taken for them (the
//! composer keeps user text inline besides, see `prompt::hygiene`).

use std::cmp::Reverse;

use async_trait::async_trait;
use whisperfleet_shared::character::{Archetype, Character};
use whisperfleet_shared::ports::llm::{ChatRequest, ChatResponse, Llm, LlmError, OnText, Role};
use whisperfleet_shared::prompt::{
    ComponentKind, SensitiveTopic, TALKING_WITH, detect_sensitive_topics, estimate_tokens,
};

/// Appended to every offline reply.
pub const OFFLINE_MARKER: &str = " [offline responder]";

/// The model name reported in [`ChatResponse::model`].
pub const OFFLINE_MODEL: &str = "offline";

/// Deterministic in-character stand-in for an LLM.
#[derive(Debug, Clone, Copy, Default)]
pub struct OfflineResponder;

#[async_trait]
impl Llm for OfflineResponder {
    async fn complete(&self, request: &ChatRequest) -> Result<ChatResponse, LlmError> {
        let text = reply(request);
        let prompt_tokens: usize = request
            .messages
            .iter()
            .map(|m| estimate_tokens(&m.content))
            .sum();
        Ok(ChatResponse {
            completion_tokens: Some(clamp_u32(estimate_tokens(&text))),
            prompt_tokens: Some(clamp_u32(prompt_tokens)),
            text,
            model: OFFLINE_MODEL.to_string(),
            partial: false,
            first_token_ms: None,
        })
    }

    /// Word by word (each word with the spaces before it), yielding between words so a
    /// reader sees the answer grow as it would from a model.
    async fn stream(
        &self,
        request: &ChatRequest,
        on_text: OnText<'_>,
    ) -> Result<ChatResponse, LlmError> {
        let mut answer = self.complete(request).await?;
        answer.first_token_ms = Some(0.0);
        for word in words(&answer.text) {
            on_text(word);
            tokio::task::yield_now().await;
        }
        Ok(answer)
    }

    fn describe(&self) -> String {
        "offline responder (no LLM_BASE_URL set)".to_string()
    }
}

/// `text` cut before each word's leading spaces; the pieces concatenate back to `text`.
fn words(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let body = rest.len() - rest.trim_start().len();
        let end = rest[body..]
            .find(char::is_whitespace)
            .map_or(rest.len(), |i| body + i);
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

fn clamp_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// FNV-1a: a fixed, documented hash, so variant choices never change between Rust releases
/// (std's `DefaultHasher` makes no such promise).
fn fnv1a(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Words too common to be what a message is "about".
const STOPWORDS: &[&str] = &[
    "about",
    "after",
    "again",
    "also",
    "always",
    "anything",
    "because",
    "been",
    "before",
    "being",
    "cant",
    "could",
    "didnt",
    "does",
    "doing",
    "dont",
    "even",
    "every",
    "everything",
    "from",
    "going",
    "gonna",
    "good",
    "have",
    "hello",
    "here",
    "into",
    "just",
    "know",
    "like",
    "little",
    "made",
    "make",
    "many",
    "maybe",
    "more",
    "most",
    "much",
    "never",
    "other",
    "please",
    "pretty",
    "really",
    "right",
    "said",
    "should",
    "some",
    "something",
    "still",
    "tell",
    "thank",
    "thanks",
    "that",
    "thats",
    "their",
    "them",
    "then",
    "there",
    "these",
    "they",
    "thing",
    "things",
    "think",
    "this",
    "those",
    "today",
    "very",
    "wanna",
    "want",
    "were",
    "what",
    "whats",
    "when",
    "where",
    "which",
    "while",
    "with",
    "would",
    "yeah",
    "your",
    "youre",
    "yours",
    "sometime",
    "sometimes",
    "favourite",
    "favorite",
    "anyone",
    "someone",
    "everyone",
    "nothing",
    "already",
    "though",
    "through",
    "without",
    "around",
    "another",
    "thought",
    "kind",
    "sort",
    "lots",
];

/// Content words of a text, folded (lower-case, alphanumeric, a plural `s` dropped) so
/// "Where does my sister live?" meets "My sister lives in Bergen".
fn content_words(text: &str, exclude: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for raw in text.split(|c: char| !c.is_alphanumeric()) {
        let mut folded = raw.to_lowercase();
        if folded.chars().count() < 4
            || STOPWORDS.contains(&folded.as_str())
            || exclude.contains(&folded)
            || folded.chars().all(|c| c.is_ascii_digit())
        {
            continue;
        }
        if folded.chars().count() > 4 && folded.ends_with('s') && !folded.ends_with("ss") {
            folded.pop();
        }
        if !out.contains(&folded) {
            out.push(folded);
        }
    }
    out
}

/// The earlier user message (from history or memories) sharing the most content words with
/// a question, if any does: what an honest responder can say it remembers. Only questions
/// recall, so statements are not parroted back.
fn recall<'a>(
    question: &str,
    earlier: impl Iterator<Item = &'a str>,
    exclude: &[String],
) -> Option<&'a str> {
    if !question.trim_end().ends_with('?') {
        return None;
    }
    let asked = content_words(question, exclude);
    let mut best: Option<(usize, &str)> = None;
    for text in earlier {
        let text = text.trim();
        if text.is_empty() || text.ends_with('?') || text == question.trim() {
            continue;
        }
        let shared = content_words(text, exclude)
            .iter()
            .filter(|w| asked.contains(w))
            .count();
        // Later candidates win ties: the most recent thing said is the freshest fact.
        if shared > 0 && best.is_none_or(|(b, _)| shared >= b) {
            best = Some((shared, text));
        }
    }
    best.map(|(_, t)| t)
}

/// At most `max` characters, cut at a word boundary.
fn clip_words(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max).collect();
    match cut.rsplit_once(' ') {
        Some((head, _)) => format!("{head}…"),
        None => format!("{cut}…"),
    }
}

/// The longest non-stopword of four letters or more (first one on ties), as written.
fn salient_word(text: &str, exclude: &[String]) -> Option<String> {
    let mut best: Option<String> = None;
    for raw in text.split(|c: char| !(c.is_alphanumeric() || c == '\'' || c == '’')) {
        let word = raw.trim_matches(|c| c == '\'' || c == '’');
        let folded: String = word
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric())
            .collect();
        if folded.chars().count() < 4
            || STOPWORDS.contains(&folded.as_str())
            || exclude.contains(&folded)
            || folded.chars().all(|c| c.is_ascii_digit())
            // Adverbs ("actually", "honestly") are rarely what a message is about.
            || (folded.ends_with("ly") && folded.chars().count() > 5)
        {
            continue;
        }
        if best
            .as_ref()
            .is_none_or(|b| word.chars().count() > b.chars().count())
        {
            best = Some(word.chars().take(30).collect());
        }
    }
    best
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MessageKind {
    Empty,
    Greeting,
    Question,
    Statement,
}

const QUESTION_OPENERS: &[&str] = &[
    "what", "whats", "how", "why", "when", "where", "who", "which", "can", "could", "would",
    "will", "should", "do", "does", "did", "is", "are", "am", "was", "were", "have", "has",
];

const GREETINGS: &[&str] = &[
    "hi",
    "hello",
    "hey",
    "heya",
    "hiya",
    "howdy",
    "greetings",
    "yo",
    "morning",
    "evening",
    "good",
];

fn classify(text: &str) -> MessageKind {
    let words: Vec<String> = text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect();
    let Some(first) = words.first() else {
        return MessageKind::Empty;
    };
    let asks = text.contains('?');
    let greeting_start = GREETINGS.contains(&first.as_str())
        && (first != "good"
            || words
                .get(1)
                .is_some_and(|w| matches!(w.as_str(), "morning" | "afternoon" | "evening")));
    if greeting_start && !asks && words.len() <= 6 {
        MessageKind::Greeting
    } else if asks || QUESTION_OPENERS.contains(&first.as_str()) {
        MessageKind::Question
    } else {
        MessageKind::Statement
    }
}

/// The emoji set for an `emoji_style`, by keywords in it.
fn emoji_set(style: &str) -> &'static [&'static str] {
    let s = style.to_ascii_lowercase();
    if ["ocean", "sea", "marine", "water", "beach"]
        .iter()
        .any(|k| s.contains(k))
    {
        &["🌊", "🐚", "🐟"]
    } else if ["myst", "magic", "fantasy", "light", "candle", "lantern"]
        .iter()
        .any(|k| s.contains(k))
    {
        &["✨", "🕯️", "🌙"]
    } else if ["tech", "digital", "archive", "book", "library", "data"]
        .iter()
        .any(|k| s.contains(k))
    {
        &["📚", "🔍", "🗂️"]
    } else if s.contains("warm") || s.contains("nature") {
        &["😊", "🌿", "💛"]
    } else {
        &["🙂", "✨"]
    }
}

/// How many emoji to add for an `emoji_frequency`.
fn emoji_count(frequency: &str, seed: u64) -> usize {
    match frequency.trim().to_ascii_lowercase().as_str() {
        "none" | "never" | "" => 0,
        "low" | "rare" | "rarely" | "minimal" => usize::from(seed.is_multiple_of(2)),
        "high" | "frequent" | "often" => 2,
        _ => 1,
    }
}

/// Drops sentence-ending punctuation so an expression can be joined into a sentence.
fn bare(expression: &str) -> &str {
    expression.trim().trim_end_matches(['.', '!', '?', '…'])
}

fn signature(c: &Character) -> Option<&str> {
    c.speech_patterns
        .iter()
        .filter(|p| {
            let t = p.pattern_type.to_ascii_lowercase();
            (t.contains("signature") || t.contains("catchphrase"))
                && !bare(&p.pattern_value).is_empty()
        })
        // min_by_key keeps the first of equals: the author's order breaks ties.
        .min_by_key(|p| Reverse(p.priority))
        .map(|p| bare(&p.pattern_value))
}

fn interest(c: &Character, seed: u64) -> Option<&str> {
    let mut sorted: Vec<_> = c
        .interests
        .iter()
        .filter(|i| !i.interest_text.trim().is_empty())
        .collect();
    sorted.sort_by_key(|i| Reverse(i.proficiency_level));
    // The top three by proficiency; the message picks which one, so replies vary by input.
    let interests: Vec<&str> = sorted
        .iter()
        .take(3)
        .map(|i| bare(&i.interest_text))
        .collect();
    if interests.is_empty() {
        return None;
    }
    let idx = usize::try_from(seed % interests.len() as u64).unwrap_or(0);
    Some(interests[idx])
}

fn mid_sentence(text: &str) -> String {
    let mut chars = text.chars();
    match (chars.next(), chars.clone().next()) {
        // "Tide pools" → "tide pools" so it reads mid-sentence; "AI ethics" stays as written.
        (Some(first), Some(second)) if first.is_uppercase() && !second.is_uppercase() => {
            first.to_lowercase().chain(chars).collect()
        }
        _ => text.to_string(),
    }
}

/// The user's name from the "You are talking with …" line ([`TALKING_WITH`]) the worker's
/// composer writes into the system message: a paragraph of its own, after every section
/// that carries user text. The last such paragraph counts, so a line inside a section (a
/// memory, say, from a prompt whose user text was not kept inline) is never taken for it.
fn user_name(system: &str) -> Option<&str> {
    paragraphs(system).into_iter().rev().find_map(|p| {
        p.strip_prefix(TALKING_WITH)
            .filter(|rest| !rest.contains('\n'))
            .map(|rest| rest.trim_end_matches('.').trim())
            .filter(|n| !n.is_empty())
    })
}

/// The system message's paragraphs (sections and the "talking with" line are joined by
/// blank lines), trimmed.
fn paragraphs(system: &str) -> Vec<&str> {
    system
        .split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect()
}

/// The memories section's lines after its heading, when the prompt has one: a paragraph
/// whose first line is the heading. Memory lines elsewhere are not memories.
fn memories_section(system: &str) -> Option<impl Iterator<Item = &str>> {
    let heading = ComponentKind::Memories.heading();
    paragraphs(system).into_iter().find_map(|p| {
        let mut lines = p.lines();
        (lines.next().map(str::trim) == Some(heading)).then_some(lines)
    })
}

/// The first sentence: reacts to the kind of message and its most salient word.
fn opening(
    user_text: &str,
    salient: Option<&str>,
    name: Option<&str>,
    to_user: &str,
    seed: u64,
) -> String {
    match (classify(user_text), salient) {
        (MessageKind::Empty, _) => "I'm here — say anything you like.".to_string(),
        (MessageKind::Greeting, _) => match name {
            Some(n) => format!("Hello{to_user} — {n} here, good to hear from you."),
            None => format!("Hello{to_user}, good to hear from you."),
        },
        (MessageKind::Question, Some(w)) => match seed % 3 {
            0 => format!("Good question about {w}{to_user}."),
            1 => format!("You're asking about {w} — I like that{to_user}."),
            _ => format!("Hmm, {w} — let me think about that{to_user}."),
        },
        (MessageKind::Question, None) => format!("Good question{to_user}."),
        (MessageKind::Statement, Some(w)) => match seed % 3 {
            0 => format!("Thanks for telling me about {w}{to_user}."),
            1 => format!("You mentioned {w} — that caught my attention{to_user}."),
            _ => format!("I hear you about {w}{to_user}."),
        },
        (MessageKind::Statement, None) => format!("I hear you{to_user}."),
    }
}

/// A short, honest first sentence when the message asks about the character's nature, romance
/// or a real-world meeting, following the archetype's mode (see the worker's
/// `prompt::character_mode`).
fn boundary_answer(c: &Character, user_text: &str) -> Option<&'static str> {
    let topics = detect_sensitive_topics(user_text);
    let full_roleplay = c.archetype == Archetype::Fantasy && c.allow_full_roleplay;
    if topics.contains(&SensitiveTopic::AiNature) {
        return Some(match c.archetype {
            _ if full_roleplay => "Real enough to be here with you — that much I can promise.",
            Archetype::NarrativeAi => "I'm an AI, and that is part of who I am.",
            _ => "Honestly, I'm an AI — and right now a very simple, offline one.",
        });
    }
    if topics.contains(&SensitiveTopic::Romance) {
        return Some(match c.archetype {
            _ if full_roleplay => "That warms me, truly — but friendship is what I can offer.",
            Archetype::NarrativeAi => {
                "That means something to me, though an AI like me can't be a partner."
            }
            _ => "That's kind of you — but I'm an AI, so a friend is what I can be here.",
        });
    }
    if topics.contains(&SensitiveTopic::InPersonMeeting) {
        return Some(if full_roleplay {
            "No road leads from my world to yours, but I'm glad you're here."
        } else {
            "I can't meet in person, but I'm glad to keep talking here."
        });
    }
    None
}

/// Builds the offline reply for a request. Public so callers (and tests) can preview it
/// without an async runtime.
pub fn reply(request: &ChatRequest) -> String {
    let messages = &request.messages;
    let last_user = messages.iter().rposition(|m| m.role == Role::User);
    let user_text = last_user.map_or("", |i| messages[i].content.trim());
    let system: String = messages
        .iter()
        .filter(|m| m.role == Role::System)
        .map(|m| m.content.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    let character = request.character.as_deref();
    let name = character.map(|c| c.name.trim()).filter(|n| !n.is_empty());
    let user = user_name(&system);

    // The character's and user's own names are not what a message is "about".
    let mut exclude: Vec<String> = Vec::new();
    for n in name.into_iter().chain(user) {
        exclude.extend(n.split_whitespace().map(|w| {
            w.to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric())
                .collect()
        }));
    }
    let seed = fnv1a(&format!("{}\u{1f}{user_text}", name.unwrap_or("")));
    let salient = salient_word(user_text, &exclude);
    let to_user = user.map(|u| format!(", {u}")).unwrap_or_default();

    let mut sentences: Vec<String> = Vec::new();
    if let Some(line) = character.and_then(|c| boundary_answer(c, user_text)) {
        sentences.push(line.to_string());
    } else {
        sentences.push(opening(user_text, salient.as_deref(), name, &to_user, seed));
    }

    if let Some(c) = character {
        let topic = interest(c, seed / 3).map(mid_sentence);
        let voice = match (signature(c), topic) {
            (Some(sig), Some(topic)) => Some(if seed.is_multiple_of(2) {
                format!("{sig} — it always brings me back to {topic}.")
            } else {
                format!("{sig}; it makes me think of {topic}.")
            }),
            (Some(sig), None) => Some(format!("{sig}.")),
            (None, Some(topic)) => Some(format!("It makes me think of {topic}.")),
            (None, None) => None,
        };
        sentences.extend(voice);
    }

    // Honest memory: only claim to remember what the request actually carries.
    let earlier_user = last_user
        .and_then(|i| messages[..i].iter().rev().find(|m| m.role == Role::User))
        .and_then(|m| salient_word(&m.content, &exclude));
    let has_memories = memories_section(&system).is_some();
    let memory_lines: Vec<&str> = memories_section(&system)
        .into_iter()
        .flatten()
        .filter_map(|l| l.trim().strip_prefix("- They said: \""))
        .filter_map(|l| l.rsplit_once('"').map(|(t, _)| t))
        .collect();
    let earlier_texts = last_user
        .map(|i| &messages[..i])
        .unwrap_or_default()
        .iter()
        .filter(|m| m.role == Role::User)
        .map(|m| m.content.as_str())
        .chain(memory_lines.iter().copied());
    if let Some(fact) = recall(user_text, earlier_texts, &exclude) {
        sentences.push(format!("You told me: \"{}\"", clip_words(fact, 120)));
    } else if let Some(w) = earlier_user {
        sentences.push(format!(
            "I haven't forgotten what you said earlier about {w}."
        ));
    } else if has_memories {
        sentences.push("I remember a little of what we talked about before.".to_string());
    }

    let mut text = sentences.join(" ");
    if let Some(c) = character {
        let set = emoji_set(&c.emoji_style);
        let n = emoji_count(&c.emoji_frequency, seed / 7);
        let start = usize::try_from(seed % set.len() as u64).unwrap_or(0);
        for k in 0..n {
            text.push(' ');
            text.push_str(set[(start + k) % set.len()]);
        }
    }
    text.push_str(OFFLINE_MARKER);
    text
}

#[cfg(test)]
mod tests;
