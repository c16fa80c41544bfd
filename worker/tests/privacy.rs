//! `worker::privacy` over the embedded ports (the same ports the fleet's backends keep the
//! contract of): show and forget reach exactly one identity, with one character or all,
//! whatever its ids contain, cached answers and history included.

use std::path::Path;
use std::time::Duration;

use chrono::Utc;
use whisperfleet_adapters::cache::embedded::EmbeddedCache;
use whisperfleet_adapters::characters::sqlite::SqliteCharacterStore;
use whisperfleet_adapters::memory::sqlite::SqliteMemory;
use whisperfleet_shared::character::{Character, RelationshipDelta};
use whisperfleet_shared::identity::Identity;
use whisperfleet_shared::ports::cache::Cache;
use whisperfleet_shared::ports::characters::CharacterStore;
use whisperfleet_shared::ports::{MemoryPoint, VectorMemory};
use whisperfleet_shared::records;
use whisperfleet_shared::wire::Conversation;
use whisperfleet_worker::privacy::{self, Forgotten, Ports, Selector};

const TTL: Duration = Duration::from_secs(600);
const CHARACTERS: [&str; 2] = ["nora", "vellum"];

struct World {
    cache: EmbeddedCache,
    memory: SqliteMemory,
    store: SqliteCharacterStore,
}

impl World {
    async fn new() -> Self {
        let store = SqliteCharacterStore::open_in_memory().await.unwrap();
        for name in ["Nora", "Vellum"] {
            store
                .upsert(&Character {
                    name: name.into(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        Self {
            cache: EmbeddedCache::new(),
            memory: SqliteMemory::open(Path::new(":memory:")).await.unwrap(),
            store,
        }
    }

    fn ports(&self) -> Ports<'_> {
        Ports {
            memory: &self.memory,
            store: &self.store,
            cache: Some(&self.cache),
        }
    }

    /// One turn of `who` in `channel` with each character, as the worker stores it.
    async fn turn(&self, who: &Identity, channel: &str) {
        for character in CHARACTERS {
            let turn_id = uuid::Uuid::now_v7();
            let conv = Conversation {
                platform: who.platform.clone(),
                namespace: who.namespace.clone(),
                channel_id: channel.into(),
                user_id: who.user_id.clone(),
                guild_id: None,
                is_dm: true,
            };
            let key = conv.key(character);
            records::index_turn(&self.cache, who, character, &turn_id, &key, TTL)
                .await
                .unwrap();
            let record = records::turn_key(&turn_id);
            let entry = serde_json::json!({"role": "user", "text": format!("{} told {character}", who.user_id), "turn_id": turn_id.to_string()});
            self.cache
                .append_once(
                    &records::history_key(&key),
                    &[serde_json::to_vec(&entry).unwrap()],
                    20,
                    TTL,
                    &record,
                    records::HISTORY,
                    records::ABANDONED,
                    TTL,
                )
                .await
                .unwrap();
            self.cache
                .hash_set(&record, records::LLM, b"\"the answer\"", TTL)
                .await
                .unwrap();
            self.cache
                .hash_set(&record, records::REPLIED, b"1", TTL)
                .await
                .unwrap();
            self.memory
                .upsert(&[MemoryPoint {
                    id: uuid::Uuid::new_v4(),
                    character: character.into(),
                    identity: who.clone(),
                    role: "user".into(),
                    text: format!("{} told {character}", who.user_id),
                    emotion: "joy".into(),
                    intensity: 0.5,
                    channel_id: channel.into(),
                    is_dm: true,
                    timestamp: Utc::now(),
                    vector: vec![1.0, 0.0],
                }])
                .await
                .unwrap();
            self.store
                .apply_relationship(turn_id, who, character, RelationshipDelta::default())
                .await
                .unwrap()
                .unwrap();
        }
    }

    /// (memories, histories, relationships, cached answers) of `who`, as `show` sees them.
    async fn counts(&self, who: &Identity) -> (usize, usize, usize, usize) {
        let s = privacy::show(
            &self.ports(),
            &Selector {
                identity: who.clone(),
                character: None,
            },
        )
        .await
        .unwrap();
        (
            s.memories.len(),
            s.histories.len(),
            s.relationships.len(),
            s.cached_answers.len(),
        )
    }
}

#[tokio::test]
async fn forget_reaches_one_identity_and_one_character_when_asked() {
    let w = World::new().await;
    let target = Identity::new("http", "", "a:42:*? [b]\n");
    let neighbours = [
        Identity::new("http", "", "a:42:*? [b]\nx"),
        Identity::new("http", "", "42"),
        Identity::new("discord", "", target.user_id.clone()),
        Identity::new("http", "key", target.user_id.clone()),
    ];
    w.turn(&target, "x:42:y").await;
    for n in &neighbours {
        // The neighbours' channels hold the target's id too.
        w.turn(n, &format!("c:{}:*", target.user_id)).await;
    }
    assert_eq!(w.counts(&target).await, (2, 2, 2, 2));

    let one = privacy::forget(
        &w.ports(),
        &Selector {
            identity: target.clone(),
            character: Some("Nora".into()),
        },
    )
    .await
    .unwrap();
    assert_eq!(
        one,
        Forgotten {
            memories: 1,
            histories: 1,
            relationships: 1,
            cached_answers: 1
        }
    );
    assert_eq!(w.counts(&target).await, (1, 1, 1, 1), "vellum's stay");
    let shown = privacy::show(
        &w.ports(),
        &Selector {
            identity: target.clone(),
            character: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(shown.histories[0].character, "vellum");
    assert_eq!(shown.relationships[0].0, "vellum");

    let all = privacy::forget(
        &w.ports(),
        &Selector {
            identity: target.clone(),
            character: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        all,
        Forgotten {
            memories: 1,
            histories: 1,
            relationships: 1,
            cached_answers: 1
        }
    );
    assert_eq!(w.counts(&target).await, (0, 0, 0, 0));
    for n in &neighbours {
        assert_eq!(w.counts(n).await, (2, 2, 2, 2), "{n}");
    }
}

/// History lists under the key format from before identities: found by their exact names
/// when those cannot be anyone else's.
#[tokio::test]
async fn forget_removes_a_discord_users_history_from_before_identities() {
    let w = World::new().await;
    let user = Identity::new("discord", "", "312456789012345678");
    w.turn(&user, "912345678901234567").await;
    let legacy = "hist:discord:912345678901234567:312456789012345678:nora";
    let other = "hist:discord:912345678901234567:999456789012345678:nora";
    for key in [legacy, other] {
        w.cache
            .append_once(
                key,
                &[b"old".to_vec()],
                20,
                TTL,
                &format!("turn:{key}"),
                "h",
                "a",
                TTL,
            )
            .await
            .unwrap();
    }
    let f = privacy::forget(
        &w.ports(),
        &Selector {
            identity: user.clone(),
            character: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(f.histories, 3, "two current, one legacy");
    assert!(w.cache.list_tail(legacy, 5).await.unwrap().is_empty());
    assert_eq!(w.cache.list_tail(other, 5).await.unwrap().len(), 1);
}
