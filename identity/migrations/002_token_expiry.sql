-- Every token expires. Tokens issued before expiry existed get a day from
-- their creation.
ALTER TABLE identity_tokens ADD COLUMN expires_at INTEGER;
UPDATE identity_tokens SET expires_at = created_at + 86400000 WHERE expires_at IS NULL;
