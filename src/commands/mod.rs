//! The operator CLI's commands, one module each: `main` parses the command line and calls
//! the matching `run`. `up`, `chat` and `bench` run the fleet through `crate::fleet`.

pub mod bench;
pub mod characters;
pub mod chat;
pub mod doctor;
pub mod memory;
pub mod mock_llm;
pub mod queues;
pub mod up;
