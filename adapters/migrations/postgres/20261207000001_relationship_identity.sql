-- Relationships belong to a user's whole identity (platform, namespace, user_id), not to a
-- user id: an HTTP client can send any user id, a Discord user's included, and must not
-- move (or read) that user's relationship. `namespace` is empty for Discord and the
-- terminal and the API key's name for HTTP clients.
--
-- Rows written before this migration carry no platform, and a relationship row says
-- nothing about where it was made (no channel). The rule:
--   * a user id that is a Discord snowflake (15 to 20 decimal digits) -> 'discord': such
--     ids are what Discord gives its users, and Discord users are the ones an HTTP client
--     could impersonate, so their relationships stay theirs;
--   * any other user id -> 'legacy', a platform no gateway ever produces: no client can
--     claim the row, so it can no longer leak to whoever sends that id. Guessing 'http' or
--     'terminal' would hand it to anyone who sends the id on that platform; the cost of not
--     guessing is that such a user's relationship starts again from neutral.
--     `whisperfleet memory show/forget --platform legacy --user ID` reach these rows.
-- Every old row gets the empty namespace (namespaces did not exist).
ALTER TABLE relationships ADD COLUMN platform TEXT NOT NULL DEFAULT 'legacy';
ALTER TABLE relationships ADD COLUMN namespace TEXT NOT NULL DEFAULT '';
UPDATE relationships SET platform = 'discord' WHERE user_id ~ '^[0-9]{15,20}$';
ALTER TABLE relationships ALTER COLUMN platform DROP DEFAULT;
ALTER TABLE relationships DROP CONSTRAINT relationships_pkey;
ALTER TABLE relationships ADD PRIMARY KEY (platform, namespace, user_id, character_id);
