//! The Qdrant memory's tests: payloads, filters, error classification and redaction without a server; the contract against a live one when given.

use super::*;
use qdrant_client::qdrant::condition::ConditionOneOf;
use qdrant_client::qdrant::vectors_output::VectorsOptions;
use qdrant_client::qdrant::{DenseVector, VectorOutput};

/// Per-request timeout of the clients in these tests.
const T: std::time::Duration = std::time::Duration::from_secs(5);

fn sample() -> MemoryPoint {
    MemoryPoint {
        id: Uuid::new_v4(),
        character: "elena rodriguez".into(),
        identity: Identity::new("http", "key: one", "user 42"),
        role: "assistant".into(),
        text: "¡Hola! The tide is high today.".into(),
        emotion: "joy".into(),
        intensity: 0.3,
        channel_id: "guild-7".into(),
        is_dm: false,
        // Milliseconds: what both stores keep.
        timestamp: DateTime::<Utc>::from_timestamp_millis(1_760_000_123_456).unwrap(),
        vector: vec![0.6, 0.8, 0.0],
    }
}

/// What the server hands back for a stored point (newer servers fill the `vector`
/// oneof; `into_vector` also reads the deprecated `data` field of older ones).
fn as_returned(p: &PointStruct) -> VectorsOutput {
    let data = match p.vectors.as_ref().and_then(|v| v.vectors_options.as_ref()) {
        Some(qdrant_client::qdrant::vectors::VectorsOptions::Vector(v)) => match &v.vector {
            Some(qdrant_client::qdrant::vector::Vector::Dense(d)) => d.data.clone(),
            other => panic!("not a dense vector: {other:?}"),
        },
        other => panic!("not an unnamed vector: {other:?}"),
    };
    VectorsOutput {
        vectors_options: Some(VectorsOptions::Vector(VectorOutput {
            vector: Some(VectorOut::Dense(DenseVector { data })),
            ..Default::default()
        })),
    }
}

#[test]
fn a_point_survives_the_payload_round_trip() {
    let p = sample();
    let s = to_point_struct(&p);
    assert_eq!(
        s.id.as_ref().unwrap().point_id_options,
        Some(PointIdOptions::Uuid(p.id.to_string()))
    );
    assert_eq!(
        s.payload[F_TIMESTAMP].as_integer(),
        Some(1_760_000_123_456),
        "epoch ms"
    );
    assert_eq!(s.payload[F_IS_DM].as_bool(), Some(false));
    let back = from_parts(s.id.as_ref(), &s.payload, Some(&as_returned(&s))).unwrap();
    assert_eq!(back, p);
}

#[test]
fn unreadable_points_are_errors_not_defaults() {
    let p = sample();
    let s = to_point_struct(&p);
    let vectors = as_returned(&s);
    let mut payload = s.payload.clone();
    payload.remove(F_EMOTION);
    let e = from_parts(s.id.as_ref(), &payload, Some(&vectors)).unwrap_err();
    assert!(e.to_string().contains("`emotion`"), "{e}");
    let mut payload = s.payload.clone();
    payload.insert(F_TIMESTAMP.into(), "yesterday".into());
    assert!(from_parts(s.id.as_ref(), &payload, Some(&vectors)).is_err());
    assert!(
        from_parts(s.id.as_ref(), &s.payload, None).is_err(),
        "vector required"
    );
    assert!(from_parts(Some(&PointId::from(7u64)), &s.payload, Some(&vectors)).is_err());
}

fn field_matches(f: &Filter) -> Vec<(String, MatchValue)> {
    assert!(f.should.is_empty() && f.must_not.is_empty());
    f.must
        .iter()
        .map(|c| match &c.condition_one_of {
            Some(ConditionOneOf::Field(fc)) => (
                fc.key.clone(),
                fc.r#match.clone().and_then(|m| m.match_value).unwrap(),
            ),
            other => panic!("unexpected condition {other:?}"),
        })
        .collect()
}

#[test]
fn scope_filters_match_exact_keywords_and_hide_dms_from_guilds() {
    let scope = MemoryScope {
        character: "elena rodriguez".into(),
        identity: Identity::new("discord", "", "user 42"),
        include_dm: true,
    };
    // Values with spaces stay keyword matches (not full-text); the whole identity is
    // matched, the empty namespace exactly.
    assert_eq!(
        field_matches(&scope_filter(&scope)),
        [
            (F_PLATFORM.into(), MatchValue::Keyword("discord".into())),
            (F_NAMESPACE.into(), MatchValue::Keyword(String::new())),
            (F_USER.into(), MatchValue::Keyword("user 42".into())),
            (
                F_CHARACTER.into(),
                MatchValue::Keyword("elena rodriguez".into())
            ),
        ]
    );
    let guild = MemoryScope {
        include_dm: false,
        ..scope
    };
    assert_eq!(
        field_matches(&scope_filter(&guild))[4],
        (F_IS_DM.into(), MatchValue::Boolean(false))
    );
    let u1 = Identity::new("http", "k", "u1");
    assert_eq!(
        field_matches(&forget_filter(&u1, None)),
        [
            (F_PLATFORM.into(), MatchValue::Keyword("http".into())),
            (F_NAMESPACE.into(), MatchValue::Keyword("k".into())),
            (F_USER.into(), MatchValue::Keyword("u1".into())),
        ]
    );
    assert_eq!(field_matches(&forget_filter(&u1, Some("c"))).len(), 4);
}

#[test]
fn index_specs_mark_tenants_and_give_timestamp_range_support() {
    let specs = index_specs();
    for (field, spec) in &specs[..2] {
        match &spec.params {
            IndexParams::KeywordIndexParams(k) => {
                assert_eq!(k.is_tenant, Some(true), "{field}")
            }
            other => panic!("{field}: {other:?}"),
        }
    }
    match &specs[5].1.params {
        IndexParams::IntegerIndexParams(i) => assert_eq!(i.range, Some(true)),
        other => panic!("timestamp: {other:?}"),
    }
    assert_eq!(
        specs.map(|(f, _)| f),
        [
            F_CHARACTER,
            F_USER,
            F_PLATFORM,
            F_NAMESPACE,
            F_IS_DM,
            F_TIMESTAMP
        ]
    );
}

#[test]
fn ties_at_the_cut_widen_the_read() {
    // Asked for 3 (k = 2): the 2nd and 3rd tie, a 4th might too.
    assert!(boundary_tie(&[0.9, 0.5, 0.5], 2, 3));
    assert!(
        !boundary_tie(&[0.9, 0.5, 0.4], 2, 3),
        "the run ended inside the page"
    );
    assert!(
        !boundary_tie(&[0.9, 0.5], 2, 3),
        "fewer than asked: everything was read"
    );
    assert!(!boundary_tie::<f32>(&[], 1, 2));
}

#[test]
fn ordering_matches_the_embedded_store() {
    let t = DateTime::<Utc>::from_timestamp_millis(1_000).unwrap();
    let mk = |id: u128, ms: i64| MemoryPoint {
        id: Uuid::from_u128(id),
        timestamp: t + chrono::Duration::milliseconds(ms),
        ..sample()
    };
    let mut hits = vec![
        (mk(1, 0), 0.5),
        (mk(2, 5), 0.5),
        (mk(3, 5), 0.5),
        (mk(4, 0), 0.9),
    ];
    sort_hits(&mut hits);
    let ids: Vec<u128> = hits.iter().map(|(p, _)| p.id.as_u128()).collect();
    assert_eq!(ids, [4, 2, 3, 1]);
    let mut pts = vec![mk(3, 5), mk(1, 0), mk(2, 5)];
    sort_recent(&mut pts);
    let ids: Vec<u128> = pts.iter().map(|p| p.id.as_u128()).collect();
    assert_eq!(ids, [2, 3, 1]);
}

#[test]
fn errors_are_classified_for_retry() {
    assert!(retryable_status(GRPC_UNAVAILABLE, "connection refused"));
    assert!(retryable_status(GRPC_CANCELLED, "Timeout expired"));
    assert!(retryable_status(GRPC_DEADLINE_EXCEEDED, ""));
    assert!(retryable_status(
        GRPC_INTERNAL,
        "Failed to connect to http://q:6334/: x"
    ));
    assert!(!retryable_status(
        GRPC_INTERNAL,
        "Service internal error: boom"
    ));
    assert!(!retryable_status(16, "Must provide an API key")); // UNAUTHENTICATED
    assert!(!retryable_status(3, "Wrong input: Vector dimension error")); // INVALID_ARGUMENT
    assert!(!retryable_status(
        5,
        "Not found: Collection `x` doesn't exist!"
    )); // NOT_FOUND
}

#[test]
fn credentials_stay_out_of_describe_debug_and_errors() {
    let mem = QdrantMemory::connect(
        "https://admin:hunter2@qdrant.example:6334/?token=t#frag",
        Some(SecretString::from("sk-topsecret\n".to_owned())),
        "memories",
        8,
        T,
    )
    .unwrap();
    assert_eq!(
        mem.describe(),
        "qdrant at https://qdrant.example:6334 (collection memories)"
    );
    let dbg = format!("{mem:?}");
    assert!(
        !dbg.contains("topsecret") && !dbg.contains("hunter2"),
        "{dbg}"
    );
    assert!(dbg.contains("[REDACTED]"));
    assert_eq!(
        scrub(
            "bad key sk-topsecret at https://admin:hunter2@q",
            &mem.secrets
        ),
        "bad key [REDACTED] at https://[REDACTED]@q"
    );
    assert!(
        QdrantMemory::connect("http://q:6334", Some("a b".to_owned().into()), "c", 8, T).is_err()
    );
    assert!(QdrantMemory::connect("q:6334", None, "c", 8, T).is_err());
    assert!(QdrantMemory::connect("http://q:6334", None, "c", 0, T).is_err());
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    // Port 1 on loopback: refused at once, no server needed.
    let mem = QdrantMemory::connect(
        "http://127.0.0.1:1",
        Some(SecretString::from("sk-topsecret".to_owned())),
        "memories",
        8,
        T,
    )
    .unwrap();
    let scope = MemoryScope {
        character: "c".into(),
        identity: Identity::new("http", "", "u"),
        include_dm: true,
    };
    match mem.recent(&scope, 3).await {
        Err(MemoryError::Unavailable(m)) => assert!(!m.contains("topsecret"), "{m}"),
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

// ---- against a real server ------------------------------------------------------------

fn test_server() -> (String, Option<SecretString>) {
    let url = std::env::var("WHISPERFLEET_TEST_QDRANT_URL")
        .expect("set WHISPERFLEET_TEST_QDRANT_URL to a Qdrant gRPC URL (port 6334)");
    let key = std::env::var("WHISPERFLEET_TEST_QDRANT_API_KEY")
        .ok()
        .map(SecretString::from);
    (url, key)
}

/// Runs `body` on a fresh collection and drops the collection afterwards, also when
/// `body` panics.
async fn with_fresh_collection<F, Fut>(body: F)
where
    F: FnOnce(String, Option<SecretString>, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use futures::FutureExt;
    let (url, key) = test_server();
    let collection = format!("whisperfleet_test_{}", Uuid::new_v4().simple());
    let outcome = std::panic::AssertUnwindSafe(body(url.clone(), key.clone(), collection.clone()))
        .catch_unwind()
        .await;
    let mem = QdrantMemory::connect(&url, key, &collection, 8, T).unwrap();
    let dropped = mem.drop_collection().await;
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
    dropped.expect("deleting the test collection");
}

#[tokio::test]
#[ignore = "needs a Qdrant server: set WHISPERFLEET_TEST_QDRANT_URL"]
async fn qdrant_memory_keeps_the_contract() {
    with_fresh_collection(|url, key, collection| async move {
        // Two workers setting up the same new collection at once both succeed.
        let a = QdrantMemory::connect(&url, key.clone(), &collection, 8, T).unwrap();
        let b = QdrantMemory::connect(&url, key.clone(), &collection, 8, T).unwrap();
        let (ra, rb) = tokio::join!(a.ensure_collection(), b.ensure_collection());
        ra.expect("first worker");
        rb.expect("second worker");
        // And a third finds everything in place.
        let mem = QdrantMemory::connect(&url, key.clone(), &collection, 8, T).unwrap();
        mem.ensure_collection().await.expect("existing collection");

        whisperfleet_testkit::contracts::memory::run(&mem).await;

        let wrong = QdrantMemory::connect(&url, key, &collection, 16, T).unwrap();
        match wrong.ensure_collection().await {
            Err(MemoryError::Other(m)) => assert!(m.contains("dimensions"), "{m}"),
            other => panic!("a vector size mismatch must be refused: {other:?}"),
        }
    })
    .await;
}

#[tokio::test]
#[ignore = "needs a Qdrant server: set WHISPERFLEET_TEST_QDRANT_URL"]
async fn qdrant_breaks_ties_like_the_embedded_store() {
    with_fresh_collection(|url, key, collection| async move {
        let mem = QdrantMemory::connect(&url, key, &collection, 8, T).unwrap();
        let embedded = crate::memory::sqlite::SqliteMemory::open(std::path::Path::new(":memory:"))
            .await
            .unwrap();
        let t = DateTime::<Utc>::from_timestamp_millis(1_760_000_000_000).unwrap();
        let mut v = vec![0.0f32; 8];
        v[0] = 1.0;
        // Six identical vectors, timestamps in pairs: every cut lands inside a tie.
        // Ids deliberately out of step with the timestamps.
        let pts: Vec<MemoryPoint> = [3u128, 0, 5, 1, 4, 2]
            .into_iter()
            .enumerate()
            .map(|(i, id)| MemoryPoint {
                id: Uuid::from_u128(0x1000 + id),
                character: "tie character".into(),
                identity: Identity::new("http", "", "tie user"),
                vector: v.clone(),
                timestamp: t + chrono::Duration::milliseconds((i / 2) as i64),
                ..sample()
            })
            .collect();
        mem.upsert(&pts).await.unwrap();
        embedded.upsert(&pts).await.unwrap();
        let scope = MemoryScope {
            character: "tie character".into(),
            identity: Identity::new("http", "", "tie user"),
            include_dm: true,
        };
        for k in 1..=6 {
            let ids =
                |h: Vec<(MemoryPoint, f32)>| h.into_iter().map(|(p, _)| p.id).collect::<Vec<_>>();
            assert_eq!(
                ids(mem.search(&scope, &v, k).await.unwrap()),
                ids(embedded.search(&scope, &v, k).await.unwrap()),
                "search k={k}"
            );
            let ids = |r: Vec<MemoryPoint>| r.into_iter().map(|p| p.id).collect::<Vec<_>>();
            assert_eq!(
                ids(mem.recent(&scope, k).await.unwrap()),
                ids(embedded.recent(&scope, k).await.unwrap()),
                "recent n={k}"
            );
        }
        assert_eq!(mem.forget(&scope.identity, None).await.unwrap(), 6);
    })
    .await;
}

/// Points written before identities had platforms get the platform their channel says.
#[tokio::test]
#[ignore = "needs a Qdrant server: set WHISPERFLEET_TEST_QDRANT_URL"]
async fn qdrant_backfill_gives_old_points_their_platform() {
    with_fresh_collection(|url, key, collection| async move {
        let mem = QdrantMemory::connect(&url, key, &collection, 8, T).unwrap();
        mem.ensure_collection().await.unwrap();
        let mut v = vec![0.0f32; 8];
        v[0] = 1.0;
        let old = |user: &str, channel: &str| {
            let p = MemoryPoint {
                id: Uuid::new_v4(),
                identity: Identity::new("x", "", user),
                channel_id: channel.into(),
                vector: v.clone(),
                ..sample()
            };
            let mut payload = to_payload(&p);
            payload.remove(F_PLATFORM);
            payload.remove(F_NAMESPACE);
            PointStruct::new(PointId::from(p.id.to_string()), v.clone(), payload)
        };
        let points = vec![
            old("312456789012345678", "912345678901234567"),
            old("me", "terminal:me"),
            old("42", "dm:42"),
        ];
        mem.client
            .upsert_points(UpsertPointsBuilder::new(&collection, points).wait(true))
            .await
            .unwrap();
        assert_eq!(mem.backfill_platforms().await.unwrap(), 3);
        assert_eq!(mem.backfill_platforms().await.unwrap(), 0, "idempotent");
        for (platform, user) in [
            ("discord", "312456789012345678"),
            ("terminal", "me"),
            ("http", "42"),
        ] {
            let id = Identity::new(platform, "", user);
            assert_eq!(mem.list(&id, None, 10).await.unwrap().len(), 1, "{id}");
        }
        assert!(
            mem.list(&Identity::new("discord", "", "42"), None, 10)
                .await
                .unwrap()
                .is_empty()
        );
    })
    .await;
}
