-- The task records' authority is the NIGHTSHIFT_TASKRECS key-value bucket;
-- these tables are this node's index of it. rev is the record revision a
-- row was written from (older revisions never overwrite newer ones).
ALTER TABLE tasks ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
CREATE TABLE index_state (
    name TEXT PRIMARY KEY,
    seq  INTEGER NOT NULL
);
