-- question is what the agent asked (MCP ask_human) while the task waits in
-- needs_input; it is cleared when the answer starts the next run.
ALTER TABLE tasks ADD COLUMN question TEXT NOT NULL DEFAULT '';
