//! The lexicon analyzer's tests: labels, modifiers, and accuracy on the evaluation set.

use super::*;

fn analyzer() -> LexiconAnalyzer {
    LexiconAnalyzer::new()
}

fn primary(text: &str) -> String {
    analyzer().analyze(text).primary
}

#[test]
fn builtin_lexicon_parses_and_is_substantial() {
    let a = LexiconAnalyzer::from_tsv(BUILTIN_LEXICON).unwrap();
    let (words, phrases) = a.lexicon_size();
    assert!(words > 400, "{words}");
    assert!(phrases > 150, "{phrases}");
    assert!(a.describe().contains("lexicon"));
}

#[test]
fn clear_sentences_get_their_label() {
    for (text, label) in [
        ("I am so happy today!", "joy"),
        ("I'm terrified of the storm", "fear"),
        ("I love you so much ❤️", "love"),
        ("This is disgusting", "disgust"),
        ("Wow, I did not expect that!", "surprise"),
        ("I can't wait for the trip tomorrow", "anticipation"),
        ("I'm so angry right now", "anger"),
        ("I feel so lonely and sad", "sadness"),
        ("I trust you completely", "trust"),
        ("Things will get better, I'm hopeful", "optimism"),
        ("It's hopeless, what's the point", "pessimism"),
    ] {
        assert_eq!(primary(text), label, "{text}");
    }
}

#[test]
fn negation_flips_joy() {
    let r = analyzer().analyze("I'm not happy at all");
    assert_ne!(r.primary, "joy");
    assert!(
        matches!(r.primary.as_str(), "sadness" | "pessimism"),
        "{r:?}"
    );
    // The same with the apostrophe dropped and with "never"/"hardly".
    assert_ne!(primary("I dont feel happy"), "joy");
    assert_ne!(primary("I was never happy there"), "joy");
    assert_ne!(primary("I'm hardly happy about it"), "joy");
    // A clause break ends the negation's reach.
    assert_eq!(primary("No, I'm happy!"), "joy");
}

#[test]
fn phrases_win_over_negation() {
    assert_eq!(primary("I can't wait!"), "anticipation");
    assert_eq!(primary("cant wait"), "anticipation");
    assert_eq!(primary("Couldn't be happier"), "joy");
}

#[test]
fn no_emotion_is_neutral_with_low_intensity() {
    for text in [
        "The weather is 12 degrees",
        "",
        "   ",
        "12345",
        "The meeting is at 3pm.",
    ] {
        let r = analyzer().analyze(text);
        assert_eq!(r.primary, "neutral", "{text:?}");
        assert!(r.intensity < 0.2, "{r:?}");
        assert!((0.0..=1.0).contains(&r.confidence));
    }
}

#[test]
fn intensifiers_caps_and_exclamations_raise_intensity() {
    let a = analyzer();
    let plain = a.analyze("I am happy");
    let loud = a.analyze("I am SO happy!!!");
    assert_eq!(plain.primary, "joy");
    assert_eq!(loud.primary, "joy");
    assert!(loud.intensity > plain.intensity, "{loud:?} vs {plain:?}");
    let mild = a.analyze("I am a bit happy");
    assert!(mild.intensity < plain.intensity, "{mild:?} vs {plain:?}");
    let stretched = a.analyze("I am happyyyy");
    assert_eq!(stretched.primary, "joy");
    assert!(stretched.intensity > plain.intensity);
}

#[test]
fn stems_and_emoji_are_recognised() {
    assert_eq!(primary("she loved it"), "joy");
    assert_eq!(primary("he was worried"), "fear");
    assert_eq!(primary("pure happiness"), "joy");
    assert_eq!(primary("the kids were crying"), "sadness");
    assert_eq!(primary("😡"), "anger");
    assert_eq!(primary("😢😢"), "sadness");
    assert_eq!(primary("🙏"), "trust");
    assert_eq!(primary("see you 👍🏽 :)"), "joy");
    assert_eq!(primary("<3"), "love");
    assert_eq!(primary("Really?"), "surprise");
    // "hats" must not be read as "hate".
    assert_eq!(primary("I bought two hats"), "neutral");
}

#[test]
fn result_is_well_formed_and_deterministic() {
    let a = analyzer();
    let text = "Wow, I love it but I'm a bit worried 😅 about tomorrow!!";
    let r = a.analyze(text);
    assert_eq!(r, a.analyze(text));
    assert!(EMOTION_LABELS.contains(&r.primary.as_str()));
    assert!((0.0..=1.0).contains(&r.intensity));
    assert!((0.0..=1.0).contains(&r.confidence));
    assert!(r.secondary.len() <= 3);
    assert!(r.secondary.iter().all(|(l, s)| {
        l != &r.primary && EMOTION_LABELS.contains(&l.as_str()) && (0.0..=1.0).contains(s)
    }));
    assert!(r.secondary.windows(2).all(|w| w[0].1 >= w[1].1));
}

#[test]
fn confidence_reflects_margin() {
    let a = analyzer();
    let clear = a.analyze("I am so happy, this is wonderful, yay!");
    let mixed = a.analyze("I'm happy and sad");
    assert!(
        clear.confidence > mixed.confidence,
        "{clear:?} vs {mixed:?}"
    );
}

#[test]
fn bad_lexicons_are_rejected_with_line_numbers() {
    let err = LexiconAnalyzer::from_tsv("# c\nhappy\tjoy:1\nsad\tglum:1\n").unwrap_err();
    assert_eq!(err.line, 3);
    assert!(err.message.contains("glum"));
    assert!(LexiconAnalyzer::from_tsv("happy\tjoy:1\nhappy\tjoy:2\n").is_err());
    assert!(LexiconAnalyzer::from_tsv("happy\tjoy\n").is_err());
    assert!(LexiconAnalyzer::from_tsv("happy\tjoy:-1\n").is_err());
    assert!(LexiconAnalyzer::from_tsv("a b c d e\tjoy:1\n").is_err());
    let custom = LexiconAnalyzer::from_tsv("zorp\tanger:1\tjoy:1\n").unwrap();
    assert_eq!(custom.analyze("zorp").primary, "anger");
    assert_eq!(custom.analyze("not zorp").primary, "joy");
}

#[test]
fn eval_set_parses_with_known_labels() {
    let set = parse_labelled(include_str!("../../../data/emotion-eval.tsv")).unwrap();
    assert!(set.len() >= 100, "{}", set.len());
    for label in EMOTION_LABELS {
        assert!(
            set.iter().filter(|(l, _)| l == label).count() >= 5,
            "label {label} has too few sentences"
        );
    }
    assert!(parse_labelled("glee\tyay\n").is_err());
    assert!(parse_labelled("joy yay\n").is_err());
}
