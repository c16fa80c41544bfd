//! SQLite implementation of the character store: what `whisperfleet up` / `chat` use when no
//! database URL is set. Same tables and semantics as [`crate::characters::postgres::PgCharacterStore`] (its
//! migrations in `migrations/sqlite` mirror the PostgreSQL ones in SQLite types), checked by
//! the same contract. What both stores say word for word is in [`super::sql`]; this file holds
//! what SQLite says its own way, each next to its PostgreSQL counterpart in `postgres.rs`.
//!
//! As in PostgreSQL, a character is read in ONE query that assembles the row and every child
//! table into one JSON document shaped exactly like [`Character`]. Writes run in
//! `BEGIN IMMEDIATE` transactions: they take SQLite's single write lock up front, so
//! concurrent writers (several pooled connections, or processes sharing the file through
//! WAL) queue on the busy timeout instead of failing when a read lock cannot be upgraded.
//!
//! Queries are runtime-checked (`sqlx::query`), so a fresh clone builds without a database.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteQueryResult,
    SqliteSynchronous,
};
use sqlx::{Row, Sqlite, Transaction};
use whisperfleet_shared::character::{
    Character, CharacterSummary, Relationship, RelationshipDelta,
};
use whisperfleet_shared::identity::Identity;
use whisperfleet_shared::ports::characters::{CharacterStore, StoreError};

use super::sql::{Dialect, Sql, upsert_character_sql};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for another connection's (or process's) write lock.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

pub struct SqliteCharacterStore {
    pool: SqlitePool,
    location: String,
}

fn db_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        // SQLITE_BUSY / SQLITE_LOCKED (any extended code): the lock was held past the busy
        // timeout, which is worth a retry like an unreachable server.
        sqlx::Error::Database(ref d)
            if d.code()
                .and_then(|c| c.parse::<i32>().ok())
                .is_some_and(|c| matches!(c & 0xff, 5 | 6)) =>
        {
            StoreError::Unavailable(e.to_string())
        }
        other => StoreError::Data(other.to_string()),
    }
}

/// Dialect: SQLite has no row-to-JSON (PostgreSQL's `to_jsonb`), so every column is named.
/// `json()` around every nested document: SQLite passes a value's JSON subtype through a
/// function call but not reliably through a subquery, and without it the nested document
/// would be embedded as a string. Booleans are 0/1 columns, turned into JSON booleans.
const LOAD_SQL: &str = r#"
SELECT json_object(
  'name', c.name,
  'normalized_name', c.normalized_name,
  'occupation', c.occupation,
  'description', c.description,
  'archetype', c.archetype,
  'allow_full_roleplay', json(CASE WHEN c.allow_full_roleplay THEN 'true' ELSE 'false' END),
  'emoji_frequency', c.emoji_frequency,
  'emoji_style', c.emoji_style,
  'version', c.version,
  'card', json(c.card),
  'lorebooks', json(c.lorebooks),
  'personality', json((SELECT json_group_object(t.trait_name, t.trait_value)
                       FROM personality_traits t WHERE t.character_id = c.id)),
  'communication', json(COALESCE((SELECT json_object(
                      'engagement_level', s.engagement_level,
                      'formality', s.formality,
                      'emotional_expression', s.emotional_expression,
                      'response_length', s.response_length,
                      'conversation_flow_guidance', s.conversation_flow_guidance,
                      'ai_identity_handling', s.ai_identity_handling)
                    FROM communication_styles s WHERE s.character_id = c.id), '{}')),
  'values', json((SELECT json_group_array(json_object(
                    'key', x.value_key, 'description', x.value_description,
                    'importance', x.importance_level) ORDER BY x.id)
                  FROM character_values x WHERE x.character_id = c.id)),
  'voice_traits', json((SELECT json_group_array(json_object(
                    'trait_type', x.trait_type, 'trait_value', x.trait_value,
                    'situational_context', x.situational_context) ORDER BY x.id)
                  FROM character_voice_traits x WHERE x.character_id = c.id)),
  'speech_patterns', json((SELECT json_group_array(json_object(
                    'pattern_type', x.pattern_type, 'pattern_value', x.pattern_value,
                    'usage_frequency', x.usage_frequency, 'context', x.context,
                    'priority', x.priority) ORDER BY x.id)
                  FROM character_speech_patterns x WHERE x.character_id = c.id)),
  'interests', json((SELECT json_group_array(json_object(
                    'category', x.category, 'interest_text', x.interest_text,
                    'proficiency_level', x.proficiency_level, 'importance', x.importance) ORDER BY x.id)
                  FROM character_interests x WHERE x.character_id = c.id)),
  'background', json((SELECT json_group_array(json_object(
                    'category', x.category, 'period', x.period, 'title', x.title,
                    'description', x.description, 'importance_level', x.importance_level) ORDER BY x.id)
                  FROM character_background x WHERE x.character_id = c.id)),
  'response_guidelines', json((SELECT json_group_array(json_object(
                    'guideline_type', x.guideline_type, 'guideline_name', x.guideline_name,
                    'guideline_content', x.guideline_content, 'priority', x.priority,
                    'is_critical', json(CASE WHEN x.is_critical THEN 'true' ELSE 'false' END)) ORDER BY x.id)
                  FROM character_response_guidelines x WHERE x.character_id = c.id)),
  'ai_scenarios', json((SELECT json_group_array(json_object(
                    'scenario_type', x.scenario_type, 'trigger_phrases', json(x.trigger_phrases),
                    'response_guidance', x.response_guidance) ORDER BY x.id)
                  FROM character_ai_scenarios x WHERE x.character_id = c.id)),
  'llm', json(COALESCE((SELECT json_object(
                    'model', l.model, 'temperature', l.temperature, 'max_tokens', l.max_tokens)
                  FROM character_llm_config l WHERE l.character_id = c.id), '{}'))
) AS doc
FROM characters c
WHERE c.normalized_name = $1
"#;

/// Dialect: the current time as the SQLite migrations store timestamps (ISO-8601 text in UTC);
/// PostgreSQL says `now()` into TIMESTAMPTZ. A macro, so statements can `concat!` it.
macro_rules! now {
    () => {
        "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"
    };
}

impl SqliteCharacterStore {
    /// Opens the store at `path` (creating its directory and file) and applies pending
    /// migrations. Tables outside the migrations (the embedded vector memory's) may share the
    /// file; another sqlx migrator may not, as both would keep their history in
    /// `_sqlx_migrations`.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if path.as_os_str() == ":memory:" {
            return Self::open_in_memory().await;
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| StoreError::Unavailable(format!("creating {}: {e}", dir.display())))?;
        }
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            // With WAL, NORMAL loses at most the last commits on power loss, never
            // consistency; FULL would fsync every relationship update.
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(3))
            .connect_with(opts)
            .await
            .map_err(db_err)?;
        Self::migrated(pool, path.display().to_string()).await
    }

    /// A private store that lives as long as this value (tests, throwaway runs).
    pub async fn open_in_memory() -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")
            .map_err(db_err)?
            .busy_timeout(BUSY_TIMEOUT);
        // One connection that is never recycled: each connection to `:memory:` is a
        // database of its own, and closing it would lose everything.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts)
            .await
            .map_err(db_err)?;
        Self::migrated(pool, ":memory:".into()).await
    }

    async fn migrated(pool: SqlitePool, location: String) -> Result<Self, StoreError> {
        MIGRATOR
            .run(&pool)
            .await
            .map_err(|e| StoreError::Data(format!("migrating {location}: {e}")))?;
        Ok(Self { pool, location })
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, StoreError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)
    }
}

/// SQLite's side of the shared SQL: its JSON load, ISO-8601 text for timestamps.
impl Dialect for Sqlite {
    const LOAD_CHARACTER: &'static str = LOAD_SQL;
    const UPSERT_CHARACTER: &'static str = upsert_character_sql!(now!());

    fn store_err(e: sqlx::Error) -> StoreError {
        db_err(e)
    }

    fn rows_affected(result: &SqliteQueryResult) -> u64 {
        result.rows_affected()
    }
}

#[async_trait]
impl CharacterStore for SqliteCharacterStore {
    async fn load(&self, normalized_name: &str) -> Result<Option<Character>, StoreError> {
        Sql::<Sqlite>::load(&self.pool, normalized_name).await
    }

    async fn upsert(&self, character: &Character) -> Result<i64, StoreError> {
        let mut c = character.clone();
        c.validate().map_err(StoreError::Data)?;
        let tx = self.begin_write().await?;
        Sql::<Sqlite>::write(tx, &c).await
    }

    async fn list(&self) -> Result<Vec<CharacterSummary>, StoreError> {
        Sql::<Sqlite>::list(&self.pool).await
    }

    async fn relationship(
        &self,
        identity: &Identity,
        character: &str,
    ) -> Result<Option<Relationship>, StoreError> {
        Sql::<Sqlite>::relationship(&self.pool, identity, character).await
    }

    async fn relationships_of(
        &self,
        identity: &Identity,
    ) -> Result<Vec<(String, Relationship)>, StoreError> {
        Sql::<Sqlite>::relationships_of(&self.pool, identity).await
    }

    async fn apply_relationship(
        &self,
        turn_id: uuid::Uuid,
        identity: &Identity,
        character: &str,
        d: RelationshipDelta,
    ) -> Result<Option<Relationship>, StoreError> {
        // Dialect: SQLite has no data-modifying CTEs, so PostgreSQL's one statement is a
        // read-modify-write here, made atomic by the write lock BEGIN IMMEDIATE takes.
        // One write transaction: the turn is recorded and the row moved together, or neither.
        // It holds the write lock from BEGIN, so the read-modify-write below cannot lose a
        // concurrent update. The arithmetic is `Relationship::apply` (f32, clamped), as
        // PostgreSQL computes it on REAL columns.
        let mut tx = self.begin_write().await?;
        let first = sqlx::query(
            "INSERT INTO relationship_turns (turn_id) VALUES ($1) ON CONFLICT DO NOTHING",
        )
        .bind(turn_id.hyphenated().to_string())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if first.rows_affected() == 0 {
            // Already applied: a redelivered turn changes nothing.
            tx.rollback().await.map_err(db_err)?;
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT c.id, r.trust, r.affection, r.attunement, r.interactions FROM characters c \
             LEFT JOIN relationships r ON r.character_id = c.id AND r.platform = $1 \
             AND r.namespace = $2 AND r.user_id = $3 \
             WHERE c.normalized_name = $4",
        )
        .bind(&identity.platform)
        .bind(&identity.namespace)
        .bind(&identity.user_id)
        .bind(character)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db_err)?;
        let Some(row) = row else {
            // Unknown character: the turn stays recorded, as in PostgreSQL.
            tx.commit().await.map_err(db_err)?;
            return Ok(None);
        };
        let character_id: i64 = row.try_get("id").map_err(db_err)?;
        let current = match row
            .try_get::<Option<i64>, _>("interactions")
            .map_err(db_err)?
        {
            Some(_) => Sql::<Sqlite>::relationship_of(&row).map_err(db_err)?,
            None => Relationship::default(),
        };
        let next = current.apply(d);
        sqlx::query(concat!(
            "INSERT INTO relationships (platform, namespace, user_id, character_id, trust, affection, attunement, interactions) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (platform, namespace, user_id, character_id) DO UPDATE SET trust = excluded.trust, \
             affection = excluded.affection, attunement = excluded.attunement, \
             interactions = excluded.interactions, updated_at = ",
            now!()
        ))
        .bind(&identity.platform)
        .bind(&identity.namespace)
        .bind(&identity.user_id)
        .bind(character_id)
        .bind(next.trust)
        .bind(next.affection)
        .bind(next.attunement)
        .bind(next.interactions)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(Some(next))
    }

    async fn forget_user(
        &self,
        identity: &Identity,
        character: Option<&str>,
    ) -> Result<u64, StoreError> {
        Sql::<Sqlite>::forget_user(&self.pool, identity, character).await
    }

    fn describe(&self) -> String {
        format!("sqlite at {}", self.location)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn in_memory_store_keeps_its_data_across_calls() {
        let store = SqliteCharacterStore::open_in_memory().await.unwrap();
        let c = Character {
            name: "Memo Ry".into(),
            ..Default::default()
        };
        assert_eq!(store.upsert(&c).await.unwrap(), 1);
        assert_eq!(store.upsert(&c).await.unwrap(), 2);
        let loaded = store.load("memo_ry").await.unwrap().unwrap();
        assert_eq!(loaded.version, 2);
        assert_eq!(store.describe(), "sqlite at :memory:");
    }

    /// A store at the schema before relationships had identities: its rows go to Discord
    /// when the user id is a snowflake, else to the unclaimable `legacy` platform.
    #[tokio::test]
    async fn old_relationships_are_migrated_to_discord_or_legacy() {
        let dir = std::env::temp_dir().join(format!("wf-rel-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("characters.sqlite");
        {
            let opts = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true);
            let pool = SqlitePool::connect_with(opts).await.unwrap();
            // The migrations as they were before this change.
            MIGRATOR.run_to(20261125000002, &pool).await.unwrap();
            // The character as the schema of then stores it (today's upsert writes columns
            // that came later).
            sqlx::query("INSERT INTO characters (name, normalized_name) VALUES ('Nora', 'nora')")
                .execute(&pool)
                .await
                .unwrap();
            for (user, trust) in [("312456789012345678", 0.9f32), ("alice", 0.7), ("42", 0.1)] {
                sqlx::query(
                    "INSERT INTO relationships (user_id, character_id, trust, interactions) \
                     SELECT $1, id, $2, 5 FROM characters WHERE normalized_name = 'nora'",
                )
                .bind(user)
                .bind(trust)
                .execute(&pool)
                .await
                .unwrap();
            }
            pool.close().await;
        }
        let store = SqliteCharacterStore::open(&path).await.unwrap();
        let trust = |r: Option<Relationship>| r.map(|r| (r.trust, r.interactions));
        let at = |p: &str, u: &str| Identity::new(p, "", u);
        for (who, want) in [
            (at("discord", "312456789012345678"), Some((0.9, 5))),
            (at("http", "312456789012345678"), None),
            (at("legacy", "alice"), Some((0.7, 5))),
            (at("legacy", "42"), Some((0.1, 5))),
            (at("http", "alice"), None),
            (at("terminal", "alice"), None),
            (at("discord", "42"), None),
        ] {
            assert_eq!(
                trust(store.relationship(&who, "nora").await.unwrap()),
                want,
                "{who}"
            );
        }
        // The migrated table takes new identities beside the old rows.
        let d = RelationshipDelta::default();
        let moved = store
            .apply_relationship(uuid::Uuid::new_v4(), &at("http", "alice"), "nora", d)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(moved.interactions, 1);
        assert_eq!(
            trust(
                store
                    .relationship(&at("legacy", "alice"), "nora")
                    .await
                    .unwrap()
            ),
            Some((0.7, 5))
        );
        let _ = std::fs::remove_dir_all(dir);
    }
}
