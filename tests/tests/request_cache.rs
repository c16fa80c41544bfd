//! The request cache's hits by level, over the real Redis (a fresh prefix): loads shared
//! within one turn count as local hits; a redelivered turn (a new scope, same turn id)
//! finds what the first attempt finished in Redis and counts a Redis hit, without loading.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use whisperfleet_adapters::cache::redis::RedisCache;
use whisperfleet_shared::ports::Cache;
use whisperfleet_shared::request_cache::RequestCache;
use whisperfleet_testkit::*;

#[tokio::test(flavor = "multi_thread")]
async fn hits_are_counted_by_level_local_then_redis_on_redelivery() {
    let fleet = Fleet::new("rc_levels").unwrap();
    let redis: Arc<dyn Cache> =
        Arc::new(RedisCache::new(REDIS_URL.into(), &fleet.prefix, Duration::from_secs(2)).unwrap());
    let turn = uuid::Uuid::now_v7().to_string();
    let calls = AtomicUsize::new(0);
    let load = || async {
        calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(20)).await;
        Ok::<_, String>("the answer".to_string())
    };
    let ttl = Some(Duration::from_secs(60));

    let first = RequestCache::new(turn.clone(), Some(redis.clone()));
    let got = futures::future::join_all((0..3).map(|_| first.load("llm", ttl, load))).await;
    assert!(got.iter().all(|r| r.as_deref() == Ok("the answer")));
    assert_eq!(first.load("llm", ttl, load).await.unwrap(), "the answer");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(
        (first.misses(), first.local_hits(), first.backing_hits()),
        (1, 3, 0),
        "one load, three shared in the process"
    );

    // The same turn again on another worker: the first attempt's result is in Redis.
    let again = RequestCache::new(turn, Some(redis));
    assert_eq!(again.load("llm", ttl, load).await.unwrap(), "the answer");
    assert_eq!(calls.load(Ordering::SeqCst), 1, "not loaded again");
    assert_eq!(
        (again.misses(), again.local_hits(), again.backing_hits()),
        (0, 0, 1)
    );
    assert_eq!(again.hits(), 1);
}
