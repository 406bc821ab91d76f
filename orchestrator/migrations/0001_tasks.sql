CREATE TABLE tasks (
    id              TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    state           TEXT NOT NULL,
    run             INTEGER NOT NULL DEFAULT 1,
    dispatched_run  INTEGER NOT NULL DEFAULT 0,
    repo            TEXT NOT NULL,
    base            TEXT NOT NULL DEFAULT '',
    base_commit     TEXT NOT NULL DEFAULT '',
    branch          TEXT NOT NULL,
    agent           TEXT NOT NULL,
    prompt          TEXT NOT NULL,
    source          TEXT NOT NULL,
    kind            TEXT NOT NULL,
    target_key      TEXT NOT NULL DEFAULT '',
    event_json      TEXT NOT NULL,
    identity_id     TEXT NOT NULL DEFAULT '',
    identity_name   TEXT NOT NULL DEFAULT '',
    identity_email  TEXT NOT NULL DEFAULT '',
    identity_phone  TEXT NOT NULL DEFAULT '',
    commit_sha      TEXT NOT NULL DEFAULT '',
    pr_url          TEXT NOT NULL DEFAULT '',
    review          TEXT NOT NULL DEFAULT '',
    error           TEXT NOT NULL DEFAULT '',
    reason          TEXT NOT NULL DEFAULT '',
    session_id      TEXT NOT NULL DEFAULT '',
    input_tokens    INTEGER NOT NULL DEFAULT 0,
    output_tokens   INTEGER NOT NULL DEFAULT 0,
    cost_usd        REAL NOT NULL DEFAULT 0,
    diff_files      INTEGER NOT NULL DEFAULT 0,
    diff_added      INTEGER NOT NULL DEFAULT 0,
    diff_deleted    INTEGER NOT NULL DEFAULT 0,
    diff_patch      TEXT NOT NULL DEFAULT '',
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
CREATE INDEX tasks_state ON tasks(state, created_at);
CREATE INDEX tasks_repo ON tasks(repo, created_at);
CREATE INDEX tasks_target ON tasks(repo, target_key);

CREATE TABLE task_transitions (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id    TEXT NOT NULL REFERENCES tasks(id),
    run        INTEGER NOT NULL,
    from_state TEXT NOT NULL,
    to_state   TEXT NOT NULL,
    reason     TEXT NOT NULL DEFAULT '',
    at         TEXT NOT NULL
);
CREATE INDEX task_transitions_task ON task_transitions(task_id, id);

CREATE TABLE task_messages (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id    TEXT NOT NULL REFERENCES tasks(id),
    text       TEXT NOT NULL,
    actor      TEXT NOT NULL DEFAULT '',
    consumed   INTEGER NOT NULL DEFAULT 0,
    created_at TEXT NOT NULL
);
CREATE INDEX task_messages_task ON task_messages(task_id, id);

CREATE TABLE task_aliases (
    idempotency_key TEXT PRIMARY KEY,
    task_id         TEXT NOT NULL REFERENCES tasks(id)
);
