//! The behaviour every [`Cache`] implementation must share, as one async check that panics
//! on the first difference. The tests run it against [`whisperfleet_shared::ports::cache::RedisCache`] and
//! `EmbeddedCache`, so the embedded port cannot drift from Redis.
//!
//! Keys carry a fresh UUID per run and are removed at the end, so the suite can run
//! concurrently against one shared Redis.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use whisperfleet_shared::ports::cache::{Appended, Cache};

/// Short TTLs still well above Redis's millisecond (PX) resolution.
const SHORT: Duration = Duration::from_millis(300);
/// Long enough that nothing expires during a run.
const LONG: Duration = Duration::from_secs(120);

/// Asserts the whole contract against `cache`. Panics (with what differed) on failure.
pub async fn contract(cache: &dyn Cache) {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let k = |s: &str| format!("contract:{run}:{s}");
    missing_keys(cache, &k).await;
    round_trip(cache, &k).await;
    ttl_expiry(cache, &k).await;
    set_nx(cache, &k).await;
    del_several(cache, &k).await;
    append_once(cache, &k).await;
    append_once_ttls(cache, &k).await;
    records(cache, &k).await;
    patterns(cache, &k).await;
    registry(cache, &k).await;
    hash_fields(cache, &k).await;
    indexes(cache, &k).await;
    cache.delete_matching(&k("*")).await.unwrap();
    assert_eq!(
        cache.delete_matching(&k("*")).await.unwrap(),
        0,
        "deleting by pattern left keys behind"
    );
}

/// Asserts that `a` and `b` are isolated from each other (two Redis prefixes, two embedded
/// instances): the same unprefixed key is two keys, and deleting by pattern in one never
/// touches the other's.
pub async fn isolated(a: &dyn Cache, b: &dyn Cache) {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let key = format!("contract:{run}:shared");
    a.set(&key, b"a", LONG).await.unwrap();
    b.set(&key, b"b", LONG).await.unwrap();
    assert_eq!(a.get(&key).await.unwrap().as_deref(), Some(&b"a"[..]));
    assert_eq!(b.get(&key).await.unwrap().as_deref(), Some(&b"b"[..]));
    let pattern = format!("contract:{run}:*");
    assert_eq!(a.delete_matching(&pattern).await.unwrap(), 1);
    assert_eq!(a.get(&key).await.unwrap(), None);
    assert_eq!(
        b.get(&key).await.unwrap().as_deref(),
        Some(&b"b"[..]),
        "deleting by pattern in one cache removed the other's key"
    );
    assert!(
        a.set_nx(&key, b"a2", LONG).await.unwrap(),
        "set_nx saw the other cache's key"
    );
    assert_eq!(b.delete_matching(&pattern).await.unwrap(), 1);
    a.delete_matching(&pattern).await.unwrap();
}

async fn missing_keys(cache: &dyn Cache, k: &impl Fn(&str) -> String) {
    assert_eq!(cache.get(&k("missing")).await.unwrap(), None);
    assert!(cache.list_tail(&k("missing"), 5).await.unwrap().is_empty());
    assert_eq!(cache.delete_matching(&k("missing*")).await.unwrap(), 0);
    cache.del(&[&k("missing"), &k("missing2")]).await.unwrap();
    cache.del(&[]).await.unwrap();
}

async fn round_trip(cache: &dyn Cache, k: &impl Fn(&str) -> String) {
    let text = k("text");
    cache.set(&text, b"hello", LONG).await.unwrap();
    assert_eq!(
        cache.get(&text).await.unwrap().as_deref(),
        Some(&b"hello"[..])
    );
    // Every byte value, NUL and invalid UTF-8 included.
    let binary: Vec<u8> = (0..=255u8).rev().chain(0..=255u8).collect();
    let bin = k("binary");
    cache.set(&bin, &binary, LONG).await.unwrap();
    assert_eq!(cache.get(&bin).await.unwrap(), Some(binary));
    let empty = k("empty");
    cache.set(&empty, b"", LONG).await.unwrap();
    assert_eq!(
        cache.get(&empty).await.unwrap(),
        Some(Vec::new()),
        "an empty value is a value"
    );
    cache.set(&text, b"replaced", LONG).await.unwrap();
    assert_eq!(
        cache.get(&text).await.unwrap().as_deref(),
        Some(&b"replaced"[..])
    );
}

async fn ttl_expiry(cache: &dyn Cache, k: &impl Fn(&str) -> String) {
    let key = k("ttl");
    let started = Instant::now();
    cache.set(&key, b"v", SHORT).await.unwrap();
    let seen = cache.get(&key).await.unwrap();
    // Only a claim while the TTL has surely not run out (a loaded machine may stall us).
    if started.elapsed() < SHORT {
        assert_eq!(seen.as_deref(), Some(&b"v"[..]), "gone before its TTL");
    }
    tokio::time::sleep(SHORT + Duration::from_millis(150)).await;
    assert_eq!(
        cache.get(&key).await.unwrap(),
        None,
        "visible after its TTL"
    );
    assert_eq!(
        cache.delete_matching(&k("ttl")).await.unwrap(),
        0,
        "an expired key is counted as deleted"
    );
    assert!(
        cache.set_nx(&key, b"again", LONG).await.unwrap(),
        "set_nx refused on an expired key"
    );
    // A later set replaces the TTL: a long one keeps the key past the short one.
    let replaced = k("ttl-replaced");
    cache.set(&replaced, b"v", SHORT).await.unwrap();
    cache.set(&replaced, b"v", LONG).await.unwrap();
    tokio::time::sleep(SHORT + Duration::from_millis(150)).await;
    assert!(cache.get(&replaced).await.unwrap().is_some());
}

async fn set_nx(cache: &dyn Cache, k: &impl Fn(&str) -> String) {
    let key = k("nx");
    assert!(cache.set_nx(&key, b"first", LONG).await.unwrap());
    assert!(!cache.set_nx(&key, b"second", LONG).await.unwrap());
    assert_eq!(
        cache.get(&key).await.unwrap().as_deref(),
        Some(&b"first"[..]),
        "a refused set_nx changed the value"
    );
    cache.del(&[&key]).await.unwrap();
    assert!(cache.set_nx(&key, b"third", LONG).await.unwrap());
    // Present means present, whatever wrote it.
    let plain = k("nx-after-set");
    cache.set(&plain, b"v", LONG).await.unwrap();
    assert!(!cache.set_nx(&plain, b"w", LONG).await.unwrap());
}

async fn del_several(cache: &dyn Cache, k: &impl Fn(&str) -> String) {
    let (a, b, c) = (k("del-a"), k("del-b"), k("del-c"));
    for key in [&a, &b, &c] {
        cache.set(key, b"v", LONG).await.unwrap();
    }
    cache.del(&[&a, &b, &k("del-missing")]).await.unwrap();
    assert_eq!(cache.get(&a).await.unwrap(), None);
    assert_eq!(cache.get(&b).await.unwrap(), None);
    assert!(
        cache.get(&c).await.unwrap().is_some(),
        "del removed too much"
    );
}

fn items(xs: &[&str]) -> Vec<Vec<u8>> {
    xs.iter().map(|x| x.as_bytes().to_vec()).collect()
}

async fn append_once(cache: &dyn Cache, k: &impl Fn(&str) -> String) {
    let list = k("hist");
    let append = |entries: Vec<Vec<u8>>, keep: usize, marker: String| {
        let list = list.clone();
        async move {
            cache
                .append_once(
                    &list,
                    &entries,
                    keep,
                    LONG,
                    &marker,
                    "history",
                    "abandoned",
                    LONG,
                )
                .await
                .unwrap()
                == Appended::Appended
        }
    };
    assert!(append(items(&["e1", "e2"]), 4, k("m1")).await);
    assert!(
        cache.hash_get(&k("m1"), "history").await.unwrap().is_some(),
        "the marker is set"
    );
    assert!(
        !append(items(&["e1", "e2"]), 4, k("m1")).await,
        "a second append with one marker"
    );
    assert_eq!(
        cache.list_tail(&list, 10).await.unwrap(),
        items(&["e1", "e2"]),
        "appended twice under one marker"
    );
    assert!(append(items(&["e3", "e4", "e5"]), 4, k("m2")).await);
    assert_eq!(
        cache.list_tail(&list, 100).await.unwrap(),
        items(&["e2", "e3", "e4", "e5"]),
        "keeps the last `keep`, oldest first"
    );
    assert_eq!(
        cache.list_tail(&list, 2).await.unwrap(),
        items(&["e4", "e5"]),
        "the tail is the newest, oldest first"
    );
    assert!(cache.list_tail(&list, 0).await.unwrap().is_empty());
    // More entries than `keep` in one call.
    assert!(append(items(&["f1", "f2", "f3"]), 2, k("m3")).await);
    assert_eq!(
        cache.list_tail(&list, 10).await.unwrap(),
        items(&["f2", "f3"])
    );
    // Binary entries survive as they are.
    let blob = vec![0u8, 0xff, 0xfe, b'\n', 0];
    assert!(append(vec![blob.clone()], 3, k("m4")).await);
    assert_eq!(cache.list_tail(&list, 1).await.unwrap(), vec![blob]);
    // Concurrent appends under one marker: exactly one wins.
    let list2 = k("hist-race");
    let racers = (0..8).map(|i| {
        let list2 = list2.clone();
        let marker = k("m-race");
        async move {
            cache
                .append_once(
                    &list2,
                    &items(&[&format!("r{i}")]),
                    10,
                    LONG,
                    &marker,
                    "history",
                    "abandoned",
                    LONG,
                )
                .await
                .unwrap()
        }
    });
    let won = futures::future::join_all(racers).await;
    assert_eq!(won.iter().filter(|w| **w == Appended::Appended).count(), 1);
    assert_eq!(cache.list_tail(&list2, 10).await.unwrap().len(), 1);
    // A record marked `unless` refuses the append and is not marked done.
    let record = k("m-refused");
    cache
        .hash_set(&record, "abandoned", b"gone", LONG)
        .await
        .unwrap();
    let r = cache
        .append_once(
            &list,
            &items(&["z"]),
            10,
            LONG,
            &record,
            "history",
            "abandoned",
            LONG,
        )
        .await
        .unwrap();
    assert_eq!(r, Appended::Refused);
    assert_eq!(cache.hash_get(&record, "history").await.unwrap(), None);
    assert!(
        !cache
            .list_tail(&list, 10)
            .await
            .unwrap()
            .contains(&b"z".to_vec())
    );
}

/// Hashes, leases and `mark_and_prune`: the per-turn record's primitives.
async fn records(cache: &dyn Cache, k: &impl Fn(&str) -> String) {
    let rec = k("rec");
    assert!(cache.hash_get_all(&rec).await.unwrap().is_empty());
    assert_eq!(cache.hash_get(&rec, "a").await.unwrap(), None);
    cache.hash_set(&rec, "a", b"1", LONG).await.unwrap();
    cache.hash_set(&rec, "b", &[0, 255], LONG).await.unwrap();
    cache.hash_set(&rec, "a", b"2", LONG).await.unwrap();
    let all = cache.hash_get_all(&rec).await.unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(all["a"], b"2");
    assert_eq!(all["b"], vec![0, 255]);
    // The whole record expires with its TTL.
    let short = k("rec-short");
    cache.hash_set(&short, "a", b"1", SHORT).await.unwrap();
    tokio::time::sleep(SHORT + Duration::from_millis(150)).await;
    assert!(cache.hash_get_all(&short).await.unwrap().is_empty());

    // Leases: one holder at a time; renewable by its holder; free once given back or run out.
    let lease = Duration::from_millis(400);
    assert_eq!(
        cache.lease(&rec, "lease", "w1", lease, LONG).await.unwrap(),
        None
    );
    assert_eq!(
        cache.lease(&rec, "lease", "w2", lease, LONG).await.unwrap(),
        Some("w1".to_string())
    );
    assert_eq!(
        cache.lease(&rec, "lease", "w1", lease, LONG).await.unwrap(),
        None
    );
    cache.release(&rec, "lease", "w2").await.unwrap();
    assert_eq!(
        cache.lease(&rec, "lease", "w2", lease, LONG).await.unwrap(),
        Some("w1".to_string()),
        "only the holder gives a lease back"
    );
    cache.release(&rec, "lease", "w1").await.unwrap();
    assert_eq!(
        cache.lease(&rec, "lease", "w2", lease, LONG).await.unwrap(),
        None
    );
    tokio::time::sleep(lease + Duration::from_millis(150)).await;
    assert_eq!(
        cache
            .lease(&rec, "lease", "w3 with spaces", lease, LONG)
            .await
            .unwrap(),
        None,
        "a lease that ran out is taken over"
    );
    assert_eq!(
        cache.lease(&rec, "lease", "w1", lease, LONG).await.unwrap(),
        Some("w3 with spaces".to_string())
    );
    assert_eq!(
        cache.hash_get_all(&rec).await.unwrap()["a"],
        b"2",
        "other fields kept"
    );
    // Concurrent takers: exactly one wins.
    let race = k("rec-race");
    let takers = (0..8).map(|i| {
        let race = race.clone();
        async move {
            cache
                .lease(&race, "lease", &format!("t{i}"), LONG, LONG)
                .await
                .unwrap()
        }
    });
    let got = futures::future::join_all(takers).await;
    assert_eq!(got.iter().filter(|g| g.is_none()).count(), 1);

    // mark_and_prune: sets the field, removes exactly the items containing the needle.
    let list = k("prune-list");
    let prec = k("prune-rec");
    cache
        .append_once(
            &list,
            &items(&[
                r#"{"turn_id":"t1","x":1}"#,
                r#"{"turn_id":"t2"}"#,
                r#"{"turn_id":"t1","x":2}"#,
            ]),
            10,
            LONG,
            &k("prune-m"),
            "history",
            "abandoned",
            LONG,
        )
        .await
        .unwrap();
    let removed = cache
        .mark_and_prune(
            &prec,
            "abandoned",
            b"timeout",
            LONG,
            &list,
            r#""turn_id":"t1""#,
        )
        .await
        .unwrap();
    assert_eq!(removed, 2);
    assert_eq!(
        cache.list_tail(&list, 10).await.unwrap(),
        items(&[r#"{"turn_id":"t2"}"#])
    );
    assert_eq!(
        cache.hash_get(&prec, "abandoned").await.unwrap(),
        Some(b"timeout".to_vec())
    );
    // On a missing list it only marks.
    let removed = cache
        .mark_and_prune(
            &k("prune-rec2"),
            "abandoned",
            b"x",
            LONG,
            &k("no-list"),
            "t",
        )
        .await
        .unwrap();
    assert_eq!(removed, 0);
    assert!(
        cache
            .hash_get(&k("prune-rec2"), "abandoned")
            .await
            .unwrap()
            .is_some()
    );
}

async fn append_once_ttls(cache: &dyn Cache, k: &impl Fn(&str) -> String) {
    // The list's TTL is refreshed by every append.
    let list = k("hist-ttl");
    let list_ttl = Duration::from_millis(600);
    cache
        .append_once(
            &list,
            &items(&["a"]),
            5,
            list_ttl,
            &k("mt1"),
            "h",
            "u",
            LONG,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    let refreshed = Instant::now();
    cache
        .append_once(
            &list,
            &items(&["b"]),
            5,
            list_ttl,
            &k("mt2"),
            "h",
            "u",
            LONG,
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(350)).await;
    let tail = cache.list_tail(&list, 5).await.unwrap();
    if refreshed.elapsed() < list_ttl {
        assert_eq!(tail, items(&["a", "b"]), "the second append kept no TTL");
    }
    tokio::time::sleep(list_ttl.saturating_sub(refreshed.elapsed()) + Duration::from_millis(150))
        .await;
    assert!(
        cache.list_tail(&list, 5).await.unwrap().is_empty(),
        "the list outlived its TTL"
    );
    // Once the marker expires, the same marker appends again.
    let list = k("hist-marker-ttl");
    let marker = k("mt3");
    assert_eq!(
        cache
            .append_once(&list, &items(&["x"]), 5, LONG, &marker, "h", "u", SHORT)
            .await
            .unwrap(),
        Appended::Appended
    );
    tokio::time::sleep(SHORT + Duration::from_millis(150)).await;
    assert!(cache.hash_get_all(&marker).await.unwrap().is_empty());
    assert_eq!(
        cache
            .append_once(&list, &items(&["y"]), 5, LONG, &marker, "h", "u", SHORT)
            .await
            .unwrap(),
        Appended::Appended
    );
    assert_eq!(cache.list_tail(&list, 5).await.unwrap(), items(&["x", "y"]));
}

const PATTERN_KEYS: [&str; 7] = ["a:1", "a:2", "a:10", "b:1", "lit*star", "litXstar", "br]x"];

/// What `delete_matching(pattern)` removes of the `p:` keys (all set first, a list among
/// them: lists are keys too), as full keys; the count it returns must agree.
async fn deleted(
    cache: &dyn Cache,
    k: &impl Fn(&str) -> String,
    pattern: &str,
) -> BTreeSet<String> {
    for n in PATTERN_KEYS {
        cache.set(&k(&format!("p:{n}")), b"v", LONG).await.unwrap();
    }
    let marker = k(&format!("p-marker-{}", uuid::Uuid::new_v4().simple()));
    cache
        .append_once(
            &k("p:l:1"),
            &items(&["x"]),
            5,
            LONG,
            &marker,
            "h",
            "u",
            LONG,
        )
        .await
        .unwrap();
    let count = cache.delete_matching(&k(pattern)).await.unwrap();
    let mut gone = BTreeSet::new();
    for n in PATTERN_KEYS {
        let key = k(&format!("p:{n}"));
        if cache.get(&key).await.unwrap().is_none() {
            gone.insert(key);
        }
    }
    if cache.list_tail(&k("p:l:1"), 5).await.unwrap().is_empty() {
        gone.insert(k("p:l:1"));
    }
    assert!(
        !cache.hash_get_all(&marker).await.unwrap().is_empty(),
        "{pattern:?} deleted a key it does not match"
    );
    assert_eq!(
        count as usize,
        gone.len(),
        "delete_matching({pattern:?}) miscounted"
    );
    gone
}

async fn patterns(cache: &dyn Cache, k: &impl Fn(&str) -> String) {
    let expect =
        |ns: &[&str]| -> BTreeSet<String> { ns.iter().map(|n| k(&format!("p:{n}"))).collect() };
    let cases: [(&str, &[&str]); 10] = [
        (
            "p:*",
            &[
                "a:1", "a:2", "a:10", "b:1", "lit*star", "litXstar", "br]x", "l:1",
            ],
        ),
        ("p:a:*", &["a:1", "a:2", "a:10"]),
        ("p:a:?", &["a:1", "a:2"]),
        ("p:[ab]:1", &["a:1", "b:1"]),
        ("p:[^a]:*", &["b:1", "l:1"]),
        ("p:[a-b]:1?", &["a:10"]),
        ("p:lit*star", &["lit*star", "litXstar"]),
        (r"p:lit\*star", &["lit*star"]),
        (r"p:br[\]]x", &["br]x"]),
        ("p:*1", &["a:1", "b:1", "l:1"]),
    ];
    for (pattern, want) in cases {
        assert_eq!(
            deleted(cache, k, pattern).await,
            expect(want),
            "delete_matching({pattern:?})"
        );
    }
    cache.delete_matching(&k("p:*")).await.unwrap();
}

async fn registry(cache: &dyn Cache, k: &impl Fn(&str) -> String) {
    let reg = k("registry");
    let alive = |max_age: Duration| {
        let reg = reg.clone();
        async move {
            let mut v = cache.alive(&reg, max_age).await.unwrap();
            v.sort();
            v
        }
    };
    assert!(alive(LONG).await.is_empty(), "a missing registry is empty");
    for member in ["gw-a", "gw-b", "gw-a"] {
        cache.heartbeat(&reg, member, LONG).await.unwrap();
    }
    assert_eq!(alive(LONG).await, ["gw-a", "gw-b"], "one member per name");
    // A member older than max_age is left out, and pruned: it stays out under a longer one.
    tokio::time::sleep(SHORT + Duration::from_millis(50)).await;
    let beat = Instant::now();
    cache.heartbeat(&reg, "gw-b", LONG).await.unwrap();
    let fresh = alive(SHORT).await;
    if beat.elapsed() < SHORT {
        assert_eq!(
            fresh,
            ["gw-b"],
            "a stale member is alive, or a fresh one is not"
        );
    }
    assert_eq!(
        alive(LONG).await,
        ["gw-b"],
        "the stale member was not pruned"
    );
    // The registry itself expires `ttl` after its last heartbeat.
    let short = k("registry-ttl");
    cache.heartbeat(&short, "gw", SHORT).await.unwrap();
    tokio::time::sleep(SHORT + Duration::from_millis(150)).await;
    assert!(cache.alive(&short, LONG).await.unwrap().is_empty());
    // A key of another kind is refused, as Redis does.
    let text = k("registry-text");
    cache.set(&text, b"v", LONG).await.unwrap();
    assert!(cache.heartbeat(&text, "gw", LONG).await.is_err());
    assert!(cache.alive(&text, LONG).await.is_err());
}

/// `hash_del` removes only the fields named, counts what was there, and a hash without
/// fields is gone.
async fn hash_fields(cache: &dyn Cache, k: &impl Fn(&str) -> String) {
    let h = k("hdel");
    cache.hash_set(&h, "llm", b"answer", LONG).await.unwrap();
    cache.hash_set(&h, "replied", b"1", LONG).await.unwrap();
    assert_eq!(cache.hash_del(&h, &["llm", "absent"]).await.unwrap(), 1);
    assert_eq!(cache.hash_get(&h, "llm").await.unwrap(), None);
    assert_eq!(
        cache.hash_get(&h, "replied").await.unwrap().as_deref(),
        Some(&b"1"[..]),
        "hash_del removed a field it was not given"
    );
    assert_eq!(cache.hash_del(&h, &["llm"]).await.unwrap(), 0);
    assert_eq!(cache.hash_del(&h, &[]).await.unwrap(), 0);
    assert_eq!(cache.hash_del(&h, &["replied"]).await.unwrap(), 1);
    assert!(cache.hash_get_all(&h).await.unwrap().is_empty());
    assert_eq!(cache.hash_del(&k("hdel-missing"), &["x"]).await.unwrap(), 0);
    let text = k("hdel-text");
    cache.set(&text, b"x", LONG).await.unwrap();
    assert!(cache.hash_del(&text, &["x"]).await.is_err(), "WRONGTYPE");
}

/// An index: members with their own TTLs, read back while alive, re-adding extends, and
/// the index outlives none of its members by more than their TTL.
async fn indexes(cache: &dyn Cache, k: &impl Fn(&str) -> String) {
    let idx = k("index");
    let set = |v: Vec<String>| v.into_iter().collect::<BTreeSet<_>>();
    assert!(cache.index_members(&idx).await.unwrap().is_empty());
    cache.index_add(&idx, &[]).await.unwrap();
    // Members hold any text: separators, glob characters, spaces, newlines.
    let odd = "nora turn:a:*?[x] \n".to_string();
    cache
        .index_add(&idx, &[("short".into(), SHORT), (odd.clone(), LONG)])
        .await
        .unwrap();
    assert_eq!(
        set(cache.index_members(&idx).await.unwrap()),
        set(vec!["short".into(), odd.clone()])
    );
    // Re-added with a longer TTL, a member lives longer.
    cache
        .index_add(&idx, &[("extended".into(), SHORT)])
        .await
        .unwrap();
    cache
        .index_add(&idx, &[("extended".into(), LONG)])
        .await
        .unwrap();
    tokio::time::sleep(SHORT + Duration::from_millis(200)).await;
    assert_eq!(
        set(cache.index_members(&idx).await.unwrap()),
        set(vec![odd.clone(), "extended".into()]),
        "an expired member is still listed, or a live one is not"
    );
    // The index itself lives as long as its longest member, and no longer.
    let only_short = k("index-short");
    cache
        .index_add(&only_short, &[("m".into(), SHORT)])
        .await
        .unwrap();
    tokio::time::sleep(SHORT + Duration::from_millis(200)).await;
    assert!(cache.index_members(&only_short).await.unwrap().is_empty());
    assert!(
        cache.delete_matching(&only_short).await.unwrap() == 0,
        "an index outlived all its members"
    );
    cache.del(&[idx.as_str()]).await.unwrap();
    assert!(cache.index_members(&idx).await.unwrap().is_empty());
    let text = k("index-text");
    cache.set(&text, b"x", LONG).await.unwrap();
    assert!(cache.index_add(&text, &[("m".into(), LONG)]).await.is_err());
    assert!(cache.index_members(&text).await.is_err());
}
