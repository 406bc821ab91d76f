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

// Store is this node's SQLite index of the task records (Records, the
// authority): it answers lists, counts and queue positions, and is rebuilt
// from the records bucket whenever it is missing or behind (Follow).
type Store struct {
	db     *sql.DB
	now    func() time.Time
	follow follower
}

var errNoRows = sql.ErrNoRows

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

// Get returns one task.
func (s *Store) Get(ctx context.Context, id string) (Task, error) {
	t, err := getTask(ctx, s.db, `id=?`, id)
	if err != nil {
		return t, err
	}
	if t.State == StateQueued {
		t.Position, _ = s.Position(ctx, t)
	}
	return t, nil
}

// Position returns a queued task's place in the queue (1 = next).
func (s *Store) Position(ctx context.Context, t Task) (int, error) {
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
	// Plan is the plan a plan run proposed.
	Plan *string `json:"plan,omitempty"`
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

const taskColumns = `id, idempotency_key, state, run, repo, base, base_commit, branch, agent, prompt, source, kind, target_key,
	event_json, identity_id, identity_name, identity_email, identity_phone, commit_sha, pr_url, review, error, reason,
	session_id, input_tokens, output_tokens, cost_usd, diff_files, diff_added, diff_deleted, created_at, updated_at, answer, question, task_json`

type scanner interface{ Scan(dest ...any) error }

func scanTask(r scanner) (Task, error) {
	var t Task
	var evJSON, created, updated, taskJSON string
	err := r.Scan(&t.ID, &t.IdempotencyKey, &t.State, &t.Run, &t.Repo, &t.Base, &t.BaseCommit, &t.Branch, &t.Agent, &t.Prompt,
		&t.Source, &t.Kind, &t.TargetKey, &evJSON, &t.Identity.ID, &t.Identity.Name, &t.Identity.Email, &t.Identity.Phone,
		&t.Commit, &t.PRURL, &t.Review, &t.Error, &t.Reason, &t.SessionID, &t.Usage.InputTokens, &t.Usage.OutputTokens,
		&t.Usage.CostUSD, &t.Diff.Files, &t.Diff.Added, &t.Diff.Deleted, &created, &updated, &t.Answer, &t.Question, &taskJSON)
	if err != nil {
		return t, err
	}
	if taskJSON != "" {
		var full Task
		if json.Unmarshal([]byte(taskJSON), &full) == nil && full.ID == t.ID {
			return full, nil
		}
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
// (".../pull/<number>" on GitHub, ".../pulls/<number>" on Gitea,
// ".../merge_requests/<number>" on GitLab), or "" when prURL names no pull
// request number.
func prKeyOf(repo, prURL string) string {
	i, seg := -1, ""
	for _, s := range []string{"/pull/", "/pulls/", "/merge_requests/"} {
		if j := strings.LastIndex(prURL, s); j > i {
			i, seg = j, s
		}
	}
	if i < 0 {
		return ""
	}
	n, err := strconv.Atoi(strings.TrimRight(prURL[i+len(seg):], "/"))
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
