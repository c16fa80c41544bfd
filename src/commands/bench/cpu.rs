//! CPU per turn per process family, from Linux's own accounting (`/proc`), read before and
//! after the measured window: what the gateway, the workers, the metrics-writer, RabbitMQ,
//! Redis, PostgreSQL and the vector-memory backend each spent, and apart from them what the
//! bench's own load generator and mock LLM spent (they are not part of the fleet's cost).
//!
//! A process's CPU is its `utime + stime` (`/proc/<pid>/stat`). Servers that fork a process
//! per connection or per helper (PostgreSQL, RabbitMQ's port programs) also count their
//! reaped children (`cutime + cstime`), so a backend that exits inside the window is not
//! lost. The embedded vector memory runs inside the workers, on sqlx's SQLite threads
//! (`sqlx-sqlite-worker-N`): those threads are counted apart from the rest of the worker.
//! What no process accounts for (interrupts, kernel threads) is the machine's busy time
//! (`/proc/stat`) minus every process: shown as "kernel".

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Instant;

use serde_json::{Value, json};

/// The processes the bench started, by role.
#[derive(Debug, Default, Clone)]
pub struct Roles {
    pub bench: u32,
    pub gateway: Vec<u32>,
    pub workers: Vec<u32>,
    pub writer: Vec<u32>,
    pub mock_llm: Vec<u32>,
}

/// Families in report order; the first four are the fleet's own processes.
pub const FAMILIES: [&str; 12] = [
    "gateway",
    "workers",
    "vector memory (embedded, in the workers)",
    "metrics-writer",
    "rabbitmq",
    "redis",
    "postgresql",
    "qdrant",
    "kernel",
    "other processes",
    "load generator (bench)",
    "mock llm",
];

/// What counts as "the fleet's own processes" (the "our own processes").
const OWN: [&str; 4] = [
    "gateway",
    "workers",
    "vector memory (embedded, in the workers)",
    "metrics-writer",
];

#[derive(Debug, Clone, Copy, Default)]
struct Ticks {
    own: u64,
    children: u64,
}

/// One reading of every process's (and the workers' SQLite threads') CPU ticks.
pub struct Snapshot {
    at: Instant,
    procs: HashMap<u32, (String, Ticks)>,
    /// Per worker pid: ticks of its SQLite threads (`tid` → ticks).
    sqlite_threads: HashMap<u32, HashMap<u32, u64>>,
    machine_busy: u64,
}

/// `(comm, ppid, ticks)` from a `/proc/<pid>/stat` or `/proc/<pid>/task/<tid>/stat` line.
fn parse_stat(line: &str) -> Option<(String, u32, Ticks)> {
    // The command name is in parentheses and may itself contain spaces or ')'.
    let open = line.find('(')?;
    let close = line.rfind(')')?;
    let comm = line.get(open + 1..close)?.to_string();
    let rest: Vec<&str> = line.get(close + 1..)?.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14.
    let n = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok());
    let ppid = rest.get(1)?.parse().ok()?;
    Some((
        comm,
        ppid,
        Ticks {
            own: n(11)? + n(12)?,
            children: n(13)? + n(14)?,
        },
    ))
}

fn machine_busy() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(cpu) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return 0;
    };
    let v: Vec<u64> = cpu
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    [0usize, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| v.get(i))
        .sum()
}

impl Snapshot {
    pub fn take(roles: &Roles) -> Self {
        let mut procs = HashMap::new();
        let mut kernel_threads = HashSet::new();
        if let Ok(dir) = std::fs::read_dir("/proc") {
            for e in dir.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                    continue;
                };
                let Ok(line) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                    continue;
                };
                if let Some((comm, ppid, t)) = parse_stat(&line) {
                    // Kernel threads (children of kthreadd) are the kernel's own time.
                    if ppid == 2 || pid == 2 {
                        kernel_threads.insert(pid);
                        continue;
                    }
                    procs.insert(pid, (comm, t));
                }
            }
        }
        let mut sqlite_threads = HashMap::new();
        for &pid in &roles.workers {
            let mut threads = HashMap::new();
            if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
                for e in dir.flatten() {
                    let Some(tid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok())
                    else {
                        continue;
                    };
                    if let Ok(line) =
                        std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat"))
                        && let Some((comm, _, t)) = parse_stat(&line)
                        && comm.starts_with("sqlx-sqlite")
                    {
                        threads.insert(tid, t.own);
                    }
                }
            }
            sqlite_threads.insert(pid, threads);
        }
        Self {
            at: Instant::now(),
            procs,
            sqlite_threads,
            machine_busy: machine_busy(),
        }
    }
}

/// The family a process belongs to, by the bench's roles first, then by command name.
fn family(pid: u32, comm: &str, roles: &Roles) -> &'static str {
    if pid == roles.bench {
        "load generator (bench)"
    } else if roles.gateway.contains(&pid) {
        "gateway"
    } else if roles.workers.contains(&pid) {
        "workers"
    } else if roles.writer.contains(&pid) {
        "metrics-writer"
    } else if roles.mock_llm.contains(&pid) {
        "mock llm"
    } else {
        match comm {
            "beam.smp" | "epmd" | "erl_child_setup" | "inet_gethost" => "rabbitmq",
            "redis-server" => "redis",
            "postgres" => "postgresql",
            c if c.starts_with("qdrant") => "qdrant",
            _ => "other processes",
        }
    }
}

/// Whether a family's reaped children are its own work (servers that fork helpers), rather
/// than processes accounted on their own (the bench reaps the fleet it started).
fn counts_children(family: &str) -> bool {
    matches!(family, "rabbitmq" | "postgresql" | "redis" | "qdrant")
}

/// CPU milliseconds per turn per family over the window `before..after`, with the machine's
/// busy time and what the fleet's own processes spent, as JSON for the report.
pub fn per_turn(before: &Snapshot, after: &Snapshot, roles: &Roles, turns: usize) -> Value {
    let tick_ms = 1000.0 / clock_ticks_per_second();
    let mut ticks: BTreeMap<&'static str, u64> = BTreeMap::new();
    for (pid, (comm, t1)) in &after.procs {
        let f = family(*pid, comm, roles);
        // A process that started inside the window counts from zero; one that ended is
        // gone from `after` (its CPU is in its parent's children time, where that counts).
        let t0 = before
            .procs
            .get(pid)
            .filter(|(c, _)| c == comm)
            .map(|(_, t)| *t)
            .unwrap_or_default();
        let mut d = t1.own.saturating_sub(t0.own);
        if counts_children(f) {
            d += t1.children.saturating_sub(t0.children);
        }
        *ticks.entry(f).or_default() += d;
    }
    let mut sqlite = 0u64;
    for (pid, threads) in &after.sqlite_threads {
        for (tid, t1) in threads {
            let t0 = before
                .sqlite_threads
                .get(pid)
                .and_then(|m| m.get(tid))
                .copied()
                .unwrap_or(0);
            sqlite += t1.saturating_sub(t0);
        }
    }
    let workers = ticks.entry("workers").or_default();
    let sqlite = sqlite.min(*workers);
    *workers -= sqlite;
    ticks.insert("vector memory (embedded, in the workers)", sqlite);
    let busy = after.machine_busy.saturating_sub(before.machine_busy);
    let accounted: u64 = ticks.values().sum();
    ticks.insert("kernel", busy.saturating_sub(accounted));

    let window_s = after.at.duration_since(before.at).as_secs_f64();
    let n = turns.max(1) as f64;
    let ms = |t: u64| t as f64 * tick_ms / n;
    let mut families = serde_json::Map::new();
    for f in FAMILIES {
        let t = ticks.get(f).copied().unwrap_or(0);
        families.insert(
            f.to_string(),
            json!({
                "ms_per_turn": ms(t),
                // Average cores busy over the window.
                "cores": t as f64 * tick_ms / 1000.0 / window_s.max(1e-9),
            }),
        );
    }
    let own: u64 = OWN.iter().filter_map(|f| ticks.get(f)).sum();
    let harness: u64 = ["load generator (bench)", "mock llm"]
        .iter()
        .filter_map(|f| ticks.get(f))
        .sum();
    json!({
        "window_s": window_s,
        "tick_ms": tick_ms,
        "families": families,
        "own_ms_per_turn": ms(own),
        "machine_ms_per_turn": ms(busy),
        // Everything the machine spent but the bench's own load generator and mock LLM.
        "fleet_and_backends_ms_per_turn": ms(busy.saturating_sub(harness)),
    })
}

/// USER_HZ, the unit of `/proc`'s CPU times (100 on every mainstream Linux build).
fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .trim()
                .parse::<f64>()
                .ok()
        })
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_with_odd_command_names_parse() {
        let line =
            "4242 (sqlx-sqlite-wor) S 1 4242 4242 0 -1 4194560 100 0 0 0 17 5 3 2 20 0 9 0 1 0";
        let (comm, ppid, t) = parse_stat(line).unwrap();
        assert_eq!(
            (comm.as_str(), ppid, t.own, t.children),
            ("sqlx-sqlite-wor", 1, 22, 5)
        );
        let odd = "7 (a) b (c)) R 2 7 7 0 -1 0 0 0 0 0 40 2 0 0 20 0 1 0 1 0";
        let (comm, ppid, t) = parse_stat(odd).unwrap();
        assert_eq!((comm.as_str(), ppid, t.own), ("a) b (c)", 2, 42));
        assert!(parse_stat("garbage").is_none());
    }

    #[test]
    fn this_process_burning_cpu_is_counted_as_the_load_generator() {
        let roles = Roles {
            bench: std::process::id(),
            ..Roles::default()
        };
        let before = Snapshot::take(&roles);
        // Spin until the kernel has charged this process 30 ticks more (not a wall-clock
        // span: the machine may be busy with other tests).
        let mine = || {
            let line = std::fs::read_to_string("/proc/self/stat").unwrap();
            parse_stat(&line).unwrap().2.own
        };
        let start = mine();
        let deadline = Instant::now() + std::time::Duration::from_secs(60);
        let mut x = 0u64;
        while mine() < start + 30 && Instant::now() < deadline {
            for _ in 0..100_000 {
                x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
            }
        }
        std::hint::black_box(x);
        let after = Snapshot::take(&roles);
        let r = per_turn(&before, &after, &roles, 10);
        let tick_ms = r["tick_ms"].as_f64().unwrap();
        let me = r["families"]["load generator (bench)"]["ms_per_turn"]
            .as_f64()
            .unwrap();
        // 30 ticks over 10 turns: at least 3 ticks' worth per turn.
        assert!(me >= 3.0 * tick_ms, "{r}");
        assert!(r["machine_ms_per_turn"].as_f64().unwrap() >= me, "{r}");
        assert_eq!(r["families"]["gateway"]["ms_per_turn"], 0.0, "{r}");
    }
}
