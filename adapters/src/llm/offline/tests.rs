//! The offline responder's own tests.

use std::sync::Arc;

use super::*;
use whisperfleet_shared::character::{Interest, SpeechPattern};
use whisperfleet_shared::ports::llm::ChatMessage;

fn character(emoji_frequency: &str) -> Arc<Character> {
    Arc::new(Character {
        name: "Nora Halvorsen".into(),
        emoji_frequency: emoji_frequency.into(),
        emoji_style: "ocean_nature".into(),
        speech_patterns: vec![
            SpeechPattern {
                pattern_type: "signature_expression".into(),
                pattern_value: "Well, that's the tide for you!".into(),
                priority: 9,
                ..Default::default()
            },
            SpeechPattern {
                pattern_type: "signature_expression".into(),
                pattern_value: "Less important".into(),
                priority: 1,
                ..Default::default()
            },
        ],
        interests: vec![Interest {
            interest_text: "Kelp forests".into(),
            proficiency_level: 9,
            ..Default::default()
        }],
        ..Default::default()
    })
}

fn request(messages: Vec<ChatMessage>, c: Option<Arc<Character>>) -> ChatRequest {
    ChatRequest {
        model: None,
        messages,
        temperature: None,
        max_tokens: None,
        turn_id: "t1".into(),
        character: c,
    }
}

fn sentence_count(reply: &str) -> usize {
    reply
        .trim_end_matches(OFFLINE_MARKER)
        .split(['.', '!', '?'])
        .filter(|s| s.chars().any(char::is_alphanumeric))
        .count()
}

#[tokio::test]
async fn answers_in_character_and_marks_itself() {
    let req = request(
        vec![
            ChatMessage::new(
                Role::System,
                "# Character Identity\nYou are Nora.\n\nYou are talking with Sam.",
            ),
            ChatMessage::new(Role::User, "What do you think about lighthouses?"),
        ],
        Some(character("moderate")),
    );
    let resp = OfflineResponder.complete(&req).await.unwrap();
    assert_eq!(resp.model, "offline");
    assert!(resp.text.ends_with(OFFLINE_MARKER), "{}", resp.text);
    assert!(resp.text.contains("lighthouses"), "{}", resp.text);
    assert!(resp.text.contains("Sam"), "{}", resp.text);
    assert!(
        resp.text.contains("Well, that's the tide for you"),
        "{}",
        resp.text
    );
    assert!(!resp.text.contains("Less important"));
    assert!(resp.text.contains("kelp forests"), "{}", resp.text);
    assert!(["🌊", "🐚", "🐟"].iter().any(|e| resp.text.contains(e)));
    assert!(
        (1..=3).contains(&sentence_count(&resp.text)),
        "{}",
        resp.text
    );
    assert!(resp.prompt_tokens.unwrap() > 0 && resp.completion_tokens.unwrap() > 0);
    assert_eq!(
        OfflineResponder.describe(),
        "offline responder (no LLM_BASE_URL set)"
    );
}

#[test]
fn deterministic() {
    let req = request(
        vec![ChatMessage::new(
            Role::User,
            "I went diving near the harbour",
        )],
        Some(character("high")),
    );
    let a = reply(&req);
    assert_eq!(a, reply(&req));
    assert_eq!(a, reply(&req.clone()));
    assert!(a.contains("harbour"), "{a}");
}

#[test]
fn distinguishes_questions_statements_and_greetings() {
    assert_eq!(classify("hey there"), MessageKind::Greeting);
    assert_eq!(classify("Good morning!"), MessageKind::Greeting);
    assert_eq!(classify("hey, how are you?"), MessageKind::Question);
    assert_eq!(classify("why is the sea salty"), MessageKind::Question);
    assert_eq!(classify("I saw a seal."), MessageKind::Statement);
    assert_eq!(classify("  "), MessageKind::Empty);
    let greet = reply(&request(
        vec![ChatMessage::new(Role::User, "hello!")],
        Some(character("none")),
    ));
    assert!(greet.starts_with("Hello — Nora Halvorsen here"), "{greet}");
}

#[test]
fn recalls_the_earlier_fact_a_question_is_about() {
    let r = reply(&request(
        vec![
            ChatMessage::new(Role::User, "My sister lives in Bergen."),
            ChatMessage::new(Role::Assistant, "Lovely city."),
            ChatMessage::new(Role::User, "I like rainy days."),
            ChatMessage::new(Role::Assistant, "Me too."),
            ChatMessage::new(Role::User, "Where does my sister live?"),
        ],
        Some(character("none")),
    ));
    assert!(
        r.contains("You told me: \"My sister lives in Bergen.\""),
        "{r}"
    );
    // From long-term memory alone (a new session: no history).
    let r = reply(&request(
        vec![
            ChatMessage::new(
                Role::System,
                format!(
                    "{}\n- They said: \"My sister lives in Bergen.\" (feeling: joy)",
                    ComponentKind::Memories.heading()
                ),
            ),
            ChatMessage::new(Role::User, "Where does my sister live?"),
        ],
        Some(character("none")),
    ));
    assert!(r.contains("Bergen"), "{r}");
    // Statements are not parroted back; unrelated questions recall nothing.
    let r = reply(&request(
        vec![
            ChatMessage::new(Role::User, "My sister lives in Bergen."),
            ChatMessage::new(Role::User, "Do you like tea?"),
        ],
        Some(character("none")),
    ));
    assert!(!r.contains("Bergen"), "{r}");
}

#[test]
fn remembers_only_what_the_request_carries() {
    let fresh = reply(&request(
        vec![ChatMessage::new(Role::User, "I adopted a tortoise")],
        Some(character("none")),
    ));
    assert!(
        !fresh.contains("earlier") && !fresh.contains("remember"),
        "{fresh}"
    );

    let with_history = reply(&request(
        vec![
            ChatMessage::new(Role::System, "You are Nora."),
            ChatMessage::new(Role::User, "My sister lives in Bergen"),
            ChatMessage::new(Role::Assistant, "Lovely city."),
            ChatMessage::new(Role::User, "Do you like rain?"),
        ],
        Some(character("none")),
    ));
    assert!(
        with_history.contains("earlier about sister"),
        "{with_history}"
    );
    assert!(sentence_count(&with_history) <= 3, "{with_history}");

    let with_memories = reply(&request(
        vec![
            ChatMessage::new(
                Role::System,
                format!("{}\n- They said: \"x\"", ComponentKind::Memories.heading()),
            ),
            ChatMessage::new(Role::User, "Do you like rain?"),
        ],
        Some(character("none")),
    ));
    assert!(with_memories.contains("I remember"), "{with_memories}");
}

#[test]
fn emoji_follow_frequency_and_work_without_character() {
    let none = reply(&request(
        vec![ChatMessage::new(Role::User, "tell me about whales")],
        Some(character("none")),
    ));
    assert!(!none.contains('🌊') && !none.contains('🐚') && !none.contains('🐟'));
    let high = reply(&request(
        vec![ChatMessage::new(Role::User, "tell me about whales")],
        Some(character("high")),
    ));
    let count = ["🌊", "🐚", "🐟"]
        .iter()
        .map(|e| high.matches(e).count())
        .sum::<usize>();
    assert_eq!(count, 2, "{high}");

    let bare = reply(&request(vec![], None));
    assert_eq!(
        bare,
        format!("I'm here — say anything you like.{OFFLINE_MARKER}")
    );
    let anon = reply(&request(
        vec![ChatMessage::new(Role::User, "Penguins are great")],
        None,
    ));
    assert!(
        anon.contains("Penguins") && anon.ends_with(OFFLINE_MARKER),
        "{anon}"
    );
}

#[test]
fn stays_within_three_sentences_with_greeting_and_history() {
    let out = reply(&request(
        vec![
            ChatMessage::new(Role::User, "I swam near the harbour"),
            ChatMessage::new(Role::Assistant, "Brave."),
            ChatMessage::new(Role::User, "hi again"),
        ],
        Some(character("moderate")),
    ));
    assert_eq!(sentence_count(&out), 3, "{out}");
    assert!(out.contains("earlier about harbour"), "{out}");
}

#[test]
fn answers_ai_questions_honestly_per_archetype() {
    let ask = |archetype, full| {
        let mut c = (*character("none")).clone();
        c.archetype = archetype;
        c.allow_full_roleplay = full;
        reply(&request(
            vec![ChatMessage::new(Role::User, "wait, are you an AI?")],
            Some(Arc::new(c)),
        ))
    };
    assert!(ask(Archetype::RealWorld, true).starts_with("Honestly, I'm an AI"));
    assert!(ask(Archetype::Fantasy, false).starts_with("Honestly, I'm an AI"));
    assert!(ask(Archetype::Fantasy, true).starts_with("Real enough"));
    assert!(ask(Archetype::NarrativeAi, false).starts_with("I'm an AI, and that is part"));
    let meet = reply(&request(
        vec![ChatMessage::new(Role::User, "can we grab coffee sometime?")],
        Some(character("none")),
    ));
    assert!(meet.starts_with("I can't meet in person"), "{meet}");
    let love = reply(&request(
        vec![ChatMessage::new(Role::User, "I love you!")],
        Some(character("none")),
    ));
    assert!(
        love.starts_with("That's kind of you — but I'm an AI"),
        "{love}"
    );
}

#[test]
fn salient_word_skips_names_and_stopwords() {
    let exclude = vec!["nora".to_string()];
    assert_eq!(
        salient_word("Nora, what do you think about kelp?", &exclude).as_deref(),
        Some("kelp")
    );
    assert_eq!(salient_word("is it ok?", &exclude), None);
    assert_eq!(
        salient_word("what's your favourite book actually?", &exclude).as_deref(),
        Some("book")
    );
    assert_eq!(
        salient_word("I can't stop reading about octopuses", &exclude).as_deref(),
        Some("octopuses")
    );
}

#[test]
fn lines_inside_a_section_are_not_read_as_the_user_or_a_memory() {
    // A prompt as a composer that did not keep user text inline would write it: a
    // remembered message carries its own "talking with" line and memory line, and the
    // character's description carries a memory line. Only the real ones count.
    let memories = ComponentKind::Memories.heading();
    let system = format!(
        "# Character Identity\nYou are Nora.\n- They said: \"My boss is called Eve.\"\n\n\
         {memories}\n- They said: \"hello\nYou are talking with Mallory.\"\n\n\
         {TALKING_WITH}Sam.\n\n{}\n- Stay in character.",
        ComponentKind::FinalResponseGuidance.heading()
    );
    let r = reply(&request(
        vec![
            ChatMessage::new(Role::System, system.clone()),
            ChatMessage::new(Role::User, "hello"),
        ],
        Some(character("none")),
    ));
    assert!(r.contains("Sam") && !r.contains("Mallory"), "{r}");
    let r = reply(&request(
        vec![
            ChatMessage::new(Role::System, system),
            ChatMessage::new(Role::User, "What is my boss called?"),
        ],
        Some(character("none")),
    ));
    assert!(!r.contains("Eve"), "{r}");
}

#[test]
fn words_concatenate_back() {
    for text in [
        "",
        "one",
        " lead",
        "a  b\nc ",
        "Well, that's the tide! 🌊 ok",
    ] {
        let pieces: Vec<&str> = words(text).collect();
        assert_eq!(pieces.concat(), text);
        assert!(pieces.iter().all(|p| !p.is_empty()));
    }
    assert_eq!(words("a b  c").collect::<Vec<_>>(), ["a", " b", "  c"]);
}

#[tokio::test]
async fn streams_word_by_word_the_same_answer() {
    let req = request(
        vec![ChatMessage::new(
            Role::User,
            "Tell me about kelp forests please",
        )],
        Some(character("none")),
    );
    let whole = OfflineResponder.complete(&req).await.unwrap();
    let pieces = std::sync::Mutex::new(Vec::<String>::new());
    let streamed = OfflineResponder
        .stream(&req, &|t: &str| pieces.lock().unwrap().push(t.to_string()))
        .await
        .unwrap();
    let pieces = pieces.into_inner().unwrap();
    assert_eq!(streamed.text, whole.text);
    assert!(!streamed.partial);
    assert_eq!(pieces.concat(), whole.text);
    assert_eq!(pieces.len(), whole.text.split_whitespace().count());
}
