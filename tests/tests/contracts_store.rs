//! The character store contract against both implementations: PostgreSQL (the fleet, on a
//! database of its own) and SQLite (`up` / `chat` without a database URL), plus SQLite's
//! persistence across reopening its file.

use std::path::PathBuf;

use whisperfleet_shared::character::{CharacterStore, RelationshipDelta};
use whisperfleet_tests::Fleet;
use whisperfleet_worker::sqlite_store::SqliteCharacterStore;
use whisperfleet_worker::store::PgCharacterStore;
use whisperfleet_worker::store_contract::{contract, full_character};

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
async fn postgres_store_meets_the_contract() {
    let fleet = Fleet::new("contract_store").unwrap();
    let store = PgCharacterStore::connect(fleet.database_url().into(), 4)
        .await
        .unwrap();
    store.migrate().await.unwrap();
    contract(&store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_store_meets_the_contract() {
    let dir = TempDir::new("sqlite-contract");
    // A nested path: open creates the missing directories.
    let store = SqliteCharacterStore::open(&dir.0.join("data/characters.db"))
        .await
        .unwrap();
    contract(&store).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn in_memory_sqlite_store_meets_the_contract() {
    contract(&SqliteCharacterStore::open_in_memory().await.unwrap()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sqlite_store_keeps_its_data_across_reopening() {
    let dir = TempDir::new("sqlite-persist");
    let path = dir.0.join("characters.db");
    let character = full_character("Persistent Archivist");
    let turn = uuid::Uuid::new_v4();
    let delta = RelationshipDelta {
        trust: 0.1,
        affection: 0.0,
        attunement: 0.05,
    };
    let (version, relationship) = {
        let store = SqliteCharacterStore::open(&path).await.unwrap();
        let version = store.upsert(&character).await.unwrap();
        let relationship = store
            .apply_relationship(turn, "u1", "persistent_archivist", delta)
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
            .relationship("u1", "persistent_archivist")
            .await
            .unwrap(),
        Some(relationship)
    );
    // The turn guard persisted too: the same turn still applies nothing.
    assert_eq!(
        store
            .apply_relationship(turn, "u1", "persistent_archivist", delta)
            .await
            .unwrap(),
        None
    );
    assert_eq!(store.upsert(&character).await.unwrap(), version + 1);
    assert!(store.describe().contains("characters.db"));
}
