CREATE TABLE report_state (
    task_id    TEXT NOT NULL,
    channel    TEXT NOT NULL,
    remote_id  TEXT NOT NULL DEFAULT '',
    last_state TEXT NOT NULL DEFAULT '',
    digest     TEXT NOT NULL DEFAULT '',
    reported_at TEXT NOT NULL DEFAULT '',
    updated_at TEXT NOT NULL,
    PRIMARY KEY (task_id, channel)
);
