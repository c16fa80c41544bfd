//! Emotion analysis backends: the built-in lexicon analyzer.

#[cfg(feature = "builtin")]
pub mod lexicon;
