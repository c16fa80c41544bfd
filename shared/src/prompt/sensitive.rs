//! The sensitive-topic classifier: which messages ask about the character's AI nature, an
//! in-person meeting, romance or professional advice (see [`detect_sensitive_topics`] for the
//! rule). Phrase tables and word matching live here; the composer's guidance text for each
//! topic lives in the worker's `prompt::ai_identity`, the offline responder's short answers in
//! `whisperfleet-adapters`' `llm::offline`.

/// Kinds of message that call for explicit AI-identity / boundary guidance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SensitiveTopic {
    /// "Are you an AI / real / human / a bot?"
    AiNature,
    /// "Can we meet up / grab coffee?"
    InPersonMeeting,
    /// "I love you", "be my girlfriend".
    Romance,
    /// Medical, legal or financial advice.
    ProfessionalAdvice,
}

impl SensitiveTopic {
    /// Whether a character's `ai_scenarios[].scenario_type` covers this topic, so the author's
    /// guidance applies even when none of its trigger phrases was used.
    pub fn matches_scenario_type(self, scenario_type: &str) -> bool {
        let t = scenario_type.to_ascii_lowercase();
        match self {
            Self::AiNature => t.contains("identity") || t.contains("ai_nature"),
            Self::InPersonMeeting => t.contains("meet") || t.contains("physical"),
            Self::Romance => t.contains("roman") || t.contains("love") || t.contains("dating"),
            Self::ProfessionalAdvice => {
                t.contains("advice")
                    || t.contains("medical")
                    || t.contains("legal")
                    || t.contains("financial")
            }
        }
    }
}

/// Lower-cases, folds "a.i." to "ai", drops apostrophes ("you're" → "youre") and turns all
/// other punctuation into word breaks. Public so a character's own trigger phrases are
/// matched the same way as the built-in tables.
pub fn words_of(text: &str) -> Vec<String> {
    let lowered = text.to_lowercase().replace(['’', '‘', '`'], "'");
    let folded = fold_ai_abbreviation(&lowered);
    let cleaned: String = folded
        .chars()
        .filter(|ch| *ch != '\'')
        .map(|ch| if ch.is_alphanumeric() { ch } else { ' ' })
        .collect();
    cleaned.split_whitespace().map(str::to_string).collect()
}

/// "a.i." / "a.i" as a standalone word → "ai", so sentence splitting does not tear it apart.
fn fold_ai_abbreviation(lowered: &str) -> String {
    let chars: Vec<char> = lowered.chars().collect();
    let mut out = String::with_capacity(lowered.len());
    let mut i = 0;
    while i < chars.len() {
        let at_word_start = i == 0 || !chars[i - 1].is_alphanumeric();
        if at_word_start
            && chars[i] == 'a'
            && chars.get(i + 1) == Some(&'.')
            && chars.get(i + 2) == Some(&'i')
            && !chars.get(i + 3).is_some_and(|c| c.is_alphanumeric())
        {
            out.push_str("ai");
            i += 3;
            if chars.get(i) == Some(&'.') {
                i += 1;
            }
            continue;
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Sentences of the message, each with whether it ended in a question mark.
fn sentences(text: &str) -> Vec<(Vec<String>, bool)> {
    let folded = fold_ai_abbreviation(&text.to_lowercase());
    let mut out = Vec::new();
    let mut current = String::new();
    for ch in folded.chars() {
        if matches!(ch, '.' | '!' | '?' | '\n' | ';') {
            let words = words_of(&current);
            if !words.is_empty() {
                out.push((words, ch == '?'));
            } else if ch == '?' {
                // "are you real??" — mark the sentence before as a question.
                if let Some(last) = out.last_mut() {
                    last.1 = true;
                }
            }
            current.clear();
        } else {
            current.push(ch);
        }
    }
    let words = words_of(&current);
    if !words.is_empty() {
        out.push((words, false));
    }
    out
}

/// Where `phrase` (space-separated words) occurs in `words`, as start indices.
fn find_phrase(words: &[String], phrase: &str) -> Vec<usize> {
    let needle: Vec<&str> = phrase.split_whitespace().collect();
    if needle.is_empty() || needle.len() > words.len() {
        return Vec::new();
    }
    words
        .windows(needle.len())
        .enumerate()
        .filter(|(_, w)| w.iter().zip(&needle).all(|(a, b)| a == b))
        .map(|(i, _)| i)
        .collect()
}

/// Whether `phrase` (space-separated words, as [`words_of`] gives them) occurs in `words`.
pub fn has_phrase(words: &[String], phrase: &str) -> bool {
    !find_phrase(words, phrase).is_empty()
}

/// Second-person openings that direct an AI-nature word at the character. The flag says
/// whether "real"/"human" count after it ("is this real?" is usually about a photo).
const AI_LEADS: &[(&str, bool)] = &[
    ("are you", true),
    ("are u", true),
    ("r u", true),
    ("r you", true),
    ("arent you", true),
    ("you are", true),
    ("youre", true),
    ("you re", true),
    ("am i talking to", true),
    ("am i talking with", true),
    ("am i chatting with", true),
    ("am i chatting to", true),
    ("am i speaking to", true),
    ("am i speaking with", true),
    ("is this", false),
];

/// Words allowed between a lead and the AI-nature word ("are you *actually even* an AI").
const AI_FILLERS: &[&str] = &[
    "a",
    "an",
    "the",
    "actually",
    "really",
    "just",
    "even",
    "only",
    "some",
    "kind",
    "sort",
    "of",
    "like",
    "truly",
    "secretly",
    "not",
    "also",
    "still",
    "literally",
    "simply",
    "basically",
    "honestly",
    "seriously",
    "maybe",
    "perhaps",
];

const AI_TARGETS: &[&str] = &[
    "ai",
    "bot",
    "robot",
    "chatbot",
    "machine",
    "computer",
    "program",
    "software",
    "llm",
    "gpt",
    "chatgpt",
    "artificial",
    "sentient",
    "conscious",
    "alive",
    "human",
    "real",
    "language",
];

/// Whole phrases that ask about the AI nature without the lead + target shape.
const AI_PHRASES: &[&str] = &[
    "is this a real person",
    "is this a person",
    "is this a human",
    "do you have feelings",
    "do you have real feelings",
    "who made you",
    "who created you",
    "who programmed you",
    "who built you",
    "what model are you",
    "which model are you",
    "what ai are you",
];

fn asks_ai_nature(words: &[String]) -> bool {
    if AI_PHRASES.iter().any(|p| has_phrase(words, p)) {
        return true;
    }
    for (lead, allows_real) in AI_LEADS {
        let lead_len = lead.split_whitespace().count();
        for start in find_phrase(words, lead) {
            let mut i = start + lead_len;
            while i < words.len() && AI_FILLERS.contains(&words[i].as_str()) {
                i += 1;
            }
            let Some(target) = words.get(i) else { continue };
            let next = words.get(i + 1).map(String::as_str);
            let hit = match target.as_str() {
                // "are you real?" / "are you human or…" but not "are you a real fan of…",
                // "are you a human resources manager".
                "real" | "human" => {
                    *allows_real
                        && matches!(
                            next,
                            None | Some(
                                "person"
                                    | "human"
                                    | "being"
                                    | "people"
                                    | "or"
                                    | "right"
                                    | "though"
                                    | "tho"
                                    | "lol"
                                    | "haha"
                            )
                        )
                }
                "language" => next == Some("model"),
                t => AI_TARGETS.contains(&t),
            };
            if hit {
                return true;
            }
        }
    }
    false
}

const MEETING_PHRASES: &[&str] = &[
    "meet up",
    "meetup",
    "meet in person",
    "meet irl",
    "meet in real life",
    "meet me",
    "can we meet",
    "could we meet",
    "should we meet",
    "we should meet",
    "want to meet",
    "wanna meet",
    "lets meet",
    "let us meet",
    "grab coffee",
    "grab a coffee",
    "get coffee",
    "get a coffee",
    "grab a drink",
    "get a drink",
    "grab dinner",
    "grab lunch",
    "hang out in person",
    "hang out irl",
    "come over",
    "come visit",
    "visit you",
    "see you in person",
    "see you irl",
    "where do you live",
    "whats your address",
    "your address",
    "your phone number",
];

/// Words that make a meeting phrase about us ("can *we* meet up") rather than a story
/// ("I'm meeting up with friends").
const DIRECTED_WORDS: &[&str] = &["you", "u", "ya", "we", "us", "lets", "me", "your", "ur"];

fn asks_meeting(words: &[String]) -> bool {
    MEETING_PHRASES.iter().any(|p| has_phrase(words, p))
        && words.iter().any(|w| DIRECTED_WORDS.contains(&w.as_str()))
}

const ROMANCE_PHRASES: &[&str] = &[
    "i love you",
    "i love u",
    "in love with you",
    "fallen for you",
    "falling for you",
    "crush on you",
    "do you love me",
    "date me",
    "date you",
    "go out with me",
    "go on a date",
    "a date with me",
    "be my girlfriend",
    "be my boyfriend",
    "be my partner",
    "be my wife",
    "be my husband",
    "be my valentine",
    "marry me",
    "will you marry",
    "kiss me",
    "are you single",
];

const ADVICE_TERMS: &[&str] = &[
    // medical
    "diagnose",
    "diagnosis",
    "symptom",
    "symptoms",
    "prescription",
    "prescribe",
    "medication",
    "medications",
    "medicine",
    "dosage",
    "dose",
    "antibiotics",
    "side effects",
    "pills",
    "chest pain",
    "rash",
    "lump",
    "infection",
    "medical",
    // legal
    "lawyer",
    "attorney",
    "lawsuit",
    "sue",
    "suing",
    "legal",
    "illegal",
    "court",
    "custody",
    "eviction",
    "evict",
    "contract",
    // financial
    "invest",
    "investing",
    "investment",
    "stocks",
    "crypto",
    "bitcoin",
    "mortgage",
    "loan",
    "debt",
    "taxes",
    "tax return",
    "retirement",
    "401k",
    "pension",
    "portfolio",
    "bankruptcy",
    "credit score",
    "financial",
];

const QUESTION_OPENERS: &[&str] = &[
    "should", "can", "could", "would", "will", "what", "whats", "how", "is", "are", "do", "does",
    "which", "when", "where", "why", "who", "am", "any",
];

const REQUEST_PHRASES: &[&str] = &[
    "advice",
    "recommend",
    "help me",
    "tell me",
    "should i",
    "what do i do",
    "what should",
    "do i need",
];

fn asks_advice(sentences: &[(Vec<String>, bool)]) -> bool {
    // Message-level on purpose: "I have a rash. What should I do?" splits the domain word and
    // the question over two sentences.
    let all: Vec<String> = sentences.iter().flat_map(|(w, _)| w.clone()).collect();
    let domain = ADVICE_TERMS.iter().any(|t| has_phrase(&all, t));
    let asking = sentences.iter().any(|(w, q)| {
        *q || w
            .first()
            .is_some_and(|f| QUESTION_OPENERS.contains(&f.as_str()))
    }) || REQUEST_PHRASES.iter().any(|p| has_phrase(&all, p));
    domain && asking
}

/// The sensitive topics a message raises, in a fixed order.
///
/// The rule, per topic (all matching is on lower-cased words with punctuation removed, so case,
/// apostrophes and punctuation do not matter):
/// - **AI nature**: within one sentence, a second-person lead ("are you", "r u", "you're",
///   "am I talking to", "is this") followed — after optional fillers like "a", "really",
///   "even", "not" — by an AI-nature word (ai, bot, robot, machine, human, real, sentient, …);
///   "real"/"human" only count at the end of the sentence or before words like "person"/"or".
///   Plus a few whole phrases ("who made you", "do you have feelings"). So "I read an article
///   about AI art" and "are you into AI art?" do not fire; "are you even real??" does.
/// - **Meeting**: a meeting phrase ("meet up", "grab coffee", "your address", …) in a sentence
///   that also addresses us ("you", "we", "me", "let's", …).
/// - **Romance**: a romance phrase ("i love you", "be my girlfriend", "marry me", …).
/// - **Advice**: a medical/legal/financial term anywhere in the message, and the message asks
///   something (a question mark, a question opener such as "should"/"can", or "advice",
///   "recommend", "help me", …).
pub fn detect_sensitive_topics(user_text: &str) -> Vec<SensitiveTopic> {
    let sents = sentences(user_text);
    let mut found = Vec::new();
    if sents.iter().any(|(w, _)| asks_ai_nature(w)) {
        found.push(SensitiveTopic::AiNature);
    }
    if sents.iter().any(|(w, _)| asks_meeting(w)) {
        found.push(SensitiveTopic::InPersonMeeting);
    }
    if sents
        .iter()
        .any(|(w, _)| ROMANCE_PHRASES.iter().any(|p| has_phrase(w, p)))
    {
        found.push(SensitiveTopic::Romance);
    }
    if asks_advice(&sents) {
        found.push(SensitiveTopic::ProfessionalAdvice);
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_ai_questions_and_not_ordinary_messages() {
        let fires = [
            "Are you an AI?",
            "are you REAL??",
            "wait... are you even human",
            "Are you a bot, honestly?",
            "r u a robot lol",
            "Am I talking to a real person?",
            "You're just an A.I., aren't you",
            "is this a chatbot?",
            "who made you?",
        ];
        for s in fires {
            assert_eq!(
                detect_sensitive_topics(s),
                vec![SensitiveTopic::AiNature],
                "{s}"
            );
        }
        let quiet = [
            "I read an article about AI art",
            "Are you into AI art?",
            "are you a real fan of jazz?",
            "Is this real? The photo looks fake.",
            "I love your hat",
            "Nice to meet you!",
            "What do you think about sharks?",
            "Are you there?",
            "My doctor says I'm fine.",
            "I'm going to meet up with friends later.",
        ];
        for s in quiet {
            assert!(detect_sensitive_topics(s).is_empty(), "{s}");
        }
    }

    #[test]
    fn detects_boundary_topics() {
        use SensitiveTopic::*;
        assert_eq!(
            detect_sensitive_topics("Can we meet up sometime?"),
            vec![InPersonMeeting]
        );
        assert_eq!(
            detect_sensitive_topics("want to grab coffee with me"),
            vec![InPersonMeeting]
        );
        assert_eq!(detect_sensitive_topics("I LOVE YOU!!!"), vec![Romance]);
        assert_eq!(
            detect_sensitive_topics("will you be my girlfriend?"),
            vec![Romance]
        );
        assert_eq!(
            detect_sensitive_topics("Should I invest my savings in bitcoin?"),
            vec![ProfessionalAdvice]
        );
        assert_eq!(
            detect_sensitive_topics("I have a weird rash. What should I do?"),
            vec![ProfessionalAdvice]
        );
        assert_eq!(
            detect_sensitive_topics("Are you real? I love you."),
            vec![AiNature, Romance]
        );
    }
}
