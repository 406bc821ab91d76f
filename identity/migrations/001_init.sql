CREATE TABLE identity_identities (
	id           TEXT PRIMARY KEY,
	name         TEXT NOT NULL,
	email        TEXT NOT NULL DEFAULT '',
	phone        TEXT NOT NULL DEFAULT '',
	provider     TEXT NOT NULL,
	provider_ref TEXT NOT NULL DEFAULT '',
	task_id      TEXT NOT NULL DEFAULT '',
	created_at   INTEGER NOT NULL,
	released_at  INTEGER
);
-- At most one live identity per task.
CREATE UNIQUE INDEX identity_identities_live_task ON identity_identities (task_id)
	WHERE released_at IS NULL AND task_id <> '';
CREATE INDEX identity_identities_created ON identity_identities (created_at);

CREATE TABLE identity_tokens (
	hash        TEXT PRIMARY KEY,
	identity_id TEXT NOT NULL REFERENCES identity_identities (id),
	task_id     TEXT NOT NULL DEFAULT '',
	repo        TEXT NOT NULL DEFAULT '',
	agent       TEXT NOT NULL DEFAULT '',
	created_at  INTEGER NOT NULL,
	revoked_at  INTEGER
);
CREATE INDEX identity_tokens_identity ON identity_tokens (identity_id);
