//! The behaviour every [`VectorMemory`] must show: filters by identity (platform, namespace,
//! user id: the same user id on another platform or in another namespace is someone else)
//! and character, DM memories never in guild channels, idempotent upserts, recency order,
//! `list` and `forget`. Run
//! against the embedded SQLite memory (always) and Qdrant (when a server is given).

use chrono::Utc;
use uuid::Uuid;
use whisperfleet_shared::identity::Identity;
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
    // Ids with separators and glob characters, and neighbours that share them.
    let alice = Identity::new("discord", "", format!("alice:*?[{tag}] \n"));
    let bob = Identity::new("discord", "", format!("bob {tag}"));
    let alice_http = Identity::new("http", "", alice.user_id.clone());
    let alice_ns = Identity::new("http", "key:1", alice.user_id.clone());
    let point = |n: usize, user: &Identity, ch: &str, is_dm: bool, v: Vec<f32>| MemoryPoint {
        id: Uuid::new_v5(
            &Uuid::from_u128(n as u128 + 1),
            format!("{tag}{}{ch}", user.key()).as_bytes(),
        ),
        character: ch.to_string(),
        identity: user.clone(),
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
        point(0, &alice, &character, true, unit(0)),
        point(1, &alice, &character, false, unit(1)),
        point(2, &alice, &character, false, {
            let mut v = unit(0);
            v[1] = 1.0;
            v
        }),
        point(3, &bob, &character, true, unit(0)),
        point(4, &alice, &other_character, true, unit(0)),
        // Alice's user id on another platform, and in an HTTP namespace: other people.
        point(5, &alice_http, &character, true, unit(0)),
        point(6, &alice_ns, &character, true, unit(0)),
    ];
    mem.upsert(&pts).await.expect("upsert");
    // Idempotent by id: writing the same points again changes nothing.
    mem.upsert(&pts).await.expect("second upsert");

    let dm_scope = MemoryScope {
        character: character.clone(),
        identity: alice.clone(),
        include_dm: true,
    };
    let hits = mem.search(&dm_scope, &unit(0), 10).await.expect("search");
    let texts: Vec<&str> = hits.iter().map(|(p, _)| p.text.as_str()).collect();
    assert_eq!(
        texts,
        ["memory 0", "memory 2", "memory 1"],
        "best first, only alice × character (not her user id on HTTP or in a namespace)"
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
    assert_eq!(p.identity, alice, "the identity comes back whole");

    // list: one identity, every character or one, DM or not, newest first.
    let texts = |v: Vec<MemoryPoint>| v.into_iter().map(|p| p.text).collect::<Vec<_>>();
    assert_eq!(
        texts(mem.list(&alice, None, 10).await.unwrap()),
        ["memory 4", "memory 2", "memory 1", "memory 0"]
    );
    assert_eq!(
        texts(mem.list(&alice, Some(&character), 2).await.unwrap()),
        ["memory 2", "memory 1"]
    );
    assert_eq!(
        texts(mem.list(&alice_ns, None, 10).await.unwrap()),
        ["memory 6"]
    );

    assert_eq!(mem.forget(&alice, Some(&character)).await.unwrap(), 3);
    assert!(
        mem.search(&dm_scope, &unit(0), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let other = MemoryScope {
        character: other_character.clone(),
        identity: alice.clone(),
        include_dm: true,
    };
    assert_eq!(
        mem.recent(&other, 10).await.unwrap().len(),
        1,
        "other character untouched"
    );
    for (who, n) in [(&bob, 1), (&alice_http, 1), (&alice_ns, 1)] {
        let scope = MemoryScope {
            character: character.clone(),
            identity: who.clone(),
            include_dm: true,
        };
        assert_eq!(
            mem.recent(&scope, 10).await.unwrap().len(),
            n,
            "{who} untouched by forgetting alice"
        );
    }
    assert_eq!(mem.forget(&alice, None).await.unwrap(), 1);
    for who in [&bob, &alice_http, &alice_ns] {
        assert_eq!(mem.forget(who, None).await.unwrap(), 1, "{who}");
    }
}
