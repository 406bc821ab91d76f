CREATE TABLE identity_local_addresses (
	address     TEXT PRIMARY KEY,  -- lower-case name@domain
	identity_id TEXT NOT NULL,
	live        INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX identity_local_addresses_identity ON identity_local_addresses (identity_id);

CREATE TABLE identity_local_phones (
	number      TEXT PRIMARY KEY,
	identity_id TEXT,              -- NULL: free
	leased_at   INTEGER
);
CREATE UNIQUE INDEX identity_local_phones_identity ON identity_local_phones (identity_id) WHERE identity_id IS NOT NULL;

CREATE TABLE identity_local_messages (
	id          TEXT PRIMARY KEY,
	identity_id TEXT NOT NULL,
	kind        TEXT NOT NULL,     -- email | sms
	sender      TEXT NOT NULL,
	recipient   TEXT NOT NULL,
	subject     TEXT NOT NULL DEFAULT '',
	body        TEXT NOT NULL,
	received_at INTEGER NOT NULL   -- unix microseconds
);
CREATE INDEX identity_local_messages_identity ON identity_local_messages (identity_id, received_at);
