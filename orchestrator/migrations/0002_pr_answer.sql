-- A task owns its pull request until it is merged or closed: pr_key
-- ("<repo>#<number>", see PRKey) finds the task a pull request event is
-- about. answer is the final answer of a run that changed nothing.
ALTER TABLE tasks ADD COLUMN pr_key TEXT NOT NULL DEFAULT '';
ALTER TABLE tasks ADD COLUMN answer TEXT NOT NULL DEFAULT '';
CREATE INDEX tasks_pr ON tasks(pr_key) WHERE pr_key <> '';
