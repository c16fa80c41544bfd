//! The character store contract against PostgreSQL (the fleet, on a database of its own).
//! The SQLite store keeps the same contract in `whisperfleet-adapters`' own tests.

use whisperfleet_adapters::characters::postgres::PgCharacterStore;
use whisperfleet_shared::identity::Identity;
use whisperfleet_shared::ports::characters::CharacterStore;
use whisperfleet_testkit::Fleet;
use whisperfleet_testkit::contracts::store::contract;

#[tokio::test(flavor = "multi_thread")]
async fn postgres_store_meets_the_contract() {
    let fleet = Fleet::new("contract_store").unwrap();
    let store = PgCharacterStore::connect(
        fleet.database_url().into(),
        4,
        std::time::Duration::from_secs(2),
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    contract(&store).await;
}

/// A database at the schema before relationships had identities (the migrations as they
/// were, from the repository): after migrating, a snowflake user's rows belong to Discord,
/// any other user's to the unclaimable `legacy` platform, and no other platform sees them.
#[tokio::test(flavor = "multi_thread")]
async fn postgres_relationships_written_before_identities_are_migrated() {
    let fleet = Fleet::new("migrate_relationships").unwrap();
    let pool = sqlx::PgPool::connect(&fleet.database_url()).await.unwrap();
    let dir = whisperfleet_testkit::repo_root().join("adapters/migrations/postgres");
    let old = sqlx::migrate::Migrator::new(dir).await.unwrap();
    old.run_to(20261125000003, &pool).await.unwrap();
    sqlx::query("INSERT INTO characters (name, normalized_name) VALUES ('Nora', 'nora')")
        .execute(&pool)
        .await
        .unwrap();
    for (user, trust) in [("312456789012345678", 0.9f32), ("alice", 0.7), ("42", 0.1)] {
        sqlx::query(
            "INSERT INTO relationships (user_id, character_id, trust, interactions) \
             SELECT $1, id, $2, 5 FROM characters WHERE normalized_name = 'nora'",
        )
        .bind(user)
        .bind(trust)
        .execute(&pool)
        .await
        .unwrap();
    }
    let store = PgCharacterStore::connect(
        fleet.database_url().into(),
        4,
        std::time::Duration::from_secs(2),
    )
    .await
    .unwrap();
    store.migrate().await.unwrap();
    let at = |p: &str, u: &str| Identity::new(p, "", u);
    for (who, want) in [
        (at("discord", "312456789012345678"), Some((0.9, 5))),
        (at("http", "312456789012345678"), None),
        (at("legacy", "alice"), Some((0.7, 5))),
        (at("legacy", "42"), Some((0.1, 5))),
        (at("http", "alice"), None),
        (at("terminal", "alice"), None),
        (at("discord", "42"), None),
    ] {
        let got = store.relationship(&who, "nora").await.unwrap();
        assert_eq!(got.map(|r| (r.trust, r.interactions)), want, "{who}");
    }
    // New identities sit beside the old rows.
    let moved = store
        .apply_relationship(
            uuid::Uuid::new_v4(),
            &at("http", "alice"),
            "nora",
            Default::default(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(moved.interactions, 1);
}
