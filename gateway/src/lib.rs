//! The thin gateway: platform adapters turn messages into `TurnRequest`s on the `turns`
//! queue and deliver the replies that come back on `replies.<gateway-id>`. It holds no
//! character, prompt, memory or LLM logic.

pub mod conversations;
pub mod discord;
pub mod gateway;
pub mod http;
pub mod router;
pub mod startup;
pub mod terminal;
