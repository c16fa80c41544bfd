//! LLM backends: any OpenAI-compatible chat completions endpoint.

#[cfg(feature = "openai")]
pub mod openai;
