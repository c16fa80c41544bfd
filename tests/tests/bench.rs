//! `whisperfleet bench` on real RabbitMQ/Redis/PostgreSQL: it runs to completion, prints
//! the documented JSON, and its counts are the backends' own (PostgreSQL statistics, the
//! InfluxDB-API stand-in's request count), showing the seed's pattern for `naive` and its
//! absence for `optimized`. Numbers of milliseconds are never asserted.

use serde_json::Value;
use whisperfleet_testkit::*;

#[tokio::test(flavor = "multi_thread")]
async fn bench_both_pipelines_reports_honest_counts() {
    let fleet = Fleet::new("bench").unwrap();
    let out = fleet
        .cli(&[
            "bench",
            "--turns",
            "40",
            "--concurrency",
            "8",
            "--conversations",
            "10",
            "--workers",
            "1",
            "--pipeline",
            "both",
            "--json",
        ])
        .unwrap();
    let v: Value = serde_json::from_str(out.lines().last().unwrap()).expect("bench prints JSON");
    for name in ["optimized", "naive"] {
        let p = &v["pipelines"][name];
        assert_eq!(p["turns"], 40, "{name}");
        assert_eq!(p["ok"], 40, "{name}: every turn answered");
        assert!(p["throughput_tps"].as_f64().unwrap() > 0.0);
        for stage in [
            "queue_wait",
            "cdl_load",
            "context",
            "compose",
            "llm",
            "end_to_end",
            "overhead",
        ] {
            for q in ["p50", "p95", "p99"] {
                assert!(p["stages"][stage][q].is_number(), "{name} {stage} {q}");
            }
        }
    }
    let o = &v["pipelines"]["optimized"]["per_turn"];
    let n = &v["pipelines"]["naive"]["per_turn"];
    let f = |x: &Value| x.as_f64().unwrap();
    // Character loads as PostgreSQL counted them: ≤ 1 per turn (the first of each worker),
    // against the seed's one per prompt component.
    assert!(f(&o["cdl_queries"]) <= 1.0, "{o}");
    assert!(f(&n["cdl_queries"]) >= 6.0, "{n}");
    assert_eq!(
        f(&o["cdl_queries_reported"]),
        0.0,
        "warm turns load no character"
    );
    // The pipeline's own claim agrees with the database's count for naive.
    assert!(
        (f(&n["cdl_queries"]) - f(&n["cdl_queries_reported"])).abs() < 1.5,
        "{n}"
    );
    assert_eq!(f(&o["emotion_queries"]), 1.0);
    assert!(f(&n["emotion_queries"]) > 1.0);
    // InfluxDB write requests, counted by the server: batched ≪ 1 per turn; naive one per point.
    assert!(f(&o["influx_writes"]) < 1.0, "{o}");
    assert!(f(&n["influx_writes"]) >= 5.0, "{n}");
    // Request cache hits by level: shared within turns, none from Redis (nothing redelivered).
    assert!(f(&o["request_cache_local_hits"]) >= 0.0, "{o}");
    assert_eq!(f(&o["request_cache_redis_hits"]), 0.0, "{o}");
    assert!(v["ratio"]["overhead_p50"].is_number());
    assert!(v["machine"]["cpus"].as_u64().unwrap() >= 1);
    // CPU per process family from /proc: the fleet's processes apart from the harness.
    for name in ["optimized", "naive"] {
        let p = &v["pipelines"][name];
        let cpu = &p["cpu"];
        let ms = |family: &str| {
            cpu["families"][family]["ms_per_turn"]
                .as_f64()
                .unwrap_or_else(|| panic!("{name}: no CPU figure for {family}: {cpu}"))
        };
        for family in [
            "gateway",
            "workers",
            "vector memory (embedded, in the workers)",
            "metrics-writer",
            "rabbitmq",
            "redis",
            "postgresql",
            "kernel",
            "load generator (bench)",
            "mock llm",
        ] {
            assert!(ms(family) >= 0.0, "{name} {family}");
        }
        // Each of these ran code for every turn in its own process.
        assert!(ms("gateway") > 0.0, "{name}: {cpu}");
        assert!(ms("workers") > 0.0, "{name}: {cpu}");
        let own = f(&cpu["own_ms_per_turn"]);
        assert!(own > 0.0 && own <= f(&cpu["machine_ms_per_turn"]), "{cpu}");
        assert!(
            p["memory_backend"].as_str().unwrap().contains("embedded"),
            "{}",
            p["memory_backend"]
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_measures_context_against_one_users_stored_memories() {
    let fleet = Fleet::new("bench_memscale").unwrap();
    let out = fleet
        .cli(&[
            "bench",
            "--turns",
            "6",
            "--workers",
            "1",
            "--pipeline",
            "optimized",
            "--memory-scale",
            "0,300",
            "--json",
        ])
        .unwrap();
    let v: Value = serde_json::from_str(out.lines().last().unwrap()).expect("bench prints JSON");
    let scale = &v["memory_scale"];
    for n in ["0", "300"] {
        assert!(scale[n]["context"]["p50"].is_number(), "{n}: {scale}");
        assert!(
            scale[n]["memory_backend"]
                .as_str()
                .unwrap()
                .contains("embedded"),
            "{scale}"
        );
    }
    // The seeded memories are the user's, in the store the workers searched: read back
    // after the run, beside the two each turn (warm-up included) stored.
    let after = |n: &str| scale[n]["user_memories_after"].as_u64().unwrap();
    assert!(after("0") > 0 && after("0") < 300, "{scale}");
    assert_eq!(after("300"), 300 + after("0"), "{scale}");
    assert!(scale["300"]["memories_used_per_turn"].as_f64().unwrap() > 0.0);
}

#[tokio::test(flavor = "multi_thread")]
async fn bench_compares_first_visible_with_streaming_on_and_off_in_one_run() {
    let fleet = Fleet::new("bench_stream").unwrap();
    let out = fleet
        .cli(&[
            "bench",
            "--turns",
            "16",
            "--concurrency",
            "4",
            "--conversations",
            "8",
            "--workers",
            "1",
            "--pipeline",
            "optimized",
            "--stream",
            "both",
            "--llm-ttft-ms",
            "100",
            "--llm-tokens-per-s",
            "100",
            "--llm-reply-tokens",
            "40",
            "--json",
        ])
        .unwrap();
    let v: Value = serde_json::from_str(out.lines().last().unwrap()).expect("bench prints JSON");
    let f = |x: &Value| x.as_f64().unwrap_or_else(|| panic!("not a number: {x}"));
    for (name, streamed) in [("optimized", false), ("optimized+stream", true)] {
        let p = &v["pipelines"][name];
        assert_eq!(p["ok"], 16, "{name}");
        assert_eq!(p["stream"], streamed, "{name}");
        assert!(p["stages"]["first_visible"]["p50"].is_number(), "{name}");
    }
    let s = &v["streaming"]["optimized"];
    // Streamed, the first words show before the answer is complete; not streamed, they
    // show with it.
    assert!(f(&s["first_visible"]["stream_on"]["p50"]) < f(&s["end_to_end"]["stream_on"]["p50"]));
    assert_eq!(
        f(&s["first_visible"]["stream_off"]["p50"]),
        f(&s["end_to_end"]["stream_off"]["p50"])
    );
    assert!(
        f(&s["first_visible"]["stream_on"]["p50"]) < f(&s["first_visible"]["stream_off"]["p50"])
    );
    assert!(s["first_visible_minus_llm_first_token"]["p99"].is_number());
}
