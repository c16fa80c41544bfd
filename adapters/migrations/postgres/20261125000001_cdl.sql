-- Character Definition Language (CDL): a faithful subset of the original platform's schema.
CREATE TABLE characters (
    id                  BIGSERIAL PRIMARY KEY,
    name                TEXT NOT NULL,
    normalized_name     TEXT NOT NULL UNIQUE,
    occupation          TEXT NOT NULL DEFAULT '',
    description         TEXT NOT NULL DEFAULT '',
    archetype           TEXT NOT NULL DEFAULT 'real_world'
                        CHECK (archetype IN ('real_world', 'fantasy', 'narrative_ai')),
    allow_full_roleplay BOOLEAN NOT NULL DEFAULT FALSE,
    emoji_frequency     TEXT NOT NULL DEFAULT 'moderate',
    emoji_style         TEXT NOT NULL DEFAULT 'none',
    version             BIGINT NOT NULL DEFAULT 1,
    created_at          TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at          TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE personality_traits (
    character_id BIGINT NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    trait_name   TEXT NOT NULL CHECK (trait_name IN
                 ('openness', 'conscientiousness', 'extraversion', 'agreeableness', 'neuroticism')),
    trait_value  REAL NOT NULL CHECK (trait_value >= 0 AND trait_value <= 1),
    PRIMARY KEY (character_id, trait_name)
);

CREATE TABLE communication_styles (
    character_id               BIGINT PRIMARY KEY REFERENCES characters(id) ON DELETE CASCADE,
    engagement_level           TEXT NOT NULL DEFAULT '',
    formality                  TEXT NOT NULL DEFAULT '',
    emotional_expression       TEXT NOT NULL DEFAULT '',
    response_length            TEXT NOT NULL DEFAULT '',
    conversation_flow_guidance TEXT NOT NULL DEFAULT '',
    ai_identity_handling       TEXT NOT NULL DEFAULT ''
);

CREATE TABLE character_values (
    id                BIGSERIAL PRIMARY KEY,
    character_id      BIGINT NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    value_key         TEXT NOT NULL,
    value_description TEXT NOT NULL DEFAULT '',
    importance_level  TEXT NOT NULL DEFAULT 'medium'
);

CREATE TABLE character_voice_traits (
    id                  BIGSERIAL PRIMARY KEY,
    character_id        BIGINT NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    trait_type          TEXT NOT NULL,
    trait_value         TEXT NOT NULL,
    situational_context TEXT NOT NULL DEFAULT ''
);

CREATE TABLE character_speech_patterns (
    id              BIGSERIAL PRIMARY KEY,
    character_id    BIGINT NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    pattern_type    TEXT NOT NULL,
    pattern_value   TEXT NOT NULL,
    usage_frequency TEXT NOT NULL DEFAULT '',
    context         TEXT NOT NULL DEFAULT '',
    priority        INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE character_interests (
    id                BIGSERIAL PRIMARY KEY,
    character_id      BIGINT NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    category          TEXT NOT NULL DEFAULT '',
    interest_text     TEXT NOT NULL,
    proficiency_level INTEGER NOT NULL DEFAULT 5,
    importance        TEXT NOT NULL DEFAULT 'medium'
);

CREATE TABLE character_background (
    id               BIGSERIAL PRIMARY KEY,
    character_id     BIGINT NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    category         TEXT NOT NULL DEFAULT '',
    period           TEXT NOT NULL DEFAULT '',
    title            TEXT NOT NULL DEFAULT '',
    description      TEXT NOT NULL DEFAULT '',
    importance_level INTEGER NOT NULL DEFAULT 5
);

CREATE TABLE character_response_guidelines (
    id                BIGSERIAL PRIMARY KEY,
    character_id      BIGINT NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    guideline_type    TEXT NOT NULL DEFAULT '',
    guideline_name    TEXT NOT NULL DEFAULT '',
    guideline_content TEXT NOT NULL,
    priority          INTEGER NOT NULL DEFAULT 0,
    is_critical       BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE character_ai_scenarios (
    id                BIGSERIAL PRIMARY KEY,
    character_id      BIGINT NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    scenario_type     TEXT NOT NULL,
    trigger_phrases   JSONB NOT NULL DEFAULT '[]',
    response_guidance TEXT NOT NULL DEFAULT ''
);

CREATE TABLE character_llm_config (
    character_id BIGINT PRIMARY KEY REFERENCES characters(id) ON DELETE CASCADE,
    model        TEXT,
    temperature  REAL,
    max_tokens   INTEGER
);

-- One row per user x character, updated in single atomic statements by the workers.
CREATE TABLE relationships (
    user_id      TEXT NOT NULL,
    character_id BIGINT NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    trust        REAL NOT NULL DEFAULT 0.3,
    affection    REAL NOT NULL DEFAULT 0.3,
    attunement   REAL NOT NULL DEFAULT 0.3,
    interactions BIGINT NOT NULL DEFAULT 0,
    updated_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, character_id)
);

CREATE INDEX character_values_character ON character_values (character_id);
CREATE INDEX character_voice_traits_character ON character_voice_traits (character_id);
CREATE INDEX character_speech_patterns_character ON character_speech_patterns (character_id);
CREATE INDEX character_interests_character ON character_interests (character_id);
CREATE INDEX character_background_character ON character_background (character_id);
CREATE INDEX character_response_guidelines_character ON character_response_guidelines (character_id);
CREATE INDEX character_ai_scenarios_character ON character_ai_scenarios (character_id);
