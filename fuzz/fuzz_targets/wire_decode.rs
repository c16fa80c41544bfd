//! The wire decoder against arbitrary bodies: every message a worker or gateway takes off
//! the broker goes through `TurnRequest::decode` / `TurnReply::decode`, and a body that
//! cannot be read is dead-lettered using `salvage_reply_address`. None of them may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use whisperfleet_shared::wire::{TurnReply, TurnRequest, salvage_reply_address};

fuzz_target!(|body: &[u8]| {
    if let Ok(turn) = TurnRequest::decode(body) {
        // A decoded turn is one the worker can key and re-encode.
        let _ = turn.conversation_key();
        let again = TurnRequest::decode(&turn.encode()).expect("a decoded turn re-decodes");
        assert_eq!(again.turn_id, turn.turn_id);
    }
    if let Ok(reply) = TurnReply::decode(body) {
        let _ = TurnReply::decode(&reply.encode()).expect("a decoded reply re-decodes");
    }
    let _ = salvage_reply_address(body);
});
