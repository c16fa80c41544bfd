//! The lexicon analyzer's tokenizer: words (lowercased, stretched letters squeezed and
//! remembered as emphasis), emoji, ASCII emoticons and clause breaks.

use std::collections::HashMap;

use super::{Entry, MAX_EMOTICON_BYTES};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Word,
    /// An emoji or emoticon.
    Symbol,
    /// A clause break; `text` holds the character.
    Break,
}

#[derive(Debug, Clone)]
pub(super) struct Token {
    /// Lowercased, runs of 3+ equal letters squeezed to 2 ("goooood" → "good").
    pub(super) text: String,
    pub(super) kind: Kind,
    /// Written in capitals ("HAPPY").
    pub(super) shout: bool,
    /// Had a run of 3+ equal letters ("happyyy").
    pub(super) stretched: bool,
    /// For stretched words, runs squeezed to 1 ("sooo" → "so", "happyyy" → "happy").
    pub(super) squeezed: Option<String>,
}

impl Token {
    fn symbol(text: String) -> Self {
        Self {
            text,
            kind: Kind::Symbol,
            shout: false,
            stretched: false,
            squeezed: None,
        }
    }

    fn brk(c: char) -> Self {
        Self {
            text: c.to_string(),
            kind: Kind::Break,
            shout: false,
            stretched: false,
            squeezed: None,
        }
    }
}

/// Splits `text` into tokens (see the module docs). `emoticons` decides which
/// punctuation-bearing chunks are emoticons; only its keys with punctuation matter.
pub(super) fn tokenize(text: &str, emoticons: &HashMap<String, Entry>, out: &mut Vec<Token>) {
    out.clear();
    let mut word = String::new();
    for chunk in text.split_whitespace() {
        if chunk.len() <= MAX_EMOTICON_BYTES
            && chunk.contains(|c: char| c.is_ascii_punctuation())
            && emoticons.contains_key(chunk)
        {
            out.push(Token::symbol(chunk.to_owned()));
            continue;
        }
        let mut chars = chunk.chars().peekable();
        while let Some(c) = chars.next() {
            if c.is_alphanumeric() {
                word.push(c);
            } else if matches!(c, '\'' | '’' | 'ʼ' | '‘') {
                // Inside a word only ("can't"); quotes around words are dropped.
                if !word.is_empty() && chars.peek().is_some_and(|n| n.is_alphanumeric()) {
                    word.push('\'');
                }
            } else if is_break(c) {
                flush_word(&mut word, out);
                out.push(Token::brk(c));
            } else if (c as u32) >= 0x2190 {
                flush_word(&mut word, out);
                if !is_ignorable_mark(c) {
                    out.push(Token::symbol(c.to_string()));
                }
            } else {
                flush_word(&mut word, out);
            }
        }
        flush_word(&mut word, out);
    }
}

pub(super) fn is_break(c: char) -> bool {
    matches!(
        c,
        '.' | ',' | ';' | ':' | '!' | '?' | '…' | '(' | ')' | '—' | '–' | '"' | '“' | '”'
    )
}

/// Emoji modifiers that carry no emotion of their own: variation selectors, zero-width
/// joiner, skin tones, keycap.
pub(super) fn is_ignorable_mark(c: char) -> bool {
    matches!(
        c as u32,
        0xFE0E | 0xFE0F | 0x200D | 0x20E3 | 0x1F3FB..=0x1F3FF
    )
}

pub(super) fn flush_word(word: &mut String, out: &mut Vec<Token>) {
    if word.is_empty() {
        return;
    }
    let letters = word.chars().filter(|c| c.is_alphabetic()).count();
    let shout = letters >= 2 && !word.chars().any(char::is_lowercase);
    let lower = word.to_lowercase();
    word.clear();

    let mut text = String::with_capacity(lower.len());
    let mut squeezed = String::new();
    let mut stretched = false;
    let mut run = 0usize;
    let mut prev = None;
    for c in lower.chars() {
        run = if Some(c) == prev { run + 1 } else { 1 };
        prev = Some(c);
        if run <= 2 {
            text.push(c);
        } else {
            stretched = true;
        }
    }
    if stretched {
        // Second pass: squeeze only the runs that were stretched, keeping real doubles.
        let mut chars = lower.chars().peekable();
        while let Some(c) = chars.next() {
            let mut n = 1;
            while chars.peek() == Some(&c) {
                chars.next();
                n += 1;
            }
            let keep = if n >= 3 { 1 } else { n };
            squeezed.extend(std::iter::repeat_n(c, keep));
        }
    }
    out.push(Token {
        text,
        kind: Kind::Word,
        shout,
        stretched,
        squeezed: stretched.then_some(squeezed),
    });
}
