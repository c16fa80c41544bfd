//! The embedded vector memory: exact cosine search over vectors kept in SQLite.
//!
//! Exact search is the right tool here: retrieval is always filtered to one user and one
//! character first, and such sets are small (Qdrant itself scans exactly below its
//! full-scan threshold). Several worker processes on one host can share the file (WAL); a
//! fleet spread over hosts sets `WHISPERFLEET_QDRANT_URL`.
//!
//! Memories belong to an identity (platform, namespace, user id): a store written before
//! identities had platforms is migrated when opened ([`SqliteMemory::open`]): each old row
//! gets the platform its channel id says ([`platform_of_legacy_channel`]) and the empty
//! namespace (no namespaces existed then).
//!
//! A search scores vectors kept in memory per (character, identity) and loads only the k
//! winners from SQLite. The cached vectors are checked on every search against an
//! index-only fingerprint of the scope (count, highest rowid, sum of timestamps): rows added
//! since are appended, anything else reloads the scope. One blind spot: a point rewritten
//! in place by another process (same id, a new vector) keeps the fingerprint; ids derive
//! from the turn, so a rewrite carries the same text. Measured (release, one conversation,
//! ~1,000 stored memories): `context` p50 7.9 ms with a full read per search, 1.6 ms now.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use uuid::Uuid;
use whisperfleet_shared::identity::{Identity, platform_of_legacy_channel};
use whisperfleet_shared::ports::{MemoryError, MemoryPoint, MemoryScope, VectorMemory};

pub struct SqliteMemory {
    /// Reads (searches, recent states, lists).
    pool: SqlitePool,
    /// Writes, on one connection of their own: SQLite has one writer per file, and a write
    /// waiting for it (another worker process is writing) must not hold a connection that
    /// the next turn's reads need. Measured: with writes in the read pool, a 24-turn burst's
    /// `context` p99 was tens of milliseconds of turns waiting for a pooled connection.
    writer: SqlitePool,
    path: String,
    /// The vectors of recently searched (character, identity key) scopes, so a search does not read
    /// and decode every stored vector again: checked against a cheap index-only fingerprint
    /// of the scope on every search (other processes may write the same file).
    vectors: std::sync::Mutex<VectorCache>,
}

/// Vectors cached per (character, identity key), bounded by the number of floats held.
#[derive(Default)]
struct VectorCache {
    scopes: std::collections::HashMap<(String, String), Arc<ScopeVectors>>,
    floats: usize,
}

/// One scope's candidates: (id, ts_ms, is_dm, vector), and the fingerprint they match.
struct ScopeVectors {
    fingerprint: (i64, i64, i64),
    rows: Vec<(String, i64, bool, Vec<f32>)>,
}

/// About 64 MiB of f32 vectors per process.
const MAX_CACHED_FLOATS: usize = 16 * 1024 * 1024;

fn sq_err(e: sqlx::Error) -> MemoryError {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => {
            MemoryError::Unavailable(e.to_string())
        }
        other => MemoryError::Other(other.to_string()),
    }
}

const SCHEMA: &str = r"
CREATE TABLE IF NOT EXISTS memories (
    id         TEXT PRIMARY KEY,
    character  TEXT NOT NULL,
    user_id    TEXT NOT NULL,
    platform   TEXT NOT NULL,
    namespace  TEXT NOT NULL DEFAULT '',
    role       TEXT NOT NULL,
    text       TEXT NOT NULL,
    emotion    TEXT NOT NULL,
    intensity  REAL NOT NULL,
    channel_id TEXT NOT NULL,
    is_dm      INTEGER NOT NULL,
    ts_ms      INTEGER NOT NULL,
    vector     BLOB NOT NULL
);
";

/// After [`SCHEMA`] and the migration of old rows: the index of the identity-keyed lookups
/// replaces the old (character, user_id) one.
const INDEXES: &str = r"
DROP INDEX IF EXISTS memories_tenant;
CREATE INDEX IF NOT EXISTS memories_identity
    ON memories (character, platform, namespace, user_id, ts_ms);
CREATE INDEX IF NOT EXISTS memories_user ON memories (platform, namespace, user_id);
";

/// Brings a store written before identities had platforms up to date, in one transaction:
/// adds `platform` and `namespace`, and gives each old row the platform its channel id
/// says (the rule is [`platform_of_legacy_channel`], shared with the Qdrant backfill) and
/// the empty namespace (HTTP namespaces did not exist yet). Returns how many rows it moved.
async fn migrate_legacy_rows(pool: &SqlitePool) -> Result<u64, MemoryError> {
    let has_platform: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM pragma_table_info('memories') WHERE name = 'platform'",
    )
    .fetch_one(pool)
    .await
    .map_err(sq_err)?;
    if has_platform == 1 {
        return Ok(0);
    }
    let mut tx = pool.begin().await.map_err(sq_err)?;
    sqlx::raw_sql(
        "ALTER TABLE memories ADD COLUMN platform TEXT NOT NULL DEFAULT ''; \
         ALTER TABLE memories ADD COLUMN namespace TEXT NOT NULL DEFAULT '';",
    )
    .execute(&mut *tx)
    .await
    .map_err(sq_err)?;
    let pairs: Vec<(String, String)> =
        sqlx::query_as("SELECT DISTINCT channel_id, user_id FROM memories")
            .fetch_all(&mut *tx)
            .await
            .map_err(sq_err)?;
    let mut moved = 0;
    for (channel, user) in pairs {
        let r = sqlx::query(
            "UPDATE memories SET platform = ?1 WHERE channel_id = ?2 AND user_id = ?3 \
             AND platform = ''",
        )
        .bind(platform_of_legacy_channel(&channel, &user))
        .bind(&channel)
        .bind(&user)
        .execute(&mut *tx)
        .await
        .map_err(sq_err)?;
        moved += r.rows_affected();
    }
    tx.commit().await.map_err(sq_err)?;
    tracing::info!(
        rows = moved,
        "vector memory migrated: old memories now belong to the platform their channel says"
    );
    Ok(moved)
}

fn to_blob(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

fn from_blob(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn row_to_point(r: &sqlx::sqlite::SqliteRow) -> Result<MemoryPoint, MemoryError> {
    let id: String = r.get("id");
    let ts: i64 = r.get("ts_ms");
    Ok(MemoryPoint {
        id: Uuid::parse_str(&id).map_err(|e| MemoryError::Other(e.to_string()))?,
        character: r.get("character"),
        identity: Identity::new(
            r.get::<String, _>("platform"),
            r.get::<String, _>("namespace"),
            r.get::<String, _>("user_id"),
        ),
        role: r.get("role"),
        text: r.get("text"),
        emotion: r.get("emotion"),
        intensity: r.get::<f64, _>("intensity") as f32,
        channel_id: r.get("channel_id"),
        is_dm: r.get::<i64, _>("is_dm") != 0,
        timestamp: DateTime::<Utc>::from_timestamp_millis(ts).unwrap_or_default(),
        vector: from_blob(r.get::<&[u8], _>("vector")),
    })
}

/// `v` scaled to unit length (a zero vector stays zero, and scores 0 against anything).
fn unit(mut v: Vec<f32>) -> Vec<f32> {
    crate::embeddings::l2_normalise(&mut v);
    v
}

/// The dot product of two unit vectors (their cosine), in eight independent lanes so it
/// vectorises: scoring every cached vector of a scope is the search's cost (10,000
/// memories of 384 dimensions on each turn). Vectors of another length score 0.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    let mut lanes = [0f32; 8];
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    (lanes.iter().sum::<f32>() + tail).clamp(-1.0, 1.0)
}

impl SqliteMemory {
    /// Opens (creating) the store at `path`; `:memory:` for a private in-memory one.
    pub async fn open(path: &Path) -> Result<Self, MemoryError> {
        let display = path.display().to_string();
        let opts = if display == ":memory:" {
            SqliteConnectOptions::from_str("sqlite::memory:").map_err(sq_err)?
        } else {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .map_err(|e| MemoryError::Other(format!("creating {}: {e}", dir.display())))?;
            }
            SqliteConnectOptions::new()
                .filename(path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                // In WAL mode NORMAL syncs at checkpoints, not at every commit: the file
                // stays consistent through any crash; a power loss may lose the last
                // memories written, which are derived data (the history keeps the turns).
                .synchronous(SqliteSynchronous::Normal)
                // Pages read through a memory map, not a pread() each: every turn's writes
                // (from any worker process) invalidate each connection's page cache, and
                // the reads were a measured share of the workers' system time.
                .pragma("mmap_size", "268435456")
        }
        .busy_timeout(Duration::from_secs(5));
        let in_memory = display == ":memory:";
        // One connection for an in-memory store (each would be its own database).
        let pool = SqlitePoolOptions::new()
            .max_connections(if in_memory { 1 } else { 4 })
            .connect_with(opts.clone())
            .await
            .map_err(sq_err)?;
        let writer = if in_memory {
            pool.clone()
        } else {
            SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(opts)
                .await
                .map_err(sq_err)?
        };
        sqlx::raw_sql(sqlx::AssertSqlSafe(SCHEMA))
            .execute(&writer)
            .await
            .map_err(sq_err)?;
        migrate_legacy_rows(&writer).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(INDEXES))
            .execute(&writer)
            .await
            .map_err(sq_err)?;
        Ok(Self {
            pool,
            writer,
            path: display,
            vectors: std::sync::Mutex::new(VectorCache::default()),
        })
    }

    fn scope_sql(scope: &MemoryScope) -> &'static str {
        if scope.include_dm {
            "character = ?1 AND platform = ?2 AND namespace = ?3 AND user_id = ?4"
        } else {
            "character = ?1 AND platform = ?2 AND namespace = ?3 AND user_id = ?4 AND is_dm = 0"
        }
    }

    /// Every candidate vector of a (character, identity) scope. The scope's fingerprint (row
    /// count, highest rowid, sum of timestamps: all read from the index) says whether the
    /// cached rows are current; rows added since (the usual case: each turn adds two) are
    /// read alone and appended; anything else (a delete, another process's rewrite) reloads
    /// the scope.
    async fn scope_vectors(
        &self,
        character: &str,
        identity: &Identity,
    ) -> Result<Arc<ScopeVectors>, MemoryError> {
        // One statement, so one snapshot and one trip to SQLite's thread: the scope's
        // fingerprint (a row of kind 0), then the rows added after the cached ones.
        let key = (character.to_string(), identity.key());
        let cached = self.cache().scopes.get(&key).cloned();
        let since = cached.as_ref().map_or(-1, |c| c.fingerprint.1);
        let rows = sqlx::query(
            "SELECT 0 AS kind, count(*) AS a, coalesce(max(rowid), 0) AS b, coalesce(sum(ts_ms), 0) AS c, \
                    NULL AS id, 0 AS is_dm, NULL AS vector \
             FROM memories WHERE character = ?1 AND platform = ?2 AND namespace = ?3 AND user_id = ?4 \
             UNION ALL \
             SELECT 1, rowid, ts_ms, 0, id, is_dm, vector FROM memories \
             WHERE character = ?1 AND platform = ?2 AND namespace = ?3 AND user_id = ?4 \
             AND rowid > ?5",
        )
        .bind(character)
        .bind(&identity.platform)
        .bind(&identity.namespace)
        .bind(&identity.user_id)
        .bind(since)
        .fetch_all(&self.pool)
        .await
        .map_err(sq_err)?;
        let mut fingerprint = (0, 0, 0);
        let mut added = ScopeVectors {
            fingerprint: cached.as_ref().map_or((0, 0, 0), |c| c.fingerprint),
            rows: Vec::with_capacity(rows.len()),
        };
        for r in &rows {
            let (a, b): (i64, i64) = (r.get("a"), r.get("b"));
            if r.get::<i64, _>("kind") == 0 {
                fingerprint = (a, b, r.get("c"));
                continue;
            }
            let (rowid, ts) = (a, b);
            added.fingerprint.0 += 1;
            added.fingerprint.1 = added.fingerprint.1.max(rowid);
            added.fingerprint.2 += ts;
            added.rows.push((
                r.get("id"),
                ts,
                r.get::<i64, _>("is_dm") != 0,
                unit(from_blob(r.get::<&[u8], _>("vector"))),
            ));
        }
        if let Some(hit) = &cached
            && hit.fingerprint == fingerprint
        {
            return Ok(hit.clone());
        }
        let loaded = match cached {
            // Only additions since the cached state: append them.
            Some(old) if added.fingerprint == fingerprint => {
                // Drop the cache's reference first, so the rows are usually moved, not
                // copied (a copy is every vector of the scope, on every turn).
                self.invalidate(|k| *k == key);
                let mut rows =
                    Arc::try_unwrap(old).map_or_else(|shared| shared.rows.clone(), |o| o.rows);
                rows.extend(added.rows);
                ScopeVectors { fingerprint, rows }
            }
            // A fresh load (its fingerprint is its own: rows written meanwhile are seen by
            // the next search).
            None => added,
            // Deleted or rewritten meanwhile: drop the scope and read it whole (with nothing
            // cached, that call takes the `None` arm: one level deep).
            Some(_) => {
                self.invalidate(|k| *k == key);
                return Box::pin(self.scope_vectors(character, identity)).await;
            }
        };
        Ok(self.remember(key, loaded))
    }

    /// Caches a scope's rows within the float budget; returns them.
    fn remember(&self, key: (String, String), loaded: ScopeVectors) -> Arc<ScopeVectors> {
        let loaded = Arc::new(loaded);
        let size: usize = loaded.rows.iter().map(|r| r.3.len()).sum();
        let mut cache = self.cache();
        if let Some(old) = cache.scopes.remove(&key) {
            cache.floats -= old.rows.iter().map(|r| r.3.len()).sum::<usize>();
        }
        // Over budget: start afresh rather than track recency; searches refill what is used.
        if cache.floats + size > MAX_CACHED_FLOATS {
            cache.scopes.clear();
            cache.floats = 0;
        }
        if size <= MAX_CACHED_FLOATS {
            cache.floats += size;
            cache.scopes.insert(key, loaded.clone());
        }
        loaded
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, VectorCache> {
        self.vectors.lock().expect("vector cache lock")
    }

    /// Drops cached scopes this process changed (an update in place keeps the fingerprint).
    fn invalidate(&self, matches: impl Fn(&(String, String)) -> bool) {
        let mut cache = self.cache();
        let stale: Vec<_> = cache
            .scopes
            .keys()
            .filter(|k| matches(k))
            .cloned()
            .collect();
        for k in stale {
            if let Some(old) = cache.scopes.remove(&k) {
                cache.floats -= old.rows.iter().map(|r| r.3.len()).sum::<usize>();
            }
        }
    }
}

#[async_trait]
impl VectorMemory for SqliteMemory {
    async fn upsert(&self, points: &[MemoryPoint]) -> Result<(), MemoryError> {
        if points.is_empty() {
            return Ok(());
        }
        // One statement for the turn's points (atomic on its own): one trip to SQLite's
        // thread instead of BEGIN, an INSERT per point and COMMIT.
        let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; points.len()].join(", ");
        let sql = format!(
            "INSERT INTO memories (id, character, user_id, role, text, emotion, intensity, channel_id, is_dm, ts_ms, vector, platform, namespace) \
             VALUES {values} \
             ON CONFLICT (id) DO UPDATE SET text = excluded.text, emotion = excluded.emotion, \
             intensity = excluded.intensity, vector = excluded.vector"
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for p in points {
            q = q
                .bind(p.id.to_string())
                .bind(&p.character)
                .bind(&p.identity.user_id)
                .bind(&p.role)
                .bind(&p.text)
                .bind(&p.emotion)
                .bind(f64::from(p.intensity))
                .bind(&p.channel_id)
                .bind(i64::from(p.is_dm))
                .bind(p.timestamp.timestamp_millis())
                .bind(to_blob(&p.vector))
                .bind(&p.identity.platform)
                .bind(&p.identity.namespace);
        }
        q.execute(&self.writer).await.map_err(sq_err)?;
        // New points show up through the fingerprint; a point rewritten in place (a
        // redelivered turn) does not, so its scope is dropped.
        let rewritten: Vec<(String, String)> = {
            let cache = self.cache();
            points
                .iter()
                .filter_map(|p| {
                    let key = (p.character.clone(), p.identity.key());
                    let id = p.id.to_string();
                    cache
                        .scopes
                        .get(&key)
                        .is_some_and(|s| s.rows.iter().any(|r| r.0 == id))
                        .then_some(key)
                })
                .collect()
        };
        if !rewritten.is_empty() {
            self.invalidate(|k| rewritten.contains(k));
        }
        Ok(())
    }

    async fn search(
        &self,
        scope: &MemoryScope,
        vector: &[f32],
        k: usize,
    ) -> Result<Vec<(MemoryPoint, f32)>, MemoryError> {
        // Two phases: score every candidate from its id, time and vector only (cached per
        // scope, no text, no point built), then load the k winners whole.
        let candidates = self
            .scope_vectors(&scope.character, &scope.identity)
            .await?;
        let rows = &candidates.rows;
        // Cached vectors are unit length: the cosine is a dot product with the unit query.
        let query = unit(vector.to_vec());
        let mut ranked: Vec<(f32, i64, &str)> = rows
            .iter()
            .filter(|(_, _, is_dm, _)| scope.include_dm || !is_dm)
            .map(|(id, ts, _, v)| (dot(&query, v), *ts, id.as_str()))
            .collect();
        // Best first; ties broken by recency, then id, so the order is stable everywhere.
        let order = |a: &(f32, i64, &str), b: &(f32, i64, &str)| {
            b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(b.2))
        };
        // The k best, then only those sorted (not every candidate).
        if k < ranked.len() {
            ranked.select_nth_unstable_by(k, order);
            ranked.truncate(k);
        }
        ranked.sort_by(order);
        if ranked.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = vec!["?"; ranked.len()].join(",");
        let sql = format!("SELECT * FROM memories WHERE id IN ({placeholders})");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (_, _, id) in &ranked {
            q = q.bind(*id);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(sq_err)?;
        let mut points = rows
            .iter()
            .map(row_to_point)
            .collect::<Result<Vec<_>, MemoryError>>()?;
        // Back into rank order (a point deleted in between is simply left out).
        let mut out = Vec::with_capacity(ranked.len());
        for (score, _, id) in ranked {
            if let Some(i) = points.iter().position(|p| p.id.to_string() == *id) {
                out.push((points.swap_remove(i), score));
            }
        }
        Ok(out)
    }

    async fn recent(&self, scope: &MemoryScope, n: usize) -> Result<Vec<MemoryPoint>, MemoryError> {
        let sql = format!(
            "SELECT * FROM memories WHERE {} ORDER BY ts_ms DESC, id LIMIT ?5",
            Self::scope_sql(scope)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&scope.character)
            .bind(&scope.identity.platform)
            .bind(&scope.identity.namespace)
            .bind(&scope.identity.user_id)
            .bind(n as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(sq_err)?;
        rows.iter().map(row_to_point).collect()
    }

    async fn list(
        &self,
        identity: &Identity,
        character: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MemoryPoint>, MemoryError> {
        let rows = sqlx::query(
            "SELECT * FROM memories WHERE platform = ?1 AND namespace = ?2 AND user_id = ?3 \
             AND (?4 IS NULL OR character = ?4) ORDER BY ts_ms DESC, id LIMIT ?5",
        )
        .bind(&identity.platform)
        .bind(&identity.namespace)
        .bind(&identity.user_id)
        .bind(character)
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(sq_err)?;
        rows.iter().map(row_to_point).collect()
    }

    async fn forget(
        &self,
        identity: &Identity,
        character: Option<&str>,
    ) -> Result<u64, MemoryError> {
        let r = sqlx::query(
            "DELETE FROM memories WHERE platform = ?1 AND namespace = ?2 AND user_id = ?3 \
             AND (?4 IS NULL OR character = ?4)",
        )
        .bind(&identity.platform)
        .bind(&identity.namespace)
        .bind(&identity.user_id)
        .bind(character)
        .execute(&self.writer)
        .await
        .map_err(sq_err)?;
        let key = identity.key();
        self.invalidate(|(c, k)| *k == key && character.is_none_or(|x| x == c));
        Ok(r.rows_affected())
    }

    fn describe(&self) -> String {
        format!(
            "embedded vector memory (exact cosine, sqlite at {})",
            self.path
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sqlite_memory_keeps_the_contract() {
        let dir = std::env::temp_dir().join(format!("wf-mem-{}", Uuid::new_v4().simple()));
        let mem = SqliteMemory::open(&dir.join("memories.sqlite"))
            .await
            .unwrap();
        whisperfleet_testkit::contracts::memory::run(&mem).await;
        let mem = SqliteMemory::open(Path::new(":memory:")).await.unwrap();
        whisperfleet_testkit::contracts::memory::run(&mem).await;
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Two stores on one file (two worker processes): a search never serves the cached
    /// vectors of a scope the other one changed.
    #[tokio::test]
    async fn cached_vectors_follow_writes_from_another_store() {
        let dir = std::env::temp_dir().join(format!("wf-mem-{}", Uuid::new_v4().simple()));
        let path = dir.join("memories.sqlite");
        let (a, b) = (
            SqliteMemory::open(&path).await.unwrap(),
            SqliteMemory::open(&path).await.unwrap(),
        );
        let point = |text: &str, v: [f32; 3], ts: i64| MemoryPoint {
            id: Uuid::new_v4(),
            character: "c".into(),
            identity: Identity::new("http", "", "u"),
            role: "user".into(),
            text: text.into(),
            emotion: "neutral".into(),
            intensity: 0.0,
            channel_id: "ch".into(),
            is_dm: true,
            timestamp: DateTime::<Utc>::from_timestamp_millis(ts).unwrap(),
            vector: v.to_vec(),
        };
        let scope = MemoryScope {
            character: "c".into(),
            identity: Identity::new("http", "", "u"),
            include_dm: true,
        };
        let texts =
            |r: Vec<(MemoryPoint, f32)>| r.into_iter().map(|(p, _)| p.text).collect::<Vec<_>>();
        a.upsert(&[point("first", [1.0, 0.0, 0.0], 1)])
            .await
            .unwrap();
        assert_eq!(
            texts(a.search(&scope, &[0.0, 1.0, 0.0], 5).await.unwrap()),
            ["first"]
        );
        // Written by the other store after `a` cached the scope.
        b.upsert(&[point("second", [0.0, 1.0, 0.0], 2)])
            .await
            .unwrap();
        assert_eq!(
            texts(a.search(&scope, &[0.0, 1.0, 0.0], 5).await.unwrap()),
            ["second", "first"]
        );
        // Forgotten through the other store: gone here too.
        b.forget(&scope.identity, Some("c")).await.unwrap();
        assert!(
            a.search(&scope, &[0.0, 1.0, 0.0], 5)
                .await
                .unwrap()
                .is_empty()
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A store written before identities had platforms: its rows go to the platform their
    /// channel says, with the empty namespace, and are found (only) under that identity.
    #[tokio::test]
    async fn old_rows_are_migrated_to_the_platform_their_channel_says() {
        let dir = std::env::temp_dir().join(format!("wf-mem-{}", Uuid::new_v4().simple()));
        let path = dir.join("memories.sqlite");
        std::fs::create_dir_all(&dir).unwrap();
        {
            // The schema as it was, with one row per kind of channel.
            let opts = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true);
            let pool = SqlitePool::connect_with(opts).await.unwrap();
            sqlx::raw_sql(
                "CREATE TABLE memories (id TEXT PRIMARY KEY, character TEXT NOT NULL, \
                 user_id TEXT NOT NULL, role TEXT NOT NULL, text TEXT NOT NULL, \
                 emotion TEXT NOT NULL, intensity REAL NOT NULL, channel_id TEXT NOT NULL, \
                 is_dm INTEGER NOT NULL, ts_ms INTEGER NOT NULL, vector BLOB NOT NULL); \
                 CREATE INDEX memories_tenant ON memories (character, user_id, ts_ms);",
            )
            .execute(&pool)
            .await
            .unwrap();
            for (i, (user, channel)) in [
                ("312456789012345678", "912345678901234567"),
                ("me", "terminal:me"),
                ("42", "dm:42"),
                ("42", "guild-general"),
                ("42", "terminal:other"),
            ]
            .into_iter()
            .enumerate()
            {
                sqlx::query(
                    "INSERT INTO memories VALUES (?1, 'c', ?2, 'user', ?3, 'joy', 0.5, ?4, 1, ?5, ?6)",
                )
                .bind(Uuid::new_v4().to_string())
                .bind(user)
                .bind(format!("old {i}"))
                .bind(channel)
                .bind(i as i64)
                .bind(to_blob(&[1.0, 0.0]))
                .execute(&pool)
                .await
                .unwrap();
            }
            pool.close().await;
        }
        let mem = SqliteMemory::open(&path).await.unwrap();
        let texts = |v: Vec<MemoryPoint>| v.into_iter().map(|p| p.text).collect::<Vec<_>>();
        let of = |p: &str, u: &str| Identity::new(p, "", u);
        assert_eq!(
            texts(
                mem.list(&of("discord", "312456789012345678"), None, 10)
                    .await
                    .unwrap()
            ),
            ["old 0"]
        );
        assert_eq!(
            texts(mem.list(&of("terminal", "me"), None, 10).await.unwrap()),
            ["old 1"]
        );
        // HTTP's default DM channel and any channel an HTTP client named.
        assert_eq!(
            texts(mem.list(&of("http", "42"), None, 10).await.unwrap()),
            ["old 4", "old 3", "old 2"]
        );
        assert!(
            mem.list(&of("discord", "42"), None, 10)
                .await
                .unwrap()
                .is_empty()
        );
        let scope = MemoryScope {
            character: "c".into(),
            identity: of("discord", "312456789012345678"),
            include_dm: true,
        };
        assert_eq!(mem.recent(&scope, 5).await.unwrap().len(), 1);
        assert_eq!(mem.search(&scope, &[1.0, 0.0], 5).await.unwrap().len(), 1);
        drop(mem);
        // Opening again changes nothing.
        let mem = SqliteMemory::open(&path).await.unwrap();
        assert_eq!(
            mem.list(&of("http", "42"), None, 10).await.unwrap().len(),
            3
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
