-- max_tokens is a u32 in the model: INTEGER (i32) cannot hold the upper half, BIGINT holds all of
-- it, as SQLite's 64-bit INTEGER already does, so both stores keep any value they are given.
ALTER TABLE character_llm_config ALTER COLUMN max_tokens TYPE BIGINT;
