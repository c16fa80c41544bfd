//! LLM backends: any OpenAI-compatible chat completions endpoint, and the built-in offline
//! responder used when none is configured.

#[cfg(feature = "builtin")]
pub mod offline;
#[cfg(feature = "openai")]
pub mod openai;
