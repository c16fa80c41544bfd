//! The character store's SQL that PostgreSQL and SQLite run word for word, written once: the
//! write of a character and its child rows, the list, the relationship read and the forget.
//! Placeholders are `$N`, which SQLite reads as numbered parameters too. Each value is bound
//! as the same Rust type on both (`max_tokens` as `i64`, so a `u32` always fits), so the two
//! stores cannot drift apart in what they store.
//!
//! What the dialects really disagree on stays in each backend, next to its counterpart there:
//! the JSON assembly of the load, the current-timestamp expression, the atomic relationship
//! update, how a write transaction begins, and which errors are worth a retry. A backend
//! hands those to this module through [`Dialect`].

use std::marker::PhantomData;

use sqlx::types::Json;
use sqlx::{
    ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Pool, Row, Transaction, Type,
};
use whisperfleet_shared::character::{
    Archetype, Character, CharacterSummary, Relationship, normalize_name,
};
use whisperfleet_shared::identity::Identity;
use whisperfleet_shared::ports::characters::StoreError;

/// What a backend contributes to the shared SQL: its texts where the dialects differ, and its
/// own reading of its errors and results.
pub(crate) trait Dialect: Database {
    /// Reads one character in one round trip: `$1` is the normalized name; one column `doc`
    /// holds the character as a JSON document shaped like [`Character`].
    const LOAD_CHARACTER: &'static str;
    /// Inserts or updates the `characters` row from `$1..$10` (in the order of
    /// [`upsert_character_sql`]), bumping the version; returns `id, version`.
    const UPSERT_CHARACTER: &'static str;

    /// A driver error as the port's error: which ones are worth a retry is the backend's call.
    fn store_err(e: sqlx::Error) -> StoreError;

    /// `sqlx` has no backend-independent accessor for it.
    fn rows_affected(result: &Self::QueryResult) -> u64;
}

/// The `characters` upsert around the dialect's current-timestamp expression (`now()` against
/// ISO-8601 text in SQLite), the one part of it the dialects spell differently.
macro_rules! upsert_character_sql {
    ($($now:tt)+) => {
        concat!(
            "INSERT INTO characters (name, normalized_name, occupation, description, archetype, \
             allow_full_roleplay, emoji_frequency, emoji_style, card, lorebooks) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (normalized_name) DO UPDATE SET name = excluded.name, occupation = excluded.occupation, \
             card = excluded.card, lorebooks = excluded.lorebooks, \
             description = excluded.description, archetype = excluded.archetype, \
             allow_full_roleplay = excluded.allow_full_roleplay, emoji_frequency = excluded.emoji_frequency, \
             emoji_style = excluded.emoji_style, version = characters.version + 1, updated_at = ",
            $($now)+,
            " RETURNING id, version"
        )
    };
}
pub(crate) use upsert_character_sql;

/// The child tables a write replaces; the write deletes their rows before inserting anew.
const CHILD_TABLES: [&str; 10] = [
    "personality_traits",
    "communication_styles",
    "character_values",
    "character_voice_traits",
    "character_speech_patterns",
    "character_interests",
    "character_background",
    "character_response_guidelines",
    "character_ai_scenarios",
    "character_llm_config",
];

const INSERT_TRAIT: &str =
    "INSERT INTO personality_traits (character_id, trait_name, trait_value) VALUES ($1, $2, $3)";
const INSERT_STYLE: &str = "INSERT INTO communication_styles (character_id, engagement_level, \
     formality, emotional_expression, response_length, conversation_flow_guidance, \
     ai_identity_handling) VALUES ($1, $2, $3, $4, $5, $6, $7)";
const INSERT_VALUE: &str = "INSERT INTO character_values (character_id, value_key, \
     value_description, importance_level) VALUES ($1, $2, $3, $4)";
const INSERT_VOICE_TRAIT: &str = "INSERT INTO character_voice_traits (character_id, trait_type, \
     trait_value, situational_context) VALUES ($1, $2, $3, $4)";
const INSERT_SPEECH_PATTERN: &str = "INSERT INTO character_speech_patterns (character_id, \
     pattern_type, pattern_value, usage_frequency, context, priority) VALUES ($1, $2, $3, $4, $5, $6)";
const INSERT_INTEREST: &str = "INSERT INTO character_interests (character_id, category, \
     interest_text, proficiency_level, importance) VALUES ($1, $2, $3, $4, $5)";
const INSERT_BACKGROUND: &str = "INSERT INTO character_background (character_id, category, \
     period, title, description, importance_level) VALUES ($1, $2, $3, $4, $5, $6)";
const INSERT_GUIDELINE: &str = "INSERT INTO character_response_guidelines (character_id, \
     guideline_type, guideline_name, guideline_content, priority, is_critical) \
     VALUES ($1, $2, $3, $4, $5, $6)";
const INSERT_SCENARIO: &str = "INSERT INTO character_ai_scenarios (character_id, scenario_type, \
     trigger_phrases, response_guidance) VALUES ($1, $2, $3, $4)";
const INSERT_LLM: &str = "INSERT INTO character_llm_config (character_id, model, temperature, \
     max_tokens) VALUES ($1, $2, $3, $4)";

/// SQLite's BINARY collation orders like the fleet's C-collated PostgreSQL.
const LIST: &str =
    "SELECT name, normalized_name, occupation, archetype, version FROM characters ORDER BY name";
// Relationships are keyed by the whole identity: $1 platform, $2 namespace, $3 user id.
const RELATIONSHIP: &str = "SELECT r.trust, r.affection, r.attunement, r.interactions \
     FROM relationships r JOIN characters c ON c.id = r.character_id \
     WHERE r.platform = $1 AND r.namespace = $2 AND r.user_id = $3 AND c.normalized_name = $4";
const RELATIONSHIPS_OF: &str = "SELECT c.normalized_name, r.trust, r.affection, r.attunement, \
     r.interactions FROM relationships r JOIN characters c ON c.id = r.character_id \
     WHERE r.platform = $1 AND r.namespace = $2 AND r.user_id = $3 ORDER BY c.normalized_name";
const FORGET_USER_CHARACTER: &str = "DELETE FROM relationships WHERE platform = $1 AND \
     namespace = $2 AND user_id = $3 AND \
     character_id IN (SELECT id FROM characters WHERE normalized_name = $4)";
const FORGET_USER: &str =
    "DELETE FROM relationships WHERE platform = $1 AND namespace = $2 AND user_id = $3";

/// A value bound as a query parameter.
pub(crate) trait Bind<DB: Database>: for<'t> Encode<'t, DB> + Type<DB> {}
impl<DB: Database, T: for<'t> Encode<'t, DB> + Type<DB>> Bind<DB> for T {}

/// A value read from a result column.
pub(crate) trait Fetch<DB: Database>: for<'r> Decode<'r, DB> + Type<DB> {}
impl<DB: Database, T: for<'r> Decode<'r, DB> + Type<DB>> Fetch<DB> for T {}

/// The shared operations for one backend: `Sql::<Postgres>::list(&pool)`. The bounds say
/// which Rust types the shared SQL binds and reads; both backends have them all.
pub(crate) struct Sql<DB>(PhantomData<DB>);

impl<DB> Sql<DB>
where
    DB: Dialect,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: Bind<DB> + ColumnIndex<DB::Row>,
    String: Bind<DB> + Fetch<DB>,
    i64: Bind<DB> + Fetch<DB>,
    i32: Bind<DB>,
    f32: Bind<DB> + Fetch<DB>,
    bool: Bind<DB>,
    Option<String>: Bind<DB>,
    Option<f32>: Bind<DB>,
    Option<i64>: Bind<DB>,
    for<'a> Json<&'a [String]>: Bind<DB>,
    Json<serde_json::Value>: Fetch<DB>,
{
    pub(crate) async fn load(
        pool: &Pool<DB>,
        normalized_name: &str,
    ) -> Result<Option<Character>, StoreError> {
        let row = sqlx::query(DB::LOAD_CHARACTER)
            .bind(normalized_name)
            .fetch_optional(pool)
            .await
            .map_err(DB::store_err)?;
        let Some(row) = row else { return Ok(None) };
        let Json(doc) = row
            .try_get::<Json<serde_json::Value>, _>("doc")
            .map_err(DB::store_err)?;
        serde_json::from_value(doc).map(Some).map_err(|e| {
            StoreError::Data(format!(
                "stored character {normalized_name} is malformed: {e}"
            ))
        })
    }

    /// Writes a validated character and all its child rows in `tx` and commits; returns the
    /// stored version. How `tx` began is the backend's (SQLite takes the write lock up front).
    pub(crate) async fn write(
        mut tx: Transaction<'static, DB>,
        c: &Character,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(DB::UPSERT_CHARACTER)
            .bind(&c.name)
            .bind(normalize_name(&c.name))
            .bind(&c.occupation)
            .bind(&c.description)
            .bind(c.archetype.as_str())
            .bind(c.allow_full_roleplay)
            .bind(&c.emoji_frequency)
            .bind(&c.emoji_style)
            // The card and lorebooks as JSON text: the card's original JSON stays a string
            // inside it, so no database JSON type ever reorders or renormalizes it.
            .bind(card_text(c)?)
            .bind(lorebooks_text(c)?)
            .fetch_one(&mut *tx)
            .await
            .map_err(DB::store_err)?;
        let id: i64 = row.try_get("id").map_err(DB::store_err)?;
        let version: i64 = row.try_get("version").map_err(DB::store_err)?;
        Self::replace_children(&mut tx, id, c)
            .await
            .map_err(DB::store_err)?;
        tx.commit().await.map_err(DB::store_err)?;
        Ok(version)
    }

    async fn replace_children(
        tx: &mut Transaction<'static, DB>,
        id: i64,
        c: &Character,
    ) -> Result<(), sqlx::Error> {
        for table in CHILD_TABLES {
            // Table names come from the fixed list, never from input.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE character_id = $1"
            )))
            .bind(id)
            .execute(&mut **tx)
            .await?;
        }
        for (name, v) in c.personality.traits() {
            sqlx::query(INSERT_TRAIT)
                .bind(id)
                .bind(name)
                .bind(v)
                .execute(&mut **tx)
                .await?;
        }
        let s = &c.communication;
        sqlx::query(INSERT_STYLE)
            .bind(id)
            .bind(&s.engagement_level)
            .bind(&s.formality)
            .bind(&s.emotional_expression)
            .bind(&s.response_length)
            .bind(&s.conversation_flow_guidance)
            .bind(&s.ai_identity_handling)
            .execute(&mut **tx)
            .await?;
        for v in &c.values {
            sqlx::query(INSERT_VALUE)
                .bind(id)
                .bind(&v.key)
                .bind(&v.description)
                .bind(&v.importance)
                .execute(&mut **tx)
                .await?;
        }
        for v in &c.voice_traits {
            sqlx::query(INSERT_VOICE_TRAIT)
                .bind(id)
                .bind(&v.trait_type)
                .bind(&v.trait_value)
                .bind(&v.situational_context)
                .execute(&mut **tx)
                .await?;
        }
        for v in &c.speech_patterns {
            sqlx::query(INSERT_SPEECH_PATTERN)
                .bind(id)
                .bind(&v.pattern_type)
                .bind(&v.pattern_value)
                .bind(&v.usage_frequency)
                .bind(&v.context)
                .bind(v.priority)
                .execute(&mut **tx)
                .await?;
        }
        for v in &c.interests {
            sqlx::query(INSERT_INTEREST)
                .bind(id)
                .bind(&v.category)
                .bind(&v.interest_text)
                .bind(v.proficiency_level)
                .bind(&v.importance)
                .execute(&mut **tx)
                .await?;
        }
        for v in &c.background {
            sqlx::query(INSERT_BACKGROUND)
                .bind(id)
                .bind(&v.category)
                .bind(&v.period)
                .bind(&v.title)
                .bind(&v.description)
                .bind(v.importance_level)
                .execute(&mut **tx)
                .await?;
        }
        for v in &c.response_guidelines {
            sqlx::query(INSERT_GUIDELINE)
                .bind(id)
                .bind(&v.guideline_type)
                .bind(&v.guideline_name)
                .bind(&v.guideline_content)
                .bind(v.priority)
                .bind(v.is_critical)
                .execute(&mut **tx)
                .await?;
        }
        for v in &c.ai_scenarios {
            sqlx::query(INSERT_SCENARIO)
                .bind(id)
                .bind(&v.scenario_type)
                .bind(Json(v.trigger_phrases.as_slice()))
                .bind(&v.response_guidance)
                .execute(&mut **tx)
                .await?;
        }
        sqlx::query(INSERT_LLM)
            .bind(id)
            .bind(&c.llm.model)
            .bind(c.llm.temperature)
            .bind(c.llm.max_tokens.map(i64::from))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub(crate) async fn list(pool: &Pool<DB>) -> Result<Vec<CharacterSummary>, StoreError> {
        let rows = sqlx::query(LIST)
            .fetch_all(pool)
            .await
            .map_err(DB::store_err)?;
        rows.iter()
            .map(|r| {
                let archetype: String = r.try_get("archetype").map_err(DB::store_err)?;
                Ok(CharacterSummary {
                    name: r.try_get("name").map_err(DB::store_err)?,
                    normalized_name: r.try_get("normalized_name").map_err(DB::store_err)?,
                    occupation: r.try_get("occupation").map_err(DB::store_err)?,
                    archetype: Archetype::parse(&archetype).ok_or_else(|| {
                        StoreError::Data(format!("unknown archetype {archetype}"))
                    })?,
                    version: r.try_get("version").map_err(DB::store_err)?,
                })
            })
            .collect()
    }

    pub(crate) async fn relationship(
        pool: &Pool<DB>,
        identity: &Identity,
        character: &str,
    ) -> Result<Option<Relationship>, StoreError> {
        let row = sqlx::query(RELATIONSHIP)
            .bind(&identity.platform)
            .bind(&identity.namespace)
            .bind(&identity.user_id)
            .bind(character)
            .fetch_optional(pool)
            .await
            .map_err(DB::store_err)?;
        row.map(|r| Self::relationship_of(&r))
            .transpose()
            .map_err(DB::store_err)
    }

    /// A row with `trust, affection, attunement, interactions`. REAL columns hold the f32
    /// written by either store exactly, so the round trip is lossless.
    pub(crate) fn relationship_of(r: &DB::Row) -> Result<Relationship, sqlx::Error> {
        Ok(Relationship {
            trust: r.try_get("trust")?,
            affection: r.try_get("affection")?,
            attunement: r.try_get("attunement")?,
            interactions: r.try_get("interactions")?,
        })
    }

    /// Every relationship of `identity`, by normalized character name.
    pub(crate) async fn relationships_of(
        pool: &Pool<DB>,
        identity: &Identity,
    ) -> Result<Vec<(String, Relationship)>, StoreError> {
        let rows = sqlx::query(RELATIONSHIPS_OF)
            .bind(&identity.platform)
            .bind(&identity.namespace)
            .bind(&identity.user_id)
            .fetch_all(pool)
            .await
            .map_err(DB::store_err)?;
        rows.iter()
            .map(|r| Ok((r.try_get("normalized_name")?, Self::relationship_of(r)?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(DB::store_err)
    }

    pub(crate) async fn forget_user(
        pool: &Pool<DB>,
        identity: &Identity,
        character: Option<&str>,
    ) -> Result<u64, StoreError> {
        let q = match character {
            Some(_) => sqlx::query(FORGET_USER_CHARACTER),
            None => sqlx::query(FORGET_USER),
        }
        .bind(&identity.platform)
        .bind(&identity.namespace)
        .bind(&identity.user_id);
        let done = match character {
            Some(c) => q.bind(c).execute(pool).await,
            None => q.execute(pool).await,
        }
        .map_err(DB::store_err)?;
        Ok(DB::rows_affected(&done))
    }
}

fn card_text(c: &Character) -> Result<Option<String>, StoreError> {
    c.card
        .as_ref()
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| StoreError::Data(format!("card of {}: {e}", c.name)))
}

fn lorebooks_text(c: &Character) -> Result<String, StoreError> {
    serde_json::to_string(&c.lorebooks)
        .map_err(|e| StoreError::Data(format!("lorebooks of {}: {e}", c.name)))
}
