//! One turn, stage by stage: `cdl_load` → `context` → `compose` → `llm` → history append →
//! then the turn's end (`finish`): `reply_publish`, `memory_store`, the metric points, in
//! the order its [`Finish`](crate::finish::Finish) gives → ack. Stage timings are recorded
//! here and in `finish`, nowhere else; [`WORKER_STAGES`] lists them.
//!
//! **The turn as one path.** Every way a turn can end — answered, fallback, unknown
//! character, store down, composition failed, past its deadline, abandoned, given up — goes
//! through the same end ([`conclude`]), which knows from the turn's record
//! ([`records`](whisperfleet_shared::records): one hash per turn) what an earlier delivery
//! already did: the LLM answer is reused, history is appended at most once, a reply that
//! was confirmed is never sent again (not even an apology), memory is stored at most once.
//! A turn runs under a lease ([`crate::lease`]), so at most one worker runs it at a time.
//!
//! **Bounded.** A turn has until `received_at + turn_deadline` (the gateway's receipt; the
//! gateway's reply timeout is longer) to reply: started later, it apologises; the LLM gets
//! what is left of that budget (less a reserve for the end), and an answer that does not
//! come in time ends as an honest fallback. A turn older than `turn_record_ttl` is not run
//! at all (its records may be gone): it is dead-lettered as expired.
//!
//! **What the user did not see is not presented as said.** The gateway marks a turn
//! abandoned when nobody will see its reply (HTTP client gone or timed out, publish failed)
//! and takes its history back; the worker then skips it (at start), the history append
//! refuses it, and `memory_store` is skipped.
//!
//! Ordering: the gateway keeps at most one turn per conversation in flight, so turns of one
//! conversation reach the workers one at a time and in order; the worker also serialises
//! turns of one conversation locally, which covers a gateway that timed out and sent the
//! next turn while a slow one was still running here.
//!
//! Ack: after the reply is confirmed and the metric event published. A reply the broker
//! does not take (nack, connection lost, publishers blocked) is retried for what is left of
//! the turn's budget (at least two seconds); then the delivery is **requeued** at once (not
//! left unsettled, which would strand it on a live channel and hold a prefetch slot for
//! good). The requeue counts against the delivery limit, so a broker that keeps refusing
//! ends in `turns.dead` with a reason, never in a loop.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use tracing::Instrument;
use whisperfleet_shared::character::{Character, normalize_name};
use whisperfleet_shared::ports::broker::{self, Broker, Delivery, Message};
use whisperfleet_shared::ports::cache::{Appended, Cache};
use whisperfleet_shared::ports::characters::{CharacterStore, StoreError};
use whisperfleet_shared::ports::llm::{ChatRequest, Llm, Role};
use whisperfleet_shared::ports::{EmotionResult, MemoryScope};
use whisperfleet_shared::records::{self, TurnRecord};
use whisperfleet_shared::request_cache::RequestCache;
use whisperfleet_shared::retry::{RetryPolicy, retry};
use whisperfleet_shared::topology;
use whisperfleet_shared::trace::{self, TraceContext};
use whisperfleet_shared::wire::{
    Counters, Outcome, Stage, TurnReply, TurnRequest, WIRE_VERSION, ms_between,
    salvage_reply_address,
};

use crate::cdl::{CdlCounts, CharacterSource};
use crate::compose::{ComposeContext, Composition, Reload};
use crate::context;
use crate::context::CountingMemory;
use crate::finish::{Finish, Tail, TurnMetrics, fallback_text, reply_of};
use crate::lease;
use crate::prompt::{EmotionSummary, HistoryEntry, MemorySnippet, RelationshipSummary};
use crate::stream::{Deltas, cut_off};

/// Settings the pipeline reads on every turn.
#[derive(Debug, Clone)]
pub struct TurnSettings {
    pub history_len: usize,
    pub prompt_budget_tokens: usize,
    /// The turn's budget, from the gateway's receipt (`received_at`).
    pub turn_deadline: Duration,
    pub delivery_limit: u32,
    pub record_ttl: Duration,
    pub llm_model: Option<String>,
    /// Relevant memories put in the prompt.
    pub memory_top_k: usize,
    /// Recent emotional states (the trajectory) put in the prompt.
    pub recent_states: usize,
}

pub use whisperfleet_shared::ports::MemoryPorts;

/// Everything a turn needs; shared by all turns of a worker process (built by
/// `startup::Application::build_with`).
pub struct Deps {
    pub broker: Arc<dyn Broker>,
    pub cache: Option<Arc<dyn Cache>>,
    /// Relationships (read in `context`, moved in `memory_store`); characters are read
    /// through `characters`.
    pub store: Arc<dyn CharacterStore>,
    pub characters: Arc<dyn CharacterSource>,
    pub llm: Arc<dyn Llm>,
    pub memory: MemoryPorts,
    pub composition: Arc<dyn Composition>,
    pub finish: Arc<dyn Finish>,
    pub metrics: Arc<dyn TurnMetrics>,
    pub settings: TurnSettings,
    /// This process, as its turn leases name it.
    pub instance: String,
    pub(crate) conversations: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Deps {
    fn conversation_lock(&self, key: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.conversations.lock().expect("conversation locks");
        // Forget locks nobody holds, so the map stays as small as the turns in flight.
        if map.len() > 1024 {
            map.retain(|_, l| Arc::strong_count(l) > 1);
        }
        map.entry(key.to_string()).or_default().clone()
    }
}

/// Kept for what the end of a turn needs after the reply: time to publish it (with its
/// retries) and settle, taken off the LLM's share of the budget.
const FINISH_RESERVE: Duration = Duration::from_secs(2);

/// How a reply the broker does not take is tried again: quickly at first, then every two
/// seconds, for as long as the turn's budget lasts (see [`publish_reply`]).
fn reply_retry() -> RetryPolicy {
    RetryPolicy::forever(Duration::from_millis(200), Duration::from_secs(2))
}

/// The least time a reply is tried for, even when the turn's budget is spent.
const MIN_REPLY_TRIES: Duration = Duration::from_secs(2);

/// What happened to one delivery (for the consumer's logs and tests).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handled {
    Acked,
    DeadLettered,
    /// Given back to the queue because the broker did not take the reply; it comes back
    /// (and counts against the delivery limit).
    Requeued,
    /// Not even the requeue went through (the channel is gone, which returns it anyway).
    Unsettled,
}

/// Runs one delivery to the end. Never panics on bad input: what cannot be read is
/// dead-lettered with a reason.
pub async fn handle(deps: &Deps, delivery: Delivery) -> Handled {
    let req = match TurnRequest::decode(&delivery.body) {
        Ok(r) => r,
        Err(e) => return give_up(deps, delivery, &e.to_string()).await,
    };
    // With limit L, RabbitMQ's quorum queue delivers a turn L+1 times (counts 0..=L) and
    // dead-letters it silently when it comes back once more. On that last delivery, after L
    // attempts that never finished (workers keep dying on it), give up with a reason and tell
    // the user instead of leaving them waiting.
    if delivery.delivery_count >= deps.settings.delivery_limit {
        let reason = format!(
            "delivery limit reached: {} earlier deliveries did not finish this turn",
            delivery.delivery_count
        );
        return give_up(deps, delivery, &reason).await;
    }
    // The gateway's trace continues here with a span of this worker; a turn from a gateway
    // that sent none (or an unreadable one) starts its own.
    let parent = delivery
        .headers
        .get(topology::HEADER_TRACEPARENT)
        .and_then(|h| TraceContext::parse(h))
        .unwrap_or_else(TraceContext::new_root);
    let trace = parent.child();
    let span = tracing::info_span!(
        "turn",
        turn_id = %req.turn_id,
        trace_id = %trace.trace_id(),
        span_id = %trace.span_id(),
        character = %req.character,
        seq = req.seq
    );
    trace::link(&span, &parent);
    let turn = async move {
        let lock = deps.conversation_lock(&req.conversation_key());
        let _guard = lock.lock().await;
        tracing::debug!("turn started");
        run(deps, req, delivery).await
    };
    trace::scope(trace, turn.instrument(span)).await
}

/// A span for one stage of the turn, inside the turn's span (named by the stage in an OTLP
/// export, so a trace shows where the turn's time went).
pub(crate) fn stage_span(stage: Stage) -> tracing::Span {
    tracing::info_span!("stage", stage = stage.as_str(), otel.name = stage.as_str())
}

/// The turn's record; empty without a cache, or (logged) when Redis cannot be read — then
/// the turn runs as a first delivery would, and the gateway's duplicate drop is the guard.
async fn read_record(deps: &Deps, turn_id: &str, counters: &mut Counters) -> TurnRecord {
    let Some(c) = &deps.cache else {
        return TurnRecord::default();
    };
    counters.redis_round_trips += 1;
    match TurnRecord::read(c.as_ref(), &turn_id).await {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "turn record unreadable; running the turn as new");
            TurnRecord::default()
        }
    }
}

/// Dead-letters an unprocessable turn and, when its reply address can be read and nobody
/// answered it yet, tells the user.
async fn give_up(deps: &Deps, delivery: Delivery, reason: &str) -> Handled {
    tracing::warn!(reason, queue = %delivery.queue, "dead-lettering a turn");
    if let Some((reply_to, turn_id, conversation)) = salvage_reply_address(&delivery.body)
        && let (Some(turn_id), Some(conversation)) = (turn_id, conversation)
    {
        let record = read_record(deps, &turn_id.to_string(), &mut Counters::default()).await;
        if record.replied() {
            tracing::info!("the turn was answered by an earlier delivery; no second reply");
        } else if let Some(why) = record.abandoned() {
            tracing::info!(why, "nobody waits for this turn's reply; none sent");
        } else {
            let reply = TurnReply {
                v: WIRE_VERSION,
                turn_id,
                conversation,
                character: String::new(),
                text: "Sorry, something went wrong with that message and it could not be answered."
                    .into(),
                outcome: Outcome::Error,
                timings: BTreeMap::new(),
                counters: Counters::default(),
                seq: 0,
                platform_message_id: None,
                reason: Some("unprocessable".into()),
                partial: false,
            };
            if publish_reply(deps, &reply_to, &reply, MIN_REPLY_TRIES)
                .await
                .is_ok()
            {
                record_done(deps, &turn_id.to_string(), records::REPLIED).await;
            }
        }
    }
    dead_letter(deps, delivery, reason).await
}

async fn dead_letter(deps: &Deps, delivery: Delivery, reason: &str) -> Handled {
    match broker::dead_letter(deps.broker.as_ref(), delivery, reason).await {
        Ok(()) => Handled::DeadLettered,
        Err(e) => {
            tracing::error!(error = %e, "could not dead-letter; leaving it for redelivery");
            Handled::Unsettled
        }
    }
}

/// Sets a field of the turn's record (best effort: a lost record costs at most a repeated
/// step, which the gateway's duplicate drop and idempotent writes absorb).
pub(crate) async fn record_done(deps: &Deps, turn_id: &str, field: &str) {
    if let Some(c) = &deps.cache
        && let Err(e) = c
            .hash_set(
                &records::turn_key(&turn_id),
                field,
                b"1",
                deps.settings.record_ttl,
            )
            .await
    {
        tracing::warn!(error = %e, field, "could not record a finished step; a redelivery may repeat it");
    }
}

/// Publishes a reply, retrying for `bound`. A reply nobody can receive (its gateway's
/// queue is gone) is dropped as done; a nack or a lost connection is an error.
///
/// Why retry for the turn's remaining budget instead of giving the turn back at once: every
/// requeue counts against the delivery limit, so a broker that blocks publishers for a few
/// seconds (a memory alarm) would burn through the limit and dead-letter turns that only
/// needed to wait. Within the budget the user is still waiting anyway; after it, the turn
/// is requeued.
pub(crate) async fn publish_reply(
    deps: &Deps,
    reply_to: &str,
    reply: &TurnReply,
    bound: Duration,
) -> Result<(), broker::BrokerError> {
    let msg = Message::json(topology::REPLIES_EXCHANGE, reply_to, reply.encode())
        .with_id(reply.turn_id.to_string())
        .traced();
    let policy = reply_retry();
    let tries = retry(&policy, "reply publish", |_| {
        deps.broker.publish(msg.clone())
    });
    let result = match tokio::time::timeout(bound.max(MIN_REPLY_TRIES), tries).await {
        Ok(r) => r,
        Err(_) => Err(broker::BrokerError::Unavailable(format!(
            "the reply was not taken within {:?}",
            bound.max(MIN_REPLY_TRIES)
        ))),
    };
    match result {
        // The gateway's queue is gone (it was retired): nobody is waiting for this reply.
        // A nack (`Rejected`) is not this: the reply was not taken, and the turn must not be
        // acked as if it had been.
        Err(broker::BrokerError::Unroutable(why)) => {
            tracing::warn!(reply_to, why, "reply unroutable; dropping it");
            Ok(())
        }
        other => other,
    }
}

/// How long the end of a turn may keep trying its reply: what is left of its budget.
pub(crate) fn reply_bound(deps: &Deps, req: &TurnRequest) -> Duration {
    remaining(req, deps.settings.turn_deadline)
}

/// The stages a worker times, each a `<stage>_ms` field of its `turn` point; those up to
/// `worker_total` also travel in the reply.
pub const WORKER_STAGES: [Stage; 9] = [
    Stage::QueueWait,
    Stage::CdlLoad,
    Stage::Context,
    Stage::Compose,
    Stage::Llm,
    Stage::LlmFirstToken,
    Stage::WorkerTotal,
    Stage::ReplyPublish,
    Stage::MemoryStore,
];

/// A turn's stage timings, in milliseconds by wire name.
#[derive(Default)]
pub(crate) struct Timings(BTreeMap<String, f64>);

impl Timings {
    pub(crate) fn from_map(map: BTreeMap<String, f64>) -> Self {
        Self(map)
    }

    pub(crate) fn put(&mut self, stage: Stage, ms: f64) {
        debug_assert!(
            WORKER_STAGES.contains(&stage),
            "{stage} is not a worker stage"
        );
        self.0.insert(stage.as_str().to_string(), ms);
    }

    pub(crate) fn since(&mut self, stage: Stage, start: Instant) {
        self.put(stage, start.elapsed().as_secs_f64() * 1000.0);
    }

    pub(crate) fn as_map(&self) -> &BTreeMap<String, f64> {
        &self.0
    }

    fn into_map(self) -> BTreeMap<String, f64> {
        self.0
    }
}

/// What is left of a turn's budget (from the gateway's receipt) now.
fn remaining(req: &TurnRequest, deadline: Duration) -> Duration {
    let age_ms = ms_between(req.received_at, Utc::now()).max(0.0);
    deadline.saturating_sub(Duration::from_secs_f64(age_ms / 1000.0))
}

async fn run(deps: &Deps, req: TurnRequest, delivery: Delivery) -> Handled {
    let turn_id = req.turn_id.to_string();
    let age_ms = ms_between(req.received_at, Utc::now());
    if age_ms > deps.settings.record_ttl.as_millis() as f64 {
        // Its records may have expired, so whether it was answered cannot be known; its user
        // was told long ago (timeout or apology). Kept, with the reason, not run.
        let reason = format!(
            "expired: the turn is {:.0} s old, older than turn_record_ttl ({} s), so it is not run",
            age_ms / 1000.0,
            deps.settings.record_ttl.as_secs()
        );
        tracing::warn!(reason, "dead-lettering an expired turn");
        return dead_letter(deps, delivery, &reason).await;
    }
    let holder = format!("{}/{}", deps.instance, uuid::Uuid::now_v7());
    let (lease, _) = lease::acquire(
        deps.cache.as_ref(),
        &turn_id,
        holder,
        deps.settings.record_ttl,
        deps.settings.turn_deadline + lease::LEASE * 2,
    )
    .await;
    let handled = run_leased(deps, req, delivery).await;
    lease.release().await;
    handled
}

async fn run_leased(deps: &Deps, req: TurnRequest, delivery: Delivery) -> Handled {
    let started = Instant::now();
    let turn_id = req.turn_id.to_string();
    let mut timings = Timings::default();
    timings.put(Stage::QueueWait, ms_between(req.published_at, Utc::now()));
    let mut counters = Counters::default();
    let cache = deps.cache.clone();

    // What earlier deliveries (or another worker) already did.
    let record = read_record(deps, &turn_id, &mut counters).await;
    if let Some(why) = record.abandoned() {
        tracing::info!(
            why,
            "nobody will see this turn's reply (its gateway gave it up); not running it"
        );
        return ack(delivery).await;
    }
    if record.replied() {
        if record.memory_stored() {
            tracing::info!("turn was already finished by an earlier delivery; acking it");
            return ack(delivery).await;
        }
        if !record.has(records::LLM) {
            // What was sent was not an answer (an apology, a fallback): nothing to remember.
            tracing::info!("turn was answered by an earlier delivery; finishing it");
            let reply = reply_of(
                &req,
                String::new(),
                Outcome::Ok,
                None,
                timings.into_map(),
                counters,
            );
            return conclude(deps, &req, delivery, &record, reply, None, None).await;
        }
        // The reply left but memory_store did not finish: run the turn again without a
        // second reply (the LLM answer comes from the record; point ids and the
        // relationship's turn guard make the writes idempotent).
        tracing::info!("turn was answered but its memory not stored; finishing it");
    } else if remaining(&req, deps.settings.turn_deadline).is_zero() {
        tracing::warn!(
            age_ms = ms_between(req.received_at, Utc::now()),
            "turn past its deadline; apologising instead of answering"
        );
        let reply = reply_of(
            &req,
            "Sorry, that took far too long: I'm answering late, so please ask me again.".into(),
            Outcome::Error,
            Some("deadline"),
            timings.into_map(),
            counters,
        );
        return conclude(deps, &req, delivery, &record, reply, None, None).await;
    }

    let rc = RequestCache::new(turn_id.clone(), cache.clone());
    let cdl_counts = CdlCounts::default();
    let name = normalize_name(&req.character);

    // --- cdl_load
    let t = Instant::now();
    let character = load_character(deps, &rc, &name, &cdl_counts)
        .instrument(stage_span(Stage::CdlLoad))
        .await;
    timings.since(Stage::CdlLoad, t);
    let character = match character {
        Ok(Some(c)) => c,
        Ok(None) => {
            counters.cdl_queries = cdl_counts.queries.load(Ordering::Relaxed);
            let reply = reply_of(
                &req,
                format!("There is no character called \"{}\" here.", req.character),
                Outcome::Rejected,
                Some("unknown_character"),
                timings.into_map(),
                counters,
            );
            return conclude(deps, &req, delivery, &record, reply, None, None).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "character store failed; answering with a fallback");
            counters.cdl_queries = cdl_counts.queries.load(Ordering::Relaxed);
            let reply = reply_of(
                &req,
                "Sorry, I can't gather my thoughts right now (my character data is unreachable). Please try again in a moment.".into(),
                Outcome::Fallback,
                Some("character_store_unavailable"),
                timings.into_map(),
                counters,
            );
            return conclude(deps, &req, delivery, &record, reply, None, None).await;
        }
    };

    // --- context
    let t = Instant::now();
    let conv_key = req.conversation_key();
    let scope = MemoryScope {
        character: name.clone(),
        // The whole identity: an HTTP client sending a Discord user's id is someone else.
        identity: req.conversation.identity(),
        // Memories made in a DM never surface in a guild channel.
        include_dm: req.conversation.is_dm,
    };
    let counting = CountingMemory::new(deps.memory.memory.clone());
    // Beside the context stage (so it costs no time): the user's index learns this turn's
    // record and history, so `memory forget` finds them without a keyspace scan.
    let indexed = async {
        let Some(c) = &cache else { return 0 };
        if let Err(e) = records::index_turn(
            c.as_ref(),
            &scope.identity,
            &name,
            &turn_id,
            &conv_key,
            deps.settings.record_ttl,
        )
        .await
        {
            tracing::warn!(error = %e, "could not index the turn under its user; `memory forget` may miss its cached answer");
        }
        1
    };
    let context_ports = context::Ports {
        cache: cache.as_ref(),
        memory: &counting,
        embedder: deps.memory.embedder.as_ref(),
        emotions: deps.memory.emotions.as_ref(),
        store: deps.store.as_ref(),
    };
    let context_request = context::Request {
        conversation_key: &conv_key,
        history_len: deps.settings.history_len,
        scope: &scope,
        user_text: &req.text,
        top_k: deps.settings.memory_top_k,
        recent_states: deps.settings.recent_states,
    };
    let (gathered, index_trips) =
        async { tokio::join!(context::gather(&context_ports, &context_request), indexed) }
            .instrument(stage_span(Stage::Context))
            .await;
    timings.since(Stage::Context, t);
    counters.redis_round_trips += gathered.redis_round_trips + index_trips;
    counters.emotion_queries = counting.recents.load(Ordering::Relaxed);
    counters.memory_searches = counting.searches.load(Ordering::Relaxed);
    counters.memories_used = gathered.memories.len() as u32;
    counters.context_degraded = gathered.degraded.len() as u32;
    for d in &gathered.degraded {
        tracing::warn!(degraded = %d, "context part missing; the prompt goes without it");
    }

    // --- compose
    let t = Instant::now();
    let ctx = ComposeContext {
        user_name: req.user_name.clone(),
        user_text: req.text.clone(),
        history: gathered.history,
        memories: gathered
            .memories
            .iter()
            .map(|(p, score)| MemorySnippet {
                text: p.text.clone(),
                role: p.role.clone(),
                emotion: Some(p.emotion.clone()),
                score: *score,
            })
            .collect(),
        user_emotion: gathered.user_emotion.as_ref().map(|e| EmotionSummary {
            label: e.primary.clone(),
            intensity: e.intensity,
        }),
        // Oldest first, as the component reads a trajectory.
        trajectory: gathered
            .recent
            .iter()
            .rev()
            .filter(|p| p.role == "user")
            .map(|p| EmotionSummary {
                label: p.emotion.clone(),
                intensity: p.intensity,
            })
            .collect(),
        relationship: gathered.relationship.map(|r| RelationshipSummary {
            trust: r.trust,
            affection: r.affection,
            attunement: r.attunement,
            interactions: r.interactions,
        }),
        budget_tokens: deps.settings.prompt_budget_tokens,
        conversation_key: conv_key.clone(),
        lore: Default::default(),
    };
    // A card character's first turn in a conversation opens its history with the greeting.
    let greeting = crate::compose::opening_greeting(&character, &ctx);
    let composed = deps
        .composition
        .compose(
            &character,
            &ctx,
            &Reload::new(deps.characters.as_ref(), &name, &cdl_counts),
        )
        .instrument(stage_span(Stage::Compose))
        .await;
    timings.since(Stage::Compose, t);
    let composed = match composed {
        Ok(c) => {
            counters.lore_entries_used = c.lore_entries_used;
            c
        }
        Err(e) => {
            counters.cdl_queries = cdl_counts.queries.load(Ordering::Relaxed);
            let reply = reply_of(
                &req,
                "Sorry, I can't gather my thoughts right now. Please try again in a moment.".into(),
                Outcome::Fallback,
                Some(&format!("compose_failed: {e}")),
                timings.into_map(),
                counters,
            );
            return conclude(deps, &req, delivery, &record, reply, None, None).await;
        }
    };

    // --- llm (cached per turn for 24 h: a redelivered turn never pays or answers twice)
    let t = Instant::now();
    let llm_request = ChatRequest {
        model: character
            .llm
            .model
            .clone()
            .or_else(|| deps.settings.llm_model.clone()),
        messages: composed.messages,
        temperature: character.llm.temperature,
        max_tokens: character.llm.max_tokens,
        turn_id: turn_id.clone(),
        character: Some(character.clone()),
    };
    let mut llm_calls = 0u32;
    // The LLM gets what is left of the turn's budget, less what the end of the turn needs.
    let llm_budget = remaining(&req, deps.settings.turn_deadline).saturating_sub(FINISH_RESERVE);
    // Streamed only to a gateway that asked, and only on a first delivery: a redelivered
    // turn's gateway may have shown an earlier attempt's text, so it gets the reply alone
    // (which it reconciles with what it showed) — never a second beginning.
    let deltas = (req.stream && !delivery.redelivered && delivery.delivery_count == 0)
        .then(|| Deltas::start(deps.broker.clone(), &req));
    // What the user may have seen: the text handed on so far.
    let streamed = Mutex::new(String::new());
    let on_text = |piece: &str| {
        streamed.lock().expect("streamed text").push_str(piece);
        if let Some(d) = &deltas {
            d.push(piece);
        }
    };
    let answer = tokio::time::timeout(
        llm_budget,
        rc.load("llm", Some(deps.settings.record_ttl), || {
            llm_calls += 1;
            match &deltas {
                Some(_) => deps.llm.stream(&llm_request, &on_text),
                None => deps.llm.complete(&llm_request),
            }
        }),
    )
    .instrument(stage_span(Stage::Llm))
    .await;
    if let Some(d) = deltas {
        d.finish();
    }
    timings.since(Stage::Llm, t);
    counters.llm_calls = llm_calls;
    let streamed = streamed.into_inner().expect("streamed text");
    let (text, outcome, reason, partial) = match answer {
        Ok(Ok(a)) if a.partial => {
            if let Some(ms) = a.first_token_ms {
                timings.put(Stage::LlmFirstToken, ms);
            }
            (
                cut_off(&a.text),
                Outcome::Ok,
                Some("llm_stream_interrupted"),
                true,
            )
        }
        Ok(Ok(a)) if !a.text.trim().is_empty() => {
            if let (Some(ms), true) = (a.first_token_ms, llm_calls > 0) {
                timings.put(Stage::LlmFirstToken, ms);
            }
            (a.text, Outcome::Ok, None, false)
        }
        Ok(Ok(_)) => (
            fallback_text(&character),
            Outcome::Fallback,
            Some("llm_empty_answer"),
            false,
        ),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "LLM failed; answering with an in-character fallback");
            (
                fallback_text(&character),
                Outcome::Fallback,
                Some("llm_unavailable"),
                false,
            )
        }
        // Out of time after text was shown: that text is the answer, honestly cut off; a
        // different one (the apology below) would be a second answer.
        Err(_) if !streamed.trim().is_empty() && req.stream => {
            tracing::warn!(
                budget_ms = llm_budget.as_millis() as u64,
                "the turn's budget ran out mid-stream; the answer ends where it was"
            );
            (
                cut_off(&streamed),
                Outcome::Ok,
                Some("llm_stream_interrupted"),
                true,
            )
        }
        Err(_) => {
            tracing::warn!(
                budget_ms = llm_budget.as_millis() as u64,
                "no LLM answer within the turn's budget; answering that it took too long"
            );
            (
                format!(
                    "*{} loses the thread* Sorry — that took me far too long. Could you ask me again?",
                    character.name
                ),
                Outcome::Fallback,
                Some("turn_deadline"),
                false,
            )
        }
    };

    // History before the reply leaves, so the next turn of this conversation always sees it;
    // refused when the gateway abandoned the turn meanwhile (nobody will see this reply).
    let mut abandoned = None;
    if outcome == Outcome::Ok
        && let Some(c) = &cache
    {
        // The greeting joins the first exchange's turn, so it is appended at most once with
        // it and the conversation keeps the greeting it was shown.
        let entries: Vec<Vec<u8>> = greeting
            .map(|g| HistoryEntry {
                turn_id: turn_id.clone(),
                ..g
            })
            .into_iter()
            .chain([
                HistoryEntry {
                    role: Role::User,
                    text: req.text.clone(),
                    turn_id: turn_id.clone(),
                },
                HistoryEntry {
                    role: Role::Assistant,
                    text: text.clone(),
                    turn_id: turn_id.clone(),
                },
            ])
            .map(|e| serde_json::to_vec(&e).expect("history entry serializes"))
            .collect();
        counters.redis_round_trips += 1;
        match c
            .append_once(
                &records::history_key(&conv_key),
                &entries,
                deps.settings.history_len,
                records::HISTORY_TTL,
                &records::turn_key(&turn_id),
                records::HISTORY,
                records::ABANDONED,
                deps.settings.record_ttl,
            )
            .await
        {
            Ok(Appended::Refused) => {
                tracing::info!("the turn was abandoned while it ran; its reply is not kept");
                abandoned = Some("abandoned while running".to_string());
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not append history; the next turn will miss this one")
            }
        }
    }

    counters.cdl_queries = cdl_counts.queries.load(Ordering::Relaxed);
    counters.cdl_local_hits = cdl_counts.local_hits.load(Ordering::Relaxed);
    counters.cdl_redis_hits = cdl_counts.redis_hits.load(Ordering::Relaxed);
    counters.redis_round_trips +=
        cdl_counts.redis_round_trips.load(Ordering::Relaxed) + rc.round_trips();
    counters.cache_hits = rc.hits();
    counters.cache_local_hits = rc.local_hits();
    counters.cache_redis_hits = rc.backing_hits();
    counters.cache_misses = rc.misses();
    timings.since(Stage::WorkerTotal, started);
    let mut reply = reply_of(&req, text, outcome, reason, timings.into_map(), counters);
    reply.partial = partial;
    // Only real answers become memories: a fallback apology is not something the character
    // said to remember.
    let remember = (outcome == Outcome::Ok).then(|| ToRemember {
        counting,
        scope,
        user_emotion: gathered.user_emotion.unwrap_or_else(neutral),
        user_vector: gathered.user_vector,
    });
    conclude(deps, &req, delivery, &record, reply, remember, abandoned).await
}

/// What `memory_store` needs from the turn.
pub(crate) struct ToRemember {
    pub(crate) counting: CountingMemory,
    pub(crate) scope: MemoryScope,
    pub(crate) user_emotion: EmotionResult,
    pub(crate) user_vector: Option<Vec<f32>>,
}

fn neutral() -> EmotionResult {
    EmotionResult {
        primary: "neutral".into(),
        intensity: 0.0,
        confidence: 0.0,
        secondary: Vec::new(),
    }
}

async fn load_character(
    deps: &Deps,
    rc: &RequestCache,
    name: &str,
    counts: &CdlCounts,
) -> Result<Option<Arc<Character>>, StoreError> {
    rc.load(&format!("cdl:{name}"), None, || {
        deps.characters.get(name, counts)
    })
    .await
}

/// The one end of every turn: reply (unless the record says it left already, or nobody will
/// see it), memory, metric points, in the order `deps.finish` gives; then ack, or, when the
/// broker would not take the reply, requeue.
async fn conclude(
    deps: &Deps,
    req: &TurnRequest,
    delivery: Delivery,
    record: &TurnRecord,
    reply: TurnReply,
    remember: Option<ToRemember>,
    abandoned: Option<String>,
) -> Handled {
    let mut tail = Tail::new(deps, req, &reply, remember, record, abandoned);
    if let Err(e) = deps.finish.finish(&mut tail).await {
        tracing::warn!(error = %e, "reply not published; giving the turn back to the queue");
        return match delivery.acker.requeue().await {
            Ok(()) => Handled::Requeued,
            Err(e) => {
                tracing::warn!(error = %e, "requeue failed; the broker returns the turn with its channel");
                Handled::Unsettled
            }
        };
    }
    ack(delivery).await
}

async fn ack(delivery: Delivery) -> Handled {
    match delivery.acker.ack().await {
        Ok(()) => Handled::Acked,
        Err(e) => {
            tracing::warn!(error = %e, "ack failed; the turn will be redelivered and skipped");
            Handled::Unsettled
        }
    }
}
