//! The prompt's layout contract between the composer (the worker's `prompt` module, which
//! writes the system message) and readers of prompts (the offline responder, which answers
//! from it): the section kinds with their order and headings, the "You are talking with …"
//! line, the token estimate, and the sensitive-topic classifier both sides must agree on.
//!
//! Only what both sides rely on lives here; the builders, the guidance text and the budget
//! rules stay with the composer. Change a heading or the classifier here and both sides move
//! together.

mod layout;
mod sensitive;

pub use layout::{ComponentKind, TALKING_WITH, estimate_tokens};
pub use sensitive::{SensitiveTopic, detect_sensitive_topics, has_phrase, words_of};
