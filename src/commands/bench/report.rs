//! The bench's report: the machine it ran on, and the tables printed without `--json`.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use whisperfleet_shared::wire::Stage;

use super::cpu;

pub(super) fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    json!({
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "cpu": cpu,
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "os": std::env::consts::OS,
        "profile": if cfg!(debug_assertions) { "debug" } else { "release" },
    })
}

pub(super) fn print_tables(out: &Value) {
    for (name, p) in out["pipelines"].as_object().into_iter().flatten() {
        println!(
            "\n{name}: {:.1} turns/s over {} turns ({} ok) with {} worker(s)",
            p["throughput_tps"].as_f64().unwrap_or(0.0),
            p["turns"],
            p["ok"],
            p["workers"]
        );
        println!(
            "  {:<14} {:>9} {:>9} {:>9}",
            "stage (ms)", "p50", "p95", "p99"
        );
        for stage in Stage::ALL {
            let s = &p["stages"][stage.as_str()];
            if s.is_null() {
                continue;
            }
            println!(
                "  {:<14} {:>9.2} {:>9.2} {:>9.2}",
                stage.as_str(),
                s["p50"].as_f64().unwrap_or(0.0),
                s["p95"].as_f64().unwrap_or(0.0),
                s["p99"].as_f64().unwrap_or(0.0)
            );
        }
        if let Some(m) = p["memory_backend"].as_str() {
            println!("  vector memory: {m}");
        }
        let cpu = &p["cpu"];
        if cpu.is_object() {
            println!(
                "  CPU per turn (ms), over {:.1} s: fleet's own processes {:.2}, machine {:.2}",
                cpu["window_s"].as_f64().unwrap_or(0.0),
                cpu["own_ms_per_turn"].as_f64().unwrap_or(0.0),
                cpu["machine_ms_per_turn"].as_f64().unwrap_or(0.0)
            );
            for f in cpu::FAMILIES {
                let v = &cpu["families"][f];
                println!(
                    "    {f:<42} {:>7.3} ms  {:>5.2} cores",
                    v["ms_per_turn"].as_f64().unwrap_or(0.0),
                    v["cores"].as_f64().unwrap_or(0.0)
                );
            }
        }
        if p["broker_packets"].is_object() {
            println!(
                "  broker socket reads/writes per turn: {:.2} / {:.2}",
                p["broker_packets"]["received_per_turn"]
                    .as_f64()
                    .unwrap_or(0.0),
                p["broker_packets"]["sent_per_turn"].as_f64().unwrap_or(0.0)
            );
        }
        println!("  per turn:");
        let mut counts: BTreeMap<&str, f64> = BTreeMap::new();
        for (k, v) in p["per_turn"].as_object().into_iter().flatten() {
            counts.insert(k, v.as_f64().unwrap_or(0.0));
        }
        for (k, v) in counts {
            println!("    {k:<24} {v:>8.2}");
        }
    }
    for (p, s) in out["streaming"].as_object().into_iter().flatten() {
        let ms = |v: &Value| v.as_f64().unwrap_or(f64::NAN);
        for stage in ["first_visible", "end_to_end"] {
            println!(
                "{p} {stage:<14} stream on p50 {:>8.1} p99 {:>8.1} · off p50 {:>8.1} p99 {:>8.1} ms",
                ms(&s[stage]["stream_on"]["p50"]),
                ms(&s[stage]["stream_on"]["p99"]),
                ms(&s[stage]["stream_off"]["p50"]),
                ms(&s[stage]["stream_off"]["p99"]),
            );
        }
        let fw = &s["first_visible_minus_llm_first_token"];
        println!(
            "{p} first_visible − llm_first_token (streamed): p50 {:.1} p99 {:.1} ms",
            ms(&fw["p50"]),
            ms(&fw["p99"])
        );
    }
    for (n, m) in out["memory_scale"].as_object().into_iter().flatten() {
        println!(
            "memory scale: {n:>6} memories of one user → context p50 {:.2} p99 {:.2} ms, overhead p50 {:.2} ms ({})",
            m["context"]["p50"].as_f64().unwrap_or(f64::NAN),
            m["context"]["p99"].as_f64().unwrap_or(f64::NAN),
            m["overhead"]["p50"].as_f64().unwrap_or(f64::NAN),
            m["memory_backend"].as_str().unwrap_or("?")
        );
    }
    for (k, v) in out["ratio"].as_object().into_iter().flatten() {
        println!(
            "ratio naive/optimized {k}: {:.2}",
            v.as_f64().unwrap_or(0.0)
        );
    }
    for (p, counts) in out["scaling"].as_object().into_iter().flatten() {
        for (w, tps) in counts.as_object().into_iter().flatten() {
            println!(
                "scaling {p}: {w} worker(s) → {:.1} turns/s",
                tps.as_f64().unwrap_or(0.0)
            );
        }
    }
}
