//! The prompt's layout contract between the composer (the worker's `prompt` module, which
//! writes the system message) and readers of prompts (the offline responder, which answers
//! from it): the section kinds with their order and headings, the "You are talking with …"
//! line, the token estimate, the sensitive-topic classifier both sides must agree on, and
//! the hygiene every piece of user text passes before it enters a prompt (`hygiene`), so
//! user text can never forge that layout.
//!
//! Only what both sides rely on lives here; the builders, the guidance text and the budget
//! rules stay with the composer. Change a heading or the classifier here and both sides move
//! together.

pub mod hygiene;
mod layout;
mod sensitive;

pub use layout::{ComponentKind, TALKING_WITH, estimate_tokens};
pub use sensitive::{SensitiveTopic, detect_sensitive_topics, has_phrase, words_of};
