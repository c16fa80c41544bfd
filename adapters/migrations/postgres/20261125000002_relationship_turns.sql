-- Turns whose relationship update is applied: makes the per-turn update idempotent, so a
-- redelivered turn never moves a relationship twice.
CREATE TABLE relationship_turns (
    turn_id    UUID PRIMARY KEY,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
