-- The embedded character store: the same tables, columns and constraints as the PostgreSQL
-- migration of the same version, in SQLite types (STRICT, so a wrong type is an error there
-- too). Booleans are 0/1 integers, timestamps ISO-8601 text in UTC, `INTEGER PRIMARY KEY`
-- stands in for BIGSERIAL (it is the rowid, so ids grow in insertion order).
CREATE TABLE characters (
    id                  INTEGER PRIMARY KEY,
    name                TEXT NOT NULL,
    normalized_name     TEXT NOT NULL UNIQUE,
    occupation          TEXT NOT NULL DEFAULT '',
    description         TEXT NOT NULL DEFAULT '',
    archetype           TEXT NOT NULL DEFAULT 'real_world'
                        CHECK (archetype IN ('real_world', 'fantasy', 'narrative_ai')),
    allow_full_roleplay INTEGER NOT NULL DEFAULT 0 CHECK (allow_full_roleplay IN (0, 1)),
    emoji_frequency     TEXT NOT NULL DEFAULT 'moderate',
    emoji_style         TEXT NOT NULL DEFAULT 'none',
    version             INTEGER NOT NULL DEFAULT 1,
    created_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at          TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;

CREATE TABLE personality_traits (
    character_id INTEGER NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    trait_name   TEXT NOT NULL CHECK (trait_name IN
                 ('openness', 'conscientiousness', 'extraversion', 'agreeableness', 'neuroticism')),
    trait_value  REAL NOT NULL CHECK (trait_value >= 0 AND trait_value <= 1),
    PRIMARY KEY (character_id, trait_name)
) STRICT;

CREATE TABLE communication_styles (
    character_id               INTEGER PRIMARY KEY REFERENCES characters(id) ON DELETE CASCADE,
    engagement_level           TEXT NOT NULL DEFAULT '',
    formality                  TEXT NOT NULL DEFAULT '',
    emotional_expression       TEXT NOT NULL DEFAULT '',
    response_length            TEXT NOT NULL DEFAULT '',
    conversation_flow_guidance TEXT NOT NULL DEFAULT '',
    ai_identity_handling       TEXT NOT NULL DEFAULT ''
) STRICT;

CREATE TABLE character_values (
    id                INTEGER PRIMARY KEY,
    character_id      INTEGER NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    value_key         TEXT NOT NULL,
    value_description TEXT NOT NULL DEFAULT '',
    importance_level  TEXT NOT NULL DEFAULT 'medium'
) STRICT;

CREATE TABLE character_voice_traits (
    id                  INTEGER PRIMARY KEY,
    character_id        INTEGER NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    trait_type          TEXT NOT NULL,
    trait_value         TEXT NOT NULL,
    situational_context TEXT NOT NULL DEFAULT ''
) STRICT;

CREATE TABLE character_speech_patterns (
    id              INTEGER PRIMARY KEY,
    character_id    INTEGER NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    pattern_type    TEXT NOT NULL,
    pattern_value   TEXT NOT NULL,
    usage_frequency TEXT NOT NULL DEFAULT '',
    context         TEXT NOT NULL DEFAULT '',
    priority        INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE TABLE character_interests (
    id                INTEGER PRIMARY KEY,
    character_id      INTEGER NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    category          TEXT NOT NULL DEFAULT '',
    interest_text     TEXT NOT NULL,
    proficiency_level INTEGER NOT NULL DEFAULT 5,
    importance        TEXT NOT NULL DEFAULT 'medium'
) STRICT;

CREATE TABLE character_background (
    id               INTEGER PRIMARY KEY,
    character_id     INTEGER NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    category         TEXT NOT NULL DEFAULT '',
    period           TEXT NOT NULL DEFAULT '',
    title            TEXT NOT NULL DEFAULT '',
    description      TEXT NOT NULL DEFAULT '',
    importance_level INTEGER NOT NULL DEFAULT 5
) STRICT;

CREATE TABLE character_response_guidelines (
    id                INTEGER PRIMARY KEY,
    character_id      INTEGER NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    guideline_type    TEXT NOT NULL DEFAULT '',
    guideline_name    TEXT NOT NULL DEFAULT '',
    guideline_content TEXT NOT NULL,
    priority          INTEGER NOT NULL DEFAULT 0,
    is_critical       INTEGER NOT NULL DEFAULT 0 CHECK (is_critical IN (0, 1))
) STRICT;

-- trigger_phrases: a JSON array as text (JSONB in PostgreSQL).
CREATE TABLE character_ai_scenarios (
    id                INTEGER PRIMARY KEY,
    character_id      INTEGER NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    scenario_type     TEXT NOT NULL,
    trigger_phrases   TEXT NOT NULL DEFAULT '[]' CHECK (json_valid(trigger_phrases)),
    response_guidance TEXT NOT NULL DEFAULT ''
) STRICT;

CREATE TABLE character_llm_config (
    character_id INTEGER PRIMARY KEY REFERENCES characters(id) ON DELETE CASCADE,
    model        TEXT,
    temperature  REAL,
    max_tokens   INTEGER
) STRICT;

-- One row per user x character, updated in single transactions by the workers.
CREATE TABLE relationships (
    user_id      TEXT NOT NULL,
    character_id INTEGER NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    trust        REAL NOT NULL DEFAULT 0.3,
    affection    REAL NOT NULL DEFAULT 0.3,
    attunement   REAL NOT NULL DEFAULT 0.3,
    interactions INTEGER NOT NULL DEFAULT 0,
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (user_id, character_id)
) STRICT;

CREATE INDEX character_values_character ON character_values (character_id);
CREATE INDEX character_voice_traits_character ON character_voice_traits (character_id);
CREATE INDEX character_speech_patterns_character ON character_speech_patterns (character_id);
CREATE INDEX character_interests_character ON character_interests (character_id);
CREATE INDEX character_background_character ON character_background (character_id);
CREATE INDEX character_response_guidelines_character ON character_response_guidelines (character_id);
CREATE INDEX character_ai_scenarios_character ON character_ai_scenarios (character_id);
