-- Vault schema v1. Only sealed blobs hold secret material.
CREATE TABLE vault_meta (
	key   TEXT PRIMARY KEY,
	value BLOB NOT NULL
) STRICT;

CREATE TABLE vault_keks (
	id         INTEGER PRIMARY KEY,
	wrapped    BLOB NOT NULL,
	created_at TEXT NOT NULL
) STRICT;

CREATE TABLE vault_secrets (
	name         TEXT NOT NULL,
	scope        TEXT NOT NULL,
	version      INTEGER NOT NULL,
	kek_id       INTEGER REFERENCES vault_keks(id),
	wrapped_dek  BLOB,
	ciphertext   BLOB,
	created_at   TEXT NOT NULL,
	created_by   TEXT NOT NULL,
	destroyed_at TEXT,
	PRIMARY KEY (name, scope, version)
) STRICT;

CREATE INDEX vault_secrets_kek ON vault_secrets(kek_id);

CREATE TABLE vault_audit (
	seq        INTEGER PRIMARY KEY,
	at         TEXT NOT NULL,
	actor_kind TEXT NOT NULL,
	actor_id   TEXT NOT NULL,
	action     TEXT NOT NULL,
	name       TEXT NOT NULL DEFAULT '',
	scope      TEXT NOT NULL DEFAULT '',
	version    INTEGER NOT NULL DEFAULT 0,
	outcome    TEXT NOT NULL,
	detail     TEXT NOT NULL DEFAULT '',
	prev_hash  BLOB NOT NULL,
	hash       BLOB NOT NULL
) STRICT;
