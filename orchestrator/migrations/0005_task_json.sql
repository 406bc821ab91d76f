-- The whole task as the authority recorded it, so lists show every field
-- (mode, plan, automation, ...) without a column per field.
ALTER TABLE tasks ADD COLUMN task_json TEXT NOT NULL DEFAULT '';
