//! The character store contract against PostgreSQL (the fleet, on a database of its own).
//! The SQLite store keeps the same contract in `whisperfleet-adapters`' own tests.

use whisperfleet_adapters::characters::postgres::PgCharacterStore;
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
