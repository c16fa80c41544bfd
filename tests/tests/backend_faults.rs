//! A worker whose Redis or PostgreSQL stops answering (black hole) or drops its connections
//! (reset), through a per-test [`TcpProxy`] in front of the shared service: turns keep being
//! answered — degraded, and saying so in `counters.context_degraded`, or with a fallback —
//! every reply arrives within a bound derived from the configured timeouts, and once the
//! proxy forwards again the turns are normal again (the worker dropped the dead connections
//! instead of waiting on them forever).
//!
//! PostgreSQL queries take a millisecond, so a black hole would rarely catch one in flight:
//! the test holds a lock on `relationships` (from its own direct connection) to keep the
//! worker's query waiting, then black-holes the proxy under it. The same lock, held longer
//! than the timeout without a black hole, is a slow database (`statement_timeout`).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::Connection;
use whisperfleet_testkit::report;
use whisperfleet_testkit::*;

/// The backend timeout the tests configure (ms); small, so a test does not wait long.
const TIMEOUT_MS: u64 = 400;

/// How long one turn may take while a backend is gone: generous against the timeout (a turn
/// makes a few dozen backend calls, most of them in parallel or skipped once one failed),
/// far below "hangs" (the gateway's reply timeout, which the tests set higher still).
fn turn_budget() -> Duration {
    Duration::from_millis(TIMEOUT_MS * 40)
}

/// Posts one turn and fails the test when no reply arrives within [`turn_budget`].
async fn bounded_turn(client: &reqwest::Client, base: &str, text: &str) -> Value {
    let body = json!({"character": "Nora Halvorsen", "user_id": "u-faults", "text": text});
    let started = Instant::now();
    let (status, reply) = tokio::time::timeout(turn_budget(), post_turn(client, base, body))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{text:?}: no reply within {:?}; a backend wait is unbounded",
                turn_budget()
            )
        })
        .expect("post turn");
    assert_eq!(
        status,
        200,
        "{text:?} after {:?}: {reply}",
        started.elapsed()
    );
    reply
}

fn degraded(reply: &Value) -> u64 {
    reply["counters"]["context_degraded"].as_u64().unwrap_or(0)
}

/// A turn answered as usual: outcome ok, every context part there.
fn is_normal(reply: &Value) -> bool {
    reply["outcome"] == "ok" && reply["counters"]["context_degraded"].as_u64() == Some(0)
}

/// While the backend is gone: answered, and honest that something was missing.
fn assert_degraded(reply: &Value, what: &str) {
    assert!(
        reply["outcome"] == "fallback" || (reply["outcome"] == "ok" && degraded(reply) >= 1),
        "{what}: expected a degraded or fallback reply, got {reply}"
    );
}

/// Turns until one is normal again, each bounded; fails after `tries`.
async fn until_normal(client: &reqwest::Client, base: &str, what: &str, tries: usize) {
    for i in 0..tries {
        let reply = bounded_turn(client, base, &format!("{what}, try {i}")).await;
        if is_normal(&reply) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{what}: no normal turn in {tries} tries");
}

/// A fleet whose worker reaches one backend at `url(fleet)` (`env` names its URL), with
/// short backend timeouts; returns the gateway's base URL too.
async fn fleet_through(
    test: &str,
    env: &str,
    url: impl FnOnce(&Fleet) -> String,
) -> (Setup, String) {
    let mut s = setup(test, mock_latency(0)).await;
    let url = url(&s.fleet);
    let timeout = TIMEOUT_MS.to_string();
    s.fleet
        .spawn(
            "worker",
            "worker-1",
            &[
                (env, url),
                ("WHISPERFLEET_REDIS_TIMEOUT_MS", timeout.clone()),
                ("WHISPERFLEET_DATABASE_TIMEOUT_MS", timeout),
            ],
        )
        .unwrap();
    let base = s
        .fleet
        .spawn_gateway(&[("WHISPERFLEET_REPLY_TIMEOUT_MS", "120000".into())])
        .await
        .unwrap();
    (s, base)
}

/// What one backend-fault scenario observed, for its row of docs/RELIABILITY.md: the turns
/// sent while the backend was gone (each answered, or the test failed), their latencies, and
/// the replies workers published (a tap on the gateway's routing key), once every delivery of
/// `turns` was settled.
struct Observed {
    tap: whisperfleet_testkit::tap::ReplyTap,
    during_ms: Vec<f64>,
}

impl Observed {
    async fn bind(s: &Setup) -> Self {
        let key = &s.fleet.env["WHISPERFLEET_GATEWAY_ID"];
        let tap = whisperfleet_testkit::tap::ReplyTap::bind(&s.fleet.amqp_url(), key)
            .await
            .unwrap();
        Self {
            tap,
            during_ms: Vec::new(),
        }
    }

    /// A turn during the fault: bounded, answered, timed.
    async fn turn(&mut self, client: &reqwest::Client, base: &str, text: &str) -> Value {
        let started = Instant::now();
        let reply = bounded_turn(client, base, text).await;
        self.during_ms
            .push(started.elapsed().as_secs_f64() * 1000.0);
        reply
    }

    async fn report(self, s: &Setup, fault: &str) {
        eventually(Duration::from_secs(20), "every turn settled", || async {
            s.fleet.unacked(whisperfleet_shared::topology::TURNS_QUEUE) == 0
        })
        .await;
        report::record(&report::Row {
            fault: fault.into(),
            load: format!("one turn at a time, backend timeouts {TIMEOUT_MS} ms"),
            turns: self.during_ms.len(),
            answered: self.during_ms.len(),
            duplicate_replies: self.tap.duplicates(),
            unseen_in_history: 0,
            stuck_unacked: s
                .fleet
                .stuck_unacked(whisperfleet_shared::topology::TURNS_QUEUE)
                .await,
            p99_ms: report::p99(&self.during_ms),
        });
        assert_eq!(self.tap.duplicates(), 0, "{fault}: a turn answered twice");
    }
}

/// `relationships` held exclusively by a transaction on a direct connection, until released.
struct TableLock(sqlx::PgConnection);

impl TableLock {
    async fn release(mut self) {
        sqlx::query("ROLLBACK").execute(&mut self.0).await.unwrap();
    }
}

async fn lock_relationships(fleet: &Fleet) -> TableLock {
    let mut c = sqlx::PgConnection::connect(&fleet.database_url())
        .await
        .expect("direct connection");
    for sql in ["BEGIN", "LOCK TABLE relationships IN ACCESS EXCLUSIVE MODE"] {
        sqlx::query(sql).execute(&mut c).await.unwrap();
    }
    TableLock(c)
}

/// Sessions of database `db` waiting for a lock.
async fn lock_waits(db: &str) -> i64 {
    let mut c = sqlx::PgConnection::connect(&format!("{PG_BASE}/postgres"))
        .await
        .expect("direct connection");
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND wait_event_type = 'Lock'",
    )
    .bind(db)
    .fetch_one(&mut c)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_redis_black_holes_or_resets_keeps_answering_and_recovers() {
    let proxy = TcpProxy::start("127.0.0.1:6379").await.unwrap();
    let via = format!("redis://{}", proxy.addr());
    let (s, base) = fleet_through("redis-black-hole", "WHISPERFLEET_REDIS_URL", |_| via).await;
    let client = reqwest::Client::new();
    until_normal(&client, &base, "before the fault", 5).await;
    let mut seen = Observed::bind(&s).await;

    proxy.black_hole();
    for i in 0..3 {
        let reply = seen
            .turn(&client, &base, &format!("into the black hole {i}"))
            .await;
        assert_degraded(&reply, "redis black hole");
    }
    proxy.restore();
    until_normal(&client, &base, "after the black hole", 10).await;

    proxy.cut();
    for i in 0..2 {
        let reply = seen.turn(&client, &base, &format!("redis reset {i}")).await;
        assert_degraded(&reply, "redis reset");
    }
    proxy.restore();
    until_normal(&client, &base, "after the reset", 10).await;
    seen.report(&s, "the worker's Redis black-holed, then reset (TCP proxy)")
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_whose_postgres_black_holes_or_resets_keeps_answering_and_recovers() {
    let proxy = TcpProxy::start("127.0.0.1:5432").await.unwrap();
    let via = proxy.addr().to_string();
    // The fleet's own database, through the proxy.
    let (s, base) = fleet_through("pg-black-hole", "WHISPERFLEET_DATABASE_URL", |f| {
        f.database_url().replace("127.0.0.1:5432", &via)
    })
    .await;
    let client = reqwest::Client::new();
    until_normal(&client, &base, "before the fault", 5).await;
    let mut seen = Observed::bind(&s).await;

    // A black hole while the worker's relationship read is in flight.
    let lock = lock_relationships(&s.fleet).await;
    let turn = {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move { bounded_turn(&client, &base, "caught in flight").await })
    };
    let db = s.fleet.name.clone();
    eventually(
        turn_budget(),
        "the worker's query waits on the lock",
        || {
            let db = db.clone();
            async move { lock_waits(&db).await > 0 }
        },
    )
    .await;
    proxy.black_hole();
    lock.release().await;
    assert_degraded(&turn.await.unwrap(), "postgres black hole, query in flight");
    for i in 0..2 {
        let reply = seen
            .turn(&client, &base, &format!("into the black hole {i}"))
            .await;
        assert_degraded(&reply, "postgres black hole");
    }
    proxy.restore();
    until_normal(&client, &base, "after the black hole", 10).await;

    // A slow database: the lock outlasts the timeout, the server cancels the statement.
    let lock = lock_relationships(&s.fleet).await;
    let reply = seen.turn(&client, &base, "behind a lock").await;
    assert_degraded(&reply, "postgres statement behind a lock");
    lock.release().await;
    until_normal(&client, &base, "after the lock", 10).await;

    proxy.restore();
    until_normal(&client, &base, "after the black hole", 10).await;

    proxy.cut();
    for i in 0..2 {
        let reply = seen
            .turn(&client, &base, &format!("postgres reset {i}"))
            .await;
        assert_degraded(&reply, "postgres reset");
    }
    proxy.restore();
    until_normal(&client, &base, "after the reset", 10).await;
    seen.report(
        &s,
        "the worker's PostgreSQL black-holed, behind a lock, then reset (TCP proxy)",
    )
    .await;
}
