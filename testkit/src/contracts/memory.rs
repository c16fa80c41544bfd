//! The behaviour every [`VectorMemory`] must show: filters by user and character, DM
//! memories never in guild channels, idempotent upserts, recency order and `forget`. Run
//! against the embedded SQLite memory (always) and Qdrant (when a server is given).

use chrono::Utc;
use uuid::Uuid;
use whisperfleet_shared::ports::memory::{MemoryPoint, MemoryScope, VectorMemory};

/// The behaviour every `VectorMemory` must show, on a store of its own (fresh character
/// names per call, so it can share a server with other runs). Panics on a violation.
pub async fn run(mem: &dyn VectorMemory) {
    let tag = Uuid::new_v4().simple().to_string();
    let character = format!("contract_{tag}");
    let other_character = format!("contract_other_{tag}");
    let dims = 8;
    let unit = |i: usize| {
        let mut v = vec![0.0f32; dims];
        v[i % dims] = 1.0;
        v
    };
    let base = Utc::now() - chrono::Duration::seconds(100);
    let point = |n: usize, user: &str, ch: &str, is_dm: bool, v: Vec<f32>| MemoryPoint {
        id: Uuid::new_v5(
            &Uuid::from_u128(n as u128 + 1),
            format!("{tag}{user}{ch}").as_bytes(),
        ),
        character: ch.to_string(),
        user_id: user.to_string(),
        role: if n.is_multiple_of(2) {
            "user"
        } else {
            "assistant"
        }
        .into(),
        text: format!("memory {n}"),
        emotion: "joy".into(),
        intensity: 0.5,
        channel_id: if is_dm {
            "dm".into()
        } else {
            "guild-channel".into()
        },
        is_dm,
        timestamp: base + chrono::Duration::seconds(n as i64),
        vector: v,
    };
    let pts = vec![
        point(0, "alice", &character, true, unit(0)),
        point(1, "alice", &character, false, unit(1)),
        point(2, "alice", &character, false, {
            let mut v = unit(0);
            v[1] = 1.0;
            v
        }),
        point(3, "bob", &character, true, unit(0)),
        point(4, "alice", &other_character, true, unit(0)),
    ];
    mem.upsert(&pts).await.expect("upsert");
    // Idempotent by id: writing the same points again changes nothing.
    mem.upsert(&pts).await.expect("second upsert");

    let dm_scope = MemoryScope {
        character: character.clone(),
        user_id: "alice".into(),
        include_dm: true,
    };
    let hits = mem.search(&dm_scope, &unit(0), 10).await.expect("search");
    let texts: Vec<&str> = hits.iter().map(|(p, _)| p.text.as_str()).collect();
    assert_eq!(
        texts,
        ["memory 0", "memory 2", "memory 1"],
        "best first, only alice × character"
    );
    assert!(
        (hits[0].1 - 1.0).abs() < 1e-4,
        "cosine of identical vectors is 1"
    );
    assert!(hits[0].1 >= hits[1].1 && hits[1].1 >= hits[2].1);
    assert_eq!(
        mem.search(&dm_scope, &unit(0), 1).await.unwrap().len(),
        1,
        "k respected"
    );

    let guild_scope = MemoryScope {
        include_dm: false,
        ..dm_scope.clone()
    };
    let guild = mem.search(&guild_scope, &unit(0), 10).await.unwrap();
    assert!(
        guild.iter().all(|(p, _)| !p.is_dm),
        "DM memories never surface in a guild channel"
    );
    assert_eq!(guild.len(), 2);

    let recent = mem.recent(&dm_scope, 2).await.unwrap();
    let texts: Vec<&str> = recent.iter().map(|p| p.text.as_str()).collect();
    assert_eq!(texts, ["memory 2", "memory 1"], "newest first");
    let p = &recent[0];
    assert_eq!(
        (p.role.as_str(), p.emotion.as_str(), p.channel_id.as_str()),
        ("user", "joy", "guild-channel")
    );
    assert_eq!(p.vector.len(), dims);

    assert_eq!(mem.forget("alice", Some(&character)).await.unwrap(), 3);
    assert!(
        mem.search(&dm_scope, &unit(0), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let other = MemoryScope {
        character: other_character.clone(),
        user_id: "alice".into(),
        include_dm: true,
    };
    assert_eq!(
        mem.recent(&other, 10).await.unwrap().len(),
        1,
        "other character untouched"
    );
    let bob = MemoryScope {
        character: character.clone(),
        user_id: "bob".into(),
        include_dm: true,
    };
    assert_eq!(
        mem.recent(&bob, 10).await.unwrap().len(),
        1,
        "other user untouched"
    );
    mem.forget("alice", None).await.unwrap();
    mem.forget("bob", None).await.unwrap();
}
