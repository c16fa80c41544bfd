//! The operator CLI's commands, one module each: `main` parses the command line and calls
//! the matching `run`. `up` and `chat` run the fleet through `crate::fleet`; `bench` runs the
//! fleet's own binaries as processes.

pub mod bench;
pub mod characters;
pub mod chat;
pub mod doctor;
pub mod memory;
pub mod mock_llm;
pub mod queues;
pub mod up;
