-- Turns whose relationship update is applied: makes the per-turn update idempotent, so a
-- redelivered turn never moves a relationship twice. turn_id: the UUID as hyphenated text.
CREATE TABLE relationship_turns (
    turn_id    TEXT PRIMARY KEY,
    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
) STRICT;
