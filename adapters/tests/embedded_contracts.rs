//! The contract suites against the embedded implementations: no service needed, so
//! `cargo test -p whisperfleet-adapters` passes on a machine with nothing running. The same
//! suites run against RabbitMQ, Redis and PostgreSQL in `tests/` (contracts_*.rs).

use std::path::PathBuf;
use std::time::Duration;

use whisperfleet_adapters::broker::embedded::EmbeddedBroker;
use whisperfleet_adapters::cache::embedded::EmbeddedCache;
use whisperfleet_adapters::characters::sqlite::SqliteCharacterStore;
use whisperfleet_shared::character::RelationshipDelta;
use whisperfleet_shared::ports::{Broker, CharacterStore};
use whisperfleet_shared::topology::TopologySettings;
use whisperfleet_testkit::contracts::broker::{self as broker_contract, Expect};
use whisperfleet_testkit::contracts::cache::{contract as cache_contract, isolated};
use whisperfleet_testkit::contracts::store::{contract as store_contract, full_character};

const DELIVERY_LIMIT: u32 = 2;

fn topology() -> TopologySettings {
    TopologySettings {
        delivery_limit: DELIVERY_LIMIT,
        reply_queue_expires: Duration::from_secs(600),
    }
}

/// A directory under the system temp dir, removed when dropped (also when a test panics).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        Self(std::env::temp_dir().join(format!("wf-{tag}-{}", uuid::Uuid::new_v4().simple())))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_broker_keeps_the_contract() {
    let broker = EmbeddedBroker::new(topology());
    broker_contract::run(
        broker.as_ref(),
        &Expect {
            delivery_limit: DELIVERY_LIMIT,
            dropped_delivery_returns: true,
        },
    )
    .await;
    assert_eq!(broker.describe(), "embedded");
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_cache_meets_the_contract() {
    cache_contract(&EmbeddedCache::new()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn embedded_caches_are_isolated() {
    isolated(&EmbeddedCache::new(), &EmbeddedCache::new()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_store_meets_the_contract() {
    let dir = TempDir::new("sqlite-contract");
    // A nested path: open creates the missing directories.
    let store = SqliteCharacterStore::open(&dir.0.join("data/characters.db"))
        .await
        .unwrap();
    store_contract(&store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn in_memory_sqlite_store_meets_the_contract() {
    store_contract(&SqliteCharacterStore::open_in_memory().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_store_keeps_its_data_across_reopening() {
    let dir = TempDir::new("sqlite-persist");
    let path = dir.0.join("characters.db");
    let character = full_character("Persistent Archivist");
    let turn = uuid::Uuid::new_v4();
    let u1 = whisperfleet_shared::identity::Identity::new("terminal", "", "u1");
    let delta = RelationshipDelta {
        trust: 0.1,
        affection: 0.0,
        attunement: 0.05,
    };
    let (version, relationship) = {
        let store = SqliteCharacterStore::open(&path).await.unwrap();
        let version = store.upsert(&character).await.unwrap();
        let relationship = store
            .apply_relationship(turn, &u1, "persistent_archivist", delta)
            .await
            .unwrap()
            .unwrap();
        store.pool().close().await;
        (version, relationship)
    };
    assert!(path.exists());

    // Reopening runs the migrations again: they must find nothing to do.
    let store = SqliteCharacterStore::open(&path).await.unwrap();
    let loaded = store
        .load("persistent_archivist")
        .await
        .unwrap()
        .expect("the character survived reopening");
    let mut want = character.clone();
    want.normalized_name = "persistent_archivist".into();
    want.version = version;
    assert_eq!(loaded, want);
    assert_eq!(
        store
            .relationship(&u1, "persistent_archivist")
            .await
            .unwrap(),
        Some(relationship)
    );
    // The turn guard persisted too: the same turn still applies nothing.
    assert_eq!(
        store
            .apply_relationship(turn, &u1, "persistent_archivist", delta)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.upsert(&character).await.unwrap(), version + 1);
    assert!(store.describe().contains("characters.db"));
}
