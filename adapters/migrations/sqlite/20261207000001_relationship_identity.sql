-- Relationships belong to a user's whole identity (platform, namespace, user_id), not to a
-- user id: an HTTP client can send any user id, a Discord user's included, and must not
-- move (or read) that user's relationship. `namespace` is empty for Discord and the
-- terminal and the API key's name for HTTP clients.
--
-- Rows written before this migration carry no platform, and a relationship row says
-- nothing about where it was made (no channel). The rule (the same as PostgreSQL's):
--   * a user id that is a Discord snowflake (15 to 20 decimal digits) -> 'discord';
--   * any other user id -> 'legacy', a platform no gateway ever produces, so no client can
--     claim the row (`whisperfleet memory show/forget --platform legacy` reach it); such a
--     user's relationship starts again from neutral rather than be handed to whoever
--     sends that id on a guessed platform.
-- Every old row gets the empty namespace. SQLite cannot change a primary key in place, so
-- the table is rebuilt.
CREATE TABLE relationships_new (
    platform     TEXT NOT NULL,
    namespace    TEXT NOT NULL DEFAULT '',
    user_id      TEXT NOT NULL,
    character_id INTEGER NOT NULL REFERENCES characters(id) ON DELETE CASCADE,
    trust        REAL NOT NULL DEFAULT 0.3,
    affection    REAL NOT NULL DEFAULT 0.3,
    attunement   REAL NOT NULL DEFAULT 0.3,
    interactions INTEGER NOT NULL DEFAULT 0,
    updated_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (platform, namespace, user_id, character_id)
) STRICT;
INSERT INTO relationships_new
    (platform, namespace, user_id, character_id, trust, affection, attunement, interactions, updated_at)
SELECT CASE WHEN length(user_id) BETWEEN 15 AND 20 AND user_id NOT GLOB '*[^0-9]*'
            THEN 'discord' ELSE 'legacy' END,
       '', user_id, character_id, trust, affection, attunement, interactions, updated_at
FROM relationships;
DROP TABLE relationships;
ALTER TABLE relationships_new RENAME TO relationships;
