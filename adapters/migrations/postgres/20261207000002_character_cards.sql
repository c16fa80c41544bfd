-- Community character cards (issue 16): the card a character was imported from, stored as
-- {"container", "json"} with the card's original JSON text inside (so an export gives it back
-- byte for byte), and the lorebooks attached to the character with `import --lorebook`.
ALTER TABLE characters ADD COLUMN card TEXT;
ALTER TABLE characters ADD COLUMN lorebooks TEXT NOT NULL DEFAULT '[]';
