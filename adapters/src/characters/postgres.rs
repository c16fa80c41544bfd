//! PostgreSQL implementation of the character store (and, in later stages, relationships).
//! A character is read in ONE round trip: the query assembles the row and every child table
//! into one JSON document shaped exactly like [`Character`], so there is no N+1 and no
//! mapping code to drift from the model.
//!
//! Queries are runtime-checked (`sqlx::query`), so a fresh clone builds without a database.

use std::time::Duration;

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Row, Transaction};
use whisperfleet_shared::character::{
    Character, CharacterSummary, Relationship, RelationshipDelta, normalize_name,
};
use whisperfleet_shared::config::redact_secret_url;
use whisperfleet_shared::ports::characters::{CharacterStore, StoreError};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

pub struct PgCharacterStore {
    pool: PgPool,
    url: SecretString,
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
    /// Connects (lazily: a down database fails turns with a fallback, not the process) and
    /// applies pending migrations when `migrate` is set and the database is reachable.
    pub async fn connect(url: SecretString, max_connections: u32) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(3))
            .connect_lazy(url.expose_secret())
            .map_err(|e| StoreError::Data(format!("invalid database url: {e}")))?;
        Ok(Self { pool, url })
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migrations failed: {e}")))
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    async fn replace_children(
        tx: &mut Transaction<'_, Postgres>,
        id: i64,
        c: &Character,
    ) -> Result<(), sqlx::Error> {
        for table in [
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
        ] {
            // Table names come from the fixed list above, never from input.
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "DELETE FROM {table} WHERE character_id = $1"
            )))
            .bind(id)
            .execute(&mut **tx)
            .await?;
        }
        for (name, v) in c.personality.traits() {
            sqlx::query("INSERT INTO personality_traits (character_id, trait_name, trait_value) VALUES ($1, $2, $3)")
                .bind(id).bind(name).bind(v)
                .execute(&mut **tx).await?;
        }
        let s = &c.communication;
        sqlx::query(
            "INSERT INTO communication_styles (character_id, engagement_level, formality, emotional_expression, \
             response_length, conversation_flow_guidance, ai_identity_handling) VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
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
            sqlx::query("INSERT INTO character_values (character_id, value_key, value_description, importance_level) VALUES ($1, $2, $3, $4)")
                .bind(id).bind(&v.key).bind(&v.description).bind(&v.importance)
                .execute(&mut **tx).await?;
        }
        for v in &c.voice_traits {
            sqlx::query("INSERT INTO character_voice_traits (character_id, trait_type, trait_value, situational_context) VALUES ($1, $2, $3, $4)")
                .bind(id).bind(&v.trait_type).bind(&v.trait_value).bind(&v.situational_context)
                .execute(&mut **tx).await?;
        }
        for v in &c.speech_patterns {
            sqlx::query("INSERT INTO character_speech_patterns (character_id, pattern_type, pattern_value, usage_frequency, context, priority) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(id).bind(&v.pattern_type).bind(&v.pattern_value).bind(&v.usage_frequency).bind(&v.context).bind(v.priority)
                .execute(&mut **tx).await?;
        }
        for v in &c.interests {
            sqlx::query("INSERT INTO character_interests (character_id, category, interest_text, proficiency_level, importance) VALUES ($1, $2, $3, $4, $5)")
                .bind(id).bind(&v.category).bind(&v.interest_text).bind(v.proficiency_level).bind(&v.importance)
                .execute(&mut **tx).await?;
        }
        for v in &c.background {
            sqlx::query("INSERT INTO character_background (character_id, category, period, title, description, importance_level) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(id).bind(&v.category).bind(&v.period).bind(&v.title).bind(&v.description).bind(v.importance_level)
                .execute(&mut **tx).await?;
        }
        for v in &c.response_guidelines {
            sqlx::query("INSERT INTO character_response_guidelines (character_id, guideline_type, guideline_name, guideline_content, priority, is_critical) VALUES ($1, $2, $3, $4, $5, $6)")
                .bind(id).bind(&v.guideline_type).bind(&v.guideline_name).bind(&v.guideline_content).bind(v.priority).bind(v.is_critical)
                .execute(&mut **tx).await?;
        }
        for v in &c.ai_scenarios {
            sqlx::query("INSERT INTO character_ai_scenarios (character_id, scenario_type, trigger_phrases, response_guidance) VALUES ($1, $2, $3, $4)")
                .bind(id).bind(&v.scenario_type).bind(sqlx::types::Json(&v.trigger_phrases)).bind(&v.response_guidance)
                .execute(&mut **tx).await?;
        }
        sqlx::query("INSERT INTO character_llm_config (character_id, model, temperature, max_tokens) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(&c.llm.model)
            .bind(c.llm.temperature)
            .bind(c.llm.max_tokens.map(|m| m as i32))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

fn relationship_of(r: &sqlx::postgres::PgRow) -> Relationship {
    Relationship {
        trust: r.get("trust"),
        affection: r.get("affection"),
        attunement: r.get("attunement"),
        interactions: r.get("interactions"),
    }
}

#[async_trait]
impl CharacterStore for PgCharacterStore {
    async fn load(&self, normalized_name: &str) -> Result<Option<Character>, StoreError> {
        let row = sqlx::query(LOAD_SQL)
            .bind(normalized_name)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        let Some(row) = row else { return Ok(None) };
        let doc: serde_json::Value = row.try_get("doc").map_err(db_err)?;
        serde_json::from_value(doc).map(Some).map_err(|e| {
            StoreError::Data(format!(
                "stored character {normalized_name} is malformed: {e}"
            ))
        })
    }

    async fn upsert(&self, character: &Character) -> Result<i64, StoreError> {
        let mut c = character.clone();
        c.validate().map_err(StoreError::Data)?;
        let mut tx = self.pool.begin().await.map_err(db_err)?;
        let row = sqlx::query(
            "INSERT INTO characters (name, normalized_name, occupation, description, archetype, \
             allow_full_roleplay, emoji_frequency, emoji_style) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (normalized_name) DO UPDATE SET name = EXCLUDED.name, occupation = EXCLUDED.occupation, \
             description = EXCLUDED.description, archetype = EXCLUDED.archetype, \
             allow_full_roleplay = EXCLUDED.allow_full_roleplay, emoji_frequency = EXCLUDED.emoji_frequency, \
             emoji_style = EXCLUDED.emoji_style, version = characters.version + 1, updated_at = now() \
             RETURNING id, version",
        )
        .bind(&c.name)
        .bind(normalize_name(&c.name))
        .bind(&c.occupation)
        .bind(&c.description)
        .bind(c.archetype.as_str())
        .bind(c.allow_full_roleplay)
        .bind(&c.emoji_frequency)
        .bind(&c.emoji_style)
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        let id: i64 = row.get("id");
        let version: i64 = row.get("version");
        Self::replace_children(&mut tx, id, &c)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(version)
    }

    async fn list(&self) -> Result<Vec<CharacterSummary>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, normalized_name, occupation, archetype, version FROM characters ORDER BY name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        rows.into_iter()
            .map(|r| {
                let archetype: String = r.get("archetype");
                Ok(CharacterSummary {
                    name: r.get("name"),
                    normalized_name: r.get("normalized_name"),
                    occupation: r.get("occupation"),
                    archetype: whisperfleet_shared::character::Archetype::parse(&archetype)
                        .ok_or_else(|| {
                            StoreError::Data(format!("unknown archetype {archetype}"))
                        })?,
                    version: r.get("version"),
                })
            })
            .collect()
    }

    async fn relationship(
        &self,
        user_id: &str,
        character: &str,
    ) -> Result<Option<Relationship>, StoreError> {
        let row = sqlx::query(
            "SELECT r.trust, r.affection, r.attunement, r.interactions FROM relationships r \
             JOIN characters c ON c.id = r.character_id WHERE r.user_id = $1 AND c.normalized_name = $2",
        )
        .bind(user_id)
        .bind(character)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(row.map(|r| relationship_of(&r)))
    }

    async fn apply_relationship(
        &self,
        turn_id: uuid::Uuid,
        user_id: &str,
        character: &str,
        d: RelationshipDelta,
    ) -> Result<Option<Relationship>, StoreError> {
        // One statement: the turn is recorded and the row moved together, or neither.
        // Concurrent turns of one user serialise on the row lock of the upsert, and each adds
        // its delta to the value it finds, so no update is lost.
        let row = sqlx::query(
            "WITH first AS ( \
                 INSERT INTO relationship_turns (turn_id) VALUES ($1) \
                 ON CONFLICT DO NOTHING RETURNING turn_id), \
             moved AS ( \
                 INSERT INTO relationships AS r (user_id, character_id, trust, affection, attunement, interactions) \
                 SELECT $2, c.id, LEAST(1, GREATEST(0, 0.3 + $4::real)), LEAST(1, GREATEST(0, 0.3 + $5::real)), \
                        LEAST(1, GREATEST(0, 0.3 + $6::real)), 1 \
                 FROM characters c, first WHERE c.normalized_name = $3 \
                 ON CONFLICT (user_id, character_id) DO UPDATE SET \
                     trust = LEAST(1, GREATEST(0, r.trust + $4::real)), \
                     affection = LEAST(1, GREATEST(0, r.affection + $5::real)), \
                     attunement = LEAST(1, GREATEST(0, r.attunement + $6::real)), \
                     interactions = r.interactions + 1, updated_at = now() \
                 RETURNING r.trust, r.affection, r.attunement, r.interactions) \
             SELECT trust, affection, attunement, interactions FROM moved",
        )
        .bind(turn_id)
        .bind(user_id)
        .bind(character)
        .bind(d.trust)
        .bind(d.affection)
        .bind(d.attunement)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(row.map(|r| relationship_of(&r)))
    }

    async fn forget_user(&self, user_id: &str, character: Option<&str>) -> Result<u64, StoreError> {
        let r = match character {
            Some(c) => {
                sqlx::query(
                    "DELETE FROM relationships r USING characters c \
                 WHERE r.character_id = c.id AND r.user_id = $1 AND c.normalized_name = $2",
                )
                .bind(user_id)
                .bind(c)
                .execute(&self.pool)
                .await
            }
            None => {
                sqlx::query("DELETE FROM relationships WHERE user_id = $1")
                    .bind(user_id)
                    .execute(&self.pool)
                    .await
            }
        }
        .map_err(db_err)?;
        Ok(r.rows_affected())
    }

    fn describe(&self) -> String {
        format!("postgresql at {}", redact_secret_url(&self.url))
    }
}
