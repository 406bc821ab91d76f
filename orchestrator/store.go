package orchestrator

import (
	"context"
	"database/sql"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// ErrNotFound is returned for a task that does not exist.
var ErrNotFound = errors.New("orchestrator: task not found")

// OpenDB opens (creating if needed) the SQLite database at path with WAL,
// a busy timeout and foreign keys on. Every package that keeps tables in it
// runs its own migrations.
func OpenDB(path string) (*sql.DB, error) {
	// Tasks hold prompts and diffs: readable by the owner only (SQLite
	// gives its -wal and -shm files the database file's permissions).
	if f, err := os.OpenFile(path, os.O_CREATE|os.O_RDONLY, 0o600); err == nil {
		f.Close()
	}
	// Transactions begin IMMEDIATE: a deferred transaction that reads and
	// then writes fails with SQLITE_BUSY when another writer got in first,
	// instead of waiting out the busy timeout.
	dsn := "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=synchronous(NORMAL)&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	if err := db.Ping(); err != nil {
		db.Close()
		return nil, fmt.Errorf("open sqlite %s: %w", path, err)
	}
	return db, nil
}

// Store keeps tasks, their transitions and follow-up messages in SQLite.
type Store struct {
	db  *sql.DB
	now func() time.Time
}

// NewStore migrates the orchestrator's tables in db and returns a Store.
// now may be nil (time.Now).
func NewStore(ctx context.Context, db *sql.DB, now func() time.Time) (*Store, error) {
	if now == nil {
		now = time.Now
	}
	if err := Migrate(ctx, db, "orchestrator", migrationFS); err != nil {
		return nil, err
	}
	st := &Store{db: db, now: now}
	if err := st.backfillPRKeys(ctx); err != nil {
		return nil, fmt.Errorf("migrate orchestrator: backfill pull request keys: %w", err)
	}
	return st, nil
}

// Migrate applies the *.sql files of fsys (in name order) that have not been
// applied yet for component, each in its own transaction.
func Migrate(ctx context.Context, db *sql.DB, component string, fsys fs.FS) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		component TEXT NOT NULL, name TEXT NOT NULL, applied_at TEXT NOT NULL, PRIMARY KEY (component, name))`); err != nil {
		return fmt.Errorf("migrate %s: %w", component, err)
	}
	names, err := fs.Glob(fsys, "*/*.sql")
	if err != nil {
		return err
	}
	if len(names) == 0 {
		names, _ = fs.Glob(fsys, "*.sql")
	}
	sort.Strings(names)
	for _, name := range names {
		var n int
		if err := db.QueryRowContext(ctx, `SELECT count(*) FROM schema_migrations WHERE component=? AND name=?`, component, name).Scan(&n); err != nil {
			return fmt.Errorf("migrate %s: %w", component, err)
		}
		if n > 0 {
			continue
		}
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return err
		}
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, string(body)); err != nil {
			tx.Rollback()
			return fmt.Errorf("migrate %s %s: %w", component, name, err)
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO schema_migrations(component, name, applied_at) VALUES(?,?,?)`,
			component, name, time.Now().UTC().Format(time.RFC3339Nano)); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return fmt.Errorf("migrate %s %s: %w", component, name, err)
		}
	}
	return nil
}

// Ping checks the database answers.
func (s *Store) Ping(ctx context.Context) error { return s.db.PingContext(ctx) }

func ts(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func parseTS(s string) time.Time {
	t, _ := time.Parse(time.RFC3339Nano, s)
	return t
}

// CreateResult says what Create did.
type CreateResult struct {
	Task Task
	// Created is false when a task already existed for the idempotency key.
	Created bool
	// FollowUp is set when the event became a follow-up message of an
	// existing task on the same target.
	FollowUp bool
}

// CreateFromEvent stores the task for ev, once per idempotency key. When a
// task on the same target is still open (not done, failed or cancelled), the
// event's instruction becomes a follow-up message of that task instead.
func (s *Store) CreateFromEvent(ctx context.Context, ev *Event, agent string) (CreateResult, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return CreateResult{}, err
	}
	defer tx.Rollback()
	if t, err := getTask(ctx, tx, `idempotency_key=?`, ev.IdempotencyKey); err == nil {
		return CreateResult{Task: t}, nil
	} else if !errors.Is(err, ErrNotFound) {
		return CreateResult{}, err
	}
	if id, err := aliasFor(ctx, tx, ev.IdempotencyKey); err == nil {
		t, err := getTask(ctx, tx, `id=?`, id)
		return CreateResult{Task: t, FollowUp: true}, err
	}
	now := s.now()
	key := ev.Target.Key()
	if key != "" {
		t, err := getTask(ctx, tx, `repo=? AND target_key=? AND state NOT IN ('done','failed','cancelled') ORDER BY created_at DESC LIMIT 1`, ev.Repo, key)
		if err == nil {
			// Remember the key so a redelivery does not add the message twice.
			if _, err := tx.ExecContext(ctx, `INSERT INTO task_messages(task_id, text, actor, created_at) VALUES(?,?,?,?)`,
				t.ID, ev.Instruction, ev.Actor.Login, ts(now)); err != nil {
				return CreateResult{}, err
			}
			if _, err := tx.ExecContext(ctx, `INSERT INTO task_aliases(idempotency_key, task_id) VALUES(?,?)`, ev.IdempotencyKey, t.ID); err != nil {
				return CreateResult{}, err
			}
			return CreateResult{Task: t, FollowUp: true}, tx.Commit()
		} else if !errors.Is(err, ErrNotFound) {
			return CreateResult{}, err
		}
	}
	evJSON, err := json.Marshal(ev)
	if err != nil {
		return CreateResult{}, err
	}
	id := ev.TaskID
	if id == "" {
		id = NewID()
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO tasks(id, idempotency_key, state, repo, base, branch, agent, prompt, source, kind,
		target_key, event_json, created_at, updated_at) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?)`,
		id, ev.IdempotencyKey, StateQueued, ev.Repo, ev.Branch, BranchName(id), agent, ev.Instruction, ev.Source, ev.Kind,
		key, string(evJSON), ts(now), ts(now))
	if err != nil {
		return CreateResult{}, fmt.Errorf("insert task: %w", err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO task_transitions(task_id, run, from_state, to_state, reason, at) VALUES(?,?,?,?,?,?)`,
		id, 1, "", StateQueued, "created from "+string(ev.Source)+" "+ev.Kind, ts(now)); err != nil {
		return CreateResult{}, err
	}
	t, err := getTask(ctx, tx, `id=?`, id)
	if err != nil {
		return CreateResult{}, err
	}
	return CreateResult{Task: t, Created: true}, tx.Commit()
}

func aliasFor(ctx context.Context, q querier, key string) (string, error) {
	var id string
	err := q.QueryRowContext(ctx, `SELECT task_id FROM task_aliases WHERE idempotency_key=?`, key).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	return id, err
}

// Get returns one task.
func (s *Store) Get(ctx context.Context, id string) (Task, error) {
	t, err := getTask(ctx, s.db, `id=?`, id)
	if err != nil {
		return t, err
	}
	if t.State == StateQueued {
		t.Position, _ = s.position(ctx, t)
	}
	return t, nil
}

func (s *Store) position(ctx context.Context, t Task) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM tasks WHERE state='queued' AND (updated_at < ? OR (updated_at = ? AND id <= ?))`,
		ts(t.UpdatedAt), ts(t.UpdatedAt), t.ID).Scan(&n)
	return n, err
}

// Filter selects tasks for List.
type Filter struct {
	States []State
	Repo   string
	Source Source
	// Before pages backwards: tasks created before this cursor (exclusive).
	Before string
	Limit  int
}

// List returns tasks, newest first.
func (s *Store) List(ctx context.Context, f Filter) ([]Task, error) {
	var where []string
	var args []any
	if len(f.States) > 0 {
		ph := strings.TrimSuffix(strings.Repeat("?,", len(f.States)), ",")
		where = append(where, "state IN ("+ph+")")
		for _, st := range f.States {
			args = append(args, st)
		}
	}
	if f.Repo != "" {
		where = append(where, "repo=?")
		args = append(args, f.Repo)
	}
	if f.Source != "" {
		where = append(where, "source=?")
		args = append(args, f.Source)
	}
	if f.Before != "" {
		where = append(where, "(created_at, id) < (SELECT created_at, id FROM tasks WHERE id=?)")
		args = append(args, f.Before)
	}
	if f.Limit <= 0 || f.Limit > 500 {
		f.Limit = 100
	}
	q := "1=1"
	if len(where) > 0 {
		q = strings.Join(where, " AND ")
	}
	rows, err := s.db.QueryContext(ctx, `SELECT `+taskColumns+` FROM tasks WHERE `+q+` ORDER BY created_at DESC, id DESC LIMIT ?`, append(args, f.Limit)...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Task
	for rows.Next() {
		t, err := scanTask(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// CountByState returns how many tasks are in each state.
func (s *Store) CountByState(ctx context.Context) (map[State]int, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT state, count(*) FROM tasks GROUP BY state`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[State]int{}
	for rows.Next() {
		var st State
		var n int
		if err := rows.Scan(&st, &n); err != nil {
			return nil, err
		}
		out[st] = n
	}
	return out, rows.Err()
}

// OldestQueued returns the creation time of the oldest queued task.
func (s *Store) OldestQueued(ctx context.Context) (time.Time, bool, error) {
	var v sql.NullString
	if err := s.db.QueryRowContext(ctx, `SELECT min(updated_at) FROM tasks WHERE state='queued'`).Scan(&v); err != nil {
		return time.Time{}, false, err
	}
	if !v.Valid {
		return time.Time{}, false, nil
	}
	return parseTS(v.String), true, nil
}

// Transitions returns a task's stored state changes, oldest first.
func (s *Store) Transitions(ctx context.Context, id string) ([]Transition, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT from_state, to_state, reason, run, at FROM task_transitions WHERE task_id=? ORDER BY id`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Transition
	for rows.Next() {
		var tr Transition
		var at string
		if err := rows.Scan(&tr.From, &tr.To, &tr.Reason, &tr.Run, &at); err != nil {
			return nil, err
		}
		tr.At = parseTS(at)
		out = append(out, tr)
	}
	return out, rows.Err()
}

// Patch is what a state report may change on a task besides its state.
type Patch struct {
	BaseCommit *string       `json:"base_commit,omitempty"`
	Identity   *TaskIdentity `json:"identity,omitempty"`
	Commit     *string       `json:"commit,omitempty"`
	PRURL      *string       `json:"pr_url,omitempty"`
	Review     *string       `json:"review,omitempty"`
	Error      *string       `json:"error,omitempty"`
	Reason     *string       `json:"reason,omitempty"`
	SessionID  *string       `json:"session_id,omitempty"`
	Usage      *Usage        `json:"usage,omitempty"`
	Diff       *DiffStat     `json:"diff,omitempty"`
	Patch      *string       `json:"patch,omitempty"`
	Run        *int          `json:"run,omitempty"`
	// Question is what the agent asked (needs_input).
	Question *string `json:"question,omitempty"`
	// Answer is the final answer of a run that changed nothing.
	Answer *string `json:"answer,omitempty"`
}

// ApplyTransition moves task id from its current state to `to` (validated by
// the state machine) and applies p, in one transaction. A report for an older
// run than the task's current one is ignored (returns false, nil).
func (s *Store) ApplyTransition(ctx context.Context, id string, run int, to State, reason string, p Patch) (Task, bool, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return Task{}, false, err
	}
	defer tx.Rollback()
	t, err := getTask(ctx, tx, `id=?`, id)
	if err != nil {
		return Task{}, false, err
	}
	if run != 0 && run < t.Run {
		return t, false, nil
	}
	if !t.State.CanTransition(to) {
		return t, false, &TransitionError{From: t.State, To: to}
	}
	now := s.now()
	sets := []string{"state=?", "updated_at=?"}
	args := []any{to, ts(now)}
	add := func(col string, v any) { sets = append(sets, col+"=?"); args = append(args, v) }
	if p.BaseCommit != nil {
		add("base_commit", *p.BaseCommit)
	}
	if p.Identity != nil {
		add("identity_id", p.Identity.ID)
		add("identity_name", p.Identity.Name)
		add("identity_email", p.Identity.Email)
		add("identity_phone", p.Identity.Phone)
	}
	if p.Commit != nil {
		add("commit_sha", *p.Commit)
	}
	if p.PRURL != nil {
		add("pr_url", *p.PRURL)
		add("pr_key", prKeyOf(t.Repo, *p.PRURL))
	}
	if p.Answer != nil {
		add("answer", *p.Answer)
	}
	if p.Review != nil {
		add("review", *p.Review)
	}
	if p.Error != nil {
		add("error", *p.Error)
	}
	if p.Reason != nil {
		add("reason", *p.Reason)
	}
	if p.SessionID != nil {
		add("session_id", *p.SessionID)
	}
	if p.Usage != nil {
		add("input_tokens", p.Usage.InputTokens)
		add("output_tokens", p.Usage.OutputTokens)
		add("cost_usd", p.Usage.CostUSD)
	}
	if p.Diff != nil {
		add("diff_files", p.Diff.Files)
		add("diff_added", p.Diff.Added)
		add("diff_deleted", p.Diff.Deleted)
	}
	if p.Patch != nil {
		add("diff_patch", *p.Patch)
	}
	if p.Run != nil {
		add("run", *p.Run)
	}
	if p.Question != nil {
		add("question", *p.Question)
	} else if t.State == StateNeedsInput && to != StateNeedsInput {
		add("question", "") // answered, or no longer waiting
	}
	args = append(args, id)
	if _, err := tx.ExecContext(ctx, `UPDATE tasks SET `+strings.Join(sets, ",")+` WHERE id=?`, args...); err != nil {
		return Task{}, false, err
	}
	if t.State != to || p.Run != nil {
		r := t.Run
		if p.Run != nil {
			r = *p.Run
		}
		if _, err := tx.ExecContext(ctx, `INSERT INTO task_transitions(task_id, run, from_state, to_state, reason, at) VALUES(?,?,?,?,?,?)`,
			id, r, t.State, to, reason, ts(now)); err != nil {
			return Task{}, false, err
		}
	}
	nt, err := getTask(ctx, tx, `id=?`, id)
	if err != nil {
		return Task{}, false, err
	}
	return nt, true, tx.Commit()
}

// MarkDispatched records that run of task id was published to the work queue.
func (s *Store) MarkDispatched(ctx context.Context, id string, run int) error {
	_, err := s.db.ExecContext(ctx, `UPDATE tasks SET dispatched_run=max(dispatched_run, ?) WHERE id=?`, run, id)
	return err
}

// Dispatched reports whether run of task id was already published.
func (s *Store) Dispatched(ctx context.Context, id string, run int) (bool, error) {
	var d int
	err := s.db.QueryRowContext(ctx, `SELECT dispatched_run FROM tasks WHERE id=?`, id).Scan(&d)
	return d >= run, err
}

// DiffPatch returns the stored diff of a task.
func (s *Store) DiffPatch(ctx context.Context, id string) (string, error) {
	var p string
	err := s.db.QueryRowContext(ctx, `SELECT diff_patch FROM tasks WHERE id=?`, id).Scan(&p)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	return p, err
}

// AddMessage stores a follow-up instruction for task id.
func (s *Store) AddMessage(ctx context.Context, id, text, actor string) (Message, error) {
	now := s.now()
	res, err := s.db.ExecContext(ctx, `INSERT INTO task_messages(task_id, text, actor, created_at) VALUES(?,?,?,?)`, id, text, actor, ts(now))
	if err != nil {
		return Message{}, err
	}
	mid, _ := res.LastInsertId()
	return Message{ID: mid, Text: text, Actor: actor, CreatedAt: now}, nil
}

// PendingMessages returns follow-ups not yet handed to a run.
func (s *Store) PendingMessages(ctx context.Context, id string) ([]Message, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT id, text, actor, created_at FROM task_messages WHERE task_id=? AND consumed=0 ORDER BY id`, id)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Message
	for rows.Next() {
		var m Message
		var at string
		if err := rows.Scan(&m.ID, &m.Text, &m.Actor, &at); err != nil {
			return nil, err
		}
		m.CreatedAt = parseTS(at)
		out = append(out, m)
	}
	return out, rows.Err()
}

// ConsumeMessages marks messages up to and including upTo as handed to a run.
func (s *Store) ConsumeMessages(ctx context.Context, id string, upTo int64) error {
	_, err := s.db.ExecContext(ctx, `UPDATE task_messages SET consumed=1 WHERE task_id=? AND id<=?`, id, upTo)
	return err
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

const taskColumns = `id, idempotency_key, state, run, repo, base, base_commit, branch, agent, prompt, source, kind, target_key,
	event_json, identity_id, identity_name, identity_email, identity_phone, commit_sha, pr_url, review, error, reason,
	session_id, input_tokens, output_tokens, cost_usd, diff_files, diff_added, diff_deleted, created_at, updated_at, answer, question`

type scanner interface{ Scan(dest ...any) error }

func scanTask(r scanner) (Task, error) {
	var t Task
	var evJSON, created, updated string
	err := r.Scan(&t.ID, &t.IdempotencyKey, &t.State, &t.Run, &t.Repo, &t.Base, &t.BaseCommit, &t.Branch, &t.Agent, &t.Prompt,
		&t.Source, &t.Kind, &t.TargetKey, &evJSON, &t.Identity.ID, &t.Identity.Name, &t.Identity.Email, &t.Identity.Phone,
		&t.Commit, &t.PRURL, &t.Review, &t.Error, &t.Reason, &t.SessionID, &t.Usage.InputTokens, &t.Usage.OutputTokens,
		&t.Usage.CostUSD, &t.Diff.Files, &t.Diff.Added, &t.Diff.Deleted, &created, &updated, &t.Answer, &t.Question)
	if err != nil {
		return t, err
	}
	var ev Event
	if json.Unmarshal([]byte(evJSON), &ev) == nil {
		t.Target = ev.Target
		t.Actor = ev.Actor
	}
	t.CreatedAt, t.UpdatedAt = parseTS(created), parseTS(updated)
	return t, nil
}

func getTask(ctx context.Context, q querier, where string, args ...any) (Task, error) {
	t, err := scanTask(q.QueryRowContext(ctx, `SELECT `+taskColumns+` FROM tasks WHERE `+where, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return t, ErrNotFound
	}
	return t, err
}

// PRKey names pull request number of repo for the owner lookup: the
// repository lower-cased without a trailing "/" or ".git", then "#number".
func PRKey(repo string, number int) string {
	r := strings.ToLower(strings.TrimSuffix(strings.TrimSuffix(strings.TrimSpace(repo), "/"), ".git"))
	return r + "#" + strconv.Itoa(number)
}

// prKeyOf is the PRKey of a task on repo whose pull request is prURL
// (".../pull/<number>"), or "" when prURL names no pull request number.
func prKeyOf(repo, prURL string) string {
	i := strings.LastIndex(prURL, "/pull/")
	if i < 0 {
		return ""
	}
	n, err := strconv.Atoi(strings.TrimRight(prURL[i+len("/pull/"):], "/"))
	if err != nil || n <= 0 {
		return ""
	}
	return PRKey(repo, n)
}

// TaskByPR returns the newest task that owns pull request number of repo
// (the pull request its runs opened or pushed to), or ErrNotFound.
func (s *Store) TaskByPR(ctx context.Context, repo string, number int) (Task, error) {
	return getTask(ctx, s.db, `pr_key=? ORDER BY created_at DESC LIMIT 1`, PRKey(repo, number))
}

// backfillPRKeys sets pr_key on tasks stored before it existed.
func (s *Store) backfillPRKeys(ctx context.Context) error {
	rows, err := s.db.QueryContext(ctx, `SELECT id, repo, pr_url FROM tasks WHERE pr_key='' AND pr_url LIKE '%/pull/%'`)
	if err != nil {
		return err
	}
	type row struct{ id, key string }
	var todo []row
	for rows.Next() {
		var id, repo, u string
		if err := rows.Scan(&id, &repo, &u); err != nil {
			rows.Close()
			return err
		}
		if k := prKeyOf(repo, u); k != "" {
			todo = append(todo, row{id, k})
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for _, r := range todo {
		if _, err := s.db.ExecContext(ctx, `UPDATE tasks SET pr_key=? WHERE id=?`, r.key, r.id); err != nil {
			return err
		}
	}
	return nil
}

// AddFollowUp makes ev a follow-up message of task id, once per
// idempotency key (a redelivered event adds nothing).
func (s *Store) AddFollowUp(ctx context.Context, id string, ev *Event) (bool, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return false, err
	}
	defer tx.Rollback()
	if _, err := aliasFor(ctx, tx, ev.IdempotencyKey); err == nil {
		return false, nil
	} else if !errors.Is(err, ErrNotFound) {
		return false, err
	}
	if _, err := getTask(ctx, tx, `idempotency_key=?`, ev.IdempotencyKey); err == nil {
		return false, nil
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO task_messages(task_id, text, actor, created_at) VALUES(?,?,?,?)`,
		id, ev.Instruction, ev.Actor.Login, ts(s.now())); err != nil {
		return false, err
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO task_aliases(idempotency_key, task_id) VALUES(?,?)`, ev.IdempotencyKey, id); err != nil {
		return false, err
	}
	return true, tx.Commit()
}
