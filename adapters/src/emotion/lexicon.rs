//! The built-in emotion analyzer: a hand-written lexicon plus a few rules, behind the
//! [`EmotionAnalyzer`] port.
//!
//! The original platform ran a transformer emotion model 4–5 times per message. This one runs
//! once per text per turn in a few microseconds, needs no model download and is deterministic,
//! so the embedded fleet and the tests get real labels; a model-backed analyzer can replace it
//! behind the same trait.
//!
//! How a text is scored:
//! 1. **Tokens**: words (lowercased; `’` read as `'`; letters stretched past two —
//!    "sooo", "happyyy" — are squeezed and remembered as emphasis), emoji (one token each,
//!    variation selectors and skin tones dropped), ASCII emoticons (`:)`, `<3`, `:'(` …,
//!    recognised as whole whitespace-separated chunks) and clause breaks (`. , ; : ! ?` …).
//! 2. **Lexicon hits** ([`BUILTIN_LEXICON`]): phrases of up to four tokens first ("can't
//!    wait", "fed up"), then single words, trying simple stems when the word itself is not
//!    listed ("loved" → "love", "happiness" → "happy", "worried" → "worry").
//! 3. **Modifiers**, looked for in the same clause just before a hit: a negator within three
//!    tokens ("not", "never", "no", "…n't", "without"; "hardly", "barely" at reduced strength)
//!    replaces the hit's emotions by its negated reading (listed per term, else a default per
//!    label: "not happy" reads as sadness and pessimism); an intensifier within two ("so",
//!    "very", "really", "extremely", …) multiplies it, more when SHOUTED; a diminisher ("a bit",
//!    "slightly", "kind of", …) damps it. An ALL-CAPS or stretched hit weighs more, "so much" /
//!    "a lot" after a hit too. "but"/"however" halves what came before (the later clause is
//!    usually what the speaker means). A negated opinion verb ("I don't think …") negates the
//!    rest of its clause, and in a clause about the future ("will", "gonna", "it'll") joy
//!    reads mostly as optimism and sadness as pessimism ("it'll be great", "it won't be good").
//! 4. **Punctuation**: each `!` (up to three) raises intensity; "?!"/"!?" and "really?",
//!    "what?" … are evidence of surprise, and a question strengthens surprise words.
//! 5. **Result**: the label with the most evidence wins if it has at least [`MIN_EVIDENCE`];
//!    otherwise the text is neutral with low intensity. Intensity grows with the winner's
//!    evidence (saturating towards 1); confidence with the margin over the runner-up and the
//!    number of hits. `secondary` gives the other labels' share of all evidence.
//!
//! Everything that can be precomputed (lexicon maps, modifier tables) is built once in
//! [`LexiconAnalyzer::new`]; `analyze` only tokenises and looks up.

use std::collections::{HashMap, HashSet};
use std::fmt;

use whisperfleet_shared::ports::{EMOTION_LABELS, EmotionAnalyzer, EmotionResult};

/// The lexicon compiled into the binary (`worker/data/emotion-lexicon.tsv`; its header
/// documents the format).
pub const BUILTIN_LEXICON: &str = include_str!("../../data/emotion-lexicon.tsv");

/// Below this much evidence for the best label a text counts as neutral: a lone weak hint
/// ("blue", "tomorrow") is not an emotion.
mod tokens;
mod words;

use tokens::{Kind, Token, tokenize};
use words::*;

pub const MIN_EVIDENCE: f32 = 0.35;

const LABELS: usize = EMOTION_LABELS.len();
const ANTICIPATION: usize = 1;
const FEAR: usize = 3;
const JOY: usize = 4;
const LOVE: usize = 5;
const OPTIMISM: usize = 6;
const PESSIMISM: usize = 7;
const SADNESS: usize = 8;
const SURPRISE: usize = 9;
const TRUST: usize = 10;
const NEUTRAL: usize = 11;

/// How many tokens before a hit a negator still applies to it.
const NEGATION_WINDOW: usize = 3;
/// How many tokens before a hit an intensifier or diminisher still applies to it.
const MODIFIER_WINDOW: usize = 2;
/// Longest emoticon the tokenizer looks for; longer chunks are split into words.
const MAX_EMOTICON_BYTES: usize = 4;
/// Longest phrase the lexicon may hold, in tokens.
const MAX_PHRASE_TOKENS: usize = 4;

/// Weight of a hit written in capitals ("HAPPY") or stretched ("happyyy").
const SHOUT_FACTOR: f32 = 1.4;
const STRETCH_FACTOR: f32 = 1.3;
/// Extra factor when the intensifier itself is shouted ("SO happy").
const SHOUTED_INTENSIFIER_FACTOR: f32 = 1.2;
/// A negated intensified hit ("not very happy") is a milder statement than the plain one.
const NEGATED_INTENSIFIED_FACTOR: f32 = 0.8;
/// What "but"/"however" leaves of the evidence before it.
const CONTRAST_FACTOR: f32 = 0.5;

type Weights = Vec<(usize, f32)>;

/// One lexicon term: what it expresses, and what it expresses when negated.
#[derive(Debug, Clone)]
struct Entry {
    emotions: Weights,
    negated: Weights,
}

/// A problem in a lexicon file, with its 1-based line number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("emotion lexicon line {line}: {message}")]
pub struct LexiconError {
    pub line: usize,
    pub message: String,
}

/// The lexicon-and-rules [`EmotionAnalyzer`]. Build it once (it parses its lexicon) and share
/// it; `analyze` takes `&self` and allocates only per-call token buffers.
pub struct LexiconAnalyzer {
    /// Single words, emoji and emoticons.
    words: HashMap<String, Entry>,
    /// Multi-token phrases keyed by their tokens joined with one space.
    phrases: HashMap<String, Entry>,
    /// First tokens of phrases, so most tokens skip phrase lookups entirely.
    phrase_starts: HashSet<String>,
    negators: HashMap<&'static str, f32>,
    intensifiers: HashMap<&'static str, f32>,
    diminishers: HashMap<&'static str, f32>,
}

impl fmt::Debug for LexiconAnalyzer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The maps are hundreds of entries; their sizes are what a reader wants.
        f.debug_struct("LexiconAnalyzer")
            .field("words", &self.words.len())
            .field("phrases", &self.phrases.len())
            .finish_non_exhaustive()
    }
}

impl Default for LexiconAnalyzer {
    fn default() -> Self {
        Self::new()
    }
}

impl LexiconAnalyzer {
    /// The analyzer over [`BUILTIN_LEXICON`].
    pub fn new() -> Self {
        // The built-in lexicon is part of the source and checked by a unit test, so a parse
        // error here is a bug in this crate, not a runtime condition.
        Self::from_tsv(BUILTIN_LEXICON).expect("the built-in emotion lexicon parses")
    }

    /// An analyzer over a lexicon in the [`BUILTIN_LEXICON`] format (e.g. a tuned copy).
    pub fn from_tsv(tsv: &str) -> Result<Self, LexiconError> {
        let mut analyzer = Self {
            words: HashMap::new(),
            phrases: HashMap::new(),
            phrase_starts: HashSet::new(),
            negators: NEGATORS.iter().copied().collect(),
            intensifiers: INTENSIFIERS.iter().copied().collect(),
            diminishers: DIMINISHERS.iter().copied().collect(),
        };
        let mut tokens = Vec::new();
        for (n, raw) in tsv.lines().enumerate() {
            let line = n + 1;
            let err = |message: String| LexiconError { line, message };
            if raw.trim().is_empty() || raw.starts_with('#') {
                continue;
            }
            let fields: Vec<&str> = raw.split('\t').collect();
            if !(2..=3).contains(&fields.len()) {
                return Err(err(format!(
                    "expected term<TAB>emotions[<TAB>negated], got {} fields",
                    fields.len()
                )));
            }
            let term = fields[0].trim();
            let emotions = parse_weights(fields[1]).map_err(&err)?;
            if emotions.is_empty() {
                return Err(err(format!("{term:?} has no emotions")));
            }
            let negated = match fields.get(2).map(|f| f.trim()) {
                None => default_negation(emotions[0]),
                Some("-") => Vec::new(),
                Some(list) => parse_weights(list).map_err(&err)?,
            };
            let entry = Entry { emotions, negated };

            // Emoticons contain punctuation the tokenizer would split on, so they are keyed
            // verbatim (case matters: "D:" is not ":d") and matched as whole chunks.
            if is_emoticon_term(term) {
                if term.len() > MAX_EMOTICON_BYTES {
                    return Err(err(format!(
                        "emoticon {term:?} is longer than {MAX_EMOTICON_BYTES} bytes"
                    )));
                }
                analyzer.insert_word(term.to_owned(), entry).map_err(err)?;
                continue;
            }
            tokenize(term, &analyzer.words, &mut tokens);
            if tokens.iter().any(|t| t.kind == Kind::Break) {
                return Err(err(format!("{term:?} contains a clause break")));
            }
            match tokens.len() {
                0 => return Err(err(format!("{term:?} has no words"))),
                1 => {
                    let key = tokens.pop().map(|t| t.text).unwrap_or_default();
                    analyzer.insert_word(key, entry).map_err(err)?;
                }
                n if n > MAX_PHRASE_TOKENS => {
                    return Err(err(format!(
                        "{term:?} is longer than {MAX_PHRASE_TOKENS} tokens"
                    )));
                }
                _ => {
                    let key = join_tokens(&tokens);
                    analyzer
                        .phrase_starts
                        .insert(tokens[0].text.replace('\'', ""));
                    analyzer.phrase_starts.insert(tokens[0].text.clone());
                    analyzer.insert_phrase(key, entry).map_err(err)?;
                }
            }
        }
        Ok(analyzer)
    }

    /// Number of single-word (emoji, emoticon) and phrase entries, apostrophe-less variants
    /// included.
    pub fn lexicon_size(&self) -> (usize, usize) {
        (self.words.len(), self.phrases.len())
    }

    fn insert_word(&mut self, key: String, entry: Entry) -> Result<(), String> {
        insert_with_variant(&mut self.words, key, entry)
    }

    fn insert_phrase(&mut self, key: String, entry: Entry) -> Result<(), String> {
        insert_with_variant(&mut self.phrases, key, entry)
    }

    /// The raw per-label evidence for `text` and the number of lexicon hits behind it.
    fn score(&self, text: &str, tokens: &[Token]) -> ([f32; LABELS], u32) {
        let mut scores = [0.0f32; LABELS];
        let mut hits = 0u32;
        // Modifiers are only looked for at or after this index: the start of the clause, or
        // the end of the last phrase (whose own "not" must not negate the next word too).
        let mut barrier = 0usize;
        // Clause state, reset at every break: "I don't think …" negates the whole clause;
        // "will", "gonna", "it'll" … make it about the future.
        let mut clause_negated = false;
        let mut future = false;
        let mut key = String::new();
        let mut i = 0;
        while i < tokens.len() {
            let tok = &tokens[i];
            if tok.kind == Kind::Break {
                if tok.text == "?"
                    && i > 0
                    && SURPRISE_QUESTIONS.contains(&tokens[i - 1].text.as_str())
                {
                    scores[SURPRISE] += 0.8;
                    hits += 1;
                }
                barrier = i + 1;
                clause_negated = false;
                future = false;
                i += 1;
                continue;
            }
            if tok.kind == Kind::Word && CONTRASTS.contains(&tok.text.as_str()) {
                scores.iter_mut().for_each(|s| *s *= CONTRAST_FACTOR);
                barrier = i + 1;
                clause_negated = false;
                future = false;
                i += 1;
                continue;
            }
            let (entry, len) = match self.match_phrase(tokens, i, &mut key) {
                Some((entry, len)) => (Some(entry), len),
                None if self.is_modifier(tok) => {
                    // A phrase did not claim this negator ("can't believe" is surprise).
                    let next = tokens.get(i + 1).map(|t| t.text.as_str());
                    clause_negated |= self.negator_strength(&tok.text).is_some()
                        && next.is_some_and(|n| NEG_RAISERS.contains(&n));
                    (None, 1)
                }
                None => (self.lookup_token(tok, &mut key), 1),
            };
            future |= (i..i + len).any(|j| is_future_marker(tokens, j));
            let Some(entry) = entry else {
                i += 1;
                continue;
            };

            let m = self.modifiers(tokens, barrier, i);
            let negation = m.negation.or(clause_negated.then_some(1.0));
            let mut weight = 1.0;
            let span = &tokens[i..i + len];
            if span.iter().any(|t| t.shout) {
                weight *= SHOUT_FACTOR;
            }
            if span.iter().any(|t| t.stretched) {
                weight *= STRETCH_FACTOR;
            }
            weight *= post_intensifier(tokens, i + len);
            let mut add = [0.0f32; LABELS];
            match negation {
                Some(strength) => {
                    let factor = if m.intensity > 1.0 {
                        NEGATED_INTENSIFIED_FACTOR
                    } else {
                        m.intensity
                    };
                    for &(label, w) in &entry.negated {
                        add[label] += w * strength * factor * weight;
                    }
                }
                None => {
                    for &(label, w) in &entry.emotions {
                        add[label] += w * m.intensity * weight;
                    }
                }
            }
            if future {
                // Good things ahead are hope, bad things ahead are gloom: "it'll be great" is
                // optimism, "it won't be good" pessimism.
                let hope = add[JOY] * FUTURE_SHIFT;
                add[JOY] -= hope;
                add[OPTIMISM] += hope;
                let gloom = add[SADNESS] * FUTURE_SHIFT;
                add[SADNESS] -= gloom;
                add[PESSIMISM] += gloom;
            }
            if add.iter().any(|&a| a > 0.0) {
                hits += 1;
            }
            scores.iter_mut().zip(add).for_each(|(s, a)| *s += a);
            if len > 1 {
                barrier = i + len;
            }
            i += len;
        }

        // "?!" / "!?" is the written form of a gasp.
        if text.contains("?!") || text.contains("!?") {
            scores[SURPRISE] += 0.6;
            hits += 1;
        }
        if text.contains('?') && scores[SURPRISE] > 0.0 {
            scores[SURPRISE] *= 1.2;
        }
        (scores, hits)
    }

    /// The longest phrase starting at `i`, if any.
    fn match_phrase(
        &self,
        tokens: &[Token],
        i: usize,
        key: &mut String,
    ) -> Option<(&Entry, usize)> {
        if !self.phrase_starts.contains(tokens[i].text.as_str()) {
            return None;
        }
        let max = MAX_PHRASE_TOKENS.min(tokens.len() - i);
        for len in (2..=max).rev() {
            let span = &tokens[i..i + len];
            if span.iter().any(|t| t.kind == Kind::Break) {
                continue;
            }
            key.clear();
            for (n, t) in span.iter().enumerate() {
                if n > 0 {
                    key.push(' ');
                }
                key.push_str(&t.text);
            }
            if let Some(entry) = self.phrases.get(key.as_str()) {
                return Some((entry, len));
            }
        }
        None
    }

    fn is_modifier(&self, tok: &Token) -> bool {
        tok.kind == Kind::Word
            && (self.negator_strength(&tok.text).is_some()
                || self.intensifiers.contains_key(tok.text.as_str())
                || self.diminishers.contains_key(tok.text.as_str()))
    }

    fn negator_strength(&self, word: &str) -> Option<f32> {
        if word.ends_with("n't") {
            return Some(1.0);
        }
        self.negators.get(word).copied()
    }

    /// A single token's entry: the word itself, its unstretched form, then its stems.
    fn lookup_token(&self, tok: &Token, scratch: &mut String) -> Option<&Entry> {
        if let Some(entry) = self.words.get(tok.text.as_str()) {
            return Some(entry);
        }
        if let Some(alt) = &tok.squeezed
            && let Some(entry) = self.words.get(alt.as_str())
        {
            return Some(entry);
        }
        if tok.kind != Kind::Word || !tok.text.is_ascii() {
            return None;
        }
        self.lookup_stemmed(&tok.text, scratch, 0)
    }

    /// Tries base forms of an inflected word: "loved" → "love", "happiness" → "happy",
    /// "stopped" → "stop", "hopefully" → "hope". Only forms listed in the lexicon count, so
    /// "hats" never becomes "hate".
    fn lookup_stemmed(&self, word: &str, scratch: &mut String, depth: u8) -> Option<&Entry> {
        if let Some(base) = word.strip_suffix("'s") {
            return self.words.get(base);
        }
        for suffix in SUFFIXES {
            let Some(base) = word.strip_suffix(suffix) else {
                continue;
            };
            if base.len() < 3 {
                continue;
            }
            if let Some(entry) = self.words.get(base) {
                return Some(entry);
            }
            // happi(ness) → happy, worr(ied) → worry, cri(es) → cry.
            let y_stem = match base.strip_suffix('i') {
                Some(stem) => Some(stem),
                None => suffix.starts_with('i').then_some(base),
            };
            if let Some(stem) = y_stem {
                scratch.clear();
                scratch.push_str(stem);
                scratch.push('y');
                if let Some(entry) = self.words.get(scratch.as_str()) {
                    return Some(entry);
                }
            }
            if E_DROPPING.contains(suffix) {
                // lov(ed) → love; stopp(ed) → stop.
                scratch.clear();
                scratch.push_str(base);
                scratch.push('e');
                if let Some(entry) = self.words.get(scratch.as_str()) {
                    return Some(entry);
                }
                let b = base.as_bytes();
                if b.len() >= 4
                    && b[b.len() - 1] == b[b.len() - 2]
                    && !is_vowel(b[b.len() - 1])
                    && let Some(entry) = self.words.get(&base[..base.len() - 1])
                {
                    return Some(entry);
                }
            }
            if depth == 0
                && let Some(entry) = self.lookup_stemmed(base, scratch, 1)
            {
                return Some(entry);
            }
        }
        None
    }

    /// Negation, intensifiers and diminishers in the tokens `[barrier, i)` close to `i`.
    fn modifiers(&self, tokens: &[Token], barrier: usize, i: usize) -> Modifiers {
        let mut negation = None;
        let mut boost = 1.0f32;
        let mut damp = 1.0f32;
        let lo = barrier.max(i.saturating_sub(NEGATION_WINDOW));
        for j in (lo..i).rev() {
            let t = &tokens[j];
            if t.kind != Kind::Word {
                continue;
            }
            let distance = i - j;
            if let Some(strength) = self.negator_strength(&t.text) {
                negation.get_or_insert(strength);
                continue;
            }
            if distance <= MODIFIER_WINDOW
                && let Some(&f) = self.intensifiers.get(t.text.as_str())
            {
                let f = if t.shout {
                    f * SHOUTED_INTENSIFIER_FACTOR
                } else {
                    f
                };
                boost = boost.max(f);
                continue;
            }
            if let Some(&f) = self.diminishers.get(t.text.as_str()) {
                damp = damp.min(f);
                continue;
            }
            // "a bit", "a little", "a tad"; "kind of", "sort of".
            let prev = j
                .checked_sub(1)
                .filter(|&p| p >= barrier)
                .map(|p| tokens[p].text.as_str());
            let two_word = match (prev, t.text.as_str()) {
                (Some("a"), "bit" | "little" | "tad") => Some(0.6),
                (Some("kind" | "sort"), "of") => Some(0.6),
                _ => None,
            };
            if let Some(f) = two_word {
                damp = damp.min(f);
            }
        }
        Modifiers {
            negation,
            intensity: boost * damp,
        }
    }
}

impl EmotionAnalyzer for LexiconAnalyzer {
    fn analyze(&self, text: &str) -> EmotionResult {
        let mut tokens = Vec::with_capacity(text.len() / 4 + 1);
        tokenize(text, &self.words, &mut tokens);
        let (scores, hits) = self.score(text, &tokens);
        let exclamations = text.matches('!').count().min(3) as f32;
        let words = tokens.iter().filter(|t| t.kind == Kind::Word).count();
        result_from_scores(&scores, hits, exclamations, words)
    }

    fn describe(&self) -> String {
        let (words, phrases) = self.lexicon_size();
        format!("lexicon+rules emotion analyzer ({words} words/emoji, {phrases} phrases)")
    }
}

/// Turns evidence into the port's result; see the module docs for the formulas' intent.
fn result_from_scores(
    scores: &[f32; LABELS],
    hits: u32,
    exclamations: f32,
    words: usize,
) -> EmotionResult {
    let mut order: Vec<usize> = (0..LABELS).collect();
    // Stable sort: ties keep label order, so the result is deterministic.
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let total: f32 = scores.iter().sum();
    let top = order[0];
    let best = scores[top];

    let share = |label: usize| {
        if total > 0.0 {
            scores[label] / total
        } else {
            0.0
        }
    };
    let secondary_of = |primary: usize| -> Vec<(String, f32)> {
        order
            .iter()
            .copied()
            .filter(|&l| l != primary && scores[l] > 0.0)
            .take(3)
            .map(|l| (EMOTION_LABELS[l].to_owned(), round3(share(l))))
            .collect()
    };

    if best < MIN_EVIDENCE || top == NEUTRAL {
        // Neutral: little evidence either way, so low intensity; confidence grows with how
        // much text there was to find an emotion in, and shrinks with stray hints.
        let confidence = if top == NEUTRAL && best >= MIN_EVIDENCE {
            margin_confidence(best, scores[order[1]], hits)
        } else {
            let length = 0.35 + 0.05 * words.min(6) as f32;
            length * (1.0 - best).clamp(0.5, 1.0)
        };
        let intensity = 0.05 + 0.1 * (1.0 - (-total).exp());
        return EmotionResult {
            primary: EMOTION_LABELS[NEUTRAL].to_owned(),
            intensity: round3(intensity),
            confidence: round3(confidence),
            secondary: secondary_of(NEUTRAL),
        };
    }

    let evidence = best * (1.0 + 0.15 * exclamations);
    let intensity = 1.0 - (-0.8 * evidence).exp();
    EmotionResult {
        primary: EMOTION_LABELS[top].to_owned(),
        intensity: round3(intensity),
        confidence: round3(margin_confidence(best, scores[order[1]], hits)),
        secondary: secondary_of(top),
    }
}

/// High when the winner clearly beats the runner-up and several hits agree.
fn margin_confidence(best: f32, second: f32, hits: u32) -> f32 {
    let margin = if best > 0.0 {
        ((best - second) / best).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let evidence = 1.0 - (-0.7 * hits as f32).exp();
    ((0.3 + 0.7 * margin) * (0.5 + 0.5 * evidence)).clamp(0.0, 1.0)
}

/// Three decimals are plenty for a score and keep logs and stored payloads short.
fn round3(x: f32) -> f32 {
    (x * 1000.0).round() / 1000.0
}

#[derive(Debug, Clone, Copy)]
struct Modifiers {
    /// Strength of the negation in scope, if any.
    negation: Option<f32>,
    /// Product of intensifier boost and diminisher damping.
    intensity: f32,
}

/// "so much", "very much", "a lot", "af" right after a hit.
fn post_intensifier(tokens: &[Token], k: usize) -> f32 {
    let word = |n: usize| {
        tokens
            .get(n)
            .filter(|t| t.kind == Kind::Word)
            .map(|t| t.text.as_str())
    };
    match (word(k), word(k + 1)) {
        (Some("so" | "very" | "too"), Some("much")) => 1.3,
        (Some("a"), Some("lot")) => 1.2,
        (Some("af" | "asf"), _) => 1.4,
        _ => 1.0,
    }
}

/// What a label reads as under negation when the lexicon does not say.
fn default_negation((label, weight): (usize, f32)) -> Weights {
    let flips: &[(usize, f32)] = match label {
        ANTICIPATION => &[(PESSIMISM, 0.4), (SADNESS, 0.2)],
        FEAR => &[(TRUST, 0.3), (OPTIMISM, 0.3)],
        JOY => &[(SADNESS, 0.6), (PESSIMISM, 0.3)],
        LOVE => &[(SADNESS, 0.5)],
        OPTIMISM => &[(PESSIMISM, 0.6)],
        PESSIMISM => &[(OPTIMISM, 0.4)],
        SADNESS => &[(JOY, 0.2), (OPTIMISM, 0.2)],
        TRUST => &[(FEAR, 0.3), (PESSIMISM, 0.3)],
        // "not angry", "not disgusted", "not surprised": the emotion is simply absent.
        _ => &[],
    };
    flips.iter().map(|&(l, w)| (l, w * weight)).collect()
}

/// `label:weight[,label:weight…]`.
fn parse_weights(list: &str) -> Result<Weights, String> {
    list.split(',')
        .map(|item| {
            let (label, weight) = item
                .trim()
                .split_once(':')
                .ok_or_else(|| format!("{item:?} is not label:weight"))?;
            let index = label_index(label.trim())
                .ok_or_else(|| format!("unknown emotion label {label:?}"))?;
            let weight: f32 = weight
                .trim()
                .parse()
                .map_err(|_| format!("{weight:?} is not a number"))?;
            if !(weight.is_finite() && weight > 0.0 && weight <= 3.0) {
                return Err(format!("weight {weight} is outside (0, 3]"));
            }
            Ok((index, weight))
        })
        .collect()
}

fn label_index(label: &str) -> Option<usize> {
    EMOTION_LABELS.iter().position(|l| *l == label)
}

/// Inserts `key`, and for keys with an apostrophe also the form without one ("cant wait"),
/// since chat often drops it. Duplicates are errors: two lines for one term are a mistake.
fn insert_with_variant(
    map: &mut HashMap<String, Entry>,
    key: String,
    entry: Entry,
) -> Result<(), String> {
    if map.contains_key(&key) {
        return Err(format!("{key:?} is listed twice"));
    }
    if key.contains('\'') {
        let bare = key.replace('\'', "");
        map.entry(bare).or_insert_with(|| entry.clone());
    }
    map.insert(key, entry);
    Ok(())
}

fn join_tokens(tokens: &[Token]) -> String {
    tokens
        .iter()
        .map(|t| t.text.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A lexicon term that is an ASCII emoticon (`:)`, `<3`, `D:`), not a word ("can't") or a
/// hyphenated phrase ("break-in").
fn is_emoticon_term(term: &str) -> bool {
    !term.contains(char::is_whitespace)
        && term
            .chars()
            .any(|c| c.is_ascii_punctuation() && !matches!(c, '\'' | '-'))
}

fn is_vowel(b: u8) -> bool {
    matches!(b, b'a' | b'e' | b'i' | b'o' | b'u')
}

/// Parses a labelled evaluation set: `label<TAB>sentence` lines, `#` comments and blank
/// lines ignored. Every label must be one of [`EMOTION_LABELS`]. Used by the
/// `emotion_eval` example and its test.
pub fn parse_labelled(tsv: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (n, line) in tsv.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let (label, sentence) = line
            .split_once('\t')
            .ok_or_else(|| format!("line {}: expected label<TAB>sentence", n + 1))?;
        let label = label.trim();
        if label_index(label).is_none() {
            return Err(format!("line {}: unknown label {label:?}", n + 1));
        }
        let sentence = sentence.trim();
        if sentence.is_empty() {
            return Err(format!("line {}: empty sentence", n + 1));
        }
        out.push((label.to_owned(), sentence.to_owned()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
