//! placeholder

pub mod llm;
pub mod mock_llm;
