//! Vector memory in Qdrant (gRPC, `qdrant-client`): the fleet's [`VectorMemory`] when
//! `WHISPERFLEET_QDRANT_URL` is set, keeping the same contract as the embedded store
//! (`whisperfleet_testkit::contracts::memory`): same filters, same result shape, same order.
//!
//! **Layout.** One collection, multi-tenant by payload: every point carries `character`,
//! `user_id` (keyword indexes marked `is_tenant`, so Qdrant keeps each tenant's points
//! together), `platform` and `namespace` (keyword indexes: with `user_id` the user's whole
//! identity, which every filter matches), `is_dm` (bool index), `timestamp` (epoch milliseconds, integer index with range
//! support — `recent` orders by it) and `text`, `role`, `emotion`, `intensity`,
//! `channel_id`. Point ids are the [`MemoryPoint`] UUIDs, so a redelivered turn overwrites
//! its points. Vectors use cosine distance; Qdrant stores them normalised, so a vector read
//! back is the unit-length version of the one written (the embedders produce unit vectors
//! anyway, and scores are unaffected).
//!
//! **Collection setup** happens before the first operation (or at startup through
//! [`QdrantMemory::ensure_collection`]): create the collection if missing — an "already
//! exists" answer from a concurrent worker counts as success — check its vector size and
//! distance, then create whichever payload indexes are missing. Every step is idempotent, so
//! racing workers converge; a failed setup is retried by the next operation. Setup then
//! backfills points written before identities had platforms ([`QdrantMemory::backfill_platforms`]):
//! until then no filter matches them, so they are invisible, never exposed.
//!
//! **Errors.** [`MemoryError::Unavailable`] (retryable: connection refused or lost, timeouts
//! and cancellations, `UNAVAILABLE`, `RESOURCE_EXHAUSTED` rate limits) versus
//! [`MemoryError::Other`] (not worth retrying: bad requests, wrong API key, a collection with
//! the wrong vector size, unreadable points). Messages are the server's, with the API key and
//! any URL credentials scrubbed out; the key never reaches `Debug` or a log line either.

use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use qdrant_client::qdrant::r#match::MatchValue;
use qdrant_client::qdrant::point_id::PointIdOptions;
use qdrant_client::qdrant::vector_output::Vector as VectorOut;
use qdrant_client::qdrant::vectors_config::Config as VectorsConfigKind;
use qdrant_client::qdrant::{
    BoolIndexParamsBuilder, CollectionInfo, Condition, CountPointsBuilder, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DeletePointsBuilder, Direction, Distance, FieldType, Filter,
    IntegerIndexParamsBuilder, KeywordIndexParamsBuilder, OrderByBuilder, PayloadSchemaType,
    PointId, PointStruct, PointsIdsList, QueryPointsBuilder, ScrollPointsBuilder,
    SetPayloadPointsBuilder, UpsertPointsBuilder, Value, VectorParamsBuilder, VectorsOutput,
    payload_index_params::IndexParams,
};
use qdrant_client::{Payload, Qdrant, QdrantError};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::OnceCell;
use uuid::Uuid;
use whisperfleet_shared::identity::{Identity, platform_of_legacy_channel};
use whisperfleet_shared::ports::{MemoryError, MemoryPoint, MemoryScope, VectorMemory};

// Payload keys, shared by writing, reading, filtering and indexing.
const F_CHARACTER: &str = "character";
const F_USER: &str = "user_id";
const F_PLATFORM: &str = "platform";
const F_NAMESPACE: &str = "namespace";
const F_ROLE: &str = "role";
const F_TEXT: &str = "text";
const F_EMOTION: &str = "emotion";
const F_INTENSITY: &str = "intensity";
const F_CHANNEL: &str = "channel_id";
const F_IS_DM: &str = "is_dm";
const F_TIMESTAMP: &str = "timestamp";

/// Upper bound on one read when widening it to take in a run of tied results (see
/// [`boundary_tie`]); past this a tie is broken by whatever order the server gave.
const MAX_FETCH: usize = 4096;

// gRPC status codes (fixed by the gRPC spec), compared as numbers so this module does not
// have to name `tonic`'s types and track its version separately from qdrant-client's.
const GRPC_CANCELLED: i32 = 1;
const GRPC_UNKNOWN: i32 = 2;
const GRPC_DEADLINE_EXCEEDED: i32 = 4;
const GRPC_ALREADY_EXISTS: i32 = 6;
const GRPC_RESOURCE_EXHAUSTED: i32 = 8;
const GRPC_INTERNAL: i32 = 13;
const GRPC_UNAVAILABLE: i32 = 14;

/// [`VectorMemory`] on one Qdrant collection.
pub struct QdrantMemory {
    client: Qdrant,
    collection: String,
    dims: usize,
    /// The URL without credentials, for `describe` and `Debug`.
    safe_url: String,
    /// Secrets to scrub from error messages: the API key (qdrant-client quotes a malformed
    /// one) and the URL's credentials (its connection errors quote the URL).
    secrets: Vec<SecretString>,
    /// Set once the collection and its indexes are known to exist.
    ready: OnceCell<()>,
}

impl fmt::Debug for QdrantMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QdrantMemory")
            .field("url", &self.safe_url)
            .field("collection", &self.collection)
            .field("dims", &self.dims)
            .field(
                "api_key",
                &self.client.config.api_key.as_ref().map(|_| "[REDACTED]"),
            )
            .finish_non_exhaustive()
    }
}

impl QdrantMemory {
    /// A client for `collection` (vectors of `dims` floats) at the gRPC `url` (port 6334 by
    /// default; `https://` for TLS). Nothing is contacted yet: gRPC connects lazily and the
    /// collection is set up before the first operation — call [`Self::ensure_collection`] to
    /// find out at startup instead.
    pub fn connect(
        url: &str,
        api_key: Option<SecretString>,
        collection: &str,
        dims: usize,
        timeout: Duration,
    ) -> Result<Self, MemoryError> {
        if dims == 0 {
            return Err(MemoryError::Other("vector size must be at least 1".into()));
        }
        if collection.is_empty() {
            return Err(MemoryError::Other("empty Qdrant collection name".into()));
        }
        let parsed = reqwest::Url::parse(url).map_err(|e| {
            // The URL is not echoed: it may hold credentials.
            MemoryError::Other(format!("invalid Qdrant URL: {e}"))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(MemoryError::Other(format!(
                "Qdrant URL must be http:// or https://, not {}://",
                parsed.scheme()
            )));
        }
        if parsed.port() == Some(6333) {
            tracing::warn!(
                url = %safe_url(&parsed),
                "6333 is Qdrant's REST port; this client speaks gRPC (6334 by default)"
            );
        }
        // Qdrant ignores URL credentials, but a connection error quotes the URL: scrub the
        // whole `user:password` (a user name alone could be any word: then `user@`) and the
        // password.
        let mut secrets = Vec::new();
        if !parsed.username().is_empty() || parsed.password().is_some() {
            let userinfo = match parsed.password() {
                Some(pw) => format!("{}:{pw}", parsed.username()),
                None => format!("{}@", parsed.username()),
            };
            secrets.push(SecretString::from(userinfo));
        }
        if let Some(pw) = parsed.password() {
            secrets.push(SecretString::from(pw.to_owned()));
        }
        // A key read from a file often ends in a newline; keys never contain whitespace.
        let key = api_key
            .map(|k| k.expose_secret().trim().to_owned())
            .filter(|k| !k.is_empty());
        if let Some(k) = &key {
            // It becomes a gRPC header; anything else would fail every request with an error
            // that quotes the key.
            if !k.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(MemoryError::Other(
                    "the Qdrant API key holds characters not allowed in a header".into(),
                ));
            }
            if parsed.scheme() == "http"
                && !matches!(parsed.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"))
            {
                tracing::warn!(
                    url = %safe_url(&parsed),
                    "the Qdrant API key is sent over plain http; use https:// off this host"
                );
            }
            secrets.push(SecretString::from(k.clone()));
        }
        // No compatibility check: it blocks on a private runtime and prints to stdout;
        // incompatibilities show up as errors of the first operation instead.
        // Per request and for connecting (gRPC deadlines): a Qdrant that stops answering
        // costs a turn its memories, never the turn.
        let mut builder = Qdrant::from_url(url)
            .skip_compatibility_check()
            .timeout(timeout)
            .connect_timeout(timeout);
        if let Some(k) = key {
            builder = builder.api_key(k);
        }
        let client = builder
            .build()
            .map_err(|e| MemoryError::Other(scrub(&e.to_string(), &secrets)))?;
        Ok(Self {
            client,
            collection: collection.to_owned(),
            dims,
            safe_url: safe_url(&parsed),
            secrets,
            ready: OnceCell::new(),
        })
    }

    /// Creates the collection and its payload indexes if missing and checks its vector
    /// configuration. Idempotent and safe to race with other workers; remembered once it
    /// succeeds, retried on the next call when it fails.
    pub async fn ensure_collection(&self) -> Result<(), MemoryError> {
        self.ready
            .get_or_try_init(|| self.set_up_collection())
            .await
            .map(|_| ())
    }

    /// The server's version and whether the collection exists, changing nothing (for
    /// `whisperfleet doctor`).
    pub async fn inspect(&self) -> Result<(String, bool), MemoryError> {
        let health = self.client.health_check().await.map_err(|e| self.err(e))?;
        let exists = self
            .client
            .collection_exists(&self.collection)
            .await
            .map_err(|e| self.err(e))?;
        Ok((format!("{} {}", health.title, health.version), exists))
    }

    async fn set_up_collection(&self) -> Result<(), MemoryError> {
        let exists = self
            .client
            .collection_exists(&self.collection)
            .await
            .map_err(|e| self.err(e))?;
        if !exists {
            let create = CreateCollectionBuilder::new(&self.collection)
                .vectors_config(VectorParamsBuilder::new(self.dims as u64, Distance::Cosine));
            match self.client.create_collection(create).await {
                Ok(_) => tracing::info!(
                    collection = %self.collection,
                    dims = self.dims,
                    "created Qdrant collection"
                ),
                // Another worker created it between our check and our create.
                Err(e) if is_already_exists(&e) => {}
                Err(e) => return Err(self.err(e)),
            }
        }
        let info = self
            .client
            .collection_info(&self.collection)
            .await
            .map_err(|e| self.err(e))?
            .result
            .ok_or_else(|| MemoryError::Other("Qdrant returned no collection info".into()))?;
        check_vectors(&info, &self.collection, self.dims)?;
        for (field, schema) in index_specs() {
            match info.payload_schema.get(field) {
                Some(have) if have.data_type == schema.payload_type as i32 => continue,
                // Rebuilding someone's index under them is not our call to make.
                Some(have) => {
                    return Err(MemoryError::Other(format!(
                        "collection {} indexes `{field}` as {:?}, expected {:?}",
                        self.collection,
                        PayloadSchemaType::try_from(have.data_type)
                            .unwrap_or(PayloadSchemaType::UnknownType),
                        schema.payload_type
                    )));
                }
                None => {}
            }
            // wait: `recent` orders by `timestamp`, which needs the index to be in place.
            let create =
                CreateFieldIndexCollectionBuilder::new(&self.collection, field, schema.field_type)
                    .field_index_params(schema.params)
                    .wait(true);
            match self.client.create_field_index(create).await {
                Ok(_) => tracing::info!(
                    collection = %self.collection,
                    field,
                    "created Qdrant payload index"
                ),
                // A racing worker's index with the same schema is just as good.
                Err(e) if is_already_exists(&e) => {}
                Err(e) => return Err(self.err(e)),
            }
        }
        self.backfill_platforms().await?;
        Ok(())
    }

    /// Gives every point written before identities had platforms (no `platform` payload)
    /// the platform its channel id says ([`platform_of_legacy_channel`], the rule the
    /// embedded store's migration uses too) and the empty namespace, a page at a time.
    /// Idempotent; run by collection setup, so each worker start checks with one scroll.
    /// Returns how many points it moved. Not tested against a server here (none runs in CI).
    pub async fn backfill_platforms(&self) -> Result<u64, MemoryError> {
        let mut moved = 0u64;
        loop {
            let req = ScrollPointsBuilder::new(&self.collection)
                .filter(Filter::must([Condition::is_empty(F_PLATFORM)]))
                .limit(256)
                .with_payload(true)
                .with_vectors(false);
            let page = self
                .client
                .scroll(req)
                .await
                .map_err(|e| self.err(e))?
                .result;
            if page.is_empty() {
                break;
            }
            let mut by_platform: HashMap<&'static str, Vec<PointId>> = HashMap::new();
            for p in &page {
                let field = |f: &str| {
                    p.payload
                        .get(f)
                        .and_then(Value::as_str)
                        .cloned()
                        .unwrap_or_default()
                };
                let Some(id) = p.id.clone() else { continue };
                let platform = platform_of_legacy_channel(&field(F_CHANNEL), &field(F_USER));
                by_platform.entry(platform).or_default().push(id);
            }
            for (platform, ids) in by_platform {
                let n = ids.len() as u64;
                let payload = HashMap::from([
                    (F_PLATFORM.to_owned(), Value::from(platform)),
                    (F_NAMESPACE.to_owned(), Value::from("")),
                ]);
                let set = SetPayloadPointsBuilder::new(&self.collection, payload)
                    .points_selector(PointsIdsList::from(ids))
                    .wait(true);
                self.client
                    .set_payload(set)
                    .await
                    .map_err(|e| self.err(e))?;
                moved += n;
            }
        }
        if moved > 0 {
            tracing::info!(
                points = moved,
                "vector memory migrated: old points now belong to the platform their channel says"
            );
        }
        Ok(moved)
    }

    /// Up to `limit` points matching `filter`, newest first as Qdrant orders them (ordering
    /// by a payload key needs its index with range support, see index_specs).
    async fn newest(&self, filter: Filter, limit: usize) -> Result<Vec<MemoryPoint>, MemoryError> {
        let req = ScrollPointsBuilder::new(&self.collection)
            .filter(filter)
            .order_by(OrderByBuilder::new(F_TIMESTAMP).direction(Direction::Desc as i32))
            .limit(u32::try_from(limit).unwrap_or(u32::MAX))
            .with_payload(true)
            .with_vectors(true);
        let found = self
            .client
            .scroll(req)
            .await
            .map_err(|e| self.err(e))?
            .result;
        found
            .iter()
            .map(|p| from_parts(p.id.as_ref(), &p.payload, p.vectors.as_ref()))
            .collect()
    }

    /// Maps a client error to the port's, scrubbing secrets from the message.
    fn err(&self, e: QdrantError) -> MemoryError {
        let (retryable, message) = classify(&e);
        let message = scrub(&message, &self.secrets);
        if retryable {
            MemoryError::Unavailable(message)
        } else {
            MemoryError::Other(message)
        }
    }

    #[cfg(test)]
    async fn drop_collection(&self) -> Result<(), MemoryError> {
        self.client
            .delete_collection(&self.collection)
            .await
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

#[async_trait]
impl VectorMemory for QdrantMemory {
    async fn upsert(&self, points: &[MemoryPoint]) -> Result<(), MemoryError> {
        if points.is_empty() {
            return Ok(());
        }
        self.ensure_collection().await?;
        let structs: Vec<PointStruct> = points.iter().map(to_point_struct).collect();
        // One call for the whole turn; wait so a following read sees it.
        let req = UpsertPointsBuilder::new(&self.collection, structs).wait(true);
        self.client
            .upsert_points(req)
            .await
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    async fn search(
        &self,
        scope: &MemoryScope,
        vector: &[f32],
        k: usize,
    ) -> Result<Vec<(MemoryPoint, f32)>, MemoryError> {
        if k == 0 {
            return Ok(Vec::new());
        }
        self.ensure_collection().await?;
        let filter = scope_filter(scope);
        // One more than asked, to see whether the k-th place is tied with what follows.
        let mut limit = k + 1;
        loop {
            let req = QueryPointsBuilder::new(&self.collection)
                .query(vector.to_vec())
                .filter(filter.clone())
                .limit(limit as u64)
                .with_payload(true)
                .with_vectors(true);
            let found = self
                .client
                .query(req)
                .await
                .map_err(|e| self.err(e))?
                .result;
            let scores: Vec<f32> = found.iter().map(|p| p.score).collect();
            if boundary_tie(&scores, k, limit) && limit < MAX_FETCH {
                limit = (limit * 2).min(MAX_FETCH);
                continue;
            }
            let mut hits = found
                .into_iter()
                .map(|p| {
                    let point = from_parts(p.id.as_ref(), &p.payload, p.vectors.as_ref())?;
                    Ok((point, p.score))
                })
                .collect::<Result<Vec<_>, MemoryError>>()?;
            sort_hits(&mut hits);
            hits.truncate(k);
            return Ok(hits);
        }
    }

    async fn recent(&self, scope: &MemoryScope, n: usize) -> Result<Vec<MemoryPoint>, MemoryError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        self.ensure_collection().await?;
        let filter = scope_filter(scope);
        let mut limit = n + 1;
        loop {
            let mut points = self.newest(filter.clone(), limit).await?;
            let stamps: Vec<DateTime<Utc>> = points.iter().map(|p| p.timestamp).collect();
            if boundary_tie(&stamps, n, limit) && limit < MAX_FETCH {
                limit = (limit * 2).min(MAX_FETCH);
                continue;
            }
            sort_recent(&mut points);
            points.truncate(n);
            return Ok(points);
        }
    }

    async fn list(
        &self,
        identity: &Identity,
        character: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MemoryPoint>, MemoryError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        self.ensure_collection().await?;
        let mut points = self
            .newest(forget_filter(identity, character), limit)
            .await?;
        sort_recent(&mut points);
        Ok(points)
    }

    async fn forget(
        &self,
        identity: &Identity,
        character: Option<&str>,
    ) -> Result<u64, MemoryError> {
        self.ensure_collection().await?;
        let filter = forget_filter(identity, character);
        // The delete answer carries no count, so count first. Points written in between are
        // deleted but not counted.
        let count = self
            .client
            .count(
                CountPointsBuilder::new(&self.collection)
                    .filter(filter.clone())
                    .exact(true),
            )
            .await
            .map_err(|e| self.err(e))?
            .result
            .map_or(0, |r| r.count);
        // Deleted even when the count is 0: this is the privacy path, and a point may have
        // landed since.
        self.client
            .delete_points(
                DeletePointsBuilder::new(&self.collection)
                    .points(filter)
                    .wait(true),
            )
            .await
            .map_err(|e| self.err(e))?;
        Ok(count)
    }

    fn describe(&self) -> String {
        format!(
            "qdrant at {} (collection {})",
            self.safe_url, self.collection
        )
    }
}

/// The URL as safe to show: no user, password, query or fragment.
fn safe_url(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    // Both only fail for URLs that cannot have credentials, which is fine.
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.set_query(None);
    u.set_fragment(None);
    let s = u.to_string();
    // `Url` always prints a path; "http://host:6334/" reads as a REST path, so drop a bare "/".
    match s.strip_suffix('/') {
        Some(t) if u.path() == "/" => t.to_owned(),
        _ => s,
    }
}

fn scrub(message: &str, secrets: &[SecretString]) -> String {
    secrets
        .iter()
        .map(ExposeSecret::expose_secret)
        .filter(|s| !s.is_empty())
        .fold(message.to_owned(), |m, s| m.replace(s, "[REDACTED]"))
}

/// (retryable, message) of a client error.
fn classify(e: &QdrantError) -> (bool, String) {
    match e {
        QdrantError::ResponseError { status } => {
            let code = i32::from(status.code());
            let message = status.message().to_owned();
            (retryable_status(code, &message), message)
        }
        QdrantError::ResourceExhaustedError {
            status,
            retry_after_seconds,
        } => (
            true,
            format!("{} (retry after {retry_after_seconds}s)", status.message()),
        ),
        QdrantError::Io(io) => (true, io.to_string()),
        other => (false, other.to_string()),
    }
}

fn retryable_status(code: i32, message: &str) -> bool {
    match code {
        // Timeouts come back as CANCELLED from tonic; UNKNOWN only arises from transport
        // failures without a status (the server always sends a code).
        GRPC_UNAVAILABLE
        | GRPC_DEADLINE_EXCEEDED
        | GRPC_CANCELLED
        | GRPC_RESOURCE_EXHAUSTED
        | GRPC_UNKNOWN => true,
        // qdrant-client reports a failed connection attempt as INTERNAL with this prefix.
        GRPC_INTERNAL => message.starts_with("Failed to connect"),
        _ => false,
    }
}

fn is_already_exists(e: &QdrantError) -> bool {
    match e {
        // Servers since 1.8 answer ALREADY_EXISTS to a second create; older ones
        // INVALID_ARGUMENT with this text.
        QdrantError::ResponseError { status } => {
            i32::from(status.code()) == GRPC_ALREADY_EXISTS
                || status.message().contains("already exists")
        }
        _ => false,
    }
}

/// One payload index the collection needs.
struct IndexSpec {
    field_type: FieldType,
    /// The same type as reported back in the collection's payload schema.
    payload_type: PayloadSchemaType,
    params: IndexParams,
}

fn index_specs() -> [(&'static str, IndexSpec); 6] {
    let keyword_index = || IndexSpec {
        field_type: FieldType::Keyword,
        payload_type: PayloadSchemaType::Keyword,
        params: KeywordIndexParamsBuilder::default().into(),
    };
    let tenant = || IndexSpec {
        field_type: FieldType::Keyword,
        payload_type: PayloadSchemaType::Keyword,
        params: KeywordIndexParamsBuilder::default().is_tenant(true).into(),
    };
    [
        (F_CHARACTER, tenant()),
        (F_USER, tenant()),
        (F_PLATFORM, keyword_index()),
        (F_NAMESPACE, keyword_index()),
        (
            F_IS_DM,
            IndexSpec {
                field_type: FieldType::Bool,
                payload_type: PayloadSchemaType::Bool,
                params: BoolIndexParamsBuilder::new().into(),
            },
        ),
        (
            F_TIMESTAMP,
            IndexSpec {
                field_type: FieldType::Integer,
                payload_type: PayloadSchemaType::Integer,
                // Range support is what `order_by` needs; exact lookups are never made.
                params: IntegerIndexParamsBuilder::new(false, true).into(),
            },
        ),
    ]
}

/// The collection must hold one unnamed dense vector of `dims` with cosine distance, or
/// every upsert would fail later with a less helpful message.
fn check_vectors(info: &CollectionInfo, collection: &str, dims: usize) -> Result<(), MemoryError> {
    let config = info
        .config
        .as_ref()
        .and_then(|c| c.params.as_ref())
        .and_then(|p| p.vectors_config.as_ref())
        .and_then(|v| v.config.as_ref());
    match config {
        Some(VectorsConfigKind::Params(p)) => {
            if p.size != dims as u64 {
                return Err(MemoryError::Other(format!(
                    "collection {collection} holds vectors of {} dimensions, not {dims}",
                    p.size
                )));
            }
            if p.distance != Distance::Cosine as i32 {
                return Err(MemoryError::Other(format!(
                    "collection {collection} uses {:?} distance, expected Cosine",
                    Distance::try_from(p.distance).unwrap_or(Distance::UnknownDistance)
                )));
            }
            Ok(())
        }
        Some(VectorsConfigKind::ParamsMap(_)) => Err(MemoryError::Other(format!(
            "collection {collection} uses named vectors; whisperfleet needs one unnamed vector"
        ))),
        None => Err(MemoryError::Other(format!(
            "collection {collection}: Qdrant did not report its vector configuration"
        ))),
    }
}

/// Exact keyword match. Not `Condition::matches(field, String)`: that turns a value with
/// whitespace into a full-text match.
fn keyword(field: &str, value: &str) -> Condition {
    Condition::matches(field, MatchValue::Keyword(value.to_owned()))
}

/// Exactly one identity: all three parts, each an exact match (an empty namespace matches
/// only the empty string, never "any").
fn identity_conditions(identity: &Identity) -> Vec<Condition> {
    vec![
        keyword(F_PLATFORM, &identity.platform),
        keyword(F_NAMESPACE, &identity.namespace),
        keyword(F_USER, &identity.user_id),
    ]
}

/// One identity × one character; guild channels (`!include_dm`) never see DM memories.
fn scope_filter(scope: &MemoryScope) -> Filter {
    let mut must = identity_conditions(&scope.identity);
    must.push(keyword(F_CHARACTER, &scope.character));
    if !scope.include_dm {
        must.push(Condition::matches(F_IS_DM, false));
    }
    Filter::must(must)
}

/// One identity, with one character or all: what `list` and `forget` select.
fn forget_filter(identity: &Identity, character: Option<&str>) -> Filter {
    let mut must = identity_conditions(identity);
    if let Some(c) = character {
        must.push(keyword(F_CHARACTER, c));
    }
    Filter::must(must)
}

fn to_payload(p: &MemoryPoint) -> HashMap<String, Value> {
    HashMap::from([
        (F_CHARACTER.to_owned(), p.character.clone().into()),
        (F_USER.to_owned(), p.identity.user_id.clone().into()),
        (F_PLATFORM.to_owned(), p.identity.platform.clone().into()),
        (F_NAMESPACE.to_owned(), p.identity.namespace.clone().into()),
        (F_ROLE.to_owned(), p.role.clone().into()),
        (F_TEXT.to_owned(), p.text.clone().into()),
        (F_EMOTION.to_owned(), p.emotion.clone().into()),
        (F_INTENSITY.to_owned(), f64::from(p.intensity).into()),
        (F_CHANNEL.to_owned(), p.channel_id.clone().into()),
        (F_IS_DM.to_owned(), p.is_dm.into()),
        (
            F_TIMESTAMP.to_owned(),
            p.timestamp.timestamp_millis().into(),
        ),
    ])
}

fn to_point_struct(p: &MemoryPoint) -> PointStruct {
    PointStruct::new(
        PointId::from(p.id.to_string()),
        p.vector.clone(),
        Payload::from(to_payload(p)),
    )
}

/// A stored point back as a [`MemoryPoint`]; a missing or mistyped field is an error (the
/// collection is ours, so that means something else writes into it).
fn from_parts(
    id: Option<&PointId>,
    payload: &HashMap<String, Value>,
    vectors: Option<&VectorsOutput>,
) -> Result<MemoryPoint, MemoryError> {
    let id = match id.and_then(|i| i.point_id_options.as_ref()) {
        Some(PointIdOptions::Uuid(s)) => Uuid::parse_str(s)
            .map_err(|e| MemoryError::Other(format!("point id {s:?} is not a UUID: {e}")))?,
        Some(PointIdOptions::Num(n)) => {
            return Err(MemoryError::Other(format!("point id {n} is not a UUID")));
        }
        None => return Err(MemoryError::Other("point without an id".into())),
    };
    let bad = |field: &str, want: &str| {
        MemoryError::Other(format!(
            "point {id}: payload `{field}` missing or not {want}"
        ))
    };
    let text = |field: &str| {
        payload
            .get(field)
            .and_then(Value::as_str)
            .cloned()
            .ok_or_else(|| bad(field, "a string"))
    };
    let intensity = payload
        .get(F_INTENSITY)
        .and_then(|v| v.as_double().or_else(|| v.as_integer().map(|i| i as f64)))
        .ok_or_else(|| bad(F_INTENSITY, "a number"))? as f32;
    let is_dm = payload
        .get(F_IS_DM)
        .and_then(Value::as_bool)
        .ok_or_else(|| bad(F_IS_DM, "a bool"))?;
    let ts = payload
        .get(F_TIMESTAMP)
        .and_then(Value::as_integer)
        .ok_or_else(|| bad(F_TIMESTAMP, "an integer"))?;
    let timestamp = DateTime::<Utc>::from_timestamp_millis(ts)
        .ok_or_else(|| bad(F_TIMESTAMP, "a representable time"))?;
    let vector = match vectors.and_then(VectorsOutput::get_vector) {
        Some(VectorOut::Dense(d)) => d.data,
        _ => {
            return Err(MemoryError::Other(format!(
                "point {id}: no unnamed dense vector returned"
            )));
        }
    };
    Ok(MemoryPoint {
        id,
        character: text(F_CHARACTER)?,
        identity: Identity::new(text(F_PLATFORM)?, text(F_NAMESPACE)?, text(F_USER)?),
        role: text(F_ROLE)?,
        text: text(F_TEXT)?,
        emotion: text(F_EMOTION)?,
        intensity,
        channel_id: text(F_CHANNEL)?,
        is_dm,
        timestamp,
        vector,
    })
}

/// Whether a read that returned `keys` (in the server's order) when asked for `limit` may
/// have cut a run of equal keys that reaches the `k`-th place: then a point left out could
/// win the tie-break, so the read must be widened.
fn boundary_tie<T: PartialEq>(keys: &[T], k: usize, limit: usize) -> bool {
    k > 0 && keys.len() >= limit && keys.len() > k && keys[k - 1] == keys[keys.len() - 1]
}

/// The embedded store's order: best score first, ties by newer timestamp, then id.
fn sort_hits(hits: &mut [(MemoryPoint, f32)]) {
    hits.sort_by(|a, b| {
        b.1.total_cmp(&a.1)
            .then(b.0.timestamp.cmp(&a.0.timestamp))
            .then(a.0.id.cmp(&b.0.id))
    });
}

/// The embedded store's order for `recent`: newest first, ties by id.
fn sort_recent(points: &mut [MemoryPoint]) {
    points.sort_by(|a, b| b.timestamp.cmp(&a.timestamp).then(a.id.cmp(&b.id)));
}

#[cfg(test)]
mod tests;
