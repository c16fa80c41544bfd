//! The lexicon analyzer's word tables: stemming suffixes, negators, intensifiers,
//! diminishers, opinion verbs, future markers, contrasts and surprise questions.

use super::tokens::Token;

/// Suffixes tried, longest first, when a word is not in the lexicon itself.
pub(super) const SUFFIXES: &[&str] = &[
    "ingly", "fully", "edly", "ness", "ment", "iest", "ful", "ing", "ily", "ies", "ied", "ier",
    "est", "ed", "ly", "es", "er", "s",
];

/// Suffixes after which English drops a final "e" or doubles a consonant.
pub(super) const E_DROPPING: &[&str] = &["ingly", "edly", "ing", "ed", "er", "est"];

/// Negators and how much of a negation they are.
pub(super) const NEGATORS: &[(&str, f32)] = &[
    ("not", 1.0),
    ("no", 1.0),
    ("never", 1.0),
    ("nothing", 1.0),
    ("none", 1.0),
    ("neither", 1.0),
    ("nor", 1.0),
    ("without", 1.0),
    ("cannot", 1.0),
    ("dont", 1.0),
    ("doesnt", 1.0),
    ("didnt", 1.0),
    ("cant", 1.0),
    ("couldnt", 1.0),
    ("wont", 1.0),
    ("wouldnt", 1.0),
    ("shouldnt", 1.0),
    ("isnt", 1.0),
    ("arent", 1.0),
    ("wasnt", 1.0),
    ("werent", 1.0),
    ("havent", 1.0),
    ("hasnt", 1.0),
    ("hadnt", 1.0),
    ("aint", 1.0),
    ("hardly", 0.6),
    ("barely", 0.6),
    ("scarcely", 0.6),
    ("rarely", 0.5),
    ("seldom", 0.5),
];

/// Words that strengthen the emotion word after them, and by how much.
pub(super) const INTENSIFIERS: &[(&str, f32)] = &[
    ("so", 1.5),
    ("soo", 1.6),
    ("very", 1.5),
    ("really", 1.4),
    ("extremely", 1.8),
    ("super", 1.5),
    ("totally", 1.5),
    ("absolutely", 1.6),
    ("incredibly", 1.7),
    ("insanely", 1.7),
    ("truly", 1.4),
    ("utterly", 1.7),
    ("completely", 1.5),
    ("deeply", 1.5),
    ("highly", 1.4),
    ("terribly", 1.5),
    ("awfully", 1.5),
    ("seriously", 1.4),
    ("genuinely", 1.3),
    ("especially", 1.3),
    ("particularly", 1.3),
    ("quite", 1.2),
    ("pretty", 1.2),
    ("too", 1.3),
    ("such", 1.3),
    ("most", 1.3),
    ("freaking", 1.5),
    ("fucking", 1.6),
    ("damn", 1.4),
    ("bloody", 1.4),
    ("mega", 1.5),
];

/// Words that weaken the emotion word after them.
pub(super) const DIMINISHERS: &[(&str, f32)] = &[
    ("slightly", 0.5),
    ("somewhat", 0.6),
    ("mildly", 0.5),
    ("kinda", 0.6),
    ("sorta", 0.6),
    ("fairly", 0.8),
    ("almost", 0.7),
    ("partly", 0.6),
    ("less", 0.6),
];

/// Verbs after which a negation covers the whole clause ("I don't think it will work").
pub(super) const NEG_RAISERS: &[&str] = &["think", "believe", "suppose", "reckon", "guess", "feel"];

/// Share of joy (sadness) that a future clause turns into optimism (pessimism).
pub(super) const FUTURE_SHIFT: f32 = 0.6;

/// Whether `tokens[j]` makes its clause about the future: "will", "gonna", "going to",
/// "it'll", "we'll", "won't".
pub(super) fn is_future_marker(tokens: &[Token], j: usize) -> bool {
    let t = tokens[j].text.as_str();
    matches!(t, "will" | "gonna" | "shall" | "won't" | "wont")
        || t.ends_with("'ll")
        || (t == "going" && tokens.get(j + 1).is_some_and(|n| n.text == "to"))
}

/// Clause connectors after which the speaker's real point usually comes.
pub(super) const CONTRASTS: &[&str] = &["but", "however", "although"];

/// Words that, followed by "?", express surprise ("Really?", "What?").
pub(super) const SURPRISE_QUESTIONS: &[&str] = &[
    "really",
    "seriously",
    "what",
    "huh",
    "wait",
    "wtf",
    "whoa",
    "wow",
    "omg",
    "what's",
];
