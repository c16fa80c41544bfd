//! Micro-benchmarks for the metric-event path: the worker encoding one turn's points as line
//! protocol (`whisperfleet_shared::lineproto::encode`) and the metrics-writer parsing and
//! validating such a body (`batch::validate`). Inputs are built once, outside the timed loops.
//!
//! Run: `cargo bench -p whisperfleet-metrics-writer --bench lineproto`.

use std::hint::black_box;

use chrono::{DateTime, Utc};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use whisperfleet_metrics_writer::batch::validate;
use whisperfleet_shared::lineproto::{Point, encode};

/// Stage timings of a turn point (`<stage>_ms` fields), in milliseconds.
const STAGES: [(&str, f64); 12] = [
    ("queue_wait", 0.412),
    ("request_cache", 0.087),
    ("cdl_load", 0.953),
    ("context", 2.318),
    ("emotion", 0.021),
    ("memory_search", 1.734),
    ("compose", 0.145),
    ("llm", 742.906),
    ("reply_publish", 0.389),
    ("memory_store", 3.127),
    ("metrics", 0.052),
    ("end_to_end", 751.664),
];

/// One typical turn's points, shaped like the worker's `turn_points` + `memory_points`:
/// `turn` (12 stage floats + 8 counters), `cache`, two `emotion`, `relationship`, `memory` —
/// 19 float fields and 13 integer counters over 6 points.
fn turn_points() -> Vec<Point> {
    let now: DateTime<Utc> =
        DateTime::from_timestamp(1_750_000_000, 123_456_789).expect("valid timestamp");
    let character = "nora_halvorsen";
    let mut turn = Point::new("turn", now)
        .tag("character", character)
        .tag("platform", "discord")
        .tag("outcome", "ok");
    for (stage, ms) in STAGES {
        turn = turn.float(&format!("{stage}_ms"), ms);
    }
    let turn = turn
        .int("cdl_queries", 0)
        .int("emotion_queries", 1)
        .int("memories_used", 4)
        .int("memory_searches", 1)
        .int("llm_calls", 1)
        .int("redis_round_trips", 3)
        .int("text_chars", 78)
        .int("reply_chars", 241);
    let cache = Point::new("cache", now)
        .tag("character", character)
        .int("hits", 2)
        .int("misses", 0);
    let emotion = |role: &str, label: &str, intensity: f64, confidence: f64| {
        Point::new("emotion", now)
            .tag("character", character)
            .tag("role", role)
            .tag("emotion", label)
            .float("intensity", intensity)
            .float("confidence", confidence)
    };
    let relationship = Point::new("relationship", now)
        .tag("character", character)
        .float("trust", 0.64)
        .float("affection", 0.58)
        .float("attunement", 0.5)
        .int("interactions", 14);
    let memory = Point::new("memory", now)
        .tag("character", character)
        .int("upserts", 2)
        .int("memory_store_failed", 0);
    vec![
        turn,
        cache,
        emotion("user", "sadness", 0.62, 0.71),
        emotion("assistant", "trust", 0.44, 0.58),
        relationship,
        memory,
    ]
}

/// Encoding one turn's six points into a metric-event body (what each worker does per turn).
fn encode_turn(c: &mut Criterion) {
    let points = turn_points();
    let body_len = encode(&points).len() as u64;
    let mut g = c.benchmark_group("lineproto");
    g.throughput(Throughput::Bytes(body_len));
    g.bench_function("encode_turn_points", |b| {
        b.iter(|| encode(black_box(&points)))
    });
    g.finish();
}

/// Parsing and validating one turn's metric-event body (what the metrics-writer does per
/// event before batching it).
fn validate_turn(c: &mut Criterion) {
    let body = encode(&turn_points()).into_bytes();
    assert_eq!(
        validate(&body).map(|l| l.len()),
        Ok(6),
        "the sample body is valid"
    );
    let mut g = c.benchmark_group("lineproto");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function("validate_turn_body", |b| {
        b.iter(|| validate(black_box(&body)))
    });
    g.finish();
}

criterion_group!(benches, encode_turn, validate_turn);
criterion_main!(benches);
