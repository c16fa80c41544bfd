//! PostgreSQL implementation of the character store. What both stores say word for word (the
//! write of a character and its child rows, the list, the relationship read, the forget) is
//! in [`super::sql`]; this file holds what PostgreSQL says its own way, each next to its
//! SQLite counterpart in `sqlite.rs`: the JSONB load, `now()`, the one-statement relationship
//! update, and which errors are worth a retry.
//!
//! A character is read in ONE round trip: the query assembles the row and every child table
//! into one JSON document shaped exactly like [`Character`], so there is no N+1 and no
//! mapping code to drift from the model.
//!
//! Queries are runtime-checked (`sqlx::query`), so a fresh clone builds without a database.
//!
//! **Every call bounded** by `DATABASE_TIMEOUT_MS` (T), three ways, because a database that
//! stops answering (a black hole, not a refusal) defeats each one alone:
//! - the server's `statement_timeout` = T cancels a slow statement cleanly (a lock wait, a bad
//!   plan), leaving the connection usable;
//! - the pool's acquire timeout = T bounds waiting for a connection, opening one included
//!   (TCP, TLS, startup, auth: sqlx has no separate connect timeout);
//! - each call runs within 2T on the client ([`PgCharacterStore::bounded`]), for when the
//!   server's answer never arrives. Giving up drops the query mid-flight; sqlx then pings the
//!   connection before reusing it, and that ping has no timeout of its own, so `after_release`
//!   pings first within T and closes the connection when it gets no answer — otherwise each
//!   abandoned connection would hold a pool slot forever and the pool would stay empty after
//!   the database came back.
//!
//! Migrations run on a connection of their own without `statement_timeout` (DDL may take
//! longer than a turn's query), bounded by [`MIGRATION_BOUND`].

use std::future::Future;
use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgQueryResult};
use sqlx::{Connection, Postgres};
use whisperfleet_shared::character::{
    Character, CharacterSummary, Relationship, RelationshipDelta,
};
use whisperfleet_shared::config::redact_secret_url;
use whisperfleet_shared::identity::Identity;
use whisperfleet_shared::ports::characters::{CharacterStore, StoreError};

use super::sql::{Dialect, Sql, upsert_character_sql};

pub(crate) static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Bound of applying migrations at startup (connecting included).
pub const MIGRATION_BOUND: Duration = Duration::from_secs(60);

/// A character upsert is a transaction of many statements: its bound is this many calls'.
const UPSERT_CALLS: u32 = 5;

pub struct PgCharacterStore {
    pool: PgPool,
    url: SecretString,
    /// The URL's options without `statement_timeout`, for migrations.
    plain: PgConnectOptions,
    /// Client-side bound of one call (2 × `DATABASE_TIMEOUT_MS`).
    call_bound: Duration,
}

fn db_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => StoreError::Unavailable(e.to_string()),
        other => StoreError::Data(other.to_string()),
    }
}

/// Dialect: `to_jsonb` turns a whole child row into its document (SQLite has no row-to-JSON, so
/// its load names every column), and `jsonb_strip_nulls` leaves unset LLM overrides out.
const LOAD_SQL: &str = r#"
SELECT jsonb_build_object(
  'name', c.name,
  'normalized_name', c.normalized_name,
  'occupation', c.occupation,
  'description', c.description,
  'archetype', c.archetype,
  'allow_full_roleplay', c.allow_full_roleplay,
  'emoji_frequency', c.emoji_frequency,
  'emoji_style', c.emoji_style,
  'version', c.version,
  'card', c.card::jsonb,
  'lorebooks', c.lorebooks::jsonb,
  'personality', (SELECT COALESCE(jsonb_object_agg(t.trait_name, t.trait_value), '{}'::jsonb)
                  FROM personality_traits t WHERE t.character_id = c.id),
  'communication', COALESCE((SELECT to_jsonb(s) - 'character_id' FROM communication_styles s
                    WHERE s.character_id = c.id), '{}'::jsonb),
  'values', (SELECT COALESCE(jsonb_agg(jsonb_build_object('key', v.value_key,
                'description', v.value_description, 'importance', v.importance_level)
                ORDER BY v.id), '[]'::jsonb)
             FROM character_values v WHERE v.character_id = c.id),
  'voice_traits', (SELECT COALESCE(jsonb_agg(to_jsonb(x) - 'id' - 'character_id' ORDER BY x.id), '[]'::jsonb)
                   FROM character_voice_traits x WHERE x.character_id = c.id),
  'speech_patterns', (SELECT COALESCE(jsonb_agg(to_jsonb(x) - 'id' - 'character_id' ORDER BY x.id), '[]'::jsonb)
                      FROM character_speech_patterns x WHERE x.character_id = c.id),
  'interests', (SELECT COALESCE(jsonb_agg(to_jsonb(x) - 'id' - 'character_id' ORDER BY x.id), '[]'::jsonb)
                FROM character_interests x WHERE x.character_id = c.id),
  'background', (SELECT COALESCE(jsonb_agg(to_jsonb(x) - 'id' - 'character_id' ORDER BY x.id), '[]'::jsonb)
                 FROM character_background x WHERE x.character_id = c.id),
  'response_guidelines', (SELECT COALESCE(jsonb_agg(to_jsonb(x) - 'id' - 'character_id' ORDER BY x.id), '[]'::jsonb)
                          FROM character_response_guidelines x WHERE x.character_id = c.id),
  'ai_scenarios', (SELECT COALESCE(jsonb_agg(to_jsonb(x) - 'id' - 'character_id' ORDER BY x.id), '[]'::jsonb)
                   FROM character_ai_scenarios x WHERE x.character_id = c.id),
  'llm', COALESCE((SELECT jsonb_strip_nulls(to_jsonb(l) - 'character_id') FROM character_llm_config l
          WHERE l.character_id = c.id), '{}'::jsonb)
) AS doc
FROM characters c
WHERE c.normalized_name = $1
"#;

impl PgCharacterStore {
    /// Connects lazily (a down database fails turns with a fallback, not the process), every
    /// call bounded by `timeout` as the module doc says.
    pub async fn connect(
        url: SecretString,
        max_connections: u32,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let plain: PgConnectOptions = url
            .expose_secret()
            .parse()
            .map_err(|e| StoreError::Data(format!("invalid database url: {e}")))?;
        let timeout = timeout.max(Duration::from_millis(1));
        let options = plain
            .clone()
            .options([("statement_timeout", format!("{}ms", timeout.as_millis()))]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(timeout)
            .after_release(move |conn, _| {
                Box::pin(async move {
                    match tokio::time::timeout(timeout, conn.ping()).await {
                        Ok(answered) => answered.map(|()| true),
                        // An error (not `false`) makes sqlx drop the socket without the
                        // goodbye a graceful close would wait on.
                        Err(_) => Err(sqlx::Error::Io(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            "no answer to a ping on release",
                        ))),
                    }
                })
            })
            .connect_lazy_with(options);
        Ok(Self {
            pool,
            url,
            plain,
            call_bound: timeout * 2,
        })
    }

    /// Applies pending migrations, on a connection of its own without `statement_timeout`.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let run = async {
            let mut conn = PgConnection::connect_with(&self.plain)
                .await
                .map_err(db_err)?;
            let applied = MIGRATOR
                .run(&mut conn)
                .await
                .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")));
            let _ = conn.close().await;
            applied
        };
        tokio::time::timeout(MIGRATION_BOUND, run)
            .await
            .map_err(|_| {
                StoreError::Unavailable(format!(
                    "migrations did not finish within {} s",
                    MIGRATION_BOUND.as_secs()
                ))
            })?
    }

    /// Runs one call within `calls` × the client-side bound.
    async fn bounded<T>(
        &self,
        calls: u32,
        call: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let bound = self.call_bound * calls;
        tokio::time::timeout(bound, call).await.map_err(|_| {
            StoreError::Unavailable(format!(
                "no answer from PostgreSQL within {} ms",
                bound.as_millis()
            ))
        })?
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

/// PostgreSQL's side of the shared SQL: its JSON load, `now()` for timestamps.
impl Dialect for Postgres {
    const LOAD_CHARACTER: &'static str = LOAD_SQL;
    const UPSERT_CHARACTER: &'static str = upsert_character_sql!("now()");

    fn store_err(e: sqlx::Error) -> StoreError {
        db_err(e)
    }

    fn rows_affected(result: &PgQueryResult) -> u64 {
        result.rows_affected()
    }
}

#[async_trait]
impl CharacterStore for PgCharacterStore {
    async fn load(&self, normalized_name: &str) -> Result<Option<Character>, StoreError> {
        self.bounded(1, Sql::<Postgres>::load(&self.pool, normalized_name))
            .await
    }

    async fn upsert(&self, character: &Character) -> Result<i64, StoreError> {
        let mut c = character.clone();
        c.validate().map_err(StoreError::Data)?;
        self.bounded(UPSERT_CALLS, async {
            let tx = self.pool.begin().await.map_err(db_err)?;
            Sql::<Postgres>::write(tx, &c).await
        })
        .await
    }

    async fn list(&self) -> Result<Vec<CharacterSummary>, StoreError> {
        self.bounded(1, Sql::<Postgres>::list(&self.pool)).await
    }

    async fn relationship(
        &self,
        identity: &Identity,
        character: &str,
    ) -> Result<Option<Relationship>, StoreError> {
        self.bounded(
            1,
            Sql::<Postgres>::relationship(&self.pool, identity, character),
        )
        .await
    }

    async fn relationships_of(
        &self,
        identity: &Identity,
    ) -> Result<Vec<(String, Relationship)>, StoreError> {
        self.bounded(1, Sql::<Postgres>::relationships_of(&self.pool, identity))
            .await
    }

    async fn apply_relationship(
        &self,
        turn_id: uuid::Uuid,
        identity: &Identity,
        character: &str,
        d: RelationshipDelta,
    ) -> Result<Option<Relationship>, StoreError> {
        // Dialect: data-modifying CTEs let PostgreSQL do this in one statement; SQLite has none,
        // so its version is a read-modify-write under the write lock.
        // One statement: the turn is recorded and the row moved together, or neither.
        // Concurrent turns of one user serialise on the row lock of the upsert, and each adds
        // its delta to the value it finds, so no update is lost.
        let row = self.bounded(1, async {
            sqlx::query(
            "WITH first AS ( \
                 INSERT INTO relationship_turns (turn_id) VALUES ($1) \
                 ON CONFLICT DO NOTHING RETURNING turn_id), \
             moved AS ( \
                 INSERT INTO relationships AS r (platform, namespace, user_id, character_id, trust, affection, attunement, interactions) \
                 SELECT $2, $3, $4, c.id, LEAST(1, GREATEST(0, 0.3 + $6::real)), LEAST(1, GREATEST(0, 0.3 + $7::real)), \
                        LEAST(1, GREATEST(0, 0.3 + $8::real)), 1 \
                 FROM characters c, first WHERE c.normalized_name = $5 \
                 ON CONFLICT (platform, namespace, user_id, character_id) DO UPDATE SET \
                     trust = LEAST(1, GREATEST(0, r.trust + $6::real)), \
                     affection = LEAST(1, GREATEST(0, r.affection + $7::real)), \
                     attunement = LEAST(1, GREATEST(0, r.attunement + $8::real)), \
                     interactions = r.interactions + 1, updated_at = now() \
                 RETURNING r.trust, r.affection, r.attunement, r.interactions) \
             SELECT trust, affection, attunement, interactions FROM moved",
        )
        .bind(turn_id)
        .bind(&identity.platform)
        .bind(&identity.namespace)
        .bind(&identity.user_id)
        .bind(character)
        .bind(d.trust)
        .bind(d.affection)
        .bind(d.attunement)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)
        })
        .await?;
        row.map(|r| Sql::<Postgres>::relationship_of(&r))
            .transpose()
            .map_err(db_err)
    }

    async fn forget_user(
        &self,
        identity: &Identity,
        character: Option<&str>,
    ) -> Result<u64, StoreError> {
        self.bounded(
            1,
            Sql::<Postgres>::forget_user(&self.pool, identity, character),
        )
        .await
    }

    fn describe(&self) -> String {
        format!("postgresql at {}", redact_secret_url(&self.url))
    }
}
