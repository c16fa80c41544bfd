//! Micro-benchmarks for the worker's hot pure code: prompt composition, emotion analysis and
//! the hashed embedder. No I/O is measured; inputs are built once, outside the timed loops.
//!
//! Run: `cargo bench -p whisperfleet-worker --bench hot_paths`.

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use whisperfleet_adapters::embeddings::hashing::HashEmbedder;
use whisperfleet_adapters::emotion::lexicon::LexiconAnalyzer;
use whisperfleet_shared::character::Character;
use whisperfleet_shared::ports::EmotionAnalyzer;
use whisperfleet_shared::ports::llm::Role;
use whisperfleet_worker::prompt::{
    self, Component, EmotionSummary, HistoryEntry, MemorySnippet, RelationshipSummary,
};

const CHARACTER_YAML: &str = include_str!("../../characters/nora-halvorsen.yaml");
const USER_NAME: &str = "Sam";
const USER_TEXT: &str =
    "Honestly, are you a real person? I had a rough week and talking to you helps.";
/// Large enough that nothing is dropped (the usual case).
const ROOMY_BUDGET: usize = 8_000;
/// Small enough that optional components and old history must be dropped.
const TIGHT_BUDGET: usize = 600;

const SHORT_TEXT: &str = "I'm so happy today!";
const LONG_TEXT: &str = "I went down to the harbour this morning to see the kelp lines you \
    told me about, and honestly I didn't expect much, but the water was so clear that I could \
    see urchins all over the rocks. The fishermen were arguing about the quota again, which \
    was kind of funny, though I'm a bit worried about what happens to the town if the catch \
    keeps falling. Anyway, I can't wait to go back next weekend, maybe with a proper drysuit \
    this time, because I was freezing and my hands still hurt. Do you think the forest will \
    really come back, or is it already too late for this coast?";

fn character() -> Character {
    let mut c: Character =
        serde_norway::from_str(CHARACTER_YAML).expect("characters/nora-halvorsen.yaml parses");
    c.validate().expect("nora-halvorsen validates");
    c
}

/// The six CDL components, in the order the compose stage builds them.
fn six_components(c: &Character, user_text: &str, user_name: &str) -> Vec<Component> {
    let mut out = Vec::with_capacity(6);
    out.push(prompt::character_identity(c));
    out.push(prompt::character_mode(c));
    out.extend(prompt::ai_identity_guidance(c, user_text));
    out.push(prompt::character_personality(c));
    out.push(prompt::character_voice(c));
    out.push(prompt::final_response_guidance(c, user_name));
    out
}

/// Ten history entries (five turns: user message + reply, sharing a turn id), oldest first.
fn history() -> Vec<HistoryEntry> {
    let lines = [
        "Hi Nora, how was the dive this morning?",
        "Cold! But the visibility was wonderful, I counted forty urchins on one boulder.",
        "Forty? Is that a lot?",
        "On that reef, yes: the kelp can't hold on when they graze that densely.",
        "What do you do about them?",
        "We cull by hand, and the fishermen help since the otters are still scarce here.",
        "That sounds exhausting, honestly.",
        "It is, but there's something calm about it, like weeding a garden underwater.",
        "I wish I could see it some day.",
        "You'd be welcome on the boat, as long as you don't mind the smell of diesel.",
    ];
    lines
        .iter()
        .enumerate()
        .map(|(i, text)| HistoryEntry {
            role: if i % 2 == 0 {
                Role::User
            } else {
                Role::Assistant
            },
            text: (*text).to_string(),
            turn_id: format!("turn-{}", i / 2),
        })
        .collect()
}

/// The per-turn context components: four memories, an emotion trajectory, a relationship.
fn context_components() -> Vec<Component> {
    let memories = [
        (
            "Sam grew up near a lake and learned to swim late.",
            "user",
            Some("sadness"),
            0.82,
        ),
        (
            "Sam is nervous about a job interview next month.",
            "user",
            Some("fear"),
            0.77,
        ),
        (
            "Nora promised to send Sam a photo of the kelp line.",
            "assistant",
            None,
            0.65,
        ),
        (
            "Sam's favourite animal is the sea otter.",
            "user",
            Some("joy"),
            0.58,
        ),
    ]
    .map(|(text, role, emotion, score)| MemorySnippet {
        text: text.to_string(),
        role: role.to_string(),
        emotion: emotion.map(str::to_string),
        score,
    });
    let emotion = |label: &str, intensity: f32| EmotionSummary {
        label: label.to_string(),
        intensity,
    };
    let current = emotion("sadness", 0.62);
    let trajectory = [
        emotion("joy", 0.4),
        emotion("neutral", 0.2),
        emotion("sadness", 0.55),
    ];
    let relationship = RelationshipSummary {
        trust: 0.64,
        affection: 0.58,
        attunement: 0.5,
        interactions: 14,
    };
    let mut out = Vec::with_capacity(3);
    out.extend(prompt::memories(&memories));
    out.extend(prompt::emotion_context(Some(&current), &trajectory));
    out.extend(prompt::relationship(Some(&relationship)));
    out
}

/// Prompt composition: the six CDL components for Nora, `assemble` on their own and with
/// per-turn context under a roomy and a tight budget, and the whole pure part of the compose
/// stage (components + context + assemble) end to end.
fn composition(c: &mut Criterion) {
    let nora = character();
    let history = history();
    let mut all = six_components(&nora, USER_TEXT, USER_NAME);
    all.extend(context_components());

    let mut g = c.benchmark_group("composition");
    // Building all six CDL components for one character (what a character-cache hit still pays).
    g.bench_function("six_cdl_components", |b| {
        b.iter(|| six_components(black_box(&nora), black_box(USER_TEXT), black_box(USER_NAME)))
    });
    // `assemble` with 9 components and 10 history entries, nothing dropped (input clone untimed).
    g.bench_function("assemble/roomy_budget", |b| {
        b.iter_batched(
            || all.clone(),
            |parts| {
                prompt::assemble(
                    parts,
                    black_box(&history),
                    USER_NAME,
                    black_box(USER_TEXT),
                    ROOMY_BUDGET,
                )
            },
            BatchSize::SmallInput,
        )
    });
    // `assemble` when the budget forces dropping optional components and old history.
    g.bench_function("assemble/tight_budget", |b| {
        b.iter_batched(
            || all.clone(),
            |parts| {
                prompt::assemble(
                    parts,
                    black_box(&history),
                    USER_NAME,
                    black_box(USER_TEXT),
                    TIGHT_BUDGET,
                )
            },
            BatchSize::SmallInput,
        )
    });
    // Everything the compose stage computes for one turn: six CDL + context components + assemble.
    g.bench_function("full_prompt", |b| {
        b.iter(|| {
            let mut parts = six_components(black_box(&nora), USER_TEXT, USER_NAME);
            parts.extend(context_components());
            prompt::assemble(
                parts,
                black_box(&history),
                USER_NAME,
                USER_TEXT,
                ROOMY_BUDGET,
            )
        })
    });
    g.finish();
}

/// Emotion analysis: `LexiconAnalyzer::analyze` on short and long texts, including negation,
/// intensifiers, emoji and a contrastive "but" (the analyzer is built once, outside the loop).
fn emotion_analysis(c: &mut Criterion) {
    let analyzer = LexiconAnalyzer::new();
    let texts = [
        ("short", SHORT_TEXT),
        ("negated", "I don't think it'll be good, honestly."),
        ("emoji", "omg you remembered!! 😍😍 thank you sooo much <3"),
        (
            "contrast",
            "The dive was really fun, but I'm extremely worried about the storm tomorrow.",
        ),
        ("long", LONG_TEXT),
    ];
    let mut g = c.benchmark_group("emotion_analyze");
    for (name, text) in texts {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), text, |b, text| {
            b.iter(|| analyzer.analyze(black_box(text)))
        });
    }
    g.finish();
}

/// Embedding: `HashEmbedder::embed_one` into 384 dimensions on a short and a long text.
fn embedding(c: &mut Criterion) {
    let embedder = HashEmbedder::new(384);
    let mut g = c.benchmark_group("hash_embed_384");
    for (name, text) in [("short", SHORT_TEXT), ("long", LONG_TEXT)] {
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(name), text, |b, text| {
            b.iter(|| embedder.embed_one(black_box(text)))
        });
    }
    g.finish();
}

criterion_group!(benches, composition, emotion_analysis, embedding);
criterion_main!(benches);
