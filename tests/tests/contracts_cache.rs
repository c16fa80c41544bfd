//! The cache contract against both implementations: Redis (the fleet) and the in-process
//! cache (`up` / `chat` without Redis), plus the embedded glob matcher checked against what
//! Redis itself matches.

use std::collections::BTreeSet;
use std::time::Duration;

use whisperfleet_adapters::cache::embedded::glob_match;
use whisperfleet_adapters::cache::redis::RedisCache;
use whisperfleet_shared::ports::cache::Cache;
use whisperfleet_testkit::contracts::cache::{contract, isolated};
use whisperfleet_testkit::{REDIS_URL, TcpProxy};

/// A RedisCache under a prefix of its own, so runs never see each other's keys.
fn redis(tag: &str) -> RedisCache {
    redis_with_prefix(&prefix(tag))
}

fn prefix(tag: &str) -> String {
    format!("wf_cc_{tag}_{}:", uuid::Uuid::new_v4().simple())
}

fn redis_with_prefix(prefix: &str) -> RedisCache {
    RedisCache::new(
        REDIS_URL.to_string().into(),
        prefix,
        Duration::from_millis(500),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_cache_meets_the_contract() {
    contract(&redis("c")).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_caches_with_different_prefixes_are_isolated() {
    isolated(&redis("a"), &redis("b")).await;
}

/// xorshift64*: deterministic cases without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn word(&mut self, alphabet: &[u8], max_len: u64) -> String {
        let len = self.next() % (max_len + 1);
        (0..len)
            .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize] as char)
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_glob_matches_what_redis_matches() {
    let prefix = prefix("glob");
    let cache = redis_with_prefix(&prefix);
    // What Redis itself matches, asked directly (the port only deletes by pattern).
    let mut direct = redis::Client::open(REDIS_URL)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // Keys from a small alphabet (glob syntax included, so escapes have something to do).
    let mut keys: BTreeSet<String> = (0..150).map(|_| rng.word(b"ab-]*?\\", 5)).collect();
    keys.insert(String::new());
    for k in &keys {
        cache.set(k, b"v", Duration::from_secs(120)).await.unwrap();
    }
    let mut patterns: Vec<String> = (0..150).map(|_| rng.word(b"ab-*?[]^\\", 6)).collect();
    patterns.extend(
        [
            "*", "", "a*", "*b", "[a-b]*", "[b-a]?", "\\*", "[\\]]*", "[^a]*", "[", "[^", "a\\",
            "[]", "**a**",
        ]
        .map(String::from),
    );
    // Patterns that split the keys: what makes the comparison say something.
    let mut splitting = 0;
    for p in &patterns {
        let listed: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{prefix}{p}"))
            .query_async(&mut direct)
            .await
            .unwrap();
        let from_redis: BTreeSet<String> = listed
            .iter()
            .map(|k| k.strip_prefix(&prefix).unwrap().to_string())
            .collect();
        let local: BTreeSet<String> = keys
            .iter()
            .filter(|k| glob_match(p.as_bytes(), k.as_bytes()))
            .cloned()
            .collect();
        assert_eq!(local, from_redis, "pattern {p:?}");
        if !local.is_empty() && local.len() < keys.len() {
            splitting += 1;
        }
    }
    eprintln!("{splitting} of {} patterns split the keys", patterns.len());
    assert!(splitting >= 40, "only {splitting} patterns split the keys");
    cache.delete_matching("*").await.unwrap();
}

/// Through a black hole every call fails within its bound — a connection made during the
/// black hole (its handshake unanswered) included — and once the proxy forwards again the
/// cache works again, although the connection it had stays dead.
#[tokio::test(flavor = "multi_thread")]
async fn redis_calls_are_bounded_in_a_black_hole_and_work_again_after_it() {
    let proxy = TcpProxy::start("127.0.0.1:6379").await.unwrap();
    let timeout = Duration::from_millis(300);
    let url = format!("redis://{}", proxy.addr());
    let cache = RedisCache::new(url.clone().into(), &prefix("bh"), timeout).unwrap();
    let ttl = Duration::from_secs(60);
    cache.set("k", b"v", ttl).await.unwrap();
    // Generous against the timeout; a call that waits on the dead connection never returns.
    let bound = timeout * 10;
    proxy.black_hole();
    let fresh = RedisCache::new(url.into(), &prefix("bh-fresh"), timeout).unwrap();
    for cache in [&cache, &fresh] {
        for _ in 0..3 {
            let r = tokio::time::timeout(bound, cache.get("k"))
                .await
                .expect("a call through the black hole did not return within its bound");
            assert!(r.is_err(), "an answer through a black hole: {r:?}");
        }
    }
    proxy.restore();
    let mut answered = None;
    for _ in 0..5 {
        if let Ok(Ok(v)) = tokio::time::timeout(bound, cache.get("k")).await {
            answered = Some(v);
            break;
        }
    }
    assert_eq!(
        answered,
        Some(Some(b"v".to_vec())),
        "still failing after the proxy forwards again"
    );
    cache.delete_matching("*").await.unwrap();
}
