//! The embedded vector memory: exact cosine search over vectors kept in SQLite.
//!
//! Exact search is the right tool here: retrieval is always filtered to one user and one
//! character first, and such sets are small (Qdrant itself scans exactly below its
//! full-scan threshold). Several worker processes on one host can share the file (WAL); a
//! fleet spread over hosts sets `WHISPERFLEET_QDRANT_URL`.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use uuid::Uuid;
use whisperfleet_shared::ports::{MemoryError, MemoryPoint, MemoryScope, VectorMemory};

use crate::memory::cosine;

pub struct SqliteMemory {
    pool: SqlitePool,
    path: String,
}

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
    role       TEXT NOT NULL,
    text       TEXT NOT NULL,
    emotion    TEXT NOT NULL,
    intensity  REAL NOT NULL,
    channel_id TEXT NOT NULL,
    is_dm      INTEGER NOT NULL,
    ts_ms      INTEGER NOT NULL,
    vector     BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS memories_tenant ON memories (character, user_id, ts_ms);
";

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
        user_id: r.get("user_id"),
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
        }
        .busy_timeout(Duration::from_secs(5));
        // One connection for an in-memory store (each would be its own database).
        let max = if display == ":memory:" { 1 } else { 4 };
        let pool = SqlitePoolOptions::new()
            .max_connections(max)
            .connect_with(opts)
            .await
            .map_err(sq_err)?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(SCHEMA))
            .execute(&pool)
            .await
            .map_err(sq_err)?;
        Ok(Self {
            pool,
            path: display,
        })
    }

    fn scope_sql(scope: &MemoryScope) -> &'static str {
        if scope.include_dm {
            "character = ?1 AND user_id = ?2"
        } else {
            "character = ?1 AND user_id = ?2 AND is_dm = 0"
        }
    }
}

#[async_trait]
impl VectorMemory for SqliteMemory {
    async fn upsert(&self, points: &[MemoryPoint]) -> Result<(), MemoryError> {
        let mut tx = self.pool.begin().await.map_err(sq_err)?;
        for p in points {
            sqlx::query(
                "INSERT INTO memories (id, character, user_id, role, text, emotion, intensity, channel_id, is_dm, ts_ms, vector) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                 ON CONFLICT (id) DO UPDATE SET text = excluded.text, emotion = excluded.emotion, \
                 intensity = excluded.intensity, vector = excluded.vector",
            )
            .bind(p.id.to_string())
            .bind(&p.character)
            .bind(&p.user_id)
            .bind(&p.role)
            .bind(&p.text)
            .bind(&p.emotion)
            .bind(f64::from(p.intensity))
            .bind(&p.channel_id)
            .bind(i64::from(p.is_dm))
            .bind(p.timestamp.timestamp_millis())
            .bind(to_blob(&p.vector))
            .execute(&mut *tx)
            .await
            .map_err(sq_err)?;
        }
        tx.commit().await.map_err(sq_err)
    }

    async fn search(
        &self,
        scope: &MemoryScope,
        vector: &[f32],
        k: usize,
    ) -> Result<Vec<(MemoryPoint, f32)>, MemoryError> {
        // Two phases: score every candidate from its id, time and vector only (no text,
        // no point built), then load the k winners whole. Building a full point per row
        // made `context` grow ~8 µs per stored memory.
        let sql = format!(
            "SELECT id, ts_ms, vector FROM memories WHERE {}",
            Self::scope_sql(scope)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&scope.character)
            .bind(&scope.user_id)
            .fetch_all(&self.pool)
            .await
            .map_err(sq_err)?;
        let mut buf = Vec::with_capacity(vector.len());
        let mut ranked: Vec<(f32, i64, String)> = rows
            .iter()
            .map(|r| {
                buf.clear();
                buf.extend(
                    r.get::<&[u8], _>("vector")
                        .chunks_exact(4)
                        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
                );
                (cosine(vector, &buf), r.get("ts_ms"), r.get("id"))
            })
            .collect();
        // Best first; ties broken by recency, then id, so the order is stable everywhere.
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        ranked.truncate(k);
        if ranked.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders = vec!["?"; ranked.len()].join(",");
        let sql = format!("SELECT * FROM memories WHERE id IN ({placeholders})");
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (_, _, id) in &ranked {
            q = q.bind(id);
        }
        let rows = q.fetch_all(&self.pool).await.map_err(sq_err)?;
        let mut points = rows
            .iter()
            .map(row_to_point)
            .collect::<Result<Vec<_>, MemoryError>>()?;
        // Back into rank order (a point deleted in between is simply left out).
        let mut out = Vec::with_capacity(ranked.len());
        for (score, _, id) in ranked {
            if let Some(i) = points.iter().position(|p| p.id.to_string() == id) {
                out.push((points.swap_remove(i), score));
            }
        }
        Ok(out)
    }

    async fn recent(&self, scope: &MemoryScope, n: usize) -> Result<Vec<MemoryPoint>, MemoryError> {
        let sql = format!(
            "SELECT * FROM memories WHERE {} ORDER BY ts_ms DESC, id LIMIT ?3",
            Self::scope_sql(scope)
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(&scope.character)
            .bind(&scope.user_id)
            .bind(n as i64)
            .fetch_all(&self.pool)
            .await
            .map_err(sq_err)?;
        rows.iter().map(row_to_point).collect()
    }

    async fn forget(&self, user_id: &str, character: Option<&str>) -> Result<u64, MemoryError> {
        let r = match character {
            Some(c) => {
                sqlx::query("DELETE FROM memories WHERE user_id = ?1 AND character = ?2")
                    .bind(user_id)
                    .bind(c)
                    .execute(&self.pool)
                    .await
            }
            None => {
                sqlx::query("DELETE FROM memories WHERE user_id = ?1")
                    .bind(user_id)
                    .execute(&self.pool)
                    .await
            }
        }
        .map_err(sq_err)?;
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
        crate::memory::contract(&mem).await;
        let mem = SqliteMemory::open(Path::new(":memory:")).await.unwrap();
        crate::memory::contract(&mem).await;
        let _ = std::fs::remove_dir_all(dir);
    }
}
