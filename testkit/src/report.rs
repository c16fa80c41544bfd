//! What fault tests observed, as rows of `docs/RELIABILITY.md`: when
//! `WHISPERFLEET_RELIABILITY_OUT` names a file (`scripts/reliability` sets it), a fault test
//! appends one JSON line per scenario; the script renders the table. Without it, nothing is
//! written and the tests only assert.

use std::io::Write;

use serde::Serialize;

/// One fault scenario as it ran.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The fault, in plain words.
    pub fault: String,
    /// The load while it happened (conversations, turns in flight, LLM latency).
    pub load: String,
    pub turns: usize,
    /// Turns whose user got an answer (a reply at the broker, or delivered).
    pub answered: usize,
    /// Replies published beyond the first, over all turns (counted at the broker).
    pub duplicate_replies: usize,
    /// Turns nobody saw that a later prompt or memory presented as said.
    pub unseen_in_history: usize,
    /// Deliveries of `turns` still unacked after recovery.
    pub stuck_unacked: u64,
    /// p99 of receipt → reply over the scenario's turns, in ms.
    pub p99_ms: f64,
}

/// Appends `row` when a report is being collected.
pub fn record(row: &Row) {
    let Ok(path) = std::env::var("WHISPERFLEET_RELIABILITY_OUT") else {
        return;
    };
    let line = serde_json::to_string(row).expect("row serializes");
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .unwrap_or_else(|e| panic!("opening {path}: {e}"));
    writeln!(f, "{line}").unwrap_or_else(|e| panic!("writing {path}: {e}"));
}

/// The 99th percentile (nearest rank) of `xs`, 0 when empty.
pub fn p99(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((0.99 * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}
