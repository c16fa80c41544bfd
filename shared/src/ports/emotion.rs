//! The emotion analysis port and the original platform's label set.

use serde::{Deserialize, Serialize};

/// The original platform's emotion labels.
pub const EMOTION_LABELS: [&str; 12] = [
    "anger",
    "anticipation",
    "disgust",
    "fear",
    "joy",
    "love",
    "optimism",
    "pessimism",
    "sadness",
    "surprise",
    "trust",
    "neutral",
];

/// One text's emotion: the label that won, how strongly it is expressed, and how sure the
/// analyzer is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmotionResult {
    /// One of [`EMOTION_LABELS`].
    pub primary: String,
    /// How strongly the emotion is expressed, 0..1.
    pub intensity: f32,
    /// How sure the analyzer is of `primary`, 0..1.
    pub confidence: f32,
    /// Other labels with their score, best first, at most 3.
    pub secondary: Vec<(String, f32)>,
}

/// Runs once per text per turn; pure and synchronous so a model-backed implementation can
/// replace it behind the same trait (wrapped in spawn_blocking if slow).
pub trait EmotionAnalyzer: Send + Sync + 'static {
    fn analyze(&self, text: &str) -> EmotionResult;
    fn describe(&self) -> String;
}
