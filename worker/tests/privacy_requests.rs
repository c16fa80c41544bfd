//! The worker's privacy consumer over the embedded ports: a request is answered on its
//! gateway's reply queue (marked as a privacy reply) and acked; a vector memory that keeps
//! failing with a retryable error gets the request requeued a bounded number of times and
//! then an error reply — the worker keeps serving; once the store is back, requests are
//! answered again.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use whisperfleet_adapters::connect::{self, Migrations, Missing};
use whisperfleet_shared::config::Config;
use whisperfleet_shared::identity::Identity;
use whisperfleet_shared::ports::broker::{Message, Subscription};
use whisperfleet_shared::ports::{MemoryError, MemoryPoint, MemoryScope, VectorMemory};
use whisperfleet_shared::topology;
use whisperfleet_shared::wire::{
    PrivacyAction, PrivacyOutcome, PrivacyReply, PrivacyRequest, WIRE_VERSION,
};
use whisperfleet_worker::privacy_requests::MAX_DELIVERIES;
use whisperfleet_worker::startup::{Application, Strategies};

/// The embedded vector memory, refusing `list` and `forget` while `down`.
struct Flaky {
    inner: Arc<dyn VectorMemory>,
    down: AtomicBool,
    refused: AtomicU32,
}

impl Flaky {
    fn check(&self) -> Result<(), MemoryError> {
        if self.down.load(Ordering::SeqCst) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(MemoryError::Unavailable("the test took it down".into()));
        }
        Ok(())
    }
}

#[async_trait]
impl VectorMemory for Flaky {
    async fn upsert(&self, points: &[MemoryPoint]) -> Result<(), MemoryError> {
        self.inner.upsert(points).await
    }
    async fn search(
        &self,
        scope: &MemoryScope,
        vector: &[f32],
        k: usize,
    ) -> Result<Vec<(MemoryPoint, f32)>, MemoryError> {
        self.inner.search(scope, vector, k).await
    }
    async fn recent(&self, scope: &MemoryScope, n: usize) -> Result<Vec<MemoryPoint>, MemoryError> {
        self.inner.recent(scope, n).await
    }
    async fn list(
        &self,
        identity: &Identity,
        character: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MemoryPoint>, MemoryError> {
        self.check()?;
        self.inner.list(identity, character, limit).await
    }
    async fn forget(
        &self,
        identity: &Identity,
        character: Option<&str>,
    ) -> Result<u64, MemoryError> {
        self.check()?;
        self.inner.forget(identity, character).await
    }
    fn describe(&self) -> String {
        "flaky".into()
    }
}

fn request(action: PrivacyAction) -> PrivacyRequest {
    PrivacyRequest {
        v: WIRE_VERSION,
        request_id: uuid::Uuid::now_v7(),
        identity: Identity::new("http", "acme", "42"),
        character: None,
        action,
        reply_to: "gw-test".into(),
        expires_at: Utc::now() + chrono::Duration::seconds(60),
    }
}

async fn reply_of(replies: &mut Subscription) -> PrivacyReply {
    let d = tokio::time::timeout(Duration::from_secs(30), replies.rx.recv())
        .await
        .expect("a reply in time")
        .expect("the reply queue is open");
    assert_eq!(
        d.headers.get(topology::HEADER_KIND).map(String::as_str),
        Some(topology::KIND_PRIVACY),
        "marked as a privacy reply"
    );
    d.acker.ack().await.unwrap();
    PrivacyReply::decode(&d.body).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_store_is_retried_a_bounded_number_of_times_then_answered_with_an_error() {
    let dir = std::env::temp_dir().join(format!("wf-privacy-requests-{}", uuid::Uuid::now_v7()));
    let mut config = Config::default();
    config.backends.data_dir = Some(dir.clone());
    let p = connect::turn_ports(&config, "test", Missing::Embedded, Migrations::Required)
        .await
        .unwrap();
    let flaky = Arc::new(Flaky {
        inner: p.memory.memory.clone(),
        down: AtomicBool::new(true),
        refused: AtomicU32::new(0),
    });
    let mut memory = p.memory.clone();
    memory.memory = flaky.clone();
    let broker = p.broker.clone();
    let app = Application::build_with(
        &config,
        broker.clone(),
        Some(p.cache.clone()),
        p.store.clone(),
        p.llm.clone(),
        memory,
        Strategies::default(),
    )
    .await
    .unwrap();
    let stop = CancellationToken::new();
    let worker = tokio::spawn(app.run_until_stopped(stop.clone()));
    broker.ensure_reply_queue("gw-test").await.unwrap();
    let queue = topology::reply_queue("gw-test");
    let mut replies = broker.consume(&queue, 10).await.unwrap();
    let publish = |req: &PrivacyRequest| {
        broker.publish(Message::json(
            topology::PRIVACY_EXCHANGE,
            topology::PRIVACY_ROUTING_KEY,
            req.encode(),
        ))
    };

    let req = request(PrivacyAction::Forget);
    publish(&req).await.unwrap();
    let reply = reply_of(&mut replies).await;
    assert_eq!(reply.request_id, req.request_id);
    assert_eq!(reply.outcome, PrivacyOutcome::Error, "{reply:?}");
    assert!(
        reply.error.as_deref().unwrap().contains("memory"),
        "{reply:?}"
    );
    // Each delivery tried three times (the retry policy), MAX_DELIVERIES deliveries.
    assert_eq!(flaky.refused.load(Ordering::SeqCst), 3 * MAX_DELIVERIES);
    let privacy = broker
        .queue_stats(topology::PRIVACY_QUEUE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(privacy.ready, 0, "nothing left behind");

    // The store is back: the same worker answers.
    flaky.down.store(false, Ordering::SeqCst);
    let req = request(PrivacyAction::Show);
    publish(&req).await.unwrap();
    let reply = reply_of(&mut replies).await;
    assert_eq!(
        (reply.request_id, reply.outcome),
        (req.request_id, PrivacyOutcome::Ok)
    );
    assert!(!worker.is_finished(), "the worker keeps running");
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), worker).await;
    let _ = std::fs::remove_dir_all(dir);
}
